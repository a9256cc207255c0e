/* bench/common: what every benchmark program shares: a monotonic clock,
 * best-of-N bookkeeping, and the results file.
 *
 * Each program prints its own human-readable section and appends one
 * "key<TAB>value" line per figure to the results file named by --out (or
 * $DESCENT_BENCH_OUT); bench_report turns that file into the table of ratios.
 * Header-only (static inline): the programs are single files.
 */
#ifndef DESCENT_BENCH_COMMON_H
#define DESCENT_BENCH_COMMON_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline double bench_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline double bench_min(double a, double b) { return a < b ? a : b; }

/* The results file: opened once per program in append mode. */
static FILE *bench_out_file;

static inline void bench_out_open(const char *path) {
  if (!path) path = getenv("DESCENT_BENCH_OUT");
  if (!path || !*path) return;
  bench_out_file = fopen(path, "a");
  if (!bench_out_file) fprintf(stderr, "bench: cannot append to %s\n", path);
}

/* Records one figure: key (printf format) and its value. */
static inline void bench_put(double value, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline void bench_put(double value, const char *fmt, ...) {
  if (!bench_out_file) return;
  char key[160];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(key, sizeof key, fmt, ap);
  va_end(ap);
  fprintf(bench_out_file, "%s\t%.6g\n", key, value);
  fflush(bench_out_file);
}

/* Records a text figure (no tabs or newlines in text). */
static inline void bench_put_str(const char *key, const char *text) {
  if (!bench_out_file) return;
  fprintf(bench_out_file, "%s\t%s\n", key, text);
  fflush(bench_out_file);
}

static inline void bench_out_close(void) {
  if (bench_out_file) fclose(bench_out_file);
  bench_out_file = NULL;
}

/* The value of "--name V" in argv, or def. */
static inline const char *bench_arg(int argc, char **argv, const char *name, const char *def) {
  for (int i = 1; i + 1 < argc; i++)
    if (strcmp(argv[i], name) == 0) return argv[i + 1];
  return def;
}

static inline int bench_flag(int argc, char **argv, const char *name) {
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], name) == 0) return 1;
  return 0;
}

/* A deterministic fill: xorshift values in [-1, 1). */
static inline void bench_fill(float *v, size_t n, uint64_t seed, float scale, float offset) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    v[i] = offset + scale * ((float)(x >> 40) / (float)(1u << 24) * 2.0f - 1.0f);
  }
}

#endif
