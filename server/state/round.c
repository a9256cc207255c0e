/* round: the sync round of an instance and the leases of its members.
 * A round gathers one push per worker for the current step; it closes when
 * the expected workers have pushed (their gradients combined in worker-name
 * order, so the result does not depend on arrival order), at its deadline
 * with at least min_workers, or fails them all (504).  A member that stays
 * silent past its lease is dropped, which lowers `expected`.  The state
 * diagram is in instance.h.  Owns the round's participant table and its two
 * timers (each armed timer holds an instance reference).  Never keeps a
 * participant's gradient past the round: it is the pushing request's (its
 * sparse rows are copied into pooled memory at join, and dropped with the
 * round).
 * Everything here runs under the instance lock, on HTTP threads (pushes) and
 * the loop thread (deadline and lease timers). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "instance_internal.h"
#include "mem.h"

static void round_deadline_cb(dtimer *t);
static void lease_cb(dtimer *t);

void round__init(instance *in) {
  dtimer_init(&in->round.deadline, round_deadline_cb, in);
  dtimer_init(&in->lease_timer, lease_cb, in);
}

static bool in_round(const instance *in, const worker_info *w) {
  for (size_t j = 0; j < in->round.count; j++)
    if (in->round.part[j].w == w) return true;
  return false;
}

static size_t live_members(instance *in) {
  size_t live = 0;
  for (size_t i = 0; i < in->nworkers; i++)
    if (!in->workers[i]->dropped && in->workers[i]->pushes > 0) live++;
  return live;
}

size_t round__expected(instance *in) {
  INSTANCE_ASSERT_LOCKED(in);
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

/* Drops the reference a timer held; never the last (the caller holds one). */
static void drop_timer_ref(instance *in) {
  int before = atomic_fetch_sub(&in->refs, 1);
  assert(before > 1);
  (void)before;
}

/* A timer whose cancel fails is firing now, its callback waiting for the
 * lock: it keeps its reference and finds itself stale (round_deadline_cb),
 * while this round's state says no timer, so the next round arms its own. */
void round__reset(instance *in) {
  INSTANCE_ASSERT_LOCKED(in);
  for (size_t j = 0; j < in->round.count; j++) {
    psnap_unref(in->round.part[j].rows);
    in->round.part[j].rows = NULL;
  }
  in->round.count = 0;
  if (in->round.deadline_armed && timers_cancel(in->tm, &in->round.deadline)) drop_timer_ref(in);
  in->round.deadline_armed = false;
  if (in->lease_armed && timers_cancel(in->tm, &in->lease_timer)) drop_timer_ref(in);
  in->lease_armed = false;
}

/* Completes every waiter of participant p; `self` is the caller's own
 * (it replies directly, so it is not woken). */
static void complete_part(struct participant *p, int code, const derr *e, uint64_t step, psnap *snap,
                          double apply_ms, instance *in, wake_list *wl, waiter *self) {
  for (waiter *w = p->waiters; w;) {
    waiter *next = w->next;
    w->linked = 0;
    if (code) {
      apply__reject(in, w, code, e);
    } else {
      waiters__complete(w, 0, NULL, step);
      w->snap = psnap_ref(snap);
      w->rows = psnap_ref(p->rows);
      w->apply_ms = apply_ms;
    }
    if (w != self) waiters__add(wl, w);
    w = next;
  }
}

void round__fail(instance *in, int code, const char *msg, wake_list *wl, waiter *self) {
  INSTANCE_ASSERT_LOCKED(in);
  derr e = {0};
  derr_set(&e, code, "%s", msg);
  uint64_t now = timers_now_ms();
  for (size_t i = 0; i < in->round.count; i++) {
    struct participant *p = &in->round.part[i];
    p->w->last_seen_ms = now; /* it was waiting, so alive: its lease runs from this reply */
    idem__forget(in, p->idem);
    complete_part(p, code, &e, in->step, NULL, 0, in, wl, self);
  }
  round__reset(in);
}

void instance_round_abort(instance *in, int code, const char *msg) {
  wake_list wl = {0};
  instance__lock(in);
  if (in->round.count) round__fail(in, code, msg, &wl, NULL);
  instance__unlock(in);
  waiters__run(&wl);
}

/* The round's gradients summed in worker-name order (mean: then divided)
 * into the scratch; returns the mean of the losses given (NAN if none). */
static double combine(instance *in) {
  struct round *r = &in->round;
  size_t n = in->cfg.n, k = r->count;
  qsort(r->part, k, sizeof *r->part, cmp_part);
  float *s = in->scratch;
  if (n) memcpy(s, r->part[0].grad, n * sizeof(float)); /* a sparse-only instance has no dense floats */
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
  return nloss ? loss / nloss : NAN;
}

/* The round's sparse rows, concatenated in worker-name order and prepared
 * as one coalesced gradient per tensor (mean: divided by the pushes), into
 * pr; adds their squared norm to *sumsq.  0, or the round fails (E_QUOTA,
 * E_NOT_FINITE) with nothing changed. */
static int combine_rows(instance *in, push_rows *pr, double *sumsq, derr *e) {
  size_t k = in->round.count;
  float divide = in->cfg.aggregate == AGG_MEAN && k > 1 ? (float)k : 1;
  int rc = sparse__concat(in, pr, e);
  if (rc == 0) rc = sparse__prepare(in, pr, divide, sumsq, e);
  return rc;
}

void round__close(instance *in, wake_list *wl, waiter *self) {
  INSTANCE_ASSERT_LOCKED(in);
  assert(in->round.count > 0 && in->scratch);
  double loss = combine(in), sumsq;
  derr e = {0};
  if (apply__scan_sumsq(in, in->scratch, &sumsq, &e) < 0) {
    round__fail(in, E_NOT_FINITE, "the combined gradient overflowed to infinity", wl, self);
    return;
  }
  if (in->changes) { /* log mode: one entry; the participants wait for it to be durable */
    journal__round(in, loss, wl, self);
    return;
  }
  push_rows pr[in->nsparse ? in->nsparse : 1];
  if (in->nsparse && combine_rows(in, pr, &sumsq, &e) < 0) {
    round__fail(in, e.code, e.msg, wl, self);
    return;
  }
  uint64_t t0 = instance__mono_ns();
  apply__step_rows(in, in->scratch, in->nsparse ? pr : NULL, false, sqrt(sumsq), loss, false);
  for (size_t j = 0; j < in->round.count; j++)
    if (in->round.part[j].rows) sparse__fill_copy(in, in->round.part[j].rows);
  double apply_ms = (double)(instance__mono_ns() - t0) / 1e6;
  psnap *snap = psnap__new(in->pool, in->params, in->cfg.n, in->step);
  uint64_t now = timers_now_ms();
  for (size_t j = 0; j < in->round.count; j++) {
    struct participant *p = &in->round.part[j];
    /* a member waiting in the round was alive all along; its lease runs from
     * this reply, not from its push (else a long round would expire it) */
    p->w->last_seen_ms = now;
    idem__done(in, p->idem, 0, NULL, in->step, snap);
    complete_part(p, 0, NULL, in->step, snap, apply_ms, in, wl, self);
  }
  psnap_unref(snap);
  round__reset(in);
  waiters__wake_pollers(in, wl);
}

/* Arms t for `at` with a reference the callback drops, noting it in *armed
 * and *armed_at (a callback firing before armed_at is a stale one). */
static void arm(instance *in, dtimer *t, uint64_t at, bool *armed, uint64_t *armed_at) {
  instance_ref(in);
  if (timers_arm(in->tm, t, at)) {
    *armed = true;
    *armed_at = at;
  } else {
    drop_timer_ref(in);
  }
}

static void arm_lease_timer(instance *in) {
  INSTANCE_ASSERT_LOCKED(in);
  if (in->lease_armed || in->deleted) return;
  uint64_t lease = in->cfg.worker_lease_ms, next = UINT64_MAX;
  if (!lease) return;
  for (size_t i = 0; i < in->nworkers; i++) {
    worker_info *w = in->workers[i];
    if (w->dropped || !w->pushes || in_round(in, w)) continue;
    if (w->last_seen_ms + lease < next) next = w->last_seen_ms + lease;
  }
  if (next != UINT64_MAX) arm(in, &in->lease_timer, next + 1, &in->lease_armed, &in->lease_at);
}

static void arm_deadline(instance *in) {
  if (in->round.count != 1 || !in->cfg.round_timeout_ms || in->round.deadline_armed) return;
  arm(in, &in->round.deadline, timers_now_ms() + in->cfg.round_timeout_ms, &in->round.deadline_armed,
      &in->round.deadline_at);
}

/* Loop thread: drops members whose lease ran out; closes the round if it now can. */
static void lease_cb(dtimer *t) {
  instance *in = t->arg;
  wake_list wl = {0};
  instance__lock(in);
  uint64_t now = timers_now_ms();
  bool stale = !in->lease_armed || now < in->lease_at; /* already firing when its round closed */
  if (!stale) in->lease_armed = false;
  if (!stale && !in->deleted && in->round.count) {
    for (size_t i = 0; i < in->nworkers; i++) {
      worker_info *w = in->workers[i];
      if (!in_round(in, w) && !w->dropped && w->pushes && w->last_seen_ms + in->cfg.worker_lease_ms <= now)
        w->dropped = true;
    }
    if (in->round.count >= round__expected(in)) round__close(in, &wl, NULL);
    else arm_lease_timer(in);
  }
  instance__unlock(in);
  waiters__run(&wl);
  instance_unref(in);
}

/* Loop thread: the round's deadline.  A callback that was already firing
 * when its round closed (its cancel failed) finds no deadline armed, or the
 * next round's, not yet due: it does nothing. */
static void round_deadline_cb(dtimer *t) {
  instance *in = t->arg;
  wake_list wl = {0};
  instance__lock(in);
  bool stale = !in->round.deadline_armed || timers_now_ms() < in->round.deadline_at;
  if (!stale) in->round.deadline_armed = false;
  if (!stale && !in->deleted && in->round.count) {
    size_t m = in->cfg.min_workers;
    if (m && in->round.count >= m) {
      round__close(in, &wl, NULL);
    } else {
      char msg[160];
      snprintf(msg, sizeof msg, "the round for step %llu closed with %zu of %zu workers",
               (unsigned long long)in->step, in->round.count, round__expected(in));
      round__fail(in, E_TIMEOUT, msg, &wl, NULL);
    }
  }
  instance__unlock(in);
  waiters__run(&wl);
  instance_unref(in);
}

bool round__attach_retry(instance *in, int k, waiter *w) {
  INSTANCE_ASSERT_LOCKED(in);
  for (size_t j = 0; j < in->round.count; j++)
    if (in->round.part[j].idem == k) {
      w->next = in->round.part[j].waiters;
      in->round.part[j].waiters = w;
      w->linked = 1;
      return true;
    }
  return false;
}

/* A sync push that cannot join: stale, or its worker already pushed. */
static int refuse_member(instance *in, push *p, waiter *w, worker_info *wk) {
  derr e = {0};
  uint64_t at = journal__logical_step(in);
  if (p->step >= 0 && p->step < (int64_t)at)
    derr_set(&e, E_STALE, "the round for step %lld has closed; the instance is at step %llu: pull and resync",
             (long long)p->step, (unsigned long long)at);
  else if (in_round(in, wk))
    derr_set(&e, E_ALREADY_PUSHED, "worker %s already pushed for step %llu", wk->name,
             (unsigned long long)in->step);
  else
    return 0;
  apply__reject(in, w, e.code, &e);
  wk->rejected++;
  return -e.code;
}

int round__join(instance *in, push *p, waiter *w, worker_info *wk, void (*suspend)(void *), void *arg,
                wake_list *wl) {
  INSTANCE_ASSERT_LOCKED(in);
  if (in->stopping) {
    apply__reject(in, w, E_SHUTTING_DOWN, NULL);
    return PUSH_FAILED;
  }
  if (refuse_member(in, p, w, wk) < 0) return PUSH_FAILED;
  psnap *copy = in->nsparse ? sparse__copy(in, p->rows) : NULL; /* the rows need not outlive the call */
  if (in->nsparse && !copy) {
    apply__reject(in, w, E_QUOTA, NULL);
    return PUSH_FAILED;
  }
  wk->dropped = false;
  wk->last_push_time = instance__wall_now();
  wk->last_push_step = (int64_t)journal__logical_step(in);
  wk->staleness = 0;
  wk->pushes++;
  struct round *r = &in->round;
  if (r->count == r->part_cap) {
    r->part_cap = r->part_cap ? r->part_cap * 2 : 8;
    r->part = mem_xrealloc(r->part, r->part_cap * sizeof *r->part);
  }
  int slot = p->key ? idem__claim(in, p->key) : -1;
  struct participant *pt = &r->part[r->count++];
  *pt = (struct participant){
      .w = wk, .grad = p->grad, .rows = copy, .loss = p->loss, .waiters = w, .idem = slot};
  w->next = NULL;
  w->linked = 1;
  if (slot >= 0) in->idem[slot].pending = w;
  if (r->count >= round__expected(in)) {
    round__close(in, wl, w);
    if (w->linked) { /* log mode: queued with its round */
      suspend(arg);
      return PUSH_WAITING;
    }
    return w->code ? PUSH_FAILED : PUSH_DONE;
  }
  arm_deadline(in);
  arm_lease_timer(in);
  suspend(arg);
  return PUSH_WAITING;
}
