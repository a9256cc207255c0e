/* test_state_push: async pushes through instance_push without HTTP: exact
 * sums of an SGD lr=1 instance, refused gradients that change nothing,
 * staleness (max_staleness, step ahead), and idempotency keys (replay of
 * the first outcome, refused pushes judged afresh, the IDEM_LEN window).
 * Only instance.h's public functions; the test thread is the only thread. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "instance.h"
#include "mem.h"
#include "statefix.h"
#include "optim.h"
#include "schedule.h"
#include "suites.h"
#include "testutil.h"

static fix F;
static void setup(void) { fix_init(&F); }
static void teardown(void) { fix_cleanup(&F); }

/* The current parameters equal want (n floats) and the step is `step`. */
static void ck_params(instance *in, const float *want, size_t n, uint64_t step) {
  float got[64];
  ck_assert_uint_le(n, 64);
  ck_assert_uint_eq(fix_read(in, got), step);
  ck_floats_bits(got, want, n, "params");
}

/* ---- applying -------------------------------------------------------------- */

START_TEST(sgd_lr1_powers_of_two_sum_exactly) {
  instance *in = fix_instance(&F, &(fix_spec){.n = 4});
  float g1[4] = {1, 2, 4, 8}, g2[4] = {16, 32, 64, 128}, g3[4] = {256, 512, 1024, 2048};
  twaiter t;
  tw_init(&t);
  push p = fix_push(NULL, -1, g1);
  p.emit = true;
  ck_assert_int_eq(tw_push(in, &t, p), PUSH_DONE);
  ck_assert_int_eq(t.w.code, 0);
  ck_assert_uint_eq(t.w.step, 1);
  ck_assert_int_eq(t.suspends, 0);
  ck_assert_int_eq(t.wakes, 0);
  ck_assert(!t.w.replayed);
  ck_assert_ptr_null(t.w.snap);
  const float p1[4] = {-1, -2, -4, -8};
  ck_floats_bits(g1, p1, 4, "emitted params"); /* emit: the gradient buffer became the reply */
  ck_params(in, p1, 4, 1);

  p = fix_push("a", 1, g2);
  p.loss = 0.5;
  ck_assert_int_eq(tw_push(in, &t, p), PUSH_DONE);
  ck_assert_uint_eq(t.w.step, 2);
  const float g2_sent[4] = {16, 32, 64, 128};
  ck_floats_bits(g2, g2_sent, 4, "grad without emit"); /* not written */
  /* a gradient computed on step 0 of an unlimited-staleness instance */
  p = fix_push("a", 0, g3);
  p.loss = 0.25;
  ck_assert_int_eq(tw_push(in, &t, p), PUSH_DONE);
  ck_assert_uint_eq(t.w.step, 3);
  const float p3[4] = {-273, -546, -1092, -2184};
  ck_params(in, p3, 4, 3);

  history_entry *h;
  ck_assert_uint_eq(instance_history_copy(in, &h), 3);
  const double norms[3] = {sqrt(85.0), sqrt(21760.0), sqrt(5570560.0)};
  for (int i = 0; i < 3; i++) {
    ck_assert_uint_eq(h[i].step, (uint64_t)i + 1);
    ck_assert(h[i].grad_norm == norms[i]);
    ck_assert(h[i].lr == 1.0);
  }
  ck_assert(isnan(h[0].loss));
  ck_assert(h[1].loss == 0.5 && h[2].loss == 0.25);
  free(h);

  worker_info *wi;
  uint64_t step;
  ck_assert_uint_eq(instance_workers_copy(in, &wi, &step), 1);
  ck_assert_uint_eq(step, 3);
  ck_assert_str_eq(wi[0].name, "a");
  ck_assert_uint_eq(wi[0].pushes, 2);
  ck_assert_uint_eq(wi[0].rejected, 0);
  ck_assert_int_eq(wi[0].last_push_step, 0);
  ck_assert_uint_eq(wi[0].staleness, 2); /* applied as step 3 on a gradient of step 0 */
  ck_assert(!wi[0].dropped);
  free(wi);

  instance_info info;
  instance_info_get(in, &info);
  ck_assert_uint_eq(info.step, 3);
  ck_assert(info.lr == 1.0);
  ck_assert_uint_eq(info.workers_seen, 1);
  ck_assert_uint_eq(info.waiting, 0);

  struct instance_stats st;
  instance_stats_copy(in, &st, &step);
  ck_assert_uint_eq(step, 3);
  ck_assert_uint_eq(st.pushes, 3);
  ck_assert_uint_eq(st.steps, 3);
  ck_assert(st.last_loss == 0.25);
  ck_assert(st.last_grad_norm == sqrt(5570560.0));
  tw_cleanup(&t);
  instance_unref(in);
}
END_TEST

START_TEST(given_grad_norm_is_what_history_shows) {
  instance *in = fix_instance(&F, &(fix_spec){.n = 2});
  float g[2] = {3, 4};
  twaiter t;
  tw_init(&t);
  push p = fix_push(NULL, -1, g);
  p.grad_norm = 10; /* a sharded client's global norm */
  ck_assert_int_eq(tw_push(in, &t, p), PUSH_DONE);
  history_entry *h;
  ck_assert_uint_eq(instance_history_copy(in, &h), 1);
  ck_assert(h[0].grad_norm == 10.0);
  free(h);
  tw_cleanup(&t);
  instance_unref(in);
}
END_TEST

START_TEST(nonfinite_gradient_refused_nothing_changes) {
  const float init[4] = {0.5f, -0.25f, 3, 7};
  instance *in = fix_instance(&F, &(fix_spec){.n = 4, .params = init});
  float g[4] = {1, 2, NAN, 4};
  twaiter t;
  tw_init(&t);
  ck_assert_int_eq(tw_push(in, &t, fix_push("a", -1, g)), PUSH_FAILED);
  ck_outcome_err(&t, E_NOT_FINITE, "grads.w[2]: NaN or infinite");
  ck_assert_uint_eq(t.w.step, 0);
  g[2] = 0;
  g[3] = -INFINITY;
  ck_assert_int_eq(tw_push(in, &t, fix_push("a", -1, g)), PUSH_FAILED);
  ck_outcome_err(&t, E_NOT_FINITE, "grads.w[3]: NaN or infinite");
  ck_params(in, init, 4, 0);
  struct instance_stats st;
  uint64_t step;
  instance_stats_copy(in, &st, &step);
  ck_assert_uint_eq(st.pushes, 2);
  ck_assert_uint_eq(st.steps, 0);
  ck_assert_uint_eq(st.rejected[E_NOT_FINITE], 2);
  history_entry *h;
  ck_assert_uint_eq(instance_history_copy(in, &h), 0);
  free(h);
  tw_cleanup(&t);
  instance_unref(in);
}
END_TEST

START_TEST(random_search_takes_no_gradient) {
  instance *in = fix_instance(&F, &(fix_spec){.alg = "random_search", .n = 2});
  float g[2] = {1, 1};
  twaiter t;
  tw_init(&t);
  ck_assert_int_eq(tw_push(in, &t, fix_push(NULL, -1, g)), PUSH_FAILED);
  ck_outcome_err(&t, E_WRONG_ALGORITHM, "random_search instances take ask and tell, not gradients");
  const float zero[2] = {0, 0};
  ck_params(in, zero, 2, 0);
  tw_cleanup(&t);
  instance_unref(in);
}
END_TEST

START_TEST(closed_instance_refuses_pushes) {
  instance *in = fix_instance(&F, &(fix_spec){.n = 2});
  instance_close(in, E_NO_INSTANCE, NULL);
  float g[2] = {1, 1};
  twaiter t;
  tw_init(&t);
  ck_assert_int_eq(tw_push(in, &t, fix_push("a", -1, g)), PUSH_FAILED);
  ck_outcome_err(&t, E_NO_INSTANCE, "no optimizer instance of that name");
  const float zero[2] = {0, 0};
  ck_params(in, zero, 2, 0);
  tw_cleanup(&t);
  instance_unref(in);
}
END_TEST

START_TEST(shutdown_leaves_async_pushes_working) {
  instance *in = fix_instance(&F, &(fix_spec){.n = 2});
  instance_shutdown(in);
  float g[2] = {2, 4};
  twaiter t;
  tw_init(&t);
  ck_assert_int_eq(tw_push(in, &t, fix_push("a", -1, g)), PUSH_DONE);
  const float want[2] = {-2, -4};
  ck_params(in, want, 2, 1);
  tw_cleanup(&t);
  instance_unref(in);
}
END_TEST

/* ---- staleness ------------------------------------------------------------- */

START_TEST(max_staleness_and_step_ahead) {
  instance *in = fix_instance(&F, &(fix_spec){.n = 2, .has_staleness = true, .max_staleness = 1, .step = 3});
  float g[2];
  twaiter t;
  tw_init(&t);
  const float zero[2] = {0, 0};

  g[0] = 1, g[1] = 2;
  ck_assert_int_eq(tw_push(in, &t, fix_push("a", 1, g)), PUSH_FAILED);
  ck_outcome_err(&t, E_STALE,
                 "gradient computed at step 1 is 2 steps old (max_staleness 1); the instance is at step 3");
  ck_assert_uint_eq(t.w.step, 3);
  ck_params(in, zero, 2, 3);

  ck_assert_int_eq(tw_push(in, &t, fix_push("a", 2, g)), PUSH_DONE); /* 1 step old: allowed */
  ck_assert_uint_eq(t.w.step, 4);
  const float p4[2] = {-1, -2};
  ck_params(in, p4, 2, 4);

  ck_assert_int_eq(tw_push(in, &t, fix_push("a", 5, g)), PUSH_FAILED);
  ck_outcome_err(&t, E_STEP_AHEAD, "step 5 is ahead of the instance, which is at step 4");
  ck_assert_uint_eq(t.w.step, 4);
  ck_params(in, p4, 2, 4);

  g[0] = 4, g[1] = 8;
  ck_assert_int_eq(tw_push(in, &t, fix_push("a", 4, g)), PUSH_DONE);
  g[0] = 16, g[1] = 32;
  ck_assert_int_eq(tw_push(in, &t, fix_push("a", -1, g)), PUSH_DONE); /* no step: never stale */
  const float p6[2] = {-21, -42};
  ck_params(in, p6, 2, 6);

  worker_info *wi;
  uint64_t step;
  ck_assert_uint_eq(instance_workers_copy(in, &wi, &step), 1);
  ck_assert_uint_eq(wi[0].pushes, 3);
  ck_assert_uint_eq(wi[0].rejected, 2);
  ck_assert_int_eq(wi[0].last_push_step, 5); /* no step given: the step it was applied on */
  ck_assert_uint_eq(wi[0].staleness, 0);
  free(wi);
  struct instance_stats st;
  instance_stats_copy(in, &st, &step);
  ck_assert_uint_eq(st.rejected[E_STALE], 1);
  ck_assert_uint_eq(st.rejected[E_STEP_AHEAD], 1);
  ck_assert_uint_eq(st.steps, 3);
  tw_cleanup(&t);
  instance_unref(in);
}
END_TEST

START_TEST(max_staleness_zero_takes_only_the_current_step) {
  instance *in = fix_instance(&F, &(fix_spec){.n = 1, .has_staleness = true, .max_staleness = 0, .step = 10});
  float g[1] = {1};
  twaiter t;
  tw_init(&t);
  ck_assert_int_eq(tw_push(in, &t, fix_push("a", 9, g)), PUSH_FAILED);
  ck_outcome_err(&t, E_STALE,
                 "gradient computed at step 9 is 1 steps old (max_staleness 0); the instance is at step 10");
  ck_assert_int_eq(tw_push(in, &t, fix_push("a", 10, g)), PUSH_DONE);
  ck_assert_uint_eq(t.w.step, 11);
  tw_cleanup(&t);
  instance_unref(in);
}
END_TEST

/* ---- idempotency ------------------------------------------------------------- */

START_TEST(retry_gets_the_first_outcome) {
  instance *in = fix_instance(&F, &(fix_spec){.n = 2});
  float g1[2] = {1, 2}, g2[2] = {64, 128}, g3[2] = {4, 8};
  twaiter t;
  tw_init(&t);
  push p = fix_push("a", -1, g1);
  p.key = "s:a:1";
  ck_assert_int_eq(tw_push(in, &t, p), PUSH_DONE);
  ck_assert_uint_eq(t.w.step, 1);
  ck_assert(!t.w.replayed);
  const float p1[2] = {-1, -2};

  twaiter r;
  tw_init(&r);
  p = fix_push("a", -1, g2); /* a retry carrying another gradient: never applied */
  p.key = "s:a:1";
  p.emit = true;
  ck_assert_int_eq(tw_push(in, &r, p), PUSH_DONE);
  ck_assert_int_eq(r.w.code, 0);
  ck_assert(r.w.replayed);
  ck_assert_uint_eq(r.w.step, 1);
  ck_assert_ptr_nonnull(r.w.snap);
  ck_assert_uint_eq(r.w.snap->step, 1);
  ck_assert_uint_eq(r.w.snap->n, 2);
  ck_floats_bits(r.w.snap->v, p1, 2, "replayed params");
  const float g2_sent[2] = {64, 128};
  ck_floats_bits(g2, g2_sent, 2, "retry's gradient"); /* not applied, not overwritten */
  ck_params(in, p1, 2, 1);
  tw_cleanup(&r);

  p = fix_push("a", -1, g3);
  p.key = "s:a:2";
  ck_assert_int_eq(tw_push(in, &t, p), PUSH_DONE);
  ck_assert_uint_eq(t.w.step, 2);
  /* the first key still answers with its own moment, not the current one */
  tw_init(&r);
  p.key = "s:a:1";
  ck_assert_int_eq(tw_push(in, &r, p), PUSH_DONE);
  ck_assert(r.w.replayed);
  ck_assert_uint_eq(r.w.step, 1);
  ck_floats_bits(r.w.snap->v, p1, 2, "replayed params");
  tw_cleanup(&r);
  const float p2[2] = {-5, -10};
  ck_params(in, p2, 2, 2);

  worker_info *wi;
  uint64_t step;
  ck_assert_uint_eq(instance_workers_copy(in, &wi, &step), 1);
  ck_assert_uint_eq(wi[0].pushes, 2); /* replays are not pushes of the worker */
  free(wi);
  struct instance_stats st;
  instance_stats_copy(in, &st, &step);
  ck_assert_uint_eq(st.steps, 2);
  tw_cleanup(&t);
  instance_unref(in);
}
END_TEST

START_TEST(refused_keyed_push_is_judged_afresh) {
  instance *in = fix_instance(&F, &(fix_spec){.n = 1, .has_staleness = true, .max_staleness = 0, .step = 2});
  float g[1] = {8};
  twaiter t;
  tw_init(&t);
  push p = fix_push("a", 1, g);
  p.key = "k:x";
  for (int i = 0; i < 2; i++) { /* not remembered: the retry is refused for itself */
    ck_assert_int_eq(tw_push(in, &t, p), PUSH_FAILED);
    ck_outcome_err(&t, E_STALE,
                   "gradient computed at step 1 is 1 steps old (max_staleness 0); the instance is at step 2");
    ck_assert(!t.w.replayed);
  }
  instance_cfg c;
  instance_cfg_get(in, &c);
  c.max_staleness = -1;
  derr e = {0};
  ck_assert_int_eq(fix_reconfigure(in, &c, &e), 0);
  instance_cfg_free(&c);
  ck_assert_int_eq(tw_push(in, &t, p), PUSH_DONE);
  ck_assert(!t.w.replayed);
  ck_assert_uint_eq(t.w.step, 3);
  ck_assert_int_eq(tw_push(in, &t, p), PUSH_DONE);
  ck_assert(t.w.replayed);
  ck_assert_uint_eq(t.w.step, 3);
  tw_cleanup(&t);
  const float want[1] = {-8};
  ck_params(in, want, 1, 3);
  instance_unref(in);
}
END_TEST

/* Pushes key `k` (gradient 1) and returns the outcome's step; *replayed says how. */
static uint64_t push_key(instance *in, const char *k, bool *replayed) {
  float g[1] = {1};
  twaiter t;
  tw_init(&t);
  push p = fix_push(NULL, -1, g);
  p.key = k;
  ck_assert_int_eq(tw_push(in, &t, p), PUSH_DONE);
  *replayed = t.w.replayed;
  if (t.w.replayed) {
    ck_assert_ptr_nonnull(t.w.snap);
    ck_assert(t.w.snap->v[0] == -(float)t.w.step); /* the parameters of that moment */
  }
  uint64_t s = t.w.step;
  tw_cleanup(&t);
  return s;
}

START_TEST(idempotency_window_is_the_last_IDEM_LEN_keys) {
  instance *in = fix_instance(&F, &(fix_spec){.n = 1});
  char k[32];
  bool rep;
  for (int i = 0; i <= IDEM_LEN; i++) { /* k0 .. k1024: k0 falls out */
    snprintf(k, sizeof k, "k%d", i);
    ck_assert_uint_eq(push_key(in, k, &rep), (uint64_t)i + 1);
    ck_assert(!rep);
  }
  ck_assert_uint_eq(push_key(in, "k1", &rep), 2); /* the oldest kept: still replayed */
  ck_assert(rep);
  ck_assert_uint_eq(push_key(in, "k1024", &rep), IDEM_LEN + 1);
  ck_assert(rep);
  ck_assert_uint_eq(push_key(in, "k0", &rep), IDEM_LEN + 2); /* forgotten: applied again ... */
  ck_assert(!rep);
  ck_assert_uint_eq(push_key(in, "k1", &rep), IDEM_LEN + 3); /* ... and its slot was k1's */
  ck_assert(!rep);
  ck_assert_uint_eq(push_key(in, "k3", &rep), 4);
  ck_assert(rep);
  ck_assert_uint_eq(push_key(in, "k0", &rep), IDEM_LEN + 2);
  ck_assert(rep);
  float v[1];
  ck_assert_uint_eq(fix_read(in, v), IDEM_LEN + 3);
  ck_assert(v[0] == -(float)(IDEM_LEN + 3));
  instance_unref(in);
}
END_TEST

START_TEST(history_keeps_the_last_HISTORY_LEN_steps) {
  instance *in = fix_instance(&F, &(fix_spec){.n = 1});
  float g[1];
  twaiter t;
  tw_init(&t);
  for (int i = 1; i <= HISTORY_LEN + 1; i++) {
    g[0] = 1;
    push p = fix_push(NULL, -1, g);
    p.loss = (double)i;
    ck_assert_int_eq(tw_push(in, &t, p), PUSH_DONE);
  }
  history_entry *h;
  ck_assert_uint_eq(instance_history_copy(in, &h), HISTORY_LEN);
  ck_assert_uint_eq(h[0].step, 2); /* step 1 fell out */
  ck_assert(h[0].loss == 2.0);
  ck_assert_uint_eq(h[HISTORY_LEN - 1].step, HISTORY_LEN + 1);
  ck_assert(h[HISTORY_LEN - 1].loss == (double)(HISTORY_LEN + 1));
  for (size_t i = 1; i < HISTORY_LEN; i++) CHECK(h[i].step == h[i - 1].step + 1, "history[%zu] out of order", i);
  free(h);
  struct instance_stats st;
  uint64_t step, sum = 0;
  instance_stats_copy(in, &st, &step);
  for (size_t k = 0; k < sizeof st.latency_buckets / sizeof st.latency_buckets[0]; k++) sum += st.latency_buckets[k];
  ck_assert_uint_eq(sum, HISTORY_LEN + 1); /* every step in one latency bucket */
  tw_cleanup(&t);
  instance_unref(in);
}
END_TEST

START_TEST(schedule_sets_each_steps_lr) {
  instance_state s;
  fix_state(&s, &(fix_spec){.n = 1, .step = 1});
  s.cfg.sched = (schedule){.kind = SCHED_STEP, .step_size = 2, .gamma = 0.5};
  instance *in = instance_from_state(&s, &F.env);
  instance_state_free(&s);
  ck_assert_ptr_nonnull(in);
  ck_assert(instance_lr(in) == 1.0); /* step 2 runs at lr(1) = 1 * 0.5^floor(1/2) */
  float g[1];
  twaiter t;
  tw_init(&t);
  const double lrs[4] = {1.0, 0.5, 0.5, 0.25}; /* the lr of steps 2..5 */
  for (int i = 0; i < 4; i++) {
    g[0] = 1;
    ck_assert_int_eq(tw_push(in, &t, fix_push(NULL, -1, g)), PUSH_DONE);
  }
  history_entry *h;
  ck_assert_uint_eq(instance_history_copy(in, &h), 4);
  for (int i = 0; i < 4; i++) ck_assert(h[i].lr == lrs[i]);
  free(h);
  float v[1];
  ck_assert_uint_eq(fix_read(in, v), 5);
  ck_assert(v[0] == -2.25f);
  ck_assert(instance_lr(in) == 0.25); /* lr(5) for step 6 */
  instance_info info;
  instance_info_get(in, &info);
  ck_assert(info.lr == 0.25);
  tw_cleanup(&t);
  instance_unref(in);
}
END_TEST

START_TEST(reconfigure_adds_momentum_mid_run) {
  instance *in = fix_instance(&F, &(fix_spec){.n = 2});
  float g[2];
  twaiter t;
  tw_init(&t);
  for (int i = 0; i < 2; i++) {
    g[0] = 1, g[1] = 4;
    ck_assert_int_eq(tw_push(in, &t, fix_push(NULL, -1, g)), PUSH_DONE);
  }
  instance_state s;
  ck_assert_int_eq(instance_export(in, &s), 0);
  ck_assert_uint_eq(s.have, 0); /* plain sgd holds no buffer */
  instance_state_free(&s);
  instance_cfg c;
  instance_cfg_get(in, &c);
  c.hyper.momentum = 0.5;
  derr e = {0};
  ck_assert_int_eq(fix_reconfigure(in, &c, &e), 0);
  instance_cfg_free(&c);
  ck_assert_int_eq(instance_export(in, &s), 0);
  ck_assert_uint_eq(s.have, 1u << OPTIM_BUF_MOMENTUM);
  ck_assert_uint_eq(s.fresh, 1u << OPTIM_BUF_MOMENTUM); /* no history yet */
  instance_state_free(&s);
  /* torch: the first step with momentum clones the gradient into the buffer */
  g[0] = 2, g[1] = 8;
  ck_assert_int_eq(tw_push(in, &t, fix_push(NULL, -1, g)), PUSH_DONE);
  g[0] = 2, g[1] = 8;
  ck_assert_int_eq(tw_push(in, &t, fix_push(NULL, -1, g)), PUSH_DONE); /* buf = 0.5 buf + g */
  const float want[2] = {-2 - 2 - 3, -8 - 8 - 12};
  ck_params(in, want, 2, 4);
  ck_assert_int_eq(instance_export(in, &s), 0);
  ck_assert_uint_eq(s.fresh, 0);
  ck_assert(s.buf[OPTIM_BUF_MOMENTUM][0] == 3.0f && s.buf[OPTIM_BUF_MOMENTUM][1] == 12.0f);
  ck_assert_uint_eq(s.step, 4);
  instance_state_free(&s);
  tw_cleanup(&t);
  instance_unref(in);
}
END_TEST

/* Replies' parameters are kept within a 64 MiB budget per instance: with
 * 16 MiB of parameters, the four newest keys keep theirs. */
START_TEST(replay_beyond_the_snapshot_budget_keeps_the_step_only) {
  const size_t n = (size_t)4 << 20; /* 16 MiB of float32 */
  instance *in = fix_instance(&F, &(fix_spec){.n = n});
  float *g = mem_alloc_floats(n);
  ck_assert_ptr_nonnull(g);
  twaiter t;
  char k[24];
  for (int i = 1; i <= 5; i++) {
    for (size_t j = 0; j < n; j++) g[j] = 1;
    snprintf(k, sizeof k, "k%d", i);
    push p = fix_push(NULL, -1, g);
    p.key = k;
    tw_init(&t);
    ck_assert_int_eq(tw_push(in, &t, p), PUSH_DONE);
    ck_assert_uint_eq(t.w.step, (uint64_t)i);
    tw_cleanup(&t);
  }
  for (int i = 1; i <= 5; i++) {
    snprintf(k, sizeof k, "k%d", i);
    push p = fix_push(NULL, -1, g);
    p.key = k;
    tw_init(&t);
    ck_assert_int_eq(tw_push(in, &t, p), PUSH_DONE);
    ck_assert(t.w.replayed);
    ck_assert_uint_eq(t.w.step, (uint64_t)i); /* the first outcome's step, always */
    if (i == 1) {
      ck_assert_ptr_null(t.w.snap); /* its parameters made room for newer ones */
    } else {
      ck_assert_ptr_nonnull(t.w.snap);
      ck_assert_uint_eq(t.w.snap->step, (uint64_t)i);
      ck_assert(t.w.snap->v[0] == -(float)i && t.w.snap->v[n - 1] == -(float)i);
    }
    tw_cleanup(&t);
  }
  mem_free_floats(g, n);
  instance_unref(in);
}
END_TEST

Suite *suite_state_push(void) {
  Suite *s = suite_create("state_push");
  TCase *tc = tcase_create("apply");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, sgd_lr1_powers_of_two_sum_exactly);
  tcase_add_test(tc, given_grad_norm_is_what_history_shows);
  tcase_add_test(tc, nonfinite_gradient_refused_nothing_changes);
  tcase_add_test(tc, random_search_takes_no_gradient);
  tcase_add_test(tc, closed_instance_refuses_pushes);
  tcase_add_test(tc, shutdown_leaves_async_pushes_working);
  tcase_add_test(tc, history_keeps_the_last_HISTORY_LEN_steps);
  tcase_add_test(tc, schedule_sets_each_steps_lr);
  tcase_add_test(tc, reconfigure_adds_momentum_mid_run);
  suite_add_tcase(s, tc);
  tc = tcase_create("staleness");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, max_staleness_and_step_ahead);
  tcase_add_test(tc, max_staleness_zero_takes_only_the_current_step);
  suite_add_tcase(s, tc);
  tc = tcase_create("idempotency");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, retry_gets_the_first_outcome);
  tcase_add_test(tc, refused_keyed_push_is_judged_afresh);
  tcase_add_test(tc, idempotency_window_is_the_last_IDEM_LEN_keys);
  suite_add_tcase(s, tc);
  tc = tcase_create("budget"); /* 10 pushes of 16 MiB: slow under the sanitizers */
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, replay_beyond_the_snapshot_budget_keeps_the_step_only);
  suite_add_tcase(s, tc);
  return s;
}
