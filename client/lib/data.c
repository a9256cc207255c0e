/* data: the hot path: pushing gradients and pulling parameters in the
 * binary format (little-endian float32, every tensor in creation order), on
 * one daemon or fanned out to every shard at once; and ask/tell for random
 * search.  No JSON on the hot path: bodies are sent from the caller's
 * buffer and replies land in the caller's buffer.  Runs on the handle's
 * thread.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
static void swap32(float *v, size_t n) {
  for (size_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, &v[i], 4);
    u = __builtin_bswap32(u);
    memcpy(&v[i], &u, 4);
  }
}
#endif

/* Appends "&key=value" (or "?key=value" first) to a path. */
static int query(char *q, size_t cap, size_t *len, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int query(char *q, size_t cap, size_t *len, const char *key, const char *fmt, ...) {
  int n = snprintf(q + *len, cap - *len, "%c%s=", *len ? '&' : '?', key);
  if (n < 0 || (size_t)n >= cap - *len) return -1;
  *len += (size_t)n;
  va_list ap;
  va_start(ap, fmt);
  n = vsnprintf(q + *len, cap - *len, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= cap - *len) return -1;
  *len += (size_t)n;
  return 0;
}

static int bad_length(descent_error *err, size_t want, size_t got, const char *what) {
  descent__fail(err, DESCENT_EINVAL, "%s: the instance has %zu floats, the buffer %zu", what, want, got);
  descent__set_code(err, "bad_length");
  return DESCENT_EINVAL;
}

/* After an error reply the cached layout may be why (the instance was
 * deleted or recreated elsewhere): read it again next time. */
static void forget_on(descent *d, const char *name, const descent_error *e) {
  if (e && (!strcmp(e->code, "unknown_instance") || !strcmp(e->code, "bad_length")))
    descent__layout_forget(d, name);
}

/* The outcome of a fan-out: 0 with steps[] filled, or the error.  A shard
 * that refused a push as ahead of it or stale while others took it means
 * the shards disagree: DESCENT_ESHARDS with every step. */
static int gather(descent *d, const char *name, descent__req *r, size_t s, const descent__layout *l,
                  bool want_body, size_t vsize, int64_t *steps, descent_error *err) {
  int rc = 0, first = 0, ok = 0;
  bool step_refusal = false;
  descent_error e0 = {0};
  for (size_t k = 0; k < s; k++) {
    descent_error e = {0};
    int64_t es = -1;
    int x = descent__req_result(d, &r[k], &e, &es);
    if (x == 0) {
      ok++;
      steps[k] = r[k].step;
      if (want_body && (!r[k].binary || r[k].target_len != (l->lo[k + 1] - l->lo[k]) * vsize)) {
        x = descent__fail(&e, DESCENT_EPROTO, "shard %zu sent %zu bytes of parameters, expected %zu", k,
                          r[k].target_len, (l->lo[k + 1] - l->lo[k]) * vsize);
      } else if (steps[k] < 0) {
        x = descent__fail(&e, DESCENT_EPROTO, "shard %zu sent no Descent-Step header", k);
      }
    } else {
      steps[k] = es;
      if (!strcmp(e.code, "step_ahead") || !strcmp(e.code, "stale_gradient")) step_refusal = es >= 0;
    }
    if (x < 0 && !first) {
      first = x;
      e0 = e;
    }
  }
  if (!first) return 0;
  if (step_refusal && ok) {
    bool all = true;
    for (size_t k = 0; k < s; k++) all &= steps[k] >= 0;
    if (all) return descent__mismatch(d, name, steps, err);
  }
  forget_on(d, name, &e0);
  if (err) *err = e0;
  rc = first;
  return rc;
}

/* ---- push ----------------------------------------------------------------------- */

static int push_query(char *q, size_t cap, const descent_push_opts *o, bool want_params, double norm,
                      descent_error *err) {
  size_t len = 0;
  int bad = 0;
  q[0] = 0;
  if (o && o->worker) {
    if (!descent__name_ok(o->worker)) {
      descent__fail(err, DESCENT_EINVAL, "worker: '%.80s' does not match [A-Za-z0-9][A-Za-z0-9._-]{0,63}", o->worker);
      descent__set_code(err, "bad_name");
      return DESCENT_EINVAL;
    }
    bad |= query(q, cap, &len, "worker", "%s", o->worker);
  }
  if (o && o->step >= 0) bad |= query(q, cap, &len, "step", "%" PRId64, o->step);
  if (o && isfinite(o->loss)) bad |= query(q, cap, &len, "loss", "%.17g", o->loss);
  if (o && o->seq >= 0) bad |= query(q, cap, &len, "seq", "%" PRId64, o->seq);
  if (!want_params) bad |= query(q, cap, &len, "params", "%s", "none");
  if (isfinite(norm)) bad |= query(q, cap, &len, "grad_norm", "%.17g", norm);
  if (bad) return descent__fail(err, DESCENT_EINVAL, "push: the query string is too long");
  if (o && o->idempotency_key) {
    size_t kl = strlen(o->idempotency_key);
    if (kl == 0 || kl > 100 || strpbrk(o->idempotency_key, "\r\n"))
      return descent__fail(err, DESCENT_EINVAL, "idempotency_key: 1 to 100 characters on one line");
  }
  return 0;
}

/* The global norm of a gradient of n dtype values (sharded clipping). */
static int global_norm(const void *grads, size_t n, descent_dtype dtype, double *norm, descent_error *err) {
  if (dtype == DESCENT_FLOAT32) {
    *norm = descent_grad_norm(grads, n);
    return 0;
  }
  float *wide = malloc(n * sizeof(float) + 1);
  if (!wide) return descent__fail(err, DESCENT_ENOMEM, NULL);
  descent_from_dtype(dtype, grads, wide, n);
  *norm = descent_grad_norm(wide, n);
  free(wide);
  return 0;
}

int descent_push(descent *d, const char *name, const float *grads, size_t n, const descent_push_opts *opts,
                 float *params, uint64_t *step, descent_error *err) {
  return descent_push_dtype(d, name, grads, n, DESCENT_FLOAT32, opts, params, step, err);
}

int descent_push_dtype(descent *d, const char *name, const void *grads, size_t n, descent_dtype dtype,
                       const descent_push_opts *opts, void *params, uint64_t *step, descent_error *err) {
  if (!d || (!grads && n)) return descent__fail(err, DESCENT_EINVAL, "push: NULL handle or gradient");
  if (dtype < DESCENT_FLOAT32 || dtype > DESCENT_FLOAT16) return descent__fail(err, DESCENT_EINVAL, "push: unknown dtype");
  int rc = descent__check_name(name, err);
  if (rc < 0) return rc;
  size_t s = d->nshards, es = descent__dtype_size(dtype);
  const descent__layout *l = NULL;
  double norm = NAN;
  if (s > 1) {
    if ((rc = descent__layout_get(d, name, false, &l, err)) < 0) return rc;
    if (n != l->n) return bad_length(err, l->n, n, "push");
    /* the global norm, for clipping and history */
    if (!l->sync && (rc = global_norm(grads, n, dtype, &norm, err)) < 0) return rc;
  }
  char q[400];
  if ((rc = push_query(q, sizeof q, opts, params != NULL, norm, err)) < 0) return rc;
  const char *body = grads;
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  float *swapped = NULL;
  if (dtype == DESCENT_FLOAT32) {
    if (!(swapped = malloc(n * sizeof(float) + 1))) return descent__fail(err, DESCENT_ENOMEM, NULL);
    memcpy(swapped, grads, n * sizeof(float));
    swap32(swapped, n);
    body = (const char *)swapped;
  }
#endif
  descent__req *r = descent__reqs_new(s);
  int64_t steps[DESCENT__MAX_SHARDS];
  if (!r) {
    rc = descent__fail(err, DESCENT_ENOMEM, NULL);
    goto out;
  }
  for (size_t k = 0; k < s; k++) {
    size_t lo = l ? l->lo[k] : 0, hi = l ? l->lo[k + 1] : n;
    descent__req_init(&r[k], k, "POST");
    if ((rc = descent__req_path(&r[k], err, "/v1/optimizers/%s/step%s", name, q)) < 0) goto out;
    r[k].body = body + lo * es;
    r[k].body_len = (hi - lo) * es;
    r[k].content_type = descent__dtype_type(dtype);
    r[k].accept_binary = true;
    r[k].accept_type = dtype == DESCENT_FLOAT32 ? NULL : descent__dtype_type(dtype);
    r[k].idem_key = opts ? opts->idempotency_key : NULL;
    if (params) {
      r[k].target = (char *)params + lo * es;
      r[k].target_cap = (hi - lo) * es;
    } else {
      r[k].sink = true;
    }
  }
  if ((rc = descent__perform(d, r, s, err)) < 0) goto out;
  if (s == 1) {
    if ((rc = descent__req_result(d, &r[0], err, NULL)) < 0) goto out;
    if (params && (!r[0].binary || r[0].target_len != n * es)) {
      rc = descent__fail(err, DESCENT_EPROTO, "the reply holds %zu bytes of parameters, expected %zu",
                         r[0].target_len, n * es);
      goto out;
    }
    if (r[0].step < 0) {
      rc = descent__fail(err, DESCENT_EPROTO, "the reply has no Descent-Step header");
      goto out;
    }
    if (step) *step = (uint64_t)r[0].step;
  } else {
    uint64_t st;
    if ((rc = gather(d, name, r, s, l, params != NULL, es, steps, err)) < 0) goto out;
    if ((rc = descent__settle(d, name, l, steps, params, dtype, &st, err)) < 0) goto out;
    if (step) *step = st;
  }
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  if (params && dtype == DESCENT_FLOAT32) swap32(params, n);
#endif
out:
  descent__reqs_free(r, s);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  free(swapped);
#endif
  return rc;
}

/* ---- pull ----------------------------------------------------------------------- */

int descent_pull(descent *d, const char *name, float *params, size_t n, int64_t wait_for_step, long timeout_ms,
                 uint64_t *step, descent_error *err) {
  return descent_pull_dtype(d, name, params, n, DESCENT_FLOAT32, wait_for_step, timeout_ms, step, err);
}

int descent_pull_dtype(descent *d, const char *name, void *params, size_t n, descent_dtype dtype,
                       int64_t wait_for_step, long timeout_ms, uint64_t *step, descent_error *err) {
  if (!d || (!params && n)) return descent__fail(err, DESCENT_EINVAL, "pull: NULL handle or buffer");
  if (dtype < DESCENT_FLOAT32 || dtype > DESCENT_FLOAT16) return descent__fail(err, DESCENT_EINVAL, "pull: unknown dtype");
  size_t es = descent__dtype_size(dtype);
  int rc = descent__check_name(name, err);
  if (rc < 0) return rc;
  if (wait_for_step >= 0 && timeout_ms < 0)
    return descent__fail(err, DESCENT_EINVAL, "pull: timeout_ms must not be negative");
  size_t s = d->nshards;
  const descent__layout *l = NULL;
  if (s > 1) {
    if ((rc = descent__layout_get(d, name, false, &l, err)) < 0) return rc;
    if (n != l->n) return bad_length(err, l->n, n, "pull");
  }
  char q[128] = "";
  if (wait_for_step >= 0)
    snprintf(q, sizeof q, "?wait_for_step=%" PRId64 "&timeout_ms=%ld", wait_for_step, timeout_ms);
  descent__req *r = descent__reqs_new(s);
  int64_t steps[DESCENT__MAX_SHARDS];
  if (!r) return descent__fail(err, DESCENT_ENOMEM, NULL);
  for (size_t k = 0; k < s; k++) {
    size_t lo = l ? l->lo[k] : 0, hi = l ? l->lo[k + 1] : n;
    descent__req_init(&r[k], k, "GET");
    if ((rc = descent__req_path(&r[k], err, "/v1/optimizers/%s/params%s", name, q)) < 0) goto out;
    r[k].accept_binary = true;
    r[k].accept_type = dtype == DESCENT_FLOAT32 ? NULL : descent__dtype_type(dtype);
    r[k].target = (char *)params + lo * es;
    r[k].target_cap = (hi - lo) * es;
    r[k].wait_ms = wait_for_step >= 0 ? timeout_ms : 0;
  }
  if ((rc = descent__perform(d, r, s, err)) < 0) goto out;
  if (s == 1) {
    if ((rc = descent__req_result(d, &r[0], err, NULL)) < 0) goto out;
    if (!r[0].binary || r[0].target_len % es) {
      rc = descent__fail(err, DESCENT_EPROTO, "the reply is not %s parameters",
                         dtype == DESCENT_FLOAT32 ? "float32" : "half-precision");
      goto out;
    }
    if (r[0].target_len != n * es) {
      rc = bad_length(err, r[0].target_len / es, n, "pull");
      goto out;
    }
    if (r[0].step < 0) {
      rc = descent__fail(err, DESCENT_EPROTO, "the reply has no Descent-Step header");
      goto out;
    }
    if (step) *step = (uint64_t)r[0].step;
  } else {
    uint64_t st;
    if ((rc = gather(d, name, r, s, l, true, es, steps, err)) < 0) goto out;
    if ((rc = descent__settle(d, name, l, steps, params, dtype, &st, err)) < 0) goto out;
    if (step) *step = st;
  }
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  if (dtype == DESCENT_FLOAT32) swap32(params, n);
#endif
out:
  descent__reqs_free(r, s);
  return rc;
}

/* ---- ask / tell ------------------------------------------------------------------ */

int descent_ask(descent *d, const char *name, float *x, size_t n, uint64_t *candidate, descent_error *err) {
  if (!d || (!x && n)) return descent__fail(err, DESCENT_EINVAL, "ask: NULL handle or buffer");
  int rc = descent__check_name(name, err);
  if (rc < 0) return rc;
  if (d->nshards > 1)
    return descent__fail(err, DESCENT_ENOTSUP, "ask: random search runs on one daemon, not sharded");
  descent__req r;
  descent__req_init(&r, 0, "POST");
  if ((rc = descent__req_path(&r, err, "/v1/optimizers/%s/ask", name)) < 0) return rc;
  r.accept_binary = true;
  r.target = x;
  r.target_cap = n * sizeof(float);
  if ((rc = descent__perform(d, &r, 1, err)) < 0 || (rc = descent__req_result(d, &r, err, NULL)) < 0) goto out;
  if (!r.binary || r.candidate < 1) {
    rc = descent__fail(err, DESCENT_EPROTO, "the reply is not a binary candidate with Descent-Candidate");
    goto out;
  }
  if (r.target_len != n * sizeof(float)) {
    rc = bad_length(err, r.target_len / sizeof(float), n, "ask");
    goto out;
  }
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  swap32(x, n);
#endif
  if (candidate) *candidate = (uint64_t)r.candidate;
out:
  descent__req_cleanup(&r);
  return rc;
}

int descent_tell(descent *d, const char *name, uint64_t candidate, double loss, int *improved, double *best_loss,
                 descent_error *err) {
  if (!d) return descent__fail(err, DESCENT_EINVAL, "tell: NULL handle");
  int rc = descent__check_name(name, err);
  if (rc < 0) return rc;
  if (d->nshards > 1)
    return descent__fail(err, DESCENT_ENOTSUP, "tell: random search runs on one daemon, not sharded");
  if (!isfinite(loss)) return descent__fail(err, DESCENT_EINVAL, "tell: the loss must be finite");
  char body[96];
  snprintf(body, sizeof body, "{\"candidate\":%" PRIu64 ",\"loss\":%.17g}", candidate, loss);
  descent__req r;
  descent__req_init(&r, 0, "POST");
  if ((rc = descent__req_path(&r, err, "/v1/optimizers/%s/tell", name)) < 0) return rc;
  r.body = body;
  r.body_len = strlen(body);
  r.content_type = "application/json";
  if ((rc = descent__perform(d, &r, 1, err)) < 0 || (rc = descent__req_result(d, &r, err, NULL)) < 0) goto out;
  json_t *o = r.text ? json_loads(r.text, 0, NULL) : NULL;
  json_t *imp = json_object_get(o, "improved"), *best = json_object_get(o, "best_loss");
  if (!json_is_boolean(imp)) {
    rc = descent__fail(err, DESCENT_EPROTO, "the reply to tell has no \"improved\"");
  } else {
    if (improved) *improved = json_is_true(imp);
    if (best_loss) *best_loss = json_is_number(best) ? json_number_value(best) : INFINITY;
  }
  json_decref(o);
out:
  descent__req_cleanup(&r);
  return rc;
}
