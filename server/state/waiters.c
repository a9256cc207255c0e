/* waiters: requests waiting on an instance.  A wake_list collects the
 * waiters completed under the instance lock; the public function that took
 * the lock runs it after unlocking, so no wake callback ever runs with the
 * lock held.  Long-polls (instance_wait_step) live on the pollers list until
 * the step they want comes, their timeout unlinks them, or the instance
 * closes.  HTTP threads and the loop thread (timeouts). */
#include <string.h>

#include "instance_internal.h"

void waiters__add(wake_list *wl, waiter *w) {
  w->next = wl->head;
  w->prev = NULL;
  wl->head = w;
}

void waiters__run(wake_list *wl) {
  for (waiter *w = wl->head; w;) {
    waiter *next = w->next;
    w->next = w->prev = NULL;
    w->wake(w);
    w = next;
  }
  wl->head = NULL;
}

void waiters__complete(waiter *w, int code, const derr *e, uint64_t step) {
  w->code = code;
  if (e) w->err = *e;
  else if (code) derr_set(&w->err, code, NULL);
  w->step = step;
}

static void poller_link(instance *in, waiter *w) {
  INSTANCE_ASSERT_LOCKED(in);
  w->prev = NULL;
  w->next = in->pollers;
  if (in->pollers) in->pollers->prev = w;
  in->pollers = w;
  w->linked = 1;
}

static void poller_unlink(instance *in, waiter *w) {
  INSTANCE_ASSERT_LOCKED(in);
  assert(w->linked);
  if (w->prev) w->prev->next = w->next;
  else in->pollers = w->next;
  if (w->next) w->next->prev = w->prev;
  w->prev = w->next = NULL;
  w->linked = 0;
}

void waiters__wake_pollers(instance *in, wake_list *wl) {
  INSTANCE_ASSERT_LOCKED(in);
  for (waiter *w = in->pollers; w;) {
    waiter *next = w->next;
    if (in->step >= w->wait_step) {
      poller_unlink(in, w);
      waiters__complete(w, 0, NULL, in->step);
      waiters__add(wl, w);
    }
    w = next;
  }
}

void waiters__fail_pollers(instance *in, int code, const derr *e, wake_list *wl) {
  INSTANCE_ASSERT_LOCKED(in);
  while (in->pollers) {
    waiter *w = in->pollers;
    poller_unlink(in, w);
    waiters__complete(w, code, e, in->step);
    waiters__add(wl, w);
  }
}

int instance_wait_step(instance *in, waiter *w, uint64_t want, void (*suspend)(void *), void *arg) {
  instance__lock(in);
  w->code = 0;
  w->snap = NULL;
  if (in->step >= want || in->deleted || in->stopping) {
    w->step = in->step;
    if (in->deleted) waiters__complete(w, E_NO_INSTANCE, NULL, in->step);
    else if (in->stopping && in->step < want) waiters__complete(w, E_SHUTTING_DOWN, NULL, in->step);
    instance__unlock(in);
    return 1;
  }
  w->wait_step = want;
  poller_link(in, w);
  suspend(arg);
  instance__unlock(in);
  return 0;
}

int instance_unwait(instance *in, waiter *w) {
  instance__lock(in);
  int was = w->linked;
  if (was) {
    /* only pollers time out this way; round participants are failed by the round */
    poller_unlink(in, w);
    waiters__complete(w, 0, NULL, in->step);
  }
  instance__unlock(in);
  return was;
}
