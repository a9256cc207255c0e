/* codec_float: float32 <-> decimal text, fast and exact.
 *
 * Parsing follows the JSON number grammar strictly (no NaN, Infinity, hex,
 * leading '+', "1." or ".5") and rounds correctly to float32 (the same bits
 * as strtof).  Printing writes the shortest decimal that reads back to the
 * same float32 (so JSON replies round-trip bit for bit), e.g. 0.1f -> "0.1".
 * Both avoid the C library on the common path: an exact 64-bit mantissa
 * times a power of ten in long double, with strtof/snprintf kept for the
 * rare inputs where that could round differently.  No allocation; any thread.
 */
#ifndef DESCENT_CODEC_FLOAT_H
#define DESCENT_CODEC_FLOAT_H

#include <stddef.h>

/* Parses one JSON number at s (not beyond end).  On success stores the
 * float32 in *out (overflow to +-inf is reported as an error by the caller
 * through isfinite) and returns the number of bytes consumed; returns 0 if
 * s does not start with a valid JSON number. */
size_t codec_float_parse(const char *s, const char *end, float *out);

/* As codec_float_parse, also giving the value as a double (for integers). */
size_t codec_float_parse_double(const char *s, const char *end, double *out);

/* Writes the shortest round-trip decimal of f (finite) at out, which must
 * have room for CODEC_FLOAT_MAX bytes; returns the length (no terminator).
 * Non-finite values are written as null (JSON has no NaN). */
#define CODEC_FLOAT_MAX 24
size_t codec_float_print(float f, char *out);

/* The shortest of %.15g, %.16g, %.17g that reads back to the same double
 * (for hyperparameters: 0.1 prints as 0.1, and round-trips).  out needs
 * CODEC_FLOAT_MAX + 8 bytes.  Non-finite: null. */
size_t codec_double_print(double d, char *out);

#endif
