/* internal: what the files of libdescent share and nothing else sees.
 *
 * Naming: descent_ is public (descent.h), descent__ is internal and shared
 * between these files, everything else is static.  Nothing here is exported
 * from libdescent.so (hidden visibility plus libdescent.map).
 * Every function here runs on the thread that owns the handle.
 */
#ifndef DESCENT_INTERNAL_H
#define DESCENT_INTERNAL_H

#include <curl/curl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "descent.h"

#define DESCENT__MAX_SHARDS 256
#define DESCENT__NAME_MAX 64

/* ---- the handle (handle.c) ----------------------------------------------------- */

typedef struct descent__layout descent__layout;

/* One shard: a daemon, or the members of one Raft replica group (any of
 * them may lead; requests go to `base`, the member believed to lead). */
typedef struct descent__shard {
  char *base;       /* the member in use: one of members[] (not owned apart from it) */
  char **members;   /* base URLs without a trailing slash, as given */
  size_t nmembers;  /* 1: a plain daemon (or one member: 307s still followed) */
  size_t cur;       /* base == members[cur] */
  CURL *easy;       /* kept for the life of the handle: keep-alive */
} descent__shard;

struct descent {
  size_t nshards;
  descent__shard *shard;
  CURLM *multi;       /* runs every request, one or a fan-out; owns the connection pool */
  char *auth;         /* "Authorization: Bearer TOKEN" or NULL */
  char *ca_file;      /* $DESCENT_CA_FILE: the CA bundle to verify https daemons with, or NULL */
  long timeout_ms;    /* 0: none */
  long connect_ms;
  long settle_ms;
  long failover_ms;   /* a replica group: how long a request is retried across members */
  bool read_leader;   /* a replica group: reads carry Descent-Read: leader (default) */
  descent__layout *layouts; /* sharded: instances seen, by name (layout.c) */
};

/* ---- errors (errors.c) ----------------------------------------------------------- */

/* Fills err (may be NULL) with rc's client code, status 0 and a printf-style
 * message (NULL fmt: the table's message); returns rc. */
int descent__fail(descent_error *err, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Sets err's code to `code` (a more precise client code, e.g. "bad_length"). */
void descent__set_code(descent_error *err, const char *code);

/* Prefixes err->message with "shard K (URL): ". */
void descent__prefix_shard(descent_error *err, const descent *d, size_t k);

/* true when `name` matches [A-Za-z0-9][A-Za-z0-9._-]{0,63}. */
bool descent__name_ok(const char *name);

/* Checks a name argument; fills err (code "bad_name") and returns EINVAL. */
int descent__check_name(const char *name, descent_error *err);

/* ---- requests (transfer.c) ---------------------------------------------------- */

/* One HTTP request on one shard's easy handle.  Fill the "in" part (zero the
 * rest with descent__req_init), run with descent__perform, read the "out"
 * part, release with descent__req_cleanup. */
typedef struct descent__req {
  /* in */
  size_t shard;         /* which daemon */
  const char *method;   /* GET, POST, PUT, PATCH, DELETE */
  char path[512];       /* "/v1/optimizers/NAME/step?..." */
  const void *body;     /* borrowed; NULL: no body */
  size_t body_len;
  const char *content_type; /* of the body */
  bool accept_binary;   /* Accept: application/octet-stream */
  const char *accept_type; /* the whole Accept value when it is not the default (dtype=...) */
  const char *idem_key; /* Idempotency-Key header, NULL: none */
  char auto_key[40];    /* a push to a replica group without a key gets one here (transfer.c) */
  bool local;           /* a read this member answers itself (no Descent-Read: leader) */
  bool no_retry;        /* one attempt, whatever the outcome (no failover) */
  long wait_ms;         /* a long-poll's wait, added to the handle's timeout */
  void *target;         /* a 2xx binary reply is written here ... */
  size_t target_cap;    /* ... up to this many bytes */
  bool sink;            /* a 2xx reply body is discarded */
  /* out */
  CURLcode cc;
  char curl_msg[CURL_ERROR_SIZE];
  long status;
  bool binary;          /* the reply's Content-Type is application/octet-stream */
  int64_t step;         /* Descent-Step header, -1: none */
  int64_t candidate;    /* Descent-Candidate header, -1: none */
  size_t target_len;    /* bytes of a binary reply (also those beyond target_cap) */
  char *text;           /* any other reply body, NUL-terminated (new) */
  size_t text_len, text_cap;
  bool oom;
} descent__req;

void descent__req_init(descent__req *r, size_t shard, const char *method);
void descent__req_cleanup(descent__req *r);

/* printf into r->path; EINVAL when it does not fit. */
int descent__req_path(descent__req *r, descent_error *err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* n requests (zeroed; NULL when out of memory) and their release. */
descent__req *descent__reqs_new(size_t n);
void descent__reqs_free(descent__req *r, size_t n);

/* Runs n requests concurrently (libcurl multi), each on its own shard (two
 * requests may not share a shard).  Returns 0 when every transfer finished
 * (whatever its status) or a negative code for a failure of the machinery
 * itself.  Per-request outcomes are in each request.
 * On a replica group (a shard with several members, or any daemon that
 * answers 503 no_leader) a request is retried for up to failover_ms across
 * the members with the same headers and body: after no_leader or a refused
 * connection (nothing was done), and after an ambiguous failure
 * (leadership_lost, a lost connection, a timeout) only when it cannot apply
 * twice (a read, an Idempotency-Key, worker + seq).  A push to a group
 * without a key gets a random Idempotency-Key first (so exactly once). */
int descent__perform(descent *d, descent__req *reqs, size_t n, descent_error *err);

/* The outcome of a performed request as a return code: 0 for a 2xx reply,
 * else the error (transport, or the server's JSON error) in err, prefixed by
 * the shard when the handle is sharded.  *err_step (may be NULL) gets the
 * "step" of a server error body, -1 when absent. */
int descent__req_result(const descent *d, const descent__req *r, descent_error *err, int64_t *err_step);

/* ---- sharding (layout.c) -------------------------------------------------------- */

/* The split rule: shard k of s holds logical indices [descent__split(n, s, k),
 * descent__split(n, s, k + 1)). */
size_t descent__split(size_t n, size_t s, size_t k);

/* A sparse tensor ("sparse": true, [V, D]) of a layout: split by rows with
 * the split rule, shard k holding local rows [rlo[k], rlo[k + 1]). */
typedef struct descent__sparse {
  char name[DESCENT__NAME_MAX + 1];
  uint64_t V;      /* logical rows */
  size_t D;        /* row length */
  uint64_t origin; /* its "offset": the first row in the logical table */
  uint64_t *rlo;   /* nshards + 1 row bounds */
  size_t pieces;   /* shards seen while building */
  size_t after;    /* dense tensors before it in creation order */
} descent__sparse;

struct descent__layout {
  char name[DESCENT__NAME_MAX + 1];
  size_t n;            /* logical floats (dense tensors only) */
  size_t *lo;          /* nshards + 1 bounds by the split rule */
  bool sync;           /* mode */
  double clip;         /* clip_grad_norm, 0: off */
  int64_t workers, min_workers; /* sync mode, -1: absent */
  char algorithm[32];
  size_t ntensors;
  descent_tensor *tensors; /* logical */
  uint64_t *origins;       /* each logical tensor's own "offset" (usually 0) */
  size_t nsparse;
  descent__sparse *sparse; /* sparse tensors, creation order */
  size_t norder;
  long *order;             /* every tensor in creation order: i >= 0 dense i, -(j + 1) sparse j */
  bool step_free;          /* no result depends on the step count (no schedule, not sync, not
                              sparse_adam, no adagrad lr_decay): a push may leave untouched shards out */
  descent__layout *next;
};

/* The layout of `name` (a sharded handle, or rows.c on any handle): from the cache, or read from
 * every shard (descent__layout_read).  Borrowed until the next call that
 * changes the cache.  fresh: ignore the cache. */
int descent__layout_get(descent *d, const char *name, bool fresh, const descent__layout **out, descent_error *err);

/* The logical "tensors" array of a layout, as one daemon describes it
 * ({"name", "shape", "offset", "count"[, "origin"]} each): a new reference. */
json_t *descent__layout_tensors_json(const descent__layout *l);

/* Reads the layout of `name` from every shard's description, checks it
 * against the split rule, caches it, and compares the shards' steps
 * (descent__settle): *step (may be NULL) = the agreed step.  descs (may be
 * NULL) receives each shard's parsed description (new references). */
int descent__layout_read(descent *d, const char *name, const descent__layout **out, json_t **descs,
                         uint64_t *step, descent_error *err);

/* DESCENT_ESHARDS with a message listing every shard's step. */
int descent__mismatch(descent *d, const char *name, const int64_t *steps, descent_error *err);

/* Drops the cached layout of `name` (NULL: all). */
void descent__layout_forget(descent *d, const char *name);

/* Compares the steps every shard reported (steps[k]; a missing one, -1, is
 * a bad reply).  Equal: *step = that step.  Different: every shard below
 * the largest is long-polled for it for up to settle_ms (their parameters
 * land in params + lo[k] when params is not NULL); if all reach it, *step =
 * the smallest step now held, else DESCENT_ESHARDS listing every step.
 * params holds values of `dtype`. */
int descent__settle(descent *d, const char *name, const descent__layout *l, int64_t *steps, void *params,
                    descent_dtype dtype, uint64_t *step, descent_error *err);

/* ---- wire precision (half.c) ---- */
size_t descent__dtype_size(descent_dtype t);             /* bytes per value */
const char *descent__dtype_type(descent_dtype t);        /* the media type with its dtype */

/* The sparse tensor `tensor` of l (NULL if none). */
const descent__sparse *descent__layout_sparse(const descent__layout *l, const char *tensor);

/* Splits a create body into one body per shard (*bodies: nshards new
 * strings in a new array); the instance's name into name.  See
 * proto/sharding.md. */
int descent__split_spec(const descent *d, const char *spec, char ***bodies, char *name, size_t name_cap,
                        descent_error *err);

/* DESCENT_ENOTSUP when a configuration (a create body, a description or a
 * state document, parsed) cannot be sharded exactly: random_search, sync
 * with clip_grad_norm, sync with min_workers < workers. */
int descent__check_shardable(json_t *cfg, descent_error *err);

/* Builds and caches a layout from every shard's description (or any object
 * with "size", "tensors", "algorithm", "mode", "clip_grad_norm"), checked
 * against the split rule. */
int descent__layout_build(descent *d, const char *name, json_t *const *descs, const descent__layout **out,
                          descent_error *err);

/* ---- JSON text scanning without building values (jscan.c) ------------------------ */

/* In the object at s[0..len) (leading white space allowed), finds the member
 * `key` and sets [*vb, *ve) to its value's bytes.  Returns 0, or -1 when the
 * text is not an object or has no such member.  O(len), no allocation; used
 * for big state documents, never parsed number by number. */
int descent__jscan_member(const char *s, size_t len, const char *key, size_t *vb, size_t *ve);

/* The elements of the array at s[0..len): calls fn(b, e, arg) with each
 * element's bytes; returns the count, or -1 if it is not an array. */
long descent__jscan_array(const char *s, size_t len, void (*fn)(size_t b, size_t e, void *arg), void *arg);

/* The members of the object at s[0..len): fn gets the key's bytes (quotes
 * included) and the value's; a negative return stops.  0, or -1 when it is
 * not an object (or fn stopped). */
int descent__jscan_object(const char *s, size_t len,
                          int (*fn)(size_t kb, size_t ke, size_t vb, size_t ve, void *arg), void *arg);

/* The leaves of a (nested) array in row-major order: fn gets each one's bytes
 * and index.  Returns the count, or -1 when it is not an array. */
long descent__jscan_leaves(const char *s, size_t len, void (*fn)(size_t b, size_t e, size_t idx, void *arg),
                           void *arg);

#endif
