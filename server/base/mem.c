/* mem: aborting small allocations, and big aligned pre-touched arrays.
 * Arrays of 2 MiB and more come straight from mmap with transparent huge
 * pages requested (fewer faults and TLB misses in the kernels); smaller ones
 * from posix_memalign.  Owns no state.  Never logs except the one
 * out-of-memory line before abort().  Any thread. */
#include "mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define BIG_THRESHOLD MEM_BIG_THRESHOLD

static void oom(size_t n) {
  fprintf(stderr, "level=error msg=\"out of memory\" bytes=%zu\n", n);
  abort();
}

void *mem_xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) oom(n);
  return p;
}

void *mem_xcalloc(size_t count, size_t size) {
  void *p = calloc(count ? count : 1, size ? size : 1);
  if (!p) oom(count * size);
  return p;
}

void *mem_xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q) oom(n);
  return q;
}

char *mem_xstrdup(const char *s) { return mem_xstrndup(s, strlen(s)); }

char *mem_xstrndup(const char *s, size_t n) {
  char *d = mem_xmalloc(n + 1);
  memcpy(d, s, n);
  d[n] = 0;
  return d;
}

static size_t round_big(size_t bytes) { return (bytes + BIG_THRESHOLD - 1) & ~(size_t)(BIG_THRESHOLD - 1); }

void *mem_alloc_big(size_t bytes) {
  if (bytes < BIG_THRESHOLD) {
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) return NULL;
    memset(p, 0, bytes);
    return p;
  }
  size_t len = round_big(bytes);
  void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return NULL;
#ifdef MADV_HUGEPAGE
  madvise(p, len, MADV_HUGEPAGE);
#endif
  /* touch every page now, so no step pays for first-touch faults */
  for (size_t off = 0; off < len; off += 4096) ((volatile char *)p)[off] = 0;
  return p;
}

void mem_free_big(void *p, size_t bytes) {
  if (!p) return;
  if (bytes < BIG_THRESHOLD) free(p);
  else munmap(p, round_big(bytes));
}

void *mem_grow_big(void *p, size_t bytes, size_t new_bytes) {
  if (!p || bytes < BIG_THRESHOLD || new_bytes < bytes) return NULL;
  size_t len = round_big(bytes), nlen = round_big(new_bytes);
  if (nlen == len) return p;
  void *q = mremap(p, len, nlen, MREMAP_MAYMOVE);
  return q == MAP_FAILED ? NULL : q;
}

float *mem_alloc_floats(size_t n) {
  if (n > ((size_t)-1) / sizeof(float) / 2) return NULL;
  return mem_alloc_big(n * sizeof(float));
}

void mem_free_floats(float *p, size_t n) { mem_free_big(p, n * sizeof(float)); }
