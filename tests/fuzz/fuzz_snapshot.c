/* fuzz_snapshot: snapshot files (persist_decode), and states the fuzzer
 * builds (persist_encode then persist_decode).
 *
 * Input: a snapshot file when it starts with the magic "DESCENTS";
 * otherwise bytes that choose a state (algorithm, hyperparameters, mode,
 * schedule, tensors, step, which buffers exist, raw parameter bits, and
 * sparse tensors with their held rows where the algorithm allows them).
 * Invariants:
 *   - a refused file leaves the state empty and says why; an accepted one
 *     is a valid configuration whose arrays fill the file exactly;
 *   - decode(encode(s)) == s for every state, the arrays bit for bit (NaN
 *     payloads included), and encode(decode(f)) is canonical;
 *   - every state with finite arrays also survives the state document
 *     (export, then import) unchanged.
 */
#include "fuzz_state.h"
#include "optim_sparse.h"

/* Appends nsparse sparse tensors ([V, D], V up to 2^62, an init) with up to
 * 4 held rows each (ids ascending, every row buffer, raw bits). */
static void add_sparse(fuzz_in *in, instance_state *s, size_t nsparse) {
  instance_cfg *c = &s->cfg;
  if (!nsparse) return;
  s->rows = mem_xcalloc(nsparse, sizeof *s->rows);
  unsigned bufs = instance_cfg_row_buffers(c);
  for (size_t i = 0; i < nsparse; i++) {
    tensor *t = &c->tensors[c->ntensors++];
    snprintf(t->name, sizeof t->name, "E%zu", i);
    t->sparse = true;
    t->ndim = 2;
    t->vrows = t->shape[0] = 1 + (fuzz_u64(in, 8) >> 2) % (fuzz_u8(in) & 1 ? (1ull << 62) : 64);
    t->dim = t->shape[1] = 1 + fuzz_u8(in) % 4;
    t->offset = c->n;
    t->origin = fuzz_u8(in) & 1 ? fuzz_u64(in, 4) : 0;
    uint8_t k = fuzz_u8(in) % 4;
    t->init = (tensor_init){.kind = k, .a = k == TENSOR_INIT_UNIFORM ? -1 : 0.5, .b = 2, .seed = fuzz_u64(in, 2)};
    uint64_t m = fuzz_u8(in) % 5, id = 0;
    if (m > t->vrows) m = t->vrows;
    FUZZ_CHECK(state_rows_alloc(&s->rows[i], m, t->dim, bufs) == 0);
    state_rows *r = &s->rows[i];
    for (uint64_t j = 0; j < m; j++) {
      uint64_t room = t->vrows - id - (m - j); /* ids left above, keeping one for each row still to come */
      id += room ? fuzz_u64(in, 8) % (room + 1) : 0;
      r->ids[j] = id++;
    }
    for (size_t f = 0; f < m * t->dim; f++) {
      uint32_t u = (uint32_t)fuzz_u64(in, 4);
      memcpy(&r->params[f], &u, 4);
      for (int b = 0; b < OPTIM_NBUF; b++)
        if (r->buf[b]) r->buf[b][f] = (float)f * 0.25f + (float)fuzz_u8(in);
    }
  }
}

/* Builds a daemon-like state from the input: n <= 4 * 4 * 4 * 3 floats. */
static void build_state(fuzz_in *in, instance_state *s) {
  static const char *const algs[] = {"sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "random_search", "sparse_adam"};
  static const double nums[] = {0, 1e-3, 0.1, 0.5, 0.9, 0.999, 1, 1e-8, 5e-324, 1e308, 0.30000000000000004, 2.5};
  memset(s, 0, sizeof *s);
  instance_cfg *c = &s->cfg;
  derr e = {0};
  FUZZ_CHECK(optim_alg_parse(algs[fuzz_u8(in) % 9], &c->alg, &c->hyper, &e) == 0);
  optim_hyper h = c->hyper;
  for (const optim_hyper_field *f = optim_hyper_fields; f->name; f++) {
    if (!(f->algs & OPTIM_A(c->alg)) || !(fuzz_u8(in) & 1)) continue;
    char *base = (char *)&h + f->offset;
    uint8_t pick = fuzz_u8(in);
    double v = pick < 200 ? nums[pick % 12] : fuzz_double(in);
    switch (f->kind) {
    case OPTIM_HK_NUM: *(double *)base = v; break;
    case OPTIM_HK_BOOL: *(bool *)base = pick & 1; break;
    case OPTIM_HK_PAIR: ((double *)base)[pick & 1] = v; break;
    case OPTIM_HK_CENTER: *(int *)base = pick & 1 ? OPTIM_CENTER_BEST : OPTIM_CENTER_ZERO; break;
    default: *(uint64_t *)base = fuzz_u64(in, 8) >> 1; break;
    }
  }
  if (optim_hyper_check(c->alg, &h, &e) == 0) c->hyper = h;
  uint8_t m = fuzz_u8(in);
  c->max_staleness = -1;
  c->worker_lease_ms = fuzz_u64(in, 3);
  if ((m & 1) && c->alg != OPTIM_RANDOM_SEARCH) {
    c->mode = MODE_SYNC;
    c->workers = 1 + (m >> 1) % 4;
    c->min_workers = (m >> 3) % (c->workers + 1);
    c->round_timeout_ms = 1 + fuzz_u64(in, 2); /* sync rounds always have a deadline */
    c->aggregate = (m >> 5) & 1 ? AGG_SUM : AGG_MEAN;
  } else if (m & 2) {
    c->max_staleness = (int64_t)fuzz_u64(in, 2);
  }
  static const double clips[] = {0, 0, 0.5, 1e30};
  c->clip_grad_norm = clips[(m >> 6) & 3];
  uint8_t k = fuzz_u8(in) % 5;
  schedule *sc = &c->sched;
  if (k) {
    sc->kind = k;
    sc->gamma = 0.1;
    sc->start_factor = 1.0 / 3;
    sc->end_factor = 1.0;
    sc->total_iters = 5;
    if (k == SCHED_STEP) sc->step_size = 1 + (double)fuzz_u8(in);
    if (k == SCHED_EXPONENTIAL) sc->gamma = nums[1 + fuzz_u8(in) % 11];
    if (k == SCHED_COSINE) {
      sc->t_max = 1 + (double)fuzz_u8(in);
      sc->eta_min = nums[fuzz_u8(in) % 8];
    }
    if (k == SCHED_LINEAR_WARMUP) {
      sc->start_factor = nums[6 - fuzz_u8(in) % 5];
      sc->end_factor = nums[fuzz_u8(in) % 7];
      sc->total_iters = 1 + (double)fuzz_u8(in);
    }
  }
  derr se = {0};
  if (c->alg == OPTIM_SPARSE_ADAM) c->clip_grad_norm = 0; /* clipping is refused with sparse tensors */
  bool sparse_ok = c->clip_grad_norm == 0 && optim_sparse_check(c->alg, &c->hyper, &se) == 0;
  bool only_sparse = c->alg == OPTIM_SPARSE_ADAM; /* torch's SparseAdam takes no dense tensor */
  size_t ndense = only_sparse ? 0 : 1 + fuzz_u8(in) % 3, nsparse = sparse_ok ? fuzz_u8(in) % 3 : 0;
  if (only_sparse && !nsparse) nsparse = 1;
  c->ntensors = ndense;
  c->tensors = mem_xcalloc(ndense + nsparse, sizeof(tensor));
  for (size_t i = 0; i < ndense; i++) {
    tensor *t = &c->tensors[i];
    snprintf(t->name, sizeof t->name, "%c%zu", "Wbv"[fuzz_u8(in) % 3], i);
    t->ndim = fuzz_u8(in) % 4;
    t->count = 1;
    for (int d = 0; d < t->ndim; d++) {
      t->shape[d] = 1 + fuzz_u8(in) % 4;
      t->count *= t->shape[d];
    }
    t->offset = c->n;
    t->origin = fuzz_u8(in) & 1 ? fuzz_u64(in, 4) : 0;
    c->n += t->count;
  }
  add_sparse(in, s, nsparse);
  snprintf(c->name, sizeof c->name, "snap-%u", fuzz_u8(in));
  s->step = fuzz_u64(in, 4);
  s->version = fuzz_u64(in, 8);
  size_t n = c->n;
  s->params = mem_alloc_floats(n);
  for (size_t i = 0; i < n; i++) {
    uint32_t u = (uint32_t)fuzz_u64(in, 4);
    memcpy(&s->params[i], &u, 4);
  }
  /* as an instance: every buffer it needs exists; after step 0 only those a
   * hyperparameter switches on (a PATCH may, at any step) can be without
   * history yet; sgd/rmsprop may keep a momentum buffer */
  unsigned need = optim_buffers(c->alg, &c->hyper), bits = fuzz_u8(in);
  optim_hyper base = c->hyper;
  base.momentum = 0;
  base.centered = false;
  base.amsgrad = false;
  unsigned switched = need & ~optim_buffers(c->alg, &base);
  s->have = need;
  if ((c->alg == OPTIM_SGD || c->alg == OPTIM_RMSPROP) && (bits & 0x80) && !s->rows) /* sparse: never momentum */
    s->have |= 1u << OPTIM_BUF_MOMENTUM;
  s->fresh = s->step == 0 ? need : switched & bits;
  for (int b = 0; b < OPTIM_NBUF; b++) {
    if (!(s->have & (1u << b))) continue;
    s->buf[b] = mem_alloc_floats(n);
    for (size_t i = 0; i < n; i++) s->buf[b][i] = (float)i * 0.5f - (float)fuzz_u8(in);
  }
  s->best_loss = INFINITY;
  s->next_id = 1;
  if (c->alg == OPTIM_RANDOM_SEARCH && (bits & 1)) {
    s->best_loss = nums[fuzz_u8(in) % 12];
    s->next_id = 1 + fuzz_u64(in, 4);
    s->tells = fuzz_u64(in, 4);
    s->best_id = fuzz_u64(in, 4);
  }
}

static bool arrays_finite(const instance_state *s) {
  size_t where;
  if (!optim_all_finite(s->params, s->cfg.n, &where)) return false;
  for (size_t t = 0, i = 0; s->rows && t < s->cfg.ntensors; t++) {
    if (!s->cfg.tensors[t].sparse) continue;
    const state_rows *r = &s->rows[i++];
    if (!optim_all_finite(r->params, r->m * s->cfg.tensors[t].dim, &where)) return false;
  }
  for (int b = 0; b < OPTIM_NBUF; b++)
    if ((fz_written(s) & (1u << b)) && !optim_all_finite(s->buf[b], s->cfg.n, &where)) return false;
  return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  instance_state s;
  if (size >= 8 && !memcmp(data, "DESCENTS", 8)) {
    memset(&s, 0xA5, sizeof s);
    derr e = {0};
    int rc = persist_decode(data, size, &s, &e);
    if (rc < 0) {
      FUZZ_CHECK(e.code == -rc && e.msg[0], "refused without a message");
      FUZZ_CHECK(!s.params && !s.cfg.tensors && !s.have && !s.rows, "a refused snapshot left a state behind");
      for (int b = 0; b < OPTIM_NBUF; b++) FUZZ_CHECK(!s.buf[b]);
      return 0;
    }
    fz_cfg_valid(&s.cfg);
    size_t nb = (size_t)__builtin_popcount(s.have);
    FUZZ_CHECK(size > 16 + 4 + (nb + 1) * s.cfg.n * sizeof(float), "the arrays overrun the file");
  } else {
    fuzz_in in = {data, size};
    build_state(&in, &s);
    fz_cfg_valid(&s.cfg);
  }
  fz_snapshot_roundtrip(&s);
  if (arrays_finite(&s)) fz_json_roundtrip(&s);
  instance_state_free(&s);
  return 0;
}
