/* kpool: splits one big optimizer step across cores.
 *
 * A fixed set of helper threads; a step of at least KPOOL_MIN elements is cut
 * into chunks (8 per thread, aligned to 16 floats) that the calling thread
 * and the helpers claim one at a time, so a helper whose core is busy with
 * something else simply takes fewer chunks (or none: the caller then does
 * them all, and never waits for a helper that has not started).  Only one
 * split step runs at a time: if the helpers are busy with another
 * instance's step, the caller runs its step alone (never waits for the
 * pool).  Elementwise kernels make every split bit-identical.
 *
 * Threads: kpool_new and kpool_free on the main thread (start-up, exit);
 * kpool_apply from any thread, typically under an instance lock (HTTP
 * threads, the loop thread closing a round): the pool's locks are leaves and
 * it calls nothing back.  It never allocates in a step and holds no pointer
 * into the caller's arrays once kpool_apply returns.
 */
#ifndef DESCENT_KPOOL_H
#define DESCENT_KPOOL_H

#include <stdbool.h>
#include <stddef.h>

#include "optim.h"

#define KPOOL_MIN (1u << 18)

typedef struct kpool kpool;

/* A pool using `threads` cores in all (threads - 1 helpers); 0: one per CPU
 * the process may run on (then one helper pinned to each of those CPUs). */
kpool *kpool_new(int threads);
void kpool_free(kpool *kp);
int kpool_threads(const kpool *kp);

/* optim_apply over [0, n), split when worthwhile; returns once every
 * element is done.  kp may be NULL (then the caller does it all). */
void kpool_apply(kpool *kp, const optim_plan *pl, float *p, float *g, float *const buf[OPTIM_NBUF],
                 size_t n, bool emit);

#endif
