/* push: the way of one decoded push into an instance.  In order:
 *   1. checks that need no lock (algorithm, worker given in sync mode, a
 *      finite gradient and its norm);
 *   2. under the lock: a known idempotency key replays its first outcome
 *      (or waits with the first push while its round is open);
 *   3. a step ahead of the instance is refused;
 *   4. async: staleness, then one optimizer step (apply.c);
 *      sync: the round (round.c).
 * A refused push changes nothing but the counters.  Never applies a keyed
 * push twice, and never blocks: a sync push that must wait is suspended and
 * woken by whoever closes its round.  The gradient stays the caller's.
 * HTTP threads. */
#include <math.h>
#include <string.h>

#include "instance_internal.h"

/* Step 1: the checks that read only the push and the layout; *sumsq gets
 * the dense gradient's squared norm. */
static int check_unlocked(instance *in, push *p, double *sumsq, derr *e) {
  if (in->layout.alg == OPTIM_RANDOM_SEARCH)
    return derr_set(e, E_WRONG_ALGORITHM, "random_search instances take ask and tell, not gradients");
  if (in->layout.mode == MODE_SYNC && !(p->worker && *p->worker))
    return derr_set(e, E_MISSING_WORKER, "sync mode needs \"worker\" (or ?worker=) on every push");
  int rc = apply__scan_sumsq(in, p->grad, sumsq, e);
  if (rc == 0 && in->nsparse) rc = sparse__check(in, p->rows, e);
  return rc;
}

/* Step 2: a retry of a known key.  Returns a push_status, or -1 if the key
 * is new. */
static int replay(instance *in, push *p, waiter *w, void (*suspend)(void *), void *arg) {
  int k = idem__find(in, p->key);
  if (k < 0) return -1;
  idem_entry *ie = &in->idem[k];
  if (ie->queued && journal__attach_retry(in, k, w)) { /* log mode: the first is not durable yet */
    suspend(arg);
    return PUSH_WAITING;
  }
  if (ie->pending && round__attach_retry(in, k, w)) { /* the first is still in its round */
    suspend(arg);
    return PUSH_WAITING;
  }
  waiters__complete(w, ie->r.code, ie->r.code ? &ie->r.err : NULL, ie->r.step);
  w->snap = psnap_ref(ie->snap);
  w->replayed = true;
  return ie->r.code ? PUSH_FAILED : PUSH_DONE;
}

/* Step 3 and the async staleness check: 0, or the refusal (w completed). */
static int refuse_step(instance *in, push *p, waiter *w, worker_info *wk) {
  derr e = {0};
  uint64_t at = journal__logical_step(in); /* log mode: with the changes queued */
  if (p->step > (int64_t)at)
    derr_set(&e, E_STEP_AHEAD, "step %lld is ahead of the instance, which is at step %llu", (long long)p->step,
             (unsigned long long)at);
  else if (in->cfg.mode == MODE_ASYNC && in->cfg.max_staleness >= 0 && p->step >= 0 &&
           (int64_t)at - p->step > in->cfg.max_staleness)
    derr_set(&e, E_STALE,
             "gradient computed at step %lld is %lld steps old (max_staleness %lld); the instance is at step %llu",
             (long long)p->step, (long long)((int64_t)at - p->step), (long long)in->cfg.max_staleness,
             (unsigned long long)at);
  else
    return 0;
  apply__reject(in, w, e.code, &e);
  if (wk) wk->rejected++;
  return -e.code;
}

/* Step 4, async: one optimizer step now.  The sparse rows are coalesced,
 * counted and charged first (all or nothing); the norm is over the dense
 * gradient and the coalesced rows, unless the push gave one. */
static int apply_async(instance *in, push *p, waiter *w, worker_info *wk, double sumsq, wake_list *wl) {
  derr e = {0};
  if (in->nsparse && sparse__prepare(in, p->rows, 1, &sumsq, &e) < 0) {
    apply__reject(in, w, e.code, &e);
    if (wk) wk->rejected++;
    return PUSH_FAILED;
  }
  double norm = isnan(p->grad_norm) ? sqrt(sumsq) : p->grad_norm;
  int slot = p->key ? idem__claim(in, p->key) : -1;
  uint64_t t0 = instance__mono_ns();
  apply__step_rows(in, p->grad, p->rows, true, norm, p->loss, p->emit);
  w->apply_ms = (double)(instance__mono_ns() - t0) / 1e6;
  waiters__complete(w, 0, NULL, in->step);
  if (wk) {
    wk->last_push_time = instance__wall_now();
    wk->last_push_step = p->step >= 0 ? p->step : (int64_t)in->step - 1;
    wk->staleness = (uint64_t)((int64_t)in->step - 1 - wk->last_push_step);
    wk->pushes++;
  }
  idem__done(in, slot, 0, NULL, in->step, NULL);
  waiters__wake_pollers(in, wl);
  return PUSH_DONE;
}

/* Steps 2-4, under the lock. */
static int push_locked(instance *in, push *p, waiter *w, double sumsq, void (*suspend)(void *), void *arg,
                       wake_list *wl) {
  INSTANCE_ASSERT_LOCKED(in);
  worker_info *wk = p->worker && *p->worker ? workers__get(in, p->worker, true) : NULL;
  if (wk) wk->last_seen_ms = timers_now_ms();
  if (in->deleted) {
    apply__reject(in, w, E_NO_INSTANCE, NULL);
    return PUSH_FAILED;
  }
  if (p->key) {
    int status = replay(in, p, w, suspend, arg);
    if (status >= 0) return status;
  }
  if (refuse_step(in, p, w, wk) < 0) return PUSH_FAILED;
  if (in->cfg.mode == MODE_ASYNC && in->changes) return journal__push(in, p, w, sumsq, suspend, arg);
  if (in->cfg.mode == MODE_ASYNC) return apply_async(in, p, w, wk, sumsq, wl);
  return round__join(in, p, w, wk, suspend, arg, wl);
}

int instance_push(instance *in, push *p, waiter *w, void (*suspend)(void *), void *suspend_arg) {
  derr e = {0};
  double sumsq = 0;
  w->code = 0;
  w->snap = NULL;
  w->rows = NULL;
  w->linked = 0;
  w->replayed = false;
  int rc = check_unlocked(in, p, &sumsq, &e);
  if (rc < 0 && e.code != E_NOT_FINITE) { /* not counted: it never reached the instance */
    waiters__complete(w, e.code, &e, 0);
    return PUSH_FAILED;
  }
  wake_list wl = {0};
  instance__lock(in);
  in->stats.pushes++;
  int status;
  if (rc < 0) {
    apply__reject(in, w, rc, &e);
    status = PUSH_FAILED;
  } else {
    status = push_locked(in, p, w, sumsq, suspend, suspend_arg, &wl);
  }
  instance__unlock(in);
  waiters__run(&wl);
  return status;
}
