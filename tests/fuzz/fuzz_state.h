/* fuzz_state.h: comparing configurations and whole states, and checking
 * that a state survives both of its serializations (the JSON state
 * document of GET/PUT .../state, and the snapshot file) unchanged.  Shared
 * by fuzz_json.c and fuzz_snapshot.c.
 */
#ifndef DESCENT_FUZZ_STATE_H
#define DESCENT_FUZZ_STATE_H

#include <math.h>
#include <stdbool.h>

#include "codec_json.h"
#include "fuzz.h"
#include "instance.h"
#include "mem.h"
#include "optim.h"
#include "persist.h"
#include "spec.h"

/* The largest instance a fuzz input may ask for (the daemon's is
 * --max-params); big enough for every shape a fuzzer finds interesting. */
#define FUZZ_MAX_FLOATS (1u << 16)

static inline bool fz_deq(double a, double b) { return a == b || (isnan(a) && isnan(b)); }

/* Semantically equal configurations (min_workers 0 means "all workers"). */
static inline bool fz_cfg_equal(const instance_cfg *a, const instance_cfg *b, char *why, size_t cap) {
#define FZ_DIFF(...)                  \
  do {                                \
    snprintf(why, cap, __VA_ARGS__);  \
    return false;                     \
  } while (0)
  if (strcmp(a->name, b->name)) FZ_DIFF("name '%s' / '%s'", a->name, b->name);
  if (a->alg != b->alg) FZ_DIFF("algorithm %d / %d", a->alg, b->alg);
  for (const optim_hyper_field *f = optim_hyper_fields; f->name; f++) {
    if (!(f->algs & OPTIM_A(a->alg))) continue;
    const char *x = (const char *)&a->hyper + f->offset, *y = (const char *)&b->hyper + f->offset;
    bool same;
    switch (f->kind) {
    case OPTIM_HK_NUM: same = fz_deq(*(const double *)x, *(const double *)y); break;
    case OPTIM_HK_BOOL: same = *(const bool *)x == *(const bool *)y; break;
    case OPTIM_HK_PAIR:
      same = fz_deq(((const double *)x)[0], ((const double *)y)[0]) && fz_deq(((const double *)x)[1], ((const double *)y)[1]);
      break;
    case OPTIM_HK_CENTER: same = *(const int *)x == *(const int *)y; break;
    default: same = *(const uint64_t *)x == *(const uint64_t *)y; break;
    }
    if (!same) FZ_DIFF("hyper.%s", f->name);
  }
  if (a->mode != b->mode) FZ_DIFF("mode");
  if (a->max_staleness != b->max_staleness) FZ_DIFF("max_staleness %lld / %lld", (long long)a->max_staleness, (long long)b->max_staleness);
  if (a->workers != b->workers) FZ_DIFF("workers %u / %u", a->workers, b->workers);
  uint32_t ma = a->min_workers ? a->min_workers : a->workers, mb = b->min_workers ? b->min_workers : b->workers;
  if (ma != mb) FZ_DIFF("min_workers %u / %u", a->min_workers, b->min_workers);
  if (a->round_timeout_ms != b->round_timeout_ms) FZ_DIFF("round_timeout_ms");
  if (a->aggregate != b->aggregate) FZ_DIFF("aggregate");
  if (a->worker_lease_ms != b->worker_lease_ms) FZ_DIFF("worker_lease_ms");
  if (!fz_deq(a->clip_grad_norm, b->clip_grad_norm)) FZ_DIFF("clip_grad_norm %g / %g", a->clip_grad_norm, b->clip_grad_norm);
  const schedule *s = &a->sched, *t = &b->sched;
  if (s->kind != t->kind || !fz_deq(s->step_size, t->step_size) || !fz_deq(s->gamma, t->gamma) ||
      !fz_deq(s->t_max, t->t_max) || !fz_deq(s->eta_min, t->eta_min) || !fz_deq(s->start_factor, t->start_factor) ||
      !fz_deq(s->end_factor, t->end_factor) || !fz_deq(s->total_iters, t->total_iters))
    FZ_DIFF("schedule (kind %d / %d)", s->kind, t->kind);
  if (a->ntensors != b->ntensors || a->n != b->n) FZ_DIFF("tensors %zu/%zu, n %zu/%zu", a->ntensors, b->ntensors, a->n, b->n);
  for (size_t i = 0; i < a->ntensors; i++) {
    const tensor *x = &a->tensors[i], *y = &b->tensors[i];
    if (strcmp(x->name, y->name) || x->ndim != y->ndim || x->count != y->count || x->offset != y->offset ||
        x->origin != y->origin || memcmp(x->shape, y->shape, (size_t)x->ndim * sizeof x->shape[0]))
      FZ_DIFF("tensors[%zu] ('%s' / '%s')", i, x->name, y->name);
    if (x->sparse != y->sparse ||
        (x->sparse && (x->vrows != y->vrows || x->dim != y->dim || x->init.kind != y->init.kind ||
                       (x->init.kind != TENSOR_INIT_ZEROS && (!fz_deq(x->init.a, y->init.a) ||
                                                              (x->init.kind >= TENSOR_INIT_NORMAL &&
                                                               (!fz_deq(x->init.b, y->init.b) || x->init.seed != y->init.seed)))))))
      FZ_DIFF("tensors[%zu] ('%s'): sparse, V, D or init", i, x->name);
  }
  return true;
}

/* The buffers a state's serializations carry. */
static inline unsigned fz_written(const instance_state *s) { return s->have & ~s->fresh; }

static inline bool fz_state_equal(const instance_state *a, const instance_state *b, char *why, size_t cap) {
  if (!fz_cfg_equal(&a->cfg, &b->cfg, why, cap)) return false;
  size_t n = a->cfg.n;
  if (a->step != b->step) FZ_DIFF("step %llu / %llu", (unsigned long long)a->step, (unsigned long long)b->step);
  if (memcmp(a->params, b->params, n * sizeof(float))) FZ_DIFF("params");
  unsigned need = optim_buffers(a->cfg.alg, &a->cfg.hyper);
  /* with no dense float (only sparse tensors) a dense buffer holds nothing:
   * whether it counts as written is not part of the state */
  if (n && fz_written(a) != fz_written(b)) FZ_DIFF("buffers written %#x / %#x", fz_written(a), fz_written(b));
  if (n && (a->fresh & need) != (b->fresh & need)) FZ_DIFF("fresh buffers %#x / %#x", a->fresh & need, b->fresh & need);
  for (int k = 0; k < OPTIM_NBUF; k++)
    if (n && (fz_written(a) & (1u << k)) && memcmp(a->buf[k], b->buf[k], n * sizeof(float)))
      FZ_DIFF("buffer %s", optim_buf_name(k));
  if (!a->rows != !b->rows) FZ_DIFF("rows %s / %s", a->rows ? "present" : "absent", b->rows ? "present" : "absent");
  for (size_t t = 0, i = 0; a->rows && t < a->cfg.ntensors; t++) {
    if (!a->cfg.tensors[t].sparse) continue;
    const state_rows *x = &a->rows[i], *y = &b->rows[i];
    size_t D = a->cfg.tensors[t].dim;
    i++;
    if (x->m != y->m || (x->m && memcmp(x->ids, y->ids, x->m * sizeof *x->ids)))
      FZ_DIFF("rows of %s: %llu / %llu ids", a->cfg.tensors[t].name, (unsigned long long)x->m, (unsigned long long)y->m);
    if (x->m && memcmp(x->params, y->params, x->m * D * sizeof(float))) FZ_DIFF("rows of %s: params", a->cfg.tensors[t].name);
    for (int k = 0; k < OPTIM_NBUF; k++) {
      if (!x->buf[k] != !y->buf[k]) FZ_DIFF("rows of %s: buffer %s held / not", a->cfg.tensors[t].name, optim_buf_name(k));
      if (x->buf[k] && x->m && memcmp(x->buf[k], y->buf[k], x->m * D * sizeof(float)))
        FZ_DIFF("rows of %s: buffer %s", a->cfg.tensors[t].name, optim_buf_name(k));
    }
  }
  if (a->cfg.alg == OPTIM_RANDOM_SEARCH &&
      (!fz_deq(a->best_loss, b->best_loss) || a->next_id != b->next_id || a->tells != b->tells || a->best_id != b->best_id))
    FZ_DIFF("random_search counters");
  return true;
#undef FZ_DIFF
}

/* s (finite arrays) exported as a state document and imported again. */
static inline void fz_json_roundtrip(const instance_state *s) {
  char why[200];
  /* GET .../state then PUT .../state */
  jbuf b;
  jbuf_init(&b, NULL, 4096);
  spec_state_write(&b, s);
  FUZZ_CHECK(!b.failed);
  jdoc d;
  derr e = {0};
  int rc = jdoc_parse(&d, NULL, b.p, b.len, &e);
  FUZZ_CHECK(rc == 0, "an exported state does not parse: %s\n%.*s", e.msg, (int)(b.len > 2000 ? 2000 : b.len), b.p);
  instance_state s2;
  rc = spec_parse_state(&d, s->cfg.name, UINT64_MAX, &s2, &e);
  FUZZ_CHECK(rc == 0, "an exported state is refused on import: %s\n%.*s", e.msg, (int)(b.len > 2000 ? 2000 : b.len), b.p);
  FUZZ_CHECK(fz_state_equal(s, &s2, why, sizeof why), "export/import changed the state: %s", why);
  instance_state_free(&s2);
  jdoc_free(&d);
  jbuf_release(&b);
}

/* s written as a snapshot and loaded again; the bytes must be canonical. */
static inline void fz_snapshot_roundtrip(const instance_state *s) {
  char why[200];
  derr e = {0};
  int rc;
  unsigned char *bytes = NULL, *bytes2 = NULL;
  size_t len = 0, len2 = 0;
  FUZZ_CHECK(persist_encode(s, &bytes, &len) == 0);
  instance_state s3;
  rc = persist_decode(bytes, len, &s3, &e);
  FUZZ_CHECK(rc == 0, "a snapshot the code wrote is refused: %s", e.msg);
  FUZZ_CHECK(fz_state_equal(s, &s3, why, sizeof why), "snapshot round trip changed the state: %s", why);
  FUZZ_CHECK(s3.step == s->step && s3.version == s->version);
  FUZZ_CHECK(persist_encode(&s3, &bytes2, &len2) == 0);
  FUZZ_CHECK(len2 == len && !memcmp(bytes, bytes2, len), "re-encoding a decoded snapshot changed its bytes:\n%.*s\n%.*s",
             (int)(len > 16 ? (len - 16 > 1500 ? 1500 : len - 16) : 0), (const char *)bytes + 16,
             (int)(len2 > 16 ? (len2 - 16 > 1500 ? 1500 : len2 - 16) : 0), (const char *)bytes2 + 16);
  instance_state_free(&s3);
  free(bytes);
  free(bytes2);
}

/* Both serializations of a valid state with finite arrays. */
static inline void fz_state_roundtrips(const instance_state *s) {
  fz_json_roundtrip(s);
  fz_snapshot_roundtrip(s);
}

/* Structural checks of a decoded configuration. */
static inline void fz_cfg_valid(const instance_cfg *c) {
  derr e = {0};
  FUZZ_CHECK(c->name[0] == 0 || spec_name_ok(c->name), "name '%s'", c->name);
  FUZZ_CHECK(optim_hyper_check(c->alg, &c->hyper, &e) == 0, "accepted hyperparameters fail their check: %s", e.msg);
  FUZZ_CHECK(c->ntensors > 0 && c->tensors);
  size_t off = 0;
  for (size_t i = 0; i < c->ntensors; i++) {
    const tensor *t = &c->tensors[i];
    FUZZ_CHECK(spec_name_ok(t->name), "tensor name '%s'", t->name);
    for (size_t j = 0; j < i; j++) FUZZ_CHECK(strcmp(c->tensors[j].name, t->name), "tensor '%s' twice", t->name);
    FUZZ_CHECK(t->ndim >= 0 && t->ndim <= TENSOR_MAXDIM);
    if (t->sparse) { /* [V, D], no room in the flat arrays */
      FUZZ_CHECK(t->ndim == 2 && t->vrows == t->shape[0] && t->vrows >= 1 && t->vrows <= (1ull << 62) &&
                     t->dim == t->shape[1] && t->dim >= 1 && t->count == 0 && t->offset == off,
                 "sparse tensor '%s': V %llu D %zu count %zu", t->name, (unsigned long long)t->vrows, t->dim, t->count);
      continue;
    }
    uint64_t count = 1;
    for (int k = 0; k < t->ndim; k++) {
      FUZZ_CHECK(t->shape[k] >= 1);
      count *= t->shape[k];
    }
    FUZZ_CHECK(t->count == count && t->offset == off, "tensor '%s': count %zu offset %zu", t->name, t->count, t->offset);
    off += t->count;
  }
  FUZZ_CHECK(c->n == off);
  if (c->mode == MODE_SYNC) {
    FUZZ_CHECK(c->workers >= 1 && c->min_workers <= c->workers);
  }
}

static inline void fz_floats_finite(const float *v, size_t n, const char *what) {
  for (size_t i = 0; i < n; i++) FUZZ_CHECK(isfinite(v[i]), "%s[%zu] is not finite", what, i);
}

#endif
