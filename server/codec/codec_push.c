/* codec_push: decoding push bodies.  Works on copies of the outputs and
 * stores them only once the whole body is valid, so a refused body changes
 * nothing and leaves no buffer behind.  Owns nothing past a call (the
 * gradient buffer goes to the caller).  Never touches an instance or a lock:
 * it reads only the immutable layout.  HTTP threads. */
#include "codec_push.h"

#include <stdio.h>
#include <string.h>

#include "spec.h"

/* grads into out[0..c->n): by tensor name, or one flat array. */
static int decode_grads(const jdoc *d, const instance_layout *c, json_t *grads, float *out, derr *e) {
  const char *k;
  json_t *v;
  if (json_is_object(grads)) {
    json_object_foreach(grads, k, v) {
      if (instance_layout_tensor(c, k) < 0) return derr_set(e, E_UNKNOWN_TENSOR, "grads.%.64s: no tensor of that name", k);
    }
    for (size_t i = 0; i < c->ntensors; i++) {
      const tensor *t = &c->tensors[i];
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
  if (json_is_array(grads) || json_is_string(grads))
    return jdoc_floats(d, grads, out, c->n, NULL, 0, "grads", e);
  return derr_set(e, E_BAD_REQUEST, "grads: expected an object by tensor name or one flat array");
}

int codec_push_json(const jdoc *d, const instance_layout *c, bufpool *pool, push *p, int64_t *seq,
                    float **grad, size_t *grad_cap, derr *e) {
  json_t *root = d->root;
  if (!json_is_object(root)) return derr_set(e, E_BAD_REQUEST, "the body must be a JSON object");
  push q = *p;
  int64_t sq = *seq;
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
    q.worker = json_string_value(v);
  }
  if ((v = json_object_get(root, "step")) && !json_is_null(v)) {
    if (!json_is_integer(v) || json_integer_value(v) < 0)
      return derr_set(e, E_BAD_REQUEST, "step: expected a non-negative integer");
    q.step = json_integer_value(v);
  }
  if ((v = json_object_get(root, "seq")) && !json_is_null(v)) {
    if (!json_is_integer(v) || json_integer_value(v) < 0)
      return derr_set(e, E_BAD_REQUEST, "seq: expected a non-negative integer");
    sq = json_integer_value(v);
  }
  if ((v = json_object_get(root, "loss")) && !json_is_null(v)) {
    if (!json_is_number(v)) return derr_set(e, E_BAD_REQUEST, "loss: expected a number");
    q.loss = json_number_value(v);
  }
  if ((v = json_object_get(root, "grad_norm")) && !json_is_null(v)) {
    if (!json_is_number(v) || json_number_value(v) < 0)
      return derr_set(e, E_BAD_REQUEST, "grad_norm: expected a non-negative number");
    q.grad_norm = json_number_value(v);
  }
  json_t *grads = json_object_get(root, "grads");
  if (!grads) return derr_set(e, E_BAD_REQUEST, "grads: required");
  size_t cap;
  float *g = bufpool_get(pool, c->n * sizeof(float) + 1, &cap);
  if (!g) return derr_set(e, E_QUOTA, "not enough memory for the gradient");
  int rc = decode_grads(d, c, grads, g, e);
  if (rc < 0) {
    bufpool_put(pool, g, cap);
    return rc;
  }
  *p = q;
  *seq = sq;
  *grad = g;
  *grad_cap = cap;
  return 0;
}
