/* transfer: whole-state copies of an instance (export for GET .../state and
 * snapshots, import for PUT .../state and loading), and reconfiguration
 * (PATCH).  A copy is taken under the lock in one critical section (one
 * memcpy per array), so it is one moment; no I/O here.  A copy owns its
 * arrays (instance_state_free).  Never changes name, algorithm, mode or
 * tensors: readers use them without the lock.  HTTP threads, the snapshot
 * threads and main (loading). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "instance_internal.h"
#include "mem.h"

uint64_t instance__held_floats(const instance *in) {
  uint64_t k = 1 + (uint64_t)__builtin_popcount(in->have) + (in->scratch ? 1 : 0);
  if (in->rs) k += rsearch_slots_held(in->rs); /* candidates asked for */
  return k * (uint64_t)in->cfg.n;
}

int instance_export(instance *in, instance_state *out) {
  memset(out, 0, sizeof *out);
  instance__lock(in);
  size_t n = in->cfg.n;
  instance_cfg_copy(&out->cfg, &in->cfg);
  if (!(out->params = mem_alloc_floats(n))) goto oom;
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
  out->log_id = in->log_id;
  out->log_seq = in->log_seq;
  if (in->rs) {
    out->best_loss = in->rs->best_loss;
    out->next_id = in->rs->next_id;
    out->tells = in->rs->tells;
    out->best_id = in->rs->best_id;
  }
  idem__export(in, out);
  instance__unlock(in);
  return 0;
oom:
  instance__unlock(in);
  instance_state_free(out);
  return -E_QUOTA;
}

void instance_state_free(instance_state *s) {
  if (!s) return;
  size_t n = s->cfg.n;
  mem_free_floats(s->params, n);
  for (int b = 0; b < OPTIM_NBUF; b++) mem_free_floats(s->buf[b], n);
  instance_cfg_free(&s->cfg);
  free(s->idem);
  memset(s, 0, sizeof *s);
}

/* Copies s's buffers into the new instance in (allocated for `need`);
 * buffers s lacks or never used start fresh, as torch's state would. */
static void copy_buffers(instance *in, const instance_state *s, unsigned need) {
  size_t n = s->cfg.n;
  in->fresh = 0;
  for (int b = 0; b < OPTIM_NBUF; b++) {
    if (!(need & (1u << b))) continue;
    if (s->buf[b] && (s->have & (1u << b)) && !(s->fresh & (1u << b)))
      memcpy(in->buf[b], s->buf[b], n * sizeof(float));
    else
      in->fresh |= 1u << b; /* torch had no such state yet */
  }
}

instance *instance_from_state(const instance_state *s, const instance_env *env) {
  instance *in = instance__alloc(&s->cfg, env);
  if (!in) return NULL;
  size_t n = s->cfg.n;
  if (s->params) memcpy(in->params, s->params, n * sizeof(float));
  unsigned need = optim_buffers(s->cfg.alg, &s->cfg.hyper) | s->have;
  if (instance__alloc_buffers(in, need) < 0) {
    instance_unref(in);
    return NULL;
  }
  copy_buffers(in, s, need);
  in->step = s->step;
  in->version = s->version;
  if (s->log_id) in->log_id = s->log_id;
  in->log_seq = in->log_next = s->log_seq;
  if (s->created > 0) in->created = s->created;
  if (in->rs) {
    in->rs->best_loss = s->best_loss;
    in->rs->next_id = s->next_id ? s->next_id : 1;
    in->rs->tells = s->tells;
    in->rs->best_id = s->best_id;
  }
  in->lr_now = schedule_lr(&in->cfg.sched, in->cfg.hyper.lr, in->step);
  instance__lock(in); /* not published yet; the lock is for the ring's assertions */
  idem__import(in, s);
  instance__unlock(in);
  return in;
}

uint64_t instance_reconfigure_cost(instance *in, const instance_cfg *c) {
  instance__lock(in);
  unsigned more = optim_buffers(c->alg, &c->hyper) & ~in->have;
  uint64_t cost = (uint64_t)__builtin_popcount(more) * in->cfg.n;
  instance__unlock(in);
  return cost;
}

int instance_reconfigure_prepare(instance *in, const instance_cfg *c, unsigned *added, derr *e) {
  instance__lock(in);
  unsigned before = in->have;
  int rc = instance__alloc_buffers(in, optim_buffers(c->alg, &c->hyper));
  *added = in->have & ~before;
  if (rc == 0) journal__hold(in); /* log mode: until reconfigure or abort */
  instance__unlock(in);
  return rc < 0 ? derr_set(e, E_QUOTA, "not enough memory for the new optimizer state") : 0;
}

void instance_reconfigure_abort(instance *in, unsigned added) {
  instance__lock(in);
  /* only buffers the current configuration does not use: they are still fresh */
  instance__free_buffers(in, added & in->fresh & ~optim_buffers(in->cfg.alg, &in->cfg.hyper));
  wake_list wl = {0};
  journal__release(in, &wl); /* the changes held meanwhile, under the old configuration */
  instance__unlock(in);
  waiters__run(&wl);
}

/* The fields a PATCH may change; name, algorithm, mode and tensors never do
 * (readers use them without the lock). */
static void set_mutable(instance_cfg *dst, const instance_cfg *c) {
  dst->hyper = c->hyper;
  dst->max_staleness = c->max_staleness;
  dst->workers = c->workers;
  dst->min_workers = c->min_workers;
  dst->round_timeout_ms = c->round_timeout_ms;
  dst->aggregate = c->aggregate;
  dst->worker_lease_ms = c->worker_lease_ms;
  dst->clip_grad_norm = c->clip_grad_norm;
  dst->sched = c->sched;
}

int instance_reconfigure(instance *in, const instance_cfg *c, derr *e) {
  assert(c->alg == in->layout.alg && c->mode == in->layout.mode && c->n == in->layout.n);
  instance__lock(in);
  if (instance__alloc_buffers(in, optim_buffers(c->alg, &c->hyper)) < 0) { /* none if prepared */
    wake_list held = {0};
    journal__release(in, &held);
    instance__unlock(in);
    waiters__run(&held);
    return derr_set(e, E_QUOTA, "not enough memory for the new optimizer state");
  }
  set_mutable(&in->cfg, c);
  in->lr_now = schedule_lr(&in->cfg.sched, in->cfg.hyper.lr, in->step);
  in->version++;
  wake_list wl = {0};
  journal__release(in, &wl); /* the changes held since prepare: after the new configuration */
  /* fewer workers (or members) may complete the round that is waiting */
  if (in->cfg.mode == MODE_SYNC && in->round.count && in->round.count >= round__expected(in))
    round__close(in, &wl, NULL);
  instance__unlock(in);
  waiters__run(&wl);
  return 0;
}
