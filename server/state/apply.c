/* apply: one optimizer step on an instance (the fused kernels through the
 * kpool), the finiteness scan and norm of a gradient, refusals counted for
 * /metrics, and the apply latency histogram.  Under the instance lock
 * (asserted), except apply__scan, which reads only the gradient and the
 * immutable layout.  A step's sparse half goes to sparse.c with the same plan.  Never allocates in a step.  HTTP threads and the loop
 * thread (a round closed by its deadline or a lease). */
#include <math.h>

#include "instance_internal.h"
#include "kpool.h"

void apply__reject(instance *in, waiter *w, int rc, const derr *e) {
  INSTANCE_ASSERT_LOCKED(in);
  int code = rc < 0 ? -rc : rc;
  waiters__complete(w, code, e, in->step);
  if (code > 0 && code < E__COUNT) in->stats.rejected[code]++;
}

/* Bucket k counts steps of at most 2^k microseconds; the last one the rest. */
static int latency_bucket(uint64_t ns) {
  uint64_t us = ns / 1000;
  int k = 0;
  while (k < INSTANCE_LATENCY_BUCKETS - 1 && us > (1ull << k)) k++;
  return k;
}

void apply__step(instance *in, float *g, double norm, double loss, bool emit) {
  apply__step_rows(in, g, NULL, false, norm, loss, emit);
}

void apply__step_rows(instance *in, float *g, push_rows *pr, bool sent, double norm, double loss, bool emit) {
  INSTANCE_ASSERT_LOCKED(in);
  uint64_t t0 = instance__mono_ns();
  const instance_cfg *c = &in->cfg;
  float coef = optim_clip_coef(c->clip_grad_norm, norm);
  double lr = schedule_lr(&c->sched, c->hyper.lr, in->step);
  optim_plan pl;
  optim_plan_init(&pl, c->alg, &c->hyper, lr, in->step + 1, in->fresh, coef);
  if (c->n) kpool_apply(in->kp, &pl, in->params, g, in->buf, c->n, emit);
  if (in->nsparse) sparse__apply(in, &pl, pr, sent, emit);
  in->fresh &= ~optim_buffers(c->alg, &c->hyper);
  in->step++;
  in->version++;
  in->lr_now = schedule_lr(&c->sched, c->hyper.lr, in->step);
  history__add(in, loss, norm, lr);
  uint64_t dt = instance__mono_ns() - t0;
  in->stats.steps++;
  in->stats.apply_ns_total += dt;
  in->stats.latency_buckets[latency_bucket(dt)]++;
}

int apply__scan(const instance *in, const float *g, double *norm, derr *e) {
  double sumsq = 0;
  int rc = apply__scan_sumsq(in, g, &sumsq, e);
  if (rc == 0) *norm = sqrt(sumsq);
  return rc;
}

int apply__scan_sumsq(const instance *in, const float *g, double *sumsq, derr *e) {
  const instance_layout *l = &in->layout;
  size_t where;
  *sumsq = 0;
  if (!l->n) return 0;
  if (!optim_scan(g, l->n, sumsq, &where)) {
    for (size_t t = 0; t < l->ntensors; t++)
      if (!l->tensors[t].sparse && where < l->tensors[t].offset + l->tensors[t].count)
        return derr_set(e, E_NOT_FINITE, "grads.%s[%zu]: NaN or infinite", l->tensors[t].name,
                        where - l->tensors[t].offset);
    return derr_set(e, E_NOT_FINITE, "grads[%zu]: NaN or infinite", where);
  }
  return 0;
}
