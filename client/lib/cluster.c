/* cluster: opening a handle on a replica group's members (proto/replicas.md;
 * GET /v1/cluster and membership changes are ops.c's).
 * The failover itself (307s, retries across members) is transfer.c's; this
 * file only builds requests.  Runs on the handle's thread.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

descent *descent_open_members(const char *const *members, size_t n, const char *token, descent_error *err) {
  if (!members || n == 0) {
    descent__fail(err, DESCENT_EINVAL, "members: at least one base URL");
    return NULL;
  }
  size_t len = 1;
  for (size_t i = 0; i < n; i++) {
    if (!members[i] || strpbrk(members[i], ",|")) {
      descent__fail(err, DESCENT_EINVAL, "members: entry %zu is not one base URL", i);
      return NULL;
    }
    len += strlen(members[i]) + 1;
  }
  char *url = malloc(len), *p = url;
  if (!url) {
    descent__fail(err, DESCENT_ENOMEM, NULL);
    return NULL;
  }
  for (size_t i = 0; i < n; i++) p += sprintf(p, "%s%s", i ? "|" : "", members[i]);
  descent *d = descent_open(url, token, err);
  free(url);
  return d;
}

size_t descent_shard_members(const descent *d, size_t k) {
  return d && k < d->nshards ? d->shard[k].nmembers : 0;
}
