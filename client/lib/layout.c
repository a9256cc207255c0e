/* layout: range sharding (proto/sharding.md): the split rule, splitting a
 * create body into one body per shard, reading an existing instance's
 * layout back from its shards (cached per handle), and the step check
 * across shards ("settle").
 *
 * The rule: the tensors, in creation order, form one flat range of N floats;
 * shard k of S holds [floor(k*N/S), floor((k+1)*N/S)).  Shard k's instance
 * has the same name and holds the slices of the tensors that meet its range,
 * each created with "offset" = the slice's first index in its tensor, so the
 * shard's own flat layout is exactly that contiguous range: a push or pull
 * needs no gathering, only pointer arithmetic.  A sparse tensor ([V, D],
 * "sparse": true) takes no floats in that range: it is split by rows with
 * the same rule over [0, V), every shard holding its row range as a [rows,
 * D] sparse tensor created with "offset" = its first row; an instance with
 * sparse tensors may leave shards without dense floats.  Runs on the
 * handle's thread.
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

size_t descent__split(size_t n, size_t s, size_t k) {
  /* n <= 2^40 and s <= 256: the product fits in 64 bits */
  return (size_t)(((uint64_t)k * (uint64_t)n) / (uint64_t)s);
}

/* ---- the cache ------------------------------------------------------------------ */

static void layout_free(descent__layout *l) {
  if (!l) return;
  for (size_t j = 0; j < l->nsparse; j++) free(l->sparse[j].rlo);
  free(l->sparse);
  free(l->order);
  free(l->lo);
  free(l->tensors);
  free(l->origins);
  free(l);
}

void descent__layout_forget(descent *d, const char *name) {
  descent__layout **pp = &d->layouts;
  while (*pp) {
    descent__layout *l = *pp;
    if (!name || !strcmp(l->name, name)) {
      *pp = l->next;
      layout_free(l);
    } else {
      pp = &l->next;
    }
  }
}

static descent__layout *layout_find(descent *d, const char *name) {
  for (descent__layout *l = d->layouts; l; l = l->next)
    if (!strcmp(l->name, name)) return l;
  return NULL;
}

/* ---- reading a layout back ------------------------------------------------------ */

/* GET /v1/optimizers/NAME on every shard at once; descs[k] = parsed reply. */
static int describe_shards(descent *d, const char *name, json_t **descs, descent_error *err) {
  size_t s = d->nshards;
  int rc = 0;
  for (size_t k = 0; k < s; k++) descs[k] = NULL;
  descent__req *r = descent__reqs_new(s);
  if (!r) return descent__fail(err, DESCENT_ENOMEM, NULL);
  for (size_t k = 0; k < s; k++) {
    descent__req_init(&r[k], k, "GET");
    snprintf(r[k].path, sizeof r[k].path, "/v1/optimizers/%s", name);
  }
  if ((rc = descent__perform(d, r, s, err)) < 0) goto out;
  for (size_t k = 0; k < s && rc == 0; k++) rc = descent__req_result(d, &r[k], err, NULL);
  for (size_t k = 0; k < s && rc == 0; k++) {
    descs[k] = r[k].text ? json_loadb(r[k].text, r[k].text_len, 0, NULL) : NULL;
    if (!json_is_object(descs[k])) {
      rc = descent__fail(err, DESCENT_EPROTO, "the description of '%s' is not a JSON object", name);
      descent__prefix_shard(err, d, k);
    }
  }
out:
  descent__reqs_free(r, s);
  if (rc < 0)
    for (size_t k = 0; k < s; k++) {
      json_decref(descs[k]);
      descs[k] = NULL;
    }
  return rc;
}

static int64_t jint(json_t *o, const char *key) {
  json_t *v = json_object_get(o, key);
  return json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;
}

const descent__sparse *descent__layout_sparse(const descent__layout *l, const char *tensor) {
  for (size_t j = 0; j < l->nsparse; j++)
    if (!strcmp(l->sparse[j].name, tensor)) return &l->sparse[j];
  return NULL;
}

static bool is_sparse(json_t *t) { return json_is_true(json_object_get(t, "sparse")); }

/* Whether the description ts (a tensors array) holds a sparse tensor. */
static bool has_sparse(json_t *ts) {
  size_t i;
  json_t *t;
  json_array_foreach(ts, i, t) if (is_sparse(t)) return true;
  return false;
}

/* Shard k's piece of sparse tensor t (its description) into l: a new entry
 * on shard 0, the next row range on the others. */
static int sparse_piece(descent *d, descent__layout *l, json_t *t, size_t k, size_t ndense_before,
                        descent_error *err) {
  const char *tn = json_string_value(json_object_get(t, "name"));
  json_t *shape = json_object_get(t, "shape");
  int64_t origin = jint(t, "origin");
  if (origin < 0) origin = 0;
  json_t *V = json_array_get(shape, 0), *D = json_array_get(shape, 1);
  if (!tn || json_array_size(shape) != 2 || !json_is_integer(V) || !json_is_integer(D) || json_integer_value(V) < 1 ||
      json_integer_value(D) < 1) {
    descent__fail(err, DESCENT_EPROTO, "the description of '%s' has a malformed sparse tensor", l->name);
    descent__prefix_shard(err, d, k);
    return DESCENT_EPROTO;
  }
  descent__sparse *x = (descent__sparse *)descent__layout_sparse(l, tn);
  if (!x) {
    if (k > 0) {
      descent__fail(err, DESCENT_ESHARDS, "'%s': sparse tensor '%s' is not on shard 0", l->name, tn);
      descent__set_code(err, "shard_layout");
      return DESCENT_ESHARDS;
    }
    x = &l->sparse[l->nsparse];
    if (!(x->rlo = calloc(d->nshards + 1, sizeof *x->rlo))) return descent__fail(err, DESCENT_ENOMEM, NULL);
    snprintf(x->name, sizeof x->name, "%s", tn);
    x->D = (size_t)json_integer_value(D);
    x->origin = (uint64_t)origin;
    l->nsparse++;
  } else if ((uint64_t)origin != x->origin + x->rlo[k] || x->pieces != k || x->D != (size_t)json_integer_value(D)) {
    descent__fail(err, DESCENT_ESHARDS, "'%s': the row ranges of sparse tensor '%s' on the shards are not contiguous",
                  l->name, tn);
    descent__set_code(err, "shard_layout");
    return DESCENT_ESHARDS;
  }
  x->rlo[k + 1] = x->rlo[k] + (uint64_t)json_integer_value(V);
  x->V = x->rlo[k + 1];
  x->pieces++;
  if (ndense_before > x->after) x->after = ndense_before;
  return 0;
}

/* After every shard: each sparse tensor's rows follow the split rule, the
 * creation order (a sparse tensor is on every shard: it comes after the
 * dense tensors any shard lists before it), and whether a push may leave
 * untouched shards out. */
static int sparse_finish(descent *d, descent__layout *l, json_t *desc0, descent_error *err) {
  for (size_t i = 0; i <= l->ntensors; i++) {
    for (size_t j = 0; j < l->nsparse; j++)
      if (l->sparse[j].after == i) l->order[l->norder++] = -(long)(j + 1);
    if (i < l->ntensors) l->order[l->norder++] = (long)i;
  }
  for (size_t j = 0; j < l->nsparse; j++) {
    const descent__sparse *x = &l->sparse[j];
    for (size_t k = 0; k <= d->nshards; k++)
      if (x->pieces != d->nshards || x->rlo[k] != (uint64_t)(((unsigned __int128)x->V * k) / d->nshards)) {
        descent__fail(err, DESCENT_ESHARDS,
                      "'%s': the rows of sparse tensor '%s' are not laid out by the split rule over these %zu "
                      "daemons: list the daemons in the order the instance was created with",
                      l->name, x->name, d->nshards);
        descent__set_code(err, "shard_layout");
        return DESCENT_ESHARDS;
      }
  }
  json_t *sched = json_object_get(desc0, "schedule");
  double lr_decay = json_number_value(json_object_get(json_object_get(desc0, "hyper"), "lr_decay"));
  l->step_free = !l->sync && (!sched || json_is_null(sched)) && strcmp(l->algorithm, "sparse_adam") &&
                 !(!strcmp(l->algorithm, "adagrad") && lr_decay != 0);
  return 0;
}

/* Builds the logical layout from every shard's description (checked against
 * the split rule) and caches it, replacing an older one. */
int descent__layout_build(descent *d, const char *name, json_t *const *descs, const descent__layout **out,
                          descent_error *err) {
  size_t s = d->nshards, total = 0, pieces = 0;
  int rc = 0;
  descent__layout *l = calloc(1, sizeof *l);
  if (!l || !(l->lo = calloc(s + 1, sizeof *l->lo))) {
    layout_free(l);
    return descent__fail(err, DESCENT_ENOMEM, NULL);
  }
  snprintf(l->name, sizeof l->name, "%s", name);
  for (size_t k = 0; k < s; k++) {
    int64_t size = jint(descs[k], "size");
    json_t *ts = json_object_get(descs[k], "tensors");
    if (size < 0 || !json_is_array(ts) || (size == 0 && !has_sparse(ts))) {
      rc = descent__fail(err, DESCENT_EPROTO, "the description of '%s' has no size or tensors", name);
      descent__prefix_shard(err, d, k);
      goto fail;
    }
    l->lo[k] = total;
    total += (size_t)size;
    pieces += json_array_size(ts);
  }
  l->n = total;
  l->lo[s] = total;
  for (size_t k = 0; k < s; k++)
    if (l->lo[k] != descent__split(total, s, k)) {
      char sizes[256];
      size_t o = 0;
      for (size_t j = 0; j < s && o < sizeof sizes - 24; j++)
        o += (size_t)snprintf(sizes + o, sizeof sizes - o, "%s%zu", j ? ", " : "", l->lo[j + 1] - l->lo[j]);
      rc = descent__fail(err, DESCENT_ESHARDS,
                         "'%s' is not laid out by the split rule over these %zu daemons (sizes %s): list the "
                         "daemons in the order the instance was created with",
                         name, s, sizes);
      descent__set_code(err, "shard_layout");
      goto fail;
    }
  const char *alg = json_string_value(json_object_get(descs[0], "algorithm"));
  const char *mode = json_string_value(json_object_get(descs[0], "mode"));
  snprintf(l->algorithm, sizeof l->algorithm, "%s", alg ? alg : "");
  l->sync = mode && !strcmp(mode, "sync");
  l->clip = json_number_value(json_object_get(descs[0], "clip_grad_norm"));
  l->workers = jint(descs[0], "workers");
  l->min_workers = jint(descs[0], "min_workers");
  for (size_t k = 1; k < s; k++) {
    const char *a2 = json_string_value(json_object_get(descs[k], "algorithm"));
    const char *m2 = json_string_value(json_object_get(descs[k], "mode"));
    if (!a2 || !m2 || strcmp(a2, l->algorithm) || strcmp(m2, mode ? mode : "")) {
      rc = descent__fail(err, DESCENT_ESHARDS, "'%s': shard %zu is a %s/%s instance, shard 0 a %s/%s one", name, k,
                         a2 ? a2 : "?", m2 ? m2 : "?", l->algorithm, mode ? mode : "?");
      descent__set_code(err, "shard_layout");
      goto fail;
    }
  }
  if (!(l->tensors = calloc(pieces + 1, sizeof *l->tensors)) || !(l->origins = calloc(pieces + 1, sizeof *l->origins)) ||
      !(l->sparse = calloc(pieces + 1, sizeof *l->sparse)) || !(l->order = calloc(pieces + 1, sizeof *l->order))) {
    rc = descent__fail(err, DESCENT_ENOMEM, NULL);
    goto fail;
  }
  /* the pieces in shard order; a tensor split over shards continues where
   * the previous piece ended (same name, origin + count) */
  size_t nt = 0, flat = 0;
  uint64_t next_origin = 0;
  bool whole = false;
  for (size_t k = 0; k < s; k++) {
    json_t *ts = json_object_get(descs[k], "tensors"), *t;
    size_t i, ndense = 0;
    json_array_foreach(ts, i, t) {
      if (is_sparse(t)) {
        /* dense tensors before it on this shard: the logical index after the last one seen */
        size_t before = ndense ? nt : 0;
        if ((rc = sparse_piece(d, l, t, k, before, err)) < 0) goto fail;
        continue;
      }
      const char *tn = json_string_value(json_object_get(t, "name"));
      int64_t count = jint(t, "count"), origin = jint(t, "origin");
      json_t *shape = json_object_get(t, "shape");
      if (origin < 0) origin = 0;
      if (!tn || count < 1 || !json_is_array(shape) || json_array_size(shape) > 8) {
        rc = descent__fail(err, DESCENT_EPROTO, "the description of '%s' has a malformed tensor", name);
        descent__prefix_shard(err, d, k);
        goto fail;
      }
      descent_tensor *prev = nt ? &l->tensors[nt - 1] : NULL;
      if (ndense++ == 0 && k > 0 && prev && !strcmp(prev->name, tn) && (uint64_t)origin == next_origin) {
        prev->count += (size_t)count; /* the same tensor continues on this shard */
        whole = false;
      } else {
        if (prev && !whole) { /* a split tensor shows flat */
          prev->ndim = 1;
          prev->shape[0] = prev->count;
        }
        for (size_t q = 0; q < nt; q++)
          if (!strcmp(l->tensors[q].name, tn)) {
            rc = descent__fail(err, DESCENT_ESHARDS,
                               "'%s': the slices of tensor '%s' on the shards are not contiguous (not an "
                               "instance sharded by this rule?)",
                               name, tn);
            descent__set_code(err, "shard_layout");
            goto fail;
          }
        l->origins[nt] = (uint64_t)origin;
        descent_tensor *x = &l->tensors[nt++];
        snprintf(x->name, sizeof x->name, "%s", tn);
        x->offset = flat;
        x->count = (size_t)count;
        x->ndim = (int)json_array_size(shape);
        for (int j = 0; j < x->ndim; j++) x->shape[j] = (uint64_t)json_integer_value(json_array_get(shape, (size_t)j));
        whole = true;
      }
      flat += (size_t)count;
      next_origin = (uint64_t)origin + (uint64_t)count;
    }
  }
  if (nt && !whole) {
    l->tensors[nt - 1].ndim = 1;
    l->tensors[nt - 1].shape[0] = l->tensors[nt - 1].count;
  }
  l->ntensors = nt;
  if (flat != total) {
    rc = descent__fail(err, DESCENT_EPROTO, "'%s': the shards' tensors hold %zu floats, their sizes %zu", name, flat,
                       total);
    goto fail;
  }
  if ((rc = sparse_finish(d, l, descs[0], err)) < 0) goto fail;
  descent__layout_forget(d, name);
  l->next = d->layouts;
  d->layouts = l;
  *out = l;
  return 0;
fail:
  layout_free(l);
  return rc;
}

int descent__layout_read(descent *d, const char *name, const descent__layout **out, json_t **descs,
                         uint64_t *step, descent_error *err) {
  json_t *own[DESCENT__MAX_SHARDS];
  json_t **dv = descs ? descs : own;
  int rc = describe_shards(d, name, dv, err);
  if (rc < 0) return rc;
  const descent__layout *l = NULL;
  if ((rc = descent__layout_build(d, name, dv, &l, err)) < 0) goto out;
  int64_t steps[DESCENT__MAX_SHARDS];
  for (size_t k = 0; k < d->nshards; k++) steps[k] = jint(dv[k], "step");
  uint64_t st;
  if ((rc = descent__settle(d, name, l, steps, NULL, DESCENT_FLOAT32, &st, err)) < 0) goto out;
  if (step) *step = st;
  *out = l;
out:
  if (rc < 0 || !descs)
    for (size_t k = 0; k < d->nshards; k++) {
      json_decref(dv[k]);
      if (descs) descs[k] = NULL;
    }
  return rc;
}

int descent__layout_get(descent *d, const char *name, bool fresh, const descent__layout **out, descent_error *err) {
  descent__layout *l = fresh ? NULL : layout_find(d, name);
  if (l) {
    *out = l;
    return 0;
  }
  return descent__layout_read(d, name, out, NULL, NULL, err);
}

/* ---- the step check ------------------------------------------------------------- */

static int mismatch(descent *d, const char *name, const int64_t *steps, descent_error *err) {
  char list[400];
  size_t o = 0;
  for (size_t k = 0; k < d->nshards && o < sizeof list - 1; k++) {
    int w = snprintf(list + o, sizeof list - o, "%sshard %zu (%.60s) at step %" PRId64, k ? ", " : "", k,
                     d->shard[k].base, steps[k]);
    if (w < 0) break;
    o += (size_t)w;
  }
  if (o >= sizeof list) o = sizeof list - 1;
  list[o] = 0;
  return descent__fail(err, DESCENT_ESHARDS,
                       "the shards of '%s' are out of step: %s; bring them back into line by importing one state "
                       "exported at one step into every shard (proto/sharding.md)",
                       name, list);
}

int descent__settle(descent *d, const char *name, const descent__layout *l, int64_t *steps, void *params,
                    descent_dtype dtype, uint64_t *step, descent_error *err) {
  size_t es = descent__dtype_size(dtype);
  size_t s = d->nshards;
  int64_t hi = -1, lo = INT64_MAX;
  for (size_t k = 0; k < s; k++) {
    if (steps[k] < 0) return descent__fail(err, DESCENT_EPROTO, "shard %zu sent no step", k);
    if (steps[k] > hi) hi = steps[k];
    if (steps[k] < lo) lo = steps[k];
  }
  if (lo == hi || (l && l->nsparse && l->step_free)) {
    /* with sparse tensors and no result depending on the step count, a push
     * leaves untouched shards out: their steps differ by design */
    *step = (uint64_t)hi;
    return 0;
  }
  /* Different steps: pushes in flight interleave differently on each shard,
   * or a shard really is behind.  Give the laggards settle_ms to catch up. */
  size_t idx[DESCENT__MAX_SHARDS], m = 0;
  int rc = 0;
  descent__req *r = descent__reqs_new(s);
  if (!r) return descent__fail(err, DESCENT_ENOMEM, NULL);
  for (size_t k = 0; k < s; k++) {
    if (steps[k] >= hi) continue;
    descent__req *q = &r[m];
    descent__req_init(q, k, "GET");
    snprintf(q->path, sizeof q->path, "/v1/optimizers/%s/params?wait_for_step=%" PRId64 "&timeout_ms=%ld", name, hi,
             d->settle_ms);
    q->accept_binary = true;
    q->accept_type = dtype == DESCENT_FLOAT32 ? NULL : descent__dtype_type(dtype);
    q->wait_ms = d->settle_ms;
    if (params) {
      q->target = (char *)params + l->lo[k] * es;
      q->target_cap = (l->lo[k + 1] - l->lo[k]) * es;
    } else {
      q->sink = true;
    }
    idx[m++] = k;
  }
  if ((rc = descent__perform(d, r, m, err)) < 0) goto out;
  for (size_t i = 0; i < m && rc == 0; i++) {
    if ((rc = descent__req_result(d, &r[i], err, NULL)) < 0) break;
    if (params && r[i].target_len != r[i].target_cap) {
      rc = descent__fail(err, DESCENT_EPROTO, "shard %zu sent %zu bytes of parameters, expected %zu", idx[i],
                         r[i].target_len, r[i].target_cap);
      break;
    }
    steps[idx[i]] = r[i].step;
  }
  if (rc < 0) goto out;
  lo = INT64_MAX;
  for (size_t k = 0; k < s; k++)
    if (steps[k] < lo) lo = steps[k];
  if (lo < hi) {
    rc = mismatch(d, name, steps, err);
    goto out;
  }
  *step = (uint64_t)lo;
out:
  descent__reqs_free(r, s);
  return rc;
}

int descent__mismatch(descent *d, const char *name, const int64_t *steps, descent_error *err) {
  return mismatch(d, name, steps, err);
}

/* ---- splitting a create body ------------------------------------------------------ */

int descent__check_shardable(json_t *cfg, descent_error *err) {
  const char *alg = json_string_value(json_object_get(cfg, "algorithm"));
  const char *mode = json_string_value(json_object_get(cfg, "mode"));
  bool sync = mode && !strcmp(mode, "sync");
  if (alg && !strcmp(alg, "random_search"))
    return descent__fail(err, DESCENT_ENOTSUP,
                         "random_search instances cannot be sharded (ask/tell draws candidates over the whole "
                         "range): use one daemon");
  if (sync && json_number_value(json_object_get(cfg, "clip_grad_norm")) > 0)
    return descent__fail(err, DESCENT_ENOTSUP,
                         "clip_grad_norm in sync mode cannot be computed exactly when sharded (each shard combines "
                         "the round's gradients for its slice only, so no shard knows the global norm): use async "
                         "mode, clip in the workers, or one daemon");
  json_t *mw = json_object_get(cfg, "min_workers"), *w = json_object_get(cfg, "workers");
  if (sync && json_is_integer(mw) && json_is_integer(w) && json_integer_value(mw) < json_integer_value(w))
    return descent__fail(err, DESCENT_ENOTSUP,
                         "min_workers below workers (backup workers) cannot be sharded: a late round could close "
                         "with different workers on different shards");
  return 0;
}

/* Appends the leaves of a (nested) array to out, in row-major order. */
static void flatten(json_t *v, json_t *out) {
  if (!json_is_array(v)) {
    json_array_append(out, v);
    return;
  }
  size_t i;
  json_t *x;
  json_array_foreach(v, i, x) flatten(x, out);
}

static json_t *slice(json_t *flat, size_t a, size_t b) {
  json_t *o = json_array();
  for (size_t i = a; i < b && o; i++) json_array_append(o, json_array_get(flat, i));
  return o;
}

/* Replaces "values" (or init.values) of the slice t2 of tensor t by [a, b). */
static int slice_values(json_t *t, json_t *t2, size_t count, size_t a, size_t b, size_t ti, descent_error *err) {
  json_t *init = json_object_get(t, "init");
  json_t *vals = json_object_get(t, "values");
  bool in_init = false;
  if (!vals && json_is_object(init) && json_object_get(init, "values")) {
    vals = json_object_get(init, "values");
    in_init = true;
  }
  if (!vals) return 0;
  json_t *flat = json_array();
  if (!flat) return descent__fail(err, DESCENT_ENOMEM, NULL);
  flatten(vals, flat);
  if (json_array_size(flat) != count) {
    json_decref(flat);
    descent__fail(err, DESCENT_EINVAL, "tensors[%zu].values: %zu values for a shape of %zu", ti,
                  json_array_size(flat), count);
    descent__set_code(err, "bad_length");
    return DESCENT_EINVAL;
  }
  json_t *part = slice(flat, a, b);
  json_decref(flat);
  if (!part) return descent__fail(err, DESCENT_ENOMEM, NULL);
  if (in_init) json_object_set_new(t2, "init", json_pack("{s:o}", "values", part));
  else json_object_set_new(t2, "values", part);
  return 0;
}

/* A sparse tensor's [V, D] from its create entry: 0, or EINVAL. */
static int sparse_shape(json_t *t, size_t i, uint64_t *V, uint64_t *D, descent_error *err) {
  json_t *shape = json_object_get(t, "shape");
  json_t *v = json_array_get(shape, 0), *dd = json_array_get(shape, 1);
  if (json_array_size(shape) != 2 || !json_is_integer(v) || !json_is_integer(dd) || json_integer_value(v) < 1 ||
      json_integer_value(dd) < 1)
    return descent__fail(err, DESCENT_EINVAL, "tensors[%zu].shape: a sparse tensor is [V, D]", i);
  *V = (uint64_t)json_integer_value(v);
  *D = (uint64_t)json_integer_value(dd);
  return 0;
}

/* Shard k's entry of sparse tensor t: rows [lo, hi) as [hi - lo, D] with
 * "offset" at its first row; explicit rows ({"rows", "values"}) split. */
static int sparse_part(json_t *t, size_t i, uint64_t org, uint64_t lo, uint64_t hi, uint64_t D, json_t **out,
                       descent_error *err) {
  json_t *t2 = json_copy(t), *init = json_object_get(t, "init");
  *out = NULL;
  if (!t2) return descent__fail(err, DESCENT_ENOMEM, NULL);
  json_object_set_new(t2, "shape", json_pack("[I,I]", (json_int_t)(hi - lo), (json_int_t)D));
  json_object_del(t2, "origin");
  json_object_del(t2, "offset");
  if (org + lo) json_object_set_new(t2, "offset", json_integer((json_int_t)(org + lo)));
  json_t *rows = json_object_get(init, "rows");
  if (!json_is_array(rows)) {
    *out = t2;
    return 0;
  }
  json_t *flat = json_array(), *prow = json_array(), *pval = json_array();
  flatten(json_object_get(init, "values"), flat);
  size_t k = json_array_size(rows), j;
  json_t *r;
  if (json_array_size(flat) != k * D) {
    descent__fail(err, DESCENT_EINVAL, "tensors[%zu].init.values: %zu values for %zu rows of %" PRIu64, i,
                  json_array_size(flat), k, D);
    descent__set_code(err, "bad_length");
    goto fail;
  }
  json_array_foreach(rows, j, r) {
    if (!json_is_integer(r) || json_integer_value(r) < 0) {
      descent__fail(err, DESCENT_EINVAL, "tensors[%zu].init.rows[%zu]: not a row id", i, j);
      goto fail;
    }
    uint64_t id = (uint64_t)json_integer_value(r);
    if (id < lo || id >= hi) continue;
    json_array_append_new(prow, json_integer((json_int_t)(id - lo)));
    json_array_append_new(pval, slice(flat, j * D, (j + 1) * D));
  }
  json_object_set_new(t2, "init", json_pack("{s:o,s:o}", "rows", prow, "values", pval));
  json_decref(flat);
  *out = t2;
  return 0;
fail:
  json_decref(flat);
  json_decref(prow);
  json_decref(pval);
  json_decref(t2);
  return DESCENT_EINVAL;
}

int descent__split_spec(const descent *d, const char *spec, char ***bodies, char *name, size_t name_cap,
                        descent_error *err) {
  size_t s = d->nshards;
  json_error_t je;
  int rc = 0;
  char **out = NULL;
  size_t *cnt = NULL, *org = NULL;
  json_t *root = json_loads(spec, 0, &je);
  if (!json_is_object(root)) {
    rc = descent__fail(err, DESCENT_EINVAL, "spec: not a JSON object (line %d, column %d: %s)", je.line, je.column,
                       root ? "expected an object" : je.text);
    descent__set_code(err, "bad_json");
    goto out;
  }
  const char *nm = json_string_value(json_object_get(root, "name"));
  if ((rc = descent__check_name(nm, err)) < 0) goto out;
  snprintf(name, name_cap, "%s", nm);
  if ((rc = descent__check_shardable(root, err)) < 0) goto out;
  json_t *ts = json_object_get(root, "tensors");
  size_t nt = json_array_size(ts);
  if (!json_is_array(ts) || nt == 0) {
    rc = descent__fail(err, DESCENT_EINVAL, "tensors: expected a non-empty array of {\"name\", \"shape\"}");
    goto out;
  }
  cnt = calloc(nt, sizeof *cnt);
  org = calloc(nt, sizeof *org);
  out = calloc(s + 1, sizeof *out);
  if (!cnt || !org || !out) {
    rc = descent__fail(err, DESCENT_ENOMEM, NULL);
    goto out;
  }
  uint64_t total = 0;
  bool any_sparse = false;
  for (size_t i = 0; i < nt; i++) {
    json_t *t = json_array_get(ts, i), *shape = json_object_get(t, "shape");
    if (!json_is_object(t) || !json_is_array(shape) || json_array_size(shape) > 8) {
      rc = descent__fail(err, DESCENT_EINVAL, "tensors[%zu]: expected {\"name\", \"shape\": [sizes]}", i);
      goto out;
    }
    if (is_sparse(t)) {
      uint64_t V, D;
      if ((rc = sparse_shape(t, i, &V, &D, err)) < 0) goto out;
      if (V < s) {
        rc = descent__fail(err, DESCENT_EINVAL, "tensors[%zu]: %" PRIu64 " rows cannot be spread over %zu daemons", i,
                           V, s);
        goto out;
      }
      any_sparse = true;
      int64_t o = jint(t, "offset");
      org[i] = o < 0 ? 0 : (size_t)o;
      cnt[i] = 0;
      continue;
    }
    uint64_t c = 1;
    size_t j;
    json_t *x;
    json_array_foreach(shape, j, x) {
      if (!json_is_integer(x) || json_integer_value(x) < 1 || (uint64_t)json_integer_value(x) > (1ull << 40) ||
          c > (1ull << 40) / (uint64_t)json_integer_value(x)) {
        rc = descent__fail(err, DESCENT_EINVAL, "tensors[%zu].shape[%zu]: must be a positive integer", i, j);
        goto out;
      }
      c *= (uint64_t)json_integer_value(x);
    }
    int64_t o = jint(t, "offset");
    if (o < 0) o = jint(t, "origin");
    org[i] = o < 0 ? 0 : (size_t)o;
    cnt[i] = (size_t)c;
    total += c;
    if (total > (1ull << 40)) {
      rc = descent__fail(err, DESCENT_EINVAL, "tensors: too many elements");
      goto out;
    }
  }
  if (total < s && !any_sparse) {
    rc = descent__fail(err, DESCENT_EINVAL, "'%s' has %" PRIu64 " parameters, fewer than the %zu daemons", nm,
                       total, s);
    goto out;
  }
  for (size_t k = 0; k < s; k++) {
    size_t lo = descent__split((size_t)total, s, k), hi = descent__split((size_t)total, s, k + 1), off = 0;
    json_t *body = json_copy(root), *nts = json_array();
    if (!body || !nts) {
      json_decref(body);
      json_decref(nts);
      rc = descent__fail(err, DESCENT_ENOMEM, NULL);
      goto out;
    }
    for (size_t i = 0; i < nt; off += cnt[i], i++) {
      json_t *ti = json_array_get(ts, i);
      if (is_sparse(ti)) {
        uint64_t V, D;
        sparse_shape(ti, i, &V, &D, NULL);
        uint64_t rl = (uint64_t)(((unsigned __int128)V * k) / s), rh = (uint64_t)(((unsigned __int128)V * (k + 1)) / s);
        json_t *t2;
        if ((rc = sparse_part(ti, i, org[i], rl, rh, D, &t2, err)) < 0) break;
        json_array_append_new(nts, t2);
        continue;
      }
      if (off + cnt[i] <= lo || off >= hi) continue;
      size_t a = (lo > off ? lo : off) - off, b = (hi < off + cnt[i] ? hi : off + cnt[i]) - off;
      json_t *t = json_array_get(ts, i), *t2 = json_copy(t);
      if (!t2) {
        rc = descent__fail(err, DESCENT_ENOMEM, NULL);
      } else if (a != 0 || b != cnt[i]) {
        json_object_set_new(t2, "shape", json_pack("[I]", (json_int_t)(b - a)));
        json_object_del(t2, "origin");
        json_object_set_new(t2, "offset", json_integer((json_int_t)(org[i] + a)));
        rc = slice_values(t, t2, cnt[i], a, b, i, err);
      }
      json_array_append_new(nts, t2);
      if (rc < 0) break;
    }
    json_object_set_new(body, "tensors", nts);
    out[k] = rc < 0 ? NULL : json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (rc < 0) goto out;
    if (!out[k]) {
      rc = descent__fail(err, DESCENT_ENOMEM, NULL);
      goto out;
    }
  }
  *bodies = out;
  out = NULL;
out:
  if (out)
    for (size_t k = 0; k < s; k++) free(out[k]);
  free(out);
  free(cnt);
  free(org);
  json_decref(root);
  return rc;
}

json_t *descent__layout_tensors_json(const descent__layout *l) {
  json_t *ts = json_array();
  for (size_t o = 0; o < l->norder; o++) {
    if (l->order[o] < 0) {
      const descent__sparse *x = &l->sparse[-l->order[o] - 1];
      json_t *tj = json_pack("{s:s,s:[I,I],s:b,s:I}", "name", x->name, "shape", (json_int_t)x->V, (json_int_t)x->D,
                             "sparse", 1, "count", (json_int_t)0);
      if (x->origin) json_object_set_new(tj, "origin", json_integer((json_int_t)x->origin));
      json_array_append_new(ts, tj);
      continue;
    }
    size_t i = (size_t)l->order[o];
    const descent_tensor *t = &l->tensors[i];
    json_t *shape = json_array();
    for (int j = 0; j < t->ndim; j++) json_array_append_new(shape, json_integer((json_int_t)t->shape[j]));
    json_t *tj = json_pack("{s:s,s:o,s:I,s:I}", "name", t->name, "shape", shape, "offset", (json_int_t)t->offset,
                           "count", (json_int_t)t->count);
    if (l->origins[i]) json_object_set_new(tj, "origin", json_integer((json_int_t)l->origins[i]));
    json_array_append_new(ts, tj);
  }
  return ts;
}
