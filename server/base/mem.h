/* mem: allocation policy.
 *
 * Small internal allocations (mem_x*) abort on out-of-memory: there is no
 * sensible recovery and every caller would otherwise grow an error path.
 * Float arrays sized by a client (mem_alloc_floats) may fail (NULL): their
 * callers check the quota first (registry_charge) and answer E_QUOTA when the
 * system refuses anyway.  They come back aligned to 64 bytes, zero-filled and
 * already touched, so that no page fault lands in a step: first touch costs
 * 12-20 us a page on these machines.  No state; any thread.  Every pointer
 * returned is the caller's, freed by the matching mem_free_* (free() for
 * mem_x*).
 */
#ifndef DESCENT_MEM_H
#define DESCENT_MEM_H

#include <stddef.h>

void *mem_xmalloc(size_t n);
void *mem_xcalloc(size_t count, size_t size);
void *mem_xrealloc(void *p, size_t n);
char *mem_xstrdup(const char *s);
char *mem_xstrndup(const char *s, size_t n);

/* n floats, 64-byte aligned, zeroed and touched; NULL if the system refuses.
 * n = 0 gives a valid pointer.  Free with mem_free_floats (same n). */
float *mem_alloc_floats(size_t n);
void mem_free_floats(float *p, size_t n);

/* Bytes variant of the above: 64-byte aligned (page-aligned from 2 MiB up),
 * zeroed, touched; NULL if the system refuses.  Free with mem_free_big (same
 * bytes). */
void *mem_alloc_big(size_t bytes);
void mem_free_big(void *p, size_t bytes);

/* Grows p, a mem_alloc_big array of `bytes`, to new_bytes without copying
 * or doubling its memory: the pages move (mremap) and the added ones are not
 * touched (they cost nothing until written).  Only for arrays big enough to
 * be mapped (bytes >= MEM_BIG_THRESHOLD); otherwise, or if the system
 * refuses, NULL and p is unchanged.  The result is freed with
 * mem_free_big(q, new_bytes). */
#define MEM_BIG_THRESHOLD ((size_t)2 << 20)
void *mem_grow_big(void *p, size_t bytes, size_t new_bytes);

#endif
