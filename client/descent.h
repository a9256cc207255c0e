/* descent.h: libdescent, the C client of the descent optimizer daemon.
 *
 * A `descent` handle talks to one daemon, or to several that together hold
 * one logical instance split into contiguous ranges (sharding, see
 * proto/sharding.md).  Parameters and gradients travel in the binary format:
 * little-endian float32 of every tensor in creation order, flat, row-major.
 *
 * Conventions
 * - Every function that can fail returns 0 or a negative DESCENT_E* code and,
 *   when `err` is not NULL, fills it: the HTTP status (0 when no reply came),
 *   the server's snake_case code ("unknown_instance", "bad_length", ...) or a
 *   client code ("connection_failed", "timeout", "bad_reply",
 *   "invalid_argument", "not_supported", "step_mismatch", "shard_layout"), and a
 *   message for
 *   a person.  On success `err` is left untouched.
 * - Ownership: strings the library returns through `char **` are new; free
 *   them with descent_free().  Everything passed in is borrowed for the call.
 * - Threads: a handle is used by one thread at a time (it owns libcurl easy
 *   handles); give each thread its own handle.  Different handles may be used
 *   concurrently.  The first descent_open() runs curl_global_init() once for
 *   the process (guarded by pthread_once); libdescent never calls
 *   curl_global_cleanup(), so it coexists with other users of libcurl.
 * - Every exported symbol starts with descent_ (checked by a test).
 */
#ifndef DESCENT_H
#define DESCENT_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define DESCENT_API __attribute__((visibility("default")))
#else
#define DESCENT_API
#endif

#define DESCENT_VERSION "0.1.0"

/* X(name, value, client code, message).  Server refusals keep the server's
 * own code in descent_error.code; the table's code is used for the others. */
#define DESCENT_ERRORS(X)                                                                       \
  X(DESCENT_EINVAL, -1, "invalid_argument", "invalid argument")                                 \
  X(DESCENT_ENOMEM, -2, "out_of_memory", "out of memory")                                       \
  X(DESCENT_ECONNECT, -3, "connection_failed", "could not reach the daemon")                    \
  X(DESCENT_ETIMEOUT, -4, "timeout", "the request timed out")                                   \
  X(DESCENT_EPROTO, -5, "bad_reply", "the daemon's reply could not be understood")              \
  X(DESCENT_EREFUSED, -6, "refused", "the daemon refused the request (4xx)")                    \
  X(DESCENT_ESERVER, -7, "server_error", "the daemon failed or is shutting down (5xx)")         \
  X(DESCENT_ESHARDS, -8, "step_mismatch", "the shards of an instance are at different steps") \
  X(DESCENT_ENOTSUP, -9, "not_supported", "not supported for this instance or handle")

enum descent_errno {
  DESCENT_OK = 0,
#define DESCENT_ERRNO_ENUM(name, value, code, msg) name = value,
  DESCENT_ERRORS(DESCENT_ERRNO_ENUM)
#undef DESCENT_ERRNO_ENUM
};

typedef struct descent_error {
  int status;        /* HTTP status of the reply, 0 when there was none */
  char code[64];     /* snake_case: the server's code or a client code */
  char message[512]; /* what a person should know; names the shard if sharded */
} descent_error;

typedef struct descent descent;

/* The table's message for a DESCENT_E* code ("unknown error" otherwise). */
DESCENT_API const char *descent_strerror(int rc);

/* Frees a string (or any buffer) the library returned.  NULL is fine. */
DESCENT_API void descent_free(void *p);

/* ---- handles ----------------------------------------------------------------- */

/* Opens a handle.  `url` is a base URL ("http://127.0.0.1:8080") or a
 * comma-separated list of them: with several, every instance is sharded over
 * the daemons in that order (the order is part of the layout: always list
 * them the same way).  `token` (may be NULL) is sent as a bearer token.
 * Replicas (descentd --cluster, proto/replicas.md): an entry may be the
 * members of one Raft group joined by '|' ("http://a|http://b|http://c";
 * "http://a1|http://a2,http://b1|http://b2" is two shards, each a group).
 * A comma list whose daemons say (GET /v1/cluster, at open) that they are
 * members of one group is that group, as in the Python client; members that
 * are down then are members too, but at least one must answer.  Plain
 * daemons, or members of different groups, are shards (each must answer); a
 * list where some are members of one group and some not is refused.  A group is
 * one shard: a write goes to the member believed to lead and follows 307
 * to the leader; a request is retried across the members for up to
 * DESCENT_OPT_FAILOVER_MS after 503 no_leader or a refused connection, and
 * after leadership_lost, a lost connection or a timeout only when a retry
 * cannot apply it twice (a read, an Idempotency-Key, worker + seq).  A push
 * to a group without a key or seq of its own gets a random Idempotency-Key,
 * the same on each retry: it is applied exactly once.  Reads carry
 * Descent-Read: leader (DESCENT_OPT_READ_LEADER), so a client reads its own
 * writes.  Every handle follows 307s (same method, body and token).
 * One libcurl easy handle per daemon, kept alive across calls, TCP_NODELAY.
 * https:// daemons are verified against the system's CA certificates, or
 * against the bundle named by the environment variable DESCENT_CA_FILE
 * (e.g. the self-signed certificate of your own daemon).
 * With several daemons, each is contacted once (GET /v1/optimizers) so that
 * an unreachable daemon or a refused token is reported here.
 * Returns a new handle, or NULL with `err` filled. */
DESCENT_API descent *descent_open(const char *url, const char *token, descent_error *err);

/* Closes the handle and its connections.  NULL is fine. */
DESCENT_API void descent_close(descent *d);

typedef enum descent_option {
  DESCENT_OPT_TIMEOUT_MS = 1,     /* whole-request limit, 0 = none (default); long-polls add their wait */
  DESCENT_OPT_CONNECT_TIMEOUT_MS, /* default 10000 */
  DESCENT_OPT_SETTLE_MS,          /* sharded: how long shards that lag may take to catch up before
                                     a step mismatch is reported (default 2000) */
  DESCENT_OPT_FAILOVER_MS,        /* replicas: how long a request is retried across a group's
                                     members (default 30000; 0: one attempt per member round) */
  DESCENT_OPT_READ_LEADER         /* replicas: 1 (default) reads through the leader (Descent-Read:
                                     leader); 0 lets any member answer from what it applied */
} descent_option;

/* Sets an option; DESCENT_EINVAL for an unknown option or a negative value. */
DESCENT_API int descent_set_option(descent *d, descent_option opt, long value);

/* How many daemons the handle spreads instances over (1 = not sharded). */
DESCENT_API size_t descent_shards(const descent *d);

/* The base URL of shard k (borrowed, valid until descent_close), or NULL.
 * A replica group: the member the handle asks first (the last leader seen). */
DESCENT_API const char *descent_shard_url(const descent *d, size_t k);

/* ---- replicas ------------------------------------------------------------------ */

/* Opens a handle on the n members of one replica group (base URLs), as
 * descent_open on them joined by '|'. */
DESCENT_API descent *descent_open_members(const char *const *members, size_t n, const char *token,
                                          descent_error *err);

/* How many members shard k has (1: a plain daemon or one member), 0 if no such shard. */
DESCENT_API size_t descent_shard_members(const descent *d, size_t k);


/* ---- instances --------------------------------------------------------------- */

/* Creates an instance from the JSON text of the API's create body (proto/openapi.yaml)
 * ({"name", "algorithm", "hyper", "tensors", "mode", ...}).  When `desc` is
 * not NULL it receives the description (new JSON text).
 * Sharded: the spec is split by proto/sharding.md's rule and created on
 * every daemon; if one refuses, the shards already created are deleted again.
 * Refused when sharded (DESCENT_ENOTSUP): random_search; sync mode with
 * clip_grad_norm (the combined gradient's norm is only known to each shard
 * for its slice); sync mode with min_workers < workers (a late round could
 * close with different workers on different shards).  Fewer parameters than
 * daemons: DESCENT_EINVAL. */
DESCENT_API int descent_create(descent *d, const char *spec_json, char **desc, descent_error *err);

/* The instance's description as JSON text (new): configuration, step,
 * tensors with shapes and offsets.  Sharded: the logical view (tensors and
 * size of the whole instance; a tensor split over shards shows its shape
 * flat, [count]) plus "steps" (each shard's) and "shards": [{"url", "offset",
 * "size", "step"}]; the shards' steps are checked (DESCENT_ESHARDS). */
DESCENT_API int descent_describe(descent *d, const char *name, char **desc, descent_error *err);

/* Every instance, as the daemon's JSON text {"optimizers": [...]} (new).
 * Sharded: one entry per name, "size" summed over the shards, "steps" of
 * every shard, and "consistent": false when they differ or a shard lacks it. */
DESCENT_API int descent_list(descent *d, char **json, descent_error *err);

/* Replicas (descentd --cluster), on the first URL's group: the group as
 * that member sees it (GET /v1/cluster, JSON text, new); add member id at
 * its Raft address HOST:PORT (a new daemon started with --join), or remove
 * member id.  Changes go to the leader (a follower's 307 is followed) and
 * return once raft has made them; *json (may be NULL) the group after. */
DESCENT_API int descent_cluster(descent *d, char **json, descent_error *err);
DESCENT_API int descent_member_add(descent *d, uint64_t id, const char *address, char **json, descent_error *err);
DESCENT_API int descent_member_remove(descent *d, uint64_t id, char **json, descent_error *err);

/* Deletes the instance (on every shard).  Sharded: shards that no longer
 * have it are skipped; unknown_instance only when no shard had it. */
DESCENT_API int descent_delete(descent *d, const char *name, descent_error *err);

/* Changes run-time settings with a JSON PATCH body, e.g.
 * {"hyper": {"lr": 0.0005}} or {"clip_grad_norm": 1.0}.  `desc` (may be
 * NULL) receives the new description.  On a refusal nothing changed (on a
 * sharded handle: the body is checked by the first shard before the others
 * receive it). */
DESCENT_API int descent_patch(descent *d, const char *name, const char *patch_json, char **desc,
                              descent_error *err);

/* Sets one hyperparameter: descent_set_hyper(d, "m", "lr", 0.01, &err). */
DESCENT_API int descent_set_hyper(descent *d, const char *name, const char *key, double value,
                                  descent_error *err);

/* The shape of a tensor and where it sits in the flat layout. */
typedef struct descent_tensor {
  char name[65];
  int ndim;
  uint64_t shape[8]; /* sharded: a tensor split over shards shows [count] */
  size_t offset;     /* first index in the instance's flat layout */
  size_t count;      /* number of floats (0 for a sparse tensor) */
  int sparse;        /* a sparse [V, D] tensor, addressed by row (descent_push_rows) */
} descent_tensor;

typedef struct descent_info {
  char algorithm[32];
  char mode[8];          /* "async" or "sync" */
  uint64_t step;
  size_t size;           /* floats in every push and pull */
  size_t ntensors;
  descent_tensor *tensors; /* owned by the info: descent_info_free */
} descent_info;

/* Fills *info (call descent_info_free afterwards, also after a failure).
 * Sharded: checks that the shards agree on the step (DESCENT_ESHARDS). */
DESCENT_API int descent_info_get(descent *d, const char *name, descent_info *info, descent_error *err);
DESCENT_API void descent_info_free(descent_info *info);

/* ---- training ----------------------------------------------------------------- */

/* Wire precision of binary bodies (proto/binary.md): gradients and
 * parameters may travel as bfloat16 or float16 (little-endian, 2 bytes a
 * value), half the bytes of float32.  The daemon widens them exactly and
 * keeps every parameter and buffer in float32. */
typedef enum descent_dtype { DESCENT_FLOAT32 = 0, DESCENT_BFLOAT16 = 1, DESCENT_FLOAT16 = 2 } descent_dtype;

/* n floats rounded (nearest even) to dtype values at out, and back
 * (exact).  DESCENT_FLOAT32 copies. */
DESCENT_API void descent_to_dtype(descent_dtype dtype, const float *in, void *out, size_t n);
DESCENT_API void descent_from_dtype(descent_dtype dtype, const void *in, float *out, size_t n);

typedef struct descent_push_opts {
  const char *worker;          /* ?worker= (needed in sync mode), NULL: none */
  int64_t step;                /* step the gradient was computed at, -1: not sent */
  double loss;                 /* reported loss, NAN: not sent */
  const char *idempotency_key; /* Idempotency-Key header: a retry is applied once */
  int64_t seq;                 /* per-worker sequence number (key = worker + seq), -1: none */
} descent_push_opts;

#define DESCENT_PUSH_OPTS_INIT {NULL, -1, NAN, NULL, -1}

/* Pushes a gradient of n floats (every tensor in creation order) and, when
 * `params` is not NULL, receives the updated parameters (n floats) into it;
 * params == NULL sends ?params=none.  *step (may be NULL) receives the step
 * of the reply.  opts may be NULL (no worker, no step, no loss, no key).
 * In sync mode the call returns when the worker's round closes.
 * A transport error leaves the outcome unknown: retry with the same
 * idempotency key, which the daemon applies at most once.
 * Sharded: the gradient is split, sent to every shard concurrently, and the
 * global gradient norm is computed here exactly as the daemon would and
 * sent as ?grad_norm= (async mode), so clipping matches one daemon; the
 * shards' steps are compared afterwards (DESCENT_ESHARDS on a mismatch). */
DESCENT_API int descent_push(descent *d, const char *name, const float *grads, size_t n,
                             const descent_push_opts *opts, float *params, uint64_t *step,
                             descent_error *err);

/* descent_push and descent_pull with the gradient and the parameters as n
 * values of `dtype` each (2 bytes for the half types, 4 for float32).
 * Sharded: the global gradient norm is computed from the widened values,
 * exactly as one daemon would (that costs one n-float buffer here). */
DESCENT_API int descent_push_dtype(descent *d, const char *name, const void *grads, size_t n, descent_dtype dtype,
                                   const descent_push_opts *opts, void *params, uint64_t *step, descent_error *err);
DESCENT_API int descent_pull_dtype(descent *d, const char *name, void *params, size_t n, descent_dtype dtype,
                                   int64_t wait_for_step, long timeout_ms, uint64_t *step, descent_error *err);

/* Pulls the parameters (n floats, the instance's size) into `params`.
 * wait_for_step >= 0 long-polls until the instance reaches that step or
 * timeout_ms passes (then the current, older parameters come back: check
 * *step).  wait_for_step < 0 answers at once.  A size other than the
 * instance's is refused with code "bad_length" and params untouched
 * (sharded), or partly written (one daemon: the reply is checked as it
 * arrives). */
DESCENT_API int descent_pull(descent *d, const char *name, float *params, size_t n, int64_t wait_for_step,
                             long timeout_ms, uint64_t *step, descent_error *err);

/* ---- sparse tensors: rows ----------------------------------------------------------
 * A tensor created with "sparse": true and shape [V, D] (an embedding table,
 * hashed features; V up to 2^62) is addressed by row: a push carries, for
 * each sparse tensor, k row ids and k*D gradient values; the daemon applies
 * them as torch.optim applies a sparse gradient (sgd in the order sent,
 * adagrad and sparse_adam summing repeated rows first).  Rows never touched
 * hold their seeded initial values and take no memory.
 * Sharded: a sparse tensor's rows are split by the split rule on [0, V)
 * (proto/sharding.md); a push goes only to the shards it touches (dense
 * floats or rows), unless a result depends on the step count (sync mode, a
 * schedule, sparse_adam, adagrad's lr_decay): then every shard gets it, the
 * untouched ones with no rows, so all count the same steps. */

/* One sparse tensor's part of a push. */
typedef struct descent_rows {
  const char *tensor;   /* the sparse tensor's name */
  size_t k;             /* entries (0: none this step) */
  const uint64_t *rows; /* k row ids in [0, V); repeats and any order are fine */
  const float *values;  /* k*D gradient values, entry after entry */
  float *out;           /* NULL, or k*D floats: each entry's row after the step, in the order sent */
} descent_rows;

/* Pushes a gradient of an instance with sparse tensors: the dense tensors'
 * n floats (creation order, the instance's size; 0 when all are sparse) and
 * rows[0..nrows) for sparse tensors (one entry per tensor at most; a sparse
 * tensor not listed gets no rows).  params (NULL: not wanted) receives the
 * dense parameters, each rows[].out its rows.  opts and *step as in
 * descent_push.  Row ids >= V, an unknown or repeated tensor: DESCENT_EINVAL
 * with nothing sent.  The body is built in one buffer per shard (one copy). */
DESCENT_API int descent_push_rows(descent *d, const char *name, const float *grads, size_t n,
                                  const descent_rows *rows, size_t nrows, const descent_push_opts *opts,
                                  float *params, uint64_t *step, descent_error *err);

/* The current values of k rows of sparse tensor `tensor` (k*D floats into
 * values, in the order asked); never-touched rows come back at their
 * initial values and the daemon allocates nothing.  *step (may be NULL):
 * the step (sharded: the largest step of the shards asked). */
DESCENT_API int descent_pull_rows(descent *d, const char *name, const char *tensor, const uint64_t *rows, size_t k,
                                  float *values, uint64_t *step, descent_error *err);

/* random_search instances (one daemon only): ask for a candidate (n floats
 * into x, its id into *candidate), evaluate it, tell its loss.  *improved and
 * *best_loss (each may be NULL) report whether it became the best. */
DESCENT_API int descent_ask(descent *d, const char *name, float *x, size_t n, uint64_t *candidate,
                            descent_error *err);
DESCENT_API int descent_tell(descent *d, const char *name, uint64_t candidate, double loss, int *improved,
                             double *best_loss, descent_error *err);

/* ---- state -------------------------------------------------------------------- */

/* The whole state (parameters, every optimizer buffer, step, hyper) as
 * JSON text (new, *len bytes, NUL-terminated), the daemon's
 * "descent-state/1" document.  Sharded: the shards' documents gathered into
 * the one a single daemon would write (byte for byte, but for the shapes of
 * tensors split over shards, which show flat); refused with DESCENT_ESHARDS
 * when the shards are not at one step (it would not be a checkpoint).  The
 * documents are cut and spliced as text, never parsed number by number. */
DESCENT_API int descent_state_export(descent *d, const char *name, char **json, size_t *len,
                                     descent_error *err);

/* Imports a state document (creating or replacing the instance) under
 * `name`, whatever name the document was exported from (as Redis RESTORE
 * key does): its top-level "name" is replaced in a copy, the rest is sent
 * byte for byte.  Sharded:
 * the document (from any handle, sharded or not) is split by the rule and
 * every shard replaced with its part, all at the document's step: this is
 * how shards that disagree are brought back in line (proto/sharding.md). */
DESCENT_API int descent_state_import(descent *d, const char *name, const char *json, size_t len,
                                     descent_error *err);

/* Asks for an on-demand snapshot (POST /v1/optimizers/NAME/snapshot) and
 * returns once it is durable (written and fsynced): a checkpoint to come
 * back to after a crash, as Redis SAVE.  *step (may be NULL) receives the
 * step the snapshot holds.  A daemon without a data dir refuses it
 * (DESCENT_EREFUSED, code "no_data_dir"); a write failure is
 * DESCENT_ESERVER ("io_error").  Sharded: every shard is snapshotted at
 * once; shards that wrote different steps give DESCENT_ESHARDS (each shard's
 * snapshot was still written). */
DESCENT_API int descent_snapshot(descent *d, const char *name, uint64_t *step, descent_error *err);

/* ---- tools for worker authors ----------------------------------------------- */

typedef double (*descent_fn)(const double *x, void *ctx);

/* Central differences in double: grad[i] = (f(x + h e_i) - f(x - h e_i)) / 2h.
 * x (n values) is changed during the call and restored exactly before it
 * returns; f is called 2n times.  h <= 0 picks 1e-5.  Returns 0 or
 * DESCENT_EINVAL (NULL pointers). */
DESCENT_API int descent_numeric_gradient(descent_fn f, void *ctx, double *x, size_t n, double h,
                                         double *grad);

/* The gradient check: max over i of |a_i - n_i| / max(|a_i|, |n_i|, 1e-12),
 * the relative error between an analytic and a numeric gradient (0 when both
 * are 0).  *worst (may be NULL) receives the index of the largest error.
 * As a rule of thumb, below 1e-7 is right and above 1e-2 is wrong. */
DESCENT_API double descent_gradient_check(const double *analytic, const double *numeric, size_t n,
                                          size_t *worst);

/* The global L2 norm of a gradient exactly as the daemon computes it for
 * clip_grad_norm: squares summed in double in 8 lanes by index mod 8, the
 * lanes added left to right, then sqrt.  Same bits on every machine. */
DESCENT_API double descent_grad_norm(const float *g, size_t n);

#ifdef __cplusplus
}
#endif
#endif
