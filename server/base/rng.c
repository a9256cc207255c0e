/* rng: splitmix64-style counter hashing plus Box-Muller with our own log/cos.
 * Built with -ffp-contract=off (as all of descent) so each operation rounds
 * once, in the order written: the results are the same on every IEEE-754
 * machine.  See proto/init.md for the definition users can reimplement.
 * Owns no state (pure functions of their arguments), never allocates or
 * calls libm's transcendentals.  Any thread. */
#include "rng.h"

#include <math.h>

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

void rng_fill_normal(float *out, size_t n, uint64_t first, uint64_t seed, uint64_t stream,
                     double mean, double std) {
  for (size_t k = 0; k < n; k++) out[k] = (float)(mean + std * rng_normal(seed, stream, first + k));
}

void rng_fill_uniform(float *out, size_t n, uint64_t first, uint64_t seed, uint64_t stream,
                      double low, double high) {
  for (size_t k = 0; k < n; k++) {
    double u = rng_uniform(seed, stream, first + k) - 0x1p-53;
    out[k] = (float)(low + (high - low) * u);
  }
}
