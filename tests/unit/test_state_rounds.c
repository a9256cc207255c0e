/* test_state_rounds: sync rounds through instance_push without HTTP: the
 * combined gradient (mean or sum, in worker-name order), refusals inside a
 * round, round deadlines with backup workers (min_workers) and too few,
 * stragglers, worker leases, keyed pushes in a round, a reconfigure that
 * completes a round, and close/shutdown failing its members.
 *
 * Timers are real (statefix's loop), but only this thread runs the loop
 * (fix_drive): a deadline or a lease fires exactly where the test drives,
 * never between two pushes, so every outcome is exact.  Public API only. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "instance.h"
#include "optim.h"
#include "statefix.h"
#include "suites.h"
#include "timers.h"

static fix F;
static void setup(void) { fix_init(&F); }
static void teardown(void) { fix_cleanup(&F); }

static void ck_params(instance *in, const float *want, size_t n, uint64_t step) {
  float got[64];
  ck_assert_uint_le(n, 64);
  ck_assert_uint_eq(fix_read(in, got), step);
  ck_floats_bits(got, want, n, "params");
}

static size_t waiting(instance *in) {
  instance_info info;
  instance_info_get(in, &info);
  return info.waiting;
}

/* The worker named `name` from the table (aborts if absent). */
static worker_info worker(instance *in, const char *name) {
  worker_info *wi, out;
  uint64_t step;
  size_t n = instance_workers_copy(in, &wi, &step);
  for (size_t i = 0; i < n; i++)
    if (!strcmp(wi[i].name, name)) {
      out = wi[i];
      free(wi);
      return out;
    }
  free(wi);
  ck_abort_msg("no worker %s", name);
  return out;
}

typedef struct two {
  twaiter *a, *b;
} two;
static bool both_woken(void *arg) {
  two *t = arg;
  return tw_wakes(t->a) >= 1 && tw_wakes(t->b) >= 1;
}

static fix_spec sync_spec(uint32_t workers) {
  return (fix_spec){.n = 4, .mode = MODE_SYNC, .workers = workers};
}

/* ---- combining ------------------------------------------------------------- */

START_TEST(mean_in_worker_name_order) {
  instance *in = fix_instance(&F, &(fix_spec){.n = 4, .mode = MODE_SYNC, .workers = 3});
  /* float addition is not associative here: a + b + c gives 0 in [0], the
   * arrival order c + a + b would give 1 */
  float a[4] = {1e8f, 2, 4, 0.5f}, b[4] = {1, 4, 8, 0.25f}, c[4] = {-1e8f, 8, 16, 0.125f};
  twaiter tc, ta, tb;
  tw_init(&tc), tw_init(&ta), tw_init(&tb);
  push p = fix_push("c", 0, c);
  p.loss = 4;
  ck_assert_int_eq(tw_push(in, &tc, p), PUSH_WAITING);
  ck_assert_int_eq(tc.suspends, 1);
  p = fix_push("a", 0, a);
  p.loss = 1;
  ck_assert_int_eq(tw_push(in, &ta, p), PUSH_WAITING);
  ck_assert_uint_eq(waiting(in), 2);
  ck_assert_int_eq(tw_wakes(&tc) + tw_wakes(&ta), 0);
  const float zero[4] = {0};
  ck_params(in, zero, 4, 0); /* nothing applied while the round is open */
  p = fix_push("b", 0, b);
  p.loss = 2;
  ck_assert_int_eq(tw_push(in, &tb, p), PUSH_DONE); /* the last member closes it */
  ck_assert_int_eq(tb.suspends, 0);
  ck_assert_int_eq(tb.wakes, 0);
  ck_assert_int_eq(tw_wakes(&tc), 1);
  ck_assert_int_eq(tw_wakes(&ta), 1);

  /* by hand: ((a + b) + c) / 3 in float32; lr 1 from zero */
  float sum1 = (1e8f + 1.0f) + -1e8f; /* 1e8 + 1 rounds to 1e8 */
  ck_assert(sum1 == 0.0f);
  ck_assert((-1e8f + 1e8f) + 1.0f == 1.0f); /* what arrival order would give */
  float mean[4] = {sum1 / 3.0f, 14.0f / 3.0f, 28.0f / 3.0f, 0.875f / 3.0f};
  float want[4];
  for (int i = 0; i < 4; i++) want[i] = 0.0f - mean[i];
  ck_params(in, want, 4, 1);
  twaiter *all[3] = {&ta, &tb, &tc};
  for (int i = 0; i < 3; i++) {
    ck_assert_int_eq(all[i]->w.code, 0);
    ck_assert_uint_eq(all[i]->w.step, 1);
    ck_assert_ptr_nonnull(all[i]->w.snap);
    ck_assert_ptr_eq(all[i]->w.snap, ta.w.snap); /* one shared copy of that moment */
    ck_assert_uint_eq(all[i]->w.snap->step, 1);
    ck_floats_bits(all[i]->w.snap->v, want, 4, "round params");
  }
  ck_assert_uint_eq(waiting(in), 0);
  history_entry *h;
  ck_assert_uint_eq(instance_history_copy(in, &h), 1);
  ck_assert(h[0].loss == 7.0 / 3.0); /* (1 + 2 + 4) / 3 */
  ck_assert(h[0].grad_norm == sqrt(optim_sumsq(mean, 4)));
  free(h);
  const char *names[3] = {"a", "b", "c"};
  for (int i = 0; i < 3; i++) {
    worker_info w = worker(in, names[i]);
    ck_assert_uint_eq(w.pushes, 1);
    ck_assert_int_eq(w.last_push_step, 0);
    ck_assert_uint_eq(w.staleness, 0);
  }
  tw_cleanup(&ta), tw_cleanup(&tb), tw_cleanup(&tc);
  instance_unref(in);
}
END_TEST

START_TEST(sum_of_powers_of_two_over_two_rounds) {
  fix_spec sp = sync_spec(2);
  sp.aggregate = AGG_SUM;
  instance *in = fix_instance(&F, &sp);
  float a1[4] = {1, 2, 4, 8}, b1[4] = {16, 32, 64, 128};
  float a2[4] = {256, 512, 1024, 2048}, b2[4] = {4096, 8192, 16384, 32768};
  twaiter ta, tb;
  tw_init(&ta), tw_init(&tb);
  ck_assert_int_eq(tw_push(in, &ta, fix_push("a", 0, a1)), PUSH_WAITING);
  ck_assert_int_eq(tw_push(in, &tb, fix_push("b", 0, b1)), PUSH_DONE);
  const float p1[4] = {-17, -34, -68, -136};
  ck_params(in, p1, 4, 1);
  ck_floats_bits(ta.w.snap->v, p1, 4, "a's reply");
  tw_cleanup(&ta), tw_cleanup(&tb);
  tw_init(&ta), tw_init(&tb);
  ck_assert_int_eq(tw_push(in, &tb, fix_push("b", 1, b2)), PUSH_WAITING);
  ck_assert_int_eq(tw_push(in, &ta, fix_push("a", 1, a2)), PUSH_DONE);
  ck_assert_int_eq(tw_wakes(&tb), 1);
  const float p2[4] = {-4369, -8738, -17476, -34952};
  ck_params(in, p2, 4, 2);
  ck_assert_uint_eq(tb.w.step, 2);
  ck_floats_bits(tb.w.snap->v, p2, 4, "b's reply");
  tw_cleanup(&ta), tw_cleanup(&tb);
  instance_unref(in);
}
END_TEST

START_TEST(refusals_inside_a_round) {
  instance *in = fix_instance(&F, &(fix_spec){.n = 4, .mode = MODE_SYNC, .workers = 2});
  float a[4] = {2, 4, 8, 16}, b[4] = {6, 12, 24, 48}, x[4] = {1, 1, 1, 1};
  twaiter ta, t, tb;
  tw_init(&ta), tw_init(&t), tw_init(&tb);
  ck_assert_int_eq(tw_push(in, &ta, fix_push("a", 0, a)), PUSH_WAITING);
  ck_assert_int_eq(tw_push(in, &t, fix_push("a", 0, x)), PUSH_FAILED);
  ck_outcome_err(&t, E_ALREADY_PUSHED, "worker a already pushed for step 0");
  ck_assert_uint_eq(t.w.step, 0);
  ck_assert_int_eq(tw_push(in, &t, fix_push(NULL, 0, x)), PUSH_FAILED);
  ck_outcome_err(&t, E_MISSING_WORKER, "sync mode needs \"worker\" (or ?worker=) on every push");
  ck_assert_int_eq(tw_push(in, &t, fix_push("", 0, x)), PUSH_FAILED);
  ck_outcome_err(&t, E_MISSING_WORKER, "sync mode needs \"worker\" (or ?worker=) on every push");
  ck_assert_int_eq(tw_push(in, &t, fix_push("b", 3, x)), PUSH_FAILED);
  ck_outcome_err(&t, E_STEP_AHEAD, "step 3 is ahead of the instance, which is at step 0");
  x[1] = NAN;
  ck_assert_int_eq(tw_push(in, &t, fix_push("b", 0, x)), PUSH_FAILED);
  ck_outcome_err(&t, E_NOT_FINITE, "grads.w[1]: NaN or infinite");
  ck_assert_uint_eq(waiting(in), 1); /* the round still holds a alone */
  ck_assert_int_eq(t.suspends, 0);
  ck_assert_int_eq(tw_push(in, &tb, fix_push("b", 0, b)), PUSH_DONE);
  const float p1[4] = {-4, -8, -16, -32}; /* (a + b) / 2, once */
  ck_params(in, p1, 4, 1);
  ck_assert_int_eq(ta.w.code, 0);
  ck_assert_int_eq(tw_push(in, &t, fix_push("b", 0, b)), PUSH_FAILED); /* a straggler's copy */
  ck_outcome_err(&t, E_STALE, "the round for step 0 has closed; the instance is at step 1: pull and resync");
  ck_assert_uint_eq(t.w.step, 1);
  ck_params(in, p1, 4, 1);
  ck_assert_uint_eq(worker(in, "a").rejected, 1);
  ck_assert_uint_eq(worker(in, "b").rejected, 2); /* step ahead, stale; the NaN is the request's */
  ck_assert_uint_eq(worker(in, "b").pushes, 1);
  tw_cleanup(&ta), tw_cleanup(&t), tw_cleanup(&tb);
  instance_unref(in);
}
END_TEST

START_TEST(combined_gradient_overflow_fails_the_round) {
  fix_spec sp = sync_spec(2);
  sp.n = 2;
  sp.aggregate = AGG_SUM;
  instance *in = fix_instance(&F, &sp);
  float a[2] = {3e38f, 1}, b[2] = {3e38f, 1};
  twaiter ta, tb;
  tw_init(&ta), tw_init(&tb);
  ck_assert_int_eq(tw_push(in, &ta, fix_push("a", 0, a)), PUSH_WAITING);
  ck_assert_int_eq(tw_push(in, &tb, fix_push("b", 0, b)), PUSH_FAILED);
  ck_outcome_err(&ta, E_NOT_FINITE, "the combined gradient overflowed to infinity");
  ck_outcome_err(&tb, E_NOT_FINITE, "the combined gradient overflowed to infinity");
  ck_assert_int_eq(tw_wakes(&ta), 1);
  ck_assert_ptr_null(ta.w.snap);
  const float zero[2] = {0, 0};
  ck_params(in, zero, 2, 0);
  ck_assert_uint_eq(waiting(in), 0);
  /* the round is empty again: a may push for step 0 once more */
  a[0] = 1;
  tw_cleanup(&ta);
  tw_init(&ta);
  ck_assert_int_eq(tw_push(in, &ta, fix_push("a", 0, a)), PUSH_WAITING);
  instance_close(in, E_NO_INSTANCE, NULL);
  ck_outcome_err(&ta, E_NO_INSTANCE, "no optimizer instance of that name");
  tw_cleanup(&ta), tw_cleanup(&tb);
  instance_unref(in);
}
END_TEST

/* ---- deadlines ------------------------------------------------------------- */

START_TEST(backup_workers_close_at_the_deadline) {
  fix_spec sp = sync_spec(3);
  sp.min_workers = 2;
  sp.round_timeout_ms = 20;
  instance *in = fix_instance(&F, &sp);
  float a[4] = {1, 2, 4, 8}, b[4] = {3, 6, 12, 24}, c[4] = {64, 64, 64, 64};
  twaiter ta, tb, tc;
  tw_init(&ta), tw_init(&tb), tw_init(&tc);
  ck_assert_uint_eq(timers_armed(F.tm), 0);
  uint64_t before = timers_now_ms(); /* the deadline is at least 20 ms after this */
  ck_assert_int_eq(tw_push(in, &tb, fix_push("b", 0, b)), PUSH_WAITING);
  ck_assert_uint_eq(timers_armed(F.tm), 1); /* the round's deadline */
  ck_assert_int_eq(tw_push(in, &ta, fix_push("a", 0, a)), PUSH_WAITING);
  ck_assert_uint_eq(timers_armed(F.tm), 1);
  ck_assert(fix_drive(&F, both_woken, &(two){&ta, &tb}, 2000));
  /* waiting members are alive: their leases run from the reply, not the push */
  ck_assert_uint_ge(worker(in, "a").last_seen_ms, before + 20);
  const float p1[4] = {-2, -4, -8, -16}; /* the mean of the two that came */
  ck_params(in, p1, 4, 1);
  ck_assert_int_eq(ta.w.code, 0);
  ck_assert_int_eq(tb.w.code, 0);
  ck_assert_uint_eq(tb.w.step, 1);
  ck_floats_bits(tb.w.snap->v, p1, 4, "b's reply");
  ck_assert_uint_eq(timers_armed(F.tm), 0);
  /* the straggler's gradient is for a closed round */
  ck_assert_int_eq(tw_push(in, &tc, fix_push("c", 0, c)), PUSH_FAILED);
  ck_outcome_err(&tc, E_STALE, "the round for step 0 has closed; the instance is at step 1: pull and resync");
  ck_params(in, p1, 4, 1);
  /* resynced, it takes part in the next round, which all three close */
  tw_cleanup(&ta), tw_cleanup(&tb), tw_cleanup(&tc);
  tw_init(&ta), tw_init(&tb), tw_init(&tc);
  ck_assert_int_eq(tw_push(in, &tc, fix_push("c", 1, c)), PUSH_WAITING);
  ck_assert_int_eq(tw_push(in, &ta, fix_push("a", 1, a)), PUSH_WAITING);
  ck_assert_int_eq(tw_push(in, &tb, fix_push("b", 1, b)), PUSH_DONE);
  float want[4];
  for (int i = 0; i < 4; i++) want[i] = p1[i] - (a[i] + b[i] + c[i]) / 3.0f;
  ck_params(in, want, 4, 2);
  ck_assert_uint_eq(timers_armed(F.tm), 0); /* the closed round's deadline was cancelled */
  tw_cleanup(&ta), tw_cleanup(&tb), tw_cleanup(&tc);
  instance_unref(in);
}
END_TEST

START_TEST(deadline_with_too_few_fails_all_with_504) {
  fix_spec sp = sync_spec(3);
  sp.min_workers = 2;
  sp.round_timeout_ms = 10;
  const float init[4] = {1, 2, 3, 4};
  sp.params = init;
  instance *in = fix_instance(&F, &sp);
  float a[4] = {1, 1, 1, 1};
  twaiter ta;
  tw_init(&ta);
  uint64_t before = timers_now_ms();
  ck_assert_int_eq(tw_push(in, &ta, fix_push("a", 0, a)), PUSH_WAITING);
  ck_assert(fix_drive(&F, tw_woken, &ta, 2000));
  ck_outcome_err(&ta, E_TIMEOUT, "the round for step 0 closed with 1 of 3 workers");
  /* it was waiting, so alive: its lease runs from this reply, not from its push */
  ck_assert_uint_ge(worker(in, "a").last_seen_ms, before + 10);
  ck_assert_uint_eq(ta.w.step, 0);
  ck_assert_ptr_null(ta.w.snap);
  ck_params(in, init, 4, 0);
  ck_assert_uint_eq(waiting(in), 0);
  ck_assert_uint_eq(timers_armed(F.tm), 0);
  struct instance_stats st;
  uint64_t step;
  instance_stats_copy(in, &st, &step);
  ck_assert_uint_eq(st.rejected[E_TIMEOUT], 1);
  ck_assert_uint_eq(st.steps, 0);
  /* the same worker may try the same step again: a new round */
  tw_cleanup(&ta);
  tw_init(&ta);
  ck_assert_int_eq(tw_push(in, &ta, fix_push("a", 0, a)), PUSH_WAITING);
  ck_assert_uint_eq(worker(in, "a").pushes, 2);
  instance_close(in, E_CONFLICT, "replaced by a PUT");
  ck_outcome_err(&ta, E_CONFLICT, "replaced by a PUT");
  ck_assert_int_eq(tw_wakes(&ta), 1);
  ck_params(in, init, 4, 0);
  ck_assert_uint_eq(timers_armed(F.tm), 0);
  tw_cleanup(&ta);
  instance_unref(in);
}
END_TEST

START_TEST(deadline_without_min_workers_needs_all) {
  fix_spec sp = sync_spec(2);
  sp.round_timeout_ms = 10; /* min_workers 0: all N */
  instance *in = fix_instance(&F, &sp);
  float a[4] = {1, 1, 1, 1};
  twaiter ta;
  tw_init(&ta);
  ck_assert_int_eq(tw_push(in, &ta, fix_push("a", 0, a)), PUSH_WAITING);
  ck_assert(fix_drive(&F, tw_woken, &ta, 2000));
  ck_outcome_err(&ta, E_TIMEOUT, "the round for step 0 closed with 1 of 2 workers");
  tw_cleanup(&ta);
  instance_unref(in);
}
END_TEST

START_TEST(no_timeout_no_lease_arms_nothing) {
  instance *in = fix_instance(&F, &(fix_spec){.n = 4, .mode = MODE_SYNC, .workers = 2});
  float a[4] = {1, 1, 1, 1};
  twaiter ta;
  tw_init(&ta);
  ck_assert_int_eq(tw_push(in, &ta, fix_push("a", 0, a)), PUSH_WAITING);
  ck_assert_uint_eq(timers_armed(F.tm), 0);
  instance_shutdown(in);
  ck_outcome_err(&ta, E_SHUTTING_DOWN, "the daemon is shutting down; retry after it restarts");
  ck_assert_int_eq(tw_wakes(&ta), 1);
  tw_cleanup(&ta);
  tw_init(&ta); /* no new waits after shutdown */
  ck_assert_int_eq(tw_push(in, &ta, fix_push("b", 0, a)), PUSH_FAILED);
  ck_outcome_err(&ta, E_SHUTTING_DOWN, "the daemon is shutting down");
  ck_assert_int_eq(ta.suspends, 0);
  const float zero[4] = {0};
  ck_params(in, zero, 4, 0);
  tw_cleanup(&ta);
  instance_unref(in);
}
END_TEST

/* ---- leases ---------------------------------------------------------------- */

START_TEST(silent_member_is_dropped_when_its_lease_ends) {
  fix_spec sp = sync_spec(2);
  sp.worker_lease_ms = 20;
  instance *in = fix_instance(&F, &sp);
  float a1[4] = {2, 2, 2, 2}, b1[4] = {4, 4, 4, 4}, a2[4] = {1, 2, 4, 8};
  twaiter ta, tb;
  tw_init(&ta), tw_init(&tb);
  ck_assert_int_eq(tw_push(in, &ta, fix_push("a", 0, a1)), PUSH_WAITING);
  ck_assert_uint_eq(timers_armed(F.tm), 0); /* b never pushed: no lease of its to watch */
  ck_assert_int_eq(tw_push(in, &tb, fix_push("b", 0, b1)), PUSH_DONE);
  const float p1[4] = {-3, -3, -3, -3};
  ck_params(in, p1, 4, 1);
  tw_cleanup(&ta), tw_cleanup(&tb);
  tw_init(&ta);
  ck_assert_int_eq(tw_push(in, &ta, fix_push("a", 1, a2)), PUSH_WAITING);
  ck_assert_uint_eq(timers_armed(F.tm), 1); /* b's lease */
  ck_assert(fix_drive(&F, tw_woken, &ta, 2000));
  ck_assert_int_eq(ta.w.code, 0);
  ck_assert_uint_eq(ta.w.step, 2);
  const float p2[4] = {-4, -5, -7, -11}; /* a's gradient alone: b is no longer expected */
  ck_params(in, p2, 4, 2);
  ck_floats_bits(ta.w.snap->v, p2, 4, "a's reply");
  ck_assert(worker(in, "b").dropped);
  ck_assert(!worker(in, "a").dropped);
  tw_cleanup(&ta);
  /* b comes back: its old step is stale; on the current one it is a member
   * again, and the round waits for both */
  tw_init(&ta), tw_init(&tb);
  ck_assert_int_eq(tw_push(in, &tb, fix_push("b", 1, b1)), PUSH_FAILED);
  ck_outcome_err(&tb, E_STALE, "the round for step 1 has closed; the instance is at step 2: pull and resync");
  ck_assert_int_eq(tw_push(in, &tb, fix_push("b", 2, b1)), PUSH_WAITING);
  ck_assert(!worker(in, "b").dropped);
  ck_assert_uint_eq(waiting(in), 1);
  ck_assert_int_eq(tw_push(in, &ta, fix_push("a", 2, a1)), PUSH_DONE);
  ck_assert_int_eq(tw_wakes(&tb), 1);
  const float p3[4] = {-7, -8, -10, -14};
  ck_params(in, p3, 4, 3);
  ck_assert_uint_eq(timers_armed(F.tm), 0);
  tw_cleanup(&ta), tw_cleanup(&tb);
  instance_unref(in);
}
END_TEST

START_TEST(touching_an_unknown_worker_creates_none) {
  instance *in = fix_instance(&F, &(fix_spec){.n = 1});
  instance_touch_worker(in, "ghost");
  instance_touch_worker(in, "");
  instance_touch_worker(in, NULL);
  worker_info *wi;
  uint64_t step;
  ck_assert_uint_eq(instance_workers_copy(in, &wi, &step), 0);
  free(wi);
  instance_unref(in);
}
END_TEST

/* ---- keys, reconfigure ------------------------------------------------------- */

START_TEST(keyed_retry_waits_with_the_round) {
  instance *in = fix_instance(&F, &(fix_spec){.n = 4, .mode = MODE_SYNC, .workers = 2});
  float a[4] = {1, 2, 4, 8}, a_again[4] = {99, 99, 99, 99}, b[4] = {3, 6, 12, 24};
  twaiter ta, tr, tb, tr2;
  tw_init(&ta), tw_init(&tr), tw_init(&tb), tw_init(&tr2);
  push p = fix_push("a", 0, a);
  p.key = "s:a:7";
  ck_assert_int_eq(tw_push(in, &ta, p), PUSH_WAITING);
  p.grad = a_again;
  ck_assert_int_eq(tw_push(in, &tr, p), PUSH_WAITING); /* attached to the first, not a second push */
  ck_assert_int_eq(tr.suspends, 1);
  ck_assert_uint_eq(worker(in, "a").pushes, 1);
  ck_assert_int_eq(tw_push(in, &tb, fix_push("b", 0, b)), PUSH_DONE);
  ck_assert_int_eq(tw_wakes(&ta), 1);
  ck_assert_int_eq(tw_wakes(&tr), 1);
  const float p1[4] = {-2, -4, -8, -16};
  ck_params(in, p1, 4, 1);
  ck_assert_int_eq(tr.w.code, 0);
  ck_assert_uint_eq(tr.w.step, 1);
  ck_assert_ptr_eq(tr.w.snap, ta.w.snap);
  /* after the round: a replay of the same moment */
  ck_assert_int_eq(tw_push(in, &tr2, p), PUSH_DONE);
  ck_assert(tr2.w.replayed);
  ck_assert_uint_eq(tr2.w.step, 1);
  ck_floats_bits(tr2.w.snap->v, p1, 4, "replayed params");
  ck_params(in, p1, 4, 1);
  tw_cleanup(&ta), tw_cleanup(&tr), tw_cleanup(&tb), tw_cleanup(&tr2);
  instance_unref(in);
}
END_TEST

START_TEST(keyed_retry_shares_a_failure_then_starts_afresh) {
  fix_spec sp = sync_spec(2);
  sp.round_timeout_ms = 10;
  instance *in = fix_instance(&F, &sp);
  float a[4] = {1, 2, 4, 8};
  twaiter ta, tr, tr2;
  tw_init(&ta), tw_init(&tr), tw_init(&tr2);
  push p = fix_push("a", 0, a);
  p.key = "k:one";
  ck_assert_int_eq(tw_push(in, &ta, p), PUSH_WAITING);
  ck_assert_int_eq(tw_push(in, &tr, p), PUSH_WAITING);
  ck_assert(fix_drive(&F, both_woken, &(two){&ta, &tr}, 2000));
  ck_outcome_err(&ta, E_TIMEOUT, "the round for step 0 closed with 1 of 2 workers");
  ck_outcome_err(&tr, E_TIMEOUT, "the round for step 0 closed with 1 of 2 workers");
  /* a failed round forgets the key: the next retry is a new push */
  ck_assert_int_eq(tw_push(in, &tr2, p), PUSH_WAITING);
  ck_assert(!tr2.w.replayed);
  ck_assert_uint_eq(waiting(in), 1);
  ck_assert_uint_eq(worker(in, "a").pushes, 2);
  instance_close(in, E_NO_INSTANCE, NULL);
  ck_outcome_err(&tr2, E_NO_INSTANCE, "no optimizer instance of that name");
  const float zero[4] = {0};
  ck_params(in, zero, 4, 0);
  tw_cleanup(&ta), tw_cleanup(&tr), tw_cleanup(&tr2);
  instance_unref(in);
}
END_TEST

START_TEST(fewer_workers_by_reconfigure_close_the_round) {
  instance *in = fix_instance(&F, &(fix_spec){.n = 4, .mode = MODE_SYNC, .workers = 3});
  float a[4] = {1, 2, 4, 8}, b[4] = {3, 6, 12, 24};
  twaiter ta, tb;
  tw_init(&ta), tw_init(&tb);
  ck_assert_int_eq(tw_push(in, &ta, fix_push("a", 0, a)), PUSH_WAITING);
  ck_assert_int_eq(tw_push(in, &tb, fix_push("b", 0, b)), PUSH_WAITING);
  instance_cfg c;
  instance_cfg_get(in, &c);
  c.workers = 2;
  derr e = {0};
  ck_assert_int_eq(fix_reconfigure(in, &c, &e), 0);
  instance_cfg_free(&c);
  ck_assert_int_eq(tw_wakes(&ta), 1);
  ck_assert_int_eq(tw_wakes(&tb), 1);
  const float p1[4] = {-2, -4, -8, -16};
  ck_params(in, p1, 4, 1);
  ck_assert_int_eq(ta.w.code, 0);
  ck_floats_bits(tb.w.snap->v, p1, 4, "b's reply");
  tw_cleanup(&ta), tw_cleanup(&tb);
  instance_unref(in);
}
END_TEST

#if 0 /* needs: instance_env.now_ms (a clock the instance and its timers read) */
/* Leases on exact boundaries, without sleeping: with a test clock in the
 * environment (instance_env.now_ms, a uint64_t (*)(void *) with its arg,
 * read by instance.c wherever it calls timers_now_ms, and by the timers),
 * a lease is renewed by a touch and expires at last_seen + lease exactly. */
static uint64_t fake_now;
static uint64_t fake_clock(void *arg) {
  (void)arg;
  return fake_now;
}

START_TEST(lease_renewed_by_touch_expires_on_its_boundary) {
  F.env.now_ms = fake_clock;
  fake_now = 1000;
  fix_spec sp = sync_spec(2);
  sp.worker_lease_ms = 100;
  instance *in = fix_instance(&F, &sp);
  float a[4] = {1, 1, 1, 1}, b[4] = {3, 3, 3, 3};
  twaiter ta, tb;
  tw_init(&ta), tw_init(&tb);
  ck_assert_int_eq(tw_push(in, &ta, fix_push("a", 0, a)), PUSH_WAITING);
  ck_assert_int_eq(tw_push(in, &tb, fix_push("b", 0, b)), PUSH_DONE); /* both seen at 1000 */
  tw_cleanup(&ta), tw_init(&ta);
  ck_assert_int_eq(tw_push(in, &ta, fix_push("a", 1, a)), PUSH_WAITING);
  fake_now = 1050;
  instance_touch_worker(in, "b"); /* a long-poll with ?worker=b: b's lease now ends at 1150 */
  fake_now = 1101;
  uv_run(&F.loop, UV_RUN_NOWAIT);
  ck_assert_int_eq(tw_wakes(&ta), 0);
  ck_assert(!worker(in, "b").dropped);
  fake_now = 1150; /* last_seen + lease <= now: gone */
  uv_run(&F.loop, UV_RUN_NOWAIT);
  ck_assert_int_eq(tw_wakes(&ta), 1);
  ck_assert(worker(in, "b").dropped);
  ck_assert_uint_eq(ta.w.step, 2);
  tw_cleanup(&ta), tw_cleanup(&tb);
  instance_unref(in);
}
END_TEST
#endif

/* A deadline whose callback was already firing when its round closed
 * (taken off the heap, waiting for the lock) must not act on the next
 * round: timers_take_due lets the test run it late, on one thread. */
START_TEST(stale_deadline_is_ignored_by_the_next_round) {
  instance *in = fix_instance(&F, &(fix_spec){.n = 2, .mode = MODE_SYNC, .workers = 2, .round_timeout_ms = 1000});
  float a[2] = {1, 2}, b[2] = {3, 4}, a2[2] = {5, 6};
  twaiter ta, tb, ta2;
  tw_init(&ta), tw_init(&tb), tw_init(&ta2);
  ck_assert_int_eq(tw_push(in, &ta, fix_push("a", 0, a)), PUSH_WAITING);
  dtimer *due[4];
  ck_assert_uint_eq(timers_take_due(F.tm, UINT64_MAX, due, 4), 1); /* round 0's deadline, taken */
  ck_assert_int_eq(tw_push(in, &tb, fix_push("b", 0, b)), PUSH_DONE); /* closes round 0 */
  ck_assert_int_eq(tw_push(in, &ta2, fix_push("a", 1, a2)), PUSH_WAITING); /* opens round 1 */
  ck_assert_uint_eq(timers_armed(F.tm), 1); /* round 1 has its own deadline */
  due[0]->cb(due[0]); /* round 0's callback, late */
  ck_assert_int_eq(tw_wakes(&ta2), 0); /* round 1 is not its business */
  ck_assert_int_eq(ta2.w.code, 0);
  instance_close(in, E_NO_INSTANCE, NULL);
  tw_cleanup(&ta), tw_cleanup(&tb), tw_cleanup(&ta2);
  instance_unref(in);
}
END_TEST

Suite *suite_state_rounds(void) {
  Suite *s = suite_create("state_rounds");
  TCase *tc = tcase_create("combine");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, mean_in_worker_name_order);
  tcase_add_test(tc, sum_of_powers_of_two_over_two_rounds);
  tcase_add_test(tc, refusals_inside_a_round);
  tcase_add_test(tc, combined_gradient_overflow_fails_the_round);
  suite_add_tcase(s, tc);
  tc = tcase_create("deadlines");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, backup_workers_close_at_the_deadline);
  tcase_add_test(tc, deadline_with_too_few_fails_all_with_504);
  tcase_add_test(tc, deadline_without_min_workers_needs_all);
  tcase_add_test(tc, no_timeout_no_lease_arms_nothing);
  suite_add_tcase(s, tc);
  tc = tcase_create("leases");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, silent_member_is_dropped_when_its_lease_ends);
  tcase_add_test(tc, touching_an_unknown_worker_creates_none);
  suite_add_tcase(s, tc);
  tc = tcase_create("keys");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, keyed_retry_waits_with_the_round);
  tcase_add_test(tc, keyed_retry_shares_a_failure_then_starts_afresh);
  tcase_add_test(tc, fewer_workers_by_reconfigure_close_the_round);
  tcase_add_test(tc, stale_deadline_is_ignored_by_the_next_round);
  suite_add_tcase(s, tc);
  return s;
}
