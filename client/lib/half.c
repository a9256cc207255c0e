/* half: bfloat16/float16 for libdescent's binary bodies (proto/binary.md,
 * "Wire precision").  The daemon has its own SIMD conversions
 * (server/codec/codec_half.c); these portable ones give the same bits
 * (nearest even, NaN kept quiet) and run only where a worker holds float32
 * and wants half-precision bytes.  Pure functions; any thread. */
#include <math.h>
#include <string.h>

#include "internal.h"

static uint16_t f32_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

static uint16_t f32_to_f16(float f) {
  uint32_t u, a;
  memcpy(&u, &f, 4);
  a = u & 0x7fffffffu;
  uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
  if (a >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (a > 0x7f800000u ? 0x200u | ((a >> 13) & 0x3ffu) : 0));
  if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);
  if (a < 0x38800000u) {
    float x;
    memcpy(&x, &a, 4);
    return (uint16_t)(sign | (uint16_t)nearbyintf(x * 0x1p24f));
  }
  uint32_t h = ((a >> 23) - 112) << 10 | ((a & 0x7fffffu) >> 13), rem = a & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
  return (uint16_t)(sign | h);
}

static float f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, u;
  if (exp == 0) {
    float f = (float)mant * 0x1p-24f;
    memcpy(&u, &f, 4);
    u |= sign;
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (mant << 13) | (mant ? 0x400000u : 0);
  } else {
    u = sign | ((exp + 112) << 23) | (mant << 13);
  }
  float f;
  memcpy(&f, &u, 4);
  return f;
}

void descent_to_dtype(descent_dtype dtype, const float *in, void *out, size_t n) {
  unsigned char *b = out;
  if (dtype == DESCENT_FLOAT32) {
    memmove(out, in, n * sizeof(float));
    return;
  }
  for (size_t i = 0; i < n; i++) {
    uint16_t v = dtype == DESCENT_BFLOAT16 ? f32_to_bf16(in[i]) : f32_to_f16(in[i]);
    b[2 * i] = (unsigned char)v;
    b[2 * i + 1] = (unsigned char)(v >> 8);
  }
}

void descent_from_dtype(descent_dtype dtype, const void *in, float *out, size_t n) {
  const unsigned char *b = in;
  if (dtype == DESCENT_FLOAT32) {
    memmove(out, in, n * sizeof(float));
    return;
  }
  for (size_t i = n; i-- > 0;) { /* backwards: safe in place (out wider than in) */
    uint16_t v = (uint16_t)(b[2 * i] | b[2 * i + 1] << 8);
    if (dtype == DESCENT_BFLOAT16) {
      uint32_t u = (uint32_t)v << 16;
      memcpy(&out[i], &u, 4);
    } else {
      out[i] = f16_to_f32(v);
    }
  }
}

size_t descent__dtype_size(descent_dtype t) { return t == DESCENT_FLOAT32 ? 4 : 2; }

const char *descent__dtype_type(descent_dtype t) {
  switch (t) {
  case DESCENT_BFLOAT16: return "application/octet-stream; dtype=bfloat16";
  case DESCENT_FLOAT16: return "application/octet-stream; dtype=float16";
  default: return "application/octet-stream";
  }
}
