/* timers: deadlines for suspended requests, sync rounds and worker leases.
 *
 * One min-heap of deadlines under a mutex, driven by a single uv_timer on the
 * libuv loop thread.  Any thread may arm or cancel; callbacks run on the loop
 * thread.  libmicrohttpd never times out a suspended connection by itself, so
 * every suspension arms one of these.
 *
 * Ownership: a dtimer is embedded in its owner.  While armed or firing the
 * owner must stay alive: the usual pattern is to take a reference before
 * timers_arm and drop it in the callback, or after a timers_cancel that
 * returned true (the callback then never runs).
 */
#ifndef DESCENT_TIMERS_H
#define DESCENT_TIMERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct dtimer dtimer;
typedef void (*dtimer_cb)(dtimer *t);

struct dtimer {
  uint64_t deadline; /* ms, timers_now_ms() clock */
  size_t slot;       /* heap index; SIZE_MAX when not armed */
  dtimer_cb cb;
  void *arg;
};

typedef struct timers timers;

/* Loop thread: create on loop; free after the loop has stopped running. */
timers *timers_new(uv_loop_t *loop);
void timers_close(timers *t); /* loop thread: closes the uv handles */
void timers_free(timers *t);

void dtimer_init(dtimer *d, dtimer_cb cb, void *arg);

/* Arms d for `deadline` (ms).  Returns false (and does nothing) if d is
 * already armed.  Any thread. */
bool timers_arm(timers *t, dtimer *d, uint64_t deadline);

/* Disarms d.  Returns true if it was armed: its callback will not run.
 * False: it was not armed, or it is firing now / has fired.  Any thread. */
bool timers_cancel(timers *t, dtimer *d);

/* Pops up to max timers due at `now` into out (earliest first) without
 * running them: from here they count as firing (timers_cancel says false)
 * until the caller runs out[i]->cb(out[i]).  The loop thread's own timer
 * uses it one at a time; tests use it to run a callback late.  Any thread. */
size_t timers_take_due(timers *t, uint64_t now, dtimer **out, size_t max);

uint64_t timers_now_ms(void); /* monotonic milliseconds */
size_t timers_armed(timers *t);

#endif
