/* test_history: the whole-run downsampler (server/state/history.c): bucket
 * boundaries, spans and counts at every step, exact means, minima, maxima
 * and times, NaN values left out of the means, and the same buckets through
 * an instance's own history (random-search tells). */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "bufpool.h"
#include "history.h"
#include "instance.h"
#include "mem.h"
#include "optim.h"
#include "suites.h"
#include "testutil.h"
#include "timers.h"

static history_whole *whole_new(void) {
  return mem_xcalloc(1, sizeof(history_whole));
}

/* loss = step, norm = 2 step, time = step / 2, lr = step / 1000 */
static void add_linear(history_whole *w, uint64_t k) {
  history_whole_add(w, k, (double)k * 0.5, (double)k, 2.0 * (double)k, (double)k / 1000.0);
}

/* The smallest power of two s with total <= HISTORY_WHOLE_LEN * s. */
static uint64_t expected_span(uint64_t total) {
  uint64_t s = 1;
  while (total > (uint64_t)HISTORY_WHOLE_LEN * s) s *= 2;
  return s;
}

START_TEST(hundred_thousand_steps_exact_means) {
  history_whole *w = whole_new();
  const uint64_t N = 100000;
  for (uint64_t k = 1; k <= N; k++) add_linear(w, k);
  /* 1024 * 64 < 100000 <= 1024 * 128: span 128; 781 full buckets and one of 32 */
  ck_assert_uint_eq(w->span, 128);
  ck_assert_uint_eq(w->total, N);
  ck_assert_uint_eq(w->count, 782);
  for (size_t i = 0; i < w->count; i++) {
    const history_bucket *b = &w->b[i];
    uint64_t first = i * 128 + 1, last = i + 1 < w->count ? (i + 1) * 128 : N;
    CHECK(b->first_step == first && b->last_step == last, "bucket %zu: steps %lu..%lu", i,
          (unsigned long)b->first_step, (unsigned long)b->last_step);
    CHECK(b->steps == last - first + 1 && b->loss_n == b->steps && b->grad_norm_n == b->steps, "bucket %zu counts", i);
    /* the mean of first..last is (first + last) / 2, exactly */
    CHECK(history_bucket_loss(b) == (double)(first + last) / 2.0, "bucket %zu: mean loss %.17g", i,
          history_bucket_loss(b));
    CHECK(history_bucket_grad_norm(b) == (double)(first + last), "bucket %zu: mean norm %.17g", i,
          history_bucket_grad_norm(b));
    CHECK(b->loss_min == (double)first && b->loss_max == (double)last, "bucket %zu: min/max", i);
    CHECK(b->first_time == (double)first * 0.5 && b->last_time == (double)last * 0.5, "bucket %zu: times", i);
    CHECK(b->lr == (double)last / 1000.0, "bucket %zu: lr %.17g", i, b->lr);
  }
  ck_assert_uint_eq(w->b[781].steps, 32);
  free(w);
}
END_TEST

/* After every single step: at most HISTORY_WHOLE_LEN buckets, more than half
 * in use once merged, contiguous, all full but the last, and the span the
 * smallest power of two that fits the run. */
START_TEST(bounded_and_contiguous_at_every_step) {
  history_whole *w = whole_new();
  const uint64_t N = (uint64_t)HISTORY_WHOLE_LEN * 16 + 3;
  const uint64_t first_step = 501; /* as after an import at step 500 */
  int merges = 0;
  uint64_t span = 1;
  for (uint64_t k = 0; k < N; k++) {
    add_linear(w, first_step + k);
    uint64_t total = k + 1;
    if (w->span != span) {
      ck_assert_uint_eq(w->span, 2 * span);
      span = w->span;
      merges++;
    }
    CHECK(w->span == expected_span(total), "total %lu: span %lu", (unsigned long)total, (unsigned long)w->span);
    CHECK(w->count >= 1 && w->count <= HISTORY_WHOLE_LEN, "total %lu: %zu buckets", (unsigned long)total, w->count);
    CHECK(w->span == 1 || w->count > HISTORY_WHOLE_LEN / 2, "total %lu: only %zu buckets", (unsigned long)total,
          w->count);
    CHECK(w->count == (total + w->span - 1) / w->span, "total %lu: %zu buckets", (unsigned long)total, w->count);
    CHECK(w->b[0].first_step == first_step, "first step %lu", (unsigned long)w->b[0].first_step);
    CHECK(w->b[w->count - 1].last_step == first_step + k, "last step");
    if (total % 1000 == 0 || total == N) { /* the whole array, now and then */
      uint64_t sum = 0;
      for (size_t i = 0; i < w->count; i++) {
        sum += w->b[i].steps;
        if (i) CHECK(w->b[i].first_step == w->b[i - 1].last_step + 1, "bucket %zu not contiguous", i);
        CHECK(w->b[i].last_step - w->b[i].first_step + 1 == w->b[i].steps, "bucket %zu", i);
        CHECK(i + 1 == w->count ? w->b[i].steps <= w->span : w->b[i].steps == w->span, "bucket %zu: %lu steps", i,
              (unsigned long)w->b[i].steps);
      }
      CHECK(sum == total, "buckets hold %lu of %lu steps", (unsigned long)sum, (unsigned long)total);
    }
  }
  ck_assert_int_eq(merges, 5); /* 1024 * 16 + 3 entries: span 32 */
  ck_assert_uint_eq(w->span, 32);
  free(w);
}
END_TEST

/* Values with few bits (multiples of 1/8 below 2^40) sum exactly in any
 * order, so each bucket's mean, min and max must equal the ones computed
 * directly over its steps, for a curve that goes up and down. */
START_TEST(means_min_max_match_direct_computation) {
  history_whole *w = whole_new();
  const uint64_t N = 70001;
  double *loss = mem_xmalloc((N + 1) * sizeof *loss);
  for (uint64_t k = 1; k <= N; k++) {
    loss[k] = (double)((k * 7919) % 1009) * 0.125 - 40.0;
    history_whole_add(w, k, (double)k, loss[k], loss[k] + 100.0, 0.25);
  }
  ck_assert_uint_eq(w->span, 128);
  for (size_t i = 0; i < w->count; i++) {
    const history_bucket *b = &w->b[i];
    double s = 0, lo = INFINITY, hi = -INFINITY;
    for (uint64_t k = b->first_step; k <= b->last_step; k++) {
      s += loss[k];
      lo = fmin(lo, loss[k]);
      hi = fmax(hi, loss[k]);
    }
    double n = (double)b->steps;
    CHECK(history_bucket_loss(b) == s / n, "bucket %zu: %.17g != %.17g", i, history_bucket_loss(b), s / n);
    CHECK(history_bucket_grad_norm(b) == (s + 100.0 * n) / n, "bucket %zu: norm", i);
    CHECK(b->loss_min == lo && b->loss_max == hi, "bucket %zu: min %g max %g, want %g %g", i, b->loss_min, b->loss_max,
          lo, hi);
  }
  free(loss);
  free(w);
}
END_TEST

/* Until HISTORY_WHOLE_LEN steps, each bucket is one step, value for value. */
START_TEST(span_one_is_the_steps_themselves) {
  history_whole *w = whole_new();
  for (uint64_t k = 1; k <= HISTORY_WHOLE_LEN; k++) history_whole_add(w, k, 1e9 + k, 0.1 * k, sqrt(k), 1e-3 / k);
  ck_assert_uint_eq(w->span, 1);
  ck_assert_uint_eq(w->count, HISTORY_WHOLE_LEN);
  for (uint64_t k = 1; k <= HISTORY_WHOLE_LEN; k++) {
    const history_bucket *b = &w->b[k - 1];
    CHECK(b->steps == 1 && b->first_step == k && b->last_step == k, "step %lu", (unsigned long)k);
    CHECK(history_bucket_loss(b) == 0.1 * k && b->loss_min == 0.1 * k && b->loss_max == 0.1 * k, "loss %lu",
          (unsigned long)k);
    CHECK(history_bucket_grad_norm(b) == sqrt(k) && b->lr == 1e-3 / k && b->last_time == 1e9 + k, "step %lu",
          (unsigned long)k);
  }
  /* one more: the first merge, 513 buckets, the first of steps 1 and 2 */
  history_whole_add(w, HISTORY_WHOLE_LEN + 1, 0, 7, 7, 7);
  ck_assert_uint_eq(w->span, 2);
  ck_assert_uint_eq(w->count, HISTORY_WHOLE_LEN / 2 + 1);
  ck_assert(history_bucket_loss(&w->b[0]) == (0.1 + 0.2) / 2);
  ck_assert(w->b[0].lr == 1e-3 / 2);
  ck_assert(w->b[0].first_time == 1e9 + 1 && w->b[0].last_time == 1e9 + 2);
  ck_assert_uint_eq(w->b[HISTORY_WHOLE_LEN / 2].steps, 1);
  free(w);
}
END_TEST

/* A step without a loss (none reported) or without a norm (random search)
 * counts as a step but stays out of the means; a bucket with none is NaN. */
START_TEST(nan_values_stay_out_of_the_means) {
  history_whole *w = whole_new();
  for (uint64_t k = 1; k <= 4096; k++) {
    double loss = k % 2 ? NAN : (double)k;   /* even steps only */
    if (k > 2048 && k <= 2048 + 16) loss = NAN; /* one whole bucket of span 4 without a loss */
    history_whole_add(w, k, (double)k, loss, NAN, k % 3 ? 0.5 : NAN);
  }
  ck_assert_uint_eq(w->span, 4);
  ck_assert_uint_eq(w->count, 1024);
  for (size_t i = 0; i < w->count; i++) {
    const history_bucket *b = &w->b[i];
    uint64_t f = b->first_step; /* f .. f+3: the losses f+1 and f+3 */
    ck_assert_uint_eq(b->steps, 4);
    CHECK(isnan(history_bucket_grad_norm(b)) && b->grad_norm_n == 0, "bucket %zu: norm", i);
    CHECK(!!isnan(b->lr) == ((b->last_step % 3) == 0), "bucket %zu: the last lr", i);
    if (f > 2048 && f <= 2048 + 16) {
      CHECK(b->loss_n == 0 && isnan(history_bucket_loss(b)) && isnan(b->loss_min) && isnan(b->loss_max),
            "bucket %zu: no loss", i);
    } else {
      CHECK(b->loss_n == 2 && history_bucket_loss(b) == (double)(f + 2), "bucket %zu: mean %g", i,
            history_bucket_loss(b));
      CHECK(b->loss_min == (double)(f + 1) && b->loss_max == (double)(f + 3), "bucket %zu: min/max", i);
    }
  }
  /* merging a bucket without losses into one with: min/max from the other */
  history_whole_add(w, 4097, 0, NAN, NAN, 0); /* merge: span 8 */
  ck_assert_uint_eq(w->span, 8);
  const history_bucket *b = &w->b[(2048 + 16) / 8 - 1]; /* steps 2057..2064: all NaN */
  ck_assert_uint_eq(b->first_step, 2057);
  ck_assert(b->loss_n == 0 && isnan(b->loss_min));
  b = &w->b[(2048 + 16) / 8]; /* steps 2065..2072 */
  ck_assert(b->loss_n == 4 && b->loss_min == 2066 && b->loss_max == 2072 && history_bucket_loss(b) == 2069);
  free(w);
}
END_TEST

/* Through an instance: random-search tells are steps; the instance's whole
 * run and its recent ring agree on the last steps. */
START_TEST(instance_whole_run_through_tells) {
  uv_loop_t loop;
  ck_assert_int_eq(uv_loop_init(&loop), 0);
  instance_env env = {.pool = bufpool_new((size_t)16 << 20), .tm = timers_new(&loop)};
  instance_cfg c;
  memset(&c, 0, sizeof c);
  derr e = {0};
  snprintf(c.name, sizeof c.name, "rs");
  ck_assert_int_eq(optim_alg_parse("random_search", &c.alg, &c.hyper, &e), 0);
  c.max_staleness = -1;
  c.ntensors = 1;
  c.tensors = mem_xcalloc(1, sizeof(tensor));
  snprintf(c.tensors[0].name, sizeof c.tensors[0].name, "x");
  c.tensors[0].ndim = 1;
  c.tensors[0].shape[0] = 2;
  c.tensors[0].count = 2;
  c.n = 2;
  instance *in = instance_new(&c, &env);
  ck_assert_ptr_nonnull(in);
  const uint64_t N = 3000;
  for (uint64_t k = 1; k <= N; k++) {
    uint64_t id, step;
    float x[2];
    bool improved;
    double best;
    ck_assert_int_eq(instance_ask(in, &id, x, &e), 0);
    ck_assert_int_eq(instance_tell(in, id, (double)k, &improved, &best, &step, &e), 0);
    ck_assert_uint_eq(step, k);
  }
  history_bucket *b;
  uint64_t span, total;
  size_t nb = instance_history_whole_copy(in, &b, &span, &total);
  ck_assert_uint_eq(span, 4); /* 2048 < 3000 <= 4096 */
  ck_assert_uint_eq(total, N);
  ck_assert_uint_eq(nb, 750);
  for (size_t i = 0; i < nb; i++) {
    CHECK(b[i].first_step == 4 * i + 1 && b[i].last_step == 4 * i + 4, "bucket %zu", i);
    CHECK(history_bucket_loss(&b[i]) == 4.0 * i + 2.5, "bucket %zu: mean %g", i, history_bucket_loss(&b[i]));
    CHECK(isnan(history_bucket_grad_norm(&b[i])) && isnan(b[i].lr), "bucket %zu: random search has no norm", i);
  }
  history_entry *h;
  size_t nh = instance_history_copy(in, &h);
  ck_assert_uint_eq(nh, HISTORY_LEN);
  ck_assert_uint_eq(h[nh - 1].step, N);
  ck_assert(h[nh - 1].time == b[nb - 1].last_time);
  ck_assert(h[nh - 4].time == b[nb - 1].first_time);
  free(h);
  free(b);
  instance_unref(in);
  instance_cfg_free(&c);
  timers_close(env.tm);
  uv_run(&loop, UV_RUN_DEFAULT);
  timers_free(env.tm);
  bufpool_free(env.pool);
  ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

Suite *suite_history(void) {
  Suite *s = suite_create("history");
  TCase *tc = tcase_create("whole");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, hundred_thousand_steps_exact_means);
  tcase_add_test(tc, bounded_and_contiguous_at_every_step);
  tcase_add_test(tc, means_min_max_match_direct_computation);
  tcase_add_test(tc, span_one_is_the_steps_themselves);
  tcase_add_test(tc, nan_values_stay_out_of_the_means);
  tcase_add_test(tc, instance_whole_run_through_tells);
  suite_add_tcase(s, tc);
  return s;
}
