/* fuzz_float: codec_float, the number parser under every JSON body.
 *
 * Invariants:
 *   - parse accepts exactly the JSON number grammar (checked against a
 *     reference scanner), consumes the longest such token, refuses tokens
 *     over 512 bytes, and gives the same bits as strtof / strtod;
 *   - print(f) for any finite float is a JSON number of at most
 *     CODEC_FLOAT_MAX bytes that parses back to the same bits, with the
 *     fewest significant digits that %.Ng finds; non-finite prints null;
 *   - codec_double_print(d) reads back to the same double.
 * The input is the text to parse; its first 4 and 8 bytes are also taken as
 * a float and a double to print.
 */
#include <math.h>

#include "codec_float.h"
#include "fuzz.h"

/* The JSON number grammar, with codec_float's outcome for a bad tail: the
 * length of the number at s, or 0 ("1." and "1e" are not numbers). */
static size_t ref_scan(const char *s, size_t n) {
  size_t i = 0;
  if (i < n && s[i] == '-') i++;
  if (i >= n) return 0;
  if (s[i] == '0') {
    i++;
  } else if (s[i] >= '1' && s[i] <= '9') {
    while (i < n && s[i] >= '0' && s[i] <= '9') i++;
  } else {
    return 0;
  }
  if (i < n && s[i] == '.') {
    size_t f = ++i;
    while (i < n && s[i] >= '0' && s[i] <= '9') i++;
    if (i == f) return 0;
  }
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    i++;
    if (i < n && (s[i] == '+' || s[i] == '-')) i++;
    size_t x = i;
    while (i < n && s[i] >= '0' && s[i] <= '9') i++;
    if (i == x) return 0;
  }
  return i;
}

static int same_bits(float a, float b) { return memcmp(&a, &b, sizeof a) == 0; }

/* Significant digits of a number printed by codec_float_print. */
static int sig_digits(const char *s, size_t n) {
  char d[64];
  size_t k = 0;
  for (size_t i = 0; i < n && s[i] != 'e'; i++)
    if (s[i] >= '0' && s[i] <= '9' && k < sizeof d) d[k++] = s[i];
  size_t a = 0, b = k;
  while (a < b && d[a] == '0') a++;
  while (b > a && d[b - 1] == '0') b--;
  return (int)(b - a);
}

static void check_print(float f) {
  char out[CODEC_FLOAT_MAX + 8];
  memset(out, 'x', sizeof out);
  size_t n = codec_float_print(f, out);
  FUZZ_CHECK(n > 0 && n <= CODEC_FLOAT_MAX, "length %zu", n);
  if (!isfinite(f)) {
    FUZZ_CHECK(n == 4 && !memcmp(out, "null", 4));
    return;
  }
  FUZZ_CHECK(ref_scan(out, n) == n, "'%.*s' is not a JSON number", (int)n, out);
  float back = 0;
  size_t l = codec_float_parse(out, out + n, &back);
  FUZZ_CHECK(l == n && same_bits(back, f), "%a printed as '%.*s' reads back as %a", (double)f, (int)n, out,
             (double)back);
  if (f == 0) return;
  int want = 9;
  for (int d = 1; d <= 9; d++) {
    char buf[48];
    snprintf(buf, sizeof buf, "%.*g", d, (double)f);
    if (strtof(buf, NULL) == f) {
      want = d;
      break;
    }
  }
  FUZZ_CHECK(sig_digits(out, n) == want, "%a printed as '%.*s', but %d digits suffice", (double)f, (int)n, out,
             want);
}

static void check_double_print(double d) {
  char out[CODEC_FLOAT_MAX + 8 + 8];
  size_t n = codec_double_print(d, out);
  FUZZ_CHECK(n > 0 && n <= CODEC_FLOAT_MAX + 8, "length %zu", n);
  if (!isfinite(d)) {
    FUZZ_CHECK(n == 4 && !memcmp(out, "null", 4));
    return;
  }
  FUZZ_CHECK(ref_scan(out, n) == n, "'%.*s' is not a JSON number", (int)n, out);
  double back = 0;
  size_t l = codec_float_parse_double(out, out + n, &back);
  FUZZ_CHECK(l == n && (back == d || (isnan(back) && isnan(d))) && signbit(back) == signbit(d),
             "%a printed as '%.*s' reads back as %a", d, (int)n, out, back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *s = (const char *)data;
  size_t want = ref_scan(s, size);
  if (want > 512) want = 0; /* codec_float's token limit */
  float f = 12345.0f;
  size_t got = codec_float_parse(s, s + size, &f);
  FUZZ_CHECK(got == want, "parse consumed %zu bytes, the grammar says %zu", got, want);
  double dv = 12345.0;
  size_t got_d = codec_float_parse_double(s, s + size, &dv);
  FUZZ_CHECK(got_d == want, "parse_double consumed %zu bytes, the grammar says %zu", got_d, want);
  if (got) {
    char *tok = fuzz_strndup(data, got);
    float ref = strtof(tok, NULL);
    double refd = strtod(tok, NULL);
    FUZZ_CHECK(same_bits(f, ref), "'%s' parsed as %a, strtof gives %a", tok, (double)f, (double)ref);
    FUZZ_CHECK(memcmp(&dv, &refd, sizeof dv) == 0, "'%s' parsed as %a, strtod gives %a", tok, dv, refd);
    free(tok);
    check_print(f);
  } else {
    FUZZ_CHECK(same_bits(f, 12345.0f) && dv == 12345.0, "a refused number wrote its output");
  }
  if (size >= 4) {
    float x;
    memcpy(&x, data, 4);
    check_print(x);
  }
  if (size >= 8) {
    double x;
    memcpy(&x, data, 8);
    check_double_print(x);
  }
  return 0;
}
