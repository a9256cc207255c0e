/* codec_push: decoding push bodies and encoding the binary step reply.
 * Works on copies of the outputs and stores them only once the whole body is
 * valid, so a refused body changes nothing and leaves no buffer behind.
 * Owns nothing past a call (the buffers go to the caller).  Never touches an
 * instance or a lock: it reads only the immutable layout.  HTTP threads, and
 * the log's replay (codec_push_binary on a plain buffer).
 */
#include "codec_push.h"

#include <stdio.h>
#include <string.h>

#include "codec_half.h"
#include "spec.h"

void codec_push_bufs_release(codec_push_bufs *b, bufpool *pool) {
  if (!b) return;
  if (!b->grad_in_body) bufpool_put(pool, b->grad, b->grad_cap);
  bufpool_put(pool, b->rows, b->rows_cap);
  memset(b, 0, sizeof *b);
}

size_t codec_push_nsparse(const instance_layout *c) {
  size_t m = 0;
  for (size_t i = 0; i < c->ntensors; i++) m += c->tensors[i].sparse;
  return m;
}

/* The sparse scratch: push_rows[ns], then ids (nid u64), then nval floats,
 * each part aligned; one pooled buffer. */
static void *rows_buf(bufpool *pool, size_t ns, size_t nid, size_t nval, size_t *cap, push_rows **pr, uint64_t **ids,
                      float **vals) {
  size_t a = (ns * sizeof(push_rows) + 63) & ~(size_t)63;
  size_t b = (nid * sizeof(uint64_t) + 63) & ~(size_t)63;
  char *buf = bufpool_get(pool, a + b + nval * sizeof(float) + 64, cap);
  if (!buf) return NULL;
  memset(buf, 0, ns * sizeof(push_rows));
  *pr = (push_rows *)buf;
  *ids = (uint64_t *)(buf + a);
  *vals = (float *)(buf + a + b);
  return buf;
}

/* ---- JSON ------------------------------------------------------------------------ */

/* A sparse tensor's gradient {"rows", "values"} into pr (ids and vals have room). */
static int decode_rows(const jdoc *d, json_t *x, const tensor *t, push_rows *pr, uint64_t *ids, float *vals,
                       const char *what, derr *e) {
  size_t k = 0;
  int rc = spec_rows_read(d, x, t, false, ids, vals, &k, what, e);
  if (rc < 0) return rc;
  *pr = (push_rows){.k = k, .rows = ids, .vals = vals};
  return 0;
}

/* The sparse tensors' gradients in grads (an object): sized first, then read
 * into one pooled buffer. */
static int decode_sparse(const jdoc *d, const instance_layout *c, json_t *grads, bufpool *pool, push_rows **out,
                         void **buf, size_t *cap, derr *e) {
  size_t ns = codec_push_nsparse(c), nid = 0, nval = 0;
  for (size_t i = 0; i < c->ntensors; i++) {
    const tensor *t = &c->tensors[i];
    if (!t->sparse) continue;
    json_t *x = json_object_get(grads, t->name);
    long k = json_is_object(x) ? spec_rows_count(d, x) : 0;
    if (k < 0) return derr_set(e, E_BAD_LENGTH, "grads.%s.rows: at most %d rows in one push", t->name, SPEC_MAX_ROWS);
    nid += (size_t)k;
    nval += (size_t)k * t->dim;
  }
  push_rows *pr;
  uint64_t *ids;
  float *vals;
  *buf = rows_buf(pool, ns, nid, nval, cap, &pr, &ids, &vals);
  if (!*buf) return derr_set(e, E_QUOTA, "not enough memory for the rows of this push");
  for (size_t i = 0, j = 0; i < c->ntensors; i++) {
    const tensor *t = &c->tensors[i];
    if (!t->sparse) continue;
    char what[96];
    snprintf(what, sizeof what, "grads.%s", t->name);
    json_t *x = json_object_get(grads, t->name);
    int rc = x ? decode_rows(d, x, t, &pr[j], ids, vals, what, e)
               : derr_set(e, E_BAD_LENGTH, "%s: missing (every tensor needs its gradient; no rows: "
                          "{\"rows\": [], \"values\": []})", what);
    if (rc < 0) {
      bufpool_put(pool, *buf, *cap);
      *buf = NULL;
      return rc;
    }
    ids += pr[j].k;
    vals += pr[j].k * t->dim;
    j++;
  }
  *out = pr;
  return 0;
}

/* The dense tensors' gradients into out[0..c->n): by tensor name, or one flat array. */
static int decode_grads(const jdoc *d, const instance_layout *c, json_t *grads, float *out, derr *e) {
  const char *k;
  json_t *v;
  if (json_is_object(grads)) {
    json_object_foreach(grads, k, v) {
      if (instance_layout_tensor(c, k) < 0) return derr_set(e, E_UNKNOWN_TENSOR, "grads.%.64s: no tensor of that name", k);
    }
    for (size_t i = 0; i < c->ntensors; i++) {
      const tensor *t = &c->tensors[i];
      if (t->sparse) continue;
      char what[96];
      snprintf(what, sizeof what, "grads.%s", t->name);
      json_t *x = json_object_get(grads, t->name);
      if (!x) return derr_set(e, E_BAD_LENGTH, "%s: missing (every tensor needs its gradient)", what);
      size_t shape[TENSOR_MAXDIM];
      for (int dim = 0; dim < t->ndim; dim++) shape[dim] = (size_t)t->shape[dim];
      int rc = jdoc_floats(d, x, out + t->offset, t->count, shape, t->ndim, what, e);
      if (rc < 0) return rc;
    }
    return 0;
  }
  if (codec_push_nsparse(c) && (json_is_array(grads) || json_is_string(grads)))
    return derr_set(e, E_BAD_REQUEST, "grads: this instance has sparse tensors; give the gradients by tensor name");
  if (json_is_array(grads) || json_is_string(grads))
    return jdoc_floats(d, grads, out, c->n, NULL, 0, "grads", e);
  return derr_set(e, E_BAD_REQUEST, "grads: expected an object by tensor name or one flat array");
}

/* The scalar fields of a push body into q and *sq. */
static int decode_fields(json_t *root, push *q, int64_t *sq, derr *e) {
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
    q->worker = json_string_value(v);
  }
  if ((v = json_object_get(root, "step")) && !json_is_null(v)) {
    if (!json_is_integer(v) || json_integer_value(v) < 0)
      return derr_set(e, E_BAD_REQUEST, "step: expected a non-negative integer");
    q->step = json_integer_value(v);
  }
  if ((v = json_object_get(root, "seq")) && !json_is_null(v)) {
    if (!json_is_integer(v) || json_integer_value(v) < 0)
      return derr_set(e, E_BAD_REQUEST, "seq: expected a non-negative integer");
    *sq = json_integer_value(v);
  }
  if ((v = json_object_get(root, "loss")) && !json_is_null(v)) {
    if (!json_is_number(v)) return derr_set(e, E_BAD_REQUEST, "loss: expected a number");
    q->loss = json_number_value(v);
  }
  if ((v = json_object_get(root, "grad_norm")) && !json_is_null(v)) {
    if (!json_is_number(v) || json_number_value(v) < 0)
      return derr_set(e, E_BAD_REQUEST, "grad_norm: expected a non-negative number");
    q->grad_norm = json_number_value(v);
  }
  return 0;
}

int codec_push_json(const jdoc *d, const instance_layout *c, bufpool *pool, push *p, int64_t *seq,
                    codec_push_bufs *out, derr *e) {
  json_t *root = d->root;
  if (!json_is_object(root)) return derr_set(e, E_BAD_REQUEST, "the body must be a JSON object");
  push q = *p;
  int64_t sq = *seq;
  int rc = decode_fields(root, &q, &sq, e);
  if (rc < 0) return rc;
  json_t *grads = json_object_get(root, "grads");
  if (!grads) return derr_set(e, E_BAD_REQUEST, "grads: required");
  codec_push_bufs b = {0};
  b.grad = bufpool_get(pool, c->n * sizeof(float) + 1, &b.grad_cap);
  if (!b.grad) return derr_set(e, E_QUOTA, "not enough memory for the gradient");
  rc = decode_grads(d, c, grads, b.grad, e);
  q.rows = NULL;
  if (rc == 0 && json_is_object(grads) && codec_push_nsparse(c))
    rc = decode_sparse(d, c, grads, pool, &q.rows, &b.rows, &b.rows_cap, e);
  if (rc < 0) {
    codec_push_bufs_release(&b, pool);
    return rc;
  }
  q.grad = b.grad;
  *p = q;
  *seq = sq;
  *out = b;
  return 0;
}

/* ---- binary ----------------------------------------------------------------------- */

static uint64_t load_u64(const char *p) {
  uint64_t x;
  memcpy(&x, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  x = __builtin_bswap64(x);
#endif
  return x;
}

/* What a binary body holds, found by one walk over its sections. */
typedef struct bin_plan {
  size_t ns, nid, nval; /* sparse tensors; ids and values that need the scratch */
  bool dense_in_place;  /* float32 and every dense tensor before the first sparse one */
} bin_plan;

/* Checks the section lengths (k against the body and SPEC_MAX_ROWS): 0 or -E_BAD_LENGTH. */
static int bin_walk(const instance_layout *c, int dtype, size_t len, bin_plan *pl, const char *body, derr *e) {
  size_t vs = codec_half_size(dtype), at = 0;
  bool seen_sparse = false, split = false;
  *pl = (bin_plan){0};
  if (!codec_push_nsparse(c)) {
    if (len != c->n * vs)
      return derr_set(e, E_BAD_LENGTH, "binary body: expected %zu %s values (%zu bytes), got %zu bytes", c->n,
                      codec_half_dtype_name(dtype), c->n * vs, len);
    pl->dense_in_place = dtype == DTYPE_FLOAT32;
    return 0;
  }
  for (size_t i = 0; i < c->ntensors; i++) {
    const tensor *t = &c->tensors[i];
    if (!t->sparse) {
      if (len - at < t->count * vs)
        return derr_set(e, E_BAD_LENGTH, "binary body: tensor %s needs %zu %s values at byte %zu, the body has %zu bytes",
                        t->name, t->count, codec_half_dtype_name(dtype), at, len);
      split |= seen_sparse;
      at += t->count * vs;
      continue;
    }
    seen_sparse = true;
    pl->ns++;
    if (len - at < 8)
      return derr_set(e, E_BAD_LENGTH, "binary body: tensor %s (sparse) needs its u64 k at byte %zu, the body has %zu bytes",
                      t->name, at, len);
    uint64_t k = load_u64(body + at);
    size_t per = 8 + t->dim * vs;
    if (k > SPEC_MAX_ROWS || k > (len - at - 8) / per)
      return derr_set(e, E_BAD_LENGTH,
                      "binary body: tensor %s (sparse): k = %llu at byte %zu does not fit the body (%zu bytes left, "
                      "%zu a row; at most %d rows)", t->name, (unsigned long long)k, at, len - at - 8, per, SPEC_MAX_ROWS);
    at += 8;
    if (at % 8) pl->nid += (size_t)k;
    at += (size_t)k * 8;
    if (dtype != DTYPE_FLOAT32) pl->nval += (size_t)k * t->dim;
    at += (size_t)k * t->dim * vs;
  }
  if (at != len)
    return derr_set(e, E_BAD_LENGTH, "binary body: expected %zu bytes for these tensors, got %zu", at, len);
  pl->dense_in_place = dtype == DTYPE_FLOAT32 && !split;
  return 0;
}

/* Fills p->rows (and the dense gradient when it is gathered) from the body. */
static int bin_fill(const instance_layout *c, int dtype, char *body, const bin_plan *pl, push_rows *pr, uint64_t *ids,
                    float *vals, float *grad, derr *e) {
  size_t vs = codec_half_size(dtype), at = 0;
  for (size_t i = 0, j = 0; i < c->ntensors; i++) {
    const tensor *t = &c->tensors[i];
    if (!t->sparse) {
      if (!pl->dense_in_place) codec_half_widen(dtype, body + at, grad + t->offset, t->count);
      at += t->count * vs;
      continue;
    }
    size_t k = (size_t)load_u64(body + at), start = at;
    at += 8;
    const uint64_t *r = (const uint64_t *)(void *)(body + at);
    if (at % 8) {
      memcpy(ids, body + at, k * 8);
      r = ids;
      ids += k;
    }
    for (size_t x = 0; x < k; x++)
      if (load_u64(body + at + 8 * x) >= t->vrows)
        return derr_set(e, E_BAD_VALUE, "binary body: tensor %s row[%zu] = %llu (byte %zu) is out of range: it has %llu rows",
                        t->name, x, (unsigned long long)load_u64(body + at + 8 * x), at + 8 * x,
                        (unsigned long long)t->vrows);
    (void)start;
    at += k * 8;
    float *v = (float *)(void *)(body + at);
    if (dtype != DTYPE_FLOAT32) {
      codec_half_widen(dtype, body + at, vals, k * t->dim);
      v = vals;
      vals += k * t->dim;
    }
    pr[j++] = (push_rows){.k = k, .rows = r, .vals = v};
    at += k * t->dim * vs;
  }
  return 0;
}

int codec_push_binary(const instance_layout *c, bufpool *pool, int dtype, char *body, size_t len, push *p,
                      codec_push_bufs *out, derr *e) {
  bin_plan pl;
  int rc = bin_walk(c, dtype, len, &pl, body, e);
  if (rc < 0) return rc;
  codec_push_bufs b = {0};
  if (pl.dense_in_place) {
    b.grad = (float *)(void *)body;
    b.grad_in_body = true;
  } else if (!(b.grad = bufpool_get(pool, c->n * sizeof(float) + 1, &b.grad_cap))) {
    return derr_set(e, E_QUOTA, "not enough memory for a %zu-float gradient", c->n);
  }
  push_rows *pr = NULL;
  uint64_t *ids = NULL;
  float *vals = NULL;
  if (pl.ns && !(b.rows = rows_buf(pool, pl.ns, pl.nid, pl.nval, &b.rows_cap, &pr, &ids, &vals))) {
    codec_push_bufs_release(&b, pool);
    return derr_set(e, E_QUOTA, "not enough memory for the rows of this push");
  }
  if (!pl.ns && dtype != DTYPE_FLOAT32) codec_half_widen(dtype, body, b.grad, c->n);
  else if (pl.ns && (rc = bin_fill(c, dtype, body, &pl, pr, ids, vals, b.grad, e)) < 0) {
    codec_push_bufs_release(&b, pool);
    return rc;
  }
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  if (pl.dense_in_place)
    for (size_t i = 0; i < c->n; i++) {
      uint32_t u;
      memcpy(&u, body + 4 * i, 4);
      u = __builtin_bswap32(u);
      memcpy(body + 4 * i, &u, 4);
    }
#endif
  p->grad = b.grad;
  p->rows = pr;
  *out = b;
  return 0;
}

/* ---- the binary reply --------------------------------------------------------------- */

size_t codec_push_reply_size(const instance_layout *c, const push_rows *rows, int dtype) {
  size_t vs = codec_half_size(dtype), n = 0;
  for (size_t i = 0, j = 0; i < c->ntensors; i++) {
    const tensor *t = &c->tensors[i];
    if (!t->sparse) n += t->count * vs;
    else {
      size_t k = rows ? (size_t)rows[j].k : 0;
      n += 8 + k * 8 + k * t->dim * vs;
      j++;
    }
  }
  return n;
}

void codec_push_reply_write(const instance_layout *c, const float *grad, const push_rows *rows, int dtype, char *out) {
  size_t vs = codec_half_size(dtype);
  for (size_t i = 0, j = 0; i < c->ntensors; i++) {
    const tensor *t = &c->tensors[i];
    if (!t->sparse) {
      codec_half_narrow(dtype, grad + t->offset, out, t->count); /* float32: a copy */
      out += t->count * vs;
      continue;
    }
    uint64_t k = rows ? rows[j].k : 0;
    memcpy(out, &k, 8);
    out += 8;
    if (k) memcpy(out, rows[j].rows, (size_t)k * 8);
    out += (size_t)k * 8;
    if (k) codec_half_narrow(dtype, rows[j].vals, out, (size_t)k * t->dim);
    out += (size_t)k * t->dim * vs;
    j++;
  }
}
