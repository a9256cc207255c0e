/* statefix: the state-layer suites' environment, instances and waiters
 * (see statefix.h).  Test code only; the test's thread drives the loop. */
#include "statefix.h"

#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "bufpool.h"
#include "kpool.h"
#include "mem.h"
#include "optim.h"
#include "timers.h"

void fix_init(fix *f) {
  memset(f, 0, sizeof *f);
  ck_assert_int_eq(uv_loop_init(&f->loop), 0);
  f->pool = bufpool_new((size_t)64 << 20);
  f->tm = timers_new(&f->loop);
  f->kp = kpool_new(1);
  atomic_init(&f->incarnations, 0);
  f->env = (instance_env){f->pool, f->tm, f->kp, &f->incarnations, NULL, NULL, NULL};
}

void fix_cleanup(fix *f) {
  timers_close(f->tm);
  uv_run(&f->loop, UV_RUN_DEFAULT); /* runs the close callbacks */
  timers_free(f->tm);
  kpool_free(f->kp);
  bufpool_free(f->pool);
  ck_assert_int_eq(uv_loop_close(&f->loop), 0);
}

bool fix_drive(fix *f, bool (*done)(void *), void *arg, int max_ms) {
  uint64_t end = timers_now_ms() + (uint64_t)max_ms;
  while (!done(arg)) {
    if (timers_now_ms() > end) return false;
    uv_run(&f->loop, UV_RUN_NOWAIT);
    if (done(arg)) break;
    struct timespec ts = {0, 500000};
    nanosleep(&ts, NULL);
  }
  return true;
}

void fix_state(instance_state *s, const fix_spec *sp) {
  memset(s, 0, sizeof *s);
  instance_cfg *c = &s->cfg;
  derr e = {0};
  snprintf(c->name, sizeof c->name, "%s", sp->name ? sp->name : "t");
  ck_assert_int_eq(optim_alg_parse(sp->alg ? sp->alg : "sgd", &c->alg, &c->hyper, &e), 0);
  if (c->alg != OPTIM_RANDOM_SEARCH) c->hyper.lr = sp->lr ? sp->lr : 1.0;
  c->hyper.momentum = sp->momentum;
  c->mode = sp->mode;
  c->max_staleness = sp->has_staleness ? sp->max_staleness : -1;
  c->workers = sp->workers;
  c->min_workers = sp->min_workers;
  c->round_timeout_ms = sp->round_timeout_ms;
  c->worker_lease_ms = sp->worker_lease_ms;
  c->aggregate = sp->aggregate;
  size_t n = sp->n ? sp->n : 4;
  c->ntensors = 1;
  c->tensors = mem_xcalloc(1, sizeof(tensor));
  snprintf(c->tensors[0].name, sizeof c->tensors[0].name, "w");
  c->tensors[0].ndim = 1;
  c->tensors[0].shape[0] = n;
  c->tensors[0].count = n;
  c->n = n;
  s->step = sp->step;
  s->params = mem_alloc_floats(n);
  ck_assert_ptr_nonnull(s->params);
  if (sp->params) memcpy(s->params, sp->params, n * sizeof(float));
  s->best_loss = INFINITY;
  s->next_id = 1;
}

instance *fix_instance(fix *f, const fix_spec *sp) {
  instance_state s;
  fix_state(&s, sp);
  instance *in = instance_from_state(&s, &f->env);
  instance_state_free(&s);
  ck_assert_ptr_nonnull(in);
  return in;
}

static void tw_wake(waiter *w) {
  twaiter *t = w->arg;
  pthread_mutex_lock(&t->lock);
  t->wakes++;
  pthread_cond_broadcast(&t->cond);
  pthread_mutex_unlock(&t->lock);
}

void tw_init(twaiter *t) {
  memset(t, 0, sizeof *t);
  pthread_mutex_init(&t->lock, NULL);
  pthread_cond_init(&t->cond, NULL);
  t->w.wake = tw_wake;
  t->w.arg = t;
}

void tw_cleanup(twaiter *t) {
  psnap_unref(t->w.snap);
  t->w.snap = NULL;
  pthread_cond_destroy(&t->cond);
  pthread_mutex_destroy(&t->lock);
}

void tw_suspend(void *arg) {
  twaiter *t = arg;
  pthread_mutex_lock(&t->lock);
  t->suspends++;
  pthread_cond_broadcast(&t->cond);
  pthread_mutex_unlock(&t->lock);
}

int tw_wakes(twaiter *t) {
  pthread_mutex_lock(&t->lock);
  int n = t->wakes;
  pthread_mutex_unlock(&t->lock);
  return n;
}

void tw_wait(twaiter *t, int n) {
  pthread_mutex_lock(&t->lock);
  while (t->wakes < n) pthread_cond_wait(&t->cond, &t->lock);
  pthread_mutex_unlock(&t->lock);
}

bool tw_woken(void *arg) { return tw_wakes(arg) >= 1; }

push fix_push(const char *worker, int64_t step, float *grad) {
  return (push){.worker = worker, .step = step, .loss = NAN, .grad = grad, .grad_norm = NAN};
}

int tw_push(instance *in, twaiter *t, push p) { return instance_push(in, &p, &t->w, tw_suspend, t); }

void ck_floats_bits(const float *got, const float *want, size_t n, const char *what) {
  for (size_t i = 0; i < n; i++) {
    uint32_t a, b;
    memcpy(&a, &got[i], 4);
    memcpy(&b, &want[i], 4);
    if (a != b)
      ck_abort_msg("%s[%zu]: got %.9g (0x%08x), want %.9g (0x%08x)", what, i, (double)got[i], a,
                   (double)want[i], b);
  }
}

uint64_t fix_read(instance *in, float *out) { return instance_read(in, out); }

int fix_reconfigure(instance *in, const instance_cfg *c, derr *e) {
  instance_change_lock(in);
  int rc = instance_reconfigure(in, c, e);
  instance_change_unlock(in);
  return rc;
}
