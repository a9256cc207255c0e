/* statefix: what the state-layer suites share: an instance_env with a real
 * timers object on a private libuv loop, instances built from an
 * instance_state the test fills (instance_from_state), and test waiters.
 *
 * Everything here goes through the public headers (instance.h, registry.h,
 * timers.h); nothing reaches into struct instance.  The loop is driven by
 * the test's own thread (fix_drive), so timer callbacks (round deadlines,
 * leases) and the wakes they cause run on that thread, one at a time.
 * A test waiter counts its suspend and wake calls and signals a condition
 * variable, so a second thread may also wait for it (tw_wait).
 */
#ifndef DESCENT_STATEFIX_H
#define DESCENT_STATEFIX_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "instance.h"

typedef struct fix {
  uv_loop_t loop;
  bufpool *pool;
  timers *tm;
  kpool *kp;
  atomic_uint_fast64_t incarnations;
  instance_env env;
} fix;

void fix_init(fix *f);
void fix_cleanup(fix *f); /* closes the timers, runs the loop dry, frees all */

/* Runs the loop (without blocking) until done(arg) is true or max_ms passed;
 * returns done(arg).  A bound, never a measured time: tests assert values. */
bool fix_drive(fix *f, bool (*done)(void *), void *arg, int max_ms);

/* What a test instance looks like; zero fields take the defaults below. */
typedef struct fix_spec {
  const char *name;     /* "t" */
  const char *alg;      /* "sgd" */
  double lr;            /* 1.0 */
  double momentum;      /* 0 */
  size_t n;             /* 4 (one tensor "w" of shape [n]) */
  int mode;             /* MODE_ASYNC */
  int64_t max_staleness; /* set has_staleness; else -1 */
  bool has_staleness;
  uint32_t workers, min_workers;
  uint64_t round_timeout_ms, worker_lease_ms;
  int aggregate;
  uint64_t step;        /* starting step */
  const float *params;  /* n values, NULL: zeros */
} fix_spec;

/* A filled state (caller frees with instance_state_free). */
void fix_state(instance_state *s, const fix_spec *sp);
/* A new instance from fix_state (one reference; caller unrefs). */
instance *fix_instance(fix *f, const fix_spec *sp);

/* A waiter as a request would embed it. */
typedef struct twaiter {
  waiter w;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int suspends; /* suspend callbacks (run under the instance lock) */
  int wakes;    /* wake callbacks */
} twaiter;

void tw_init(twaiter *t);
void tw_cleanup(twaiter *t); /* drops w.snap if any */
void tw_suspend(void *arg);  /* the suspend callback: arg is the twaiter */
int tw_wakes(twaiter *t);    /* under its lock */
/* Blocks until t has been woken at least `n` times (another thread wakes it). */
void tw_wait(twaiter *t, int n);
bool tw_woken(void *arg); /* for fix_drive: wakes >= 1 */

/* A push of grad (n floats) from worker (NULL: anonymous) for step (-1: none). */
push fix_push(const char *worker, int64_t step, float *grad);

/* instance_push with t's waiter and suspend callback. */
int tw_push(instance *in, twaiter *t, push p);

/* instance_reconfigure as a PATCH makes it (after the state-layer split,
 * under the instance's change lock). */
int fix_reconfigure(instance *in, const instance_cfg *c, derr *e);

/* The start of the float quota's refusal message, which the split shortened. */
#define FIX_QUOTA_NEEDS "this needs"

/* Compares two float arrays bit for bit; the message names the first difference. */
void ck_floats_bits(const float *got, const float *want, size_t n, const char *what);

/* Asserts that t's outcome is the error `code` with exactly the message `msg`. */
#define ck_outcome_err(t, code_, msg_)                      \
  do {                                                      \
    ck_assert_int_eq((t)->w.code, (code_));                 \
    ck_assert_int_eq((t)->w.err.code, (code_));             \
    ck_assert_str_eq((t)->w.err.msg, (msg_));               \
  } while (0)

/* The instance's parameters now (n floats) and its step. */
uint64_t fix_read(instance *in, float *out);

#endif
