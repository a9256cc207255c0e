/* history: the whole run of an instance, downsampled into a fixed number of
 * buckets, next to the ring of its last HISTORY_LEN steps (history_entry,
 * instance.h).  Both are what GET .../history and the dashboard show.
 *
 * The downsampler (history_whole_add) is exact and deterministic: bucket k
 * aggregates the entries k*span+1 .. (k+1)*span (counted from the first
 * entry), as sums, so a mean is one division of an exact sum whenever the
 * values are (integers below 2^53, say).  When every bucket is full, adjacent
 * pairs merge and the span doubles: at most HISTORY_WHOLE_LEN buckets, at
 * least half of them in use once the span is above 1; O(1) amortized per
 * step (a merge pass of HISTORY_WHOLE_LEN/2 buckets every
 * HISTORY_WHOLE_LEN/2 * span entries); no allocation, ever (the buckets live
 * inside the struct).  The pure functions here do no locking: the instance's
 * copy lives in struct instance, written by history__add under the instance
 * lock (history.c).
 */
#ifndef DESCENT_HISTORY_H
#define DESCENT_HISTORY_H

#include <stddef.h>
#include <stdint.h>

#define HISTORY_WHOLE_LEN 1024 /* even */

typedef struct instance instance;

/* One span of consecutive steps.  Means are over the entries with a finite
 * value (loss_n, grad_norm_n of them); min/max likewise (NaN if none). */
typedef struct history_bucket {
  uint64_t first_step, last_step;
  uint64_t steps;                 /* entries aggregated (span, or fewer in the last bucket) */
  uint64_t loss_n, grad_norm_n;   /* of them with a finite loss, gradient norm */
  double first_time, last_time;   /* Unix seconds of the first and the last entry */
  double loss_sum, loss_min, loss_max;
  double grad_norm_sum;
  double lr; /* the last entry's */
} history_bucket;

typedef struct history_whole {
  uint64_t span;  /* entries per full bucket: 1, 2, 4, ...; 0 in a zeroed struct means 1 */
  uint64_t total; /* entries added since the instance was made */
  size_t count;   /* buckets in use, b[0] the oldest */
  history_bucket b[HISTORY_WHOLE_LEN];
} history_whole;

/* Adds one step's entry (loss, norm, lr may be NaN).  w may be zeroed. */
void history_whole_add(history_whole *w, uint64_t step, double time, double loss, double norm, double lr);
/* A bucket's means (NaN when it holds no finite value). */
double history_bucket_loss(const history_bucket *b);
double history_bucket_grad_norm(const history_bucket *b);

/* A copy of in's whole-run buckets, oldest first (caller frees *out); *span
 * and *total as in history_whole.  Takes the instance lock. */
size_t instance_history_whole_copy(instance *in, history_bucket **out, uint64_t *span, uint64_t *total);

#endif
