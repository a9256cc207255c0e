/* fuzz.h: what every libFuzzer target in tests/fuzz/ shares.
 *
 * Each target defines LLVMFuzzerTestOneInput and checks invariants with
 * FUZZ_CHECK (a failed invariant aborts, so libFuzzer and the corpus replay
 * report it like a crash).  The same sources build two ways: with clang's
 * -fsanitize=fuzzer (make fuzz) and with replay.c's plain main (make test's
 * fuzz-replay, under ASan+UBSan).  No globals beyond read-only fixtures
 * built once on first use.
 */
#ifndef DESCENT_FUZZ_H
#define DESCENT_FUZZ_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* FUZZ_CHECK(cond) or FUZZ_CHECK(cond, "printf format", args...). */
#define FUZZ_CHECK(cond, ...)                                             \
  do {                                                                    \
    if (!(cond)) fuzz_fail(__FILE__, __LINE__, #cond, " " __VA_ARGS__);   \
  } while (0)

__attribute__((noreturn, format(printf, 4, 5))) static inline void fuzz_fail(const char *file, int line,
                                                                           const char *cond, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s:%d: invariant failed: %s\n ", file, line, cond);
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  abort();
}

/* A NUL-terminated heap copy of data[0..n) (the caller frees). */
static inline char *fuzz_strndup(const uint8_t *data, size_t n) {
  char *s = malloc(n + 1);
  if (!s) abort();
  memcpy(s, data, n);
  s[n] = 0;
  return s;
}

/* Reads the input front to back; past the end every read gives zeros. */
typedef struct fuzz_in {
  const uint8_t *p;
  size_t left;
} fuzz_in;

static inline uint8_t fuzz_u8(fuzz_in *in) {
  if (!in->left) return 0;
  in->left--;
  return *in->p++;
}

static inline uint64_t fuzz_u64(fuzz_in *in, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; i++) v |= (uint64_t)fuzz_u8(in) << (8 * i);
  return v;
}

static inline double fuzz_double(fuzz_in *in) {
  uint64_t u = fuzz_u64(in, 8);
  double d;
  memcpy(&d, &u, sizeof d);
  return d;
}

#endif
