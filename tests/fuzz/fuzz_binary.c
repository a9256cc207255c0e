/* fuzz_binary: binary push bodies (Content-Type: application/octet-stream),
 * for a few fixed instances.
 *
 * Input: one byte picking the instance (and where to slice), then the body:
 * little-endian float32 gradients of every tensor, nothing else.
 * Invariants:
 *   - optim_all_finite, on the whole body and on a slice, finds exactly the
 *     first NaN or infinity a reference scan finds;
 *   - a body of the wrong length is refused by h_step's length rule;
 *   - a body with a NaN or infinity is refused (E_NOT_FINITE, naming the
 *     tensor and index) and the instance is bit for bit as before;
 *   - an accepted body is applied once: the step advances by one, the reply
 *     buffer holds the new parameters, and the result is bit-identical to
 *     the kernel applied by hand to the same state in two slices cut at an
 *     arbitrary point (what kpool does across cores);
 *   - the same body read as a push to an instance with sparse tensors
 *     (W[3], emb[1000, 2] sparse, b[1], in data[0]'s wire dtype): refused
 *     with bad_length / invalid_value leaving nothing behind, or accepted
 *     with every id < V, and the binary reply written from the decoded push
 *     is the body itself, byte for byte (float32), or its re-encoding.
 */
#include "codec_half.h"
#include "codec_push.h"
#include "fuzz_state.h"
#include "schedule.h"

static const char *const specs[] = {
    "{\"name\":\"sgd\",\"algorithm\":\"sgd\",\"hyper\":{\"lr\":0.1,\"momentum\":0.9,\"dampening\":0.1,"
    "\"nesterov\":false,\"weight_decay\":0.01},\"tensors\":[{\"name\":\"W\",\"shape\":[2,3]},{\"name\":\"b\",\"shape\":[1]}]}",
    "{\"name\":\"adam\",\"algorithm\":\"adam\",\"hyper\":{\"lr\":0.01,\"amsgrad\":true},\"clip_grad_norm\":0.5,"
    "\"schedule\":{\"type\":\"cosine\",\"T_max\":10},"
    "\"tensors\":[{\"name\":\"W\",\"shape\":[5,7]},{\"name\":\"b\",\"shape\":[2]}]}",
    "{\"name\":\"rms\",\"algorithm\":\"rmsprop\",\"hyper\":{\"momentum\":0.5,\"centered\":true,\"weight_decay\":0.1},"
    "\"tensors\":[{\"name\":\"v\",\"shape\":[16],\"init\":{\"normal\":{\"std\":1,\"seed\":7}}}]}",
    "{\"name\":\"adamw\",\"algorithm\":\"adamw\",\"hyper\":{\"maximize\":true},\"schedule\":{\"type\":\"step\",\"step_size\":1},"
    "\"tensors\":[{\"name\":\"a\",\"shape\":[3]}]}",
    "{\"name\":\"ada\",\"algorithm\":\"adagrad\",\"hyper\":{\"lr_decay\":0.01,\"initial_accumulator_value\":0.1},"
    "\"tensors\":[{\"name\":\"a\",\"shape\":[11],\"init\":{\"uniform\":{\"low\":-1,\"high\":1,\"seed\":3}}}]}",
    "{\"name\":\"nest\",\"algorithm\":\"nesterov\",\"tensors\":[{\"name\":\"a\",\"shape\":[5]}]}",
};
#define NSPECS (sizeof specs / sizeof *specs)

static instance_state templates[NSPECS];
static const instance_env env; /* no pool, timers or kernel threads */

static void never_suspend(void *arg) { FUZZ_CHECK(0, "an async push suspended"); }

static void fixtures(void) {
  static int done;
  if (done) return;
  done = 1;
  for (size_t i = 0; i < NSPECS; i++) {
    jdoc d;
    derr e = {0};
    FUZZ_CHECK(jdoc_parse(&d, NULL, specs[i], strlen(specs[i]), &e) == 0, "%s", e.msg);
    instance_cfg cfg;
    float *params;
    FUZZ_CHECK(spec_parse_create(&d, UINT64_MAX, &cfg, &params, &e) == 0, "%s", e.msg);
    jdoc_free(&d);
    instance *in = instance_new(&cfg, &env);
    FUZZ_CHECK(in);
    instance_init_params(in, params);
    if (i % 2 == 0) { /* every other one with history: one step already taken */
      float *g = mem_alloc_floats(cfg.n);
      for (size_t k = 0; k < cfg.n; k++) g[k] = 0.25f * (float)k - 1.0f;
      push p = {.step = -1, .loss = NAN, .grad_norm = NAN, .grad = g};
      waiter w = {0};
      FUZZ_CHECK(instance_push(in, &p, &w, never_suspend, NULL) == PUSH_DONE);
      mem_free_floats(g, cfg.n);
    }
    FUZZ_CHECK(instance_export(in, &templates[i]) == 0);
    instance_unref(in);
    mem_free_floats(params, cfg.n);
    instance_cfg_free(&cfg);
  }
}

static long ref_first_bad(const float *v, size_t n) {
  for (size_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, &v[i], 4);
    if ((u & 0x7f800000u) == 0x7f800000u) return (long)i;
  }
  return -1;
}

static void check_scan(const float *v, size_t n) {
  size_t where = (size_t)-1;
  long bad = ref_first_bad(v, n);
  int ok = optim_all_finite(v, n, &where);
  FUZZ_CHECK(ok == (bad < 0), "optim_all_finite says %d, the reference finds index %ld", ok, bad);
  if (bad >= 0) FUZZ_CHECK(where == (size_t)bad, "first bad at %zu, the reference says %ld", where, bad);
}

/* The body as a binary push with sparse tensors (see the invariants above). */
static void check_sparse(int dtype, const uint8_t *body, size_t len) {
  static tensor T[3];
  memset(T, 0, sizeof T);
  snprintf(T[0].name, sizeof T[0].name, "W");
  T[0].ndim = 1, T[0].shape[0] = T[0].count = 3;
  snprintf(T[1].name, sizeof T[1].name, "emb");
  T[1].ndim = 2, T[1].shape[0] = T[1].vrows = 1000, T[1].shape[1] = T[1].dim = 2, T[1].sparse = true, T[1].offset = 3;
  snprintf(T[2].name, sizeof T[2].name, "b");
  T[2].ndim = 1, T[2].shape[0] = T[2].count = 1, T[2].offset = 3;
  instance_layout l = {.name = "s", .n = 4, .ntensors = 3, .tensors = T};
  char *buf = mem_alloc_big(len + 1); /* aligned and writable, as a request body */
  memcpy(buf, body, len);
  push p = {0};
  codec_push_bufs b = {0};
  derr e = {0};
  int rc = codec_push_binary(&l, NULL, dtype, buf, len, &p, &b, &e);
  if (rc < 0) {
    FUZZ_CHECK(rc == -E_BAD_LENGTH || rc == -E_BAD_VALUE, "code %d: %s", rc, e.msg);
    FUZZ_CHECK(!b.grad && !b.rows && !p.grad && !p.rows, "a refused body left something behind");
  } else {
    for (uint64_t i = 0; i < p.rows[0].k; i++) FUZZ_CHECK(p.rows[0].rows[i] < 1000, "an id >= V was accepted");
    size_t n = codec_push_reply_size(&l, p.rows, dtype);
    FUZZ_CHECK(n == len, "the reply of an accepted body is %zu bytes, the body %zu", n, len);
    char *out = mem_alloc_big(n + 1);
    codec_push_reply_write(&l, p.grad, p.rows, dtype, out);
    /* float32 mirrors the body exactly; half types too (widening then narrowing is exact) except NaN payloads */
    if (dtype == DTYPE_FLOAT32) FUZZ_CHECK(!memcmp(out, body, n), "the reply does not mirror the body");
    mem_free_big(out, n + 1);
    codec_push_bufs_release(&b, NULL);
  }
  mem_free_big(buf, len + 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fixtures();
  if (size == 0) return 0;
  check_sparse(data[0] % 3, data + 1, size - 1);
  const instance_state *t = &templates[data[0] % NSPECS];
  const uint8_t *body = data + 1;
  size_t len = size - 1, nf = len / 4, n = t->cfg.n;

  float *v = mem_alloc_floats(nf); /* aligned, as the pooled body buffer is */
  memcpy(v, body, nf * 4);
  check_scan(v, nf);
  if (nf > 1) check_scan(v + 1, nf - 1);
  mem_free_floats(v, nf);

  if (len != n * sizeof(float)) return 0; /* h_step answers 400 bad_length */

  instance *in = instance_from_state(t, &env);
  FUZZ_CHECK(in);
  float *g = mem_alloc_floats(n);
  memcpy(g, body, len);
  long bad = ref_first_bad(g, n);
  push p = {.step = -1, .loss = NAN, .grad_norm = NAN, .grad = g, .emit = true};
  waiter w = {0};
  int status = instance_push(in, &p, &w, never_suspend, NULL);
  instance_state after;
  FUZZ_CHECK(instance_export(in, &after) == 0);
  char why[200];
  if (bad >= 0) {
    FUZZ_CHECK(status == PUSH_FAILED && w.code == E_NOT_FINITE, "status %d code %d", status, w.code);
    size_t k = 0;
    while (k + 1 < t->cfg.ntensors && (size_t)bad >= t->cfg.tensors[k + 1].offset) k++;
    char want[128];
    snprintf(want, sizeof want, "grads.%s[%zu]", t->cfg.tensors[k].name, (size_t)bad - t->cfg.tensors[k].offset);
    FUZZ_CHECK(strstr(w.err.msg, want), "message '%s' does not name %s", w.err.msg, want);
    FUZZ_CHECK(fz_state_equal(t, &after, why, sizeof why) && after.have == t->have && after.fresh == t->fresh,
               "a refused push changed the instance: %s", why);
  } else {
    FUZZ_CHECK(status == PUSH_DONE && w.code == 0 && w.step == t->step + 1, "status %d code %d (%s)", status, w.code,
               w.err.msg);
    FUZZ_CHECK(after.step == t->step + 1);
    FUZZ_CHECK(!memcmp(g, after.params, n * sizeof(float)), "the reply is not the new parameters");
    /* the same step by hand, in two slices */
    const instance_cfg *c = &t->cfg;
    float *p1 = mem_alloc_floats(n), *g1 = mem_alloc_floats(n), *b1[OPTIM_NBUF] = {0};
    memcpy(p1, t->params, n * sizeof(float));
    memcpy(g1, body, len);
    for (int k = 0; k < OPTIM_NBUF; k++)
      if (t->have & (1u << k)) {
        b1[k] = mem_alloc_floats(n);
        memcpy(b1[k], t->buf[k], n * sizeof(float));
      }
    float coef = optim_clip_coef(c->clip_grad_norm, sqrt(optim_sumsq(g1, n)));
    double lr = schedule_lr(&c->sched, c->hyper.lr, t->step);
    optim_plan pl;
    optim_plan_init(&pl, c->alg, &c->hyper, lr, t->step + 1, t->fresh, coef);
    size_t cut = (size_t)data[0] / NSPECS % (n + 1);
    float *b2[OPTIM_NBUF] = {0};
    for (int k = 0; k < OPTIM_NBUF; k++) b2[k] = b1[k] ? b1[k] + cut : NULL;
    optim_apply(&pl, p1, g1, b1, cut, true);
    optim_apply(&pl, p1 + cut, g1 + cut, b2, n - cut, true);
    FUZZ_CHECK(!memcmp(p1, after.params, n * sizeof(float)), "sliced kernel (cut %zu) differs in params", cut);
    FUZZ_CHECK(!memcmp(g1, g, n * sizeof(float)), "sliced kernel (cut %zu) differs in the reply", cut);
    unsigned need = optim_buffers(c->alg, &c->hyper);
    for (int k = 0; k < OPTIM_NBUF; k++) {
      if (!(need & (1u << k))) continue;
      FUZZ_CHECK(b1[k] && !memcmp(b1[k], after.buf[k], n * sizeof(float)), "sliced kernel differs in %s",
                 optim_buf_name(k));
    }
    mem_free_floats(p1, n);
    mem_free_floats(g1, n);
    for (int k = 0; k < OPTIM_NBUF; k++) mem_free_floats(b1[k], n);
  }
  instance_state_free(&after);
  mem_free_floats(g, n);
  instance_unref(in);
  return 0;
}
