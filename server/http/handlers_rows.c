/* handlers_rows: pulling rows of a sparse tensor (GET and POST
 * /v1/optimizers/{name}/rows).  Ids come from the query (?ids=3,17,42), a
 * JSON body {"tensor", "rows"} or a binary body of u64 ids; the reply is
 * {"step", "rows", "values"} or k*D values (Accept: octet-stream, any wire
 * dtype) with Descent-Step.  Rows never touched read as their init and
 * allocate nothing (instance_read_rows).  Never changes an instance.  HTTP
 * threads. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_half.h"
#include "handlers.h"
#include "http_reply.h"
#include "http_server.h"
#include "instance.h"
#include "spec.h"

/* The largest reply: k*D floats (256 MiB). */
#define ROWS_MAX_FLOATS (1ull << 26)

/* One pooled buffer: k ids, then k*D floats (64-aligned). */
typedef struct rows_req {
  int t;              /* tensor index */
  const tensor *tn;
  size_t k;
  uint64_t *ids;
  float *vals;
  char *buf;
  size_t cap;
} rows_req;

static int rows_alloc(request *r, rows_req *q, size_t k, derr *e) {
  if (k > SPEC_MAX_ROWS || (uint64_t)k * q->tn->dim > ROWS_MAX_FLOATS)
    return derr_set(e, E_BAD_LENGTH, "at most %llu floats (rows times D) in one pull", (unsigned long long)ROWS_MAX_FLOATS);
  size_t a = (k * 8 + 63) & ~(size_t)63;
  q->buf = bufpool_get(r->app->pool, a + k * q->tn->dim * sizeof(float) + 64, &q->cap);
  if (!q->buf) return derr_set(e, E_QUOTA, "not enough memory for %zu rows", k);
  q->k = k;
  q->ids = (uint64_t *)(void *)q->buf;
  q->vals = (float *)(void *)(q->buf + a);
  return 0;
}

/* The sparse tensor named `name`, or an error. */
static int rows_tensor(instance *in, const char *name, rows_req *q, derr *e) {
  const instance_layout *l = instance_layout_of(in);
  if (!name) return derr_set(e, E_BAD_REQUEST, "tensor: required (the sparse tensor to read rows of)");
  int t = instance_layout_tensor(l, name);
  if (t < 0) return derr_set(e, E_UNKNOWN_TENSOR, "tensor: no tensor named '%.64s'", name);
  if (!l->tensors[t].sparse)
    return derr_set(e, E_BAD_VALUE, "tensor: %s is dense (GET .../params gives its values)", l->tensors[t].name);
  q->t = t;
  q->tn = &l->tensors[t];
  return 0;
}

/* ?ids=3,17,42 into q. */
static int ids_query(request *r, rows_req *q, const char *ids, derr *e) {
  if (!ids) return derr_set(e, E_BAD_QUERY, "?ids: required (comma-separated row ids)");
  size_t k = *ids ? 1 : 0;
  for (const char *p = ids; *p; p++) k += *p == ',';
  int rc = rows_alloc(r, q, k, e);
  if (rc < 0) return rc;
  const char *p = ids;
  for (size_t i = 0; i < k; i++) {
    char *end;
    if (*p < '0' || *p > '9') return derr_set(e, E_BAD_QUERY, "?ids[%zu]: expected a non-negative integer", i);
    unsigned long long x = strtoull(p, &end, 10);
    if (*end && *end != ',') return derr_set(e, E_BAD_QUERY, "?ids[%zu]: expected a non-negative integer", i);
    if (x >= q->tn->vrows)
      return derr_set(e, E_BAD_VALUE, "?ids[%zu]: row %llu is out of range: %s has %llu rows", i, x, q->tn->name,
                      (unsigned long long)q->tn->vrows);
    q->ids[i] = x;
    p = *end ? end + 1 : end;
  }
  return 0;
}

/* A binary body of k little-endian u64 ids. */
static int ids_binary(request *r, rows_req *q, derr *e) {
  if (r->len % 8) return derr_set(e, E_BAD_LENGTH, "binary body: %zu bytes is not a whole number of u64 row ids", r->len);
  int rc = rows_alloc(r, q, r->len / 8, e);
  if (rc < 0) return rc;
  memcpy(q->ids, r->body, r->len);
  for (size_t i = 0; i < q->k; i++)
    if (q->ids[i] >= q->tn->vrows)
      return derr_set(e, E_BAD_VALUE, "binary body: row[%zu] = %llu (byte %zu) is out of range: %s has %llu rows", i,
                      (unsigned long long)q->ids[i], 8 * i, q->tn->name, (unsigned long long)q->tn->vrows);
  return 0;
}

/* {"tensor": T, "rows": [...]} into q. */
static int ids_json(request *r, instance *in, rows_req *q, derr *e) {
  json_t *root = r->doc.root;
  if (!json_is_object(root)) return derr_set(e, E_BAD_REQUEST, "the body must be a JSON object");
  const char *k;
  json_t *v;
  json_object_foreach(root, k, v) {
    if (strcmp(k, "tensor") && strcmp(k, "rows")) return derr_set(e, E_BAD_REQUEST, "%.64s: unknown field (tensor, rows)", k);
  }
  int rc = rows_tensor(in, json_string_value(json_object_get(root, "tensor")), q, e);
  if (rc < 0) return rc;
  json_t *rows = json_object_get(root, "rows");
  if (!json_is_array(rows) && !json_is_string(rows)) return derr_set(e, E_BAD_REQUEST, "rows: expected an array of row ids");
  long n = spec_rows_count(&r->doc, root);
  if (n < 0) return derr_set(e, E_BAD_LENGTH, "rows: at most %d rows in one pull", SPEC_MAX_ROWS);
  if ((rc = rows_alloc(r, q, (size_t)n, e)) < 0) return rc;
  return jdoc_u64s(&r->doc, rows, q->ids, q->k, q->tn->vrows, "rows", e);
}

static enum MHD_Result rows_reply(request *r, instance *in, rows_req *q) {
  uint64_t step = instance_read_rows(in, q->t, q->ids, q->k, q->vals);
  size_t nv = q->k * q->tn->dim;
  if (r->accept_binary) {
    char *out = (char *)q->vals;
    codec_half_narrow(r->accept_dtype, q->vals, out, nv); /* in place */
    /* the reply is the values: move them to the front of the buffer */
    memmove(q->buf, out, nv * codec_half_size(r->accept_dtype));
    static const char *const types[] = {"application/octet-stream", "application/octet-stream; dtype=bfloat16",
                                        "application/octet-stream; dtype=float16"};
    return reply_pooled_step(r, MHD_HTTP_OK, q->buf, nv * codec_half_size(r->accept_dtype), q->cap,
                             types[r->accept_dtype], (int64_t)step);
  }
  jbuf b;
  jbuf_init(&b, r->app->pool, q->k * (24 + 12 * q->tn->dim) + 64);
  jbuf_printf(&b, "{\"step\":%llu,\"tensor\":\"%s\",\"rows\":", (unsigned long long)step, q->tn->name);
  jbuf_u64s(&b, q->ids, q->k);
  jbuf_puts(&b, ",\"values\":");
  jbuf_float_rows(&b, q->vals, nv, q->tn->dim);
  jbuf_puts(&b, "}\n");
  bufpool_put(r->app->pool, q->buf, q->cap);
  return reply_jbuf(r, MHD_HTTP_OK, &b, "application/json");
}

static enum MHD_Result rows_fail(request *r, rows_req *q, int rc, derr *e) {
  bufpool_put(r->app->pool, q->buf, q->cap);
  return reply_error(r, rc, e);
}

enum MHD_Result h_rows_get(request *r) {
  instance *in;
  if (handlers_find(r, &in) == HANDLERS_REPLIED) return http_replied(r);
  rows_req q = {0};
  derr e = {0};
  int rc = rows_tensor(in, http_arg(r, "tensor"), &q, &e);
  if (rc == -E_BAD_REQUEST) rc = derr_set(&e, E_BAD_QUERY, "?tensor: required (the sparse tensor to read rows of)");
  if (rc < 0 || (rc = ids_query(r, &q, http_arg(r, "ids"), &e)) < 0) return rows_fail(r, &q, rc, &e);
  return rows_reply(r, in, &q);
}

enum MHD_Result h_rows_post(request *r) {
  instance *in;
  if (handlers_find(r, &in) == HANDLERS_REPLIED) return http_replied(r);
  rows_req q = {0};
  derr e = {0};
  int rc;
  if (r->content == CT_BINARY) {
    rc = rows_tensor(in, http_arg(r, "tensor"), &q, &e);
    if (rc == -E_BAD_REQUEST) rc = derr_set(&e, E_BAD_QUERY, "?tensor: required with a binary body of row ids");
    if (rc == 0) rc = ids_binary(r, &q, &e);
  } else {
    if (http_arg(r, "tensor")) {
      derr_set(&e, E_BAD_QUERY, "?tensor: only with a binary body (a JSON body names its tensor)");
      return reply_error(r, E_BAD_QUERY, &e);
    }
    if (handlers_parse_body(r) == HANDLERS_REPLIED) return http_replied(r);
    rc = ids_json(r, in, &q, &e);
  }
  if (rc < 0) return rows_fail(r, &q, rc, &e);
  return rows_reply(r, in, &q);
}
