/* handle: opening and closing a descent handle: the list of daemons (each
 * a plain daemon or a replica group's members), one kept-alive libcurl easy
 * handle per shard, the multi handle that runs
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
#include <time.h>

#include "internal.h"

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_OK; /* written once, under curl_once */

static void curl_init(void) { curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

/* Checks base URL [*b, *e) (trimmed in place); EINVAL for a malformed one. */
static int check_url(const char **b, const char **e, descent_error *err) {
  while (*b < *e && isspace((unsigned char)**b)) (*b)++;
  while (*e > *b && isspace((unsigned char)(*e)[-1])) (*e)--;
  while (*e > *b && (*e)[-1] == '/') (*e)--;
  size_t n = (size_t)(*e - *b);
  if (n == 0) return descent__fail(err, DESCENT_EINVAL, "url: an empty entry in the list of daemons");
  if (!((n > 7 && !strncmp(*b, "http://", 7)) || (n > 8 && !strncmp(*b, "https://", 8))))
    return descent__fail(err, DESCENT_EINVAL, "url: '%.*s' does not start with http:// or https://",
                         (int)(n > 200 ? 200 : n), *b);
  if (memchr(*b, '?', n) || memchr(*b, '#', n))
    return descent__fail(err, DESCENT_EINVAL, "url: '%.*s': a base URL takes no query or fragment",
                         (int)(n > 200 ? 200 : n), *b);
  return 0;
}

/* Appends [b, e) as a new shard: one daemon, or the members of a replica
 * group joined by '|'; EINVAL for a malformed entry. */
static int add_shard(descent *d, const char *b, const char *e, descent_error *err) {
  if (d->nshards >= DESCENT__MAX_SHARDS)
    return descent__fail(err, DESCENT_EINVAL, "url: at most %d daemons", DESCENT__MAX_SHARDS);
  descent__shard *s = &d->shard[d->nshards];
  size_t n = 1;
  for (const char *p = b; p < e; p++) n += *p == '|';
  if (n > DESCENT__MAX_SHARDS) return descent__fail(err, DESCENT_EINVAL, "url: at most %d members", DESCENT__MAX_SHARDS);
  if (!(s->members = calloc(n, sizeof *s->members))) return descent__fail(err, DESCENT_ENOMEM, NULL);
  d->nshards++; /* owns what is allocated so far (descent_close frees it) */
  for (const char *p = b;;) {
    const char *bar = memchr(p, '|', (size_t)(e - p));
    const char *mb = p, *me = bar ? bar : e;
    if (check_url(&mb, &me, err) < 0) return DESCENT_EINVAL;
    if (!(s->members[s->nmembers] = strndup(mb, (size_t)(me - mb)))) return descent__fail(err, DESCENT_ENOMEM, NULL);
    s->nmembers++;
    if (!bar) break;
    p = bar + 1;
  }
  s->base = s->members[0];
  if (!(s->easy = curl_easy_init())) return descent__fail(err, DESCENT_ENOMEM, "curl_easy_init failed");
  return 0;
}

/* ---- a comma list of one group's members ----------------------------------------- */

/* The Raft addresses of a GET /v1/cluster reply; NULL for a daemon that is
 * no replica (role standalone) or a reply that is not one. */
static json_t *cluster_addresses(const descent__req *r) {
  json_t *root = r->text ? json_loadb(r->text, r->text_len, 0, NULL) : NULL;
  const char *role = json_string_value(json_object_get(root, "role"));
  json_t *out = NULL, *m;
  size_t i;
  if (role && strcmp(role, "standalone")) {
    out = json_array();
    json_array_foreach(json_object_get(root, "members"), i, m) {
      json_t *a = json_object_get(m, "address");
      if (json_is_string(a)) json_array_append(out, a);
    }
  }
  json_decref(root);
  return out;
}

/* Members of one group: a Raft address in common (a member still starting
 * lists none yet: it cannot tell, so it is taken at its word). */
static bool overlap(json_t *a, json_t *b) {
  size_t i, j;
  json_t *x, *y;
  if (!json_array_size(a) || !json_array_size(b)) return true;
  json_array_foreach(a, i, x) json_array_foreach(b, j, y) if (json_equal(x, y)) return true;
  return false;
}

/* Every shard (one URL each) becomes a member of shard 0. */
static int merge_into_group(descent *d, descent_error *err) {
  descent__shard *s = &d->shard[0];
  char **m = realloc(s->members, d->nshards * sizeof *m);
  if (!m) return descent__fail(err, DESCENT_ENOMEM, NULL);
  s->members = m;
  for (size_t k = 1; k < d->nshards; k++) {
    m[k] = d->shard[k].members[0];
    free(d->shard[k].members);
    curl_easy_cleanup(d->shard[k].easy);
    memset(&d->shard[k], 0, sizeof d->shard[k]);
  }
  s->nmembers = d->nshards;
  s->base = m[0];
  d->nshards = 1;
  return 0;
}

/* How the answering daemons of a comma list relate: every pair of members
 * overlaps (one group), none does (shards), or a mix. */
typedef struct kinship {
  size_t repl, plain, starting, pairs, same;
} kinship;

static kinship relate(json_t *const *addrs, const descent__req *r, size_t n) {
  kinship k = {0};
  for (size_t i = 0; i < n; i++) {
    if (r[i].cc != CURLE_OK) continue;
    if (!addrs[i]) {
      k.plain++;
      continue;
    }
    k.repl++;
    k.starting += json_array_size(addrs[i]) == 0;
    for (size_t j = 0; j < i; j++)
      if (addrs[j]) k.pairs++, k.same += overlap(addrs[i], addrs[j]);
  }
  return k;
}

/* Several URLs without '|': shards (each must answer, so that an unreachable
 * daemon or a refused token shows at open: plain daemons, or members of
 * different groups), or, when the daemons that answer are all members of one
 * replica group, the members of that group (the spelling of the Python
 * client; the others may be down).  1: ask again (a member still starting
 * lists no members yet). */
static int classify(descent *d, descent__req *r, bool last, descent_error *err) {
  json_t *addrs[DESCENT__MAX_SHARDS] = {0};
  int rc = 0, first_down = -1;
  size_t n = d->nshards; /* a merge leaves one shard */
  for (size_t k = 0; k < n; k++) {
    if (r[k].cc != CURLE_OK) {
      if (first_down < 0) first_down = (int)k;
      continue;
    }
    if ((rc = descent__req_result(d, &r[k], err, NULL)) < 0) goto out;
    addrs[k] = cluster_addresses(&r[k]);
  }
  kinship kin = relate(addrs, r, n);
  if (kin.starting && !last) rc = 1;
  else if (kin.repl && !kin.plain && kin.same == kin.pairs) rc = merge_into_group(d, err);
  else if (first_down >= 0) rc = descent__req_result(d, &r[first_down], err, NULL);
  else if (kin.same)
    rc = descent__fail(err, DESCENT_EINVAL,
                       "url: some of these daemons are members of one replica group and some are not: join "
                       "each group's members with '|' and separate shards with ',' (http://a1|http://a2,http://b1)");
out:
  for (size_t k = 0; k < n; k++) json_decref(addrs[k]);
  return rc;
}

/* Several shards: each is contacted (GET /v1/cluster, which also says
 * whether a comma list is one group's members). */
static int probe(descent *d, bool plain_list, descent_error *err) {
  size_t n = d->nshards;
  descent__req *r = descent__reqs_new(n);
  if (!r) return descent__fail(err, DESCENT_ENOMEM, NULL);
  int rc;
  for (int tries = 0;; tries++) {
    for (size_t k = 0; k < n; k++) {
      descent__req_cleanup(&r[k]);
      descent__req_init(&r[k], k, "GET");
      snprintf(r[k].path, sizeof r[k].path, "/v1/cluster");
      r[k].no_retry = plain_list; /* a member that is down is no reason to wait */
      r[k].local = true;          /* its own view, not the leader's */
    }
    rc = descent__perform(d, r, n, err);
    if (rc == 0 && plain_list) rc = classify(d, r, tries >= 40, err);
    if (rc != 1) break;
    nanosleep(&(struct timespec){0, 100 * 1000000L}, NULL); /* up to 4 s for members to start */
  }
  for (size_t k = 0; k < n && rc == 0 && !plain_list; k++) rc = descent__req_result(d, &r[k], err, NULL);
  descent__reqs_free(r, n);
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
  d->failover_ms = 30000;
  d->read_leader = true;
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
  size_t conns = 4;
  for (size_t k = 0; k < d->nshards; k++) conns += d->shard[k].nmembers;
  curl_multi_setopt(d->multi, CURLMOPT_MAXCONNECTS, (long)conns);
  if (d->nshards > 1 && probe(d, !strchr(url, '|'), err) < 0) goto fail;
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
    for (size_t i = 0; i < d->shard[k].nmembers; i++) free(d->shard[k].members[i]);
    free(d->shard[k].members);
  }
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
  case DESCENT_OPT_FAILOVER_MS: d->failover_ms = value; return 0;
  case DESCENT_OPT_READ_LEADER: d->read_leader = value != 0; return 0;
  default: return DESCENT_EINVAL;
  }
}

size_t descent_shards(const descent *d) { return d ? d->nshards : 0; }

const char *descent_shard_url(const descent *d, size_t k) {
  return d && k < d->nshards ? d->shard[k].base : NULL;
}
