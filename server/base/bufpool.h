/* bufpool: reusable big buffers for request bodies, decoded gradients and
 * encoded replies.
 *
 * Pages of a fresh buffer cost 12-20 us each on first touch here, and glibc
 * hands allocations of 32 MiB and more back to the kernel on free, so a
 * buffer per request would fault its way through every step.  The pool keeps
 * released buffers in size classes from 64 KiB up (below), already touched,
 * up to a byte budget; requests under 32 KiB are plain posix_memalign
 * allocations, never pooled.  Any thread (HTTP threads, the state layer under
 * an instance lock, the loop thread's trim): one mutex, a leaf of the lock
 * order, held only to pop or push a list head, or to unlink in a trim.
 *
 * Ownership: a buffer from bufpool_get is the caller's until it passes it,
 * with the same cap, to bufpool_put; the pool never touches a busy buffer.
 *
 * Size classes are four per power of two (64, 80, 96, 112, 128 KiB, ...), so
 * a buffer wastes less than a quarter of itself: a 40 MB gradient takes
 * 40 MiB, not 64.  Idle buffers are kept for reuse while traffic flows and
 * handed back to the system by bufpool_trim once unused for a while, so an
 * idle daemon's resident memory falls back to its instances' own.
 */
#ifndef DESCENT_BUFPOOL_H
#define DESCENT_BUFPOOL_H

#include <stddef.h>

typedef struct bufpool bufpool;

/* A pool that keeps at most max_cached bytes of idle buffers. */
bufpool *bufpool_new(size_t max_cached);
void bufpool_free(bufpool *bp); /* frees idle buffers; all must have been put back */

/* A buffer of at least `bytes` (64-byte aligned; contents undefined); *cap
 * receives its real capacity, to pass back to bufpool_put.  NULL if the
 * system refuses (bp may be NULL: plain allocation). */
void *bufpool_get(bufpool *bp, size_t bytes, size_t *cap);

/* An idle buffer of the class that bufpool_get(bytes) would use, or NULL
 * when that class has none: never allocates, so it costs no new memory (the
 * buffer is already touched).  Request bodies take one whole when their
 * declared size has been seen before. */
void *bufpool_get_idle(bufpool *bp, size_t bytes, size_t *cap);

/* The capacity bufpool_get(bp, bytes) would hand out (0 if none can be),
 * to charge a budget before allocating. */
size_t bufpool_capacity(const bufpool *bp, size_t bytes);

/* Grows p (a buffer of capacity cap from this pool) in place to at least
 * `bytes`, without copying and without touching the added pages (see
 * mem_grow_big), and returns it with *ncap its new capacity.  NULL (p
 * unchanged, still of cap) when p is too small to be mapped or the system
 * refuses: the caller then copies into a new buffer. */
void *bufpool_grow(bufpool *bp, void *p, size_t cap, size_t bytes, size_t *ncap);

/* Returns a buffer from bufpool_get (NULL is ignored). */
void bufpool_put(bufpool *bp, void *p, size_t cap);

/* Frees the idle buffers that have not been used for idle_ms or more (the
 * daemon calls it from a timer on the loop thread; any thread may).
 * Returns the bytes freed. */
size_t bufpool_trim(bufpool *bp, unsigned idle_ms);

/* Idle bytes held, and bytes handed out and not yet returned.  Read without
 * the mutex: a figure for /metrics, possibly a moment old. */
size_t bufpool_idle_bytes(const bufpool *bp);
size_t bufpool_busy_bytes(const bufpool *bp);

#endif
