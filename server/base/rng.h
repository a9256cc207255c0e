/* rng: counter-based random numbers for seeded initialisation and random search.
 *
 * The value at flat index i depends only on (seed, stream, i), never on how
 * many values were drawn before, so any slice of a tensor can be generated
 * alone (sharding) and the same bits come out on every machine: the
 * generator uses only integer arithmetic, IEEE +,-,*,/ and sqrt, with its own
 * log and cos (no libm transcendental whose last bit could differ).  The
 * exact definition is in proto/init.md.  Pure functions; any thread.
 */
#ifndef DESCENT_RNG_H
#define DESCENT_RNG_H

#include <stddef.h>
#include <stdint.h>

/* 64 random bits for (seed, stream, counter). */
uint64_t rng_bits(uint64_t seed, uint64_t stream, uint64_t counter);

/* A double uniform in (0, 1]: (bits >> 11) + 1, times 2^-53. */
double rng_uniform(uint64_t seed, uint64_t stream, uint64_t counter);

/* A standard normal N(0, 1) for index i (Box-Muller on counters 2i, 2i+1). */
double rng_normal(uint64_t seed, uint64_t stream, uint64_t i);

/* Fills out[0..n) with (float)(mean + std * N(0,1)) for indices first..first+n-1. */
void rng_fill_normal(float *out, size_t n, uint64_t first, uint64_t seed, uint64_t stream,
                     double mean, double std);

/* The same values as rng_fill_normal, one at a time through rng_log and rng_cos2pi
 * (the reference the vectorised fill is tested against; also its fallback). */
void rng__fill_normal_scalar(float *out, size_t n, uint64_t first, uint64_t seed,
                             uint64_t stream, double mean, double std);

/* z[k] = sqrt(-2 log(u1[k])) * cos2pi(u2[k]) (u in (0, 1]) in double, through the code
 * rng_fill_normal runs; returns 1 if that is the vectorised one (for tests). */
int rng__normals(double *z, const double *u1, const double *u2, size_t n);

/* Fills out[0..n) with (float)(low + (high - low) * U) for indices first..first+n-1,
 * U = rng_uniform(seed, stream, index) - 2^-53 in [0, 1). */
void rng_fill_uniform(float *out, size_t n, uint64_t first, uint64_t seed, uint64_t stream,
                      double low, double high);

/* The deterministic log and cos the generator uses (exposed for tests). */
double rng_log(double x);     /* x > 0 */
double rng_cos2pi(double u);  /* cos(2 pi u), u in [0, 1] */

#endif
