/* codec_half: bfloat16 and float16 on the wire (proto/binary.md, "Wire
 * precision").  Half-precision values are widened to float32 exactly, in
 * one pass from the request bytes into the float buffer the kernels read;
 * parameters are narrowed to half precision rounding to nearest even.
 * Parameters and optimizer state always stay float32 in the daemon.
 *
 * The loops use F16C/AVX2 where the CPU has them (chosen at run time) and a
 * portable bit-exact fallback elsewhere; both give the same bits for every
 * input (tests/unit/test_codec_half.c checks all 65536 patterns).  Pure
 * functions: no state, no allocation, any thread.
 */
#ifndef DESCENT_CODEC_HALF_H
#define DESCENT_CODEC_HALF_H

#include <stddef.h>
#include <stdint.h>

enum wire_dtype { DTYPE_FLOAT32, DTYPE_BFLOAT16, DTYPE_FLOAT16 };

/* The dtype named by a media type's parameters ("application/octet-stream;
 * dtype=bfloat16"): DTYPE_* , DTYPE_FLOAT32 when there is none, or -1 for
 * a dtype this daemon does not know. */
int codec_half_dtype(const char *media_type);
const char *codec_half_dtype_name(int dtype); /* "float32", "bfloat16", "float16" */
size_t codec_half_size(int dtype);            /* bytes per value: 4 or 2 */

/* n little-endian half values at `in` (any alignment) widened into out. */
void codec_half_widen(int dtype, const void *in, float *out, size_t n);

/* n floats narrowed (nearest even) into n little-endian half values at out.
 * out may be the same memory as in (narrowing in place walks forward). */
void codec_half_narrow(int dtype, const float *in, void *out, size_t n);

/* Scalar forms (the reference the loops are tested against). */
float codec_bf16_to_f32(uint16_t h);
float codec_f16_to_f32(uint16_t h);
uint16_t codec_f32_to_bf16(float f);
uint16_t codec_f32_to_f16(float f);

#endif
