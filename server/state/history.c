/* history: the ring of the last HISTORY_LEN steps of an instance (step,
 * time, loss, gradient norm, lr) that /history and the dashboard show.
 * Written by the step that applies, under the instance lock; copied out
 * under it.  HTTP threads and the loop thread (a round closed by a timer). */
#include <math.h>

#include "instance_internal.h"
#include "mem.h"

void history__add(instance *in, double loss, double norm, double lr) {
  INSTANCE_ASSERT_LOCKED(in);
  history_entry *h = &in->hist[in->hist_next];
  h->step = in->step;
  h->time = instance__wall_now();
  h->loss = loss;
  h->grad_norm = norm;
  h->lr = lr;
  in->hist_next = (in->hist_next + 1) % HISTORY_LEN;
  if (in->hist_count < HISTORY_LEN) in->hist_count++;
  in->stats.last_grad_norm = norm;
  if (!isnan(loss)) in->stats.last_loss = loss;
}

size_t instance_history_copy(instance *in, history_entry **out) {
  instance__lock(in);
  size_t n = in->hist_count;
  *out = mem_xmalloc((n ? n : 1) * sizeof **out);
  size_t first = (in->hist_next + HISTORY_LEN - n) % HISTORY_LEN;
  for (size_t i = 0; i < n; i++) (*out)[i] = in->hist[(first + i) % HISTORY_LEN];
  instance__unlock(in);
  return n;
}
