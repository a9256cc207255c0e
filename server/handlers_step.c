/* handlers_step: pushing gradients (POST .../step) and pulling parameters
 * (GET .../params, with long-poll).
 *
 * Binary bodies are the gradient itself: the kernel reads the request
 * buffer in place and writes the new parameters back into it, and that same
 * buffer is the binary reply (one pass, no copy).  JSON gradients are decoded
 * straight into one pooled float buffer.  Sync pushes and long-polls suspend
 * the request; on_resume continuations answer them.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "handlers.h"
#include "http_reply.h"
#include "http_server.h"
#include "instance.h"
#include "mem.h"
#include "spec.h"

#define LONGPOLL_DEFAULT_MS 30000
#define LONGPOLL_MAX_MS 3600000

static double ms_since(uint64_t t0) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  uint64_t now = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
  return (double)(now - t0) / 1e6;
}

static uint64_t ns_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- encoding parameters ------------------------------------------------------- */

/* {"step":N,"params":{"W":[...],...}} into b. */
static void params_json(jbuf *b, const instance_cfg *c, const float *v, uint64_t step) {
  jbuf_printf(b, "{\"step\":%llu,\"params\":{", (unsigned long long)step);
  for (size_t i = 0; i < c->ntensors; i++) {
    const tensor *t = &c->tensors[i];
    jbuf_printf(b, "%s\"%s\":", i ? "," : "", t->name); /* names need no escaping */
    jbuf_floats(b, v + t->offset, t->count);
  }
  jbuf_puts(b, "}}\n");
}

/* Replies with the parameters in buf (a pool buffer of cap bytes, taken):
 * binary replies send the buffer itself. */
static enum MHD_Result reply_params_buf(request *r, instance *in, float *buf, size_t cap, uint64_t step) {
  uint64_t t0 = ns_now();
  size_t n = in->cfg.n;
  if (r->accept_binary) {
    r->encode_ms = ms_since(t0);
    return reply_pooled_step(r, MHD_HTTP_OK, buf, n * sizeof(float), cap, "application/octet-stream", (int64_t)step);
  }
  jbuf b;
  jbuf_init(&b, r->app->pool, n * 11 + 256);
  params_json(&b, &in->cfg, buf, step);
  bufpool_put(r->app->pool, buf, cap);
  r->encode_ms = ms_since(t0);
  return reply_jbuf(r, MHD_HTTP_OK, &b, "application/json");
}

static void unref_snap(void *cls) { psnap_unref(cls); }

/* Replies with a shared snapshot of the parameters (a sync round's). */
static enum MHD_Result reply_params_snap(request *r, instance *in, psnap *s) {
  uint64_t t0 = ns_now();
  if (r->accept_binary) {
    psnap_ref(s);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer_with_free_callback_cls(s->n * sizeof(float), s->v, unref_snap, s);
    if (!resp) {
      psnap_unref(s);
      return MHD_NO;
    }
    reply_step_header(resp, s->step);
    r->encode_ms = ms_since(t0);
    return reply_queue(r, MHD_HTTP_OK, resp, "application/octet-stream");
  }
  jbuf b;
  jbuf_init(&b, r->app->pool, s->n * 11 + 256);
  params_json(&b, &in->cfg, s->v, s->step);
  r->encode_ms = ms_since(t0);
  return reply_jbuf(r, MHD_HTTP_OK, &b, "application/json");
}

static enum MHD_Result reply_step_only(request *r, uint64_t step) {
  if (r->accept_binary) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!resp) return MHD_NO;
    reply_step_header(resp, step);
    return reply_queue(r, MHD_HTTP_OK, resp, "application/octet-stream");
  }
  return reply_json(r, MHD_HTTP_OK, json_pack("{s:I}", "step", (json_int_t)step));
}

/* ---- step ------------------------------------------------------------------------ */

static enum MHD_Result push_error(request *r, const waiter *w) {
  int code = w->code;
  if (code == E_STALE || code == E_STEP_AHEAD || code == E_ALREADY_PUSHED || code == E_TIMEOUT)
    return reply_error_step(r, code, &w->err, w->step);
  return reply_error(r, code, &w->err);
}

/* The outcome of a push that was applied, joined a closed round, or replayed. */
static enum MHD_Result push_reply(request *r) {
  instance *in = r->in;
  waiter *w = &r->w;
  if (w->code) return push_error(r, w);
  r->apply_ms = w->apply_ms;
  if (!r->want_params) return reply_step_only(r, w->step);
  if (w->snap) return reply_params_snap(r, in, w->snap);
  if (in->cfg.mode == MODE_ASYNC && r->grad && !w->replayed) {
    float *g = r->grad;
    size_t cap = r->grad_cap;
    r->grad = NULL; /* the reply takes the buffer */
    if (g == (float *)r->body) r->body = NULL;
    return reply_params_buf(r, in, g, cap, w->step);
  }
  /* a replay whose parameters were not kept (they are kept within a memory
   * budget): the current parameters, labelled with their own step, never
   * with the first reply's, so the worker's next push names the right step */
  size_t cap;
  float *buf = bufpool_get(r->app->pool, in->cfg.n * sizeof(float) + 1, &cap);
  if (!buf) return reply_error(r, E_QUOTA, NULL);
  uint64_t now = instance_read(in, buf);
  return reply_params_buf(r, in, buf, cap, now);
}

/* The reply, and its decode/encode time for /metrics. */
static enum MHD_Result push_answer(request *r) {
  enum MHD_Result ret = push_reply(r);
  if (!r->w.code) instance_note_codec(r->in, r->decode_ms, r->encode_ms);
  return ret;
}

static enum MHD_Result step_resumed(request *r) { return push_answer(r); }

/* Query-string settings of a push (binary pushes carry everything here). */
static int push_query(request *r, push *p, int64_t *seq, enum MHD_Result *ret) {
  int64_t v;
  int rc;
  const char *worker = http_arg(r, "worker");
  if (worker) p->worker = worker;
  if ((rc = handlers_query_int(r, "step", 0, INT64_MAX / 2, &v, ret)) < 0) return -1;
  if (rc) p->step = v;
  if ((rc = handlers_query_int(r, "seq", 0, INT64_MAX / 2, &v, ret)) < 0) return -1;
  if (rc) *seq = v;
  const char *loss = http_arg(r, "loss");
  if (loss) {
    char *end;
    double x = strtod(loss, &end);
    if (!*loss || *end || !isfinite(x)) {
      derr e;
      derr_set(&e, E_BAD_QUERY, "?loss=%.40s: expected a finite number", loss);
      *ret = reply_error(r, E_BAD_QUERY, &e);
      return -1;
    }
    p->loss = x;
  }
  const char *gn = http_arg(r, "grad_norm");
  if (gn) {
    char *end;
    double x = strtod(gn, &end);
    if (!*gn || *end || !isfinite(x) || x < 0) {
      derr e;
      derr_set(&e, E_BAD_QUERY, "?grad_norm=%.40s: expected a non-negative number", gn);
      *ret = reply_error(r, E_BAD_QUERY, &e);
      return -1;
    }
    p->grad_norm = x;
  }
  const char *params = http_arg(r, "params");
  if (params && strcmp(params, "none") && strcmp(params, "all")) {
    derr e;
    derr_set(&e, E_BAD_QUERY, "?params=%.40s: expected none or all", params);
    *ret = reply_error(r, E_BAD_QUERY, &e);
    return -1;
  }
  r->want_params = !(params && !strcmp(params, "none"));
  return 0;
}

/* The JSON body of a push: {"worker","step","grads","loss","seq","grad_norm"}. */
static int push_json(request *r, instance *in, push *p, int64_t *seq, derr *e) {
  json_t *root = r->doc.root;
  if (!json_is_object(root)) return derr_set(e, E_BAD_REQUEST, "the body must be a JSON object");
  const char *k;
  json_t *v;
  json_object_foreach(root, k, v) {
    if (strcmp(k, "worker") && strcmp(k, "step") && strcmp(k, "grads") && strcmp(k, "loss") && strcmp(k, "seq") &&
        strcmp(k, "grad_norm"))
      return derr_set(e, E_BAD_REQUEST, "%.64s: unknown field (worker, step, grads, loss, seq, grad_norm)", k);
  }
  if ((v = json_object_get(root, "worker")) && !json_is_null(v)) {
    if (!json_is_string(v) || !spec_name_ok(json_string_value(v)))
      return derr_set(e, E_BAD_NAME, "worker: names match [A-Za-z0-9][A-Za-z0-9._-]{0,63}");
    p->worker = json_string_value(v);
  }
  if ((v = json_object_get(root, "step")) && !json_is_null(v)) {
    if (!json_is_integer(v) || json_integer_value(v) < 0)
      return derr_set(e, E_BAD_REQUEST, "step: expected a non-negative integer");
    p->step = json_integer_value(v);
  }
  if ((v = json_object_get(root, "seq")) && !json_is_null(v)) {
    if (!json_is_integer(v) || json_integer_value(v) < 0)
      return derr_set(e, E_BAD_REQUEST, "seq: expected a non-negative integer");
    *seq = json_integer_value(v);
  }
  if ((v = json_object_get(root, "loss")) && !json_is_null(v)) {
    if (!json_is_number(v)) return derr_set(e, E_BAD_REQUEST, "loss: expected a number");
    p->loss = json_number_value(v);
  }
  if ((v = json_object_get(root, "grad_norm")) && !json_is_null(v)) {
    if (!json_is_number(v) || json_number_value(v) < 0)
      return derr_set(e, E_BAD_REQUEST, "grad_norm: expected a non-negative number");
    p->grad_norm = json_number_value(v);
  }
  json_t *grads = json_object_get(root, "grads");
  if (!grads) return derr_set(e, E_BAD_REQUEST, "grads: required");
  const instance_cfg *c = &in->cfg;
  r->grad = bufpool_get(r->app->pool, c->n * sizeof(float) + 1, &r->grad_cap);
  if (!r->grad) return derr_set(e, E_QUOTA, "not enough memory for the gradient");
  if (json_is_object(grads)) {
    json_object_foreach(grads, k, v) {
      if (instance_cfg_tensor(c, k) < 0) return derr_set(e, E_UNKNOWN_TENSOR, "grads.%.64s: no tensor of that name", k);
    }
    for (size_t i = 0; i < c->ntensors; i++) {
      const tensor *t = &c->tensors[i];
      char what[96];
      snprintf(what, sizeof what, "grads.%s", t->name);
      json_t *x = json_object_get(grads, t->name);
      if (!x) return derr_set(e, E_BAD_LENGTH, "%s: missing (every tensor needs its gradient)", what);
      size_t shape[TENSOR_MAXDIM];
      for (int d = 0; d < t->ndim; d++) shape[d] = (size_t)t->shape[d];
      int rc = jdoc_floats(&r->doc, x, r->grad + t->offset, t->count, shape, t->ndim, what, e);
      if (rc < 0) return rc;
    }
    return 0;
  }
  if (json_is_array(grads) || json_is_string(grads))
    return jdoc_floats(&r->doc, grads, r->grad, c->n, NULL, 0, "grads", e);
  return derr_set(e, E_BAD_REQUEST, "grads: expected an object by tensor name or one flat array");
}

enum MHD_Result h_step(request *r) {
  enum MHD_Result ret = MHD_NO;
  instance *in = handlers_instance(r, &ret);
  if (!in) return ret;
  uint64_t t0 = ns_now();
  push p = {.step = -1, .loss = NAN, .grad_norm = NAN};
  int64_t seq = -1;
  derr e = {0};
  if (push_query(r, &p, &seq, &ret) < 0) return ret;
  if (p.worker && !spec_name_ok(p.worker)) {
    derr_set(&e, E_BAD_NAME, "?worker: names match [A-Za-z0-9][A-Za-z0-9._-]{0,63}");
    return reply_error(r, E_BAD_NAME, &e);
  }
  size_t n = in->cfg.n;
  if (r->content == CT_BINARY) {
    if (r->len != n * sizeof(float)) {
      derr_set(&e, E_BAD_LENGTH, "binary body: expected %zu bytes (%zu float32), got %zu", n * sizeof(float), n,
               r->len);
      return reply_error(r, E_BAD_LENGTH, &e);
    }
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    for (size_t i = 0; i < n; i++) {
      uint32_t u;
      memcpy(&u, r->body + 4 * i, 4);
      u = __builtin_bswap32(u);
      memcpy(r->body + 4 * i, &u, 4);
    }
#endif
    r->grad = (float *)r->body;
    r->grad_cap = r->cap;
    r->body = NULL; /* now owned as r->grad */
    r->cap = 0;
  } else {
    if (handlers_json_body(r, &ret) < 0) return ret;
    int rc = push_json(r, in, &p, &seq, &e);
    if (rc < 0) return reply_error(r, rc, &e);
  }
  p.grad = r->grad;
  char key[IDEM_KEY_MAX + 1];
  const char *hk = http_header(r, "Idempotency-Key");
  if (hk) {
    size_t kl = strlen(hk);
    if (kl == 0 || kl > 100) {
      derr_set(&e, E_BAD_REQUEST, "Idempotency-Key: 1 to 100 characters");
      return reply_error(r, E_BAD_REQUEST, &e);
    }
    snprintf(key, sizeof key, "k:%s", hk);
    p.key = key;
  } else if (seq >= 0) {
    if (!p.worker) {
      derr_set(&e, E_BAD_REQUEST, "seq: needs a worker name (the key is worker plus seq)");
      return reply_error(r, E_BAD_REQUEST, &e);
    }
    snprintf(key, sizeof key, "s:%s:%lld", p.worker, (long long)seq);
    p.key = key;
  }
  p.emit = r->want_params;
  r->decode_ms = (double)(ns_now() - t0) / 1e6;
  r->w.wake = http_wake;
  r->w.arg = r;
  int status = instance_push(in, &p, &r->w, http_suspend, r);
  if (status == PUSH_WAITING) {
    r->on_resume = step_resumed;
    return MHD_YES;
  }
  return push_answer(r);
}

/* ---- params --------------------------------------------------------------------- */

static enum MHD_Result params_now(request *r) {
  instance *in = r->in;
  if (r->w.code) return reply_error(r, r->w.code, &r->w.err);
  size_t cap;
  float *buf = bufpool_get(r->app->pool, in->cfg.n * sizeof(float) + 1, &cap);
  if (!buf) return reply_error(r, E_QUOTA, NULL);
  uint64_t step = instance_read(in, buf);
  return reply_params_buf(r, in, buf, cap, step);
}

enum MHD_Result h_params(request *r) {
  enum MHD_Result ret = MHD_NO;
  instance *in = handlers_instance(r, &ret);
  if (!in) return ret;
  int64_t want = -1, timeout = LONGPOLL_DEFAULT_MS;
  if (handlers_query_int(r, "wait_for_step", 0, INT64_MAX / 2, &want, &ret) < 0) return ret;
  if (handlers_query_int(r, "timeout_ms", 0, LONGPOLL_MAX_MS, &timeout, &ret) < 0) return ret;
  const char *worker = http_arg(r, "worker");
  if (worker) instance_touch_worker(in, worker);
  r->w.code = 0;
  if (want < 0 || timeout == 0) return params_now(r);
  r->w.wake = http_wake;
  r->w.arg = r;
  if (instance_wait_step(in, &r->w, (uint64_t)want, http_suspend, r)) return params_now(r);
  r->on_resume = params_now;
  http_arm_timeout(r, timers_now_ms() + (uint64_t)timeout);
  return MHD_YES;
}
