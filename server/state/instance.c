/* instance: applying pushes, sync rounds, long-poll waiters, workers,
 * idempotency keys and history for one optimizer.  See instance.h for the
 * invariants and the round state diagram. */
#include "instance.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kpool.h"
#include "mem.h"

#define IDEM_SNAP_BUDGET (64u << 20)

static double wall_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- configuration ---------------------------------------------------------- */

void instance_cfg_free(instance_cfg *c) {
  if (!c) return;
  free(c->tensors);
  c->tensors = NULL;
  c->ntensors = 0;
}

void instance_cfg_copy(instance_cfg *dst, const instance_cfg *src) {
  *dst = *src;
  dst->tensors = mem_xmalloc((src->ntensors ? src->ntensors : 1) * sizeof(tensor));
  if (src->ntensors) memcpy(dst->tensors, src->tensors, src->ntensors * sizeof(tensor));
}

int instance_cfg_tensor(const instance_cfg *c, const char *name) {
  for (size_t i = 0; i < c->ntensors; i++)
    if (strcmp(c->tensors[i].name, name) == 0) return (int)i;
  return -1;
}

uint64_t instance_cfg_footprint(const instance_cfg *c) {
  optim_hyper h = c->hyper;
  unsigned need = optim_buffers(c->alg, &h);
  uint64_t k = 1 + (uint64_t)__builtin_popcount(need);
  if (c->mode == MODE_SYNC) k++; /* the combine scratch */
  return k * (uint64_t)c->n;
}

/* ---- psnap ------------------------------------------------------------------ */

static psnap *psnap_new(bufpool *pool, const float *v, size_t n, uint64_t step) {
  size_t cap;
  float *copy = bufpool_get(pool, n * sizeof(float) + 1, &cap);
  if (!copy) return NULL;
  psnap *s = mem_xcalloc(1, sizeof *s);
  atomic_init(&s->refs, 1);
  s->step = step;
  s->n = n;
  s->v = copy;
  s->cap = cap;
  s->pool = pool;
  pthread_mutex_init(&s->lock, NULL);
  if (n) memcpy(copy, v, n * sizeof(float));
  return s;
}

psnap *psnap_ref(psnap *s) {
  if (s) atomic_fetch_add(&s->refs, 1);
  return s;
}

void psnap_unref(psnap *s) {
  if (!s || atomic_fetch_sub(&s->refs, 1) != 1) return;
  for (int i = 0; i < 4; i++)
    if (s->cache[i] && s->cache_free) s->cache_free(s->cache[i]);
  bufpool_put(s->pool, s->v, s->cap);
  pthread_mutex_destroy(&s->lock);
  free(s);
}

/* ---- lifetime --------------------------------------------------------------- */

static int alloc_buffers(instance *in, unsigned need) {
  for (int b = 0; b < OPTIM_NBUF; b++) {
    if (!(need & (1u << b)) || (in->have & (1u << b))) continue;
    float *a = mem_alloc_floats(in->cfg.n);
    if (!a) return -1;
    float init = optim_buf_initial(in->cfg.alg, &in->cfg.hyper, b);
    if (init != 0)
      for (size_t i = 0; i < in->cfg.n; i++) a[i] = init;
    in->buf[b] = a;
    in->have |= 1u << b;
    in->fresh |= 1u << b;
  }
  return 0;
}

static void round_deadline_cb(dtimer *t);
static void lease_cb(dtimer *t);

static instance *alloc_instance(const instance_cfg *cfg, const instance_env *env) {
  instance *in = mem_xcalloc(1, sizeof *in);
  pthread_mutex_init(&in->lock, NULL);
  pthread_mutex_init(&in->cfg_lock, NULL);
  atomic_init(&in->refs, 1);
  instance_cfg_copy(&in->cfg, cfg);
  in->pool = env->pool;
  in->tm = env->tm;
  in->kp = env->kp;
  in->incarnation = env->incarnations ? atomic_fetch_add(env->incarnations, 1) + 1 : 0;
  in->created = wall_now();
  in->params = mem_alloc_floats(cfg->n);
  in->idem = mem_xcalloc(IDEM_LEN, sizeof *in->idem);
  in->hist = mem_xcalloc(HISTORY_LEN, sizeof *in->hist);
  in->idem_snap_budget = IDEM_SNAP_BUDGET;
  in->stats.last_loss = NAN;
  in->stats.last_grad_norm = NAN;
  dtimer_init(&in->round.deadline, round_deadline_cb, in);
  dtimer_init(&in->lease_timer, lease_cb, in);
  if (!in->params) goto fail;
  if (cfg->alg == OPTIM_RANDOM_SEARCH) {
    in->rs = mem_xcalloc(1, sizeof *in->rs);
    rsearch_init(in->rs, cfg->n);
  }
  if (cfg->mode == MODE_SYNC && !(in->scratch = mem_alloc_floats(cfg->n))) goto fail;
  return in;
fail:
  in->refs = 1;
  instance_unref(in);
  return NULL;
}

instance *instance_new(const instance_cfg *cfg, const instance_env *env) {
  instance *in = alloc_instance(cfg, env);
  if (!in) return NULL;
  if (alloc_buffers(in, optim_buffers(cfg->alg, &cfg->hyper)) < 0) {
    instance_unref(in);
    return NULL;
  }
  in->lr_now = schedule_lr(&in->cfg.sched, in->cfg.hyper.lr, 0);
  return in;
}

instance *instance_ref(instance *in) {
  atomic_fetch_add(&in->refs, 1);
  return in;
}

void instance_unref(instance *in) {
  if (!in || atomic_fetch_sub(&in->refs, 1) != 1) return;
  size_t n = in->cfg.n;
  mem_free_floats(in->params, n);
  mem_free_floats(in->scratch, n);
  for (int b = 0; b < OPTIM_NBUF; b++) mem_free_floats(in->buf[b], n);
  if (in->rs) {
    rsearch_cleanup(in->rs);
    free(in->rs);
  }
  for (size_t i = 0; i < IDEM_LEN && in->idem; i++) psnap_unref(in->idem[i].snap);
  free(in->idem);
  free(in->hist);
  for (size_t i = 0; i < in->nworkers; i++) free(in->workers[i]);
  free(in->workers);
  free(in->round.part);
  instance_cfg_free(&in->cfg);
  pthread_mutex_destroy(&in->lock);
  pthread_mutex_destroy(&in->cfg_lock);
  free(in);
}

/* ---- waiters ---------------------------------------------------------------- */

/* Wake list: waiters completed under the lock, woken after it. */
typedef struct wake_list {
  waiter *head;
} wake_list;

static void wl_add(wake_list *wl, waiter *w) {
  w->next = wl->head;
  w->prev = NULL;
  wl->head = w;
}

static void wl_run(wake_list *wl) {
  for (waiter *w = wl->head; w;) {
    waiter *next = w->next;
    w->next = w->prev = NULL;
    w->wake(w);
    w = next;
  }
  wl->head = NULL;
}

static void poller_link(instance *in, waiter *w) {
  w->prev = NULL;
  w->next = in->pollers;
  if (in->pollers) in->pollers->prev = w;
  in->pollers = w;
  w->linked = 1;
}

static void poller_unlink(instance *in, waiter *w) {
  if (w->prev) w->prev->next = w->next;
  else in->pollers = w->next;
  if (w->next) w->next->prev = w->prev;
  w->prev = w->next = NULL;
  w->linked = 0;
}

static void complete(waiter *w, int code, const derr *e, uint64_t step) {
  w->code = code;
  if (e) w->err = *e;
  else if (code) derr_set(&w->err, code, NULL);
  w->step = step;
}

static void wake_pollers(instance *in, wake_list *wl) {
  for (waiter *w = in->pollers; w;) {
    waiter *next = w->next;
    if (in->step >= w->wait_step) {
      poller_unlink(in, w);
      complete(w, 0, NULL, in->step);
      wl_add(wl, w);
    }
    w = next;
  }
}

/* ---- workers, history, idempotency ----------------------------------------- */

static worker_info *worker_get(instance *in, const char *name, bool create) {
  for (size_t i = 0; i < in->nworkers; i++)
    if (strcmp(in->workers[i]->name, name) == 0) return in->workers[i];
  if (!create) return NULL;
  if (in->nworkers == in->workers_cap) {
    in->workers_cap = in->workers_cap ? in->workers_cap * 2 : 16;
    in->workers = mem_xrealloc(in->workers, in->workers_cap * sizeof *in->workers);
  }
  worker_info *w = mem_xcalloc(1, sizeof *w);
  snprintf(w->name, sizeof w->name, "%s", name);
  w->last_push_step = -1;
  in->workers[in->nworkers++] = w;
  return w;
}

void instance_touch_worker(instance *in, const char *name) {
  if (!name || !*name) return;
  pthread_mutex_lock(&in->lock);
  worker_info *w = worker_get(in, name, false);
  if (w) w->last_seen_ms = timers_now_ms();
  pthread_mutex_unlock(&in->lock);
}

static void history_add(instance *in, double loss, double norm, double lr) {
  history_entry *h = &in->hist[in->hist_next];
  h->step = in->step;
  h->time = wall_now();
  h->loss = loss;
  h->grad_norm = norm;
  h->lr = lr;
  in->hist_next = (in->hist_next + 1) % HISTORY_LEN;
  if (in->hist_count < HISTORY_LEN) in->hist_count++;
  in->stats.last_grad_norm = norm;
  if (!isnan(loss)) in->stats.last_loss = loss;
}

static int idem_find(instance *in, const char *key) {
  for (size_t i = 0; i < IDEM_LEN; i++)
    if (in->idem[i].key[0] && strcmp(in->idem[i].key, key) == 0) return (int)i;
  return -1;
}

static size_t idem_snap_bytes(instance *in) {
  size_t b = 0;
  for (size_t i = 0; i < IDEM_LEN; i++)
    if (in->idem[i].snap) b += in->idem[i].snap->n * sizeof(float);
  return b;
}

/* Claims the next slot for key (evicting the oldest). */
static int idem_claim(instance *in, const char *key) {
  size_t i = in->idem_next;
  in->idem_next = (in->idem_next + 1) % IDEM_LEN;
  idem_entry *e = &in->idem[i];
  psnap_unref(e->snap);
  memset(e, 0, sizeof *e);
  snprintf(e->key, sizeof e->key, "%s", key);
  return (int)i;
}

/* Records the outcome of a keyed push; keeps its parameters if the budget allows. */
static void idem_done(instance *in, int slot, int code, const derr *err, uint64_t step, psnap *snap,
                      const float *params_now) {
  if (slot < 0) return;
  idem_entry *e = &in->idem[slot];
  e->code = code;
  if (err) e->err = *err;
  e->step = step;
  e->pending = NULL;
  if (code) return;
  size_t bytes = in->cfg.n * sizeof(float);
  if (bytes > in->idem_snap_budget) return;
  /* make room: drop kept parameters from the oldest entries first */
  size_t held = idem_snap_bytes(in);
  for (size_t k = 0; held + bytes > in->idem_snap_budget && k < IDEM_LEN; k++) {
    idem_entry *o = &in->idem[(in->idem_next + k) % IDEM_LEN];
    if (o->snap && o != e) {
      held -= o->snap->n * sizeof(float);
      psnap_unref(o->snap);
      o->snap = NULL;
    }
  }
  e->snap = snap ? psnap_ref(snap) : psnap_new(in->pool, params_now, in->cfg.n, step);
}

static void idem_forget(instance *in, int slot) {
  if (slot < 0) return;
  psnap_unref(in->idem[slot].snap);
  memset(&in->idem[slot], 0, sizeof in->idem[slot]);
}

/* ---- applying a step -------------------------------------------------------- */

static void reject(instance *in, waiter *w, int rc, const derr *e) {
  int code = rc < 0 ? -rc : rc;
  complete(w, code, e, in->step);
  if (code > 0 && code < E__COUNT) in->stats.rejected[code]++;
}

/* One optimizer step on gradient g (n floats), with global norm `norm` of
 * the gradient (for clipping and history).  Under the lock. */
static void apply_step(instance *in, float *g, double norm, double loss, bool emit) {
  uint64_t t0 = mono_ns();
  const instance_cfg *c = &in->cfg;
  float coef = optim_clip_coef(c->clip_grad_norm, norm);
  double lr = schedule_lr(&c->sched, c->hyper.lr, in->step);
  optim_plan pl;
  optim_plan_init(&pl, c->alg, &c->hyper, lr, in->step + 1, in->fresh, coef);
  kpool_apply(in->kp, &pl, in->params, g, in->buf, c->n, emit);
  in->fresh &= ~optim_buffers(c->alg, &c->hyper);
  in->step++;
  in->version++;
  in->lr_now = schedule_lr(&c->sched, c->hyper.lr, in->step);
  history_add(in, loss, norm, lr);
  uint64_t dt = mono_ns() - t0;
  in->stats.steps++;
  in->stats.apply_ns_total += dt;
  /* latency buckets: 2^k microseconds, k = 0..15 */
  uint64_t us = dt / 1000;
  int k = 0;
  while (k < 15 && us > (1ull << k)) k++;
  in->stats.latency_buckets[k]++;
}

/* Scans a gradient: finite, and its norm.  No lock needed (reads g only). */
static int scan_grad(const float *g, size_t n, double *norm, derr *e, const instance_cfg *c) {
  size_t where;
  double sumsq = 0;
  if (!optim_scan(g, n, &sumsq, &where)) {
    for (size_t t = 0; t < c->ntensors; t++)
      if (where < c->tensors[t].offset + c->tensors[t].count)
        return derr_set(e, E_NOT_FINITE, "grads.%s[%zu]: NaN or infinite", c->tensors[t].name,
                        where - c->tensors[t].offset);
    return derr_set(e, E_NOT_FINITE, "grads[%zu]: NaN or infinite", where);
  }
  *norm = sqrt(sumsq);
  return 0;
}

/* ---- sync rounds ------------------------------------------------------------ */

static size_t live_members(instance *in) {
  size_t live = 0;
  for (size_t i = 0; i < in->nworkers; i++)
    if (!in->workers[i]->dropped && in->workers[i]->pushes > 0) live++;
  return live;
}

static size_t expected(instance *in) {
  size_t n = in->cfg.workers, live = live_members(in);
  bool any_dropped = false;
  for (size_t i = 0; i < in->nworkers; i++) any_dropped |= in->workers[i]->dropped;
  if (any_dropped && live < n) return live ? live : 1;
  return n;
}

static int cmp_part(const void *a, const void *b) {
  const struct participant *x = a, *y = b;
  return strcmp(x->w->name, y->w->name);
}

static void round_reset(instance *in) {
  in->round.count = 0;
  if (in->round.deadline_armed && timers_cancel(in->tm, &in->round.deadline)) {
    in->round.deadline_armed = false;
    atomic_fetch_sub(&in->refs, 1); /* the timer's reference; never the last (caller holds one) */
  }
  if (in->lease_armed && timers_cancel(in->tm, &in->lease_timer)) {
    in->lease_armed = false;
    atomic_fetch_sub(&in->refs, 1);
  }
}

/* Fails every participant with code (nothing applied). */
static void round_fail(instance *in, int code, const char *msg, wake_list *wl, waiter *self) {
  derr e = {0};
  derr_set(&e, code, "%s", msg);
  uint64_t now = timers_now_ms();
  for (size_t i = 0; i < in->round.count; i++) {
    struct participant *p = &in->round.part[i];
    p->w->last_seen_ms = now; /* it was waiting, so alive: its lease runs from this reply */
    idem_forget(in, p->idem);
    for (waiter *w = p->waiters; w;) {
      waiter *next = w->next;
      w->linked = 0;
      reject(in, w, code, &e);
      if (w != self) wl_add(wl, w);
      w = next;
    }
  }
  round_reset(in);
}

/* Combines the round's gradients (worker-name order), applies one step, and
 * completes every participant with the new parameters. */
static void round_close(instance *in, wake_list *wl, waiter *self) {
  struct round *r = &in->round;
  size_t n = in->cfg.n, k = r->count;
  qsort(r->part, k, sizeof *r->part, cmp_part);
  float *s = in->scratch;
  memcpy(s, r->part[0].grad, n * sizeof(float));
  for (size_t j = 1; j < k; j++) {
    const float *g = r->part[j].grad;
    for (size_t i = 0; i < n; i++) s[i] += g[i];
  }
  if (in->cfg.aggregate == AGG_MEAN && k > 1) {
    float fk = (float)k;
    for (size_t i = 0; i < n; i++) s[i] /= fk;
  }
  double loss = 0;
  int nloss = 0;
  for (size_t j = 0; j < k; j++)
    if (!isnan(r->part[j].loss)) {
      loss += r->part[j].loss;
      nloss++;
    }
  loss = nloss ? loss / nloss : NAN;
  double norm;
  derr e = {0};
  if (scan_grad(s, n, &norm, &e, &in->cfg) < 0) {
    round_fail(in, E_NOT_FINITE, "the combined gradient overflowed to infinity", wl, self);
    return;
  }
  uint64_t t0 = mono_ns();
  apply_step(in, s, norm, loss, false);
  double apply_ms = (double)(mono_ns() - t0) / 1e6;
  psnap *snap = psnap_new(in->pool, in->params, n, in->step);
  uint64_t now = timers_now_ms();
  for (size_t j = 0; j < k; j++) {
    struct participant *p = &r->part[j];
    /* a member waiting in the round was alive all along; its lease runs from
     * this reply, not from its push (else a long round would expire it) */
    p->w->last_seen_ms = now;
    idem_done(in, p->idem, 0, NULL, in->step, snap, in->params);
    for (waiter *w = p->waiters; w;) {
      waiter *next = w->next;
      w->linked = 0;
      complete(w, 0, NULL, in->step);
      w->snap = psnap_ref(snap);
      w->apply_ms = apply_ms;
      if (w != self) wl_add(wl, w);
      w = next;
    }
  }
  psnap_unref(snap);
  round_reset(in);
  wake_pollers(in, wl);
}

static void arm_lease_timer(instance *in) {
  if (in->lease_armed || in->deleted) return;
  uint64_t lease = in->cfg.worker_lease_ms, next = UINT64_MAX;
  if (!lease) return;
  for (size_t i = 0; i < in->nworkers; i++) {
    worker_info *w = in->workers[i];
    if (w->dropped || !w->pushes) continue;
    bool in_round = false;
    for (size_t j = 0; j < in->round.count; j++) in_round |= in->round.part[j].w == w;
    if (!in_round && w->last_seen_ms + lease < next) next = w->last_seen_ms + lease;
  }
  if (next == UINT64_MAX) return;
  instance_ref(in);
  if (timers_arm(in->tm, &in->lease_timer, next + 1)) in->lease_armed = true;
  else atomic_fetch_sub(&in->refs, 1);
}

/* Drops members whose lease ran out and closes the round if it now can. */
static void lease_cb(dtimer *t) {
  instance *in = t->arg;
  wake_list wl = {0};
  pthread_mutex_lock(&in->lock);
  in->lease_armed = false;
  uint64_t now = timers_now_ms();
  if (!in->deleted && in->round.count) {
    for (size_t i = 0; i < in->nworkers; i++) {
      worker_info *w = in->workers[i];
      bool in_round = false;
      for (size_t j = 0; j < in->round.count; j++) in_round |= in->round.part[j].w == w;
      if (!in_round && !w->dropped && w->pushes && w->last_seen_ms + in->cfg.worker_lease_ms <= now)
        w->dropped = true;
    }
    if (in->round.count >= expected(in)) round_close(in, &wl, NULL);
    else arm_lease_timer(in);
  }
  pthread_mutex_unlock(&in->lock);
  wl_run(&wl);
  instance_unref(in);
}

static void round_deadline_cb(dtimer *t) {
  instance *in = t->arg;
  wake_list wl = {0};
  pthread_mutex_lock(&in->lock);
  in->round.deadline_armed = false;
  if (!in->deleted && in->round.count) {
    size_t m = in->cfg.min_workers;
    if (m && in->round.count >= m) round_close(in, &wl, NULL);
    else {
      char msg[160];
      snprintf(msg, sizeof msg, "the round for step %llu closed with %zu of %zu workers",
               (unsigned long long)in->step, in->round.count, expected(in));
      round_fail(in, E_TIMEOUT, msg, &wl, NULL);
    }
  }
  pthread_mutex_unlock(&in->lock);
  wl_run(&wl);
  instance_unref(in);
}

/* ---- push ------------------------------------------------------------------- */

static int push_async(instance *in, push *p, waiter *w, worker_info *wk, int slot, double norm,
                      wake_list *wl) {
  uint64_t t0 = mono_ns();
  apply_step(in, p->grad, norm, p->loss, p->emit);
  w->apply_ms = (double)(mono_ns() - t0) / 1e6;
  complete(w, 0, NULL, in->step);
  if (wk) {
    wk->last_push_time = wall_now();
    wk->last_push_step = p->step >= 0 ? p->step : (int64_t)in->step - 1;
    wk->staleness = (uint64_t)((int64_t)in->step - 1 - wk->last_push_step);
    wk->pushes++;
  }
  idem_done(in, slot, 0, NULL, in->step, NULL, in->params);
  wake_pollers(in, wl);
  return PUSH_DONE;
}

int instance_push(instance *in, push *p, waiter *w, void (*suspend)(void *), void *suspend_arg) {
  derr e = {0};
  double norm = NAN;
  int rc;
  w->code = 0;
  w->snap = NULL;
  w->linked = 0;
  w->replayed = false;
  if (in->cfg.alg == OPTIM_RANDOM_SEARCH) {
    derr_set(&w->err, E_WRONG_ALGORITHM, "random_search instances take ask and tell, not gradients");
    w->code = E_WRONG_ALGORITHM;
    return PUSH_FAILED;
  }
  if (in->cfg.mode == MODE_SYNC && !(p->worker && *p->worker)) {
    w->code = E_MISSING_WORKER;
    derr_set(&w->err, E_MISSING_WORKER, "sync mode needs \"worker\" (or ?worker=) on every push");
    return PUSH_FAILED;
  }
  /* Read-only checks on the gradient need no lock: one pass for finiteness
   * and the norm (a sync round recomputes the norm of the combined one). */
  if ((rc = scan_grad(p->grad, in->cfg.n, &norm, &e, &in->cfg)) < 0) {
    pthread_mutex_lock(&in->lock);
    in->stats.pushes++;
    reject(in, w, rc, &e);
    pthread_mutex_unlock(&in->lock);
    return PUSH_FAILED;
  }
  if (!isnan(p->grad_norm)) norm = p->grad_norm;

  wake_list wl = {0};
  int status = PUSH_FAILED;
  pthread_mutex_lock(&in->lock);
  in->stats.pushes++;
  worker_info *wk = p->worker && *p->worker ? worker_get(in, p->worker, true) : NULL;
  if (wk) wk->last_seen_ms = timers_now_ms();
  if (in->deleted) {
    reject(in, w, E_NO_INSTANCE, NULL);
    goto out;
  }
  /* a retry: the first outcome, never a second application */
  int slot = -1;
  if (p->key) {
    int k = idem_find(in, p->key);
    if (k >= 0) {
      idem_entry *ie = &in->idem[k];
      if (ie->pending) { /* the first push is still in its round: wait with it */
        for (size_t j = 0; j < in->round.count; j++)
          if (in->round.part[j].idem == k) {
            w->next = in->round.part[j].waiters;
            in->round.part[j].waiters = w;
            w->linked = 1;
            suspend(suspend_arg);
            status = PUSH_WAITING;
            goto out;
          }
      }
      complete(w, ie->code, ie->code ? &ie->err : NULL, ie->step);
      w->snap = psnap_ref(ie->snap);
      w->replayed = true;
      status = ie->code ? PUSH_FAILED : PUSH_DONE;
      goto out;
    }
  }
  if (p->step > (int64_t)in->step) {
    derr_set(&e, E_STEP_AHEAD, "step %lld is ahead of the instance, which is at step %llu",
             (long long)p->step, (unsigned long long)in->step);
    reject(in, w, E_STEP_AHEAD, &e);
    if (wk) wk->rejected++;
    goto out;
  }
  if (in->cfg.mode == MODE_ASYNC) {
    if (in->cfg.max_staleness >= 0 && p->step >= 0 &&
        (int64_t)in->step - p->step > in->cfg.max_staleness) {
      derr_set(&e, E_STALE,
               "gradient computed at step %lld is %lld steps old (max_staleness %lld); the "
               "instance is at step %llu",
               (long long)p->step, (long long)((int64_t)in->step - p->step),
               (long long)in->cfg.max_staleness, (unsigned long long)in->step);
      reject(in, w, E_STALE, &e);
      if (wk) wk->rejected++;
      goto out;
    }
    if (p->key) slot = idem_claim(in, p->key);
    status = push_async(in, p, w, wk, slot, norm, &wl);
    goto out;
  }
  /* sync */
  if (in->stopping) {
    reject(in, w, E_SHUTTING_DOWN, NULL);
    goto out;
  }
  if (p->step >= 0 && p->step < (int64_t)in->step) {
    derr_set(&e, E_STALE,
             "the round for step %lld has closed; the instance is at step %llu: pull and resync",
             (long long)p->step, (unsigned long long)in->step);
    reject(in, w, E_STALE, &e);
    wk->rejected++;
    goto out;
  }
  for (size_t j = 0; j < in->round.count; j++)
    if (in->round.part[j].w == wk) {
      derr_set(&e, E_ALREADY_PUSHED, "worker %s already pushed for step %llu", wk->name,
               (unsigned long long)in->step);
      reject(in, w, E_ALREADY_PUSHED, &e);
      wk->rejected++;
      goto out;
    }
  wk->dropped = false;
  wk->last_push_time = wall_now();
  wk->last_push_step = (int64_t)in->step;
  wk->staleness = 0;
  wk->pushes++;
  if (in->round.count == in->round.part_cap) {
    in->round.part_cap = in->round.part_cap ? in->round.part_cap * 2 : 8;
    in->round.part = mem_xrealloc(in->round.part, in->round.part_cap * sizeof *in->round.part);
  }
  if (p->key) slot = idem_claim(in, p->key);
  struct participant *pt = &in->round.part[in->round.count++];
  pt->w = wk;
  pt->grad = p->grad;
  pt->loss = p->loss;
  pt->idem = slot;
  w->next = NULL;
  pt->waiters = w;
  w->linked = 1;
  if (slot >= 0) in->idem[slot].pending = w;
  if (in->round.count >= expected(in)) {
    round_close(in, &wl, w);
    status = w->code ? PUSH_FAILED : PUSH_DONE;
    goto out;
  }
  if (in->round.count == 1 && in->cfg.round_timeout_ms && !in->round.deadline_armed) {
    instance_ref(in);
    if (timers_arm(in->tm, &in->round.deadline, timers_now_ms() + in->cfg.round_timeout_ms))
      in->round.deadline_armed = true;
    else
      atomic_fetch_sub(&in->refs, 1);
  }
  arm_lease_timer(in);
  suspend(suspend_arg);
  status = PUSH_WAITING;
out:
  pthread_mutex_unlock(&in->lock);
  wl_run(&wl);
  return status;
}

/* ---- long-poll ------------------------------------------------------------- */

int instance_wait_step(instance *in, waiter *w, uint64_t want, void (*suspend)(void *), void *arg) {
  pthread_mutex_lock(&in->lock);
  w->code = 0;
  w->snap = NULL;
  if (in->step >= want || in->deleted || in->stopping) {
    w->step = in->step;
    if (in->deleted) complete(w, E_NO_INSTANCE, NULL, in->step);
    else if (in->stopping && in->step < want) complete(w, E_SHUTTING_DOWN, NULL, in->step);
    pthread_mutex_unlock(&in->lock);
    return 1;
  }
  w->wait_step = want;
  poller_link(in, w);
  suspend(arg);
  pthread_mutex_unlock(&in->lock);
  return 0;
}

int instance_unwait(instance *in, waiter *w) {
  pthread_mutex_lock(&in->lock);
  int was = w->linked;
  if (was) {
    /* only pollers time out this way; round participants are failed by the round */
    poller_unlink(in, w);
    complete(w, 0, NULL, in->step);
  }
  pthread_mutex_unlock(&in->lock);
  return was;
}

static void close_waiters(instance *in, int code, const char *msg, bool deleted) {
  wake_list wl = {0};
  pthread_mutex_lock(&in->lock);
  if (deleted) in->deleted = true;
  else in->stopping = true;
  derr e = {0};
  derr_set(&e, code, "%s", msg ? msg : derr_default(code));
  while (in->pollers) {
    waiter *w = in->pollers;
    poller_unlink(in, w);
    complete(w, code, &e, in->step);
    wl_add(&wl, w);
  }
  if (in->round.count) round_fail(in, code, e.msg, &wl, NULL);
  round_reset(in);
  pthread_mutex_unlock(&in->lock);
  wl_run(&wl);
}

void instance_close(instance *in, int code, const char *msg) { close_waiters(in, code, msg, true); }

void instance_shutdown(instance *in) {
  close_waiters(in, E_SHUTTING_DOWN, "the daemon is shutting down; retry after it restarts", false);
}

/* ---- reads ------------------------------------------------------------------ */

uint64_t instance_read(instance *in, float *out) {
  pthread_mutex_lock(&in->lock);
  memcpy(out, in->params, in->cfg.n * sizeof(float));
  uint64_t s = in->step;
  pthread_mutex_unlock(&in->lock);
  return s;
}

void instance_cfg_get(instance *in, instance_cfg *out) {
  pthread_mutex_lock(&in->lock);
  instance_cfg_copy(out, &in->cfg);
  pthread_mutex_unlock(&in->lock);
}

void instance_info_get(instance *in, instance_info *out) {
  pthread_mutex_lock(&in->lock);
  out->step = in->step;
  out->lr = in->lr_now;
  out->created = in->created;
  out->workers_seen = in->nworkers;
  out->waiting = in->round.count;
  for (waiter *w = in->pollers; w; w = w->next) out->waiting++;
  out->best_loss = in->rs ? in->rs->best_loss : NAN;
  pthread_mutex_unlock(&in->lock);
}

double instance_lr(instance *in) {
  pthread_mutex_lock(&in->lock);
  double lr = in->lr_now;
  pthread_mutex_unlock(&in->lock);
  return lr;
}

void instance_note_codec(instance *in, double decode_ms, double encode_ms) {
  pthread_mutex_lock(&in->lock);
  in->stats.decode_ns_total += (uint64_t)(decode_ms * 1e6);
  in->stats.encode_ns_total += (uint64_t)(encode_ms * 1e6);
  pthread_mutex_unlock(&in->lock);
}

void instance_stats_copy(instance *in, struct instance_stats *out, uint64_t *step) {
  pthread_mutex_lock(&in->lock);
  *out = in->stats;
  *step = in->step;
  pthread_mutex_unlock(&in->lock);
}

size_t instance_workers_copy(instance *in, worker_info **out, uint64_t *step) {
  pthread_mutex_lock(&in->lock);
  size_t n = in->nworkers;
  *out = mem_xmalloc((n ? n : 1) * sizeof **out);
  for (size_t i = 0; i < n; i++) (*out)[i] = *in->workers[i];
  *step = in->step;
  pthread_mutex_unlock(&in->lock);
  return n;
}

size_t instance_history_copy(instance *in, history_entry **out) {
  pthread_mutex_lock(&in->lock);
  size_t n = in->hist_count;
  *out = mem_xmalloc((n ? n : 1) * sizeof **out);
  size_t first = (in->hist_next + HISTORY_LEN - n) % HISTORY_LEN;
  for (size_t i = 0; i < n; i++) (*out)[i] = in->hist[(first + i) % HISTORY_LEN];
  pthread_mutex_unlock(&in->lock);
  return n;
}

/* ---- whole state ------------------------------------------------------------ */

int instance_export(instance *in, instance_state *out) {
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&in->lock);
  size_t n = in->cfg.n;
  instance_cfg_copy(&out->cfg, &in->cfg);
  out->params = mem_alloc_floats(n);
  if (!out->params) goto oom;
  memcpy(out->params, in->params, n * sizeof(float));
  for (int b = 0; b < OPTIM_NBUF; b++) {
    if (!(in->have & (1u << b))) continue;
    if (!(out->buf[b] = mem_alloc_floats(n))) goto oom;
    memcpy(out->buf[b], in->buf[b], n * sizeof(float));
  }
  out->have = in->have;
  out->fresh = in->fresh;
  out->step = in->step;
  out->version = in->version;
  out->created = in->created;
  out->incarnation = in->incarnation;
  if (in->rs) {
    out->best_loss = in->rs->best_loss;
    out->next_id = in->rs->next_id;
    out->tells = in->rs->tells;
    out->best_id = in->rs->best_id;
  }
  pthread_mutex_unlock(&in->lock);
  return 0;
oom:
  pthread_mutex_unlock(&in->lock);
  instance_state_free(out);
  return -E_QUOTA;
}

void instance_state_free(instance_state *s) {
  if (!s) return;
  size_t n = s->cfg.n;
  mem_free_floats(s->params, n);
  for (int b = 0; b < OPTIM_NBUF; b++) mem_free_floats(s->buf[b], n);
  instance_cfg_free(&s->cfg);
  memset(s, 0, sizeof *s);
}

instance *instance_from_state(const instance_state *s, const instance_env *env) {
  instance *in = alloc_instance(&s->cfg, env);
  if (!in) return NULL;
  size_t n = s->cfg.n;
  if (s->params) memcpy(in->params, s->params, n * sizeof(float));
  unsigned need = optim_buffers(s->cfg.alg, &s->cfg.hyper) | s->have;
  if (alloc_buffers(in, need) < 0) {
    instance_unref(in);
    return NULL;
  }
  in->fresh = 0;
  for (int b = 0; b < OPTIM_NBUF; b++) {
    if (!(need & (1u << b))) continue;
    if (s->buf[b] && (s->have & (1u << b)) && !(s->fresh & (1u << b)))
      memcpy(in->buf[b], s->buf[b], n * sizeof(float));
    else
      in->fresh |= 1u << b; /* torch had no such state yet */
  }
  in->step = s->step;
  in->version = s->version;
  if (s->created > 0) in->created = s->created;
  if (in->rs) {
    in->rs->best_loss = s->best_loss;
    in->rs->next_id = s->next_id ? s->next_id : 1;
    in->rs->tells = s->tells;
    in->rs->best_id = s->best_id;
  }
  in->lr_now = schedule_lr(&in->cfg.sched, in->cfg.hyper.lr, in->step);
  return in;
}

int instance_reconfigure(instance *in, const instance_cfg *c, derr *e) {
  pthread_mutex_lock(&in->lock);
  optim_hyper old = in->cfg.hyper;
  in->cfg.hyper = c->hyper;
  if (alloc_buffers(in, optim_buffers(c->alg, &c->hyper)) < 0) {
    in->cfg.hyper = old;
    pthread_mutex_unlock(&in->lock);
    return derr_set(e, E_QUOTA, "not enough memory for the new optimizer state");
  }
  tensor *keep = in->cfg.tensors;
  size_t nt = in->cfg.ntensors;
  in->cfg = *c;
  in->cfg.tensors = keep; /* tensors never change */
  in->cfg.ntensors = nt;
  in->lr_now = schedule_lr(&in->cfg.sched, in->cfg.hyper.lr, in->step);
  in->version++;
  /* fewer workers (or members) may complete the round that is waiting */
  wake_list wl = {0};
  if (in->cfg.mode == MODE_SYNC && in->round.count && in->round.count >= expected(in)) round_close(in, &wl, NULL);
  pthread_mutex_unlock(&in->lock);
  wl_run(&wl);
  return 0;
}

int instance_ask(instance *in, uint64_t *id, float *out, derr *e) {
  if (!in->rs) return derr_set(e, E_WRONG_ALGORITHM, "ask and tell are for random_search instances");
  pthread_mutex_lock(&in->lock);
  if (in->deleted) {
    pthread_mutex_unlock(&in->lock);
    return derr_set(e, E_NO_INSTANCE, NULL);
  }
  const float *x;
  int rc = rsearch_ask(in->rs, &in->cfg.hyper, in->params, id, &x, e);
  if (rc == 0) memcpy(out, x, in->cfg.n * sizeof(float));
  in->version++;
  pthread_mutex_unlock(&in->lock);
  return rc;
}

int instance_tell(instance *in, uint64_t id, double loss, bool *improved, double *best_loss,
                  uint64_t *step, derr *e) {
  if (!in->rs) return derr_set(e, E_WRONG_ALGORITHM, "ask and tell are for random_search instances");
  pthread_mutex_lock(&in->lock);
  int rc = in->deleted ? derr_set(e, E_NO_INSTANCE, NULL)
                       : rsearch_tell(in->rs, id, loss, in->params, improved, e);
  wake_list wl = {0};
  if (rc == 0) {
    in->step++;
    in->version++;
    history_add(in, loss, NAN, NAN);
    in->stats.steps++;
    in->stats.pushes++;
    wake_pollers(in, &wl);
  }
  *best_loss = in->rs->best_loss;
  *step = in->step;
  pthread_mutex_unlock(&in->lock);
  wl_run(&wl);
  return rc;
}
