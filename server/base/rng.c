/* rng: splitmix64-style counter hashing plus Box-Muller with our own log/cos.
 * Built with -ffp-contract=off (as all of descent) so each operation rounds
 * once, in the order written: the results are the same on every IEEE-754
 * machine.  See proto/init.md for the definition users can reimplement.
 * Owns no state (pure functions of their arguments), never allocates or
 * calls libm's transcendentals.  Any thread. */
#include "rng.h"

#include <math.h>
#include <string.h>

static uint64_t mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t rng_bits(uint64_t seed, uint64_t stream, uint64_t counter) {
  uint64_t key = mix(seed ^ (stream * 0xd1b54a32d192ed03ull));
  return mix(key + (counter + 1) * 0x9e3779b97f4a7c15ull);
}

double rng_uniform(uint64_t seed, uint64_t stream, uint64_t counter) {
  return (double)((rng_bits(seed, stream, counter) >> 11) + 1) * 0x1p-53;
}

double rng_log(double x) {
  int e;
  double m = frexp(x, &e); /* exact: x = m * 2^e, m in [0.5, 1) */
  if (m < 0.70710678118654752440) {
    m *= 2;
    e -= 1;
  }
  double s = (m - 1) / (m + 1), s2 = s * s, term = s, sum = 0;
  for (int k = 1; k <= 23; k += 2) {
    sum += term / k;
    term *= s2;
  }
  return (double)e * 0.69314718055994530942 + 2 * sum;
}

static double cos_small(double x) { /* |x| <= pi/4 */
  double x2 = x * x, term = 1, sum = 0;
  for (int k = 0; k < 10; k++) {
    sum += term;
    term *= -x2 / ((2 * k + 1) * (2 * k + 2));
  }
  return sum;
}

static double sin_small(double x) { /* |x| <= pi/4 */
  double x2 = x * x, term = x, sum = 0;
  for (int k = 0; k < 10; k++) {
    sum += term;
    term *= -x2 / ((2 * k + 2) * (2 * k + 3));
  }
  return sum;
}

double rng_cos2pi(double u) {
  const double two_pi = 6.28318530717958647692;
  double t = u - floor(u); /* [0, 1) */
  if (t > 0.5) t = 1 - t;  /* cos is even about 0.5 */
  double sign = 1;
  if (t > 0.25) {
    t = 0.5 - t;
    sign = -1;
  }
  if (t > 0.125) return sign * sin_small(two_pi * (0.25 - t));
  return sign * cos_small(two_pi * t);
}

double rng_normal(uint64_t seed, uint64_t stream, uint64_t i) {
  double u1 = rng_uniform(seed, stream, 2 * i);
  double u2 = rng_uniform(seed, stream, 2 * i + 1);
  return sqrt(-2 * rng_log(u1)) * rng_cos2pi(u2);
}

/* ---- row fills ------------------------------------------------------------------
 * The fills hoist the key (the stream's mix, a pure function of seed and stream)
 * out of the loop, and the normal fill computes 8 values at a time on AVX2: each
 * lane runs exactly the IEEE operations of rng_log / rng_cos2pi above, in the
 * same order (the branches become blends of both exact results, the last unused
 * term of each series is not computed, and term / 1 is term), so every value is
 * bit for bit the scalar one (tests/unit/test_rng.c checks 10^6 and more); the
 * counter hashing runs on the lanes too. */

static double uniform_key(uint64_t key, uint64_t counter) {
  return (double)((mix(key + (counter + 1) * 0x9e3779b97f4a7c15ull) >> 11) + 1) * 0x1p-53;
}

static uint64_t stream_key(uint64_t seed, uint64_t stream) {
  return mix(seed ^ (stream * 0xd1b54a32d192ed03ull));
}

void rng__fill_normal_scalar(float *out, size_t n, uint64_t first, uint64_t seed,
                             uint64_t stream, double mean, double std) {
  uint64_t key = stream_key(seed, stream);
  for (size_t k = 0; k < n; k++) {
    uint64_t i = first + k;
    double u1 = uniform_key(key, 2 * i), u2 = uniform_key(key, 2 * i + 1);
    double z = sqrt(-2 * rng_log(u1)) * rng_cos2pi(u2);
    out[k] = (float)(mean + std * z);
  }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(DESCENT_NO_CLONES)
#include <immintrin.h>
#define HAVE_AVX2_PATH 1

#define AVX2 __attribute__((target("avx2")))

AVX2 static inline __m256d sel(__m256d mask, __m256d yes, __m256d no) {
  return _mm256_blendv_pd(no, yes, mask);
}

/* rng_log on 4 lanes, x in (0, 1] (so x is normal: frexp is a bit split). */
AVX2 static inline __m256d log4(__m256d x) {
  const __m256i mant = _mm256_set1_epi64x(0x000fffffffffffffll);
  const __m256i half = _mm256_set1_epi64x(0x3fe0000000000000ll); /* exponent of [0.5, 1) */
  const __m256i magic = _mm256_set1_epi64x(0x4330000000000000ll);  /* 2^52 */
  __m256i b = _mm256_castpd_si256(x);
  __m256d m = _mm256_castsi256_pd(_mm256_or_si256(_mm256_and_si256(b, mant), half));
  __m256i E = _mm256_srli_epi64(b, 52);
  __m256d e = _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(E, magic)), _mm256_set1_pd(0x1p52));
  e = _mm256_sub_pd(e, _mm256_set1_pd(1022)); /* exact small integers */
  __m256d lo = _mm256_cmp_pd(m, _mm256_set1_pd(0.70710678118654752440), _CMP_LT_OQ);
  m = sel(lo, _mm256_mul_pd(m, _mm256_set1_pd(2)), m);
  e = sel(lo, _mm256_sub_pd(e, _mm256_set1_pd(1)), e);
  const __m256d one = _mm256_set1_pd(1);
  __m256d s = _mm256_div_pd(_mm256_sub_pd(m, one), _mm256_add_pd(m, one));
  __m256d s2 = _mm256_mul_pd(s, s), term = s;
  __m256d sum = _mm256_add_pd(_mm256_setzero_pd(), term); /* term / 1 */
  for (int k = 3; k <= 23; k += 2) {
    term = _mm256_mul_pd(term, s2);
    sum = _mm256_add_pd(sum, _mm256_div_pd(term, _mm256_set1_pd((double)k)));
  }
  return _mm256_add_pd(_mm256_mul_pd(e, _mm256_set1_pd(0.69314718055994530942)),
                       _mm256_mul_pd(_mm256_set1_pd(2), sum));
}

/* rng_cos2pi on 4 lanes: the lanes taking sin_small start their series at x
 * and divide by (2k+2)(2k+3), the others start at 1 and divide by (2k+1)(2k+2). */
AVX2 static inline __m256d cos2pi4(__m256d u) {
  const __m256d two_pi = _mm256_set1_pd(6.28318530717958647692);
  __m256d t = _mm256_sub_pd(u, _mm256_floor_pd(u));
  __m256d c = _mm256_cmp_pd(t, _mm256_set1_pd(0.5), _CMP_GT_OQ);
  t = sel(c, _mm256_sub_pd(_mm256_set1_pd(1), t), t);
  c = _mm256_cmp_pd(t, _mm256_set1_pd(0.25), _CMP_GT_OQ);
  t = sel(c, _mm256_sub_pd(_mm256_set1_pd(0.5), t), t);
  __m256d sign = sel(c, _mm256_set1_pd(-1), _mm256_set1_pd(1));
  __m256d sn = _mm256_cmp_pd(t, _mm256_set1_pd(0.125), _CMP_GT_OQ);
  __m256d x = sel(sn, _mm256_mul_pd(two_pi, _mm256_sub_pd(_mm256_set1_pd(0.25), t)),
                  _mm256_mul_pd(two_pi, t));
  __m256d x2 = _mm256_mul_pd(x, x), nx2 = _mm256_xor_pd(x2, _mm256_set1_pd(-0.0)); /* -x2 */
  __m256d term = sel(sn, x, _mm256_set1_pd(1)), sum = _mm256_setzero_pd();
  for (int k = 0; k < 10; k++) {
    sum = _mm256_add_pd(sum, term);
    if (k == 9) break; /* the last term is never added */
    __m256d d = sel(sn, _mm256_set1_pd((2 * k + 2) * (2 * k + 3)),
                    _mm256_set1_pd((2 * k + 1) * (2 * k + 2)));
    term = _mm256_mul_pd(term, _mm256_div_pd(nx2, d));
  }
  return _mm256_mul_pd(sign, sum);
}

AVX2 static inline __m256d z4(const double *u1, const double *u2) {
  __m256d l = _mm256_mul_pd(_mm256_set1_pd(-2), log4(_mm256_loadu_pd(u1)));
  return _mm256_mul_pd(_mm256_sqrt_pd(l), cos2pi4(_mm256_loadu_pd(u2)));
}

AVX2 static inline __m128 normal4(const double *u1, const double *u2, __m256d mean, __m256d std) {
  return _mm256_cvtpd_ps(_mm256_add_pd(mean, _mm256_mul_pd(std, z4(u1, u2))));
}

AVX2 static void z8(double *z, size_t n, const double *u1, const double *u2) {
  double a[8] = {1, 1, 1, 1, 1, 1, 1, 1}, b[8] = {1, 1, 1, 1, 1, 1, 1, 1}, t[8];
  memcpy(a, u1, n * sizeof *a);
  memcpy(b, u2, n * sizeof *b);
  _mm256_storeu_pd(t, z4(a, b));
  _mm256_storeu_pd(t + 4, z4(a + 4, b + 4));
  memcpy(z, t, n * sizeof *z);
}

AVX2 static void normal8(float *out, size_t n, const double *u1, const double *u2,
                         double mean, double std) {
  __m256d vm = _mm256_set1_pd(mean), vs = _mm256_set1_pd(std);
  __m128 a = normal4(u1, u2, vm, vs), b = normal4(u1 + 4, u2 + 4, vm, vs);
  if (n >= 8) {
    _mm_storeu_ps(out, a);
    _mm_storeu_ps(out + 4, b);
  } else {
    float tmp[8];
    _mm_storeu_ps(tmp, a);
    _mm_storeu_ps(tmp + 4, b);
    memcpy(out, tmp, n * sizeof *out);
  }
}

/* mix and the uniform on 4 lanes: 64-bit products from 32-bit ones (mod 2^64, as
 * in C), and (bits >> 11) + 1 <= 2^53 converted as hi * 2^32 + lo, both exact. */
AVX2 static inline __m256i mul64(__m256i a, uint64_t c) {
  __m256i vc = _mm256_set1_epi64x((long long)c), ch = _mm256_set1_epi64x((long long)(c >> 32));
  __m256i cross = _mm256_add_epi64(_mm256_mul_epu32(_mm256_srli_epi64(a, 32), vc),
                                   _mm256_mul_epu32(a, ch));
  return _mm256_add_epi64(_mm256_mul_epu32(a, vc), _mm256_slli_epi64(cross, 32));
}

AVX2 static inline __m256d uniform4(__m256i z) {
  z = mul64(_mm256_xor_si256(z, _mm256_srli_epi64(z, 30)), 0xbf58476d1ce4e5b9ull);
  z = mul64(_mm256_xor_si256(z, _mm256_srli_epi64(z, 27)), 0x94d049bb133111ebull);
  z = _mm256_xor_si256(z, _mm256_srli_epi64(z, 31));
  __m256i v = _mm256_add_epi64(_mm256_srli_epi64(z, 11), _mm256_set1_epi64x(1));
  const __m256i magic = _mm256_set1_epi64x(0x4330000000000000ll); /* 2^52 */
  const __m256d p52 = _mm256_set1_pd(0x1p52);
  __m256i hi32 = _mm256_srli_epi64(v, 32);
  __m256i lo32 = _mm256_and_si256(v, _mm256_set1_epi64x(0xffffffffll));
  __m256d hi = _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(hi32, magic)), p52);
  __m256d lo = _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(lo32, magic)), p52);
  __m256d d = _mm256_add_pd(_mm256_mul_pd(hi, _mm256_set1_pd(0x1p32)), lo);
  return _mm256_mul_pd(d, _mm256_set1_pd(0x1p-53));
}

AVX2 static void fill_normal_avx2(float *out, size_t n, uint64_t first, uint64_t key,
                                  double mean, double std) {
  const uint64_t g = 0x9e3779b97f4a7c15ull;
  /* lane j of a block at index i: counter 2(i + j) -> key + (2(i + j) + 1) g, then + g */
  __m256i step = _mm256_set_epi64x((long long)(6 * g), (long long)(4 * g), (long long)(2 * g), 0);
  __m256i gv = _mm256_set1_epi64x((long long)g), g8 = _mm256_set1_epi64x((long long)(8 * g));
  __m256i e = _mm256_add_epi64(_mm256_set1_epi64x((long long)(key + (2 * first + 1) * g)), step);
  for (size_t k = 0; k < n; k += 8) {
    double u1[8], u2[8];
    __m256i e2 = _mm256_add_epi64(e, g8);
    _mm256_storeu_pd(u1, uniform4(e));
    _mm256_storeu_pd(u2, uniform4(_mm256_add_epi64(e, gv)));
    _mm256_storeu_pd(u1 + 4, uniform4(e2));
    _mm256_storeu_pd(u2 + 4, uniform4(_mm256_add_epi64(e2, gv)));
    normal8(out + k, n - k, u1, u2, mean, std);
    e = _mm256_add_epi64(e2, g8);
  }
}

static int have_avx2(void) { return __builtin_cpu_supports("avx2"); }
#else
static int have_avx2(void) { return 0; }
#endif

void rng_fill_normal(float *out, size_t n, uint64_t first, uint64_t seed, uint64_t stream,
                     double mean, double std) {
#ifdef HAVE_AVX2_PATH
  if (have_avx2()) {
    fill_normal_avx2(out, n, first, stream_key(seed, stream), mean, std);
    return;
  }
#endif
  rng__fill_normal_scalar(out, n, first, seed, stream, mean, std);
}

int rng__normals(double *z, const double *u1, const double *u2, size_t n) {
  for (size_t k = 0; k < n; k += 8) {
    size_t m = n - k < 8 ? n - k : 8;
#ifdef HAVE_AVX2_PATH
    if (have_avx2()) {
      z8(z + k, m, u1 + k, u2 + k);
      continue;
    }
#endif
    for (size_t j = k; j < k + m; j++) z[j] = sqrt(-2 * rng_log(u1[j])) * rng_cos2pi(u2[j]);
  }
  return have_avx2();
}

void rng_fill_uniform(float *out, size_t n, uint64_t first, uint64_t seed, uint64_t stream,
                      double low, double high) {
  uint64_t key = stream_key(seed, stream);
  for (size_t k = 0; k < n; k++) {
    double u = uniform_key(key, first + k) - 0x1p-53;
    out[k] = (float)(low + (high - low) * u);
  }
}
