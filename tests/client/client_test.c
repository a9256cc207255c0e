/* client_test: libdescent against a real descentd: a training run checked
 * bit for bit against a replay, every error path a worker meets, long-poll,
 * idempotent retries, sync rounds, ask/tell, and the worker tools (numeric
 * gradient, gradient check, global norm).  main() runs every suite of
 * client_test.h; `client_test SUITE...` runs some; CK_FORK=no to debug.
 */
#include "client_test.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"

bool client_test_quick(void) {
  const char *q = getenv("DESCENT_QUICK");
  return q && *q && strcmp(q, "0");
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* ---- fixture: one daemon per test ------------------------------------------------ */

static test_daemon dm;

static void daemon_up(void) { test_daemon_start(&dm, NULL); }

static void daemon_down(void) {
  int rc = test_daemon_stop(&dm);
  test_daemon_cleanup(&dm);
  ck_assert_msg(rc == 0, "descentd exited with %d after SIGTERM", rc);
}

static descent *open_dm(void) {
  descent_error err = {0};
  descent *d = descent_open(dm.url, NULL, &err);
  ck_assert_msg(d != NULL, "descent_open(%s): %s: %s", dm.url, err.code, err.message);
  return d;
}

/* ---- a training run, replayed exactly ---------------------------------------------- */

/* f(x) = 1/2 sum a_i (x_i - c_i)^2, so df/dx_i = a_i (x_i - c_i), in float */
static const float qa[8] = {1, 2, 0.5f, 3, 1.5f, 1, 2, 0.25f};
static const float qc[8] = {0.3f, -1, 2, 1, 0, 0.7f, -0.2f, 5};

static void quad_grad(const float *x, float *g) {
  for (int i = 0; i < 8; i++) g[i] = qa[i] * (x[i] - qc[i]);
}

static double quad_loss(const float *x) {
  double f = 0;
  for (int i = 0; i < 8; i++) f += 0.5 * qa[i] * ((double)x[i] - qc[i]) * ((double)x[i] - qc[i]);
  return f;
}

/* torch's SGD step as the daemon runs it: p + g * (-lr), fused */
static void sgd_replay(float *p, const float *g, float lr) {
  for (int i = 0; i < 8; i++) p[i] = fmaf(g[i], -lr, p[i]);
}

static const char quad_spec[] =
    "{\"name\":\"quad\",\"algorithm\":\"sgd\",\"hyper\":{\"lr\":0.125},"
    "\"tensors\":[{\"name\":\"W\",\"shape\":[2,3],\"values\":[[1,-2,3],[0.5,4,-1]]},"
    "{\"name\":\"b\",\"shape\":[2],\"init\":{\"constant\":2}}]}";

START_TEST(test_train_sgd_exact) {
  descent_error err = {0};
  descent *d = open_dm();
  char *desc = NULL;
  OK(descent_create(d, quad_spec, &desc, &err), &err);
  ck_assert_ptr_nonnull(strstr(desc, "\"name\":\"quad\""));
  descent_free(desc);

  descent_info info;
  OK(descent_info_get(d, "quad", &info, &err), &err);
  ck_assert_uint_eq(info.size, 8);
  ck_assert_uint_eq(info.ntensors, 2);
  ck_assert_str_eq(info.tensors[0].name, "W");
  ck_assert_int_eq(info.tensors[0].ndim, 2);
  ck_assert_uint_eq(info.tensors[0].shape[0], 2);
  ck_assert_uint_eq(info.tensors[0].shape[1], 3);
  ck_assert_uint_eq(info.tensors[1].offset, 6);
  ck_assert_uint_eq(info.tensors[1].count, 2);
  ck_assert_str_eq(info.algorithm, "sgd");
  ck_assert_str_eq(info.mode, "async");
  ck_assert_uint_eq(info.step, 0);
  descent_info_free(&info);

  float x[8], expect[8] = {1, -2, 3, 0.5f, 4, -1, 2, 2}, g[8];
  uint64_t step = 99;
  OK(descent_pull(d, "quad", x, 8, -1, 0, &step, &err), &err);
  ck_assert_uint_eq(step, 0);
  ck_assert_mem_eq(x, expect, sizeof x);
  double loss0 = quad_loss(x);
  for (int t = 0; t < 30; t++) {
    quad_grad(x, g);
    descent_push_opts o = DESCENT_PUSH_OPTS_INIT;
    o.worker = "w1";
    o.step = (int64_t)step;
    o.loss = quad_loss(x);
    OK(descent_push(d, "quad", g, 8, &o, x, &step, &err), &err);
    sgd_replay(expect, g, 0.125f);
    ck_assert_uint_eq(step, (uint64_t)t + 1);
    ck_assert_mem_eq(x, expect, sizeof x);
  }
  ck_assert(quad_loss(x) < loss0 / 2);

  /* a new learning rate at run time */
  OK(descent_set_hyper(d, "quad", "lr", 0.25, &err), &err);
  quad_grad(x, g);
  OK(descent_push(d, "quad", g, 8, NULL, NULL, &step, &err), &err); /* ?params=none */
  sgd_replay(expect, g, 0.25f);
  ck_assert_uint_eq(step, 31);
  OK(descent_pull(d, "quad", x, 8, -1, 0, &step, &err), &err);
  ck_assert_uint_eq(step, 31);
  ck_assert_mem_eq(x, expect, sizeof x);

  /* list, export, delete, import: the run continues where it was */
  char *list = NULL;
  OK(descent_list(d, &list, &err), &err);
  ck_assert_ptr_nonnull(strstr(list, "\"name\":\"quad\""));
  descent_free(list);
  char *state = NULL;
  size_t len = 0;
  OK(descent_state_export(d, "quad", &state, &len, &err), &err);
  ck_assert_uint_eq(len, strlen(state));
  ck_assert_ptr_nonnull(strstr(state, "\"step\":31"));
  OK(descent_delete(d, "quad", &err), &err);
  ck_assert_int_eq(descent_pull(d, "quad", x, 8, -1, 0, &step, &err), DESCENT_EREFUSED);
  ck_assert_str_eq(err.code, "unknown_instance");
  OK(descent_state_import(d, "quad", state, len, &err), &err);
  descent_free(state);
  memset(x, 0, sizeof x);
  OK(descent_pull(d, "quad", x, 8, -1, 0, &step, &err), &err);
  ck_assert_uint_eq(step, 31);
  ck_assert_mem_eq(x, expect, sizeof x);
  quad_grad(x, g);
  OK(descent_push(d, "quad", g, 8, NULL, x, &step, &err), &err);
  sgd_replay(expect, g, 0.25f);
  ck_assert_uint_eq(step, 32);
  ck_assert_mem_eq(x, expect, sizeof x);
  descent_close(d);
}
END_TEST

/* ---- keep-alive --------------------------------------------------------------------- */

/* Sockets of this host on the daemon's port, from /proc/net/tcp: the
 * listener, and both ends of every connection, open or in TIME_WAIT. */
static int sockets_on_port(void) {
  const char *colon = strrchr(dm.url, ':');
  ck_assert_ptr_nonnull(colon);
  unsigned port = (unsigned)strtoul(colon + 1, NULL, 10);
  FILE *f = fopen("/proc/net/tcp", "r");
  ck_assert_ptr_nonnull(f);
  char line[512];
  int n = 0;
  while (fgets(line, sizeof line, f)) {
    unsigned lp, rp;
    if (sscanf(line, " %*d: %*8X:%X %*8X:%X", &lp, &rp) == 2 && (lp == port || rp == port)) n++;
  }
  fclose(f);
  return n;
}

/* bfloat16 and float16 bodies: a half push gives exactly what a float32
 * push of the widened values gives; parameters come back rounded. */
START_TEST(test_half_precision) {
  descent_error err = {0};
  descent *d = open_dm();
  static const char a_spec[] = "{\"name\":\"ha\",\"algorithm\":\"adam\",\"hyper\":{\"lr\":0.01},"
                               "\"tensors\":[{\"name\":\"w\",\"shape\":[8],\"init\":{\"constant\":0.5}}]}";
  static const char b_spec[] = "{\"name\":\"hb\",\"algorithm\":\"adam\",\"hyper\":{\"lr\":0.01},"
                               "\"tensors\":[{\"name\":\"w\",\"shape\":[8],\"init\":{\"constant\":0.5}}]}";
  OK(descent_create(d, a_spec, NULL, &err), &err);
  OK(descent_create(d, b_spec, NULL, &err), &err);
  for (int dt = DESCENT_BFLOAT16; dt <= DESCENT_FLOAT16; dt++) {
    for (int t = 0; t < 5; t++) {
      float g[8], wide[8], pa[8], pb[8];
      uint16_t h[8], ph[8];
      for (int i = 0; i < 8; i++) g[i] = qa[i] * (float)(t + 1) - qc[i];
      descent_to_dtype((descent_dtype)dt, g, h, 8);
      descent_from_dtype((descent_dtype)dt, h, wide, 8);
      uint64_t sa, sb;
      OK(descent_push_dtype(d, "ha", h, 8, (descent_dtype)dt, NULL, ph, &sa, &err), &err);
      OK(descent_push(d, "hb", wide, 8, NULL, pb, &sb, &err), &err);
      ck_assert_uint_eq(sa, sb);
      OK(descent_pull(d, "ha", pa, 8, -1, 0, &sa, &err), &err);
      ck_assert_mem_eq(pa, pb, sizeof pa); /* bit for bit */
      uint16_t want[8];
      descent_to_dtype((descent_dtype)dt, pb, want, 8);
      ck_assert_mem_eq(ph, want, sizeof want); /* the reply, rounded to nearest even */
      OK(descent_pull_dtype(d, "ha", ph, 8, (descent_dtype)dt, -1, 0, &sa, &err), &err);
      ck_assert_mem_eq(ph, want, sizeof want);
    }
  }
  /* a wrong length is refused with the daemon's code */
  uint16_t h3[3] = {0, 0, 0};
  ck_assert_int_lt(descent_push_dtype(d, "ha", h3, 3, DESCENT_BFLOAT16, NULL, NULL, NULL, &err), 0);
  ck_assert_str_eq(err.code, "bad_length");
  /* conversions: ties to even, in place */
  float v[3] = {1.0f + 0x1p-8f, 1.0f + 0x1.8p-7f, 65520.0f};
  uint16_t o[3];
  descent_to_dtype(DESCENT_BFLOAT16, v, o, 2);
  ck_assert_uint_eq(o[0], 0x3f80);
  ck_assert_uint_eq(o[1], 0x3f82);
  descent_to_dtype(DESCENT_FLOAT16, v + 2, o, 1);
  ck_assert_uint_eq(o[0], 0x7c00);
  descent_close(d);
}
END_TEST

START_TEST(test_keep_alive) {
  descent_error err = {0};
  descent *d = open_dm();
  OK(descent_create(d, quad_spec, NULL, &err), &err);
  float x[8], g[8] = {0};
  uint64_t step;
  for (int i = 0; i < 40; i++) {
    OK(descent_push(d, "quad", g, 8, NULL, x, &step, &err), &err);
    OK(descent_pull(d, "quad", x, 8, -1, 0, &step, &err), &err);
  }
  /* 81 requests over one kept-alive connection: the listener and its two
   * ends; a connection per request would leave dozens in TIME_WAIT */
  int n = sockets_on_port();
  ck_assert_msg(n <= 4, "%d sockets on the daemon's port", n);
  descent_close(d);
}
END_TEST

/* ---- errors -------------------------------------------------------------------------- */

static void expect_err(int rc, const descent_error *err, int want_rc, int status, const char *code) {
  ck_assert_msg(rc == want_rc, "rc %d (%s), wanted %d; %s: %s", rc, descent_strerror(rc), want_rc, err->code,
                err->message);
  ck_assert_int_eq(err->status, status);
  ck_assert_str_eq(err->code, code);
  ck_assert_msg(err->message[0], "an empty message");
}

START_TEST(test_errors) {
  descent_error err = {0};
  descent *d = open_dm();
  float v[8] = {0};
  uint64_t step;
  OK(descent_create(d, quad_spec, NULL, &err), &err);

  expect_err(descent_push(d, "nope", v, 8, NULL, v, &step, &err), &err, DESCENT_EREFUSED, 404, "unknown_instance");
  ck_assert_ptr_nonnull(strstr(err.message, "nope"));
  expect_err(descent_pull(d, "nope", v, 8, -1, 0, &step, &err), &err, DESCENT_EREFUSED, 404, "unknown_instance");
  expect_err(descent_push(d, "quad", v, 7, NULL, v, &step, &err), &err, DESCENT_EREFUSED, 400, "bad_length");
  ck_assert_msg(strstr(err.message, "32 bytes") || strstr(err.message, "8 float32"), "%s", err.message);
  expect_err(descent_pull(d, "quad", v, 5, -1, 0, &step, &err), &err, DESCENT_EINVAL, 0, "bad_length");
  expect_err(descent_create(d, quad_spec, NULL, &err), &err, DESCENT_EREFUSED, 409, "already_exists");
  expect_err(descent_create(d, "{\"name\":\"x\",\"algorithm\":\"lbfgs\",\"tensors\":[{\"name\":\"w\",\"shape\":[2]}]}",
                            NULL, &err),
             &err, DESCENT_EREFUSED, 422, "unknown_algorithm");
  expect_err(descent_create(d, "{\"name\":", NULL, &err), &err, DESCENT_EREFUSED, 400, "bad_json");
  expect_err(descent_set_hyper(d, "quad", "lr", -1, &err), &err, DESCENT_EREFUSED, 422, "invalid_value");
  expect_err(descent_set_hyper(d, "quad", "betas", 0.5, &err), &err, DESCENT_EREFUSED, 422, "unknown_hyperparameter");
  v[3] = NAN;
  expect_err(descent_push(d, "quad", v, 8, NULL, v, &step, &err), &err, DESCENT_EREFUSED, 422, "not_finite");
  ck_assert_ptr_nonnull(strstr(err.message, "W[3]"));
  v[3] = 0;
  /* refused before any request */
  expect_err(descent_pull(d, "a/b", v, 8, -1, 0, &step, &err), &err, DESCENT_EINVAL, 0, "bad_name");
  descent_push_opts o = DESCENT_PUSH_OPTS_INIT;
  o.worker = "bad worker";
  expect_err(descent_push(d, "quad", v, 8, &o, v, &step, &err), &err, DESCENT_EINVAL, 0, "bad_name");
  /* a refused push changed nothing */
  float x[8], want[8] = {1, -2, 3, 0.5f, 4, -1, 2, 2};
  OK(descent_pull(d, "quad", x, 8, -1, 0, &step, &err), &err);
  ck_assert_uint_eq(step, 0);
  ck_assert_mem_eq(x, want, sizeof x);
  /* ask/tell belong to random_search */
  uint64_t cand;
  expect_err(descent_ask(d, "quad", x, 8, &cand, &err), &err, DESCENT_EREFUSED, 409, "wrong_algorithm");
  descent_close(d);

  /* nothing listens on port 1 */
  ck_assert_ptr_null(descent_open("ftp://127.0.0.1:1", NULL, &err));
  ck_assert_str_eq(err.code, "invalid_argument");
  d = descent_open("http://127.0.0.1:1", NULL, &err);
  ck_assert_ptr_nonnull(d);
  expect_err(descent_pull(d, "quad", x, 8, -1, 0, &step, &err), &err, DESCENT_ECONNECT, 0, "connection_failed");
  descent_close(d);
  char urls[200];
  snprintf(urls, sizeof urls, "%s,http://127.0.0.1:1", dm.url);
  ck_assert_ptr_null(descent_open(urls, NULL, &err));
  ck_assert_str_eq(err.code, "connection_failed");
  ck_assert_ptr_nonnull(strstr(err.message, "shard 1"));
}
END_TEST

/* ---- long-poll ------------------------------------------------------------------------ */

struct poller {
  const char *url;
  float x[4];
  uint64_t step;
  int rc;
  double waited_ms;
  descent_error err;
};

static void *poll_thread(void *arg) {
  struct poller *p = arg;
  descent *d = descent_open(p->url, NULL, &p->err);
  if (!d) {
    p->rc = -100;
    return NULL;
  }
  double t0 = now_ms();
  p->rc = descent_pull(d, "lp", p->x, 4, 1, 5000, &p->step, &p->err);
  p->waited_ms = now_ms() - t0;
  descent_close(d);
  return NULL;
}

START_TEST(test_longpoll) {
  descent_error err = {0};
  descent *d = open_dm();
  OK(descent_create(d, "{\"name\":\"lp\",\"algorithm\":\"sgd\",\"hyper\":{\"lr\":1},"
                       "\"tensors\":[{\"name\":\"w\",\"shape\":[4]}]}",
                    NULL, &err),
     &err);
  struct poller p = {.url = dm.url};
  pthread_t th;
  ck_assert_int_eq(pthread_create(&th, NULL, poll_thread, &p), 0);
  usleep(300 * 1000);
  float g[4] = {1, 2, 3, 4}, x[4];
  uint64_t step;
  OK(descent_push(d, "lp", g, 4, NULL, x, &step, &err), &err);
  pthread_join(th, NULL);
  ck_assert_msg(p.rc == 0, "pull: %d %s: %s", p.rc, p.err.code, p.err.message);
  ck_assert_uint_eq(p.step, 1);
  ck_assert_mem_eq(p.x, x, sizeof x);
  ck_assert_msg(p.waited_ms >= 250 && p.waited_ms < 4000, "the long-poll waited %.0f ms", p.waited_ms);
  /* a long-poll that times out answers with the current, older step */
  double t0 = now_ms();
  OK(descent_pull(d, "lp", x, 4, 5, 200, &step, &err), &err);
  double waited = now_ms() - t0;
  ck_assert_uint_eq(step, 1);
  ck_assert_msg(waited >= 150 && waited < 3000, "waited %.0f ms", waited);
  descent_close(d);
}
END_TEST

/* ---- idempotent retries ------------------------------------------------------------------ */

START_TEST(test_idempotency) {
  descent_error err = {0};
  descent *d = open_dm();
  OK(descent_create(d, "{\"name\":\"idem\",\"algorithm\":\"sgd\",\"hyper\":{\"lr\":1},"
                       "\"tensors\":[{\"name\":\"w\",\"shape\":[3],\"values\":[10,20,30]}]}",
                    NULL, &err),
     &err);
  float g[3] = {1, 2, 4}, a[3], b[3], want[3] = {9, 18, 26};
  uint64_t s1, s2;
  descent_push_opts o = DESCENT_PUSH_OPTS_INIT;
  o.idempotency_key = "retry-1";
  OK(descent_push(d, "idem", g, 3, &o, a, &s1, &err), &err);
  OK(descent_push(d, "idem", g, 3, &o, b, &s2, &err), &err); /* the retry */
  ck_assert_uint_eq(s1, 1);
  ck_assert_uint_eq(s2, 1);
  ck_assert_mem_eq(a, want, sizeof a);
  ck_assert_mem_eq(b, want, sizeof b);
  /* worker + seq is a key too */
  descent_push_opts q = DESCENT_PUSH_OPTS_INIT;
  q.worker = "w7";
  q.seq = 7;
  OK(descent_push(d, "idem", g, 3, &q, a, &s1, &err), &err);
  OK(descent_push(d, "idem", g, 3, &q, NULL, &s2, &err), &err);
  ck_assert_uint_eq(s1, 2);
  ck_assert_uint_eq(s2, 2);
  float want2[3] = {8, 16, 22};
  OK(descent_pull(d, "idem", b, 3, -1, 0, &s2, &err), &err);
  ck_assert_uint_eq(s2, 2);
  ck_assert_mem_eq(b, want2, sizeof b);
  descent_close(d);
}
END_TEST

/* ---- sync rounds ------------------------------------------------------------------------ */

#define SYNC_ROUNDS 6

struct syncw {
  const char *url, *name;
  int w;
  float got[SYNC_ROUNDS][4];
  uint64_t steps[SYNC_ROUNDS];
  int rc;
  descent_error err;
};

static void sync_grad(int w, int round, float *g) {
  for (int i = 0; i < 4; i++) g[i] = (float)((w + 1) * (i + 1)) * 0.1f + (float)round * 0.01f;
}

static void *sync_thread(void *arg) {
  struct syncw *s = arg;
  descent *d = descent_open(s->url, NULL, &s->err);
  if (!d) {
    s->rc = -100;
    return NULL;
  }
  char worker[16];
  snprintf(worker, sizeof worker, "w%d", s->w);
  for (int r = 0; r < SYNC_ROUNDS && !s->rc; r++) {
    float g[4];
    sync_grad(s->w, r, g);
    descent_push_opts o = DESCENT_PUSH_OPTS_INIT;
    o.worker = worker;
    o.step = r;
    s->rc = descent_push(d, s->name, g, 4, &o, s->got[r], &s->steps[r], &s->err);
  }
  descent_close(d);
  return NULL;
}

START_TEST(test_sync_rounds) {
  descent_error err = {0};
  descent *d = open_dm();
  OK(descent_create(d, "{\"name\":\"sy\",\"algorithm\":\"sgd\",\"hyper\":{\"lr\":0.5},\"mode\":\"sync\",\"workers\":2,"
                       "\"tensors\":[{\"name\":\"w\",\"shape\":[4],\"values\":[1,2,3,4]}]}",
                    NULL, &err),
     &err);
  struct syncw s[2] = {{.url = dm.url, .name = "sy", .w = 0}, {.url = dm.url, .name = "sy", .w = 1}};
  pthread_t th[2];
  for (int w = 0; w < 2; w++) ck_assert_int_eq(pthread_create(&th[w], NULL, sync_thread, &s[w]), 0);
  for (int w = 0; w < 2; w++) pthread_join(th[w], NULL);
  float p[4] = {1, 2, 3, 4};
  for (int r = 0; r < SYNC_ROUNDS; r++) {
    float ga[4], gb[4];
    sync_grad(0, r, ga);
    sync_grad(1, r, gb);
    for (int i = 0; i < 4; i++) p[i] = fmaf((ga[i] + gb[i]) / 2.0f, -0.5f, p[i]); /* the mean, one step */
    for (int w = 0; w < 2; w++) {
      ck_assert_msg(s[w].rc == 0, "worker %d: %s: %s", w, s[w].err.code, s[w].err.message);
      ck_assert_uint_eq(s[w].steps[r], (uint64_t)r + 1);
      ck_assert_mem_eq(s[w].got[r], p, sizeof p);
    }
  }
  descent_close(d);
}
END_TEST

/* ---- random search ------------------------------------------------------------------------ */

START_TEST(test_ask_tell) {
  descent_error err = {0};
  descent *d = open_dm();
  OK(descent_create(d, "{\"name\":\"rs\",\"algorithm\":\"random_search\",\"hyper\":{\"scale\":0.5,\"seed\":3},"
                       "\"tensors\":[{\"name\":\"w\",\"shape\":[3]}]}",
                    NULL, &err),
     &err);
  float x[3], y[3];
  uint64_t c1, c2;
  int improved = -1;
  double best = 0;
  OK(descent_ask(d, "rs", x, 3, &c1, &err), &err);
  OK(descent_ask(d, "rs", y, 3, &c2, &err), &err);
  ck_assert_uint_eq(c1, 1);
  ck_assert_uint_eq(c2, 2);
  ck_assert_msg(memcmp(x, y, sizeof x) != 0, "two candidates are equal");
  OK(descent_tell(d, "rs", c1, 2.5, &improved, &best, &err), &err);
  ck_assert_int_eq(improved, 1);
  ck_assert_double_eq(best, 2.5);
  OK(descent_tell(d, "rs", c2, 3.0, &improved, &best, &err), &err);
  ck_assert_int_eq(improved, 0);
  ck_assert_double_eq(best, 2.5);
  /* the best candidate is now the instance's parameters */
  float p[3];
  uint64_t step;
  OK(descent_pull(d, "rs", p, 3, -1, 0, &step, &err), &err);
  ck_assert_mem_eq(p, x, sizeof p);
  expect_err(descent_tell(d, "rs", c2, 1.0, NULL, NULL, &err), &err, DESCENT_EREFUSED, 409, "conflict");
  expect_err(descent_push(d, "rs", p, 3, NULL, NULL, &step, &err), &err, DESCENT_EREFUSED, 409, "wrong_algorithm");
  descent_close(d);
}
END_TEST

Suite *suite_client(void) {
  Suite *s = suite_create("client");
  TCase *tc = tcase_create("daemon");
  tcase_add_checked_fixture(tc, daemon_up, daemon_down);
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_train_sgd_exact);
  tcase_add_test(tc, test_keep_alive);
  tcase_add_test(tc, test_half_precision);
  tcase_add_test(tc, test_errors);
  tcase_add_test(tc, test_longpoll);
  tcase_add_test(tc, test_idempotency);
  tcase_add_test(tc, test_sync_rounds);
  tcase_add_test(tc, test_ask_tell);
  suite_add_tcase(s, tc);
  return s;
}

/* ---- tools (no daemon) ------------------------------------------------------------------- */

/* f(x) = sum_i sin(x_i) x_{i+1} + exp(x_i / 4), a coupled function with a known gradient */
static double wavy(const double *x, void *ctx) {
  size_t n = *(const size_t *)ctx;
  double f = 0;
  for (size_t i = 0; i < n; i++) {
    f += exp(x[i] / 4);
    if (i + 1 < n) f += sin(x[i]) * x[i + 1];
  }
  return f;
}

static void wavy_grad(const double *x, size_t n, double *g) {
  for (size_t i = 0; i < n; i++) {
    g[i] = exp(x[i] / 4) / 4;
    if (i + 1 < n) g[i] += cos(x[i]) * x[i + 1];
    if (i > 0) g[i] += sin(x[i - 1]);
  }
}

START_TEST(test_gradient_check) {
  size_t n = 12;
  double x[12] = {0}, x0[12], a[12], num[12];
  for (size_t i = 0; i < n; i++) x[i] = 0.3 * (double)i - 1.1;
  memcpy(x0, x, sizeof x);
  wavy_grad(x, n, a);
  ck_assert_int_eq(descent_numeric_gradient(wavy, &n, x, n, 0, num), 0);
  ck_assert_mem_eq(x, x0, sizeof x); /* restored exactly */
  size_t worst = 99;
  double rel = descent_gradient_check(a, num, n, &worst);
  ck_assert_msg(rel < 1e-6, "relative error %g at %zu", rel, worst);
  ck_assert_uint_lt(worst, n);
  /* a wrong analytic gradient is caught, at the right index */
  a[5] *= 1.001;
  rel = descent_gradient_check(a, num, n, &worst);
  ck_assert_msg(rel > 5e-4 && rel < 2e-3, "relative error %g", rel);
  ck_assert_uint_eq(worst, 5);
  /* the definition: |a-n| / max(|a|, |n|, 1e-12) */
  double p[3] = {1, 0, 1e-20}, q[3] = {0.5, 0, 2e-20};
  ck_assert_double_eq_tol(descent_gradient_check(p, q, 3, &worst), 0.5, 1e-15);
  ck_assert_uint_eq(worst, 0);
  ck_assert_double_eq(descent_gradient_check(p + 1, q + 1, 1, NULL), 0);
  double bad = NAN;
  ck_assert(isinf(descent_gradient_check(&bad, q, 1, NULL)));
  ck_assert_int_eq(descent_numeric_gradient(NULL, NULL, x, n, 0, num), DESCENT_EINVAL);
}
END_TEST

START_TEST(test_grad_norm) {
  float g[2] = {3, 4};
  ck_assert_double_eq(descent_grad_norm(g, 2), 5.0);
  ck_assert_double_eq(descent_grad_norm(g, 0), 0.0);
  /* the daemon's order: 8 lanes by index mod 8, lanes summed left to right */
  size_t n = 1003;
  float *v = malloc(n * sizeof *v);
  for (size_t i = 0; i < n; i++) v[i] = (float)(i % 7 == 0 ? 1e8 : 1.0 / (double)(i + 1));
  double lanes[8] = {0}, t = 0;
  for (size_t j = 0; j < 8; j++)
    for (size_t i = j; i < n; i += 8) lanes[j] += (double)v[i] * v[i];
  for (int j = 0; j < 8; j++) t += lanes[j];
  ck_assert_double_eq(descent_grad_norm(v, n), sqrt(t));
  free(v);
}
END_TEST

START_TEST(test_strerror) {
  ck_assert_str_eq(descent_strerror(0), "ok");
  ck_assert_str_eq(descent_strerror(DESCENT_ESHARDS), "the shards of an instance are at different steps");
  ck_assert_str_eq(descent_strerror(12345), "unknown error");
  for (int rc = -9; rc < 0; rc++) ck_assert_str_ne(descent_strerror(rc), "unknown error");
}
END_TEST

Suite *suite_tools(void) {
  Suite *s = suite_create("tools");
  TCase *tc = tcase_create("tools");
  tcase_add_test(tc, test_gradient_check);
  tcase_add_test(tc, test_grad_norm);
  tcase_add_test(tc, test_strerror);
  suite_add_tcase(s, tc);
  return s;
}

int main(int argc, char **argv) {
  /* every daemon's directory goes under one per run, removed at the end */
  char tmp[] = "/tmp/descent-client-test-XXXXXX";
  if (!mkdtemp(tmp) || setenv("DESCENT_TEST_TMP", tmp, 1) < 0) {
    perror("descent-client-test: temporary directory");
    return EXIT_FAILURE;
  }
  SRunner *sr = srunner_create(NULL);
  int added = 0;
#define CLIENT_SUITE_ADD(name)                                              \
  {                                                                         \
    int want = argc < 2;                                                    \
    for (int i = 1; i < argc; i++) want |= strcmp(argv[i], #name) == 0;     \
    if (want) {                                                             \
      srunner_add_suite(sr, suite_##name());                                \
      added++;                                                              \
    }                                                                       \
  }
  CLIENT_SUITES(CLIENT_SUITE_ADD)
#undef CLIENT_SUITE_ADD
  int failed = 1;
  if (added) {
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
  }
  srunner_free(sr);
  test_tmp_remove(tmp);
  return !added ? 2 : failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
