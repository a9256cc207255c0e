/* sharding_test: one logical instance spread over several real daemons by
 * libdescent (proto/sharding.md), checked against the same run on one
 * daemon: bit-identical parameters and optimizer buffers for a 10^6-float
 * Adam trained by 4 sync workers, global-norm clipping, seeded and inline
 * inits, concurrent async workers; the refusals (what cannot be sharded
 * exactly, a wrong daemon order, a half-failed create); and a shard
 * restarted from an older snapshot reported as a step mismatch, then
 * brought back in line by importing a checkpoint.
 * Daemons are started from the test's main thread (daemon.h).
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_test.h"
#include "daemon.h"

/* ---- fixture: daemons ------------------------------------------------------------ */

#define MAXD 4
static test_daemon dms[MAXD];
static int ndms;

static void start_daemons(int n, const char *const *extra) {
  ndms = n;
  for (int i = 0; i < n; i++) test_daemon_start(&dms[i], extra);
}

/* "url0,url1,..." of daemons [from, from + n) */
static void urls(char *out, size_t cap, int from, int n) {
  size_t o = 0;
  out[0] = 0;
  for (int i = from; i < from + n; i++) o += (size_t)snprintf(out + o, cap - o, "%s%s", i > from ? "," : "", dms[i].url);
}

static void stop_daemons(void) {
  for (int i = 0; i < ndms; i++) {
    int rc = test_daemon_stop(&dms[i]);
    test_daemon_cleanup(&dms[i]);
    ck_assert_msg(rc == 0, "descentd %d exited with %d after SIGTERM", i, rc);
  }
  ndms = 0;
}

static descent *open_urls(const char *u) {
  descent_error err = {0};
  descent *d = descent_open(u, NULL, &err);
  ck_assert_msg(d != NULL, "descent_open(%s): %s: %s", u, err.code, err.message);
  return d;
}

static uint32_t mix(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

/* ---- 10^6-float Adam, 4 workers in sync mode --------------------------------------- */

struct worker {
  const char *url, *name;
  int w, steps;
  size_t n;
  float *params; /* the last parameters it received */
  uint64_t step;
  int rc;
  descent_error err;
};

/* A gradient that depends on the parameters, the worker and the step, so
 * any difference between runs would carry on and grow. */
static void sync_grad(const float *p, float *g, size_t n, int w, int t) {
  float k = 0.01f * (float)(w + 1);
  for (size_t i = 0; i < n; i++) {
    uint32_t h = mix((uint32_t)i * 2654435761u ^ (uint32_t)(t * 40503 + w * 977));
    g[i] = p[i] * k + ((float)(h & 1023) - 511.5f) * 1e-4f;
  }
}

static void *worker_run(void *arg) {
  struct worker *wk = arg;
  float *g = malloc(wk->n * sizeof *g);
  descent *d = descent_open(wk->url, NULL, &wk->err);
  if (!d || !g) {
    wk->rc = -100;
    goto out;
  }
  char name[16];
  snprintf(name, sizeof name, "w%d", wk->w);
  if ((wk->rc = descent_pull(d, wk->name, wk->params, wk->n, -1, 0, &wk->step, &wk->err)) < 0) goto out;
  for (int t = 0; t < wk->steps; t++) {
    sync_grad(wk->params, g, wk->n, wk->w, t);
    descent_push_opts o = DESCENT_PUSH_OPTS_INIT;
    o.worker = name;
    o.step = (int64_t)wk->step;
    o.loss = 1.0 / (t + 1);
    if ((wk->rc = descent_push(d, wk->name, g, wk->n, &o, wk->params, &wk->step, &wk->err)) < 0) goto out;
  }
out:
  descent_close(d);
  free(g);
  return NULL;
}

/* Trains `name` through `url` with nw worker threads; returns worker 0's
 * final parameters (new) after checking that every worker got the same. */
static float *train_sync(const char *url, const char *name, size_t n, int nw, int steps) {
  struct worker wk[8];
  pthread_t th[8];
  for (int w = 0; w < nw; w++) {
    wk[w] = (struct worker){.url = url, .name = name, .w = w, .steps = steps, .n = n};
    wk[w].params = malloc(n * sizeof(float));
    ck_assert_ptr_nonnull(wk[w].params);
    ck_assert_int_eq(pthread_create(&th[w], NULL, worker_run, &wk[w]), 0);
  }
  for (int w = 0; w < nw; w++) pthread_join(th[w], NULL);
  for (int w = 0; w < nw; w++) {
    ck_assert_msg(wk[w].rc == 0, "worker %d on %s: %s: %s", w, url, wk[w].err.code, wk[w].err.message);
    ck_assert_uint_eq(wk[w].step, (uint64_t)steps);
    if (w) ck_assert_msg(!memcmp(wk[w].params, wk[0].params, n * sizeof(float)), "workers 0 and %d differ", w);
  }
  for (int w = 1; w < nw; w++) free(wk[w].params);
  return wk[0].params;
}

/* The state document, without its "created" time (two instances created a
 * moment apart differ there and nowhere else). */
static char *export_state(descent *d, const char *name, size_t *len) {
  descent_error err = {0};
  char *s = NULL;
  OK(descent_state_export(d, name, &s, len, &err), &err);
  char *c = strstr(s, "\"created\":");
  if (c) {
    char *end = c + strcspn(c, ",}");
    if (*end == ',') end++;
    memmove(c, end, strlen(end) + 1);
    *len = strlen(s);
  }
  return s;
}

START_TEST(test_adam_sync_million_bit_identical) {
  bool q = client_test_quick();
  size_t n = q ? 100000 : 1000000;
  int steps = q ? 20 : 100, nw = 4;
  start_daemons(4, NULL); /* 0: one daemon; 1-3: the shards */
  char one[128], three[400], spec[600];
  urls(one, sizeof one, 0, 1);
  urls(three, sizeof three, 1, 3);
  snprintf(spec, sizeof spec,
           "{\"name\":\"big\",\"algorithm\":\"adam\",\"hyper\":{\"lr\":0.001,\"weight_decay\":0.01,\"amsgrad\":true},"
           "\"mode\":\"sync\",\"workers\":%d,\"tensors\":["
           "{\"name\":\"W\",\"shape\":[%zu],\"init\":{\"normal\":{\"std\":0.1,\"seed\":7}}},"
           "{\"name\":\"b\",\"shape\":[1000],\"init\":{\"uniform\":{\"low\":-0.1,\"high\":0.1,\"seed\":3}}}]}",
           nw, n - 1000);
  descent_error err = {0};
  descent *d1 = open_urls(one), *d3 = open_urls(three);
  OK(descent_create(d1, spec, NULL, &err), &err);
  OK(descent_create(d3, spec, NULL, &err), &err);
  ck_assert_uint_eq(descent_shards(d3), 3);

  float *a = train_sync(one, "big", n, nw, steps);
  float *b = train_sync(three, "big", n, nw, steps);
  ck_assert_msg(!memcmp(a, b, n * sizeof(float)), "sharded parameters differ from one daemon's");
  float *pulled = malloc(n * sizeof *pulled);
  uint64_t step;
  OK(descent_pull(d3, "big", pulled, n, -1, 0, &step, &err), &err);
  ck_assert_uint_eq(step, (uint64_t)steps);
  ck_assert_msg(!memcmp(a, pulled, n * sizeof(float)), "pulled sharded parameters differ");

  /* every optimizer buffer: the gathered export is the single daemon's, byte for byte */
  size_t la, lb;
  char *sa = export_state(d1, "big", &la), *sb = export_state(d3, "big", &lb);
  ck_assert_ptr_nonnull(strstr(sa, "\"exp_avg\":{\"W\":["));
  ck_assert_ptr_nonnull(strstr(sa, "\"exp_avg_sq\":{\"W\":["));
  ck_assert_ptr_nonnull(strstr(sa, "\"max_exp_avg_sq\":{\"W\":["));
  char want_step[32];
  snprintf(want_step, sizeof want_step, "\"step\":%d,", steps);
  ck_assert_ptr_nonnull(strstr(sa, want_step));
  ck_assert_uint_eq(la, lb);
  ck_assert_msg(!memcmp(sa, sb, la), "the sharded state differs from one daemon's");
  /* and each shard really holds only its range */
  descent *s1 = open_urls(dms[2].url);
  descent_info info;
  OK(descent_info_get(s1, "big", &info, &err), &err);
  ck_assert_uint_eq(info.size, n * 2 / 3 - n / 3);
  ck_assert_uint_eq(info.step, (uint64_t)steps);
  descent_info_free(&info);
  descent_close(s1);
  free(sa);
  free(sb);
  free(a);
  free(b);
  free(pulled);
  descent_close(d1);
  descent_close(d3);
  stop_daemons();
}
END_TEST

/* ---- global-norm clipping, async ----------------------------------------------------- */

START_TEST(test_clip_async_identical) {
  start_daemons(4, NULL);
  char one[128], three[400];
  urls(one, sizeof one, 0, 1);
  urls(three, sizeof three, 1, 3);
  const size_t n = 30001;
  const char *spec =
      "{\"name\":\"clip\",\"algorithm\":\"sgd\",\"hyper\":{\"lr\":0.1,\"momentum\":0.9},\"clip_grad_norm\":1.5,"
      "\"tensors\":[{\"name\":\"w\",\"shape\":[30001],\"init\":{\"normal\":{\"std\":1,\"seed\":5}}}]}";
  const char *noclip =
      "{\"name\":\"noclip\",\"algorithm\":\"sgd\",\"hyper\":{\"lr\":0.1,\"momentum\":0.9},"
      "\"tensors\":[{\"name\":\"w\",\"shape\":[30001],\"init\":{\"normal\":{\"std\":1,\"seed\":5}}}]}";
  descent_error err = {0};
  descent *d1 = open_urls(one), *d3 = open_urls(three);
  OK(descent_create(d1, spec, NULL, &err), &err);
  OK(descent_create(d1, noclip, NULL, &err), &err);
  OK(descent_create(d3, spec, NULL, &err), &err);
  float *g = malloc(n * sizeof *g), *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b),
        *c = malloc(n * sizeof *c);
  uint64_t sa, sb, sc;
  for (int t = 0; t < 12; t++) {
    /* norms around 100: every step is clipped, each by a different coefficient */
    for (size_t i = 0; i < n; i++) g[i] = (float)(((mix((uint32_t)(i * 31 + (size_t)t)) & 4095) / 1024.0) - 2.0);
    OK(descent_push(d1, "clip", g, n, NULL, a, &sa, &err), &err);
    OK(descent_push(d3, "clip", g, n, NULL, b, &sb, &err), &err);
    OK(descent_push(d1, "noclip", g, n, NULL, c, &sc, &err), &err);
    ck_assert_uint_eq(sa, (uint64_t)t + 1);
    ck_assert_uint_eq(sb, sa);
    ck_assert_msg(!memcmp(a, b, n * sizeof(float)), "step %d: clipped sharded parameters differ", t + 1);
    ck_assert_msg(memcmp(a, c, n * sizeof(float)), "step %d: clipping changed nothing", t + 1);
  }
  size_t la, lb;
  char *xa = export_state(d1, "clip", &la), *xb = export_state(d3, "clip", &lb);
  ck_assert_ptr_nonnull(strstr(xa, "\"momentum_buffer\":{\"w\":["));
  ck_assert_uint_eq(la, lb);
  ck_assert_msg(!memcmp(xa, xb, la), "the clipped sharded state differs from one daemon's");
  free(xa);
  free(xb);
  free(g);
  free(a);
  free(b);
  free(c);
  descent_close(d1);
  descent_close(d3);
  stop_daemons();
}
END_TEST

/* ---- bfloat16 and float16 over shards ---------------------------------------------------- */

/* A sharded half-precision push equals one daemon's, clipping included
 * (the global norm is taken of the widened values), and both equal a
 * float32 push of the widened values. */
START_TEST(test_half_sharded_identical) {
  start_daemons(4, NULL);
  char one[128], three[400];
  urls(one, sizeof one, 0, 1);
  urls(three, sizeof three, 1, 3);
  const size_t n = 30001;
  const char *spec =
      "{\"name\":\"%s\",\"algorithm\":\"adam\",\"hyper\":{\"lr\":0.01},\"clip_grad_norm\":1.5,"
      "\"tensors\":[{\"name\":\"w\",\"shape\":[30001],\"init\":{\"normal\":{\"std\":1,\"seed\":5}}}]}";
  char sh[400], sf[400];
  snprintf(sh, sizeof sh, spec, "half");
  snprintf(sf, sizeof sf, spec, "wide");
  descent_error err = {0};
  descent *d1 = open_urls(one), *d3 = open_urls(three);
  OK(descent_create(d1, sh, NULL, &err), &err);
  OK(descent_create(d1, sf, NULL, &err), &err);
  OK(descent_create(d3, sh, NULL, &err), &err);
  float *g = malloc(n * sizeof *g), *w = malloc(n * sizeof *w), *c = malloc(n * sizeof *c);
  uint16_t *h = malloc(n * 2), *a = malloc(n * 2), *b = malloc(n * 2), *cw = malloc(n * 2);
  uint64_t sa, sb, sc;
  for (int t = 0; t < 6; t++) {
    descent_dtype dt = t % 2 ? DESCENT_FLOAT16 : DESCENT_BFLOAT16;
    for (size_t i = 0; i < n; i++) g[i] = (float)(((mix((uint32_t)(i * 31 + (size_t)t)) & 4095) / 1024.0) - 2.0);
    descent_to_dtype(dt, g, h, n);
    descent_from_dtype(dt, h, w, n);
    OK(descent_push_dtype(d1, "half", h, n, dt, NULL, a, &sa, &err), &err);
    OK(descent_push_dtype(d3, "half", h, n, dt, NULL, b, &sb, &err), &err);
    OK(descent_push(d1, "wide", w, n, NULL, c, &sc, &err), &err);
    descent_to_dtype(dt, c, cw, n);
    ck_assert_uint_eq(sb, sa);
    ck_assert_uint_eq(sc, sa);
    ck_assert_msg(!memcmp(a, b, n * 2), "step %d: sharded half parameters differ", t + 1);
    ck_assert_msg(!memcmp(a, cw, n * 2), "step %d: half and float32 pushes differ", t + 1);
  }
  size_t la, lb;
  char *xa = export_state(d1, "half", &la), *xb = export_state(d3, "half", &lb);
  ck_assert_uint_eq(la, lb);
  ck_assert_msg(!memcmp(xa, xb, la), "the sharded half state differs from one daemon's");
  free(xa);
  free(xb);
  free(g);
  free(w);
  free(c);
  free(h);
  free(a);
  free(b);
  free(cw);
  descent_close(d1);
  descent_close(d3);
  stop_daemons();
}
END_TEST

/* ---- concurrent async workers: nothing lost, no false alarm ------------------------------ */

struct apusher {
  const char *url;
  int w, pushes;
  int rc;
  descent_error err;
};

static void *apush_run(void *arg) {
  struct apusher *p = arg;
  descent *d = descent_open(p->url, NULL, &p->err);
  float g[3000];
  if (!d) {
    p->rc = -100;
    return NULL;
  }
  for (int t = 0; t < p->pushes && !p->rc; t++) {
    for (int i = 0; i < 3000; i++) g[i] = (float)((i + t + p->w) % 5); /* integers: sums are exact */
    uint64_t step;
    p->rc = descent_push(d, "acc", g, 3000, NULL, NULL, &step, &p->err);
  }
  descent_close(d);
  return NULL;
}

START_TEST(test_async_workers_sharded) {
  start_daemons(3, NULL);
  char three[400];
  urls(three, sizeof three, 0, 3);
  descent_error err = {0};
  descent *d = open_urls(three);
  OK(descent_create(d, "{\"name\":\"acc\",\"algorithm\":\"sgd\",\"hyper\":{\"lr\":1},"
                       "\"tensors\":[{\"name\":\"w\",\"shape\":[3000],\"init\":\"zeros\"}]}",
                    NULL, &err),
     &err);
  int nw = 4, pushes = client_test_quick() ? 15 : 40;
  struct apusher p[4];
  pthread_t th[4];
  for (int w = 0; w < nw; w++) {
    p[w] = (struct apusher){.url = three, .w = w, .pushes = pushes};
    ck_assert_int_eq(pthread_create(&th[w], NULL, apush_run, &p[w]), 0);
  }
  for (int w = 0; w < nw; w++) pthread_join(th[w], NULL);
  for (int w = 0; w < nw; w++) ck_assert_msg(p[w].rc == 0, "worker %d: %s: %s", w, p[w].err.code, p[w].err.message);
  float x[3000];
  uint64_t step;
  OK(descent_pull(d, "acc", x, 3000, -1, 0, &step, &err), &err);
  ck_assert_uint_eq(step, (uint64_t)(nw * pushes));
  for (int i = 0; i < 3000; i++) {
    float sum = 0;
    for (int w = 0; w < nw; w++)
      for (int t = 0; t < pushes; t++) sum += (float)((i + t + w) % 5);
    CHECK(x[i] == -sum, "w[%d] = %g, expected %g", i, x[i], -sum);
  }
  descent_close(d);
  stop_daemons();
}
END_TEST

/* ---- what cannot be sharded, layouts, inits -------------------------------------------- */

static void expect(int rc, const descent_error *err, int want, const char *code) {
  ck_assert_msg(rc == want, "rc %d (%s), wanted %d; %s: %s", rc, descent_strerror(rc), want, err->code, err->message);
  ck_assert_str_eq(err->code, code);
}

START_TEST(test_create_rules_and_layout) {
  start_daemons(4, NULL);
  char one[128], three[400], rev[400];
  urls(one, sizeof one, 0, 1);
  urls(three, sizeof three, 1, 3);
  snprintf(rev, sizeof rev, "%s,%s,%s", dms[3].url, dms[2].url, dms[1].url);
  descent_error err = {0};
  descent *d1 = open_urls(one), *d3 = open_urls(three);
  const char *t1 = "\"tensors\":[{\"name\":\"w\",\"shape\":[30]}]";
  char spec[400];
  snprintf(spec, sizeof spec, "{\"name\":\"x\",\"algorithm\":\"sgd\",\"mode\":\"sync\",\"workers\":2,\"clip_grad_norm\":1,%s}", t1);
  expect(descent_create(d3, spec, NULL, &err), &err, DESCENT_ENOTSUP, "not_supported");
  ck_assert_ptr_nonnull(strstr(err.message, "clip_grad_norm"));
  snprintf(spec, sizeof spec,
           "{\"name\":\"x\",\"algorithm\":\"sgd\",\"mode\":\"sync\",\"workers\":3,\"min_workers\":2,\"round_timeout_ms\":100,%s}",
           t1);
  expect(descent_create(d3, spec, NULL, &err), &err, DESCENT_ENOTSUP, "not_supported");
  snprintf(spec, sizeof spec, "{\"name\":\"x\",\"algorithm\":\"random_search\",%s}", t1);
  expect(descent_create(d3, spec, NULL, &err), &err, DESCENT_ENOTSUP, "not_supported");
  expect(descent_create(d3, "{\"name\":\"x\",\"algorithm\":\"sgd\",\"tensors\":[{\"name\":\"w\",\"shape\":[2]}]}", NULL,
                        &err),
         &err, DESCENT_EINVAL, "invalid_argument");
  char *list = NULL;
  OK(descent_list(d3, &list, &err), &err);
  ck_assert_str_eq(list, "{\"optimizers\":[]}"); /* nothing was created anywhere */
  descent_free(list);

  /* a create that one shard refuses is undone on the others */
  descent *s2 = open_urls(dms[3].url);
  OK(descent_create(s2, "{\"name\":\"dup\",\"algorithm\":\"sgd\",\"tensors\":[{\"name\":\"w\",\"shape\":[1]}]}", NULL,
                    &err),
     &err);
  expect(descent_create(d3, "{\"name\":\"dup\",\"algorithm\":\"sgd\",\"tensors\":[{\"name\":\"w\",\"shape\":[30]}]}",
                        NULL, &err),
         &err, DESCENT_EREFUSED, "already_exists");
  ck_assert_int_eq(err.status, 409);
  ck_assert_ptr_nonnull(strstr(err.message, "shard 2"));
  for (int k = 1; k <= 2; k++) {
    descent *s = open_urls(dms[k].url);
    char *desc = NULL;
    expect(descent_describe(s, "dup", &desc, &err), &err, DESCENT_EREFUSED, "unknown_instance");
    descent_close(s);
  }
  descent_close(s2);

  /* every kind of init, split by the rule, equals one daemon's */
  const char *inits =
      "{\"name\":\"mix\",\"algorithm\":\"adam\",\"tensors\":["
      "{\"name\":\"A\",\"shape\":[5,3],\"init\":{\"normal\":{\"mean\":1,\"std\":2,\"seed\":11}}},"
      "{\"name\":\"B\",\"shape\":[2,2],\"values\":[[1,2],[3,4]]},"
      "{\"name\":\"C\",\"shape\":[4],\"init\":{\"uniform\":{\"low\":-1,\"high\":1,\"seed\":2}}},"
      "{\"name\":\"D\",\"shape\":[3],\"init\":{\"constant\":0.5}},"
      "{\"name\":\"E\",\"shape\":[6],\"init\":{\"values\":[9,8,7,6,5,4]}}]}";
  OK(descent_create(d1, inits, NULL, &err), &err);
  char *desc = NULL;
  OK(descent_create(d3, inits, &desc, &err), &err);
  ck_assert_ptr_nonnull(strstr(desc, "\"shards\":[{\"url\""));
  ck_assert_ptr_nonnull(strstr(desc, "\"steps\":[0,0,0]"));
  descent_free(desc);
  float a[32], b[32];
  uint64_t step;
  OK(descent_pull(d1, "mix", a, 32, -1, 0, &step, &err), &err);
  OK(descent_pull(d3, "mix", b, 32, -1, 0, &step, &err), &err);
  ck_assert_mem_eq(a, b, sizeof a);
  /* 32 floats over 3: [0, 10), [10, 21), [21, 32) */
  descent_info info;
  OK(descent_info_get(d3, "mix", &info, &err), &err);
  ck_assert_uint_eq(info.size, 32);
  ck_assert_uint_eq(info.ntensors, 5);
  static const char *const names[] = {"A", "B", "C", "D", "E"};
  static const size_t offs[] = {0, 15, 19, 23, 26}, counts[] = {15, 4, 4, 3, 6};
  for (int i = 0; i < 5; i++) {
    ck_assert_str_eq(info.tensors[i].name, names[i]);
    ck_assert_uint_eq(info.tensors[i].offset, offs[i]);
    ck_assert_uint_eq(info.tensors[i].count, counts[i]);
  }
  ck_assert_int_eq(info.tensors[0].ndim, 1); /* split over shards 0 and 1: flat */
  ck_assert_uint_eq(info.tensors[0].shape[0], 15);
  ck_assert_int_eq(info.tensors[1].ndim, 2); /* whole on shard 1: its shape */
  descent_info_free(&info);
  descent *s1 = open_urls(dms[2].url);
  OK(descent_info_get(s1, "mix", &info, &err), &err);
  ck_assert_uint_eq(info.size, 11);
  ck_assert_str_eq(info.tensors[0].name, "A");
  ck_assert_uint_eq(info.tensors[0].count, 5);
  descent_info_free(&info);
  descent_close(s1);

  /* the daemons listed in another order do not hold this layout */
  descent *dr = open_urls(rev);
  expect(descent_pull(dr, "mix", b, 32, -1, 0, &step, &err), &err, DESCENT_ESHARDS, "shard_layout");
  descent_close(dr);

  /* a single daemon's state imported into the shards, and back */
  float g[32];
  for (int i = 0; i < 32; i++) g[i] = (float)(i % 7) - 3;
  OK(descent_push(d1, "mix", g, 32, NULL, a, &step, &err), &err);
  size_t len;
  char *st = export_state(d1, "mix", &len);
  OK(descent_state_import(d3, "mix", st, len, &err), &err);
  free(st);
  OK(descent_pull(d3, "mix", b, 32, -1, 0, &step, &err), &err);
  ck_assert_uint_eq(step, 1);
  ck_assert_mem_eq(a, b, sizeof a);
  OK(descent_push(d1, "mix", g, 32, NULL, a, &step, &err), &err);
  OK(descent_push(d3, "mix", g, 32, NULL, b, &step, &err), &err);
  ck_assert_mem_eq(a, b, sizeof a); /* the buffers came along: Adam carries on identically */

  /* not for shards: ask/tell; sync + clip by PATCH */
  uint64_t cand;
  expect(descent_ask(d3, "mix", b, 32, &cand, &err), &err, DESCENT_ENOTSUP, "not_supported");
  OK(descent_create(d3, "{\"name\":\"sy\",\"algorithm\":\"sgd\",\"mode\":\"sync\",\"workers\":2,"
                        "\"tensors\":[{\"name\":\"w\",\"shape\":[30]}]}",
                    NULL, &err),
     &err);
  expect(descent_patch(d3, "sy", "{\"clip_grad_norm\":1}", NULL, &err), &err, DESCENT_ENOTSUP, "not_supported");
  expect(descent_push(d3, "mix", g, 31, NULL, NULL, &step, &err), &err, DESCENT_EINVAL, "bad_length");
  OK(descent_delete(d3, "sy", &err), &err);
  expect(descent_delete(d3, "sy", &err), &err, DESCENT_EREFUSED, "unknown_instance");
  descent_close(d1);
  descent_close(d3);
  stop_daemons();
}
END_TEST

/* ---- a shard restarted from an older snapshot ---------------------------------------------- */

static void adam_grad(float *g, size_t n, int t) {
  for (size_t i = 0; i < n; i++) g[i] = (float)((int)((i * 7 + (size_t)t * 3) % 11) - 5) * 0.1f;
}

START_TEST(test_restored_shard_reported) {
  static const char *const args[] = {"--snapshot-interval", "3600", NULL};
  start_daemons(4, args); /* 0: one daemon for the reference; 1-3: shards */
  char one[128], three[400];
  urls(one, sizeof one, 0, 1);
  urls(three, sizeof three, 1, 3);
  descent_error err = {0};
  descent *d1 = open_urls(one), *d = open_urls(three);
  ck_assert_int_eq(descent_set_option(d, DESCENT_OPT_SETTLE_MS, 300), 0);
  const char *spec = "{\"name\":\"m\",\"algorithm\":\"adam\",\"hyper\":{\"lr\":0.01},"
                     "\"tensors\":[{\"name\":\"w\",\"shape\":[3000],\"init\":{\"normal\":{\"std\":1,\"seed\":9}}}]}";
  OK(descent_create(d, spec, NULL, &err), &err);
  const size_t n = 3000;
  float g[3000], x[3000], y[3000];
  uint64_t step;
  for (int t = 0; t < 5; t++) {
    adam_grad(g, n, t);
    OK(descent_push(d, "m", g, n, NULL, x, &step, &err), &err);
  }
  size_t clen;
  char *checkpoint = export_state(d, "m", &clen); /* at step 5 */
  for (int t = 5; t < 8; t++) {
    adam_grad(g, n, t);
    OK(descent_push(d, "m", g, n, NULL, x, &step, &err), &err);
  }
  ck_assert_uint_eq(step, 8);

  /* shard 1 dies; its data dir holds the snapshot taken at create (step 0) */
  test_daemon_kill(&dms[2]);
  test_daemon_restart(&dms[2], args);
  urls(three, sizeof three, 1, 3);
  descent_close(d);
  d = open_urls(three);
  ck_assert_int_eq(descent_set_option(d, DESCENT_OPT_SETTLE_MS, 300), 0);

  expect(descent_pull(d, "m", x, n, -1, 0, &step, &err), &err, DESCENT_ESHARDS, "step_mismatch");
  char want[200];
  snprintf(want, sizeof want, "shard 1 (%s) at step 0", dms[2].url);
  ck_assert_msg(strstr(err.message, want) != NULL, "%s", err.message);
  snprintf(want, sizeof want, "shard 0 (%s) at step 8", dms[1].url);
  ck_assert_msg(strstr(err.message, want) != NULL, "%s", err.message);
  ck_assert_ptr_nonnull(strstr(err.message, "importing one state"));
  descent_info info;
  expect(descent_info_get(d, "m", &info, &err), &err, DESCENT_ESHARDS, "step_mismatch");
  descent_info_free(&info);
  char *doc = NULL;
  size_t len;
  expect(descent_state_export(d, "m", &doc, &len, &err), &err, DESCENT_ESHARDS, "step_mismatch");
  /* a push that says which step it was computed at: the lagging shard refuses it as ahead */
  descent_push_opts o = DESCENT_PUSH_OPTS_INIT;
  o.step = 8;
  expect(descent_push(d, "m", g, n, &o, x, &step, &err), &err, DESCENT_ESHARDS, "step_mismatch");
  ck_assert_ptr_nonnull(strstr(err.message, "at step 0"));
  ck_assert_ptr_nonnull(strstr(err.message, "at step 9"));

  /* back in line: the checkpoint into every shard, and the same on one daemon */
  OK(descent_state_import(d, "m", checkpoint, clen, &err), &err);
  OK(descent_state_import(d1, "m", checkpoint, clen, &err), &err);
  OK(descent_pull(d, "m", x, n, -1, 0, &step, &err), &err);
  ck_assert_uint_eq(step, 5);
  for (int t = 5; t < 8; t++) {
    adam_grad(g, n, t);
    OK(descent_push(d, "m", g, n, NULL, x, &step, &err), &err);
    OK(descent_push(d1, "m", g, n, NULL, y, &step, &err), &err);
    ck_assert_mem_eq(x, y, sizeof x);
  }
  ck_assert_uint_eq(step, 8);
  free(checkpoint);
  descent_close(d);
  descent_close(d1);
  stop_daemons();
}
END_TEST

Suite *suite_sharding(void) {
  Suite *s = suite_create("sharding");
  TCase *tc = tcase_create("shards");
  tcase_set_timeout(tc, client_test_quick() ? 300 : 120);
  tcase_add_test(tc, test_create_rules_and_layout);
  tcase_add_test(tc, test_clip_async_identical);
  tcase_add_test(tc, test_half_sharded_identical);
  tcase_add_test(tc, test_async_workers_sharded);
  tcase_add_test(tc, test_restored_shard_reported);
  tcase_add_test(tc, test_adam_sync_million_bit_identical);
  suite_add_tcase(s, tc);
  return s;
}
