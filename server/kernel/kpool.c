/* kpool: helper threads waiting on a condition variable for a generation
 * number; each posted job is a run of chunks claimed through one atomic
 * word (generation << 32 | next chunk), so a helper that wakes late for an
 * old job can never claim a chunk of a newer one.  The caller returns once
 * every chunk is finished; a helper then holds no pointer into the job.
 *
 * With one thread per CPU (the default), there is one helper pinned to each
 * CPU the process may use.  Unpinned, a woken helper is often queued on the
 * caller's own CPU whenever the other CPUs are busy with anything (even a
 * nice-19 task), and then only runs once the step is over; pinned, it
 * preempts on its own CPU.  The helper that shares the caller's CPU simply
 * finds no chunk left.
 *
 * Owns its helper threads and the one job slot (kp->j), written only by the
 * thread holding `busy`.  Never blocks a caller on `busy` (trylock) and
 * never lets a helper outlive kpool_free (joined there). */
#include "kpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "mem.h"

#define CHUNKS_PER_THREAD 8
#define SPIN 20000 /* polls of `finished` before the caller sleeps */

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#else
#define cpu_relax() ((void)0)
#endif

typedef struct job {
  const optim_plan *pl;
  float *p, *g;
  float *const *buf;
  size_t n, per, chunks;
  bool emit;
} job;

struct kpool {
  pthread_mutex_t lock, busy;
  pthread_cond_t go, done;
  int threads, helpers;
  unsigned long gen;
  bool stop;
  job j;
  _Atomic uint64_t claim;  /* (gen & 0xffffffff) << 32 | next chunk */
  _Atomic size_t finished; /* chunks of the current job done */
  pthread_t *tid;
};

static void run_chunk(const job *j, size_t k) {
  size_t lo = j->per * k, hi = lo + j->per;
  if (hi > j->n) hi = j->n;
  if (lo >= hi) return;
  float *b[OPTIM_NBUF];
  for (int i = 0; i < OPTIM_NBUF; i++) b[i] = j->buf[i] ? j->buf[i] + lo : NULL;
  optim_apply(j->pl, j->p + lo, j->g + lo, b, hi - lo, j->emit);
}

/* Claims and runs chunks of job j (generation gen) until none is left. */
static void work(kpool *kp, const job *j, unsigned long gen) {
  const uint64_t tag = (uint64_t)(gen & 0xffffffffu) << 32;
  for (;;) {
    uint64_t v = atomic_load(&kp->claim);
    do {
      if ((v & ~(uint64_t)0xffffffffu) != tag || (v & 0xffffffffu) >= j->chunks) return;
    } while (!atomic_compare_exchange_weak(&kp->claim, &v, v + 1));
    run_chunk(j, (size_t)(v & 0xffffffffu));
    if (atomic_fetch_add(&kp->finished, 1) + 1 == j->chunks) {
      pthread_mutex_lock(&kp->lock);
      pthread_cond_signal(&kp->done);
      pthread_mutex_unlock(&kp->lock);
    }
  }
}

static void *helper(void *arg) {
  kpool *kp = arg;
  unsigned long seen = 0;
  pthread_mutex_lock(&kp->lock);
  for (;;) {
    while (!kp->stop && kp->gen == seen) pthread_cond_wait(&kp->go, &kp->lock);
    if (kp->stop) break;
    seen = kp->gen;
    job j = kp->j;
    pthread_mutex_unlock(&kp->lock);
    work(kp, &j, seen);
    pthread_mutex_lock(&kp->lock);
  }
  pthread_mutex_unlock(&kp->lock);
  return NULL;
}

kpool *kpool_new(int threads) {
  cpu_set_t allowed;
  int cpus[CPU_SETSIZE], ncpu = 0;
  if (sched_getaffinity(0, sizeof allowed, &allowed) == 0)
    for (int c = 0; c < CPU_SETSIZE; c++)
      if (CPU_ISSET(c, &allowed)) cpus[ncpu++] = c;
  if (threads <= 0) threads = ncpu > 0 ? ncpu : (int)sysconf(_SC_NPROCESSORS_ONLN);
  if (threads < 1) threads = 1;
  bool pin = threads >= 2 && threads == ncpu;
  kpool *kp = mem_xcalloc(1, sizeof *kp);
  pthread_mutex_init(&kp->lock, NULL);
  pthread_mutex_init(&kp->busy, NULL);
  pthread_cond_init(&kp->go, NULL);
  pthread_cond_init(&kp->done, NULL);
  atomic_init(&kp->claim, 0);
  atomic_init(&kp->finished, 0);
  kp->threads = threads;
  int want = pin ? threads : threads - 1;
  kp->tid = mem_xcalloc((size_t)threads, sizeof *kp->tid);
  for (int i = 0; i < want; i++) {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    if (pin) {
      cpu_set_t one;
      CPU_ZERO(&one);
      CPU_SET(cpus[i], &one);
      pthread_attr_setaffinity_np(&attr, sizeof one, &one);
    }
    int rc = pthread_create(&kp->tid[i], &attr, helper, kp);
    pthread_attr_destroy(&attr);
    if (rc != 0) break;
    kp->helpers = i + 1;
  }
  if (kp->helpers < want && kp->helpers + 1 < kp->threads) kp->threads = kp->helpers + 1;
  return kp;
}

void kpool_free(kpool *kp) {
  if (!kp) return;
  pthread_mutex_lock(&kp->lock);
  kp->stop = true;
  pthread_cond_broadcast(&kp->go);
  pthread_mutex_unlock(&kp->lock);
  for (int i = 0; i < kp->helpers; i++) pthread_join(kp->tid[i], NULL);
  free(kp->tid);
  pthread_cond_destroy(&kp->go);
  pthread_cond_destroy(&kp->done);
  pthread_mutex_destroy(&kp->lock);
  pthread_mutex_destroy(&kp->busy);
  free(kp);
}

int kpool_threads(const kpool *kp) { return kp ? kp->threads : 1; }

void kpool_apply(kpool *kp, const optim_plan *pl, float *p, float *g, float *const buf[OPTIM_NBUF],
                 size_t n, bool emit) {
  if (!kp || kp->threads < 2 || n < KPOOL_MIN || pthread_mutex_trylock(&kp->busy) != 0) {
    optim_apply(pl, p, g, buf, n, emit);
    return;
  }
  size_t want = (size_t)kp->threads * CHUNKS_PER_THREAD;
  size_t per = (n / want + 15) & ~(size_t)15;
  pthread_mutex_lock(&kp->lock);
  kp->j = (job){pl, p, g, buf, n, per, (n + per - 1) / per, emit};
  unsigned long gen = ++kp->gen;
  atomic_store(&kp->finished, 0);
  atomic_store(&kp->claim, (uint64_t)(gen & 0xffffffffu) << 32);
  pthread_mutex_unlock(&kp->lock);
  pthread_cond_broadcast(&kp->go); /* after unlocking: a woken helper must not block on the lock */
  work(kp, &kp->j, gen); /* kp->j changes only here, under busy */
  /* the last chunks may still run on a helper: usually a few microseconds */
  for (int i = 0; i < SPIN && atomic_load(&kp->finished) < kp->j.chunks; i++) cpu_relax();
  if (atomic_load(&kp->finished) < kp->j.chunks) {
    pthread_mutex_lock(&kp->lock);
    while (atomic_load(&kp->finished) < kp->j.chunks) pthread_cond_wait(&kp->done, &kp->lock);
    pthread_mutex_unlock(&kp->lock);
  }
  pthread_mutex_unlock(&kp->busy);
}
