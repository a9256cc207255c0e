/* bufpool: size-classed free lists of pre-touched buffers. */
#include "bufpool.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include "mem.h"

#define MIN_SHIFT 16 /* 64 KiB: below this, malloc is fine */
#define NCLASS 48

typedef struct node {
  struct node *next;
} node;

struct bufpool {
  pthread_mutex_t lock;
  size_t max_cached, idle, busy;
  node *free[NCLASS];
};

bufpool *bufpool_new(size_t max_cached) {
  bufpool *bp = mem_xcalloc(1, sizeof *bp);
  pthread_mutex_init(&bp->lock, NULL);
  bp->max_cached = max_cached;
  return bp;
}

static int class_of(size_t bytes, size_t *cap) {
  int c = 0;
  size_t size = (size_t)1 << MIN_SHIFT;
  while (size < bytes && c < NCLASS - 1) {
    size <<= 1;
    c++;
  }
  *cap = size;
  return size >= bytes ? c : -1;
}

void bufpool_free(bufpool *bp) {
  if (!bp) return;
  for (int c = 0; c < NCLASS; c++)
    for (node *n = bp->free[c]; n;) {
      node *next = n->next;
      mem_free_big(n, (size_t)1 << (MIN_SHIFT + c));
      n = next;
    }
  pthread_mutex_destroy(&bp->lock);
  free(bp);
}

void *bufpool_get(bufpool *bp, size_t bytes, size_t *cap) {
  if (bytes < ((size_t)1 << MIN_SHIFT) / 2 || !bp) {
    *cap = bytes;
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) return NULL;
    return p;
  }
  int c = class_of(bytes, cap);
  if (c < 0) return NULL;
  pthread_mutex_lock(&bp->lock);
  node *n = bp->free[c];
  if (n) {
    bp->free[c] = n->next;
    bp->idle -= *cap;
  }
  bp->busy += *cap;
  pthread_mutex_unlock(&bp->lock);
  if (n) return n;
  void *p = mem_alloc_big(*cap);
  if (!p) {
    pthread_mutex_lock(&bp->lock);
    bp->busy -= *cap;
    pthread_mutex_unlock(&bp->lock);
  }
  return p;
}

void bufpool_put(bufpool *bp, void *p, size_t cap) {
  if (!p) return;
  if (!bp || cap < ((size_t)1 << MIN_SHIFT) / 2) {
    free(p);
    return;
  }
  size_t ccap;
  int c = class_of(cap, &ccap);
  pthread_mutex_lock(&bp->lock);
  bp->busy -= cap;
  if (c >= 0 && ccap == cap && bp->idle + cap <= bp->max_cached) {
    node *n = p;
    n->next = bp->free[c];
    bp->free[c] = n;
    bp->idle += cap;
    p = NULL;
  }
  pthread_mutex_unlock(&bp->lock);
  if (p) mem_free_big(p, cap);
}

size_t bufpool_idle_bytes(const bufpool *bp) { return bp ? bp->idle : 0; }
size_t bufpool_busy_bytes(const bufpool *bp) { return bp ? bp->busy : 0; }
