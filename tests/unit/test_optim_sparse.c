/* test_optim_sparse: the sparse kernels (optim_sparse.h): torch's refusals,
 * the row-block layout, the coalesce against a brute-force one, the row
 * kernels against the formulas written out, and every step of the real
 * torch.optim vectors in data/optim_sparse/ (see its README.md). */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optim.h"
#include "optim_sparse.h"
#include "suites.h"
#include "testutil.h"

static void parse(const char *name, optim_alg *alg, optim_hyper *h) {
  ck_assert_int_eq(optim_alg_parse(name, alg, h, NULL), 0);
}

/* What torch refuses for a sparse gradient is refused, with torch's words. */
START_TEST(check_refusals) {
  static const struct {
    const char *alg;
    double wd, mom;
    int ok;
    const char *words;
  } cases[] = {
      {"sgd", 0, 0, 1, NULL},
      {"sgd", 0.01, 0, 0, "add(sparse, dense) is not supported"},
      {"sgd", 0, 0.9, 0, "ever-growing uncoalesced"},
      {"nesterov", 0, 0.9, 0, "hyper.momentum"},
      {"adagrad", 0, 0, 1, NULL},
      {"adagrad", 0.001, 0, 0, "weight_decay option is not compatible with sparse gradients"},
      {"sparse_adam", 0, 0, 1, NULL},
      {"adam", 0, 0, 0, "Adam does not support sparse gradients, please consider SparseAdam instead"},
      {"adamw", 0, 0, 0, "AdamW does not support sparse gradients"},
      {"rmsprop", 0, 0, 0, "RMSprop does not support sparse gradients"},
      {"random_search", 0, 0, 0, "random_search"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    optim_alg alg;
    optim_hyper h;
    parse(cases[i].alg, &alg, &h);
    if (cases[i].wd) h.weight_decay = cases[i].wd;
    if (cases[i].mom) h.momentum = cases[i].mom;
    derr e = {0};
    int rc = optim_sparse_check(alg, &h, &e);
    if (cases[i].ok) {
      ck_assert_msg(rc == 0, "%s: %s", cases[i].alg, e.msg);
      continue;
    }
    ck_assert_int_eq(rc, -E_BAD_VALUE);
    ck_assert_int_eq(derr_status(rc), 422);
    ck_assert_msg(strstr(e.msg, cases[i].words), "%s: %s", cases[i].alg, e.msg);
  }
  /* the options torch allows for a sparse gradient */
  optim_alg alg;
  optim_hyper h;
  parse("sgd", &alg, &h);
  h.maximize = true;
  h.dampening = 0.5; /* unused without momentum, as in torch */
  ck_assert_int_eq(optim_sparse_check(alg, &h, NULL), 0);
  parse("adagrad", &alg, &h);
  h.lr_decay = 0.1, h.initial_accumulator_value = 0.5, h.eps = 1e-5, h.maximize = true;
  ck_assert_int_eq(optim_sparse_check(alg, &h, NULL), 0);
  /* sparse_adam refuses dense tensors; the others take them */
  derr e = {0};
  ck_assert_int_eq(optim_sparse_check_dense(OPTIM_SPARSE_ADAM, &e), -E_BAD_VALUE);
  ck_assert(strstr(e.msg, "SparseAdam does not support dense gradients"));
  ck_assert_int_eq(optim_sparse_check_dense(OPTIM_ADAGRAD, NULL), 0);
  ck_assert_int_eq(optim_sparse_check_dense(OPTIM_ADAM, NULL), 0);
  /* clipping: off is fine; on is refused with why */
  ck_assert_int_eq(optim_sparse_check_clip(0, NULL), 0);
  ck_assert_int_eq(optim_sparse_check_clip(-1, NULL), 0);
  ck_assert_int_eq(optim_sparse_check_clip(1.0, &e), -E_BAD_VALUE);
  ck_assert(strstr(e.msg, "clip_grad_norm: not with sparse tensors"));
}
END_TEST

/* sparse_adam: torch.optim.SparseAdam's defaults, names and ValueErrors. */
START_TEST(sparse_adam_hyper) {
  optim_alg alg;
  optim_hyper h;
  parse("Sparse_Adam", &alg, &h);
  ck_assert_int_eq(alg, OPTIM_SPARSE_ADAM);
  parse("sparse_adam", &alg, &h);
  ck_assert_int_eq(alg, OPTIM_SPARSE_ADAM);
  ck_assert_str_eq(optim_alg_name(alg), "sparse_adam");
  ck_assert(h.lr == 1e-3 && h.eps == 1e-8 && h.betas[0] == 0.9 && h.betas[1] == 0.999 && !h.maximize);
  ck_assert(h.weight_decay == 0);
  ck_assert_int_eq(optim_hyper_check(alg, &h, NULL), 0);
  ck_assert(optim_has_step(alg));
  ck_assert_uint_eq(optim_buffers(alg, &h), 1u << OPTIM_BUF_EXP_AVG | 1u << OPTIM_BUF_EXP_AVG_SQ);
  /* which hyperparameters it takes: lr, betas, eps, maximize */
  int takes = 0;
  for (const optim_hyper_field *f = optim_hyper_fields; f->name; f++)
    if (f->algs & OPTIM_A(OPTIM_SPARSE_ADAM)) {
      takes++;
      ck_assert_msg(strcmp(f->name, "lr") == 0 || strcmp(f->name, "betas") == 0 || strcmp(f->name, "eps") == 0 ||
                        strcmp(f->name, "maximize") == 0,
                    "%s", f->name);
    }
  ck_assert_int_eq(takes, 4);
  static const struct {
    double lr, eps, b0, b1;
    const char *words;
  } bad[] = {
      {0.0, 1e-8, 0.9, 0.999, "hyper.lr: invalid learning rate 0"},
      {-1, 1e-8, 0.9, 0.999, "hyper.lr: invalid learning rate -1"},
      {1e-3, 0.0, 0.9, 0.999, "hyper.eps: invalid epsilon value 0"},
      {1e-3, 1e-8, 1.0, 0.999, "invalid beta parameter at index 0: 1"},
      {1e-3, 1e-8, 0.9, -0.1, "invalid beta parameter at index 1: -0.1"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    h.lr = bad[i].lr, h.eps = bad[i].eps, h.betas[0] = bad[i].b0, h.betas[1] = bad[i].b1;
    derr e = {0};
    ck_assert_int_eq(optim_hyper_check(alg, &h, &e), -E_BAD_VALUE);
    ck_assert_msg(strstr(e.msg, bad[i].words), "%s", e.msg);
  }
  /* dense optim_apply is never asked to run it, and changes nothing if it is */
  parse("sparse_adam", &alg, &h);
  float p[3] = {1, 2, 3}, g[3] = {1, 1, 1}, m[3] = {0}, v[3] = {0};
  float *buf[OPTIM_NBUF] = {0};
  buf[OPTIM_BUF_EXP_AVG] = m, buf[OPTIM_BUF_EXP_AVG_SQ] = v;
  optim_plan pl;
  optim_plan_init(&pl, alg, &h, h.lr, 1, 0, 1.0f);
  optim_apply(&pl, p, g, buf, 3, false);
  ck_assert(p[0] == 1 && p[1] == 2 && p[2] == 3 && m[0] == 0 && v[0] == 0);
}
END_TEST

/* A row block: D params, then D floats per buffer in enum optim_buf order. */
START_TEST(row_layout) {
  optim_alg alg;
  optim_hyper h;
  parse("sgd", &alg, &h);
  ck_assert_uint_eq(optim_sparse_row_floats(alg, &h, 8), 8);
  ck_assert_int_eq(optim_sparse_buf_offset(alg, &h, 8, OPTIM_BUF_MOMENTUM), -1);
  parse("adagrad", &alg, &h);
  ck_assert_uint_eq(optim_sparse_row_floats(alg, &h, 8), 16);
  ck_assert_int_eq(optim_sparse_buf_offset(alg, &h, 8, OPTIM_BUF_SUM), 8);
  ck_assert_int_eq(optim_sparse_buf_offset(alg, &h, 8, OPTIM_BUF_EXP_AVG), -1);
  parse("sparse_adam", &alg, &h);
  ck_assert_uint_eq(optim_sparse_row_floats(alg, &h, 5), 15);
  ck_assert_int_eq(optim_sparse_buf_offset(alg, &h, 5, OPTIM_BUF_EXP_AVG), 5);
  ck_assert_int_eq(optim_sparse_buf_offset(alg, &h, 5, OPTIM_BUF_EXP_AVG_SQ), 10);
  ck_assert_int_eq(optim_sparse_buf_offset(alg, &h, 5, OPTIM_NBUF), -1);
  ck_assert(optim_sparse_coalesces(OPTIM_ADAGRAD) && optim_sparse_coalesces(OPTIM_SPARSE_ADAM));
  ck_assert(!optim_sparse_coalesces(OPTIM_SGD));
}
END_TEST

static uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  return x;
}

struct pair {
  uint64_t row;
  size_t idx;
};

static int pair_cmp(const void *a, const void *b) {
  const struct pair *x = a, *y = b;
  if (x->row != y->row) return x->row < y->row ? -1 : 1;
  return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* The coalesce against a brute-force one (qsort): k from 0 to 10^5, ids
 * from small, wide (2^62) and clustered ranges, with and without repeats,
 * D = 3 and 1 (the two radix sorts). */
static const size_t coalesce_k[] = {0, 1, 2, 3, 31, 32, 33, 100, 300, 4096, 100000};

START_TEST(coalesce_matches_brute_force) {
  size_t k = coalesce_k[_i % 11];
  int range = (_i / 11) % 4; /* 0: ids < 50 (many repeats), 1: < 2^62, 2: 2^40 + i, 3: sorted distinct */
  const size_t D = _i < 44 ? 3 : 1; /* the keyed radix sort (D >= 3) and the other */
  uint64_t *rows = malloc((k + 1) * 8), *ur = malloc((k + 1) * 8), *br = malloc((k + 1) * 8);
  float *g = malloc((k * D + 1) * 4), *ug = malloc((k * D + 1) * 4), *bg = malloc((k * D + 1) * 4);
  uint32_t *order = malloc((k + 1) * 4);
  for (size_t i = 0; i < k; i++) {
    uint64_t r = mix(i + 77 * (uint64_t)_i);
    rows[i] = range == 0 ? r % 50 : range == 1 ? r >> 2 : range == 2 ? (1ULL << 40) + r % (k + 1) : 3 * i + 1;
    for (size_t j = 0; j < D; j++) g[i * D + j] = (float)((mix(i * D + j) % 2001)) / 64.0f - 15.0f;
  }
  /* brute force: qsort (row, index) pairs, then sum each run in index order */
  struct pair *pr = malloc((k + 1) * sizeof *pr);
  for (size_t i = 0; i < k; i++) pr[i].row = rows[i], pr[i].idx = i;
  qsort(pr, k, sizeof *pr, pair_cmp);
  size_t bm = 0;
  for (size_t i = 0; i < k; i++) {
    const float *src = g + pr[i].idx * D;
    if (bm > 0 && br[bm - 1] == pr[i].row) {
      for (size_t j = 0; j < D; j++) bg[(bm - 1) * D + j] += src[j];
      continue;
    }
    br[bm] = pr[i].row;
    memcpy(bg + bm * D, src, D * 4);
    bm++;
  }
  free(pr);
  size_t m = optim_sparse_coalesce(rows, g, k, D, ur, ug, order);
  ck_assert_uint_eq(m, bm);
  ck_assert(m == 0 || memcmp(ur, br, m * 8) == 0);
  ck_assert(m == 0 || memcmp(ug, bg, m * D * 4) == 0);
  free(rows), free(ur), free(br), free(g), free(ug), free(bg), free(order);
}
END_TEST

/* Two copies are summed g1 + g2 whatever the order sent; three in order. */
START_TEST(coalesce_order) {
  uint64_t rows[5] = {9, 4, 9, 4, 4}, ur[5];
  float g[5] = {1e8f, 1.0f, 1.0f, -1e8f, 1e8f}, ug[5];
  uint32_t order[5];
  ck_assert_uint_eq(optim_sparse_coalesce(rows, g, 5, 1, ur, ug, order), 2);
  ck_assert(ur[0] == 4 && ur[1] == 9);
  ck_assert(ug[0] == (1.0f + -1e8f) + 1e8f); /* 0: in order, not 1 */
  ck_assert(ug[1] == 1e8f + 1.0f);
  /* 17 and more entries with a row of 3+ copies: torch's order, not the
   * order sent (data/optim_sparse/coalesce/torch.json checks it against torch) */
  uint64_t same[17], us[17];
  float gs[17], ugs[17], in_order = 0;
  uint32_t ord[17];
  for (int i = 0; i < 17; i++) same[i] = 5, gs[i] = i % 2 ? 1e8f : (float)i, in_order += gs[i];
  ck_assert_uint_eq(optim_sparse_coalesce(same, gs, 17, 1, us, ugs, ord), 1);
  ck_assert(us[0] == 5 && ugs[0] != in_order);
}
END_TEST

/* Each row kernel is the formula torch runs, written out per element; rows
 * repeated in sgd are applied one entry at a time; out gets the rows'
 * values after the whole step; rows not pushed do not change. */
START_TEST(kernels_match_formulas) {
  static const size_t Ds[] = {1, 3, 8, 17, 64};
  size_t D = Ds[_i % 5];
  int variant = _i / 5; /* bit 0: maximize, bit 1: clip scale */
  const size_t V = 6, k = 5;
  uint64_t rows[5] = {4, 1, 4, 5, 2};
  static const char *algs[] = {"sgd", "adagrad", "sparse_adam"};
  for (int a = 0; a < 3; a++) {
    optim_alg alg;
    optim_hyper h;
    parse(algs[a], &alg, &h);
    h.maximize = variant & 1;
    if (alg == OPTIM_ADAGRAD) h.lr_decay = 0.1, h.initial_accumulator_value = 0.25;
    float gs = variant & 2 ? 0.75f : 1.0f;
    size_t rf = optim_sparse_row_floats(alg, &h, D);
    float *tab = malloc(V * rf * 4), *want = malloc(V * rf * 4), *g = malloc(k * D * 4), *out = malloc(k * D * 4);
    for (size_t i = 0; i < V * rf; i++) tab[i] = (float)(mix(i) % 1000) / 250.0f - 2.0f;
    for (size_t r = 0; r < V; r++)
      for (size_t j = D; j < rf; j++) tab[r * rf + j] = fabsf(tab[r * rf + j]); /* sum, v >= 0 */
    memcpy(want, tab, V * rf * 4);
    for (uint64_t step = 1; step <= 3; step++) {
      for (size_t i = 0; i < k * D; i++) g[i] = (float)(mix(i + 1000 * step) % 1000) / 100.0f - 5.0f;
      uint64_t ur[5];
      float ug[5 * 64];
      uint32_t order[5];
      size_t n = k;
      const uint64_t *ids = rows;
      const float *gg = g;
      if (optim_sparse_coalesces(alg)) {
        n = optim_sparse_coalesce(rows, g, k, D, ur, ug, order);
        ids = ur, gg = ug;
      }
      float *blk[5];
      for (size_t i = 0; i < n; i++) blk[i] = tab + ids[i] * rf;
      optim_plan pl;
      optim_plan_init(&pl, alg, &h, h.lr * (double)step, step, 0, gs);
      optim_sparse_apply(&pl, blk, gg, n, D, out);
      double lr = h.lr * (double)step;
      for (size_t i = 0; i < n; i++) {
        float *w = want + ids[i] * rf;
        for (size_t j = 0; j < D; j++) {
          float d = gg[i * D + j] * (h.maximize ? -gs : gs);
          if (alg == OPTIM_SGD) {
            w[j] = fmaf(d, (float)-lr, w[j]);
          } else if (alg == OPTIM_ADAGRAD) {
            float sq = d * d;
            w[D + j] = w[D + j] + sq;
            float std = sqrtf(w[D + j]) + (float)h.eps;
            w[j] = fmaf(d / std, (float)(-(lr / (1 + (double)(step - 1) * h.lr_decay))), w[j]);
          } else {
            double bc1 = 1 - pow(0.9, (double)step), bc2 = 1 - pow(0.999, (double)step);
            float um = (d - w[D + j]) * (float)(1 - 0.9);
            float sq = d * d;
            float uv = (sq - w[2 * D + j]) * (float)(1 - 0.999);
            w[D + j] = um + w[D + j];
            w[2 * D + j] = uv + w[2 * D + j];
            float q = w[D + j] / (sqrtf(w[2 * D + j]) + (float)1e-8);
            w[j] = w[j] + (float)(-(lr * sqrt(bc2) / bc1)) * q;
          }
        }
      }
      ck_assert_msg(memcmp(tab, want, V * rf * 4) == 0, "%s D=%zu variant %d step %d", algs[a], D, variant,
                    (int)step);
      for (size_t i = 0; i < n; i++) ck_assert(memcmp(out + i * D, tab + ids[i] * rf, D * 4) == 0);
    }
    free(tab), free(want), free(g), free(out);
  }
}
END_TEST


/* ---- the torch vectors (data/optim_sparse/, format in its README.md) ------ */

static const char *const vector_names[] = {
    "sgd_plain",           "sgd_maximize_cosine",      "adagrad_default",        "adagrad_decay",
    "adagrad_maximize_step", "sparse_adam_default",    "sparse_adam_betas_eps",  "sparse_adam_maximize_exp",
    "sparse_adam_two_tables", "mixed_adagrad",         "mixed_sgd",
};
#define NVECTORS (sizeof vector_names / sizeof *vector_names)

/* One tensor of a case: a sparse table (V row blocks of rf floats) or a
 * dense vector (n params + a buffer array each). */
typedef struct vtensor {
  const char *name;
  bool sparse;
  size_t V, D, rf, n;
  float *tab;              /* sparse: V * rf */
  float *p, *buf[OPTIM_NBUF]; /* dense */
  float *S, *Sst;          /* tolerance scales: params, state (per element) */
} vtensor;

static void rows2d(json_t *a, float *out, size_t V, size_t D, size_t stride) {
  ck_assert_msg(json_is_array(a) && json_array_size(a) == V, "%zu rows expected", V);
  for (size_t r = 0; r < V; r++) json_floats(json_array_get(a, r), out + r * stride, D);
}

static void load_hyper(json_t *j, optim_alg *alg, optim_hyper *h) {
  parse(json_string_value(json_object_get(j, "algorithm")), alg, h);
  const char *k;
  json_t *v;
  json_object_foreach(json_object_get(j, "hyper"), k, v) {
    const optim_hyper_field *f = optim_hyper_fields;
    while (f->name && strcmp(f->name, k) != 0) f++;
    ck_assert_msg(f->name && (f->algs & OPTIM_A(*alg)), "hyper %s", k);
    char *base = (char *)h + f->offset;
    if (f->kind == OPTIM_HK_NUM) *(double *)base = json_number_value(v);
    else if (f->kind == OPTIM_HK_BOOL) *(bool *)base = json_is_true(v);
    else if (f->kind == OPTIM_HK_PAIR)
      for (int i = 0; i < 2; i++) ((double *)base)[i] = json_number_value(json_array_get(v, i));
  }
  ck_assert_int_eq(optim_hyper_check(*alg, h, NULL), 0);
  ck_assert_int_eq(optim_sparse_check(*alg, h, NULL), 0);
}

static void vt_init(vtensor *t, json_t *desc, json_t *init, optim_alg alg, const optim_hyper *h) {
  memset(t, 0, sizeof *t);
  t->name = json_string_value(json_object_get(desc, "name"));
  t->sparse = json_is_true(json_object_get(desc, "sparse"));
  json_t *shape = json_object_get(desc, "shape");
  unsigned need = optim_buffers(alg, h);
  if (t->sparse) {
    t->V = json_integer_value(json_array_get(shape, 0));
    t->D = json_integer_value(json_array_get(shape, 1));
    t->rf = optim_sparse_row_floats(alg, h, t->D);
    t->n = t->V * t->D;
    t->tab = malloc(t->V * t->rf * sizeof(float));
    rows2d(json_object_get(init, t->name), t->tab, t->V, t->D, t->rf);
    for (int b = 0; b < OPTIM_NBUF; b++) {
      long off = optim_sparse_buf_offset(alg, h, t->D, b);
      for (size_t r = 0; off >= 0 && r < t->V; r++)
        for (size_t j = 0; j < t->D; j++) t->tab[r * t->rf + (size_t)off + j] = optim_buf_initial(alg, h, b);
    }
  } else {
    t->n = json_integer_value(json_array_get(shape, 0));
    t->p = malloc(t->n * sizeof(float));
    json_floats(json_object_get(init, t->name), t->p, t->n);
    for (int b = 0; b < OPTIM_NBUF; b++)
      if (need & (1u << b)) {
        t->buf[b] = malloc(t->n * sizeof(float));
        for (size_t i = 0; i < t->n; i++) t->buf[b][i] = optim_buf_initial(alg, h, b);
      }
  }
  t->S = calloc(t->n, sizeof(float));
  t->Sst = calloc(t->n, sizeof(float));
  for (size_t i = 0; i < t->n; i++) t->S[i] = fabsf(t->sparse ? t->tab[(i / t->D) * t->rf + i % t->D] : t->p[i]);
}

static void vt_free(vtensor *t) {
  free(t->tab), free(t->p), free(t->S), free(t->Sst);
  for (int b = 0; b < OPTIM_NBUF; b++) free(t->buf[b]);
}

/* Element i of tensor t: param (buf < 0) or buffer buf. */
static float *vt_at(vtensor *t, optim_alg alg, const optim_hyper *h, int buf, size_t i) {
  if (!t->sparse) return buf < 0 ? &t->p[i] : &t->buf[buf][i];
  long off = buf < 0 ? 0 : optim_sparse_buf_offset(alg, h, t->D, buf);
  return &t->tab[(i / t->D) * t->rf + (size_t)off + i % t->D];
}

/* One step of a sparse tensor: coalesce when the algorithm does, then apply
 * (variant 1: out = the gradient buffer, in two calls); the reply rows must
 * be the rows' values after the step.  Returns the rows' max |g| into Sst. */
static void vt_step_sparse(vtensor *t, const optim_plan *pl, json_t *gj, int variant) {
  json_t *rows = json_object_get(gj, "rows");
  size_t k = json_array_size(rows), D = t->D;
  uint64_t *ids = malloc((k + 1) * 8), *ur = malloc((k + 1) * 8);
  float *g = malloc((k * D + 1) * 4), *ug = malloc((k * D + 1) * 4), *out = malloc((k * D + 1) * 4);
  uint32_t *order = malloc((k + 1) * 4);
  float **blk = malloc((k + 1) * sizeof *blk);
  for (size_t i = 0; i < k; i++) ids[i] = (uint64_t)json_integer_value(json_array_get(rows, i));
  rows2d(json_object_get(gj, "values"), g, k, D, D);
  for (size_t i = 0; i < k * D; i++) {
    size_t e = ids[i / D] * D + i % D;
    t->Sst[e] = fmaxf(t->Sst[e], fabsf(g[i]));
  }
  size_t m = k;
  const uint64_t *r = ids;
  float *gg = g;
  if (optim_sparse_coalesces(pl->alg)) {
    m = optim_sparse_coalesce(ids, g, k, D, ur, ug, order);
    r = ur, gg = ug;
    for (size_t i = 0; i < m * D; i++) {
      size_t e = ur[i / D] * D + i % D;
      t->Sst[e] = fmaxf(t->Sst[e], fabsf(ug[i]));
    }
  }
  for (size_t i = 0; i < m; i++) {
    ck_assert(r[i] < t->V);
    blk[i] = t->tab + r[i] * t->rf;
  }
  if (variant == 0) {
    optim_sparse_apply(pl, blk, gg, m, D, out);
  } else {
    size_t h = m / 2;
    optim_sparse_apply(pl, blk, gg, h, D, gg);
    optim_sparse_apply(pl, blk + h, gg + h * D, m - h, D, gg + h * D);
    if (pl->alg == OPTIM_SGD) /* the first half's rows may repeat in the second */
      for (size_t i = 0; i < h; i++) memcpy(gg + i * D, blk[i], D * 4);
    memcpy(out, gg, m * D * 4);
  }
  for (size_t i = 0; i < m; i++) CHECK(memcmp(out + i * D, blk[i], D * 4) == 0, "%s: reply row %zu", t->name, i);
  free(ids), free(ur), free(g), free(ug), free(out), free(order), free(blk);
}

static bool row_listed(json_t *list, size_t row) {
  for (size_t i = 0; i < json_array_size(list); i++)
    if ((size_t)json_integer_value(json_array_get(list, i)) == row) return true;
  return false;
}

/* Checks params and state of t after a step against torch: every element
 * within tolerance, every bit where the vector says torch's order is
 * defined.  Returns the number of elements not bit-identical. */
static size_t vt_check(vtensor *t, json_t *st, optim_alg alg, const optim_hyper *h, const char *cs, size_t step) {
  json_t *inexact = json_object_get(json_object_get(st, "inexact_rows"), t->name);
  json_t *want_p = json_object_get(json_object_get(st, "params"), t->name);
  json_t *want_s = json_object_get(json_object_get(st, "state"), t->name);
  float *w = malloc(t->n * sizeof(float) + 1);
  size_t differ = 0;
  for (int b = -1; b < OPTIM_NBUF; b++) {
    if (b >= 0 && !(optim_buffers(alg, h) & (1u << b))) continue;
    json_t *a = b < 0 ? want_p : json_object_get(want_s, optim_buf_name(b));
    ck_assert_msg(a, "%s step %zu: %s missing", cs, step, b < 0 ? "params" : optim_buf_name(b));
    if (t->sparse) rows2d(a, w, t->V, t->D, t->D);
    else json_floats(a, w, t->n);
    for (size_t i = 0; i < t->n; i++) {
      float ours = *vt_at(t, alg, h, b, i);
      float S;
      if (b < 0) S = t->S[i] = fmaxf(t->S[i], fabsf(w[i]));
      else S = fmaxf(t->Sst[i], fabsf(w[i]));
      CHECK(within_tol(ours, w[i], S), "%s step %zu %s %s[%zu]: ours %.9g torch %.9g", cs, step, t->name,
            b < 0 ? "param" : optim_buf_name(b), i, ours, w[i]);
      if (memcmp(&ours, &w[i], 4) == 0) continue;
      differ++;
      CHECK(t->sparse && row_listed(inexact, i / t->D), "%s step %zu %s %s[%zu]: ours %.9g torch %.9g not bit-identical",
            cs, step, t->name, b < 0 ? "param" : optim_buf_name(b), i, ours, w[i]);
    }
  }
  json_t *sj = json_object_get(want_s, "step");
  ck_assert_int_eq(sj != NULL, optim_has_step(alg));
  if (sj) ck_assert_int_eq(json_integer_value(sj), step);
  free(w);
  return differ;
}

START_TEST(torch_sparse_vectors) {
  const char *cs = vector_names[_i % NVECTORS];
  int variant = (int)(_i / NVECTORS);
  char path[256];
  snprintf(path, sizeof path, "data/optim_sparse/%s.json", cs);
  json_error_t err;
  json_t *j = json_load_file(path, 0, &err);
  ck_assert_msg(j, "%s: %s", path, err.text);
  optim_alg alg;
  optim_hyper h;
  load_hyper(j, &alg, &h);
  json_t *descs = json_object_get(j, "tensors"), *steps = json_object_get(j, "steps");
  size_t nt = json_array_size(descs), T = json_array_size(steps), differ = 0;
  ck_assert(nt >= 1 && nt <= 4 && T >= 20);
  vtensor vt[4];
  for (size_t i = 0; i < nt; i++) vt_init(&vt[i], json_array_get(descs, i), json_object_get(j, "init"), alg, &h);
  for (size_t t = 1; t <= T; t++) {
    json_t *st = json_array_get(steps, t - 1), *grads = json_object_get(st, "grads");
    optim_plan pl;
    optim_plan_init(&pl, alg, &h, json_number_value(json_object_get(st, "lr")), t, 0, 1.0f);
    for (size_t i = 0; i < nt; i++) {
      json_t *gj = json_object_get(grads, vt[i].name);
      if (vt[i].sparse) {
        vt_step_sparse(&vt[i], &pl, gj, variant);
        continue;
      }
      float *g = malloc(vt[i].n * sizeof(float));
      json_floats(gj, g, vt[i].n);
      for (size_t e = 0; e < vt[i].n; e++) vt[i].Sst[e] = fmaxf(vt[i].Sst[e], fabsf(g[e]));
      optim_apply(&pl, vt[i].p, g, vt[i].buf, vt[i].n, false);
      free(g);
    }
    for (size_t i = 0; i < nt; i++) differ += vt_check(&vt[i], st, alg, &h, cs, t);
  }
  for (size_t i = 0; i < nt; i++) vt_free(&vt[i]);
  json_decref(j);
  /* only rows summed from 3+ copies may differ; report how many did */
  if (differ) fprintf(stderr, "%s: %zu elements within tolerance, not bit-identical\n", cs, differ);
}
END_TEST

/* torch's own coalesce (data/optim_sparse/coalesce/torch.json): the same rows and
 * the same bits, for any number of copies (std::sort's summation order). */
START_TEST(coalesce_matches_torch) {
  json_error_t err;
  json_t *j = json_load_file("data/optim_sparse/coalesce/torch.json", 0, &err);
  ck_assert_msg(j, "coalesce/torch.json: %s", err.text);
  json_t *cases = json_object_get(j, "cases");
  ck_assert(json_array_size(cases) >= 5);
  for (size_t c = 0; c < json_array_size(cases); c++) {
    json_t *cj = json_array_get(cases, c), *rj = json_object_get(cj, "rows"), *cr = json_object_get(cj, "coalesced_rows");
    size_t k = json_array_size(rj), D = json_integer_value(json_object_get(cj, "D")), m = json_array_size(cr);
    uint64_t *rows = malloc(k * 8), *ur = malloc(k * 8);
    float *g = malloc(k * D * 4), *ug = malloc(k * D * 4), *want = malloc(m * D * 4 + 1);
    uint32_t *order = malloc(k * 4);
    for (size_t i = 0; i < k; i++) rows[i] = (uint64_t)json_integer_value(json_array_get(rj, i));
    rows2d(json_object_get(cj, "values"), g, k, D, D);
    rows2d(json_object_get(cj, "coalesced_values"), want, m, D, D);
    const char *name = json_string_value(json_object_get(cj, "name"));
    ck_assert_uint_eq(optim_sparse_coalesce(rows, g, k, D, ur, ug, order), m);
    for (size_t i = 0; i < m; i++)
      ck_assert_msg(ur[i] == (uint64_t)json_integer_value(json_array_get(cr, i)), "%s: row %zu", name, i);
    for (size_t i = 0; i < m * D; i++)
      CHECK(memcmp(&ug[i], &want[i], 4) == 0, "%s: value %zu: ours %.9g torch %.9g", name, i, ug[i], want[i]);
    free(rows), free(ur), free(g), free(ug), free(want), free(order);
  }
  json_decref(j);
}
END_TEST

Suite *suite_optim_sparse(void) {
  Suite *s = suite_create("optim_sparse");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, check_refusals);
  tcase_add_test(tc, sparse_adam_hyper);
  tcase_add_test(tc, row_layout);
  tcase_add_loop_test(tc, coalesce_matches_brute_force, 0, 88);
  tcase_add_test(tc, coalesce_order);
  tcase_add_loop_test(tc, kernels_match_formulas, 0, 20);
  suite_add_tcase(s, tc);
  TCase *tv = tcase_create("torch");
  tcase_add_loop_test(tv, torch_sparse_vectors, 0, 2 * NVECTORS);
  tcase_add_test(tv, coalesce_matches_torch);
  suite_add_tcase(s, tv);
  return s;
}
