/* cluster: the replica side of the API (proto/replicas.md): opening a handle
 * on a group's members, GET /v1/cluster, and adding and removing members.
 * The failover itself (307s, retries across members) is transfer.c's; this
 * file only builds requests.  Runs on the handle's thread.
 */
#include <inttypes.h>
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

/* One request on shard k with a JSON reply into *out (may be NULL). */
static int cluster_req(descent *d, size_t k, const char *method, const char *path, const char *body, char **out,
                       descent_error *err) {
  if (!d || k >= d->nshards) return descent__fail(err, DESCENT_EINVAL, "no shard %zu", k);
  descent__req r;
  descent__req_init(&r, k, method);
  int rc = descent__req_path(&r, err, "%s", path);
  if (rc < 0) return rc;
  if (body) {
    r.body = body;
    r.body_len = strlen(body);
    r.content_type = "application/json";
  }
  if ((rc = descent__perform(d, &r, 1, err)) == 0 && (rc = descent__req_result(d, &r, err, NULL)) == 0 && out) {
    *out = r.text ? r.text : strdup("");
    r.text = NULL;
    if (!*out) rc = descent__fail(err, DESCENT_ENOMEM, NULL);
  }
  descent__req_cleanup(&r);
  return rc;
}

int descent_cluster(descent *d, size_t k, char **json, descent_error *err) {
  if (!json) return descent__fail(err, DESCENT_EINVAL, "json: required");
  return cluster_req(d, k, "GET", "/v1/cluster", NULL, json, err);
}

int descent_member_add(descent *d, size_t k, uint64_t id, const char *address, char **json, descent_error *err) {
  if (id == 0 || id > INT64_MAX) return descent__fail(err, DESCENT_EINVAL, "id: a positive integer");
  if (!address || !strchr(address, ':') || strlen(address) >= 64 || strpbrk(address, "\"\\ \t\r\n"))
    return descent__fail(err, DESCENT_EINVAL, "address: the member's Raft address, HOST:PORT");
  char body[160];
  snprintf(body, sizeof body, "{\"id\": %" PRIu64 ", \"address\": \"%s\"}", id, address);
  return cluster_req(d, k, "POST", "/v1/cluster/members", body, json, err);
}

int descent_member_remove(descent *d, size_t k, uint64_t id, char **json, descent_error *err) {
  if (id == 0 || id > INT64_MAX) return descent__fail(err, DESCENT_EINVAL, "id: a positive integer");
  char path[64];
  snprintf(path, sizeof path, "/v1/cluster/members/%" PRIu64, id);
  return cluster_req(d, k, "DELETE", path, NULL, json, err);
}
