/* test_codec_float: float32 text parsing matches strtof bit for bit, and
 * printing is short and reads back to the same bits. */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_float.h"
#include "rng.h"
#include "suites.h"
#include "testutil.h"

static float parse(const char *s, size_t *len) {
  float f = -12345;
  *len = codec_float_parse(s, s + strlen(s), &f);
  return f;
}

START_TEST(grammar) {
  static const char *good[] = {"0", "-0", "1", "-1", "0.5", "1e3", "1E+3", "2.5e-3", "123456789",
                               "0.000001", "3.4028234663852886e38", "1e-45", "7e-46", "1e39",
                               "0.10000000149011612", "-0.0"};
  static const char *bad[] = {"", "-", "+1", ".5", "1.", "01x", "NaN", "Infinity", "-Infinity",
                              "0x10", "e5", "1e", "1e+", "--1", "- 1"};
  for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
    size_t len;
    float f = parse(good[i], &len);
    ck_assert_msg(len == strlen(good[i]), "'%s' consumed %zu", good[i], len);
    float want = strtof(good[i], NULL);
    ck_assert_msg(memcmp(&f, &want, 4) == 0, "'%s': %a vs strtof %a", good[i], f, want);
  }
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    size_t len;
    parse(bad[i], &len);
    ck_assert_msg(len == 0 || len < strlen(bad[i]), "'%s' accepted whole", bad[i]);
  }
  size_t len;
  parse("01", &len);
  ck_assert_uint_eq(len, 1); /* "0" then "1" is left for the caller to refuse */
  char big[700];
  memset(big, '1', sizeof big - 1);
  big[sizeof big - 1] = 0;
  parse(big, &len);
  ck_assert_uint_eq(len, 0); /* over the token limit */
}
END_TEST

/* Random decimal strings of many shapes parse exactly like strtof. */
START_TEST(parse_matches_strtof) {
  char buf[64];
  for (uint64_t i = 0; i < 400000; i++) {
    uint64_t r = rng_bits(5, 0, i);
    int digits = 1 + (int)(r % 20), e = (int)((r >> 8) % 90) - 50;
    uint64_t m = rng_bits(5, 1, i) % 10000000000000000000ull;
    int n = snprintf(buf, sizeof buf, "%s%.*llu", (r >> 20) & 1 ? "-" : "", digits,
                     (unsigned long long)(m % (digits >= 19 ? 10000000000000000000ull : (uint64_t)pow(10, digits))));
    if ((r >> 21) & 1) {
      /* insert a decimal point */
      int at = 1 + (int)((r >> 24) % (uint64_t)(n - ((r >> 20) & 1)));
      at += (int)((r >> 20) & 1);
      if (at < n) {
        memmove(buf + at + 1, buf + at, (size_t)(n - at + 1));
        buf[at] = '.';
        n++;
      }
    }
    snprintf(buf + n, sizeof buf - (size_t)n, "e%d", e);
    /* skip forms JSON does not allow (leading zeros) */
    const char *d = buf[0] == '-' ? buf + 1 : buf;
    if (d[0] == '0' && d[1] >= '0' && d[1] <= '9') continue;
    size_t len;
    float f = parse(buf, &len);
    float want = strtof(buf, NULL);
    CHECK(len == strlen(buf), "'%s' consumed %zu", buf, len);
    CHECK(memcmp(&f, &want, 4) == 0, "'%s': %a vs strtof %a", buf, f, want);
  }
}
END_TEST

/* Every sampled float prints to text that reads back to the same bits,
 * with at most 9 significant digits. */
START_TEST(print_round_trips) {
  char buf[CODEC_FLOAT_MAX + 1];
  for (uint64_t i = 0; i < 2000000; i++) {
    uint32_t u = (uint32_t)rng_bits(9, 0, i);
    if (i < 1000) u = (uint32_t)i; /* subnormals */
    float f;
    memcpy(&f, &u, 4);
    if (!isfinite(f)) continue;
    size_t n = codec_float_print(f, buf);
    buf[n] = 0;
    float back = strtof(buf, NULL), back2 = 0;
    CHECK(memcmp(&f, &back, 4) == 0, "%a printed '%s' reads %a", f, buf, back);
    CHECK(codec_float_parse(buf, buf + n, &back2) == n, "parse length");
    CHECK(memcmp(&f, &back2, 4) == 0, "%a reads back %a", f, back2);
  }
}
END_TEST

START_TEST(print_is_short) {
  static const struct {
    float f;
    const char *s;
  } cases[] = {{0.1f, "0.1"},   {1.0f, "1"},       {-2.5f, "-2.5"},       {100.0f, "100"},
               {0.0f, "0"},     {-0.0f, "-0.0"},     {1e-7f, "1e-7"},       {0.001f, "0.001"},
               {3.0e10f, "30000000000"}, {1e20f, "1e20"}, {123456.0f, "123456"}, {0.3f, "0.3"}, {1e-5f, "0.00001"},
               {16777216.0f, "16777216"}, {0.100000001490116f, "0.1"}};
  char buf[CODEC_FLOAT_MAX + 1];
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    size_t n = codec_float_print(cases[i].f, buf);
    buf[n] = 0;
    ck_assert_str_eq(buf, cases[i].s);
  }
  ck_assert_uint_eq(codec_float_print(NAN, buf), 4);
}
END_TEST

Suite *suite_codec_float(void) {
  Suite *s = suite_create("codec_float");
  TCase *tc = tcase_create("codec_float");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, grammar);
  tcase_add_test(tc, parse_matches_strtof);
  tcase_add_test(tc, print_round_trips);
  tcase_add_test(tc, print_is_short);
  suite_add_tcase(s, tc);
  return s;
}
