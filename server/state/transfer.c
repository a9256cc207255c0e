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
  return k * (uint64_t)in->cfg.n + sparse__held_floats(in);
}

/* ---- sparse rows in a state ----------------------------------------------------- */

int state_rows_alloc(state_rows *r, uint64_t m, size_t D, unsigned bufs) {
  memset(r, 0, sizeof *r);
  r->m = m;
  size_t n = (size_t)m * D;
  if (m > SIZE_MAX / 8 / (D ? D : 1)) goto oom;
  if (!(r->ids = malloc((m ? m : 1) * sizeof *r->ids)) || !(r->params = mem_alloc_floats(n))) goto oom;
  for (int b = 0; b < OPTIM_NBUF; b++)
    if ((bufs & (1u << b)) && !(r->buf[b] = mem_alloc_floats(n))) goto oom;
  return 0;
oom:
  state_rows_free_one(r, D);
  return -E_QUOTA;
}

void state_rows_free_one(state_rows *r, size_t D) {
  size_t n = (size_t)r->m * D;
  free(r->ids);
  mem_free_floats(r->params, n);
  for (int b = 0; b < OPTIM_NBUF; b++) mem_free_floats(r->buf[b], n);
  memset(r, 0, sizeof *r);
}

/* Sparse tensor i's held rows into r, ids ascending (under the lock). */
static int export_rows(instance *in, size_t i, state_rows *r) {
  const rows *rt = &in->rows[i];
  size_t m = rt->count, D = rt->D;
  if (state_rows_alloc(r, m, D, rt->bufs) < 0) return -E_QUOTA;
  float **blks = malloc((m ? m : 1) * sizeof *blks);
  rows_slot *tmp = malloc((m ? 2 * m : 1) * sizeof *tmp);
  int rc = blks && tmp ? 0 : -E_QUOTA;
  if (rc == 0) {
    rows_sorted(rt, r->ids, blks, tmp);
    for (size_t j = 0; j < m; j++) {
      memcpy(r->params + j * D, blks[j], D * sizeof(float));
      for (int b = 0; b < OPTIM_NBUF; b++)
        if (r->buf[b]) memcpy(r->buf[b] + j * D, blks[j] + rt->off[b], D * sizeof(float));
    }
  }
  free(blks);
  free(tmp);
  return rc;
}

/* s's rows into the new instance's tables (before publication). */
static int import_rows(instance *in, const instance_state *s) {
  if (!s->rows) return 0;
  for (size_t i = 0; i < in->nsparse; i++) {
    const state_rows *r = &s->rows[i];
    rows *rt = &in->rows[i];
    size_t D = rt->D;
    if (!r->m) continue;
    if (rows_reserve(rt, r->m) < 0) return -E_QUOTA;
    for (size_t j = 0; j < r->m; j++) {
      float *blk = rows_get(rt, r->ids[j], NULL);
      if (r->params) memcpy(blk, r->params + j * D, D * sizeof(float));
      for (int b = 0; b < OPTIM_NBUF; b++)
        if (rt->off[b] >= 0 && r->buf[b]) memcpy(blk + rt->off[b], r->buf[b] + j * D, D * sizeof(float));
    }
    in->stats.rows_held += rt->count;
  }
  return 0;
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
  if (in->nsparse) {
    out->rows = calloc(in->nsparse, sizeof *out->rows);
    if (!out->rows) goto oom;
    for (size_t i = 0; i < in->nsparse; i++)
      if (export_rows(in, i, &out->rows[i]) < 0) goto oom;
  }
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
  if (s->rows)
    for (size_t t = 0, i = 0; t < s->cfg.ntensors; t++)
      if (s->cfg.tensors[t].sparse) state_rows_free_one(&s->rows[i++], s->cfg.tensors[t].dim);
  free(s->rows);
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
  if (import_rows(in, s) < 0) {
    instance_unref(in);
    return NULL;
  }
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

/* A sparse tensor's row blocks hold the buffers chosen at creation: a
 * configuration needing others is refused (under the lock). */
static int rows_fixed(instance *in, const instance_cfg *c, derr *e) {
  if (!in->nsparse || optim_buffers(c->alg, &c->hyper) == in->rows[0].bufs) return 0;
  return derr_set(e, E_BAD_VALUE,
                  "hyper: this change needs other optimizer state than the rows of the sparse tensors hold");
}

int instance_reconfigure_prepare(instance *in, const instance_cfg *c, unsigned *added, derr *e) {
  instance__lock(in);
  *added = 0;
  if (rows_fixed(in, c, e) < 0) {
    instance__unlock(in);
    return -E_BAD_VALUE;
  }
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
  if (rows_fixed(in, c, e) < 0) {
    instance__unlock(in);
    return -E_BAD_VALUE;
  }
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
