/* instance: one named optimizer: its configuration, parameters, optimizer
 * state, and the coordination of the workers that push to it.  The state
 * layer's public face; struct instance itself is private to server/state/
 * (instance_internal.h), and every function here takes the locks it needs.
 *
 * The files of the state layer, one concern each:
 *   instance.c   lifetime, configuration helpers, reads, close/shutdown
 *   psnap.c      refcounted parameter copies shared by replies
 *   waiters.c    wake lists and long-poll waiters
 *   workers.c    the workers table (leases, staleness figures)
 *   history.c    the per-step history ring
 *   idem.c       the idempotency-key window
 *   apply.c      one optimizer step, its scan and its latency histogram
 *   rows.c       one sparse tensor's held rows (hash, chunked blocks, init)
 *   sparse.c     the sparse half of a step (coalesce, quota, row kernels)
 *   round.c      sync rounds and worker leases (timers)
 *   push.c       the push path: replay, staleness, async apply, round entry
 *   transfer.c   export, import, reconfigure
 *   search.c     random-search ask/tell
 *   journal_state.c  --durability log: changes queued before they apply
 *   registry.c   the named instances and the memory quota
 *
 * Invariants (all under the instance lock):
 *   - params and every allocated buffer hold n floats; `step` counts the
 *     optimizer steps applied; all of them change together, inside one
 *     critical section, so any copy taken under the lock is one moment.
 *   - a sync round holds the pushes of distinct workers for the current step
 *     only; it closes (one optimizer step) when `expected` workers have
 *     pushed, or at its deadline with at least min_workers (else 504).
 *   - every waiter is on exactly one list (long-poll or a round participant)
 *     until it is completed; completion unlinks it under the lock, and its
 *     wake callback runs after the lock is released.
 *
 * Sync round states:
 *     EMPTY --first push--> OPEN --expected pushes--> (apply) --> EMPTY
 *                            |--deadline, >= min_workers--> (apply) --> EMPTY
 *                            |--deadline, fewer----------> (504 all) --> EMPTY
 *                            '--lease of a silent member expires: expected--; may close
 *
 * Lock order (a thread holding one may take only those after it):
 *   registry catalog lock (registry_change_lock: create, import, delete)
 *   -> instance change lock (instance_change_lock: PATCH, snapshots of it)
 *   -> persist's lock
 *   -> instance lock (private; every function below takes it itself)
 *   -> leaves: timers, kpool, bufpool, the HTTP suspended list, the
 *      registry's table lock and its quota mutex, the log's queue mutex
 *      (change_sink.submit, --durability log).
 * One exception: import holds the replaced instance's change lock while it
 * takes the new one's, which no other thread can see yet (not published).
 * Wake callbacks run after the instance lock is released.  Debug builds
 * (-DDESCENT_DEBUG, the sanitizer builds) assert the lock is held wherever a
 * function requires it.
 *
 * No I/O, no HTTP, no JSON here: handlers decode into a `push` and encode
 * what comes back.  Called from HTTP threads, the loop thread (timers) and
 * the snapshot threads (export, version, change lock).
 */
#ifndef DESCENT_INSTANCE_H
#define DESCENT_INSTANCE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bufpool.h"
#include "change.h"
#include "errors.h"
#include "optim.h"
#include "rsearch.h"
#include "schedule.h"
#include "timers.h"

typedef struct kpool kpool;
typedef struct registry registry;

/* What every instance shares: buffer pool, timers, kernel threads, and the
 * registry whose quota memory allocated after creation is charged to
 * (random-search candidates; NULL: not charged). */
typedef struct instance_env {
  bufpool *pool;
  timers *tm;
  kpool *kp;
  atomic_uint_fast64_t *incarnations; /* source of instance incarnation ids */
  registry *reg;
  /* --durability log: where pushes and closed rounds are queued before they
   * apply (the journal, server/store/journal.h); NULL: snapshot mode */
  const change_sink *changes;
  /* replicas (--cluster): where the closed rounds of sync instances go (one
   * Raft entry each, proto/replicas.md); their pushes join the round in
   * memory on the leader.  NULL: not a replica */
  const change_sink *round_changes;
} instance_env;

#define NAME_MAX_LEN 64
#define TENSOR_MAXDIM 8
#define HISTORY_LEN 1024
#define IDEM_LEN 1024
#define IDEM_KEY_MAX 128

enum instance_mode { MODE_ASYNC, MODE_SYNC };
enum instance_aggregate { AGG_MEAN, AGG_SUM };

/* A sparse tensor's seeded init: row r, column c (r counted from the
 * logical table's first row, tensor.origin + r) has a value that depends
 * only on (kind, a, b, seed, r, c), so a row first touched late, after a
 * restart or on another shard starts the same. */
enum tensor_init_kind { TENSOR_INIT_ZEROS, TENSOR_INIT_CONSTANT, TENSOR_INIT_NORMAL, TENSOR_INIT_UNIFORM };
typedef struct tensor_init {
  int kind;     /* enum tensor_init_kind */
  double a, b;  /* constant: a; normal: mean a, std b; uniform: low a, high b */
  uint64_t seed;
} tensor_init;

typedef struct tensor {
  char name[NAME_MAX_LEN + 1];
  int ndim;
  uint64_t shape[TENSOR_MAXDIM];
  size_t count;    /* product of shape */
  size_t offset;   /* first element in the instance's flat arrays */
  uint64_t origin; /* index of the first element in the logical tensor ("offset": K);
                      sparse: the first row in the logical table */
  /* sparse ("sparse": true, shape [V, D]): rows are held only once touched,
   * so count is 0 and the tensor takes no room in the flat arrays */
  bool sparse;
  uint64_t vrows; /* V, up to 2^62 */
  size_t dim;     /* D */
  tensor_init init; /* sparse: the value of a row never touched (dense tensors are filled at create) */
} tensor;

typedef struct instance_cfg {
  char name[NAME_MAX_LEN + 1];
  optim_alg alg;
  optim_hyper hyper;
  int mode;               /* enum instance_mode */
  int64_t max_staleness;  /* async; -1: unlimited */
  uint32_t workers;       /* sync: N */
  uint32_t min_workers;   /* sync: M (0: = N) */
  uint64_t round_timeout_ms; /* sync; 0: none */
  int aggregate;          /* enum instance_aggregate */
  uint64_t worker_lease_ms;
  double clip_grad_norm;  /* 0: off */
  schedule sched;
  size_t ntensors;
  tensor *tensors; /* owned */
  size_t n;        /* total floats */
} instance_cfg;

/* Pins the wall clock the state layer stamps (created, history times, a
 * worker's last push) to unix_s on the calling thread; 0 unpins it.  A
 * replica replays each write with the time its leader took it, so every
 * member stamps the same times. */
void instance_clock_pin(double unix_s);

void instance_cfg_free(instance_cfg *c);
void instance_cfg_copy(instance_cfg *dst, const instance_cfg *src);
/* Index of the tensor named `name`, or -1. */
int instance_cfg_tensor(const instance_cfg *c, const char *name);
/* Floats the instance holds for this configuration (params + buffers it may need). */
uint64_t instance_cfg_footprint(const instance_cfg *c);

/* A refcounted copy of the parameters at one step, shared by every reply
 * that must show that moment (a closed sync round, a retried push). */
typedef struct psnap {
  atomic_int refs;
  uint64_t step;
  size_t n;
  float *v;
  size_t cap;
  bufpool *pool;
} psnap;

psnap *psnap_ref(psnap *s);
void psnap_unref(psnap *s);

/* A request waiting on the instance (long-poll or sync push).  Embedded in
 * the HTTP layer's request; filled by the instance when completed. */
typedef struct waiter waiter;
struct waiter {
  waiter *prev, *next;
  int linked;
  uint64_t wait_step;   /* long-poll: wake when step >= wait_step */
  bool polling;         /* linked on the long-poll list (not a round's) */
  /* outcome */
  int code;             /* 0 or positive error code */
  derr err;
  uint64_t step;
  psnap *snap;          /* sync: the round's parameters (a reference) */
  psnap *rows;          /* sync, sparse tensors: the pushed rows' values after the round's step, in
                           the order sent (v[0..n): each sparse tensor's k*D floats, creation order;
                           a reference the request drops with psnap_unref).  NULL otherwise: async
                           pushes get them in push_rows.vals; a replay reads them (instance_read_rows) */
  double apply_ms;
  bool replayed;        /* the outcome of an earlier push with the same key */
  void (*wake)(waiter *w); /* after the lock is released, any thread */
  void *arg;
};

/* A worker as the instance knows it. */
typedef struct worker_info {
  char name[NAME_MAX_LEN + 1];
  uint64_t last_seen_ms;   /* monotonic */
  double last_push_time;   /* unix seconds, 0: never */
  int64_t last_push_step;  /* step its last gradient was computed on */
  uint64_t staleness;      /* instance step - last_push_step at its last push */
  uint64_t pushes, rejected;
  bool dropped;            /* lease expired (sync membership) */
} worker_info;

typedef struct history_entry {
  uint64_t step;
  double time, loss, grad_norm, lr;
  uint64_t rows_touched; /* sparse: distinct rows the step updated (0 without sparse tensors) */
} history_entry;

/* The outcome of a keyed push, as a snapshot keeps it (so a retry after a
 * restart replays it rather than applying the push again). */
typedef struct idem_record {
  char key[IDEM_KEY_MAX + 1];
  int code;     /* 0: applied; else the refusal's code */
  derr err;
  uint64_t step; /* the step its reply showed */
} idem_record;

/* The gradient of one sparse tensor in a push: k entries, as sent
 * (repeats allowed; the state layer coalesces where torch does).  The state
 * layer refuses ids >= V and non-finite values itself (invalid_value,
 * not_finite), and a push whose new rows would exceed --max-params
 * (quota_exceeded), each before anything changes.  The gradient's norm
 * (history, clip_grad_norm) is over the dense floats and each sparse
 * tensor's coalesced values (torch's norm of a sparse gradient coalesces),
 * unless push.grad_norm gives it.  A sync round copies the rows, so they
 * need not outlive instance_push (the dense grad must); its new rows are
 * counted and charged when it closes (the union of its members' rows), and
 * a round whose rows would exceed --max-params fails whole (quota_exceeded
 * to every member), changing nothing. */
typedef struct push_rows {
  uint64_t k;
  const uint64_t *rows; /* k row ids in [0, V), owned by the caller */
  float *vals;          /* k*D floats; with emit, overwritten with the rows' new values */
} push_rows;

/* One decoded push. */
typedef struct push {
  const char *worker;  /* NULL: anonymous (async only) */
  int64_t step;        /* -1: not given */
  double loss;         /* NAN: not given */
  float *grad;         /* n floats, scratch owned by the caller until the outcome */
  push_rows *rows;     /* one per sparse tensor in creation order; NULL if none */
  const char *key;     /* idempotency key or NULL */
  double grad_norm;    /* a sharded client's global norm; NAN: compute here */
  bool emit;           /* write the new parameters into grad (async reply) */
} push;

enum push_status {
  PUSH_DONE,    /* applied (or replayed): outcome in the waiter */
  PUSH_WAITING, /* suspended in a sync round: wake comes later */
  PUSH_FAILED,  /* refused: nothing changed */
};

/* Apply latency histogram: bucket k counts steps that took <= 2^k us; the
 * last bucket counts everything slower. */
#define INSTANCE_LATENCY_BUCKETS 16

/* The counters /metrics shows, copied under the lock. */
struct instance_stats {
  uint64_t pushes, steps;
  uint64_t rejected[E__COUNT];
  uint64_t apply_ns_total, decode_ns_total, encode_ns_total;
  uint64_t latency_buckets[INSTANCE_LATENCY_BUCKETS];
  double last_loss, last_grad_norm;
  uint64_t rows_held;    /* sparse: rows held now, all sparse tensors */
  uint64_t rows_touched; /* sparse: rows updated by the last step (distinct) */
};

/* What never changes after creation: name, algorithm, mode, tensors, size.
 * Read without a lock by any thread holding a reference. */
typedef struct instance_layout {
  const char *name;
  optim_alg alg;
  int mode; /* enum instance_mode */
  size_t n; /* total floats */
  size_t ntensors;
  const tensor *tensors;
} instance_layout;

/* The layout of a configuration (pointers into c, valid while c is). */
instance_layout instance_cfg_layout(const instance_cfg *c);
/* Index of the tensor named `name` in l, or -1. */
int instance_layout_tensor(const instance_layout *l, const char *name);

/* The instance is private to server/state/ (instance_internal.h). */
typedef struct instance instance;

/* Creates an instance from cfg (copied) with parameters zeroed and state at
 * its initial values.  Returns NULL if the memory cannot be had (the caller
 * reports the quota error). */
instance *instance_new(const instance_cfg *cfg, const instance_env *env);
/* Before the instance is published (registry_add), sets its initial
 * parameters (n floats).  No lock: nobody else can see it yet. */
void instance_init_params(instance *in, const float *params);

/* The parts that never change; valid while a reference is held.  No lock. */
const instance_layout *instance_layout_of(const instance *in);
const char *instance_name(const instance *in);
uint64_t instance_incarnation(const instance *in);

/* Floats the instance holds now (parameters, buffers, sync scratch, and
 * the held rows of sparse tensors, blocks of params and buffers): what the
 * registry's quota counts.  Takes the lock. */
uint64_t instance_floats(instance *in);

/* The change lock serializes configuration changes (PATCH, import of this
 * name) with the snapshots of this instance, so that no snapshot can carry
 * an older configuration over a newer acknowledged one.  Held across the
 * write of a file; never while the instance lock is held. */
void instance_change_lock(instance *in);
void instance_change_unlock(instance *in);

/* The version (bumped by every change) and whether it was deleted. */
uint64_t instance_version(instance *in, bool *deleted);
instance *instance_ref(instance *in);
void instance_unref(instance *in); /* frees at zero */

/* Marks it deleted and completes every waiter with `code` (E_NO_INSTANCE,
 * E_CONFLICT when replaced).  Thread-safe. */
void instance_close(instance *in, int code, const char *msg);

/* Shutdown: completes every waiter with 503 and refuses new waits (sync
 * pushes, long-polls); the instance stays intact for its last snapshot. */
void instance_shutdown(instance *in);

/* Applies (async), joins a round (sync), or replays (idempotency key) a push.
 * w receives the outcome when PUSH_DONE; with PUSH_WAITING, w->wake runs
 * later from another thread (the caller must be ready: call with `suspend`
 * which is run under the lock after w was linked, so no wake can precede
 * it).  PUSH_FAILED: w->code/err say why and nothing changed. */
int instance_push(instance *in, push *p, waiter *w, void (*suspend)(void *), void *suspend_arg);

/* Fails the open sync round, if any (its workers get code and msg; their
 * keys are forgotten, so a retry joins a new round).  A replica that stops
 * leading.  Any thread. */
void instance_round_abort(instance *in, int code, const char *msg);

/* Long-poll: if step >= want, returns 1.  Else links w, runs suspend(arg)
 * under the lock and returns 0; w->wake runs once step >= want. */
int instance_wait_step(instance *in, waiter *w, uint64_t want, void (*suspend)(void *), void *arg);

/* Unlinks w if it is still waiting (a timeout); returns 1 if it was, in
 * which case the caller completes it itself.  0: it is being completed. */
int instance_unwait(instance *in, waiter *w);

/* Copies params (or one range) into out under the lock; returns the step. */
uint64_t instance_read(instance *in, float *out);

/* Marks worker `name` as seen now (renews its lease). */
void instance_touch_worker(instance *in, const char *name);

/* A copy of the configuration (caller frees with instance_cfg_free). */
void instance_cfg_get(instance *in, instance_cfg *out);

/* The figures a description shows, copied under the lock. */
typedef struct instance_info {
  uint64_t step;
  double lr, created;
  size_t workers_seen, waiting;
  double best_loss; /* random_search */
} instance_info;
void instance_info_get(instance *in, instance_info *out);

/* The lr the next step will use. */
double instance_lr(instance *in);

/* Adds a step's decode and encode time (the handler's part of
 * Server-Timing) to the counters /metrics shows. */
void instance_note_codec(instance *in, double decode_ms, double encode_ms);

/* The instance's counters and current values, copied under the lock. */
void instance_stats_copy(instance *in, struct instance_stats *out, uint64_t *step);


/* ---- whole-state copies: export, import, snapshots ---- */

/* The held rows of one sparse tensor in a state copy: ids ascending, and the
 * parameters and each held buffer as m*D floats in that order. */
typedef struct state_rows {
  uint64_t m;
  uint64_t *ids;
  float *params;
  float *buf[OPTIM_NBUF];
} state_rows;

/* A detached copy of an instance at one moment (cfg, step, arrays). */
typedef struct instance_state {
  instance_cfg cfg;
  uint64_t step, version, incarnation;
  double created; /* unix seconds the instance was first created (0: now) */
  float *params;
  float *buf[OPTIM_NBUF];
  unsigned have, fresh;
  /* random_search */
  double best_loss;
  uint64_t next_id, tells, best_id;
  /* the idempotency window, oldest first (completed keys only) */
  idem_record *idem;
  size_t nidem;
  /* sparse tensors: one per sparse tensor in creation order (NULL if none) */
  state_rows *rows;
  /* --durability log: the instance's log identity (random, kept across
   * restarts; entries of another id are not its) and the seq of the last
   * change applied in this state (replay applies those after it) */
  uint64_t log_id, log_seq;
} instance_state;

/* Allocates r for m rows of a D-column tensor with the buffers in `bufs`
 * (ids: malloc; params and buffers: mem_alloc_floats(m*D)), as every
 * producer of a state must, so instance_state_free can free it.  0 or
 * -E_QUOTA (nothing held). */
int state_rows_alloc(state_rows *r, uint64_t m, size_t D, unsigned bufs);
void state_rows_free_one(state_rows *r, size_t D);
/* The buffers a sparse tensor's rows hold for this configuration (mask of
 * 1u << enum optim_buf): what state_rows.buf must give on import. */
unsigned instance_cfg_row_buffers(const instance_cfg *c);

/* Copies everything under the lock (one memcpy per array; sparse rows in
 * ascending id order).  Returns 0 or -E_QUOTA if memory for the copy cannot
 * be had. */
int instance_export(instance *in, instance_state *out);
void instance_state_free(instance_state *s);

/* ---- sparse tensors (rows) ---- */

/* Copies k rows of sparse tensor t (index into the layout's tensors) into out
 * (k*D floats): held rows as they are, untouched ones at their init, without
 * allocating.  Row ids must be < V (the codec checks).  Returns the step. */
uint64_t instance_read_rows(instance *in, int t, const uint64_t *rows, size_t k, float *out);

/* Rows sparse tensor t (index into the layout's tensors) holds now (0 for a
 * dense tensor): GET .../params and /metrics show it.  Takes the lock. */
uint64_t instance_rows_held(instance *in, int t);

/* Before publication: holds rows[0..k) of sparse tensor t with the given
 * values (k*D floats; create's explicit rows).  0 or -E_QUOTA. */
int instance_init_rows(instance *in, int t, const uint64_t *rows, size_t k, const float *vals);

/* A new instance holding exactly s (arrays copied; s->rows, if given,
 * with ids ascending and < V, and a buffer missing from a state_rows starts
 * at its initial value).  NULL on out of memory. */
instance *instance_from_state(const instance_state *s, const instance_env *env);

/* Replaces the configuration with c (already validated against the current
 * one: same algorithm, tensors and mode).  Allocates buffers the new
 * hyperparameters need.  Returns 0, or -E_QUOTA with nothing changed.
 * Requires the change lock (so the cost below stays true). */
int instance_reconfigure(instance *in, const instance_cfg *c, derr *e);
/* Floats a reconfigure to c would allocate (0 if none).  Takes the lock. */
uint64_t instance_reconfigure_cost(instance *in, const instance_cfg *c);
/* The two halves around a PATCH's write: prepare allocates the buffers c
 * needs (all or none: 0, or -E_QUOTA with nothing held; *added says which
 * are new), so that instance_reconfigure cannot fail after the new
 * configuration was written; abort frees them again if the write failed.
 * Both require the change lock. */
int instance_reconfigure_prepare(instance *in, const instance_cfg *c, unsigned *added, derr *e);
void instance_reconfigure_abort(instance *in, unsigned added);

/* random_search: proposes candidate *id into out (n floats). */
int instance_ask(instance *in, uint64_t *id, float *out, derr *e);
/* random_search: reports a loss.  *best_loss and *step describe the result. */
int instance_tell(instance *in, uint64_t id, double loss, bool *improved, double *best_loss,
                  uint64_t *step, derr *e);

/* ---- --durability log (journal_state.c; entry format: proto/log.md) ---- */

/* The instance name an entry is for (name: NAME_MAX_LEN + 1 bytes).  0, or
 * -E_BAD_REQUEST with e saying why (too short, bad magic, bad lengths). */
int instance_change_name(const unsigned char *entry, size_t len, char *name, derr *e);
/* Applies an entry made elsewhere or read back (replay, a Raft follower)
 * with the same code as a live change.  0; 1 if it is not this instance's
 * next change (another log id, or seq <= the instance's: already in its
 * state) and was skipped; 2 if it was refused as the live daemon refused it
 * after logging it (a sparse step over the quota: e says why, nothing
 * changed but the seq); or a negative code with e (malformed, wrong sizes,
 * out of memory).  Takes the lock. */
int instance_apply_change(instance *in, const unsigned char *entry, size_t len, derr *e);

/* Copies of the worker table and the history ring (caller frees). */
size_t instance_workers_copy(instance *in, worker_info **out, uint64_t *step);
size_t instance_history_copy(instance *in, history_entry **out);

#endif
