/* bufpool: size-classed free lists of pre-touched buffers.
 *
 * Owns the free lists and the idle/busy byte counts, under bp->lock.  Each
 * free list is a stack (the most recently returned buffer on top, still warm
 * in cache); an idle buffer stores its link and the time it was returned in
 * its own first bytes.  Never maps, unmaps or touches pages with the lock
 * held (allocation and trimming free outside it).  Any thread. */
#include "bufpool.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "mem.h"

#define MIN_SHIFT 16 /* 64 KiB: below this, malloc is fine */
#define SUB 4        /* classes per power of two */
#define NCLASS (40 * SUB)

typedef struct node {
  struct node *next;
  uint64_t idle_since; /* ms, monotonic */
  int cls;
} node;

struct bufpool {
  pthread_mutex_t lock;
  size_t max_cached, idle, busy;
  node *free[NCLASS];
};

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* 2^k, 1.25 * 2^k, 1.5 * 2^k, 1.75 * 2^k for k = MIN_SHIFT, ... */
static size_t class_size(int c) {
  return ((size_t)1 << (MIN_SHIFT + c / SUB)) / SUB * (size_t)(SUB + c % SUB);
}

bufpool *bufpool_new(size_t max_cached) {
  bufpool *bp = mem_xcalloc(1, sizeof *bp);
  pthread_mutex_init(&bp->lock, NULL);
  bp->max_cached = max_cached;
  return bp;
}

static int class_of(size_t bytes, size_t *cap) {
  int c = 0;
  while (class_size(c) < bytes && c < NCLASS - 1) c++;
  *cap = class_size(c);
  return *cap >= bytes ? c : -1;
}

void bufpool_free(bufpool *bp) {
  if (!bp) return;
  for (int c = 0; c < NCLASS; c++)
    for (node *n = bp->free[c]; n;) {
      node *next = n->next;
      mem_free_big(n, class_size(c));
      n = next;
    }
  pthread_mutex_destroy(&bp->lock);
  free(bp);
}

static bool pooled(const bufpool *bp, size_t bytes) { return bp && bytes >= ((size_t)1 << MIN_SHIFT) / 2; }

size_t bufpool_capacity(const bufpool *bp, size_t bytes) {
  if (!pooled(bp, bytes)) return bytes;
  size_t cap;
  return class_of(bytes, &cap) < 0 ? 0 : cap;
}

/* Pops an idle buffer of class c (cap bytes), or NULL; the bytes count as
 * busy when one was popped, or always if `charge_anyway` (the caller then
 * allocates a fresh one of that class). */
static node *take_idle(bufpool *bp, int c, size_t cap, bool charge_anyway) {
  pthread_mutex_lock(&bp->lock);
  node *n = bp->free[c];
  if (n) {
    bp->free[c] = n->next;
    bp->idle -= cap;
  }
  if (n || charge_anyway) bp->busy += cap;
  pthread_mutex_unlock(&bp->lock);
  return n;
}

void *bufpool_get_idle(bufpool *bp, size_t bytes, size_t *cap) {
  if (!pooled(bp, bytes)) return NULL;
  int c = class_of(bytes, cap);
  return c < 0 ? NULL : take_idle(bp, c, *cap, false);
}

void *bufpool_get(bufpool *bp, size_t bytes, size_t *cap) {
  if (!pooled(bp, bytes)) {
    *cap = bytes;
    return mem_alloc_big(bytes); /* small: posix_memalign'd, 64-byte aligned */
  }
  int c = class_of(bytes, cap);
  if (c < 0) return NULL;
  node *n = take_idle(bp, c, *cap, true);
  if (n) return n;
  void *p = mem_alloc_big(*cap);
  if (!p) {
    pthread_mutex_lock(&bp->lock);
    bp->busy -= *cap;
    pthread_mutex_unlock(&bp->lock);
  }
  return p;
}

void *bufpool_grow(bufpool *bp, void *p, size_t cap, size_t bytes, size_t *ncap) {
  size_t want = bufpool_capacity(bp, bytes);
  if (!pooled(bp, cap) || !want || want < cap) return NULL;
  void *q = mem_grow_big(p, cap, want);
  if (!q) return NULL;
  pthread_mutex_lock(&bp->lock);
  bp->busy += want - cap;
  pthread_mutex_unlock(&bp->lock);
  *ncap = want;
  return q;
}

void bufpool_put(bufpool *bp, void *p, size_t cap) {
  if (!p) return;
  if (!pooled(bp, cap)) {
    mem_free_big(p, cap);
    return;
  }
  size_t ccap;
  int c = class_of(cap, &ccap);
  pthread_mutex_lock(&bp->lock);
  bp->busy -= cap;
  if (c >= 0 && ccap == cap && bp->idle + cap <= bp->max_cached) {
    node *n = p;
    n->idle_since = now_ms();
    n->cls = c;
    n->next = bp->free[c];
    bp->free[c] = n;
    bp->idle += cap;
    p = NULL;
  }
  pthread_mutex_unlock(&bp->lock);
  if (p) mem_free_big(p, cap);
}

size_t bufpool_trim(bufpool *bp, unsigned idle_ms) {
  if (!bp) return 0;
  uint64_t now = now_ms();
  node *drop = NULL;
  size_t freed = 0;
  pthread_mutex_lock(&bp->lock);
  for (int c = 0; c < NCLASS; c++)
    for (node **at = &bp->free[c]; *at;) {
      node *n = *at;
      if (now - n->idle_since < idle_ms) {
        at = &n->next;
        continue;
      }
      *at = n->next;
      n->next = drop;
      drop = n;
      bp->idle -= class_size(c);
    }
  pthread_mutex_unlock(&bp->lock);
  while (drop) { /* unmapping takes time: outside the lock */
    node *next = drop->next;
    size_t size = class_size(drop->cls);
    freed += size;
    mem_free_big(drop, size);
    drop = next;
  }
  return freed;
}

/* Under the lock: any thread may ask while others get and put. */
static size_t locked_read(const bufpool *bp, const size_t *field) {
  if (!bp) return 0;
  pthread_mutex_lock((pthread_mutex_t *)&bp->lock);
  size_t v = *field;
  pthread_mutex_unlock((pthread_mutex_t *)&bp->lock);
  return v;
}

size_t bufpool_idle_bytes(const bufpool *bp) { return bp ? locked_read(bp, &bp->idle) : 0; }
size_t bufpool_busy_bytes(const bufpool *bp) { return bp ? locked_read(bp, &bp->busy) : 0; }
