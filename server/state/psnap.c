/* psnap: refcounted copies of the parameters at one step, shared by every
 * reply that must show that moment (a closed sync round, a retried push).
 * The buffer comes from the bufpool and goes back to it with the last
 * reference.  Any thread; no lock (the refcount is atomic, the contents are
 * written once before the first reference is shared). */
#include <stdlib.h>
#include <string.h>

#include "instance_internal.h"
#include "mem.h"

psnap *psnap__new(bufpool *pool, const float *v, size_t n, uint64_t step) {
  size_t cap;
  float *copy = bufpool_get(pool, n * sizeof(float) + 1, &cap);
  if (!copy) return NULL;
  psnap *s = mem_xcalloc(1, sizeof *s);
  atomic_init(&s->refs, 1);
  s->step = step;
  s->n = n;
  s->v = copy;
  s->cap = cap;
  s->pool = pool;
  if (n) memcpy(copy, v, n * sizeof(float));
  return s;
}

psnap *psnap_ref(psnap *s) {
  if (s) atomic_fetch_add(&s->refs, 1);
  return s;
}

void psnap_unref(psnap *s) {
  if (!s || atomic_fetch_sub(&s->refs, 1) != 1) return;
  bufpool_put(s->pool, s->v, s->cap);
  free(s);
}
