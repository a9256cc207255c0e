/* test_timers: the deadline heap without HTTP: callbacks run in deadline
 * order on the loop thread, a cancelled timer never runs, arm and cancel
 * say what they did, and another thread may arm. */
#include <check.h>
#include <pthread.h>
#include <stdint.h>
#include <uv.h>

#include "suites.h"
#include "timers.h"

typedef struct fired {
  timers *tm;
  int order[16];
  int n, last; /* callbacks so far; how many close the run */
} fired;

typedef struct tagged {
  dtimer t;
  int id;
  fired *f;
} tagged;

static void on_fire(dtimer *d) {
  tagged *x = d->arg;
  fired *f = x->f;
  ck_assert_int_lt(f->n, 16);
  f->order[f->n++] = x->id;
  ck_assert_uint_eq(d->slot, SIZE_MAX); /* popped before its callback runs */
  if (f->n == f->last) timers_close(f->tm); /* the loop ends once the handles are closed */
}

static void run(uv_loop_t *loop, timers *tm) {
  ck_assert_int_eq(uv_run(loop, UV_RUN_DEFAULT), 0);
  timers_free(tm);
  ck_assert_int_eq(uv_loop_close(loop), 0);
}

START_TEST(expired_timers_fire_in_deadline_order) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  fired f = {.tm = timers_new(&loop), .last = 5};
  uint64_t now = timers_now_ms();
  static const int back[] = {50, 10, 30, 40, 20}; /* ms in the past */
  tagged x[5];
  for (int i = 0; i < 5; i++) {
    x[i] = (tagged){.id = back[i], .f = &f};
    dtimer_init(&x[i].t, on_fire, &x[i]);
    ck_assert(timers_arm(f.tm, &x[i].t, now - (uint64_t)back[i]));
  }
  ck_assert_uint_eq(timers_armed(f.tm), 5);
  run(&loop, f.tm);
  ck_assert_int_eq(f.n, 5);
  static const int want[] = {50, 40, 30, 20, 10}; /* earliest deadline first */
  for (int i = 0; i < 5; i++) ck_assert_int_eq(f.order[i], want[i]);
}
END_TEST

START_TEST(future_timers_fire_in_order_and_cancelled_ones_never) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  fired f = {.tm = timers_new(&loop), .last = 3};
  uint64_t now = timers_now_ms();
  static const int ahead[] = {30, 5, 20, 10, 15}; /* ms ahead; 10 and 15 are cancelled */
  tagged x[5];
  for (int i = 0; i < 5; i++) {
    x[i] = (tagged){.id = ahead[i], .f = &f};
    dtimer_init(&x[i].t, on_fire, &x[i]);
    ck_assert(timers_arm(f.tm, &x[i].t, now + (uint64_t)ahead[i]));
  }
  ck_assert(!timers_arm(f.tm, &x[0].t, now + 1)); /* already armed: nothing done */
  ck_assert(timers_cancel(f.tm, &x[3].t));
  ck_assert(!timers_cancel(f.tm, &x[3].t)); /* not armed any more */
  ck_assert(timers_cancel(f.tm, &x[4].t));
  ck_assert_uint_eq(timers_armed(f.tm), 3);
  run(&loop, f.tm);
  ck_assert_int_eq(f.n, 3);
  ck_assert_int_eq(f.order[0], 5);
  ck_assert_int_eq(f.order[1], 20);
  ck_assert_int_eq(f.order[2], 30);
}
END_TEST

START_TEST(cancel_after_firing_says_false) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  fired f = {.tm = timers_new(&loop), .last = 2};
  tagged a = {.id = 1, .f = &f}, b = {.id = 2, .f = &f};
  dtimer_init(&a.t, on_fire, &a);
  dtimer_init(&b.t, on_fire, &b);
  uint64_t now = timers_now_ms();
  ck_assert(timers_arm(f.tm, &a.t, now));
  ck_assert(timers_arm(f.tm, &b.t, now + 600000)); /* far ahead: cancelled below */
  while (f.n < 1) uv_run(&loop, UV_RUN_ONCE);
  ck_assert_int_eq(f.order[0], 1);
  ck_assert(!timers_cancel(f.tm, &a.t)); /* it fired: false */
  ck_assert(timers_arm(f.tm, &a.t, now)); /* a fired timer may be armed again */
  ck_assert(timers_cancel(f.tm, &b.t));
  run(&loop, f.tm);
  ck_assert_int_eq(f.n, 2);
  ck_assert_int_eq(f.order[1], 1); /* a, twice; b never */
}
END_TEST

typedef struct armer {
  timers *tm;
  tagged *x;
  uint64_t deadline;
} armer;

static void *arm_from_thread(void *arg) {
  armer *a = arg;
  ck_assert(timers_arm(a->tm, &a->x->t, a->deadline));
  return NULL;
}

START_TEST(another_thread_may_arm) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  fired f = {.tm = timers_new(&loop), .last = 1};
  tagged x = {.id = 7, .f = &f};
  dtimer_init(&x.t, on_fire, &x);
  armer a = {f.tm, &x, timers_now_ms() + 5};
  pthread_t th;
  ck_assert_int_eq(pthread_create(&th, NULL, arm_from_thread, &a), 0);
  ck_assert_int_eq(pthread_join(th, NULL), 0);
  run(&loop, f.tm); /* the loop learns of it through the async handle */
  ck_assert_int_eq(f.n, 1);
  ck_assert_int_eq(f.order[0], 7);
}
END_TEST

Suite *suite_timers(void) {
  Suite *s = suite_create("timers");
  TCase *tc = tcase_create("timers");
  tcase_add_test(tc, expired_timers_fire_in_deadline_order);
  tcase_add_test(tc, future_timers_fire_in_order_and_cancelled_ones_never);
  tcase_add_test(tc, cancel_after_firing_says_false);
  tcase_add_test(tc, another_thread_may_arm);
  suite_add_tcase(s, tc);
  return s;
}
