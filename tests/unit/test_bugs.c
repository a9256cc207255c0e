/* test_bugs: tests that fail today because of a real bug, kept apart so the
 * default run stays green.  The suite is empty unless DESCENT_UNIT_BUGS=1
 * (`DESCENT_UNIT_BUGS=1 ../build/tests/unit bugs` from tests/).  When a bug
 * is fixed, move its test into its module's suite and delete it here.
 *
 * 1. spec_parse_create frees the caller's configuration on one refusal
 *    path ("name: required") without having initialised it.  spec.h says a
 *    refused create leaves "cfg holding nothing to free", and h_create
 *    (server/http/handlers_optimizers.c) passes an uninitialised stack
 *    `instance_cfg cfg;`: `POST /v1/optimizers` with a JSON object that has
 *    no "name", e.g. {"algorithm": "sgd", "tensors": [{"name": "w",
 *    "shape": [2]}]}, makes instance_cfg_free() free a stack garbage
 *    pointer.  Seen: descentd exits with SIGSEGV (status 139) on the first
 *    such request.  Fix: memset(cfg, 0, sizeof *cfg) at the top of
 *    spec_parse_create (or initialise cfg in h_create).
 *
 * 2. A round deadline that fires while the round is closing acts on the
 *    next round.  round_deadline_cb is popped by the timers (loop thread) and
 *    then waits for the instance lock; if the round closes in that window
 *    (the last member's push), round_reset's timers_cancel returns false and
 *    round.deadline_armed stays true.  The next round's first push then arms
 *    no deadline of its own, and when the stale callback gets the lock it
 *    finds that new round open and fails it (504 "the round for step k+1
 *    closed with 1 of N workers") or closes it with min_workers, long
 *    before its round_timeout_ms.  The lease timer has the same pattern
 *    (lease_armed stays true), with milder effects.  Seen here in about 1
 *    of 100 tries with a 1M-float instance and the last push made in the
 *    millisecond the deadline falls due.  A fix: remember which round a
 *    deadline was armed for (e.g. the step) and ignore a callback for
 *    another; do not leave deadline_armed set after a failed cancel.
 *    The test is a stress test: it can only pass by luck while the bug
 *    exists (it stops at the first hit, usually within 200 of its 1500 tries,
 *    about 20 s when none hits), and never fails without it (a round's own
 *    deadline cannot fire before its round_timeout_ms).
 */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec_json.h"
#include "instance.h"
#include "mem.h"
#include "spec.h"
#include "statefix.h"
#include "suites.h"
#include "timers.h"

START_TEST(create_without_name_leaves_an_uninitialised_cfg_alone) {
  static const char body[] = "{\"algorithm\": \"sgd\", \"tensors\": [{\"name\": \"w\", \"shape\": [2]}]}";
  jdoc d;
  derr e = {0};
  ck_assert_int_eq(jdoc_parse(&d, NULL, body, strlen(body), &e), 0);
  instance_cfg cfg;
  memset(&cfg, 0x5a, sizeof cfg); /* what an uninitialised stack variable may hold */
  float *params;
  int rc = spec_parse_create(&d, UINT64_MAX, &cfg, &params, &e); /* bug 1: crashes here */
  ck_assert_int_eq(rc, -E_BAD_REQUEST);
  ck_assert_str_eq(e.msg, "name: required");
  ck_assert_ptr_null(params);
  jdoc_free(&d);
}
END_TEST

/* ---- 2: a stale round deadline -------------------------------------------------- */

static fix F;
static atomic_int loop_stop;

static void *loop_main(void *arg) { /* the loop thread, as the daemon's */
  (void)arg;
  while (!atomic_load(&loop_stop)) uv_run(&F.loop, UV_RUN_ONCE);
  return NULL;
}

static void wake_loop(dtimer *d) { (void)d; }

START_TEST(a_closing_rounds_deadline_never_fails_the_next_round) {
  fix_init(&F);
  atomic_store(&loop_stop, 0);
  pthread_t loop;
  ck_assert_int_eq(pthread_create(&loop, NULL, loop_main, NULL), 0);
  const size_t n = (size_t)1 << 20; /* a close that takes a millisecond or two */
  const uint64_t timeout = 10;
  float *ga = mem_alloc_floats(n), *gb = mem_alloc_floats(n), *ga2 = mem_alloc_floats(n);
  int early = 0, tries = 0;
  char what[400] = "";
  for (int it = 0; it < 1500 && !early; it++) {
    instance *in = fix_instance(&F, &(fix_spec){.n = n, .mode = MODE_SYNC, .workers = 2, .round_timeout_ms = timeout});
    twaiter a, b, a2;
    tw_init(&a), tw_init(&b), tw_init(&a2);
    bool a2_pushed = false;
    uint64_t t0 = timers_now_ms();
    ck_assert_int_eq(tw_push(in, &a, fix_push("a", 0, ga)), PUSH_WAITING);
    uint64_t due = t0 + timeout - (uint64_t)(it % 3);
    while (timers_now_ms() < due) continue; /* b comes just as the deadline falls due */
    if (tw_push(in, &b, fix_push("b", 0, gb)) == PUSH_DONE) { /* b closed round 0 */
      tries++;
      uint64_t t1 = timers_now_ms();
      if (tw_push(in, &a2, fix_push("a", 1, ga2)) == PUSH_WAITING) { /* round 1 opens */
        a2_pushed = true;
        struct timespec ts = {0, 5000000}; /* half the round's timeout */
        nanosleep(&ts, NULL);
        int woken = tw_wakes(&a2); /* first: a wake seen before dt was read came before t1 + dt */
        uint64_t dt = timers_now_ms() - t1;
        if (woken && dt < timeout) {
          early = 1;
          snprintf(what, sizeof what, "try %d: round 1 (round_timeout_ms %llu) failed after %llu ms: %d %s", it,
                   (unsigned long long)timeout, (unsigned long long)dt, a2.w.code, a2.w.err.msg);
        }
      }
    }
    instance_close(in, E_NO_INSTANCE, NULL);
    if (a2_pushed) tw_wait(&a2, 1); /* its wake may come from the loop thread */
    tw_cleanup(&a), tw_cleanup(&b), tw_cleanup(&a2);
    instance_unref(in);
  }
  atomic_store(&loop_stop, 1);
  dtimer d;
  dtimer_init(&d, wake_loop, NULL);
  timers_arm(F.tm, &d, 0);
  pthread_join(loop, NULL);
  mem_free_floats(ga, n), mem_free_floats(gb, n), mem_free_floats(ga2, n);
  fix_cleanup(&F);
  ck_assert_msg(!early, "bug 2 (%d rounds closed at their deadline): %s", tries, what);
}
END_TEST


Suite *suite_bugs(void) {
  Suite *s = suite_create("bugs");
  const char *on = getenv("DESCENT_UNIT_BUGS");
  if (!on || strcmp(on, "1") != 0) return s; /* empty: 0 checks */
  TCase *tc = tcase_create("open");
  tcase_add_test(tc, create_without_name_leaves_an_uninitialised_cfg_alone);
  tcase_add_test(tc, a_closing_rounds_deadline_never_fails_the_next_round);
  tcase_set_timeout(tc, 300);
  suite_add_tcase(s, tc);
  return s;
}
