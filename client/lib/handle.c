/* handle: opening and closing a descent handle: the list of daemons, one
 * kept-alive libcurl easy handle per daemon, the multi handle that runs
 * every request, the token, and the options.
 *
 * The only process-wide state is libcurl's own: curl_global_init runs once,
 * under pthread_once, the first time any handle is opened.  A handle is used
 * by one thread at a time.
 */
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_OK; /* written once, under curl_once */

static void curl_init(void) { curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

/* Appends base URL [b, e) as a new shard; EINVAL for a malformed one. */
static int add_shard(descent *d, const char *b, const char *e, descent_error *err) {
  while (b < e && isspace((unsigned char)*b)) b++;
  while (e > b && isspace((unsigned char)e[-1])) e--;
  while (e > b && e[-1] == '/') e--;
  size_t n = (size_t)(e - b);
  if (n == 0) return descent__fail(err, DESCENT_EINVAL, "url: an empty entry in the list of daemons");
  if (!((n > 7 && !strncmp(b, "http://", 7)) || (n > 8 && !strncmp(b, "https://", 8))))
    return descent__fail(err, DESCENT_EINVAL, "url: '%.*s' does not start with http:// or https://",
                         (int)(n > 200 ? 200 : n), b);
  if (memchr(b, '?', n) || memchr(b, '#', n))
    return descent__fail(err, DESCENT_EINVAL, "url: '%.*s': a base URL takes no query or fragment",
                         (int)(n > 200 ? 200 : n), b);
  if (d->nshards >= DESCENT__MAX_SHARDS)
    return descent__fail(err, DESCENT_EINVAL, "url: at most %d daemons", DESCENT__MAX_SHARDS);
  descent__shard *s = &d->shard[d->nshards];
  if (!(s->base = strndup(b, n))) return descent__fail(err, DESCENT_ENOMEM, NULL);
  if (!(s->easy = curl_easy_init())) return descent__fail(err, DESCENT_ENOMEM, "curl_easy_init failed");
  d->nshards++;
  return 0;
}

/* A sharded handle contacts every daemon once, so that an unreachable one
 * or a refused token shows at open. */
static int probe(descent *d, descent_error *err) {
  descent__req *r = descent__reqs_new(d->nshards);
  if (!r) return descent__fail(err, DESCENT_ENOMEM, NULL);
  for (size_t k = 0; k < d->nshards; k++) {
    descent__req_init(&r[k], k, "GET");
    snprintf(r[k].path, sizeof r[k].path, "/v1/optimizers");
    r[k].sink = true;
  }
  int rc = descent__perform(d, r, d->nshards, err);
  for (size_t k = 0; k < d->nshards && rc == 0; k++) rc = descent__req_result(d, &r[k], err, NULL);
  descent__reqs_free(r, d->nshards);
  return rc;
}

descent *descent_open(const char *url, const char *token, descent_error *err) {
  if (!url || !*url) {
    descent__fail(err, DESCENT_EINVAL, "url: required (e.g. http://127.0.0.1:8080)");
    return NULL;
  }
  pthread_once(&curl_once, curl_init);
  if (curl_init_rc != CURLE_OK) {
    descent__fail(err, DESCENT_ENOMEM, "curl_global_init: %s", curl_easy_strerror(curl_init_rc));
    return NULL;
  }
  if (token && strpbrk(token, "\r\n")) {
    descent__fail(err, DESCENT_EINVAL, "token: must be one line");
    return NULL;
  }
  descent *d = calloc(1, sizeof *d);
  if (!d) {
    descent__fail(err, DESCENT_ENOMEM, NULL);
    return NULL;
  }
  d->connect_ms = 10000;
  d->settle_ms = 2000;
  if (!(d->shard = calloc(DESCENT__MAX_SHARDS, sizeof *d->shard))) {
    descent__fail(err, DESCENT_ENOMEM, NULL);
    goto fail;
  }
  for (const char *p = url;;) {
    const char *comma = strchr(p, ',');
    const char *end = comma ? comma : p + strlen(p);
    if (add_shard(d, p, end, err) < 0) goto fail;
    if (!comma) break;
    p = comma + 1;
  }
  const char *ca = getenv("DESCENT_CA_FILE");
  if (ca && *ca && !(d->ca_file = strdup(ca))) {
    descent__fail(err, DESCENT_ENOMEM, NULL);
    goto fail;
  }
  if (token && *token) {
    size_t n = strlen(token) + 32;
    if (!(d->auth = malloc(n))) {
      descent__fail(err, DESCENT_ENOMEM, NULL);
      goto fail;
    }
    snprintf(d->auth, n, "Authorization: Bearer %s", token);
  }
  if (!(d->multi = curl_multi_init())) {
    descent__fail(err, DESCENT_ENOMEM, "curl_multi_init failed");
    goto fail;
  }
  /* keep one connection per daemon alive between calls */
  curl_multi_setopt(d->multi, CURLMOPT_MAXCONNECTS, (long)d->nshards + 4);
  if (d->nshards > 1 && probe(d, err) < 0) goto fail;
  return d;
fail:
  descent_close(d);
  return NULL;
}

void descent_close(descent *d) {
  if (!d) return;
  descent__layout_forget(d, NULL);
  for (size_t k = 0; k < d->nshards; k++) {
    if (d->shard[k].easy) curl_easy_cleanup(d->shard[k].easy);
    free(d->shard[k].base);
  }
  /* a shard whose easy handle failed to initialise still owns its base */
  if (d->shard && d->nshards < DESCENT__MAX_SHARDS) free(d->shard[d->nshards].base);
  if (d->multi) curl_multi_cleanup(d->multi);
  free(d->shard);
  free(d->auth);
  free(d->ca_file);
  free(d);
}

int descent_set_option(descent *d, descent_option opt, long value) {
  if (!d || value < 0) return DESCENT_EINVAL;
  switch (opt) {
  case DESCENT_OPT_TIMEOUT_MS: d->timeout_ms = value; return 0;
  case DESCENT_OPT_CONNECT_TIMEOUT_MS: d->connect_ms = value; return 0;
  case DESCENT_OPT_SETTLE_MS: d->settle_ms = value; return 0;
  default: return DESCENT_EINVAL;
  }
}

size_t descent_shards(const descent *d) { return d ? d->nshards : 0; }

const char *descent_shard_url(const descent *d, size_t k) {
  return d && k < d->nshards ? d->shard[k].base : NULL;
}
