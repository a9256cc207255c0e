/* test_kpool: a step split across the pool's threads is bit-identical to the
 * same step on one thread, for every algorithm, step after step. */
#include <check.h>
#include <string.h>

#include "kpool.h"
#include "mem.h"
#include "optim.h"
#include "suites.h"
#include "testutil.h"

static const char *const algs[] = {"sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"};

/* Runs `steps` steps of alg on n elements through kp and through optim_apply
 * and compares parameters, emitted parameters and every buffer bit for bit. */
static void split_matches(kpool *kp, const char *alg, size_t n, int steps, bool centered, bool amsgrad) {
  optim_alg a;
  optim_hyper h;
  derr e;
  ck_assert_int_eq(optim_alg_parse(alg, &a, &h, &e), 0);
  h.centered = centered;
  h.amsgrad = amsgrad;
  h.weight_decay = 0.01;
  unsigned need = optim_buffers(a, &h);
  float *p[2], *g[2], *buf[2][OPTIM_NBUF] = {{0}};
  for (int k = 0; k < 2; k++) {
    p[k] = mem_alloc_floats(n);
    g[k] = mem_alloc_floats(n);
    for (int b = 0; b < OPTIM_NBUF; b++)
      if (need & (1u << b)) buf[k][b] = mem_alloc_floats(n);
    for (size_t i = 0; i < n; i++) p[k][i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
  }
  for (int t = 1; t <= steps; t++) {
    for (int k = 0; k < 2; k++)
      for (size_t i = 0; i < n; i++) g[k][i] = (float)((i * 40503u + (size_t)t * 7919u) % 997) / 997.0f - 0.5f;
    optim_plan pl;
    optim_plan_init(&pl, a, &h, h.lr, (uint64_t)t, t == 1 ? need : 0, 1.0f);
    kpool_apply(kp, &pl, p[0], g[0], buf[0], n, true);
    optim_apply(&pl, p[1], g[1], buf[1], n, true);
    CHECK(memcmp(p[0], p[1], n * sizeof(float)) == 0, "%s step %d: parameters differ", alg, t);
    CHECK(memcmp(g[0], g[1], n * sizeof(float)) == 0, "%s step %d: emitted parameters differ", alg, t);
    for (int b = 0; b < OPTIM_NBUF; b++)
      if (buf[0][b]) CHECK(memcmp(buf[0][b], buf[1][b], n * sizeof(float)) == 0, "%s: buffer %d differs", alg, b);
  }
  for (int k = 0; k < 2; k++) {
    mem_free_floats(p[k], n);
    mem_free_floats(g[k], n);
    for (int b = 0; b < OPTIM_NBUF; b++) mem_free_floats(buf[k][b], n);
  }
}

START_TEST(split_is_bit_identical) {
  kpool *kp = kpool_new(_i == 0 ? 0 : 3); /* one per CPU (pinned), and three unpinned */
  size_t n = KPOOL_MIN + 12345;           /* chunks and a ragged tail */
  for (size_t k = 0; k < sizeof algs / sizeof algs[0]; k++) split_matches(kp, algs[k], n, 3, false, false);
  split_matches(kp, "rmsprop", n, 3, true, false);
  split_matches(kp, "adam", n, 3, false, true);
  split_matches(kp, "adam", KPOOL_MIN - 1, 2, false, false); /* below the threshold: one thread */
  kpool_free(kp);
}
END_TEST

START_TEST(free_accepts_null) {
  kpool_free(NULL);
  ck_assert_int_eq(kpool_threads(NULL), 1);
  kpool *kp = kpool_new(1);
  ck_assert_int_eq(kpool_threads(kp), 1);
  kpool_free(kp);
}
END_TEST

Suite *suite_kpool(void) {
  Suite *s = suite_create("kpool");
  TCase *tc = tcase_create("kpool");
  tcase_set_timeout(tc, 60);
  tcase_add_loop_test(tc, split_is_bit_identical, 0, 2);
  tcase_add_test(tc, free_accepts_null);
  suite_add_tcase(s, tc);
  return s;
}
