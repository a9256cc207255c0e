/* ops: managing instances: create, describe, list, delete, change
 * hyperparameters, and the descent_info view.  One daemon: the request and
 * its JSON reply as they are.  Several: the same request on every shard at
 * once, and a logical view built from their replies (small JSON only; jansson
 * is fine here).  Runs on the handle's thread.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* One request on shard 0 whose JSON reply text becomes *out (may be NULL). */
static int single(descent *d, const char *method, const char *path, const char *body, char **out,
                  descent_error *err) {
  descent__req r;
  descent__req_init(&r, 0, method);
  int rc = descent__req_path(&r, err, "%s", path);
  if (rc < 0) return rc;
  if (body) {
    r.body = body;
    r.body_len = strlen(body);
    r.content_type = "application/json";
  }
  if ((rc = descent__perform(d, &r, 1, err)) == 0 && (rc = descent__req_result(d, &r, err, NULL)) == 0 && out) {
    *out = r.text ? r.text : strdup("");
    r.text = NULL;
    if (!*out) rc = descent__fail(err, DESCENT_ENOMEM, NULL);
  }
  descent__req_cleanup(&r);
  return rc;
}

static char *dump(json_t *o, descent_error *err) {
  char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
  if (!s) descent__fail(err, DESCENT_ENOMEM, NULL);
  return s;
}

/* ---- describe ------------------------------------------------------------------- */

/* The logical description of a sharded instance: shard 0's configuration
 * with the logical tensors, size and step, and every shard's part. */
static int describe_sharded(descent *d, const char *name, char **out, descent_error *err) {
  json_t *descs[DESCENT__MAX_SHARDS];
  const descent__layout *l;
  uint64_t step;
  int rc = descent__layout_read(d, name, &l, descs, &step, err);
  if (rc < 0) return rc;
  json_t *o = json_copy(descs[0]), *ts = descent__layout_tensors_json(l), *sh = json_array();
  for (size_t k = 0; k < d->nshards; k++)
    json_array_append_new(sh, json_pack("{s:s,s:O,s:I,s:I}", "url", d->shard[k].base, "step",
                                        json_object_get(descs[k], "step"), "offset", (json_int_t)l->lo[k],
                                        "size", (json_int_t)(l->lo[k + 1] - l->lo[k])));
  json_object_set_new(o, "tensors", ts);
  json_object_set_new(o, "size", json_integer((json_int_t)l->n));
  json_t *steps = json_array();
  for (size_t k = 0; k < d->nshards; k++) json_array_append(steps, json_object_get(descs[k], "step"));
  json_object_set_new(o, "step", json_integer((json_int_t)step));
  json_object_set_new(o, "steps", steps);
  json_object_set_new(o, "shards", sh);
  if (out && !(*out = dump(o, err))) rc = DESCENT_ENOMEM;
  json_decref(o);
  for (size_t k = 0; k < d->nshards; k++) json_decref(descs[k]);
  return rc;
}

int descent_describe(descent *d, const char *name, char **desc, descent_error *err) {
  if (!d || !desc) return descent__fail(err, DESCENT_EINVAL, "describe: NULL handle or output");
  *desc = NULL;
  int rc = descent__check_name(name, err);
  if (rc < 0) return rc;
  if (d->nshards > 1) return describe_sharded(d, name, desc, err);
  char path[128];
  snprintf(path, sizeof path, "/v1/optimizers/%s", name);
  return single(d, "GET", path, NULL, desc, err);
}

/* ---- create --------------------------------------------------------------------- */

static int create_sharded(descent *d, const char *spec, char **desc, descent_error *err) {
  size_t s = d->nshards;
  char **bodies = NULL, name[DESCENT__NAME_MAX + 1];
  int rc = descent__split_spec(d, spec, &bodies, name, sizeof name, err);
  if (rc < 0) return rc;
  descent__req *r = descent__reqs_new(s), *del = descent__reqs_new(s);
  if (!r || !del) {
    rc = descent__fail(err, DESCENT_ENOMEM, NULL);
    goto out;
  }
  for (size_t k = 0; k < s; k++) {
    descent__req_init(&r[k], k, "POST");
    snprintf(r[k].path, sizeof r[k].path, "/v1/optimizers");
    r[k].body = bodies[k];
    r[k].body_len = strlen(bodies[k]);
    r[k].content_type = "application/json";
  }
  if ((rc = descent__perform(d, r, s, err)) < 0) goto out;
  for (size_t k = 0; k < s && rc == 0; k++) rc = descent__req_result(d, &r[k], err, NULL);
  if (rc < 0) {
    /* undo the shards that were created, so a retry starts clean */
    size_t m = 0;
    for (size_t k = 0; k < s; k++)
      if (r[k].cc == CURLE_OK && r[k].status == 201) {
        descent__req_init(&del[m], k, "DELETE");
        snprintf(del[m].path, sizeof del[m].path, "/v1/optimizers/%s", name);
        del[m++].sink = true;
      }
    if (m) descent__perform(d, del, m, NULL);
    goto out;
  }
  descent__layout_forget(d, name);
  if (desc) rc = describe_sharded(d, name, desc, err);
out:
  descent__reqs_free(r, s);
  descent__reqs_free(del, s);
  if (bodies)
    for (size_t k = 0; k < s; k++) free(bodies[k]);
  free(bodies);
  return rc;
}

int descent_create(descent *d, const char *spec_json, char **desc, descent_error *err) {
  if (desc) *desc = NULL;
  if (!d || !spec_json) return descent__fail(err, DESCENT_EINVAL, "create: NULL handle or spec");
  if (d->nshards > 1) return create_sharded(d, spec_json, desc, err);
  return single(d, "POST", "/v1/optimizers", spec_json, desc, err);
}

/* ---- list ----------------------------------------------------------------------- */

/* One entry per name over every shard's list: sizes summed, every shard's
 * step, consistent = present everywhere at one step. */
static int list_sharded(descent *d, char **out, descent_error *err) {
  size_t s = d->nshards;
  json_t *lists[DESCENT__MAX_SHARDS] = {0}, *merged = json_array();
  descent__req *r = descent__reqs_new(s);
  int rc = 0;
  if (!r || !merged) {
    rc = descent__fail(err, DESCENT_ENOMEM, NULL);
    goto out;
  }
  for (size_t k = 0; k < s; k++) {
    descent__req_init(&r[k], k, "GET");
    snprintf(r[k].path, sizeof r[k].path, "/v1/optimizers");
  }
  if ((rc = descent__perform(d, r, s, err)) < 0) goto out;
  for (size_t k = 0; k < s && rc == 0; k++) {
    if ((rc = descent__req_result(d, &r[k], err, NULL)) < 0) break;
    json_t *root = r[k].text ? json_loads(r[k].text, 0, NULL) : NULL;
    lists[k] = json_incref(json_object_get(root, "optimizers")); /* keep only the array */
    json_decref(root);
    if (!json_is_array(lists[k])) {
      rc = descent__fail(err, DESCENT_EPROTO, "the list is not {\"optimizers\": [...]}");
      descent__prefix_shard(err, d, k);
    }
  }
  if (rc < 0) goto out;
  for (size_t k = 0; k < s; k++) {
    size_t i;
    json_t *e;
    json_array_foreach(lists[k], i, e) {
      const char *nm = json_string_value(json_object_get(e, "name"));
      if (!nm) continue;
      json_t *m = NULL, *x;
      size_t j;
      json_array_foreach(merged, j, x) if (!strcmp(json_string_value(json_object_get(x, "name")), nm)) m = x;
      if (!m) {
        m = json_copy(e);
        json_t *steps = json_array();
        for (size_t q = 0; q < s; q++) json_array_append_new(steps, json_null());
        json_object_set_new(m, "steps", steps);
        json_object_set_new(m, "size", json_integer(0));
        json_array_append_new(merged, m);
      }
      json_array_set(json_object_get(m, "steps"), k, json_object_get(e, "step"));
      json_object_set_new(m, "size", json_integer(json_integer_value(json_object_get(m, "size")) +
                                                  json_integer_value(json_object_get(e, "size"))));
    }
  }
  size_t j;
  json_t *m;
  json_array_foreach(merged, j, m) {
    json_t *steps = json_object_get(m, "steps");
    bool ok = true;
    json_int_t lo = -1;
    for (size_t k = 0; k < s; k++) {
      json_t *st = json_array_get(steps, k);
      if (!json_is_integer(st)) ok = false;
      else if (lo < 0 || json_integer_value(st) < lo) lo = json_integer_value(st);
      if (ok && json_integer_value(st) != json_integer_value(json_array_get(steps, 0))) ok = false;
    }
    json_object_set_new(m, "step", json_integer(lo));
    json_object_set_new(m, "consistent", json_boolean(ok));
  }
  json_t *o = json_pack("{s:O}", "optimizers", merged);
  if (!(*out = dump(o, err))) rc = DESCENT_ENOMEM;
  json_decref(o);
out:
  for (size_t k = 0; k < s; k++) json_decref(lists[k]);
  json_decref(merged);
  descent__reqs_free(r, s);
  return rc;
}

int descent_list(descent *d, char **json, descent_error *err) {
  if (!d || !json) return descent__fail(err, DESCENT_EINVAL, "list: NULL handle or output");
  *json = NULL;
  if (d->nshards > 1) return list_sharded(d, json, err);
  return single(d, "GET", "/v1/optimizers", NULL, json, err);
}

/* ---- replicas ------------------------------------------------------------------ */

int descent_cluster(descent *d, char **json, descent_error *err) {
  if (!d || !json) return descent__fail(err, DESCENT_EINVAL, "cluster: NULL handle or output");
  *json = NULL;
  return single(d, "GET", "/v1/cluster", NULL, json, err);
}

int descent_member_add(descent *d, uint64_t id, const char *address, char **json, descent_error *err) {
  if (json) *json = NULL;
  if (!d || !address || !id || strlen(address) > 200 || strpbrk(address, "\"\\"))
    return descent__fail(err, DESCENT_EINVAL, "member add: an id >= 1 and a Raft address HOST:PORT");
  char body[256];
  snprintf(body, sizeof body, "{\"id\":%llu,\"address\":\"%s\"}", (unsigned long long)id, address);
  char *out = NULL;
  int rc = single(d, "POST", "/v1/cluster/members", body, &out, err);
  if (json) *json = out;
  else free(out);
  return rc;
}

int descent_member_remove(descent *d, uint64_t id, char **json, descent_error *err) {
  if (json) *json = NULL;
  if (!d || !id) return descent__fail(err, DESCENT_EINVAL, "member remove: an id >= 1");
  char path[64];
  snprintf(path, sizeof path, "/v1/cluster/members/%llu", (unsigned long long)id);
  char *out = NULL;
  int rc = single(d, "DELETE", path, NULL, &out, err);
  if (json) *json = out;
  else free(out);
  return rc;
}

/* ---- delete --------------------------------------------------------------------- */

int descent_delete(descent *d, const char *name, descent_error *err) {
  if (!d) return descent__fail(err, DESCENT_EINVAL, "delete: NULL handle");
  int rc = descent__check_name(name, err);
  if (rc < 0) return rc;
  descent__layout_forget(d, name);
  size_t s = d->nshards;
  descent__req *r = descent__reqs_new(s);
  if (!r) return descent__fail(err, DESCENT_ENOMEM, NULL);
  for (size_t k = 0; k < s; k++) {
    descent__req_init(&r[k], k, "DELETE");
    snprintf(r[k].path, sizeof r[k].path, "/v1/optimizers/%s", name);
  }
  if ((rc = descent__perform(d, r, s, err)) < 0) goto out;
  size_t gone = 0;
  descent_error unknown = {0};
  int unknown_rc = 0;
  for (size_t k = 0; k < s; k++) {
    descent_error e = {0};
    int x = descent__req_result(d, &r[k], &e, NULL);
    if (x == 0) {
      gone++;
    } else if (x == DESCENT_EREFUSED && !strcmp(e.code, "unknown_instance")) {
      if (!unknown_rc) { /* matters only if no shard had it */
        unknown = e;
        unknown_rc = x;
      }
    } else {
      if (err) *err = e;
      rc = x;
      goto out;
    }
  }
  if (!gone && err) *err = unknown;
  rc = gone ? 0 : unknown_rc;
out:
  descent__reqs_free(r, s);
  return rc;
}

/* ---- patch ---------------------------------------------------------------------- */

int descent_patch(descent *d, const char *name, const char *patch_json, char **desc, descent_error *err) {
  if (desc) *desc = NULL;
  if (!d || !patch_json) return descent__fail(err, DESCENT_EINVAL, "patch: NULL handle or body");
  int rc = descent__check_name(name, err);
  if (rc < 0) return rc;
  char path[128];
  snprintf(path, sizeof path, "/v1/optimizers/%s", name);
  if (d->nshards == 1) return single(d, "PATCH", path, patch_json, desc, err);
  /* sharded: clip_grad_norm in sync mode would clip each slice by its own norm */
  const descent__layout *l;
  if ((rc = descent__layout_get(d, name, false, &l, err)) < 0) return rc;
  json_t *p = json_loads(patch_json, 0, NULL);
  if (l->sync && json_is_object(p)) { /* the configuration after the patch must still shard exactly */
    json_t *cfg = json_pack("{s:s,s:s}", "algorithm", l->algorithm, "mode", "sync");
    if (l->workers >= 0) json_object_set_new(cfg, "workers", json_integer(l->workers));
    if (l->min_workers >= 0) json_object_set_new(cfg, "min_workers", json_integer(l->min_workers));
    json_object_update(cfg, p);
    rc = descent__check_shardable(cfg, err);
    json_decref(cfg);
  }
  json_decref(p);
  if (rc < 0) return rc;
  /* shard 0 checks the body first; the others follow at once */
  descent__req *r = descent__reqs_new(d->nshards);
  if (!r) return descent__fail(err, DESCENT_ENOMEM, NULL);
  for (size_t k = 0; k < d->nshards; k++) {
    descent__req_init(&r[k], k, "PATCH");
    snprintf(r[k].path, sizeof r[k].path, "%s", path);
    r[k].body = patch_json;
    r[k].body_len = strlen(patch_json);
    r[k].content_type = "application/json";
    r[k].sink = true;
  }
  if ((rc = descent__perform(d, r, 1, err)) < 0 || (rc = descent__req_result(d, &r[0], err, NULL)) < 0) goto out;
  if ((rc = descent__perform(d, r + 1, d->nshards - 1, err)) < 0) goto out;
  for (size_t k = 1; k < d->nshards && rc == 0; k++) rc = descent__req_result(d, &r[k], err, NULL);
  descent__layout_forget(d, name);
  if (rc == 0 && desc) rc = describe_sharded(d, name, desc, err);
out:
  descent__reqs_free(r, d->nshards);
  return rc;
}

int descent_set_hyper(descent *d, const char *name, const char *key, double value, descent_error *err) {
  if (!key || !*key) return descent__fail(err, DESCENT_EINVAL, "set_hyper: a hyperparameter name is required");
  json_t *o = json_pack("{s:{s:f}}", "hyper", key, value);
  char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  if (!body) return descent__fail(err, isfinite(value) ? DESCENT_ENOMEM : DESCENT_EINVAL, "set_hyper: %s",
                                  isfinite(value) ? "out of memory" : "the value must be finite");
  int rc = descent_patch(d, name, body, NULL, err);
  free(body);
  return rc;
}

/* ---- info ----------------------------------------------------------------------- */

void descent_info_free(descent_info *info) {
  if (!info) return;
  free(info->tensors);
  info->tensors = NULL;
  info->ntensors = 0;
}

static int info_from_json(json_t *o, descent_info *info, descent_error *err) {
  json_t *ts = json_object_get(o, "tensors");
  json_t *size = json_object_get(o, "size"), *step = json_object_get(o, "step");
  if (!json_is_array(ts) || !json_is_integer(size) || !json_is_integer(step))
    return descent__fail(err, DESCENT_EPROTO, "the description has no tensors, size or step");
  const char *alg = json_string_value(json_object_get(o, "algorithm"));
  const char *mode = json_string_value(json_object_get(o, "mode"));
  snprintf(info->algorithm, sizeof info->algorithm, "%s", alg ? alg : "");
  snprintf(info->mode, sizeof info->mode, "%s", mode ? mode : "");
  info->step = (uint64_t)json_integer_value(step);
  info->size = (size_t)json_integer_value(size);
  info->ntensors = json_array_size(ts);
  if (!(info->tensors = calloc(info->ntensors ? info->ntensors : 1, sizeof *info->tensors)))
    return descent__fail(err, DESCENT_ENOMEM, NULL);
  size_t i;
  json_t *t;
  json_array_foreach(ts, i, t) {
    descent_tensor *x = &info->tensors[i];
    json_t *shape = json_object_get(t, "shape");
    snprintf(x->name, sizeof x->name, "%s", json_string_value(json_object_get(t, "name")) ? json_string_value(json_object_get(t, "name")) : "");
    x->offset = (size_t)json_integer_value(json_object_get(t, "offset"));
    x->count = (size_t)json_integer_value(json_object_get(t, "count"));
    x->sparse = json_is_true(json_object_get(t, "sparse"));
    x->ndim = (int)(json_array_size(shape) > 8 ? 8 : json_array_size(shape));
    for (int j = 0; j < x->ndim; j++) x->shape[j] = (uint64_t)json_integer_value(json_array_get(shape, (size_t)j));
  }
  return 0;
}

int descent_info_get(descent *d, const char *name, descent_info *info, descent_error *err) {
  if (!info) return descent__fail(err, DESCENT_EINVAL, "info: NULL output");
  memset(info, 0, sizeof *info);
  char *text = NULL;
  int rc = descent_describe(d, name, &text, err);
  if (rc < 0) return rc;
  json_t *o = json_loads(text, 0, NULL);
  free(text);
  rc = o ? info_from_json(o, info, err) : descent__fail(err, DESCENT_EPROTO, "the description is not JSON");
  json_decref(o);
  return rc;
}

/* ---- on-demand snapshot ---------------------------------------------------------- */

int descent_snapshot(descent *d, const char *name, uint64_t *step, descent_error *err) {
  if (!d) return descent__fail(err, DESCENT_EINVAL, "snapshot: NULL handle");
  int rc = descent__check_name(name, err);
  if (rc < 0) return rc;
  size_t s = d->nshards;
  int64_t steps[DESCENT__MAX_SHARDS];
  descent__req *r = descent__reqs_new(s);
  if (!r) return descent__fail(err, DESCENT_ENOMEM, NULL);
  for (size_t k = 0; k < s; k++) {
    descent__req_init(&r[k], k, "POST");
    snprintf(r[k].path, sizeof r[k].path, "/v1/optimizers/%s/snapshot", name);
  }
  if ((rc = descent__perform(d, r, s, err)) < 0) goto out;
  for (size_t k = 0; k < s && rc == 0; k++) {
    if ((rc = descent__req_result(d, &r[k], err, NULL)) < 0) break;
    json_t *o = r[k].text ? json_loads(r[k].text, 0, NULL) : NULL;
    json_t *st = json_object_get(o, "step");
    if (!json_is_integer(st) || !json_is_true(json_object_get(o, "durable"))) {
      rc = descent__fail(err, DESCENT_EPROTO, "the snapshot reply is not {\"name\", \"step\", \"durable\": true}");
      descent__prefix_shard(err, d, k);
    } else {
      steps[k] = json_integer_value(st);
    }
    json_decref(o);
  }
  if (rc < 0) goto out;
  for (size_t k = 1; k < s; k++)
    if (steps[k] != steps[0]) {
      rc = descent__mismatch(d, name, steps, err);
      goto out;
    }
  if (step) *step = (uint64_t)steps[0];
out:
  descent__reqs_free(r, s);
  return rc;
}
