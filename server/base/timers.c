/* timers: a binary min-heap of dtimers plus one uv_timer and one uv_async.
 * arm/cancel (any thread) edit the heap under the mutex and poke the async
 * handle when the earliest deadline changes; the loop thread re-arms the
 * uv_timer and, when it fires, pops every expired entry and runs callbacks
 * outside the mutex. */
#include "timers.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "mem.h"

struct timers {
  pthread_mutex_t lock;
  dtimer **heap;
  size_t n, cap;
  uv_timer_t timer;
  uv_async_t async;
  uv_loop_t *loop;
};

uint64_t timers_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void swap(timers *t, size_t a, size_t b) {
  dtimer *x = t->heap[a];
  t->heap[a] = t->heap[b];
  t->heap[b] = x;
  t->heap[a]->slot = a;
  t->heap[b]->slot = b;
}

static void up(timers *t, size_t i) {
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (t->heap[p]->deadline <= t->heap[i]->deadline) break;
    swap(t, i, p);
    i = p;
  }
}

static void down(timers *t, size_t i) {
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < t->n && t->heap[l]->deadline < t->heap[m]->deadline) m = l;
    if (r < t->n && t->heap[r]->deadline < t->heap[m]->deadline) m = r;
    if (m == i) break;
    swap(t, i, m);
    i = m;
  }
}

static void remove_at(timers *t, size_t i) {
  dtimer *d = t->heap[i];
  t->n--;
  if (i != t->n) {
    t->heap[i] = t->heap[t->n];
    t->heap[i]->slot = i;
    down(t, i);
    up(t, i);
  }
  d->slot = SIZE_MAX;
}

static void on_timer(uv_timer_t *h);

static void rearm(timers *t) { /* loop thread */
  pthread_mutex_lock(&t->lock);
  uint64_t next = t->n ? t->heap[0]->deadline : 0;
  size_t n = t->n;
  pthread_mutex_unlock(&t->lock);
  if (!n) {
    uv_timer_stop(&t->timer);
    return;
  }
  uint64_t now = timers_now_ms();
  uv_timer_start(&t->timer, on_timer, next > now ? next - now : 0, 0);
}

size_t timers_take_due(timers *t, uint64_t now, dtimer **out, size_t max) {
  size_t k = 0;
  pthread_mutex_lock(&t->lock);
  while (k < max && t->n && t->heap[0]->deadline <= now) {
    out[k++] = t->heap[0];
    remove_at(t, 0);
  }
  pthread_mutex_unlock(&t->lock);
  return k;
}

static void on_timer(uv_timer_t *h) {
  timers *t = h->data;
  dtimer *d;
  while (timers_take_due(t, timers_now_ms(), &d, 1)) d->cb(d); /* one at a time: a callback may cancel others */
  rearm(t);
}

static void on_async(uv_async_t *h) { rearm(h->data); }

timers *timers_new(uv_loop_t *loop) {
  timers *t = mem_xcalloc(1, sizeof *t);
  pthread_mutex_init(&t->lock, NULL);
  t->loop = loop;
  uv_timer_init(loop, &t->timer);
  t->timer.data = t;
  uv_async_init(loop, &t->async, on_async);
  t->async.data = t;
  return t;
}

void timers_close(timers *t) {
  if (!t) return;
  uv_timer_stop(&t->timer);
  uv_close((uv_handle_t *)&t->timer, NULL);
  uv_close((uv_handle_t *)&t->async, NULL);
}

void timers_free(timers *t) {
  if (!t) return;
  for (size_t i = 0; i < t->n; i++) t->heap[i]->slot = SIZE_MAX;
  free(t->heap);
  pthread_mutex_destroy(&t->lock);
  free(t);
}

void dtimer_init(dtimer *d, dtimer_cb cb, void *arg) {
  d->deadline = 0;
  d->slot = SIZE_MAX;
  d->cb = cb;
  d->arg = arg;
}

bool timers_arm(timers *t, dtimer *d, uint64_t deadline) {
  pthread_mutex_lock(&t->lock);
  if (d->slot != SIZE_MAX) {
    pthread_mutex_unlock(&t->lock);
    return false;
  }
  if (t->n == t->cap) {
    t->cap = t->cap ? t->cap * 2 : 64;
    t->heap = mem_xrealloc(t->heap, t->cap * sizeof *t->heap);
  }
  d->deadline = deadline;
  d->slot = t->n;
  t->heap[t->n++] = d;
  up(t, d->slot);
  bool earliest = d->slot == 0;
  pthread_mutex_unlock(&t->lock);
  if (earliest) uv_async_send(&t->async);
  return true;
}

bool timers_cancel(timers *t, dtimer *d) {
  pthread_mutex_lock(&t->lock);
  bool armed = d->slot != SIZE_MAX;
  if (armed) remove_at(t, d->slot);
  pthread_mutex_unlock(&t->lock);
  return armed;
}

size_t timers_armed(timers *t) {
  pthread_mutex_lock(&t->lock);
  size_t n = t->n;
  pthread_mutex_unlock(&t->lock);
  return n;
}
