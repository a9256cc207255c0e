/* test_rng: the counter-based generator: its own log/cos, its distribution,
 * slices generated alone, and golden values that pin the definition. */
#include <check.h>
#include <math.h>
#include <stdio.h>
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

/* The vectorised fills against the scalar definition, bit for bit: over 10^6
 * values of each kind, across seeds, streams (rows), offsets, lengths (a row's D,
 * with and without a tail of fewer than 8) and means/stds. */
static uint32_t f32bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

START_TEST(fills_match_scalar_bit_for_bit) {
  static const uint64_t seeds[] = {0, 1, 42, 0x7fffffffffffffffull, 0x123456789abcdefull};
  static const uint64_t firsts[] = {0, 5, 1ull << 40};
  static const double ms[][2] = {{0, 1}, {0.5, 2}, {-3, 0.01}, {0, 0}, {1e3, 1e-3}, {0, 0.02}};
  static const size_t lens[] = {1, 3, 4, 7, 8, 9, 16, 63, 64, 100, 128, 300};
  float got[300], ref[300], alt[300];
  long normals = 0, uniforms = 0;
  for (size_t a = 0; a < sizeof seeds / sizeof *seeds; a++)
    for (uint64_t st = 0; st < 40; st++) {
      uint64_t stream = st < 36 ? st * 977 : (1ull << 62) - st; /* rows up to 2^62 */
      uint64_t first = firsts[st % 3];
      size_t n = lens[(st + a) % (sizeof lens / sizeof *lens)];
      for (size_t p = 0; p < sizeof ms / sizeof *ms; p++) {
        double m = ms[p][0], sd = ms[p][1];
        rng_fill_normal(got, n, first, seeds[a], stream, m, sd);
        rng__fill_normal_scalar(alt, n, first, seeds[a], stream, m, sd);
        for (size_t k = 0; k < n; k++)
          ref[k] = (float)(m + sd * rng_normal(seeds[a], stream, first + k));
        for (size_t k = 0; k < n; k++) {
          CHECK(f32bits(got[k]) == f32bits(ref[k]) && f32bits(alt[k]) == f32bits(ref[k]),
                "normal seed %llu stream %llu index %llu: %a vs %a", (unsigned long long)seeds[a],
                (unsigned long long)stream, (unsigned long long)(first + k), got[k], ref[k]);
        }
        normals += (long)n;
        double lo = m - sd, hi = m + 3 * sd;
        rng_fill_uniform(got, n, first, seeds[a], stream, lo, hi);
        for (size_t k = 0; k < n; k++) {
          float r = (float)(lo + (hi - lo) * (rng_uniform(seeds[a], stream, first + k) - 0x1p-53));
          CHECK(f32bits(got[k]) == f32bits(r), "uniform index %llu",
                (unsigned long long)(first + k));
        }
        uniforms += (long)n;
      }
    }
  /* and whole rows of a long run, the size of bench_sparse's new rows */
  for (uint64_t row = 0; normals < 1100000; row++) {
    rng_fill_normal(got, 256, 0, 1, row, 0, 0.01);
    for (size_t k = 0; k < 256; k++)
      CHECK(f32bits(got[k]) == f32bits((float)(0 + 0.01 * rng_normal(1, row, k))), "row %llu",
            (unsigned long long)row);
    rng_fill_uniform(got, 256, 0, 1, row, -0.1, 0.1);
    for (size_t k = 0; k < 256; k++) {
      float r = (float)(-0.1 + 0.2 * (rng_uniform(1, row, k) - 0x1p-53));
      CHECK(f32bits(got[k]) == f32bits(r), "uniform row %llu", (unsigned long long)row);
    }
    normals += 256;
    uniforms += 256;
  }
  ck_assert_int_ge(normals, 1000000);
  ck_assert_int_ge(uniforms, 1000000);
}
END_TEST

/* Box-Muller in double, before the rounding to float hides a last-bit difference:
 * the branch points of log and cos (1/sqrt(2), 1/8, 1/4, 1/2, 1) and the ends of
 * (0, 1], which counters almost never hit, then 10^6 pairs of random uniforms. */
static size_t check_normals(const double *u1, const double *u2, size_t n, double *z) {
  int vec = rng__normals(z, u1, u2, n);
  for (size_t k = 0; k < n; k++) {
    double r = sqrt(-2 * rng_log(u1[k])) * rng_cos2pi(u2[k]);
    CHECK(memcmp(&z[k], &r, sizeof r) == 0, "u1 %a u2 %a: %a vs %a", u1[k], u2[k], z[k], r);
  }
  return (size_t)vec;
}

START_TEST(normals_bit_for_bit_in_double) {
  enum { N = 1 << 16 };
  static double u1[N], u2[N], z[N];
  static const double points[] = {0x1p-53, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1,
                                  0.70710678118654752440, 0.70710678118654752440 / 2,
                                  0.70710678118654752440 / 1024, 1e-10, 0.1, 0.3};
  size_t n = 0, np = sizeof points / sizeof *points;
  for (size_t i = 0; i < np; i++)
    for (int d = -3; d <= 3; d++) {
      double p = points[i];
      for (int s = 0; s < (d < 0 ? -d : d); s++) p = d < 0 ? nextafter(p, 0) : nextafter(p, 2);
      p = ldexp(floor(ldexp(p, 53)), -53); /* a possible uniform: k * 2^-53 */
      if (p <= 0) p = 0x1p-53;
      if (p > 1) p = 1;
      u1[n] = u2[n] = p;
      n++;
    }
  size_t base = n;
  for (size_t i = 0; i < base; i++)
    for (size_t j = 0; j < base; j++) {
      u1[n] = u1[i];
      u2[n] = u2[j];
      n++;
    }
  size_t vec = check_normals(u1, u2, n, z);
  for (uint64_t round = 0; round < 16; round++) {
    for (size_t k = 0; k < N; k++) {
      u1[k] = rng_uniform(round, 5, 2 * k);
      u2[k] = rng_uniform(round, 5, 2 * k + 1);
    }
    check_normals(u1, u2, N - round, z); /* lengths with every tail */
  }
  if (!vec) fprintf(stderr, "test_rng: no AVX2 here, the vectorised fill is not exercised\n");
}
END_TEST

Suite *suite_rng(void) {
  Suite *s = suite_create("rng");
  TCase *tc = tcase_create("rng");
  tcase_add_test(tc, log_and_cos_accuracy);
  tcase_add_test(tc, normal_distribution);
  tcase_add_test(tc, slices_generate_alone);
  tcase_add_test(tc, golden_values);
  tcase_add_test(tc, fills_match_scalar_bit_for_bit);
  tcase_add_test(tc, normals_bit_for_bit_in_double);
  suite_add_tcase(s, tc);
  return s;
}
