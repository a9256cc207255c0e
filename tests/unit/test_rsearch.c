/* test_rsearch: random search improves a quadratic, keeps the best, and
 * never reports a loss worse than one it was told. */
#include <check.h>
#include <math.h>
#include <string.h>

#include "rsearch.h"
#include "suites.h"
#include "testutil.h"

static double quad(const float *x, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++) {
    double d = x[i] - 0.25 * (double)(i % 3);
    s += d * d;
  }
  return s;
}

START_TEST(improves_a_quadratic) {
  enum { N = 8 };
  optim_alg alg;
  optim_hyper h;
  ck_assert_int_eq(optim_alg_parse("random_search", &alg, &h, NULL), 0);
  h.center = OPTIM_CENTER_BEST;
  h.scale = 0.05;
  h.seed = 3;
  float params[N] = {0};
  rsearch rs;
  rsearch_init(&rs, N);
  double start = quad(params, N), min_told = INFINITY;
  for (int it = 0; it < 3000; it++) {
    uint64_t id;
    const float *x;
    ck_assert_int_eq(rsearch_ask(&rs, &h, params, &id, &x, NULL), 0);
    double loss = quad(x, N);
    bool improved;
    ck_assert_int_eq(rsearch_tell(&rs, id, loss, params, &improved, NULL), 0);
    min_told = fmin(min_told, loss);
    CHECK(rs.best_loss == min_told, "best %g told %g", rs.best_loss, min_told);
    CHECK(quad(params, N) == rs.best_loss, "params hold the best");
  }
  ck_assert_msg(rs.best_loss < start / 20, "best %g start %g", rs.best_loss, start);
  ck_assert_uint_eq(rs.tells, 3000);
  rsearch_cleanup(&rs);
}
END_TEST

START_TEST(tell_rules) {
  optim_alg alg;
  optim_hyper h;
  optim_alg_parse("random_search", &alg, &h, NULL);
  float params[4] = {1, 2, 3, 4}, before[4];
  memcpy(before, params, sizeof params);
  rsearch rs;
  rsearch_init(&rs, 4);
  uint64_t id;
  const float *x;
  bool improved = false;
  derr e = {0};
  rsearch_ask(&rs, &h, params, &id, &x, &e);
  /* center zero: candidate is scale * N(0,1), small */
  for (int i = 0; i < 4; i++) ck_assert(fabsf(x[i]) < 0.01f);
  ck_assert_int_eq(rsearch_tell(&rs, id, NAN, params, &improved, &e), -E_NOT_FINITE);
  ck_assert_int_eq(rsearch_tell(&rs, id + 1, 1.0, params, &improved, &e), -E_CONFLICT);
  ck_assert(memcmp(params, before, sizeof params) == 0);
  ck_assert_int_eq(rsearch_tell(&rs, id, 5.0, params, &improved, &e), 0);
  ck_assert(improved && rs.best_loss == 5.0);
  ck_assert_int_eq(rsearch_tell(&rs, id, 1.0, params, &improved, &e), -E_CONFLICT); /* told twice */
  /* forgotten after RSEARCH_SLOTS newer asks */
  uint64_t old;
  rsearch_ask(&rs, &h, params, &old, &x, &e);
  for (int i = 0; i < RSEARCH_SLOTS; i++) rsearch_ask(&rs, &h, params, &id, &x, &e);
  ck_assert_int_eq(rsearch_tell(&rs, old, 0.0, params, &improved, &e), -E_CONFLICT);
  ck_assert_int_eq(rsearch_tell(&rs, id, 9.0, params, &improved, &e), 0);
  ck_assert(!improved && rs.best_loss == 5.0);
  /* the same seed proposes the same candidate k */
  rsearch rs2;
  rsearch_init(&rs2, 4);
  const float *y;
  uint64_t id2;
  rsearch_ask(&rs2, &h, params, &id2, &y, &e);
  rsearch_ask(&rs, &h, params, &id, &x, &e);
  ck_assert_uint_eq(id2, 1);
  float first[4];
  memcpy(first, y, sizeof first);
  rsearch r3;
  rsearch_init(&r3, 4);
  rsearch_ask(&r3, &h, params, &id2, &y, &e);
  ck_assert(memcmp(first, y, sizeof first) == 0);
  rsearch_cleanup(&rs);
  rsearch_cleanup(&rs2);
  rsearch_cleanup(&r3);
}
END_TEST

Suite *suite_rsearch(void) {
  Suite *s = suite_create("rsearch");
  TCase *tc = tcase_create("rsearch");
  tcase_add_test(tc, improves_a_quadratic);
  tcase_add_test(tc, tell_rules);
  suite_add_tcase(s, tc);
  return s;
}
