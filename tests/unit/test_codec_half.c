/* test_codec_half: bfloat16/float16 widening and narrowing, every 16-bit
 * pattern through the loops (SIMD where the CPU has it) against the scalar
 * forms and against the definition; rounding to nearest even at every
 * midpoint; the dtype parameter of a media type. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "codec_half.h"
#include "suites.h"
#include "testutil.h"

static uint32_t bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

/* The value of a float16 pattern by its definition (NaN: any NaN). */
static double f16_value(uint16_t h) {
  int sign = h >> 15, exp = (h >> 10) & 31, mant = h & 1023;
  double v = exp == 0 ? ldexp(mant, -24) : exp == 31 ? (mant ? NAN : INFINITY) : ldexp(1024 + mant, exp - 25);
  return sign ? -v : v;
}

START_TEST(widen_every_pattern) {
  uint16_t *in = malloc(65536 * 2);
  float *bf = malloc(65536 * sizeof(float)), *hf = malloc(65536 * sizeof(float));
  for (int i = 0; i < 65536; i++) in[i] = (uint16_t)i;
  codec_half_widen(DTYPE_BFLOAT16, in, bf, 65536);
  codec_half_widen(DTYPE_FLOAT16, in, hf, 65536);
  for (int i = 0; i < 65536; i++) {
    CHECK(bits(bf[i]) == (uint32_t)i << 16, "bf16 %04x", i);
    CHECK(bits(bf[i]) == bits(codec_bf16_to_f32((uint16_t)i)), "bf16 scalar %04x", i);
    CHECK(bits(hf[i]) == bits(codec_f16_to_f32((uint16_t)i)), "f16 loop vs scalar %04x: %08x %08x", i,
          bits(hf[i]), bits(codec_f16_to_f32((uint16_t)i)));
    double want = f16_value((uint16_t)i);
    if (isnan(want)) CHECK(isnan(hf[i]) && (bits(hf[i]) & 0x400000u), "f16 %04x: a quiet NaN", i);
    else CHECK((double)hf[i] == want && !signbit(hf[i]) == !signbit(want), "f16 %04x: %g, want %g", i, hf[i], want);
  }
  free(in);
  free(bf);
  free(hf);
}
END_TEST

/* Narrowing of every finite half value, of each midpoint between neighbours
 * (to the even one) and of the floats just beside each midpoint. */
static void check_narrow(int dtype, float (*widen)(uint16_t), uint16_t (*narrow)(float), uint16_t top) {
  for (uint32_t h = 0; h < top; h++) {
    float v = widen((uint16_t)h), w = widen((uint16_t)(h + 1));
    CHECK(narrow(v) == h, "%s %04x round trip", codec_half_dtype_name(dtype), h);
    CHECK(narrow(-v) == (h | 0x8000u), "%s -%04x round trip", codec_half_dtype_name(dtype), h);
    float mid = (float)(((double)v + (double)w) / 2); /* exact: halves have few bits */
    uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
    CHECK(narrow(mid) == even, "%s midpoint above %04x -> %04x", codec_half_dtype_name(dtype), h, narrow(mid));
    CHECK(narrow(nextafterf(mid, INFINITY)) == h + 1, "%s just above the midpoint of %04x", codec_half_dtype_name(dtype), h);
    CHECK(narrow(nextafterf(mid, 0)) == h, "%s just below the midpoint of %04x", codec_half_dtype_name(dtype), h);
  }
}

START_TEST(narrow_rounds_to_nearest_even) {
  check_narrow(DTYPE_FLOAT16, codec_f16_to_f32, codec_f32_to_f16, 0x7bff);  /* up to 65504's neighbour */
  check_narrow(DTYPE_BFLOAT16, codec_bf16_to_f32, codec_f32_to_bf16, 0x7f7f);
  ck_assert_uint_eq(codec_f32_to_f16(65519.996f), 0x7bff);
  ck_assert_uint_eq(codec_f32_to_f16(65520.0f), 0x7c00);
  ck_assert_uint_eq(codec_f32_to_f16(-1e9f), 0xfc00);
  ck_assert_uint_eq(codec_f32_to_f16(0x1p-25f), 0);      /* half the smallest subnormal: to even (0) */
  ck_assert_uint_eq(codec_f32_to_f16(0x1.8p-25f), 1);    /* above half: up */
  ck_assert_uint_eq(codec_f32_to_bf16(3.4e38f), 0x7f80); /* past the largest bf16: infinity */
  ck_assert(isnan(codec_f16_to_f32(codec_f32_to_f16(NAN))) && isnan(codec_bf16_to_f32(codec_f32_to_bf16(NAN))));
}
END_TEST

/* The loops (F16C where present) agree with the scalar forms on arbitrary
 * bit patterns, NaNs and subnormals included, in place too. */
START_TEST(narrow_loops_match_scalar) {
  size_t n = 1 << 20;
  float *x = malloc(n * sizeof(float));
  uint16_t *a = malloc(n * 2), *b = malloc(n * 2);
  uint64_t s = 88172645463325252ull;
  for (size_t i = 0; i < n; i++) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    uint32_t u = (uint32_t)s;
    if (i % 3 == 0) u = (u & 0x80000000u) | (0x33000000u + (u & 0x0fffffffu) % 0x15000000u); /* the f16 range */
    memcpy(&x[i], &u, 4);
  }
  for (int d = DTYPE_BFLOAT16; d <= DTYPE_FLOAT16; d++) {
    codec_half_narrow(d, x, a, n);
    for (size_t i = 0; i < n; i++) b[i] = d == DTYPE_FLOAT16 ? codec_f32_to_f16(x[i]) : codec_f32_to_bf16(x[i]);
    for (size_t i = 0; i < n; i++) CHECK(a[i] == b[i], "%s of %08x: %04x vs %04x", codec_half_dtype_name(d), bits(x[i]), a[i], b[i]);
    float *y = malloc(n * sizeof(float));
    memcpy(y, x, n * sizeof(float));
    codec_half_narrow(d, y, y, n); /* in place */
    CHECK(memcmp(y, a, n * 2) == 0, "%s in place", codec_half_dtype_name(d));
    free(y);
  }
  free(x);
  free(a);
  free(b);
}
END_TEST

START_TEST(dtype_parameter) {
  ck_assert_int_eq(codec_half_dtype(NULL), DTYPE_FLOAT32);
  ck_assert_int_eq(codec_half_dtype("application/octet-stream"), DTYPE_FLOAT32);
  ck_assert_int_eq(codec_half_dtype("application/octet-stream; dtype=bfloat16"), DTYPE_BFLOAT16);
  ck_assert_int_eq(codec_half_dtype("application/octet-stream;dtype=\"float16\""), DTYPE_FLOAT16);
  ck_assert_int_eq(codec_half_dtype("application/octet-stream; charset=x; DTYPE=Float32"), DTYPE_FLOAT32);
  ck_assert_int_eq(codec_half_dtype("application/octet-stream; dtype=bfloat16, application/json"), DTYPE_BFLOAT16);
  ck_assert_int_eq(codec_half_dtype("application/octet-stream; dtype=float64"), -1);
  ck_assert_int_eq(codec_half_dtype("application/octet-stream; dtype="), -1);
  ck_assert_uint_eq(codec_half_size(DTYPE_FLOAT16), 2);
  ck_assert_uint_eq(codec_half_size(DTYPE_FLOAT32), 4);
}
END_TEST

Suite *suite_codec_half(void) {
  Suite *s = suite_create("codec_half");
  TCase *t = tcase_create("codec_half");
  tcase_set_timeout(t, 120);
  tcase_add_test(t, widen_every_pattern);
  tcase_add_test(t, narrow_rounds_to_nearest_even);
  tcase_add_test(t, narrow_loops_match_scalar);
  tcase_add_test(t, dtype_parameter);
  suite_add_tcase(s, t);
  return s;
}
