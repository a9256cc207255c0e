/* rows: sparse tensors' rows on the wire (proto/binary.md): a push of dense
 * floats plus, per sparse tensor, u64 k, k x u64 row, k*D f32, and pulls
 * of rows (POST .../rows?tensor=T, a body of u64 ids, k*D f32 back); on one
 * daemon or split by row ranges over shards (proto/sharding.md).  Never
 * allocates per row: one body and one reply buffer per shard per call.
 * Runs on the handle's thread.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static void put_u64(char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (char)(v >> (8 * i));
}

static uint64_t get_u64(const char *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v |= (uint64_t)(unsigned char)p[i] << (8 * i);
  return v;
}

/* n floats to little-endian bytes and back (a copy either way). */
static void put_f32(char *p, const float *v, size_t n) {
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  for (size_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, &v[i], 4);
    u = __builtin_bswap32(u);
    memcpy(p + 4 * i, &u, 4);
  }
#else
  memcpy(p, v, n * 4);
#endif
}

static void get_f32(float *v, const char *p, size_t n) {
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  put_f32((char *)v, (const float *)p, n);
#else
  memcpy(v, p, n * 4);
#endif
}

/* The shard holding local row id of sparse tensor x. */
static size_t shard_of(const descent *d, const descent__sparse *x, uint64_t id) {
  size_t lo = 0, hi = d->nshards;
  while (hi - lo > 1) {
    size_t mid = (lo + hi) / 2;
    if (id >= x->rlo[mid]) lo = mid;
    else hi = mid;
  }
  return lo;
}

static int bad_row(descent_error *err, const char *tensor, size_t i, uint64_t id, uint64_t V) {
  descent__fail(err, DESCENT_EINVAL, "%s.rows[%zu]: row %" PRIu64 " is out of range (the tensor has %" PRIu64 " rows)",
                tensor, i, id, V);
  descent__set_code(err, "invalid_value");
  return DESCENT_EINVAL;
}

/* A push's plan: which descent_rows feeds each sparse tensor, entries per
 * (shard, tensor), which shards are sent to, and each shard's body size. */
typedef struct plan {
  long *src;     /* nsparse: index into rows[], -1: none */
  size_t *cnt;   /* nshards * nsparse */
  bool *send;    /* nshards */
  size_t *bytes; /* nshards: body bytes; reply bytes are the same */
} plan;

static void plan_free(plan *p) {
  free(p->src);
  free(p->cnt);
  free(p->send);
  free(p->bytes);
}

static int plan_make(descent *d, const descent__layout *l, const descent_rows *rows, size_t nrows, plan *p,
                     descent_error *err) {
  size_t s = d->nshards, ns = l->nsparse;
  p->src = malloc((ns + 1) * sizeof *p->src);
  p->cnt = calloc(s * ns + 1, sizeof *p->cnt);
  p->send = calloc(s, sizeof *p->send);
  p->bytes = calloc(s, sizeof *p->bytes);
  if (!p->src || !p->cnt || !p->send || !p->bytes) return descent__fail(err, DESCENT_ENOMEM, NULL);
  for (size_t j = 0; j < ns; j++) p->src[j] = -1;
  for (size_t i = 0; i < nrows; i++) {
    const descent_rows *r = &rows[i];
    const descent__sparse *x = r->tensor ? descent__layout_sparse(l, r->tensor) : NULL;
    if (!x) {
      descent__fail(err, DESCENT_EINVAL, "rows[%zu]: '%.64s' is not a sparse tensor of '%s'", i,
                    r->tensor ? r->tensor : "(null)", l->name);
      descent__set_code(err, "unknown_tensor");
      return DESCENT_EINVAL;
    }
    size_t j = (size_t)(x - l->sparse);
    if (p->src[j] >= 0) return descent__fail(err, DESCENT_EINVAL, "rows[%zu]: tensor '%s' given twice", i, x->name);
    if (r->k && (!r->rows || !r->values)) return descent__fail(err, DESCENT_EINVAL, "rows[%zu]: NULL rows or values", i);
    if (r->k > ((size_t)1 << 40) / (x->D + 2)) return descent__fail(err, DESCENT_EINVAL, "rows[%zu]: k too large", i);
    p->src[j] = (long)i;
    for (size_t e = 0; e < r->k; e++) {
      if (r->rows[e] >= x->V) return bad_row(err, x->name, e, r->rows[e], x->V);
      p->cnt[shard_of(d, x, r->rows[e]) * ns + j]++;
    }
  }
  bool any = false;
  for (size_t k = 0; k < s; k++) {
    size_t dense = l->lo[k + 1] - l->lo[k], b = dense * 4;
    bool touched = dense > 0;
    for (size_t j = 0; j < ns; j++) {
      size_t c = p->cnt[k * ns + j];
      touched |= c > 0;
      b += 8 + c * 8 + c * l->sparse[j].D * 4;
    }
    p->bytes[k] = b;
    p->send[k] = touched || !l->step_free;
    any |= p->send[k];
  }
  if (!any) p->send[0] = true; /* nothing touched anywhere: shard 0 still counts the step */
  return 0;
}

/* Shard k's body: its dense range and each sparse tensor's section. */
static void body_fill(descent *d, const descent__layout *l, const plan *p, const float *grads,
                      const descent_rows *rows, size_t k, char *b) {
  size_t s = d->nshards, ns = l->nsparse;
  for (size_t o = 0; o < l->norder; o++) {
    long t = l->order[o];
    if (t >= 0) {
      const descent_tensor *x = &l->tensors[t];
      size_t a = x->offset > l->lo[k] ? x->offset : l->lo[k];
      size_t e = x->offset + x->count < l->lo[k + 1] ? x->offset + x->count : l->lo[k + 1];
      if (a < e) {
        put_f32(b, grads + a, e - a);
        b += (e - a) * 4;
      }
      continue;
    }
    size_t j = (size_t)(-t - 1), c = p->cnt[k * ns + j], D = l->sparse[j].D;
    const descent__sparse *x = &l->sparse[j];
    put_u64(b, c);
    char *ids = b + 8, *vals = b + 8 + 8 * c;
    b = vals + 4 * c * D;
    if (!c) continue;
    const descent_rows *r = &rows[p->src[j]];
    for (size_t e = 0; e < r->k; e++) {
      if (s > 1 && shard_of(d, x, r->rows[e]) != k) continue;
      put_u64(ids, r->rows[e] - x->rlo[k]);
      put_f32(vals, r->values + e * D, D);
      ids += 8;
      vals += 4 * D;
    }
  }
}

/* Shard k's reply (the mirror of its body, or without the k and row ids:
 * both are read) into params and each rows[].out. */
static int reply_read(descent *d, const descent__layout *l, const plan *p, const descent_rows *rows, size_t k,
                      const char *b, size_t len, float *params, descent_error *err) {
  size_t s = d->nshards, ns = l->nsparse, plain = (l->lo[k + 1] - l->lo[k]) * 4;
  for (size_t j = 0; j < ns; j++) plain += p->cnt[k * ns + j] * l->sparse[j].D * 4;
  bool mirror = len == p->bytes[k];
  if (!mirror && len != plain) {
    descent__fail(err, DESCENT_EPROTO, "the step reply holds %zu bytes, expected %zu", len, p->bytes[k]);
    descent__prefix_shard(err, d, k);
    return DESCENT_EPROTO;
  }
  for (size_t o = 0; o < l->norder; o++) {
    long t = l->order[o];
    if (t >= 0) {
      const descent_tensor *x = &l->tensors[t];
      size_t a = x->offset > l->lo[k] ? x->offset : l->lo[k];
      size_t e = x->offset + x->count < l->lo[k + 1] ? x->offset + x->count : l->lo[k + 1];
      if (a < e) {
        if (params) get_f32(params + a, b, e - a);
        b += (e - a) * 4;
      }
      continue;
    }
    size_t j = (size_t)(-t - 1), c = p->cnt[k * ns + j], D = l->sparse[j].D;
    if (mirror) {
      if (get_u64(b) != c) {
        descent__fail(err, DESCENT_EPROTO, "the step reply's section of '%s' has %" PRIu64 " rows, %zu were pushed",
                      l->sparse[j].name, get_u64(b), c);
        return DESCENT_EPROTO;
      }
      b += 8 + 8 * c;
    }
    const descent_rows *r = c ? &rows[p->src[j]] : NULL;
    for (size_t e = 0; r && e < r->k; e++) {
      if (s > 1 && shard_of(d, &l->sparse[j], r->rows[e]) != k) continue;
      if (r->out) get_f32(r->out + e * D, b, D);
      b += 4 * D;
    }
  }
  return 0;
}

/* The step of a push or pull from the shards sent to: the largest when
 * shards may count different steps (step_free), else the settled one. */
static int steps_of(descent *d, const char *name, const descent__layout *l, descent__req *r, size_t m,
                    const size_t *idx, uint64_t *step, descent_error *err) {
  int64_t steps[DESCENT__MAX_SHARDS], hi = -1;
  for (size_t i = 0; i < m; i++) {
    if (r[i].step < 0) return descent__fail(err, DESCENT_EPROTO, "the reply has no Descent-Step header");
    steps[idx[i]] = r[i].step;
    if (r[i].step > hi) hi = r[i].step;
  }
  if (m == d->nshards && !l->step_free && m > 1) {
    uint64_t st;
    int rc = descent__settle(d, name, l, steps, NULL, DESCENT_FLOAT32, &st, err);
    if (rc < 0) return rc;
    hi = (int64_t)st;
  }
  if (step) *step = (uint64_t)hi;
  return 0;
}

int descent_push_rows(descent *d, const char *name, const float *grads, size_t n, const descent_rows *rows,
                      size_t nrows, const descent_push_opts *opts, float *params, uint64_t *step,
                      descent_error *err) {
  if (!d || (!grads && n) || (!rows && nrows)) return descent__fail(err, DESCENT_EINVAL, "push_rows: NULL argument");
  int rc = descent__check_name(name, err);
  if (rc < 0) return rc;
  const descent__layout *l = NULL;
  if ((rc = descent__layout_get(d, name, false, &l, err)) < 0) return rc;
  if (n != l->n) {
    descent__layout_forget(d, name);
    descent__fail(err, DESCENT_EINVAL, "push_rows: the instance has %zu dense floats, the buffer %zu", l->n, n);
    descent__set_code(err, "bad_length");
    return DESCENT_EINVAL;
  }
  size_t s = d->nshards, m = 0, idx[DESCENT__MAX_SHARDS];
  bool want = params != NULL;
  for (size_t i = 0; i < nrows; i++) want |= rows[i].out != NULL;
  plan p = {0};
  char **bufs = calloc(2 * s, sizeof *bufs);
  descent__req *r = descent__reqs_new(s);
  if (!bufs || !r) {
    rc = descent__fail(err, DESCENT_ENOMEM, NULL);
    goto out;
  }
  if ((rc = plan_make(d, l, rows, nrows, &p, err)) < 0) goto out;
  if (s > 1 && l->clip > 0) {
    /* the daemon refuses clip_grad_norm with sparse tensors (torch leaves sparse gradients unscaled) */
    rc = descent__fail(err, DESCENT_ENOTSUP, "push_rows: clip_grad_norm with sparse tensors");
    goto out;
  }
  for (size_t k = 0; k < s; k++) {
    if (!p.send[k]) continue;
    if (!(bufs[k] = malloc(p.bytes[k] + 1)) || (want && !(bufs[s + k] = malloc(p.bytes[k] + 1)))) {
      rc = descent__fail(err, DESCENT_ENOMEM, NULL);
      goto out;
    }
    body_fill(d, l, &p, grads, rows, k, bufs[k]);
    descent__req *q = &r[m];
    descent__req_init(q, k, "POST");
    char qs[400];
    size_t ql = 0;
    qs[0] = 0;
    if (opts && opts->worker) ql += (size_t)snprintf(qs + ql, sizeof qs - ql, "&worker=%.64s", opts->worker);
    if (opts && opts->step >= 0) ql += (size_t)snprintf(qs + ql, sizeof qs - ql, "&step=%" PRId64, opts->step);
    if (opts && isfinite(opts->loss)) ql += (size_t)snprintf(qs + ql, sizeof qs - ql, "&loss=%.17g", opts->loss);
    if (opts && opts->seq >= 0) ql += (size_t)snprintf(qs + ql, sizeof qs - ql, "&seq=%" PRId64, opts->seq);
    if (!want) snprintf(qs + ql, sizeof qs - ql, "&params=none");
    if (opts && opts->worker && !descent__name_ok(opts->worker)) {
      rc = descent__fail(err, DESCENT_EINVAL, "worker: '%.80s' does not match [A-Za-z0-9][A-Za-z0-9._-]{0,63}",
                         opts->worker);
      descent__set_code(err, "bad_name");
      goto out;
    }
    if (qs[0]) qs[0] = '?';
    if ((rc = descent__req_path(q, err, "/v1/optimizers/%s/step%s", name, qs)) < 0) goto out;
    q->body = bufs[k];
    q->body_len = p.bytes[k];
    q->content_type = "application/octet-stream";
    q->accept_binary = true;
    q->idem_key = opts ? opts->idempotency_key : NULL;
    if (want) {
      q->target = bufs[s + k];
      q->target_cap = p.bytes[k];
    } else {
      q->sink = true;
    }
    idx[m++] = k;
  }
  if ((rc = descent__perform(d, r, m, err)) < 0) goto out;
  for (size_t i = 0; i < m && rc == 0; i++) {
    if ((rc = descent__req_result(d, &r[i], err, NULL)) < 0) {
      if (!strcmp(err ? err->code : "", "unknown_instance")) descent__layout_forget(d, name);
      break;
    }
    if (want && (rc = reply_read(d, l, &p, rows, idx[i], bufs[s + idx[i]], r[i].target_len, params, err)) < 0) break;
  }
  if (rc == 0) rc = steps_of(d, name, l, r, m, idx, step, err);
out:
  descent__reqs_free(r, s);
  if (bufs)
    for (size_t k = 0; k < 2 * s; k++) free(bufs[k]);
  free(bufs);
  plan_free(&p);
  return rc;
}

int descent_pull_rows(descent *d, const char *name, const char *tensor, const uint64_t *rows, size_t k,
                      float *values, uint64_t *step, descent_error *err) {
  if (!d || !tensor || (k && (!rows || !values))) return descent__fail(err, DESCENT_EINVAL, "pull_rows: NULL argument");
  int rc = descent__check_name(name, err);
  if (rc < 0) return rc;
  const descent__layout *l = NULL;
  if ((rc = descent__layout_get(d, name, false, &l, err)) < 0) return rc;
  const descent__sparse *x = descent__layout_sparse(l, tensor);
  if (!x) {
    descent__fail(err, DESCENT_EINVAL, "tensor: '%.64s' is not a sparse tensor of '%s'", tensor, name);
    descent__set_code(err, "unknown_tensor");
    return DESCENT_EINVAL;
  }
  size_t s = d->nshards, D = x->D, m = 0, idx[DESCENT__MAX_SHARDS];
  size_t *cnt = calloc(s, sizeof *cnt);
  char **bufs = calloc(2 * s, sizeof *bufs);
  descent__req *r = descent__reqs_new(s);
  if (!cnt || !bufs || !r) {
    rc = descent__fail(err, DESCENT_ENOMEM, NULL);
    goto out;
  }
  for (size_t i = 0; i < k; i++) {
    if (rows[i] >= x->V) {
      rc = bad_row(err, tensor, i, rows[i], x->V);
      goto out;
    }
    cnt[shard_of(d, x, rows[i])]++;
  }
  for (size_t sh = 0; sh < s; sh++) {
    if (!cnt[sh] && (k || sh)) continue;
    if (!(bufs[sh] = malloc(8 * cnt[sh] + 1)) || !(bufs[s + sh] = malloc(4 * D * cnt[sh] + 1))) {
      rc = descent__fail(err, DESCENT_ENOMEM, NULL);
      goto out;
    }
    char *b = bufs[sh];
    for (size_t i = 0; i < k; i++)
      if (s == 1 || shard_of(d, x, rows[i]) == sh) {
        put_u64(b, rows[i] - x->rlo[sh]);
        b += 8;
      }
    descent__req *q = &r[m];
    descent__req_init(q, sh, "POST");
    if ((rc = descent__req_path(q, err, "/v1/optimizers/%s/rows?tensor=%s", name, tensor)) < 0) goto out;
    q->body = bufs[sh];
    q->body_len = 8 * cnt[sh];
    q->content_type = "application/octet-stream";
    q->accept_binary = true;
    q->target = bufs[s + sh];
    q->target_cap = 4 * D * cnt[sh];
    idx[m++] = sh;
  }
  if ((rc = descent__perform(d, r, m, err)) < 0) goto out;
  for (size_t i = 0; i < m && rc == 0; i++) {
    if ((rc = descent__req_result(d, &r[i], err, NULL)) < 0) break;
    if (!r[i].binary || r[i].target_len != r[i].target_cap) {
      rc = descent__fail(err, DESCENT_EPROTO, "the rows reply holds %zu bytes, expected %zu", r[i].target_len,
                         r[i].target_cap);
      descent__prefix_shard(err, d, idx[i]);
    }
  }
  if (rc < 0) goto out;
  for (size_t sh = 0; sh < s; sh++) {
    const char *b = bufs[s + sh];
    for (size_t i = 0; b && i < k; i++)
      if (s == 1 || shard_of(d, x, rows[i]) == sh) {
        get_f32(values + i * D, b, D);
        b += 4 * D;
      }
  }
  int64_t hi = -1;
  for (size_t i = 0; i < m; i++)
    if (r[i].step > hi) hi = r[i].step;
  if (hi < 0) rc = descent__fail(err, DESCENT_EPROTO, "the reply has no Descent-Step header");
  else if (step) *step = (uint64_t)hi;
out:
  descent__reqs_free(r, s);
  if (bufs)
    for (size_t i = 0; i < 2 * s; i++) free(bufs[i]);
  free(bufs);
  free(cnt);
  return rc;
}
