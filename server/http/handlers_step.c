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

#include "codec_half.h"
#include "codec_push.h"
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

/* The media type of a binary reply in dtype. */
static const char *binary_type(int dtype) {
  switch (dtype) {
  case DTYPE_BFLOAT16: return "application/octet-stream; dtype=bfloat16";
  case DTYPE_FLOAT16: return "application/octet-stream; dtype=float16";
  default: return "application/octet-stream";
  }
}

/* A sparse tensor's rows: {"rows":[...],"values":[[D floats],...]}. */
static void rows_json(jbuf *b, const push_rows *pr, size_t D) {
  jbuf_puts(b, "{\"rows\":");
  jbuf_u64s(b, pr->rows, (size_t)pr->k);
  jbuf_puts(b, ",\"values\":");
  jbuf_float_rows(b, pr->vals, (size_t)pr->k * D, D);
  jbuf_puts(b, "}");
}

/* {"step":N,"params":{"W":[...],...}} into b.  A sparse tensor gives the
 * rows of the push (rows), or without them (a pull) how many rows it holds. */
static void params_json(jbuf *b, instance *in, const float *v, const push_rows *rows, uint64_t step) {
  const instance_layout *c = instance_layout_of(in);
  jbuf_printf(b, "{\"step\":%llu,\"params\":{", (unsigned long long)step);
  for (size_t i = 0, j = 0; i < c->ntensors; i++) {
    const tensor *t = &c->tensors[i];
    jbuf_printf(b, "%s\"%s\":", i ? "," : "", t->name); /* names need no escaping */
    if (!t->sparse) jbuf_floats(b, v + t->offset, t->count);
    else if (rows) rows_json(b, &rows[j++], t->dim);
    else jbuf_printf(b, "{\"sparse\":true,\"rows_held\":%llu}", (unsigned long long)instance_rows_held(in, (int)i));
  }
  jbuf_puts(b, "}}\n");
}

/* The binary reply of a push with sparse tensors (the push's layout, in the
 * Accept dtype), encoded from the new dense parameters v and r->prows. */
static enum MHD_Result reply_rows_binary(request *r, instance *in, const float *v, uint64_t step, uint64_t t0) {
  const instance_layout *l = instance_layout_of(in);
  size_t len = codec_push_reply_size(l, r->prows, r->accept_dtype), cap;
  char *out = bufpool_get(r->app->pool, len + 1, &cap);
  if (!out) return reply_error(r, E_QUOTA, NULL);
  codec_push_reply_write(l, v, r->prows, r->accept_dtype, out);
  r->encode_ms = ms_since(t0);
  return reply_pooled_step(r, MHD_HTTP_OK, out, len, cap, binary_type(r->accept_dtype), (int64_t)step);
}

/* Replies with the parameters in buf (a pool buffer of cap bytes, taken):
 * binary replies send the buffer itself.  rows: the push's sparse tensors
 * (their new values), or NULL (a pull). */
static enum MHD_Result reply_params_buf(request *r, instance *in, float *buf, size_t cap, const push_rows *rows,
                                        uint64_t step) {
  uint64_t t0 = ns_now();
  size_t n = instance_layout_of(in)->n;
  if (r->accept_binary && rows) {
    enum MHD_Result ret = reply_rows_binary(r, in, buf, step, t0);
    bufpool_put(r->app->pool, buf, cap);
    return ret;
  }
  if (r->accept_binary) {
    codec_half_narrow(r->accept_dtype, buf, buf, n); /* in place; float32: nothing to do */
    r->encode_ms = ms_since(t0);
    return reply_pooled_step(r, MHD_HTTP_OK, buf, n * codec_half_size(r->accept_dtype), cap,
                             binary_type(r->accept_dtype), (int64_t)step);
  }
  jbuf b;
  jbuf_init(&b, r->app->pool, n * 11 + 256);
  params_json(&b, in, buf, rows, step);
  bufpool_put(r->app->pool, buf, cap);
  r->encode_ms = ms_since(t0);
  return reply_jbuf(r, MHD_HTTP_OK, &b, "application/json");
}

/* The pushed rows' values now (a replay, a sync round), into r->prows. */
static void read_pushed_rows(request *r, instance *in) {
  const instance_layout *l = instance_layout_of(in);
  for (size_t i = 0, j = 0; r->prows && i < l->ntensors; i++) {
    if (!l->tensors[i].sparse) continue;
    push_rows *pr = &r->prows[j++];
    if (pr->k) instance_read_rows(in, (int)i, pr->rows, (size_t)pr->k, pr->vals);
  }
}

/* The pushed rows' values after a sync round's step (its copy: each sparse
 * tensor's k*D floats in creation order) into r->prows; without a copy, as
 * they are now. */
static void rows_of_round(request *r, instance *in, const psnap *rows) {
  if (!rows) {
    read_pushed_rows(r, in);
    return;
  }
  const instance_layout *l = instance_layout_of(in);
  size_t at = 0;
  for (size_t i = 0, j = 0; i < l->ntensors; i++) {
    if (!l->tensors[i].sparse) continue;
    push_rows *pr = &r->prows[j++];
    size_t nv = (size_t)pr->k * l->tensors[i].dim;
    if (at + nv <= rows->n) memcpy(pr->vals, rows->v + at, nv * sizeof(float));
    at += nv;
  }
}

static void unref_snap(void *cls) { psnap_unref(cls); }

/* Replies with a shared snapshot of the parameters (a sync round's). */
static enum MHD_Result reply_params_snap(request *r, instance *in, psnap *s) {
  uint64_t t0 = ns_now();
  if (r->prows) { /* the round's dense parameters, and the pushed rows after the round's step */
    rows_of_round(r, in, r->w.rows);
    if (r->accept_binary) return reply_rows_binary(r, in, s->v, s->step, t0);
    jbuf b;
    jbuf_init(&b, r->app->pool, s->n * 11 + 256);
    params_json(&b, in, s->v, r->prows, s->step);
    r->encode_ms = ms_since(t0);
    return reply_jbuf(r, MHD_HTTP_OK, &b, "application/json");
  }
  if (r->accept_binary && r->accept_dtype != DTYPE_FLOAT32) { /* narrowed into a buffer of its own */
    size_t cap;
    float *buf = bufpool_get(r->app->pool, s->n * sizeof(float) + 1, &cap);
    if (!buf) return reply_error(r, E_QUOTA, NULL);
    memcpy(buf, s->v, s->n * sizeof(float));
    return reply_params_buf(r, in, buf, cap, NULL, s->step);
  }
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
  params_json(&b, in, s->v, NULL, s->step);
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
  if (instance_layout_of(in)->mode == MODE_ASYNC && r->grad && !w->replayed) {
    float *g = r->grad;
    size_t cap = r->grad_cap;
    if (r->prows && r->grad_len && r->accept_binary && r->accept_dtype == DTYPE_FLOAT32) {
      /* the body, used in place, now holds the new values in the push's own layout */
      r->grad = NULL;
      r->prows = NULL; /* they pointed into it */
      return reply_pooled_step(r, MHD_HTTP_OK, g, r->grad_len, cap, binary_type(DTYPE_FLOAT32), (int64_t)w->step);
    }
    r->grad = NULL; /* the reply takes the buffer */
    return reply_params_buf(r, in, g, cap, r->prows, w->step);
  }
  /* a replay whose parameters were not kept (they are kept within a memory
   * budget): the current parameters, labelled with their own step, never
   * with the first reply's, so the worker's next push names the right step */
  size_t cap;
  float *buf = bufpool_get(r->app->pool, instance_layout_of(in)->n * sizeof(float) + 1, &cap);
  if (!buf) return reply_error(r, E_QUOTA, NULL);
  uint64_t now = instance_read(in, buf);
  read_pushed_rows(r, in);
  return reply_params_buf(r, in, buf, cap, r->prows, now);
}

/* The reply, and its decode/encode time for /metrics. */
static enum MHD_Result push_answer(request *r) {
  enum MHD_Result ret = push_reply(r);
  if (!r->w.code) instance_note_codec(r->in, r->decode_ms, r->encode_ms);
  return ret;
}

static enum MHD_Result step_resumed(request *r) { return push_answer(r); }

/* The body decoded into r->grad (and r->prows): float32 bodies are used in
 * place (the kernel reads them and writes the new values back, so the body
 * becomes the reply); the rest goes into pooled buffers (codec_push). */
static int decode_body(request *r, instance *in, push *p, int64_t *seq, derr *e) {
  codec_push_bufs b;
  int rc;
  if (r->content == CT_BINARY) {
    if ((rc = codec_push_binary(instance_layout_of(in), r->app->pool, r->dtype, r->body, r->len, p, &b, e)) < 0)
      return rc;
  } else if ((rc = codec_push_json(&r->doc, instance_layout_of(in), r->app->pool, p, seq, &b, e)) < 0) {
    return rc;
  }
  if (b.grad_in_body) { /* now owned as r->grad */
    r->grad_cap = r->cap;
    r->grad_len = r->len;
    r->body = NULL;
    r->cap = 0;
  } else {
    r->grad_cap = b.grad_cap;
  }
  r->grad = b.grad;
  r->rows_buf = b.rows;
  r->rows_cap = b.rows_cap;
  r->prows = p->rows;
  return 0;
}

/* A finite number in the query argument key (non-negative if nonneg), or
 * replies 400 bad_query. */
static handlers_flow arg_real(request *r, const char *key, bool nonneg, double *out) {
  const char *v = http_arg(r, key);
  if (!v) return HANDLERS_GO_ON;
  char *end;
  double x = strtod(v, &end);
  if (!*v || *end || !isfinite(x) || (nonneg && x < 0)) {
    derr e;
    derr_set(&e, E_BAD_QUERY, "?%s=%.40s: expected a %s number", key, v, nonneg ? "non-negative" : "finite");
    reply_error(r, E_BAD_QUERY, &e);
    return HANDLERS_REPLIED;
  }
  *out = x;
  return HANDLERS_GO_ON;
}

/* Query-string settings of a push (binary pushes carry everything here). */
static handlers_flow push_query(request *r, push *p, int64_t *seq) {
  int64_t v;
  bool given;
  const char *worker = http_arg(r, "worker");
  if (worker) p->worker = worker;
  if (handlers_arg_int(r, "step", 0, INT64_MAX / 2, &v, &given) == HANDLERS_REPLIED) return HANDLERS_REPLIED;
  if (given) p->step = v;
  if (handlers_arg_int(r, "seq", 0, INT64_MAX / 2, &v, &given) == HANDLERS_REPLIED) return HANDLERS_REPLIED;
  if (given) *seq = v;
  if (arg_real(r, "loss", false, &p->loss) == HANDLERS_REPLIED ||
      arg_real(r, "grad_norm", true, &p->grad_norm) == HANDLERS_REPLIED)
    return HANDLERS_REPLIED;
  const char *params = http_arg(r, "params");
  if (params && strcmp(params, "none") && strcmp(params, "all")) {
    derr e;
    derr_set(&e, E_BAD_QUERY, "?params=%.40s: expected none or all", params);
    reply_error(r, E_BAD_QUERY, &e);
    return HANDLERS_REPLIED;
  }
  r->want_params = !(params && !strcmp(params, "none"));
  return HANDLERS_GO_ON;
}

enum MHD_Result h_step(request *r) {
  instance *in;
  if (handlers_find(r, &in) == HANDLERS_REPLIED) return http_replied(r);
  uint64_t t0 = ns_now();
  push p = {.step = -1, .loss = NAN, .grad_norm = NAN};
  int64_t seq = -1;
  derr e = {0};
  if (push_query(r, &p, &seq) == HANDLERS_REPLIED) return http_replied(r);
  if (p.worker && !spec_name_ok(p.worker)) {
    derr_set(&e, E_BAD_NAME, "?worker: names match [A-Za-z0-9][A-Za-z0-9._-]{0,63}");
    return reply_error(r, E_BAD_NAME, &e);
  }
  if (r->content != CT_BINARY && handlers_parse_body(r) == HANDLERS_REPLIED) return http_replied(r);
  int rc = decode_body(r, in, &p, &seq, &e);
  if (rc < 0) return reply_error(r, rc, &e);
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
  float *buf = bufpool_get(r->app->pool, instance_layout_of(in)->n * sizeof(float) + 1, &cap);
  if (!buf) return reply_error(r, E_QUOTA, NULL);
  uint64_t step = instance_read(in, buf);
  return reply_params_buf(r, in, buf, cap, NULL, step);
}

enum MHD_Result h_params(request *r) {
  instance *in;
  if (handlers_find(r, &in) == HANDLERS_REPLIED) return http_replied(r);
  int64_t want = -1, timeout = LONGPOLL_DEFAULT_MS;
  bool given;
  if (handlers_arg_int(r, "wait_for_step", 0, INT64_MAX / 2, &want, &given) == HANDLERS_REPLIED ||
      handlers_arg_int(r, "timeout_ms", 0, LONGPOLL_MAX_MS, &timeout, &given) == HANDLERS_REPLIED)
    return http_replied(r);
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
