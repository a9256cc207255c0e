/* codec_float: exact float32 decimal parsing and shortest printing.
 *
 * The fast paths rely on one fact: a mantissa m < 2^64 and 10^k for k <= 27
 * are exact in x87 long double (64-bit significand), so m * 10^k or m / 10^k
 * is a single correctly rounded operation.  Rounding that result to float
 * can only differ from rounding the exact decimal when it lands exactly on a
 * float midpoint; that case (and subnormals, overflow, >19 digits, |k| > 27)
 * goes to strtof.  Printing searches the digit count (1..9) whose nearest
 * decimal reads back to the same float with the same exact check.
 * Owns no state; never allocates.  Any thread.
 */
#include "codec_float.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TOKEN 512 /* longer numbers are refused */

static const float pow10f_tab[11] = {1e0f, 1e1f, 1e2f, 1e3f, 1e4f, 1e5f,
                                     1e6f, 1e7f, 1e8f, 1e9f, 1e10f};

/* 10^k for 0 <= k <= 27, each exact in a 64-bit significand (5^27 < 2^64). */
static const long double pow10l_tab[28] = {
    1e0L,  1e1L,  1e2L,  1e3L,  1e4L,  1e5L,  1e6L,  1e7L,  1e8L,  1e9L,
    1e10L, 1e11L, 1e12L, 1e13L, 1e14L, 1e15L, 1e16L, 1e17L, 1e18L, 1e19L,
    1e20L, 1e21L, 1e22L, 1e23L, 1e24L, 1e25L, 1e26L, 1e27L};

static const double pow10d_tab[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                      1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                      1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

static long double pow10l_exact(int k) { return pow10l_tab[k]; }

/* m * 10^e10 rounded to float if that is provably exact; 0 if not decided. */
static int exact_scale(uint64_t m, int e10, float *out) {
  if (m < (1u << 24) && e10 >= -10 && e10 <= 10) {
    float fm = (float)m; /* exact */
    *out = e10 >= 0 ? fm * pow10f_tab[e10] : fm / pow10f_tab[-e10];
    return 1;
  }
  if (m <= (1ull << 53) && e10 >= -22 && e10 <= 22) { /* both exact in double */
    double x = (double)m;
    x = e10 >= 0 ? x * pow10d_tab[e10] : x / pow10d_tab[-e10];
    if (!(x >= (double)FLT_MIN && x <= (double)FLT_MAX)) return 0;
    float f = (float)x;
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    uint32_t nu = (double)f < x ? u + 1 : u - 1;
    float nb;
    memcpy(&nb, &nu, sizeof nb);
    if (((double)f + (double)nb) / 2 == x) return 0; /* exact midpoint: undecided */
    *out = f;
    return 1;
  }
  if (e10 < -27 || e10 > 27) return 0;
  long double x = (long double)m;
  x = e10 >= 0 ? x * pow10l_exact(e10) : x / pow10l_exact(-e10);
  if (!(x >= (long double)FLT_MIN && x <= (long double)FLT_MAX)) return 0;
  float f = (float)x;
  /* is x exactly halfway between f and a neighbour? then strtof decides */
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  uint32_t nu = (long double)f < x ? u + 1 : u - 1;
  float nb;
  memcpy(&nb, &nu, sizeof nb);
  long double mid = ((long double)f + (long double)nb) / 2;
  if (mid == x) return 0;
  *out = f;
  return 1;
}

/* Scans a JSON number: returns its length (0 if invalid) and its decimal
 * significand (first 19 significant digits), exponent, and whether digits
 * were dropped. */
static size_t scan(const char *s, const char *end, int *neg, uint64_t *m, int *e10, int *dropped) {
  const char *p = s;
  *neg = 0;
  *m = 0;
  *e10 = 0;
  *dropped = 0;
  int nd = 0; /* significant digits kept */
  if (p < end && *p == '-') {
    *neg = 1;
    p++;
  }
  if (p >= end) return 0;
  if (*p == '0') {
    p++;
  } else if (*p >= '1' && *p <= '9') {
    while (p < end && *p >= '0' && *p <= '9') {
      if (nd < 19) {
        *m = *m * 10 + (uint64_t)(*p - '0');
        nd++;
      } else {
        (*e10)++;
        if (*p != '0') *dropped = 1;
      }
      p++;
    }
  } else {
    return 0;
  }
  if (p < end && *p == '.') {
    p++;
    const char *f0 = p;
    while (p < end && *p >= '0' && *p <= '9') {
      if (*m == 0 && *p == '0') {
        (*e10)--; /* leading zeros are not significant */
      } else if (nd < 19) {
        *m = *m * 10 + (uint64_t)(*p - '0');
        nd++;
        (*e10)--;
      } else if (*p != '0') {
        *dropped = 1;
      }
      p++;
    }
    if (p == f0) return 0;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    p++;
    int eneg = 0;
    if (p < end && (*p == '+' || *p == '-')) eneg = *p++ == '-';
    const char *x0 = p;
    long ex = 0;
    while (p < end && *p >= '0' && *p <= '9') {
      if (ex < 100000) ex = ex * 10 + (*p - '0');
      p++;
    }
    if (p == x0) return 0;
    *e10 += (int)(eneg ? -ex : ex);
  }
  if (p - s > MAX_TOKEN) return 0;
  return (size_t)(p - s);
}

static void slow_copy(const char *s, size_t len, char *buf) {
  memcpy(buf, s, len);
  buf[len] = 0;
}

size_t codec_float_parse(const char *s, const char *end, float *out) {
  int neg, e10, dropped;
  uint64_t m;
  size_t len = scan(s, end, &neg, &m, &e10, &dropped);
  if (!len) return 0;
  float f;
  if (m == 0) {
    f = 0.0f;
  } else if (dropped || !exact_scale(m, e10, &f)) {
    char buf[MAX_TOKEN + 1];
    slow_copy(s, len, buf);
    f = strtof(buf, NULL);
    *out = f;
    return len;
  }
  *out = neg ? -f : f;
  return len;
}

size_t codec_float_parse_double(const char *s, const char *end, double *out) {
  int neg, e10, dropped;
  uint64_t m;
  size_t len = scan(s, end, &neg, &m, &e10, &dropped);
  if (!len) return 0;
  char buf[MAX_TOKEN + 1];
  slow_copy(s, len, buf);
  *out = strtod(buf, NULL);
  return len;
}

/* Does c * 10^q read back as exactly x? */
static int reads_back(uint64_t c, int q, float x) {
  float f;
  if (!exact_scale(c, q, &f)) return 0;
  return f == x;
}

static const char digit_pairs[201] = "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
                                     "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
                                     "8081828384858687888990919293949596979899";

static size_t put_u64(char *out, uint64_t v) {
  if (v >> 32) {
    char tmp[24];
    size_t n = 0;
    do {
      tmp[n++] = (char)('0' + v % 10);
      v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
    return n;
  }
  /* the common case (at most 9 digits): two digits per division, back to front */
  uint32_t u = (uint32_t)v;
  size_t n = u < 10 ? 1 : u < 100 ? 2 : u < 1000 ? 3 : u < 10000 ? 4 : u < 100000 ? 5 : u < 1000000 ? 6
           : u < 10000000 ? 7 : u < 100000000 ? 8 : u < 1000000000 ? 9 : 10;
  char *p = out + n;
  while (u >= 100) {
    uint32_t r = u % 100;
    u /= 100;
    p -= 2;
    memcpy(p, digit_pairs + 2 * r, 2);
  }
  if (u >= 10) memcpy(p - 2, digit_pairs + 2 * u, 2);
  else p[-1] = (char)('0' + u);
  return n;
}

/* Writes c * 10^q (c > 0, no trailing zeros) in plain or scientific form. */
static size_t format(char *out, int neg, uint64_t c, int q) {
  char dig[24];
  size_t nd = put_u64(dig, c);
  int sci = (int)nd - 1 + q; /* exponent of the leading digit */
  size_t o = 0;
  if (neg) out[o++] = '-';
  if (sci >= -5 && sci < 16) {
    if (q >= 0) {
      memcpy(out + o, dig, nd);
      o += nd;
      for (int i = 0; i < q; i++) out[o++] = '0';
    } else if (sci >= 0) {
      size_t ip = (size_t)(sci + 1);
      memcpy(out + o, dig, ip);
      o += ip;
      out[o++] = '.';
      memcpy(out + o, dig + ip, nd - ip);
      o += nd - ip;
    } else {
      out[o++] = '0';
      out[o++] = '.';
      for (int i = 0; i < -sci - 1; i++) out[o++] = '0';
      memcpy(out + o, dig, nd);
      o += nd;
    }
  } else {
    out[o++] = dig[0];
    if (nd > 1) {
      out[o++] = '.';
      memcpy(out + o, dig + 1, nd - 1);
      o += nd - 1;
    }
    out[o++] = 'e';
    if (sci < 0) {
      out[o++] = '-';
      sci = -sci;
    }
    o += put_u64(out + o, (uint64_t)sci);
  }
  return o;
}

/* Outside the fast range: C's %.Ng, then the same layout as the fast path. */
static size_t print_slow(float f, char *out) {
  char buf[40];
  for (int d = 1; d <= 9; d++) {
    snprintf(buf, sizeof buf, "%.*g", d, (double)f);
    if (strtof(buf, NULL) == f) break;
  }
  int neg, e10, dropped;
  uint64_t m;
  scan(buf, buf + strlen(buf), &neg, &m, &e10, &dropped);
  while (m % 10 == 0) {
    m /= 10;
    e10++;
  }
  return format(out, neg, m, e10);
}

size_t codec_float_print(float f, char *out) {
  if (!isfinite(f)) {
    memcpy(out, "null", 4);
    return 4;
  }
  if (f == 0) {
    if (signbit(f)) { /* "-0" would read back as the integer 0 in many languages */
      memcpy(out, "-0.0", 4);
      return 4;
    }
    out[0] = '0';
    return 1;
  }
  int neg = f < 0;
  float x = neg ? -f : f;
  if (!(x >= 1e-13f && x < 1e13f)) return print_slow(f, out);
  /* E = floor(log10(x)), then 9 digits always read back; try fewer while
   * they still do (gradients usually need 8 or 9, round numbers 1 or 2). */
  double dx = x;
  int E = 0;
  if (dx >= 1) {
    while (E < 12 && dx >= pow10d_tab[E + 1]) E++;
  } else {
    E = -1;
    while (E > -13 && dx * pow10d_tab[-E] < 1) E--;
  }
  uint64_t best_c = 0;
  int best_q = 0;
  for (int d = 9; d >= 1; d--) {
    int q = E - d + 1;
    double scaled = q <= 0 ? dx * pow10d_tab[-q] : dx / pow10d_tab[q];
    uint64_t c = (uint64_t)rint(scaled);
    /* 9 significant digits always read back to the same float32 (and the
     * nearest 9-digit decimal is never a float midpoint): no check needed */
    if (d < 9 && (c == 0 || !reads_back(c, q, x))) break;
    best_c = c;
    best_q = q;
  }
  while (best_c % 10 == 0) {
    best_c /= 10;
    best_q++;
  }
  return format(out, neg, best_c, best_q);
}

size_t codec_double_print(double d, char *out) {
  if (!isfinite(d)) {
    memcpy(out, "null", 4);
    return 4;
  }
  if (d == 0 && signbit(d)) { /* "-0" would read back as the integer 0 */
    memcpy(out, "-0.0", 4);
    return 4;
  }
  char buf[40];
  for (int prec = 15; prec <= 17; prec++) {
    snprintf(buf, sizeof buf, "%.*g", prec, d);
    if (strtod(buf, NULL) == d) break;
  }
  /* JSON has no "1e+20" problem, but integers-valued doubles stay numbers like 1 */
  size_t n = strlen(buf);
  memcpy(out, buf, n);
  return n;
}
