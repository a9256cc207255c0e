/* test_rng: the counter-based generator: its own log/cos, its distribution,
 * slices generated alone, and golden values that pin the definition. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "suites.h"
#include "testutil.h"

START_TEST(log_and_cos_accuracy) {
  for (int k = 1; k <= 100000; k++) {
    double x = (double)k / 100000.0 * 3.7;
    CHECK(fabs(rng_log(x) - log(x)) <= 4e-16 * fmax(1, fabs(log(x))), "log(%g)", x);
    double u = (double)k / 100000.0;
    CHECK(fabs(rng_cos2pi(u) - cos(2 * M_PI * u)) <= 1e-15, "cos2pi(%g)", u);
  }
  ck_assert(fabs(rng_log(0x1p-53) - log(0x1p-53)) < 1e-13);
}
END_TEST

START_TEST(normal_distribution) {
  double s = 0, s2 = 0;
  int n = 200000;
  for (int i = 0; i < n; i++) {
    double z = rng_normal(42, 0, (uint64_t)i);
    s += z;
    s2 += z * z;
  }
  double mean = s / n, var = s2 / n - mean * mean;
  ck_assert_msg(fabs(mean) < 0.01, "mean %g", mean);
  ck_assert_msg(fabs(var - 1) < 0.02, "var %g", var);
}
END_TEST

START_TEST(slices_generate_alone) {
  float whole[1000], part[300];
  rng_fill_normal(whole, 1000, 0, 7, 3, 0.5, 2.0);
  rng_fill_normal(part, 300, 400, 7, 3, 0.5, 2.0);
  ck_assert(memcmp(whole + 400, part, sizeof part) == 0);
  rng_fill_uniform(whole, 1000, 0, 7, 3, -1, 1);
  rng_fill_uniform(part, 300, 700, 7, 3, -1, 1);
  ck_assert(memcmp(whole + 700, part, sizeof part) == 0);
  for (int i = 0; i < 1000; i++) CHECK(whole[i] >= -1 && whole[i] < 1, "uniform range");
}
END_TEST

/* Golden values: if these change, every seeded init in every user's
 * experiment changes.  Don't. (proto/init.md defines them.) */
START_TEST(golden_values) {
  ck_assert_uint_eq(rng_bits(0, 0, 0), 0xe220a8397b1dcdafull);
  ck_assert_uint_eq(rng_bits(42, 1, 7), 0x6d52dae440db2644ull);
  float v[3];
  rng_fill_normal(v, 3, 0, 42, 0, 0.0, 1.0);
  ck_assert_float_eq(v[0], 0x1.160bp-1f);
  ck_assert_float_eq(v[1], 0x1.ceecb2p+0f);
  ck_assert_float_eq(v[2], 0x1.2d06dep-6f);
  rng_fill_uniform(v, 2, 0, 42, 0, -1, 1);
  ck_assert_float_eq(v[0], 0x1.89b3f2p-3f);
  ck_assert_float_eq(v[1], -0x1.5bc92ep-1f);
}
END_TEST

Suite *suite_rng(void) {
  Suite *s = suite_create("rng");
  TCase *tc = tcase_create("rng");
  tcase_add_test(tc, log_and_cos_accuracy);
  tcase_add_test(tc, normal_distribution);
  tcase_add_test(tc, slices_generate_alone);
  tcase_add_test(tc, golden_values);
  suite_add_tcase(s, tc);
  return s;
}
