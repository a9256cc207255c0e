/* kpool: helper threads waiting on a condition variable for a generation
 * number; each takes slice `index` of the posted job and counts down. */
#include "kpool.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "mem.h"

typedef struct job {
  const optim_plan *pl;
  float *p, *g;
  float *const *buf;
  size_t n;
  bool emit;
  int parts;
} job;

struct kpool {
  pthread_mutex_t lock, busy;
  pthread_cond_t go, done;
  int threads, pending;
  unsigned long gen;
  bool stop;
  job j;
  pthread_t *tid;
};

typedef struct helper_arg {
  kpool *kp;
  int index;
} helper_arg;

static void run_slice(const job *j, int k) {
  size_t per = (j->n / (size_t)j->parts + 15) & ~(size_t)15;
  size_t lo = per * (size_t)k, hi = lo + per;
  if (hi > j->n || k == j->parts - 1) hi = j->n;
  if (lo >= hi) return;
  float *b[OPTIM_NBUF];
  for (int i = 0; i < OPTIM_NBUF; i++) b[i] = j->buf[i] ? j->buf[i] + lo : NULL;
  optim_apply(j->pl, j->p + lo, j->g + lo, b, hi - lo, j->emit);
}

static void *helper(void *arg) {
  helper_arg *ha = arg;
  kpool *kp = ha->kp;
  int index = ha->index;
  free(ha);
  unsigned long seen = 0;
  pthread_mutex_lock(&kp->lock);
  for (;;) {
    while (!kp->stop && kp->gen == seen) pthread_cond_wait(&kp->go, &kp->lock);
    if (kp->stop) break;
    seen = kp->gen;
    job j = kp->j;
    pthread_mutex_unlock(&kp->lock);
    run_slice(&j, index);
    pthread_mutex_lock(&kp->lock);
    if (--kp->pending == 0) pthread_cond_signal(&kp->done);
  }
  pthread_mutex_unlock(&kp->lock);
  return NULL;
}

kpool *kpool_new(int threads) {
  if (threads <= 0) threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
  if (threads < 1) threads = 1;
  kpool *kp = mem_xcalloc(1, sizeof *kp);
  pthread_mutex_init(&kp->lock, NULL);
  pthread_mutex_init(&kp->busy, NULL);
  pthread_cond_init(&kp->go, NULL);
  pthread_cond_init(&kp->done, NULL);
  kp->threads = threads;
  kp->tid = mem_xcalloc((size_t)threads, sizeof *kp->tid);
  for (int i = 1; i < threads; i++) {
    helper_arg *ha = mem_xmalloc(sizeof *ha);
    ha->kp = kp;
    ha->index = i;
    if (pthread_create(&kp->tid[i], NULL, helper, ha) != 0) {
      free(ha);
      kp->threads = i;
      break;
    }
  }
  return kp;
}

void kpool_free(kpool *kp) {
  if (!kp) return;
  pthread_mutex_lock(&kp->lock);
  kp->stop = true;
  pthread_cond_broadcast(&kp->go);
  pthread_mutex_unlock(&kp->lock);
  for (int i = 1; i < kp->threads; i++) pthread_join(kp->tid[i], NULL);
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
  pthread_mutex_lock(&kp->lock);
  kp->j = (job){pl, p, g, buf, n, emit, kp->threads};
  kp->pending = kp->threads - 1;
  kp->gen++;
  pthread_cond_broadcast(&kp->go);
  pthread_mutex_unlock(&kp->lock);
  run_slice(&kp->j, 0);
  pthread_mutex_lock(&kp->lock);
  while (kp->pending > 0) pthread_cond_wait(&kp->done, &kp->lock);
  pthread_mutex_unlock(&kp->lock);
  pthread_mutex_unlock(&kp->busy);
}
