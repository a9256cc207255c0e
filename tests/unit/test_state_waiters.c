/* test_state_waiters: long-poll waiters through instance_wait_step and
 * instance_unwait without HTTP: ready at once when step >= want, woken
 * exactly when the step reaches want (by async pushes, a closed sync round,
 * a random-search tell), unwait as a timeout does it (also from a real
 * timers deadline), close and shutdown completing waiters with the right
 * codes and messages, and a wake that crosses threads.  Public API only. */
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "instance.h"
#include "statefix.h"
#include "suites.h"
#include "timers.h"

static fix F;
static void setup(void) { fix_init(&F); }
static void teardown(void) { fix_cleanup(&F); }

static size_t waiting(instance *in) {
  instance_info info;
  instance_info_get(in, &info);
  return info.waiting;
}

/* An async push of 1.0 to every one of n parameters. */
static void push_ones(instance *in, size_t n) {
  float g[8] = {1, 1, 1, 1, 1, 1, 1, 1};
  ck_assert_uint_le(n, 8);
  twaiter t;
  tw_init(&t);
  ck_assert_int_eq(tw_push(in, &t, fix_push(NULL, -1, g)), PUSH_DONE);
  tw_cleanup(&t);
}

START_TEST(ready_at_once_when_step_reached) {
  instance *in = fix_instance(&F, &(fix_spec){.n = 2, .step = 5});
  twaiter t;
  tw_init(&t);
  for (uint64_t want = 0; want <= 5; want++) {
    t.w.code = -1;
    ck_assert_int_eq(instance_wait_step(in, &t.w, want, tw_suspend, &t), 1);
    ck_assert_int_eq(t.w.code, 0);
    ck_assert_uint_eq(t.w.step, 5);
  }
  ck_assert_int_eq(t.suspends, 0);
  ck_assert_int_eq(t.wakes, 0);
  ck_assert_uint_eq(waiting(in), 0);
  tw_cleanup(&t);
  instance_unref(in);
}
END_TEST

START_TEST(woken_exactly_when_step_reaches_want) {
  instance *in = fix_instance(&F, &(fix_spec){.n = 2});
  twaiter w1, w2, w3;
  tw_init(&w1), tw_init(&w2), tw_init(&w3);
  ck_assert_int_eq(instance_wait_step(in, &w2.w, 2, tw_suspend, &w2), 0);
  ck_assert_int_eq(instance_wait_step(in, &w1.w, 1, tw_suspend, &w1), 0);
  ck_assert_int_eq(instance_wait_step(in, &w3.w, 3, tw_suspend, &w3), 0);
  ck_assert_int_eq(w1.suspends + w2.suspends + w3.suspends, 3);
  ck_assert_uint_eq(waiting(in), 3);
  push_ones(in, 2);
  ck_assert_int_eq(tw_wakes(&w1), 1);
  ck_assert_int_eq(w1.w.code, 0);
  ck_assert_uint_eq(w1.w.step, 1);
  ck_assert_int_eq(tw_wakes(&w2) + tw_wakes(&w3), 0);
  ck_assert_uint_eq(waiting(in), 2);
  push_ones(in, 2);
  ck_assert_int_eq(tw_wakes(&w2), 1);
  ck_assert_uint_eq(w2.w.step, 2);
  ck_assert_int_eq(tw_wakes(&w3), 0);
  /* w3 times out: unwait takes it off, and the caller completes it itself */
  ck_assert_int_eq(instance_unwait(in, &w3.w), 1);
  ck_assert_int_eq(w3.w.code, 0);
  ck_assert_uint_eq(w3.w.step, 2);
  ck_assert_int_eq(instance_unwait(in, &w3.w), 0);
  ck_assert_int_eq(instance_unwait(in, &w1.w), 0); /* already completed */
  ck_assert_uint_eq(waiting(in), 0);
  push_ones(in, 2);
  ck_assert_int_eq(tw_wakes(&w3), 0);
  ck_assert_int_eq(tw_wakes(&w1), 1);
  ck_assert_int_eq(tw_wakes(&w2), 1);
  tw_cleanup(&w1), tw_cleanup(&w2), tw_cleanup(&w3);
  instance_unref(in);
}
END_TEST

/* A long-poll deadline as the HTTP layer keeps one: a real timers entry
 * whose callback (loop thread) unwaits the waiter. */
typedef struct poll_timeout {
  dtimer t;
  instance *in;
  twaiter *tw;
  int fired, took_it;
} poll_timeout;

static void on_poll_timeout(dtimer *d) {
  poll_timeout *pt = d->arg;
  pt->fired++;
  pt->took_it += instance_unwait(pt->in, &pt->tw->w);
}

static bool fired(void *arg) { return ((poll_timeout *)arg)->fired > 0; }

START_TEST(timeout_from_a_timers_deadline) {
  instance *in = fix_instance(&F, &(fix_spec){.n = 2, .step = 7});
  twaiter t;
  tw_init(&t);
  ck_assert_int_eq(instance_wait_step(in, &t.w, 9, tw_suspend, &t), 0);
  poll_timeout pt = {.in = in, .tw = &t};
  dtimer_init(&pt.t, on_poll_timeout, &pt);
  ck_assert(timers_arm(F.tm, &pt.t, timers_now_ms() + 5));
  ck_assert(!timers_arm(F.tm, &pt.t, timers_now_ms() + 5)); /* already armed */
  ck_assert_uint_eq(timers_armed(F.tm), 1);
  ck_assert(fix_drive(&F, fired, &pt, 2000));
  ck_assert_int_eq(pt.fired, 1);
  ck_assert_int_eq(pt.took_it, 1);
  ck_assert_int_eq(tw_wakes(&t), 0); /* the instance did not complete it */
  ck_assert_int_eq(t.w.code, 0);
  ck_assert_uint_eq(t.w.step, 7); /* the current, older step */
  ck_assert_uint_eq(timers_armed(F.tm), 0);
  ck_assert(!timers_cancel(F.tm, &pt.t));
  ck_assert_uint_eq(waiting(in), 0);
  push_ones(in, 2);
  push_ones(in, 2);
  ck_assert_int_eq(tw_wakes(&t), 0);
  tw_cleanup(&t);
  instance_unref(in);
}
END_TEST

START_TEST(late_timeout_finds_the_waiter_already_woken) {
  instance *in = fix_instance(&F, &(fix_spec){.n = 2});
  twaiter t;
  tw_init(&t);
  ck_assert_int_eq(instance_wait_step(in, &t.w, 1, tw_suspend, &t), 0);
  poll_timeout pt = {.in = in, .tw = &t};
  dtimer_init(&pt.t, on_poll_timeout, &pt);
  ck_assert(timers_arm(F.tm, &pt.t, timers_now_ms() + 1));
  push_ones(in, 2); /* woken first */
  ck_assert_int_eq(tw_wakes(&t), 1);
  ck_assert_uint_eq(t.w.step, 1);
  ck_assert(fix_drive(&F, fired, &pt, 2000)); /* the late timeout: nothing to take */
  ck_assert_int_eq(pt.took_it, 0);
  ck_assert_int_eq(tw_wakes(&t), 1);
  tw_cleanup(&t);
  instance_unref(in);
}
END_TEST

START_TEST(close_completes_waiters_with_its_code) {
  instance *in = fix_instance(&F, &(fix_spec){.n = 2, .step = 1});
  twaiter a, b;
  tw_init(&a), tw_init(&b);
  ck_assert_int_eq(instance_wait_step(in, &a.w, 2, tw_suspend, &a), 0);
  ck_assert_int_eq(instance_wait_step(in, &b.w, 50, tw_suspend, &b), 0);
  instance_close(in, E_NO_INSTANCE, NULL);
  ck_assert_int_eq(tw_wakes(&a), 1);
  ck_assert_int_eq(tw_wakes(&b), 1);
  ck_outcome_err(&a, E_NO_INSTANCE, "no optimizer instance of that name");
  ck_outcome_err(&b, E_NO_INSTANCE, "no optimizer instance of that name");
  ck_assert_uint_eq(a.w.step, 1);
  ck_assert_uint_eq(waiting(in), 0);
  /* a deleted instance answers every later wait at once, even one already met */
  for (uint64_t want = 0; want <= 2; want++) {
    twaiter c;
    tw_init(&c);
    ck_assert_int_eq(instance_wait_step(in, &c.w, want, tw_suspend, &c), 1);
    ck_assert_int_eq(c.w.code, E_NO_INSTANCE);
    ck_assert_int_eq(c.suspends, 0);
    tw_cleanup(&c);
  }
  tw_cleanup(&a), tw_cleanup(&b);
  instance_unref(in);
}
END_TEST

START_TEST(close_as_replaced_gives_conflict_and_message) {
  instance *in = fix_instance(&F, &(fix_spec){.n = 2});
  twaiter a;
  tw_init(&a);
  ck_assert_int_eq(instance_wait_step(in, &a.w, 1, tw_suspend, &a), 0);
  instance_close(in, E_CONFLICT, "the instance was replaced by an import");
  ck_assert_int_eq(tw_wakes(&a), 1);
  ck_outcome_err(&a, E_CONFLICT, "the instance was replaced by an import");
  tw_cleanup(&a);
  instance_unref(in);
}
END_TEST

START_TEST(shutdown_completes_waiters_with_503) {
  instance *in = fix_instance(&F, &(fix_spec){.n = 2, .step = 3});
  twaiter a;
  tw_init(&a);
  ck_assert_int_eq(instance_wait_step(in, &a.w, 4, tw_suspend, &a), 0);
  instance_shutdown(in);
  ck_assert_int_eq(tw_wakes(&a), 1);
  ck_outcome_err(&a, E_SHUTTING_DOWN, "the daemon is shutting down; retry after it restarts");
  ck_assert_uint_eq(a.w.step, 3);
  tw_cleanup(&a);
  /* no new waits; a wait already met is still answered normally */
  tw_init(&a);
  ck_assert_int_eq(instance_wait_step(in, &a.w, 4, tw_suspend, &a), 1);
  ck_outcome_err(&a, E_SHUTTING_DOWN, "the daemon is shutting down");
  ck_assert_int_eq(a.suspends, 0);
  a.w.code = -1;
  ck_assert_int_eq(instance_wait_step(in, &a.w, 3, tw_suspend, &a), 1);
  ck_assert_int_eq(a.w.code, 0);
  ck_assert_uint_eq(a.w.step, 3);
  tw_cleanup(&a);
  /* the instance itself is intact for its last snapshot */
  float v[2];
  ck_assert_uint_eq(fix_read(in, v), 3);
  instance_unref(in);
}
END_TEST

START_TEST(closed_sync_round_wakes_pollers) {
  instance *in = fix_instance(&F, &(fix_spec){.n = 2, .mode = MODE_SYNC, .workers = 2});
  twaiter poll, ta, tb;
  tw_init(&poll), tw_init(&ta), tw_init(&tb);
  ck_assert_int_eq(instance_wait_step(in, &poll.w, 1, tw_suspend, &poll), 0);
  float a[2] = {2, 4}, b[2] = {6, 8};
  ck_assert_int_eq(tw_push(in, &ta, fix_push("a", 0, a)), PUSH_WAITING);
  ck_assert_uint_eq(waiting(in), 2); /* a round member and a poller */
  ck_assert_int_eq(tw_wakes(&poll), 0);
  ck_assert_int_eq(tw_push(in, &tb, fix_push("b", 0, b)), PUSH_DONE);
  ck_assert_int_eq(tw_wakes(&poll), 1);
  ck_assert_int_eq(poll.w.code, 0);
  ck_assert_uint_eq(poll.w.step, 1);
  ck_assert_uint_eq(waiting(in), 0);
  tw_cleanup(&poll), tw_cleanup(&ta), tw_cleanup(&tb);
  instance_unref(in);
}
END_TEST

START_TEST(random_search_tell_wakes_pollers) {
  instance *in = fix_instance(&F, &(fix_spec){.alg = "random_search", .n = 2});
  twaiter poll;
  tw_init(&poll);
  ck_assert_int_eq(instance_wait_step(in, &poll.w, 1, tw_suspend, &poll), 0);
  uint64_t id, step;
  float x[2];
  derr e = {0};
  ck_assert_int_eq(instance_ask(in, &id, x, &e), 0);
  ck_assert_int_eq(tw_wakes(&poll), 0); /* an ask is no step */
  bool improved;
  double best;
  ck_assert_int_eq(instance_tell(in, id, 2.5, &improved, &best, &step, &e), 0);
  ck_assert(improved);
  ck_assert(best == 2.5);
  ck_assert_uint_eq(step, 1);
  ck_assert_int_eq(tw_wakes(&poll), 1);
  ck_assert_uint_eq(poll.w.step, 1);
  float p[2];
  ck_assert_uint_eq(fix_read(in, p), 1);
  ck_floats_bits(p, x, 2, "params after an improving tell"); /* the candidate became the params */
  tw_cleanup(&poll);
  instance_unref(in);
}
END_TEST

/* ---- across threads ------------------------------------------------------------ */

typedef struct poller_thread {
  instance *in;
  twaiter t;
  int ready;
  uint64_t seen_step;
  int seen_code;
} poller_thread;

static void *poller_main(void *arg) {
  poller_thread *pt = arg;
  pt->ready = instance_wait_step(pt->in, &pt->t.w, 2, tw_suspend, &pt->t);
  if (!pt->ready) tw_wait(&pt->t, 1); /* as a suspended request sleeps */
  pt->seen_step = pt->t.w.step;
  pt->seen_code = pt->t.w.code;
  return NULL;
}

START_TEST(wake_reaches_a_waiter_on_another_thread) {
  instance *in = fix_instance(&F, &(fix_spec){.n = 2});
  poller_thread pt = {.in = in};
  tw_init(&pt.t);
  pthread_t th;
  ck_assert_int_eq(pthread_create(&th, NULL, poller_main, &pt), 0);
  pthread_mutex_lock(&pt.t.lock); /* until it is linked and suspended */
  while (pt.t.suspends < 1) pthread_cond_wait(&pt.t.cond, &pt.t.lock);
  pthread_mutex_unlock(&pt.t.lock);
  ck_assert_uint_eq(waiting(in), 1);
  push_ones(in, 2);
  ck_assert_uint_eq(waiting(in), 1);
  push_ones(in, 2);
  ck_assert_int_eq(pthread_join(th, NULL), 0);
  ck_assert_int_eq(pt.ready, 0);
  ck_assert_int_eq(pt.seen_code, 0);
  ck_assert_uint_eq(pt.seen_step, 2);
  ck_assert_int_eq(pt.t.wakes, 1);
  tw_cleanup(&pt.t);
  instance_unref(in);
}
END_TEST

Suite *suite_state_waiters(void) {
  Suite *s = suite_create("state_waiters");
  TCase *tc = tcase_create("longpoll");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, ready_at_once_when_step_reached);
  tcase_add_test(tc, woken_exactly_when_step_reaches_want);
  tcase_add_test(tc, timeout_from_a_timers_deadline);
  tcase_add_test(tc, late_timeout_finds_the_waiter_already_woken);
  tcase_add_test(tc, closed_sync_round_wakes_pollers);
  tcase_add_test(tc, random_search_tell_wakes_pollers);
  tcase_add_test(tc, wake_reaches_a_waiter_on_another_thread);
  suite_add_tcase(s, tc);
  tc = tcase_create("close");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, close_completes_waiters_with_its_code);
  tcase_add_test(tc, close_as_replaced_gives_conflict_and_message);
  tcase_add_test(tc, shutdown_completes_waiters_with_503);
  suite_add_tcase(s, tc);
  return s;
}
