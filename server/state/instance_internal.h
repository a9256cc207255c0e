/* instance_internal: struct instance and the state layer's cross-file
 * functions (named instance__*, round__*, idem__* ...).  Included only by
 * the files of server/state/: everything outside the state layer goes through
 * instance.h, whose functions take the lock themselves.
 *
 * Every function declared here that says "under the lock" requires the
 * instance lock held by the calling thread; debug builds assert it
 * (INSTANCE_ASSERT_LOCKED).  None of them takes the instance lock or any lock
 * above it (only the leaves: timers, kpool, bufpool), does I/O, or calls a
 * wake callback: completed waiters are collected on a wake_list that the
 * public function runs after unlocking.
 */
#ifndef DESCENT_INSTANCE_INTERNAL_H
#define DESCENT_INSTANCE_INTERNAL_H

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "history.h"
#include "instance.h"
#include "rows.h"

#define IDEM_SNAP_BUDGET (64u << 20) /* bytes of kept parameters per instance */

typedef struct logged logged; /* a change queued in the journal (journal_state.c) */

typedef struct idem_entry {
  idem_record r;   /* key (empty: free slot), outcome */
  psnap *snap;     /* the first reply's parameters, kept while within budget */
  waiter *pending; /* sync: requests attached while the round is open */
  logged *queued;  /* log mode: the change carrying this key, not yet done */
} idem_entry;

struct participant {
  worker_info *w;
  float *grad;
  psnap *rows; /* sparse: a pooled copy of its rows (sparse__copy), NULL if none */
  double loss;
  waiter *waiters; /* the push and any retries with its key */
  int idem;        /* idempotency slot or -1 */
};

struct round {
  uint64_t step; /* the step being gathered */
  size_t count;
  struct participant *part;
  size_t part_cap;
  dtimer deadline;
  bool deadline_armed;  /* for this round: deadline_at is its time */
  uint64_t deadline_at; /* ms; a callback that fires before it is a stale one */
};

/* The per-instance scratch of sparse steps (sparse.c): grown to the largest
 * step seen, never shrunk, freed with the instance.  Under the lock. */
typedef struct sparse_scratch {
  unsigned char *mem;
  size_t bytes;
  uint64_t *urows, *crows; /* coalesced ids; a round's concatenated ids */
  uint32_t *order;
  float **blk, **eblk;     /* blocks of the applied entries; of the entries as sent */
  float *ug, *cg;          /* coalesced values; a round's concatenated values */
} sparse_scratch;

/* One sparse tensor of a step being prepared (sparse.c), per sparse tensor. */
typedef struct sparse_work {
  size_t koff, foff; /* where its entries and floats start in the scratch */
  size_t m;          /* distinct rows */
  size_t fresh;      /* of them not held yet */
} sparse_work;

struct instance {
  pthread_mutex_t lock;
  pthread_mutex_t change_lock; /* instance_change_lock */
#ifdef DESCENT_DEBUG
  atomic_uintptr_t owner; /* the thread holding `lock` (instance__self), 0 */
#endif
  atomic_int refs;
  instance_layout layout; /* immutable; its pointers point into cfg */
  uint64_t incarnation;   /* immutable: unique per created/imported/loaded instance */
  instance_cfg cfg;       /* name, alg, mode, tensors, n never change */
  bufpool *pool;
  timers *tm;
  kpool *kp;
  registry *reg; /* quota for memory taken after creation; may be NULL */
  float *params;
  float *buf[OPTIM_NBUF];
  unsigned have;  /* allocated buffers */
  unsigned fresh; /* buffers with no history yet (sgd clones its first) */
  uint64_t step;
  uint64_t version; /* bumps on every change: snapshot dirty tracking */
  double created;   /* unix seconds */
  bool deleted;
  bool stopping; /* shutting down: no new waits */
  rsearch *rs;   /* random_search only */
  double lr_now; /* lr of the next step (schedule applied) */
  waiter *pollers;
  struct round round;
  dtimer lease_timer;
  bool lease_armed;  /* lease_at is its time; an earlier callback is stale */
  uint64_t lease_at;
  float *scratch; /* n floats for combining a round (sync mode) */
  worker_info **workers;
  size_t nworkers, workers_cap;
  idem_entry *idem; /* IDEM_LEN slots, a ring */
  size_t idem_next;
  size_t idem_snap_budget;
  history_entry *hist;
  size_t hist_next, hist_count;
  history_whole whole; /* the whole run, downsampled (history.c) */
  /* sparse tensors, creation order: their rows (rows.c) and tensor index */
  size_t nsparse;
  rows *rows;
  int *sparse_t;
  sparse_work *work;
  sparse_scratch sscr;
  /* --durability log (journal_state.c); changes NULL: snapshot mode */
  const change_sink *changes;
  uint64_t log_id;   /* immutable once published */
  uint64_t log_seq;  /* seq of the last change applied */
  uint64_t log_next; /* seq of the last change submitted */
  uint64_t queued;   /* changes submitted, not yet done: logical step = step + queued */
  unsigned log_hold; /* a PATCH is writing its snapshot: durable changes wait on `deferred` */
  logged *deferred, *deferred_tail;
  struct instance_stats stats;
};

/* ---- locking (instance.c) ---- */
void instance__lock(instance *in);
void instance__unlock(instance *in);
#ifdef DESCENT_DEBUG
uintptr_t instance__self(void);
#define INSTANCE_ASSERT_LOCKED(in) assert(atomic_load(&(in)->owner) == instance__self())
#else
#define INSTANCE_ASSERT_LOCKED(in) ((void)(in))
#endif

/* ---- time (instance.c) ---- */
double instance__wall_now(void);
uint64_t instance__mono_ns(void);

/* ---- buffers (instance.c) ---- */
/* Allocates the buffers in `need` not yet held (under the lock, or before
 * publication), fresh (no history) and at their initial values.  0, or
 * -E_QUOTA if memory cannot be had, with no new buffer held. */
int instance__alloc_buffers(instance *in, unsigned need);
/* Frees the buffers in `which` that are held (under the lock). */
void instance__free_buffers(instance *in, unsigned which);
/* A new instance with cfg's configuration and zeroed parameters, no buffers. */
instance *instance__alloc(const instance_cfg *cfg, const instance_env *env);

/* ---- psnap.c ---- */
psnap *psnap__new(bufpool *pool, const float *v, size_t n, uint64_t step);

/* ---- waiters.c ---- */
typedef struct wake_list {
  waiter *head;
} wake_list;
void waiters__add(wake_list *wl, waiter *w);
void waiters__run(wake_list *wl); /* after unlocking */
/* Sets w's outcome (code 0 or positive, message e or the table's). */
void waiters__complete(waiter *w, int code, const derr *e, uint64_t step);
/* Completes every long-poll whose step has come (under the lock). */
void waiters__wake_pollers(instance *in, wake_list *wl);
/* Completes every long-poll with code (under the lock). */
void waiters__fail_pollers(instance *in, int code, const derr *e, wake_list *wl);

/* ---- workers.c ---- */
/* The worker named `name`, created if `create` (under the lock). */
worker_info *workers__get(instance *in, const char *name, bool create);

/* ---- history.c ---- */
void history__add(instance *in, double loss, double norm, double lr); /* under the lock */

/* ---- idem.c ---- (all under the lock) */
int idem__find(instance *in, const char *key);     /* slot or -1 */
int idem__claim(instance *in, const char *key);    /* next slot, evicting the oldest */
/* Records a keyed push's outcome; keeps its parameters (snap, or a copy of
 * the current ones) while the budget allows. */
void idem__done(instance *in, int slot, int code, const derr *err, uint64_t step, psnap *snap);
void idem__forget(instance *in, int slot);
/* Copies the completed keys, oldest first, into s (export). */
void idem__export(instance *in, instance_state *s);
/* Restores keys from s into a fresh ring (import, load). */
void idem__import(instance *in, const instance_state *s);

/* ---- sparse.c ---- (under the lock, or before publication) */
/* The ordinal among the sparse tensors of tensor index t, or -1. */
int sparse__ordinal(const instance *in, int t);
/* Sets up the row tables (at allocation). */
void sparse__init(instance *in);
void sparse__free(instance *in);
uint64_t sparse__held_floats(const instance *in);
/* Checks that need no lock: row ids < V, finite values.  0 or the error. */
int sparse__check(const instance *in, const push_rows *pr, derr *e);
/* Prepares a step's sparse part (pr: one per sparse tensor): coalesces each
 * tensor into the scratch (a round's sum divided by `divide` when > 1),
 * counts its new rows, adds the squared norm of the coalesced values to
 * *sumsq, then charges the new rows to the quota and makes room for them.
 * 0, or a negative code (E_QUOTA, E_NOT_FINITE) with nothing changed. */
int sparse__prepare(instance *in, const push_rows *pr, float divide, double *sumsq, derr *e);
/* The sparse half of a step prepared by sparse__prepare, with the dense
 * step's plan; `sent` applies pr's entries in the order sent where the
 * algorithm does not coalesce (async sgd), else the coalesced sums.  With
 * emit, each pr[i].vals receives the rows' new values in the order sent.
 * Sets stats.rows_touched and rows_held. */
void sparse__apply(instance *in, const optim_plan *pl, push_rows *pr, bool sent, bool emit);
/* A round's copy of a push's rows, or NULL if the pool refuses: one pooled
 * buffer holding the values (v[0..n), every sparse tensor's k*D in creation
 * order), then each tensor's k and the row ids (sparse.c). */
psnap *sparse__copy(instance *in, const push_rows *pr);
/* The concatenation of the round's copies (worker-name order) as one
 * push_rows per sparse tensor in the scratch (out: nsparse).  0 or -E_QUOTA. */
int sparse__concat(instance *in, push_rows *out, derr *e);
/* Writes the new values of the rows a copy holds into it, in sent order. */
void sparse__fill_copy(instance *in, psnap *copy);

/* ---- apply.c ---- */
/* Refuses w with rc (negative or positive code), counting it (under the lock). */
void apply__reject(instance *in, waiter *w, int rc, const derr *e);
/* One optimizer step on gradient g (n floats) with global norm `norm`
 * (clipping, history); writes the new parameters into g if emit.  Under the
 * lock. */
void apply__step(instance *in, float *g, double norm, double loss, bool emit);
/* The same with the sparse part (pr: one per sparse tensor, prepared by
 * sparse__prepare; NULL if none): `sent` as in sparse__apply. */
void apply__step_rows(instance *in, float *g, push_rows *pr, bool sent, double norm, double loss, bool emit);
/* Finite check and norm of g; no lock (reads g and the immutable layout). */
int apply__scan(const instance *in, const float *g, double *norm, derr *e);
/* The same, giving the sum of squares (norm = its square root). */
int apply__scan_sumsq(const instance *in, const float *g, double *sumsq, derr *e);

/* ---- round.c ---- (under the lock) */
size_t round__expected(instance *in);
/* Adds the push of worker wk to the open round (or opens it) and closes the
 * round when it is complete; PUSH_DONE/PUSH_FAILED if it closed with w's
 * outcome, PUSH_WAITING if w waits (suspend was called). */
int round__join(instance *in, push *p, waiter *w, worker_info *wk, void (*suspend)(void *), void *arg,
                wake_list *wl);
/* Attaches w to the pending round entry of idempotency slot k; false if none. */
bool round__attach_retry(instance *in, int k, waiter *w);
void round__close(instance *in, wake_list *wl, waiter *self);
void round__fail(instance *in, int code, const char *msg, wake_list *wl, waiter *self);
void round__reset(instance *in); /* empties the round, cancels its timers */
void round__init(instance *in);  /* timers' callbacks (at allocation) */

/* ---- journal_state.c ---- (under the lock) */
/* The step the next change will apply to: the applied step plus the changes queued. */
uint64_t journal__logical_step(const instance *in);
/* Log mode, async: queues the validated push (copied; its buffers stay the
 * request's), suspends the request; PUSH_WAITING. */
int journal__push(instance *in, push *p, waiter *w, double sumsq, void (*suspend)(void *), void *arg);
/* Log mode, a round closing: queues its combined gradient (copied from the
 * scratch, the sparse rows concatenated in worker-name order) with the
 * participants (their waiters stay linked) and empties the round; or fails
 * the round (out of memory). */
void journal__round(instance *in, double loss, wake_list *wl, waiter *self);
/* A retry of a key whose change is queued: w waits with it.  false if none. */
bool journal__attach_retry(instance *in, int k, waiter *w);
/* PATCH: changes that become durable from now on wait (hold), until
 * release applies them in order (after the new configuration is set). */
void journal__hold(instance *in);
void journal__release(instance *in, wake_list *wl);
/* A fresh random log id. */
uint64_t journal__new_id(void);
/* A log id derived from the name alone (replicas: every member agrees). */
uint64_t journal__name_id(const char *name);

/* ---- transfer.c ---- */
uint64_t instance__held_floats(const instance *in); /* under the lock, or unpublished */

#endif
