/* test_rows: sparse tensors in the state layer.  The row store itself
 * (growth past many rehashes with stable blocks, ids up to 2^62, ascending
 * iteration, seeded init that depends only on (seed, logical row, column)),
 * then through instance_push: sgd applies entries in the order sent while
 * adagrad coalesces, the quota refuses a push whole, rows pulled without
 * being held, sync rounds combining rows in worker-name order,
 * export/import and snapshots (persist) continuing bit for bit.  The test thread drives everything. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "instance.h"
#include "mem.h"
#include "optim.h"
#include "persist.h"
#include "registry.h"
#include "rng.h"
#include "rows.h"
#include "statefix.h"
#include "suites.h"
#include "testutil.h"

static fix F;
static void setup(void) { fix_init(&F); }
static void teardown(void) { fix_cleanup(&F); }

static tensor sparse_tensor(const char *name, uint64_t V, size_t D, uint64_t origin, tensor_init init) {
  tensor t = {0};
  snprintf(t.name, sizeof t.name, "%s", name);
  t.ndim = 2;
  t.shape[0] = V;
  t.shape[1] = D;
  t.sparse = true;
  t.vrows = V;
  t.dim = D;
  t.origin = origin;
  t.init = init;
  return t;
}

/* ---- the row store ------------------------------------------------------------- */

START_TEST(store_grows_and_keeps_blocks) {
  tensor tn = sparse_tensor("E", (uint64_t)1 << 62, 3, 0, (tensor_init){.kind = TENSOR_INIT_CONSTANT, .a = 0.5});
  optim_hyper h;
  optim_alg alg;
  derr e = {0};
  ck_assert_int_eq(optim_alg_parse("adagrad", &alg, &h, &e), 0);
  h.initial_accumulator_value = 0.25;
  rows t;
  rows_init(&t, &tn, alg, &h);
  ck_assert_uint_eq(t.blk, 6);
  enum { N = 20000 };
  static float *blk[N];
  uint64_t top = ((uint64_t)1 << 62) - 1;
  for (int i = 0; i < N; i++) {
    /* ids that share low bits and the largest ones: probing and the 2^62 edge */
    uint64_t id = i % 2 ? top - (uint64_t)i * 4096 : (uint64_t)i << 40;
    ck_assert_ptr_null(rows_find(&t, id));
    ck_assert_int_eq(rows_reserve(&t, 1), 0);
    bool created = false;
    blk[i] = rows_get(&t, id, &created);
    CHECK(created, "row %d created", i);
    CHECK(blk[i][0] == 0.5f && blk[i][2] == 0.5f && blk[i][3] == 0.25f && blk[i][5] == 0.25f, "init of %d", i);
    blk[i][1] = (float)i; /* a mark to find again */
  }
  ck_assert_uint_eq(t.count, N);
  ck_assert_uint_eq(rows_floats(&t), (uint64_t)N * 6);
  for (int i = 0; i < N; i++) {
    uint64_t id = i % 2 ? top - (uint64_t)i * 4096 : (uint64_t)i << 40;
    float *b = rows_find(&t, id);
    CHECK(b == blk[i] && b[1] == (float)i, "row %d moved or lost", i);
  }
  ck_assert_ptr_null(rows_find(&t, 12345));
  uint64_t probe[3] = {0, 12345, top - 4096};
  ck_assert_uint_eq(rows_count_new(&t, probe, 3), 1);
  /* memory: blocks plus a hash at a load of at least 3/8 */
  ck_assert_uint_le(rows_bytes(&t), (size_t)N * 6 * 4 + (size_t)N * 16 * 8 / 3 + ((size_t)4 << 20));
  /* ascending order */
  uint64_t *ids = malloc(N * sizeof *ids);
  float **bl = malloc(N * sizeof *bl);
  rows_slot *tmp = malloc(2 * N * sizeof *tmp);
  ck_assert_uint_eq(rows_sorted(&t, ids, bl, tmp), N);
  for (int i = 1; i < N; i++) CHECK(ids[i - 1] < ids[i], "order at %d", i);
  ck_assert_uint_eq(ids[0], 0);
  ck_assert_uint_eq(ids[N - 1], top - 4096);
  ck_assert(bl[N - 1] == blk[1]);
  free(ids);
  free(bl);
  free(tmp);
  rows_free(&t);
}
END_TEST

START_TEST(init_depends_on_logical_row_and_column_only) {
  tensor_init nrm = {.kind = TENSOR_INIT_NORMAL, .a = 0.5, .b = 2.0, .seed = 7};
  tensor a = sparse_tensor("E", (uint64_t)1 << 62, 8, 0, nrm);
  tensor b = sparse_tensor("E", 1000, 3, 5, nrm); /* a shard starting at row 5, fewer columns */
  optim_hyper h;
  optim_alg alg;
  derr e = {0};
  ck_assert_int_eq(optim_alg_parse("sgd", &alg, &h, &e), 0);
  rows ta, tb;
  rows_init(&ta, &a, alg, &h);
  rows_init(&tb, &b, alg, &h);
  float va[8], vb[3];
  uint64_t big = ((uint64_t)1 << 62) - 3;
  rows_read(&ta, big, va);
  for (int c = 0; c < 8; c++) {
    float want = (float)(0.5 + 2.0 * rng_normal(7, big, (uint64_t)c));
    ck_assert(va[c] == want);
  }
  rows_read(&ta, 905, va);
  rows_read(&tb, 900, vb); /* logical row 905 */
  ck_floats_bits(vb, va, 3, "row 905 on a shard");
  ck_assert(va[0] != va[1]);
  /* held rows start at the same value, and reading allocates nothing */
  ck_assert_uint_eq(rows_bytes(&tb), 0);
  ck_assert_int_eq(rows_reserve(&tb, 1), 0);
  float *blk = rows_get(&tb, 900, NULL);
  ck_floats_bits(blk, va, 3, "held row 905");
  tensor u = sparse_tensor("U", 10, 4, 0, (tensor_init){.kind = TENSOR_INIT_UNIFORM, .a = -1, .b = 1, .seed = 3});
  rows tu;
  rows_init(&tu, &u, alg, &h);
  float vu[4];
  rows_read(&tu, 9, vu);
  for (int c = 0; c < 4; c++) {
    float want = (float)(-1.0 + 2.0 * (rng_uniform(3, 9, (uint64_t)c) - 0x1p-53));
    ck_assert(vu[c] == want);
  }
  rows_free(&ta);
  rows_free(&tb);
  rows_free(&tu);
}
END_TEST

/* ---- instances with sparse tensors ---------------------------------------------- */

typedef struct sp_spec {
  const char *alg;
  double lr;
  size_t ndense; /* a dense tensor "w" of this size first (0: none) */
  uint64_t V;
  size_t D;
  tensor_init init;
  int mode;
  uint32_t workers;
  int aggregate;
  registry *reg;
} sp_spec;

static void sp_state(instance_state *s, const sp_spec *sp) {
  memset(s, 0, sizeof *s);
  instance_cfg *c = &s->cfg;
  derr e = {0};
  snprintf(c->name, sizeof c->name, "sp");
  ck_assert_int_eq(optim_alg_parse(sp->alg, &c->alg, &c->hyper, &e), 0);
  c->hyper.lr = sp->lr ? sp->lr : 1.0;
  c->mode = sp->mode;
  c->max_staleness = -1;
  c->workers = sp->workers;
  c->aggregate = sp->aggregate;
  c->tensors = mem_xcalloc(2, sizeof(tensor));
  if (sp->ndense) {
    tensor *w = &c->tensors[c->ntensors++];
    snprintf(w->name, sizeof w->name, "w");
    w->ndim = 1;
    w->shape[0] = w->count = sp->ndense;
    c->n = sp->ndense;
  }
  c->tensors[c->ntensors] = sparse_tensor("E", sp->V ? sp->V : 100, sp->D ? sp->D : 2, 0, sp->init);
  c->tensors[c->ntensors].offset = c->n;
  c->ntensors++;
  s->params = mem_alloc_floats(c->n);
  s->best_loss = INFINITY;
  s->next_id = 1;
}

static instance *sp_instance(const sp_spec *sp) {
  instance_state s;
  sp_state(&s, sp);
  instance_env env = F.env;
  env.reg = sp->reg;
  instance *in = instance_from_state(&s, &env);
  instance_state_free(&s);
  ck_assert_ptr_nonnull(in);
  return in;
}

static int sp_tensor(instance *in) { return instance_layout_tensor(instance_layout_of(in), "E"); }

/* Pushes k rows (D floats each) to E, and dense g if any; returns the status. */
static int sp_push(instance *in, twaiter *t, const char *worker, const uint64_t *ids, float *vals, size_t k,
                   float *g, bool emit) {
  push_rows pr = {.k = k, .rows = ids, .vals = vals};
  push p = fix_push(worker, -1, g);
  p.rows = &pr;
  p.emit = emit;
  return tw_push(in, t, p);
}

START_TEST(sgd_applies_in_the_order_sent) {
  instance *in = sp_instance(&(sp_spec){.alg = "sgd", .D = 2, .init = {.kind = TENSOR_INIT_CONSTANT, .a = 1}});
  twaiter t;
  tw_init(&t);
  /* row 5 twice: 1 - 1e8 rounds to -1e8, then + 1e8 gives 0 (coalesced first it would stay 1) */
  uint64_t ids[3] = {5, 2, 5};
  float v[6] = {1e8f, 2, 4, 8, -1e8f, 32};
  ck_assert_int_eq(sp_push(in, &t, NULL, ids, v, 3, NULL, true), PUSH_DONE);
  ck_assert_int_eq(t.w.code, 0);
  ck_assert_uint_eq(t.w.step, 1);
  const float want[6] = {0, -33, -3, -7, 0, -33};
  ck_floats_bits(v, want, 6, "emitted rows in sent order");
  float got[6];
  uint64_t q[3] = {2, 5, 99};
  ck_assert_uint_eq(instance_read_rows(in, sp_tensor(in), q, 3, got), 1);
  const float held[6] = {-3, -7, 0, -33, 1, 1};
  ck_floats_bits(got, held, 6, "rows read (99 untouched: its init)");
  struct instance_stats st;
  uint64_t step;
  instance_stats_copy(in, &st, &step);
  ck_assert_uint_eq(st.rows_held, 2);
  ck_assert_uint_eq(st.rows_touched, 2);
  ck_assert_uint_eq(instance_floats(in), 4); /* 2 rows of 2 params, no buffers */
  history_entry *h;
  ck_assert_uint_eq(instance_history_copy(in, &h), 1);
  ck_assert_uint_eq(h[0].rows_touched, 2);
  /* the norm is over the coalesced gradient: row 5 sums to (0, 34), row 2 is (4, 8) */
  ck_assert(h[0].grad_norm == sqrt(34.0 * 34 + 16 + 64));
  free(h);
  tw_cleanup(&t);
  instance_unref(in);
}
END_TEST

START_TEST(adagrad_coalesces_then_updates_once) {
  instance *in = sp_instance(&(sp_spec){.alg = "adagrad", .D = 2, .ndense = 2});
  twaiter t;
  tw_init(&t);
  uint64_t ids[3] = {7, 1, 7};
  float v[6] = {3, 1, 2, 2, 4, 1};
  float g[2] = {0, 0};
  ck_assert_int_eq(sp_push(in, &t, NULL, ids, v, 3, g, true), PUSH_DONE);
  ck_assert_int_eq(t.w.code, 0);
  /* row 7: g = (7, 2), sum = (49, 4), p = -g / (sqrt(sum) + eps) = (-1, -1); row 1 likewise */
  const float want[6] = {-1, -1, -1, -1, -1, -1};
  ck_floats_bits(v, want, 6, "emitted rows");
  instance_state s;
  ck_assert_int_eq(instance_export(in, &s), 0);
  ck_assert_ptr_nonnull(s.rows);
  ck_assert_uint_eq(s.rows[0].m, 2);
  ck_assert_uint_eq(s.rows[0].ids[0], 1);
  ck_assert_uint_eq(s.rows[0].ids[1], 7);
  const float sums[4] = {4, 4, 49, 4};
  ck_floats_bits(s.rows[0].buf[OPTIM_BUF_SUM], sums, 4, "sum");
  ck_assert_ptr_null(s.rows[0].buf[OPTIM_BUF_EXP_AVG]);
  instance_state_free(&s);
  tw_cleanup(&t);
  instance_unref(in);
}
END_TEST

START_TEST(bad_rows_change_nothing) {
  instance *in = sp_instance(&(sp_spec){.alg = "sgd", .V = 10, .D = 1});
  twaiter t;
  tw_init(&t);
  uint64_t ids[2] = {3, 10};
  float v[2] = {1, 1};
  ck_assert_int_eq(sp_push(in, &t, NULL, ids, v, 2, NULL, false), PUSH_FAILED);
  ck_outcome_err(&t, E_BAD_VALUE, "grads.E.rows[1]: row 10 is outside [0, 10)");
  ids[1] = 4;
  v[1] = NAN;
  ck_assert_int_eq(sp_push(in, &t, NULL, ids, v, 2, NULL, false), PUSH_FAILED);
  ck_outcome_err(&t, E_NOT_FINITE, "grads.E.values[1][0]: NaN or infinite");
  v[0] = v[1] = 3e38f; /* finite, but row 3 twice sums to infinity */
  ids[1] = 3;
  ck_assert_int_eq(sp_push(in, &t, NULL, ids, v, 2, NULL, false), PUSH_FAILED);
  ck_assert_int_eq(t.w.code, E_NOT_FINITE);
  instance_info info;
  instance_info_get(in, &info);
  ck_assert_uint_eq(info.step, 0);
  ck_assert_uint_eq(instance_floats(in), 0);
  tw_cleanup(&t);
  instance_unref(in);
}
END_TEST

START_TEST(quota_refuses_a_push_whole) {
  registry *reg = registry_new(4, 16);
  instance *in = sp_instance(&(sp_spec){.alg = "adagrad", .D = 2, .reg = reg}); /* 4 floats a row */
  twaiter t;
  tw_init(&t);
  uint64_t a[4] = {0, 1, 0, 2};
  float va[8] = {1, 1, 1, 1, 1, 1, 1, 1};
  ck_assert_int_eq(sp_push(in, &t, NULL, a, va, 4, NULL, false), PUSH_DONE);
  ck_assert_uint_eq(registry_floats(reg), 12);
  ck_assert_uint_eq(instance_floats(in), 12);
  float before[2], after[2];
  uint64_t zero = 0;
  instance_read_rows(in, sp_tensor(in), &zero, 1, before);
  uint64_t b[3] = {0, 7, 8}; /* two new rows: 20 > 16 */
  float vb[6] = {1, 1, 1, 1, 1, 1};
  ck_assert_int_eq(sp_push(in, &t, NULL, b, vb, 3, NULL, false), PUSH_FAILED);
  ck_assert_int_eq(t.w.code, E_QUOTA);
  ck_assert(strstr(t.w.err.msg, "2 new rows") != NULL);
  ck_assert_uint_eq(registry_floats(reg), 12);
  ck_assert_uint_eq(instance_floats(in), 12);
  instance_read_rows(in, sp_tensor(in), &zero, 1, after);
  ck_floats_bits(after, before, 2, "row 0 after a refused push");
  instance_info info;
  instance_info_get(in, &info);
  ck_assert_uint_eq(info.step, 1);
  instance_state s;
  ck_assert_int_eq(instance_export(in, &s), 0);
  ck_assert_uint_eq(s.rows[0].m, 3);
  instance_state_free(&s);
  uint64_t c[3] = {7, 0, 7}; /* one new row: exactly 16 */
  ck_assert_int_eq(sp_push(in, &t, NULL, c, vb, 3, NULL, false), PUSH_DONE);
  ck_assert_uint_eq(registry_floats(reg), 16);
  ck_assert_uint_eq(instance_floats(in), 16);
  tw_cleanup(&t);
  registry_uncharge(reg, instance_floats(in));
  instance_unref(in);
  registry_free(reg);
}
END_TEST

START_TEST(sync_round_combines_rows_in_worker_order) {
  instance *in = sp_instance(
      &(sp_spec){.alg = "sgd", .D = 1, .ndense = 1, .mode = MODE_SYNC, .workers = 2, .aggregate = AGG_MEAN});
  twaiter tb, ta;
  tw_init(&tb);
  tw_init(&ta);
  /* b first: rows 3, 1; then a: rows 3 (the sum is a's + b's whatever the arrival) */
  uint64_t ib[2] = {3, 1}, ia[2] = {3, 3};
  float vb[2] = {2, 6}, va[2] = {1, 1}, gb[1] = {4}, ga[1] = {2};
  ck_assert_int_eq(sp_push(in, &tb, "b", ib, vb, 2, gb, true), PUSH_WAITING);
  vb[0] = vb[1] = 99; /* the round kept its own copy */
  ck_assert_int_eq(sp_push(in, &ta, "a", ia, va, 2, ga, true), PUSH_DONE);
  ck_assert_int_eq(ta.w.code, 0);
  ck_assert_int_eq(tb.wakes, 1);
  ck_assert_int_eq(tb.w.code, 0);
  /* row 3: -(1 + 1 + 2) / 2 = -2; row 1: -6 / 2 = -3; w: -(2 + 4) / 2 = -3 */
  ck_assert_ptr_nonnull(tb.w.rows);
  ck_assert_uint_eq(tb.w.rows->n, 2);
  const float wb[2] = {-2, -3}, wa[2] = {-2, -2};
  ck_floats_bits(tb.w.rows->v, wb, 2, "b's rows");
  ck_floats_bits(ta.w.rows->v, wa, 2, "a's rows");
  ck_assert_float_eq(ta.w.snap->v[0], -3);
  struct instance_stats st;
  uint64_t step;
  instance_stats_copy(in, &st, &step);
  ck_assert_uint_eq(step, 1);
  ck_assert_uint_eq(st.rows_touched, 2);
  psnap_unref(ta.w.rows);
  psnap_unref(tb.w.rows);
  tw_cleanup(&ta);
  tw_cleanup(&tb);
  instance_unref(in);
}
END_TEST

START_TEST(sync_round_over_the_quota_fails_whole) {
  registry *reg = registry_new(4, 6);
  instance *in = sp_instance(&(sp_spec){.alg = "adagrad", .D = 1, .mode = MODE_SYNC, .workers = 2, .reg = reg});
  twaiter ta, tb;
  tw_init(&ta);
  tw_init(&tb);
  /* each push alone fits (2 floats a row, 6 allowed), together their 4 new rows do not */
  uint64_t ia[3] = {1, 2, 3}, ib[2] = {3, 4}, ic[1] = {2};
  float va[3] = {1, 1, 1}, vb[2] = {1, 1}, vc[1] = {1};
  ck_assert_int_eq(sp_push(in, &ta, "a", ia, va, 3, NULL, false), PUSH_WAITING);
  ck_assert_int_eq(sp_push(in, &tb, "b", ib, vb, 2, NULL, false), PUSH_FAILED);
  ck_assert_int_eq(tb.w.code, E_QUOTA);
  ck_assert_int_eq(ta.wakes, 1);
  ck_assert_int_eq(ta.w.code, E_QUOTA);
  ck_assert_ptr_null(ta.w.rows);
  ck_assert_uint_eq(registry_floats(reg), 0);
  ck_assert_uint_eq(instance_floats(in), 0);
  instance_info info;
  instance_info_get(in, &info);
  ck_assert_uint_eq(info.step, 0);
  /* the next round fits: 3 rows */
  twaiter tc, td;
  tw_init(&tc);
  tw_init(&td);
  ck_assert_int_eq(sp_push(in, &tc, "a", ia, va, 3, NULL, true), PUSH_WAITING);
  ck_assert_int_eq(sp_push(in, &td, "b", ic, vc, 1, NULL, true), PUSH_DONE);
  ck_assert_uint_eq(registry_floats(reg), 6);
  ck_assert_int_eq(tc.w.code, 0);
  ck_assert_ptr_nonnull(tc.w.rows);
  ck_assert_uint_eq(tc.w.rows->n, 3);
  psnap_unref(tc.w.rows);
  psnap_unref(td.w.rows);
  tw_cleanup(&ta);
  tw_cleanup(&tb);
  tw_cleanup(&tc);
  tw_cleanup(&td);
  registry_uncharge(reg, instance_floats(in));
  instance_unref(in);
  registry_free(reg);
}
END_TEST

/* Two instances stepped alike: their exports are equal, array by array. */
static void ck_same_state(instance *a, instance *b) {
  instance_state x, y;
  ck_assert_int_eq(instance_export(a, &x), 0);
  ck_assert_int_eq(instance_export(b, &y), 0);
  ck_assert_uint_eq(x.step, y.step);
  ck_floats_bits(y.params, x.params, x.cfg.n, "dense params");
  ck_assert_uint_eq(x.rows[0].m, y.rows[0].m);
  size_t m = x.rows[0].m, D = 3;
  ck_assert(memcmp(x.rows[0].ids, y.rows[0].ids, m * 8) == 0);
  ck_floats_bits(y.rows[0].params, x.rows[0].params, m * D, "row params");
  for (int bf = 0; bf < OPTIM_NBUF; bf++) {
    ck_assert((x.rows[0].buf[bf] == NULL) == (y.rows[0].buf[bf] == NULL));
    if (x.rows[0].buf[bf]) ck_floats_bits(y.rows[0].buf[bf], x.rows[0].buf[bf], m * D, "row buffer");
  }
  instance_state_free(&x);
  instance_state_free(&y);
}

START_TEST(export_import_continues_bit_for_bit) {
  const char *algs[2] = {"sparse_adam", "adagrad"};
  for (int a = 0; a < 2; a++) {
    sp_spec sp = {.alg = algs[a], .lr = 0.1, .D = 3, .V = (uint64_t)1 << 40,
                  .init = {.kind = TENSOR_INIT_NORMAL, .a = 0, .b = 1, .seed = 11}};
    instance *in = sp_instance(&sp);
    twaiter t;
    tw_init(&t);
    uint64_t ids[4] = {5, (uint64_t)1 << 39, 5, 77};
    float v[12];
    for (int s = 0; s < 3; s++) {
      for (int i = 0; i < 12; i++) v[i] = (float)((i * 7 + s * 3) % 11) / 8.0f - 0.6f;
      ck_assert_int_eq(sp_push(in, &t, NULL, ids + s % 2, v, 3 - s % 2, NULL, false), PUSH_DONE);
    }
    instance_state s;
    ck_assert_int_eq(instance_export(in, &s), 0);
    instance *copy = instance_from_state(&s, &F.env);
    instance_state_free(&s);
    ck_assert_ptr_nonnull(copy);
    ck_same_state(in, copy);
    for (int i = 0; i < 12; i++) v[i] = 0.3f - (float)i / 16;
    float v2[12];
    memcpy(v2, v, sizeof v);
    ck_assert_int_eq(sp_push(in, &t, NULL, ids, v, 4, NULL, true), PUSH_DONE);
    ck_assert_int_eq(sp_push(copy, &t, NULL, ids, v2, 4, NULL, true), PUSH_DONE);
    ck_floats_bits(v2, v, 12, "the next step after an import");
    ck_same_state(in, copy);
    float r1[3], r2[3];
    uint64_t un = 123456789; /* never touched: the same init in both */
    instance_read_rows(in, sp_tensor(in), &un, 1, r1);
    instance_read_rows(copy, sp_tensor(copy), &un, 1, r2);
    ck_floats_bits(r2, r1, 3, "untouched row");
    tw_cleanup(&t);
    instance_unref(in);
    instance_unref(copy);
  }
}
END_TEST

START_TEST(init_rows_are_held_from_the_start) {
  sp_spec sp = {.alg = "sgd", .D = 2};
  instance_state s;
  sp_state(&s, &sp);
  instance *in = instance_new(&s.cfg, &F.env);
  instance_state_free(&s);
  ck_assert_ptr_nonnull(in);
  uint64_t ids[2] = {9, 4};
  const float vals[4] = {1.5f, 2.5f, -1, -2};
  ck_assert_int_eq(instance_init_rows(in, sp_tensor(in), ids, 2, vals), 0);
  ck_assert_uint_eq(instance_floats(in), 4);
  float got[4];
  instance_read_rows(in, sp_tensor(in), ids, 2, got);
  ck_floats_bits(got, vals, 4, "explicit rows");
  instance_unref(in);
}
END_TEST

/* ---- snapshots ------------------------------------------------------------------ */

static uint32_t le32(const unsigned char *b) { return (uint32_t)b[0] | b[1] << 8 | b[2] << 16 | (uint32_t)b[3] << 24; }

static void fix_crc(unsigned char *b, size_t len) {
  uint32_t c = (uint32_t)crc32(0, b, (uInt)(len - 4));
  for (int i = 0; i < 4; i++) b[len - 4 + i] = (unsigned char)(c >> (8 * i));
}

START_TEST(snapshot_round_trip_byte_equal) {
  sp_spec sp = {.alg = "adagrad", .lr = 0.5, .ndense = 3, .D = 3, .V = (uint64_t)1 << 40,
                .init = {.kind = TENSOR_INIT_UNIFORM, .a = -1, .b = 1, .seed = 5}};
  instance *in = sp_instance(&sp);
  twaiter t;
  tw_init(&t);
  uint64_t ids[3] = {((uint64_t)1 << 40) - 1, 3, 3};
  float v[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, g[3] = {0.5f, -0.25f, 1};
  ck_assert_int_eq(sp_push(in, &t, NULL, ids, v, 3, g, false), PUSH_DONE);
  instance_state s;
  ck_assert_int_eq(instance_export(in, &s), 0);
  unsigned char *b1, *b2;
  size_t l1, l2;
  ck_assert_int_eq(persist_encode(&s, &b1, &l1), 0);
  instance_state_free(&s);
  ck_assert_uint_eq(le32(b1 + 8), 2); /* version 2: it has sparse rows */
  size_t hl = le32(b1 + 12);
  /* dense: params and sum of 3 floats; rows: 2 ids, 2 x 3 params, 2 x 3 sums */
  ck_assert_uint_eq(l1, 16 + hl + 4 * 3 * 2 + 8 * 2 + 4 * 2 * 3 * 2 + 4);
  const char *rows_field = "\"rows\":[{\"tensor\":\"E\",\"count\":2,\"buffers\":[\"sum\"]}]";
  ck_assert_msg(memmem(b1 + 16, hl, rows_field, strlen(rows_field)) != NULL, "header: %.*s", (int)hl, b1 + 16);
  derr e = {0};
  instance_state d;
  ck_assert_int_eq(persist_decode(b1, l1, &d, &e), 0);
  instance *back = instance_from_state(&d, &F.env);
  instance_state_free(&d);
  ck_assert_ptr_nonnull(back);
  ck_assert_int_eq(instance_export(back, &s), 0);
  ck_assert_int_eq(persist_encode(&s, &b2, &l2), 0);
  instance_state_free(&s);
  ck_assert_uint_eq(l2, l1);
  ck_assert(memcmp(b1, b2, l1) == 0);
  free(b2);
  /* the next step is the same on both */
  float v2[9], g2[3];
  for (int i = 0; i < 9; i++) v[i] = (float)i / 3 - 1;
  memcpy(v2, v, sizeof v);
  g[0] = g[1] = g[2] = 0.125f;
  memcpy(g2, g, sizeof g);
  ck_assert_int_eq(sp_push(in, &t, NULL, ids, v, 3, g, true), PUSH_DONE);
  ck_assert_int_eq(sp_push(back, &t, NULL, ids, v2, 3, g2, true), PUSH_DONE);
  ck_floats_bits(v2, v, 9, "rows after the restored step");
  ck_floats_bits(g2, g, 3, "dense after the restored step");
  /* refused: ids out of order (swapped), and cut short */
  size_t ids_at = 16 + hl + 4 * 3 * 2;
  unsigned char tmp[8];
  memcpy(tmp, b1 + ids_at, 8);
  memcpy(b1 + ids_at, b1 + ids_at + 8, 8);
  memcpy(b1 + ids_at + 8, tmp, 8);
  fix_crc(b1, l1);
  ck_assert_int_eq(persist_decode(b1, l1, &d, &e), -E_BAD_REQUEST);
  ck_assert_str_eq(e.msg, "rows of E: id 3 (entry 1) out of range or out of order");
  fix_crc(b1, l1 - 4); /* one float short, with a good CRC */
  ck_assert_int_eq(persist_decode(b1, l1 - 4, &d, &e), -E_BAD_REQUEST);
  ck_assert_str_eq(e.msg, "size mismatch: the arrays do not match the header");
  free(b1);
  tw_cleanup(&t);
  instance_unref(in);
  instance_unref(back);
}
END_TEST

Suite *suite_rows(void) {
  Suite *s = suite_create("rows");
  TCase *tc = tcase_create("store");
  tcase_add_test(tc, store_grows_and_keeps_blocks);
  tcase_add_test(tc, init_depends_on_logical_row_and_column_only);
  suite_add_tcase(s, tc);
  tc = tcase_create("instance");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, sgd_applies_in_the_order_sent);
  tcase_add_test(tc, adagrad_coalesces_then_updates_once);
  tcase_add_test(tc, bad_rows_change_nothing);
  tcase_add_test(tc, quota_refuses_a_push_whole);
  tcase_add_test(tc, sync_round_combines_rows_in_worker_order);
  tcase_add_test(tc, sync_round_over_the_quota_fails_whole);
  tcase_add_test(tc, export_import_continues_bit_for_bit);
  tcase_add_test(tc, init_rows_are_held_from_the_start);
  tcase_add_test(tc, snapshot_round_trip_byte_equal);
  suite_add_tcase(s, tc);
  return s;
}
