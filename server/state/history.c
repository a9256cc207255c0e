/* history: what an instance remembers of its steps, for /history and the
 * dashboard: the ring of the last HISTORY_LEN steps (step, time, loss,
 * gradient norm, lr), and the whole run downsampled into at most
 * HISTORY_WHOLE_LEN buckets (history.h says how; exact, no allocation).
 * Both are written by the step that applies, under the instance lock, and
 * copied out under it.  Never does I/O or allocates in a step.  HTTP threads
 * and the loop thread (a round closed by a timer). */
#include <math.h>
#include <string.h>

#include "history.h"
#include "instance_internal.h"
#include "mem.h"

static void bucket_start(history_bucket *b, uint64_t step, double time, double loss, double norm, double lr) {
  bool lf = isfinite(loss), nf = isfinite(norm);
  *b = (history_bucket){.first_step = step,
                        .last_step = step,
                        .steps = 1,
                        .loss_n = lf,
                        .grad_norm_n = nf,
                        .first_time = time,
                        .last_time = time,
                        .loss_sum = lf ? loss : 0,
                        .loss_min = lf ? loss : NAN,
                        .loss_max = lf ? loss : NAN,
                        .grad_norm_sum = nf ? norm : 0,
                        .lr = lr};
}

/* a followed by b (b's steps come after a's), into a. */
static void bucket_merge(history_bucket *a, const history_bucket *b) {
  a->last_step = b->last_step;
  a->steps += b->steps;
  a->last_time = b->last_time;
  a->lr = b->lr;
  if (b->loss_n) {
    a->loss_min = a->loss_n && a->loss_min <= b->loss_min ? a->loss_min : b->loss_min;
    a->loss_max = a->loss_n && a->loss_max >= b->loss_max ? a->loss_max : b->loss_max;
    a->loss_n += b->loss_n;
    a->loss_sum += b->loss_sum;
  }
  a->grad_norm_n += b->grad_norm_n;
  a->grad_norm_sum += b->grad_norm_sum;
}

void history_whole_add(history_whole *w, uint64_t step, double time, double loss, double norm, double lr) {
  if (!w->span) w->span = 1;
  w->total++;
  if (w->count && w->b[w->count - 1].steps < w->span) {
    history_bucket one;
    bucket_start(&one, step, time, loss, norm, lr);
    bucket_merge(&w->b[w->count - 1], &one);
    return;
  }
  if (w->count == HISTORY_WHOLE_LEN) { /* every bucket full: pairs merge, the span doubles */
    for (size_t i = 0; i < HISTORY_WHOLE_LEN / 2; i++) {
      w->b[i] = w->b[2 * i];
      bucket_merge(&w->b[i], &w->b[2 * i + 1]);
    }
    w->count = HISTORY_WHOLE_LEN / 2;
    w->span *= 2;
  }
  bucket_start(&w->b[w->count++], step, time, loss, norm, lr);
}

double history_bucket_loss(const history_bucket *b) {
  return b->loss_n ? b->loss_sum / (double)b->loss_n : NAN;
}

double history_bucket_grad_norm(const history_bucket *b) {
  return b->grad_norm_n ? b->grad_norm_sum / (double)b->grad_norm_n : NAN;
}

void history__add(instance *in, double loss, double norm, double lr) {
  INSTANCE_ASSERT_LOCKED(in);
  history_entry *h = &in->hist[in->hist_next];
  h->step = in->step;
  h->time = instance__wall_now();
  h->loss = loss;
  h->grad_norm = norm;
  h->lr = lr;
  h->rows_touched = in->stats.rows_touched; /* the step's (sparse.c sets it first) */
  in->hist_next = (in->hist_next + 1) % HISTORY_LEN;
  if (in->hist_count < HISTORY_LEN) in->hist_count++;
  history_whole_add(&in->whole, h->step, h->time, loss, norm, lr);
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

size_t instance_history_whole_copy(instance *in, history_bucket **out, uint64_t *span, uint64_t *total) {
  *out = mem_xmalloc(HISTORY_WHOLE_LEN * sizeof **out); /* not under the lock */
  instance__lock(in);
  size_t n = in->whole.count;
  memcpy(*out, in->whole.b, n * sizeof **out);
  *span = in->whole.span ? in->whole.span : 1;
  *total = in->whole.total;
  instance__unlock(in);
  return n;
}
