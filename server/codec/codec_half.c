/* codec_half: bfloat16/float16 widening and narrowing (see codec_half.h).
 * bfloat16 is the top half of a float32, so widening is a shift and
 * narrowing a rounding add; float16 has its own exponent, so the portable
 * code handles subnormals, infinities and NaNs by hand and the fast path
 * uses F16C's conversions, which round the same way (nearest even).
 * Owns only the cached CPU check (has_f16c: computed on first use; every
 * thread computes the same value).  Never allocates.  Any thread. */
#include "codec_half.h"

#include <math.h>
#include <string.h>
#include <strings.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(DESCENT_NO_CLONES)
#include <immintrin.h>
#define HAVE_F16C_PATH 1
#endif

/* ---- scalar forms ------------------------------------------------------------ */

static float bits_f32(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static uint32_t f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

float codec_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

float codec_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  if (exp == 0) { /* zero or subnormal: mant * 2^-24, exact in float32 */
    float f = (float)mant * 0x1p-24f;
    return bits_f32(f32_bits(f) | sign);
  }
  if (exp == 31) /* infinity, or NaN made quiet (as F16C does) */
    return bits_f32(sign | 0x7f800000u | (mant << 13) | (mant ? 0x400000u : 0));
  return bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t codec_f32_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* NaN stays NaN, quiet */
  u += 0x7fffu + ((u >> 16) & 1u); /* nearest even; overflow rounds to infinity */
  return (uint16_t)(u >> 16);
}

uint16_t codec_f32_to_f16(float f) {
  uint32_t u = f32_bits(f), a = u & 0x7fffffffu;
  uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
  if (a >= 0x7f800000u) /* infinity, or NaN made quiet */
    return (uint16_t)(sign | 0x7c00u | (a > 0x7f800000u ? 0x200u | ((a >> 13) & 0x3ffu) : 0));
  if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to infinity */
  if (a < 0x38800000u) { /* below 2^-14: a subnormal half (or 0x400, the smallest normal) */
    float x = bits_f32(a) * 0x1p24f; /* exact: a power-of-two scale */
    return (uint16_t)(sign | (uint16_t)nearbyintf(x));
  }
  uint32_t h = ((a >> 23) - 112) << 10 | ((a & 0x7fffffu) >> 13), rem = a & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++; /* may carry into the exponent: right */
  return (uint16_t)(sign | h);
}

/* ---- loops ------------------------------------------------------------------- */

static uint16_t load16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }
static void store16(unsigned char *p, uint16_t v) {
  p[0] = (unsigned char)v;
  p[1] = (unsigned char)(v >> 8);
}

#ifdef HAVE_F16C_PATH
__attribute__((target("avx2,f16c"))) static size_t f16_widen_f16c(const unsigned char *in, float *out, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(in + 2 * i))));
  return i;
}

__attribute__((target("avx2,f16c"))) static size_t f16_narrow_f16c(const float *in, unsigned char *out, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128((__m128i *)(out + 2 * i), h);
  }
  return i;
}

__attribute__((target("avx2"))) static size_t bf16_widen_avx2(const unsigned char *in, float *out, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(in + 2 * i)));
    _mm256_storeu_si256((__m256i *)(out + i), _mm256_slli_epi32(w, 16));
  }
  return i;
}

/* Reads the CPU model libgcc filled in at start (cheap; no cache to race on). */
/* Nearest-even rounding of 8 floats to bfloat16 (NaNs kept quiet, as the
 * scalar form does); forward-safe in place like the f16c loop. */
__attribute__((target("avx2"))) static size_t bf16_narrow_avx2(const float *in, unsigned char *out, size_t n) {
  const __m256i abs = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
  const __m256i bias = _mm256_set1_epi32(0x7fff), one = _mm256_set1_epi32(1), quiet = _mm256_set1_epi32(0x40);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256i r[2];
    for (int k = 0; k < 2; k++) {
      __m256i u = _mm256_loadu_si256((const __m256i *)(in + i + 8 * k));
      __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs), inf);
      __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), one);
      __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(bias, lsb)), 16);
      __m256i keep = _mm256_or_si256(_mm256_srli_epi32(u, 16), quiet);
      r[k] = _mm256_blendv_epi8(rounded, keep, nan);
    }
    /* 16 values of 16 bits: packus works per 128-bit lane, so put the lanes back in order */
    __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r[0], r[1]), 0xd8);
    _mm256_storeu_si256((__m256i *)(out + 2 * i), packed);
  }
  return i;
}

static int has_f16c(void) {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
}
#endif

void codec_half_widen(int dtype, const void *in, float *out, size_t n) {
  const unsigned char *b = in;
  size_t i = 0;
  if (dtype == DTYPE_BFLOAT16) {
#ifdef HAVE_F16C_PATH
    if (has_f16c()) i = bf16_widen_avx2(b, out, n);
#endif
    for (; i < n; i++) out[i] = codec_bf16_to_f32(load16(b + 2 * i));
  } else if (dtype == DTYPE_FLOAT16) {
#ifdef HAVE_F16C_PATH
    if (has_f16c()) i = f16_widen_f16c(b, out, n);
#endif
    for (; i < n; i++) out[i] = codec_f16_to_f32(load16(b + 2 * i));
  } else {
    memmove(out, in, n * sizeof(float));
  }
}

void codec_half_narrow(int dtype, const float *in, void *out, size_t n) {
  unsigned char *b = out;
  size_t i = 0;
  if (dtype == DTYPE_BFLOAT16) {
#ifdef HAVE_F16C_PATH
    /* 16 at a time reads 64 bytes before writing 32 of them: forward-safe in place */
    if (has_f16c()) i = bf16_narrow_avx2(in, b, n);
#endif
    for (; i < n; i++) store16(b + 2 * i, codec_f32_to_bf16(in[i]));
  } else if (dtype == DTYPE_FLOAT16) {
#ifdef HAVE_F16C_PATH
    /* 8 at a time reads 32 bytes before writing 16 of them: still forward-safe */
    if (has_f16c()) i = f16_narrow_f16c(in, b, n);
#endif
    for (; i < n; i++) store16(b + 2 * i, codec_f32_to_f16(in[i]));
  } else {
    memmove(out, in, n * sizeof(float));
  }
}

/* ---- names ------------------------------------------------------------------- */

static const char *const names[] = {"float32", "bfloat16", "float16"};

const char *codec_half_dtype_name(int dtype) {
  return dtype >= 0 && dtype <= DTYPE_FLOAT16 ? names[dtype] : "?";
}

size_t codec_half_size(int dtype) { return dtype == DTYPE_FLOAT32 ? 4 : 2; }

int codec_half_dtype(const char *mt) {
  if (!mt) return DTYPE_FLOAT32;
  for (const char *p = strchr(mt, ';'); p; p = strchr(p + 1, ';')) {
    p++;
    while (*p == ' ' || *p == '\t') p++;
    if (strncasecmp(p, "dtype=", 6)) continue;
    const char *v = p + 6;
    size_t len = strcspn(v, "; \t,");
    if (len >= 2 && v[0] == '"' && v[len - 1] == '"') {
      v++;
      len -= 2;
    }
    for (int d = 0; d <= DTYPE_FLOAT16; d++)
      if (strlen(names[d]) == len && !strncasecmp(v, names[d], len)) return d;
    if (len == 4 && !strncasecmp(v, "bf16", 4)) return DTYPE_BFLOAT16;
    if (len == 4 && !strncasecmp(v, "fp16", 4)) return DTYPE_FLOAT16;
    return -1;
  }
  return DTYPE_FLOAT32;
}
