/* sparse: the sparse half of a step.  A push's (or a round's) rows are
 * checked (ids < V, finite), coalesced into the instance's scratch (torch's
 * coalesce: repeats summed in the order given), their new rows counted and
 * charged to the quota all at once, room made for them, and only then, with
 * nothing left that can fail, the rows are created at their init and the
 * kernel (optim_sparse_apply) runs once per sparse tensor with the dense
 * step's plan.  Also a round's pooled copies of its members' rows.
 * Owns the row tables (rows.c) and the scratch of an instance.  Never
 * allocates per row, and never changes a row before the step is sure to
 * happen.  Under the instance lock (HTTP threads, the loop thread when a
 * round closes), except sparse__check (reads only the push and the layout).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "instance_internal.h"
#include "mem.h"
#include "optim_sparse.h"
#include "registry.h"

int sparse__ordinal(const instance *in, int t) {
  for (size_t i = 0; i < in->nsparse; i++)
    if (in->sparse_t[i] == t) return (int)i;
  return -1;
}

void sparse__init(instance *in) {
  const instance_cfg *c = &in->cfg;
  size_t ns = 0;
  for (size_t t = 0; t < c->ntensors; t++) ns += c->tensors[t].sparse;
  if (!ns) return;
  in->nsparse = ns;
  in->rows = mem_xcalloc(ns, sizeof *in->rows);
  in->sparse_t = mem_xcalloc(ns, sizeof *in->sparse_t);
  in->work = mem_xcalloc(ns, sizeof *in->work);
  for (size_t t = 0, i = 0; t < c->ntensors; t++) {
    if (!c->tensors[t].sparse) continue;
    in->sparse_t[i] = (int)t;
    rows_init(&in->rows[i++], &c->tensors[t], c->alg, &c->hyper);
  }
}

void sparse__free(instance *in) {
  for (size_t i = 0; i < in->nsparse; i++) rows_free(&in->rows[i]);
  free(in->rows);
  free(in->sparse_t);
  free(in->work);
  if (in->sscr.mem) mem_free_big(in->sscr.mem, in->sscr.bytes);
  in->rows = NULL;
  in->nsparse = 0;
}

uint64_t sparse__held_floats(const instance *in) {
  uint64_t f = 0;
  for (size_t i = 0; i < in->nsparse; i++) f += rows_floats(&in->rows[i]);
  return f;
}

static const tensor *tensor_of(const instance *in, size_t i) { return &in->layout.tensors[in->sparse_t[i]]; }

int sparse__check(const instance *in, const push_rows *pr, derr *e) {
  if (!pr) return 0; /* no rows: an empty push of every sparse tensor */
  for (size_t i = 0; i < in->nsparse; i++) {
    const tensor *tn = tensor_of(in, i);
    size_t k = pr[i].k, D = tn->dim, where;
    if (k && (!pr[i].rows || !pr[i].vals))
      return derr_set(e, E_BAD_LENGTH, "grads.%s: %zu rows without their values", tn->name, k);
    for (size_t j = 0; j < k; j++)
      if (pr[i].rows[j] >= tn->vrows)
        return derr_set(e, E_BAD_VALUE, "grads.%s.rows[%zu]: row %llu is outside [0, %llu)", tn->name, j,
                        (unsigned long long)pr[i].rows[j], (unsigned long long)tn->vrows);
    if (k && !optim_all_finite(pr[i].vals, k * D, &where))
      return derr_set(e, E_NOT_FINITE, "grads.%s.values[%zu][%zu]: NaN or infinite", tn->name, where / D,
                      where % D);
  }
  return 0;
}

/* ---- the scratch ---------------------------------------------------------------- */

#define ALIGN8(x) (((x) + 7) & ~(size_t)7)

/* Room for K entries and F floats (and a round's concatenation of them). */
static int scratch_reserve(instance *in, size_t K, size_t F) {
  sparse_scratch *s = &in->sscr;
  size_t need = 4 * K * sizeof(uint64_t) + ALIGN8(K * sizeof(uint32_t)) + 2 * F * sizeof(float) + 64;
  if (need > s->bytes) {
    size_t bytes = need > 2 * s->bytes ? need : 2 * s->bytes;
    unsigned char *m = mem_alloc_big(bytes);
    if (!m) return -E_QUOTA;
    if (s->mem) mem_free_big(s->mem, s->bytes);
    s->mem = m;
    s->bytes = bytes;
  }
  /* the layout depends only on the sizes: K and F of one step give the same
   * pointers each time it is asked, so a concatenation stays where it is */
  unsigned char *p = s->mem;
  s->crows = (uint64_t *)p;
  p += K * sizeof(uint64_t);
  s->urows = (uint64_t *)p;
  p += K * sizeof(uint64_t);
  s->blk = (float **)p;
  p += K * sizeof(float *);
  s->eblk = (float **)p;
  p += K * sizeof(float *);
  s->order = (uint32_t *)p;
  p += ALIGN8(K * sizeof(uint32_t));
  s->cg = (float *)p;
  p += F * sizeof(float);
  s->ug = (float *)p;
  return 0;
}

/* Totals of pr, and each tensor's offsets into the scratch. */
static void layout_work(instance *in, const push_rows *pr, size_t *K, size_t *F) {
  size_t k = 0, f = 0;
  for (size_t i = 0; i < in->nsparse; i++) {
    in->work[i] = (sparse_work){.koff = k, .foff = f};
    uint64_t ki = pr ? pr[i].k : 0;
    k += ki;
    f += ki * tensor_of(in, i)->dim;
  }
  *K = k;
  *F = f;
}

/* ---- preparing and applying ------------------------------------------------------ */

/* Coalesces tensor i into the scratch; its squared norm into *sumsq. */
static int coalesce_one(instance *in, size_t i, const push_rows *r, float divide, double *sumsq, derr *e) {
  sparse_work *w = &in->work[i];
  sparse_scratch *s = &in->sscr;
  size_t D = tensor_of(in, i)->dim;
  float *ug = s->ug + w->foff;
  w->m = optim_sparse_coalesce(r->rows, r->vals, r->k, D, s->urows + w->koff, ug, s->order + w->koff);
  if (divide > 1)
    for (size_t j = 0; j < w->m * D; j++) ug[j] /= divide;
  double ss = 0;
  size_t where;
  if (!optim_scan(ug, w->m * D, &ss, &where))
    return derr_set(e, E_NOT_FINITE, "grads.%s: the summed gradient of row %llu overflowed to infinity",
                    tensor_of(in, i)->name, (unsigned long long)s->urows[w->koff + where / D]);
  *sumsq += ss;
  /* each distinct row's block, found once: NULL for the new ones, created
   * in apply_one (room is reserved first; blocks never move) */
  float **blk = s->blk + w->koff;
  const uint64_t *urows = s->urows + w->koff;
  w->fresh = 0;
  for (size_t j = 0; j < w->m; j++) w->fresh += (blk[j] = rows_find(&in->rows[i], urows[j])) == NULL;
  return 0;
}

int sparse__prepare(instance *in, const push_rows *pr, float divide, double *sumsq, derr *e) {
  INSTANCE_ASSERT_LOCKED(in);
  size_t K, F;
  layout_work(in, pr, &K, &F);
  if (scratch_reserve(in, K, F) < 0)
    return derr_set(e, E_QUOTA, "not enough memory to prepare a step of %zu rows", K);
  uint64_t floats = 0, fresh = 0;
  for (size_t i = 0; i < in->nsparse; i++) {
    if (!pr || !pr[i].k) {
      in->work[i].m = in->work[i].fresh = 0;
      continue;
    }
    int rc = coalesce_one(in, i, &pr[i], divide, sumsq, e);
    if (rc < 0) return rc;
    floats += (uint64_t)in->work[i].fresh * in->rows[i].blk;
    fresh += in->work[i].fresh;
  }
  if (floats && in->reg && registry_charge(in->reg, floats, e) < 0) {
    char more[160];
    snprintf(more, sizeof more, "; the step would hold %llu new rows", (unsigned long long)fresh);
    size_t l = strlen(e->msg);
    if (l + strlen(more) < sizeof e->msg) memcpy(e->msg + l, more, strlen(more) + 1);
    return -E_QUOTA;
  }
  for (size_t i = 0; i < in->nsparse; i++)
    if (rows_reserve(&in->rows[i], in->work[i].fresh) < 0) {
      if (in->reg) registry_uncharge(in->reg, floats);
      return derr_set(e, E_QUOTA, "not enough memory for %llu new rows", (unsigned long long)fresh);
    }
  return 0;
}

/* Where id is in the m ascending distinct ids u (it is there). */
static size_t find_sorted(const uint64_t *u, size_t m, uint64_t id) {
  size_t lo = 0, hi = m;
  while (hi - lo > 1) {
    size_t mid = lo + (hi - lo) / 2;
    if (u[mid] <= id) lo = mid;
    else hi = mid;
  }
  return lo;
}

/* Tensor i's step: sent order (entries as given) or the coalesced sums.
 * The blocks of the distinct rows come from coalesce_one (new ones are made
 * here); an entry as sent finds its block among them by binary search. */
static void apply_one(instance *in, size_t i, const optim_plan *pl, push_rows *r, bool sent, bool emit) {
  sparse_work *w = &in->work[i];
  sparse_scratch *s = &in->sscr;
  rows *rt = &in->rows[i];
  size_t D = rt->D, m = w->m;
  float **blk = s->blk + w->koff, **eblk = s->eblk + w->koff;
  const uint64_t *urows = s->urows + w->koff;
  for (size_t j = 0; j < m; j++)
    if (!blk[j]) blk[j] = rows_add(rt, urows[j]);
  if (sent || emit)
    for (size_t j = 0; j < r->k; j++) eblk[j] = blk[find_sorted(urows, m, r->rows[j])];
  if (sent) {
    optim_sparse_apply(pl, eblk, r->vals, r->k, D, emit ? r->vals : NULL);
    return;
  }
  optim_sparse_apply(pl, blk, s->ug + w->foff, m, D, NULL);
  if (emit)
    for (size_t j = 0; j < r->k; j++) memcpy(r->vals + j * D, eblk[j], D * sizeof(float));
}

void sparse__apply(instance *in, const optim_plan *pl, push_rows *pr, bool sent, bool emit) {
  INSTANCE_ASSERT_LOCKED(in);
  uint64_t touched = 0, held = 0;
  bool in_order = sent && !optim_sparse_coalesces(in->cfg.alg);
  for (size_t i = 0; i < in->nsparse; i++) {
    if (pr && pr[i].k) apply_one(in, i, pl, &pr[i], in_order, emit);
    touched += in->work[i].m;
    held += in->rows[i].count;
  }
  in->stats.rows_touched = touched;
  in->stats.rows_held = held;
}

/* ---- a round's copies ------------------------------------------------------------ */

/* Where a copy's counts and ids are: after its n floats. */
static uint64_t *copy_counts(const psnap *c) { return (uint64_t *)((unsigned char *)c->v + ALIGN8(c->n * sizeof(float))); }

psnap *sparse__copy(instance *in, const push_rows *pr) {
  size_t K, F;
  layout_work(in, pr, &K, &F);
  size_t cap, bytes = ALIGN8(F * sizeof(float)) + (in->nsparse + K) * sizeof(uint64_t);
  float *buf = bufpool_get(in->pool, bytes + 1, &cap);
  if (!buf) return NULL;
  psnap *c = mem_xcalloc(1, sizeof *c);
  *c = (psnap){.n = F, .v = buf, .cap = cap, .pool = in->pool};
  atomic_init(&c->refs, 1);
  uint64_t *counts = copy_counts(c), *ids = counts + in->nsparse;
  for (size_t i = 0; i < in->nsparse; i++) {
    uint64_t k = pr ? pr[i].k : 0;
    counts[i] = k;
    if (!k) continue;
    size_t D = tensor_of(in, i)->dim;
    memcpy(ids + in->work[i].koff, pr[i].rows, k * sizeof(uint64_t));
    memcpy(buf + in->work[i].foff, pr[i].vals, k * D * sizeof(float));
  }
  return c;
}

int sparse__concat(instance *in, push_rows *out, derr *e) {
  INSTANCE_ASSERT_LOCKED(in);
  struct round *r = &in->round;
  for (size_t i = 0; i < in->nsparse; i++) out[i].k = 0;
  for (size_t p = 0; p < r->count; p++)
    for (size_t i = 0; i < in->nsparse; i++) out[i].k += copy_counts(r->part[p].rows)[i];
  size_t K, F;
  layout_work(in, out, &K, &F);
  if (scratch_reserve(in, K, F) < 0)
    return derr_set(e, E_QUOTA, "not enough memory to combine a round of %zu rows", K);
  for (size_t i = 0; i < in->nsparse; i++) {
    size_t D = tensor_of(in, i)->dim, at = 0;
    out[i].rows = in->sscr.crows + in->work[i].koff;
    out[i].vals = in->sscr.cg + in->work[i].foff;
    for (size_t p = 0; p < r->count; p++) {
      const psnap *c = r->part[p].rows;
      const uint64_t *counts = copy_counts(c), *ids = counts + in->nsparse;
      size_t ko = 0, fo = 0; /* tensor i's place in this copy */
      for (size_t j = 0; j < i; j++) {
        ko += counts[j];
        fo += counts[j] * tensor_of(in, j)->dim;
      }
      memcpy(in->sscr.crows + in->work[i].koff + at, ids + ko, counts[i] * sizeof(uint64_t));
      memcpy(in->sscr.cg + in->work[i].foff + at * D, c->v + fo, counts[i] * D * sizeof(float));
      at += counts[i];
    }
  }
  return 0;
}

void sparse__fill_copy(instance *in, psnap *c) {
  INSTANCE_ASSERT_LOCKED(in);
  const uint64_t *counts = copy_counts(c), *ids = counts + in->nsparse;
  float *v = c->v;
  for (size_t i = 0; i < in->nsparse; i++) {
    size_t D = in->rows[i].D;
    for (uint64_t j = 0; j < counts[i]; j++, ids++, v += D) rows_read(&in->rows[i], *ids, v);
  }
}
