/* rows_test: sparse tensors through libdescent (descent_push_rows,
 * descent_pull_rows) against real daemons: sgd on a mixed instance (a
 * dense bias and a sparse [V, D] table) checked step by step against a
 * float32 replay of torch's rule (entries added in the order sent, repeats
 * included), the same run sharded over three daemons bit for bit (rows
 * split by the split rule, explicit rows init split too), the fan-out only
 * to the shards a push touches, pulls of never-touched rows, and the
 * refusals (row >= V, an unknown tensor, wrong sizes) changing nothing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_test.h"
#include "daemon.h"

#define V 12
#define D 3

static test_daemon dms[4];

static void up(void) {
  for (int i = 0; i < 4; i++) test_daemon_start(&dms[i], NULL);
}

static void down(void) {
  for (int i = 0; i < 4; i++) {
    int rc = test_daemon_stop(&dms[i]);
    test_daemon_cleanup(&dms[i]);
    ck_assert_msg(rc == 0, "descentd %d exited with %d", i, rc);
  }
}

static descent *open_url(const char *u) {
  descent_error err = {0};
  descent *d = descent_open(u, NULL, &err);
  ck_assert_msg(d != NULL, "descent_open(%s): %s", u, err.message);
  return d;
}

static descent *open_sharded(void) {
  char u[256];
  snprintf(u, sizeof u, "%s,%s,%s", dms[1].url, dms[2].url, dms[3].url);
  return open_url(u);
}

static const char *SPEC =
    "{\"name\":\"r\",\"algorithm\":\"sgd\",\"hyper\":{\"lr\":0.25},\"tensors\":["
    "{\"name\":\"b\",\"shape\":[2],\"values\":[0.5,-0.5]},"
    "{\"name\":\"E\",\"shape\":[12,3],\"sparse\":true,\"init\":{\"rows\":[2,7,11],"
    "\"values\":[[1,2,3],[-1,-2,-3],[0.5,0.25,0.125]]}}]}";

/* the replay: torch's sgd on a sparse gradient, float32 */
static float rb[2], rE[V][D];

static void replay_init(void) {
  rb[0] = 0.5f, rb[1] = -0.5f;
  memset(rE, 0, sizeof rE);
  const float init[3][3] = {{1, 2, 3}, {-1, -2, -3}, {0.5f, 0.25f, 0.125f}};
  const int ids[3] = {2, 7, 11};
  for (int i = 0; i < 3; i++) memcpy(rE[ids[i]], init[i], sizeof init[i]);
}

static void replay_step(const float *gb, const uint64_t *rows, const float *vals, size_t k) {
  const float lr = 0.25f;
  for (int i = 0; i < 2; i++) rb[i] = rb[i] - lr * gb[i];
  for (size_t e = 0; e < k; e++)
    for (int c = 0; c < D; c++) rE[rows[e]][c] = rE[rows[e]][c] - lr * vals[e * D + c];
}

/* step s's gradient: k entries with a repeat, unsorted */
static size_t grad_of(int s, uint64_t *rows, float *vals, float *gb) {
  size_t k = 2 + (size_t)(s % 4);
  uint32_t x = 12345u + (uint32_t)s * 7919u;
  for (size_t e = 0; e < k; e++) {
    x = x * 1103515245u + 12345u;
    rows[e] = (x >> 8) % V;
    for (int c = 0; c < D; c++) vals[e * D + c] = (float)((int)((x >> (4 + c)) % 17) - 8) / 7.0f;
  }
  if (s == 2) rows[1] = rows[0];
  gb[0] = 0.1f * (float)(s + 1);
  gb[1] = -0.05f * (float)s;
  return k;
}

static void run(descent *d, int steps) {
  descent_error err = {0};
  OK(descent_create(d, SPEC, NULL, &err), &err);
  replay_init();
  for (int s = 0; s < steps; s++) {
    uint64_t rows[8], st = 0;
    float vals[8 * D], gb[2], out[8 * D], pb[2];
    size_t k = grad_of(s, rows, vals, gb);
    descent_rows r = {"E", k, rows, vals, out};
    OK(descent_push_rows(d, "r", gb, 2, &r, 1, NULL, pb, &st, &err), &err);
    replay_step(gb, rows, vals, k);
    ck_assert_uint_eq(st, (uint64_t)s + 1);
    ck_assert_msg(!memcmp(pb, rb, sizeof rb), "step %d: bias %g %g, replay %g %g", s, pb[0], pb[1], rb[0], rb[1]);
    for (size_t e = 0; e < k; e++)
      ck_assert_msg(!memcmp(out + e * D, rE[rows[e]], sizeof rE[0]), "step %d entry %zu (row %llu) differs", s, e,
                    (unsigned long long)rows[e]);
  }
  uint64_t all[V], st = 0;
  float got[V * D];
  for (uint64_t i = 0; i < V; i++) all[i] = V - 1 - i;
  OK(descent_pull_rows(d, "r", "E", all, V, got, &st, &err), &err);
  for (int i = 0; i < V; i++) ck_assert_msg(!memcmp(got + i * D, rE[V - 1 - i], sizeof rE[0]), "row %d", V - 1 - i);
  OK(descent_delete(d, "r", &err), &err);
}

START_TEST(sgd_rows_match_a_replay_one_daemon_and_sharded) {
  descent *one = open_url(dms[0].url), *sh = open_sharded();
  run(one, 6);
  run(sh, 6);
  descent_close(one);
  descent_close(sh);
}
END_TEST

static uint64_t shard_step(int i, const char *name) {
  descent *d = open_url(dms[i].url);
  descent_info info = {0};
  descent_error err = {0};
  OK(descent_info_get(d, name, &info, &err), &err);
  uint64_t s = info.step;
  descent_info_free(&info);
  descent_close(d);
  return s;
}

START_TEST(sharded_push_reaches_only_touched_shards) {
  descent *sh = open_sharded();
  descent_error err = {0};
  OK(descent_create(sh,
                    "{\"name\":\"f\",\"algorithm\":\"sgd\",\"hyper\":{\"lr\":1},\"tensors\":[{\"name\":\"E\","
                    "\"shape\":[12,2],\"sparse\":true,\"init\":{\"constant\":1}}]}",
                    NULL, &err),
     &err);
  uint64_t rows[2] = {9, 8}, st = 0;
  float vals[4] = {1, 2, 3, 4}, out[4];
  descent_rows r = {"E", 2, rows, vals, out};
  OK(descent_push_rows(sh, "f", NULL, 0, &r, 1, NULL, NULL, &st, &err), &err);
  ck_assert_uint_eq(st, 1);
  ck_assert(out[0] == 0 && out[1] == -1 && out[2] == -2 && out[3] == -3);
  ck_assert_uint_eq(shard_step(1, "f"), 0);
  ck_assert_uint_eq(shard_step(2, "f"), 0);
  ck_assert_uint_eq(shard_step(3, "f"), 1);
  /* the shard holds rows [8, 12) as local rows [0, 4) */
  descent *d3 = open_url(dms[3].url);
  uint64_t local[2] = {1, 0};
  float got[4];
  OK(descent_pull_rows(d3, "f", "E", local, 2, got, &st, &err), &err);
  ck_assert(got[0] == 0 && got[1] == -1 && got[2] == -2 && got[3] == -3);
  descent_close(d3);
  OK(descent_delete(sh, "f", &err), &err);
  descent_close(sh);
}
END_TEST

START_TEST(refusals_change_nothing) {
  descent *one = open_url(dms[0].url), *sh = open_sharded();
  descent *hs[2] = {one, sh};
  for (int h = 0; h < 2; h++) {
    descent *d = hs[h];
    descent_error err = {0};
    OK(descent_create(d, SPEC, NULL, &err), &err);
    uint64_t all[V], st = 7;
    for (uint64_t i = 0; i < V; i++) all[i] = i;
    float before[V * D], after[V * D], gb[2] = {1, 1}, vals[3] = {1, 1, 1};
    OK(descent_pull_rows(d, "r", "E", all, V, before, &st, &err), &err);
    ck_assert_uint_eq(st, 0);
    uint64_t bad = V;
    descent_rows r = {"E", 1, &bad, vals, NULL};
    ck_assert_int_eq(descent_push_rows(d, "r", gb, 2, &r, 1, NULL, NULL, NULL, &err), DESCENT_EINVAL);
    ck_assert_str_eq(err.code, "invalid_value");
    descent_rows u = {"X", 1, all, vals, NULL};
    ck_assert_int_eq(descent_push_rows(d, "r", gb, 2, &u, 1, NULL, NULL, NULL, &err), DESCENT_EINVAL);
    ck_assert_str_eq(err.code, "unknown_tensor");
    descent_rows ok = {"E", 1, all, vals, NULL};
    ck_assert_int_eq(descent_push_rows(d, "r", gb, 1, &ok, 1, NULL, NULL, NULL, &err), DESCENT_EINVAL);
    ck_assert_str_eq(err.code, "bad_length");
    descent_rows twice[2] = {ok, ok};
    ck_assert_int_eq(descent_push_rows(d, "r", gb, 2, twice, 2, NULL, NULL, NULL, &err), DESCENT_EINVAL);
    ck_assert_int_eq(descent_pull_rows(d, "r", "E", &bad, 1, after, NULL, &err), DESCENT_EINVAL);
    ck_assert_int_eq(descent_pull_rows(d, "r", "b", all, 1, after, NULL, &err), DESCENT_EINVAL);
    ck_assert_str_eq(err.code, "unknown_tensor");
    OK(descent_pull_rows(d, "r", "E", all, V, after, &st, &err), &err);
    ck_assert_uint_eq(st, 0);
    ck_assert(!memcmp(before, after, sizeof before));
    OK(descent_delete(d, "r", &err), &err);
  }
  descent_close(one);
  descent_close(sh);
}
END_TEST

Suite *suite_rows(void) {
  Suite *s = suite_create("rows");
  TCase *tc = tcase_create("rows");
  tcase_add_unchecked_fixture(tc, up, down);
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, sgd_rows_match_a_replay_one_daemon_and_sharded);
  tcase_add_test(tc, sharded_push_reaches_only_touched_shards);
  tcase_add_test(tc, refusals_change_nothing);
  suite_add_tcase(s, tc);
  return s;
}
