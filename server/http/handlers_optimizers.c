/* handlers_optimizers: create, list, describe, change, delete and snapshot
 * instances.  Every change is written to the data dir before it is made in
 * memory and before the reply: a refused write changes nothing.  Create and
 * delete hold the registry's catalog lock, so no request sees an instance
 * before its file is durable.  HTTP threads. */
#include <stdio.h>
#include <string.h>

#include "handlers.h"
#include "http_reply.h"
#include "http_server.h"
#include "log.h"
#include "mem.h"
#include "persist.h"
#include "registry.h"
#include "spec.h"

/* Writes in's snapshot when there is a data dir (the caller holds its
 * change lock); on failure logs it and returns the error. */
static int save(request *r, instance *in, derr *e) {
  if (!r->app->ps) return 0;
  int rc = persist_save(r->app->ps, in, e);
  if (rc < 0) log_error("snapshot failed", "instance=%s error=\"%s\"", instance_name(in), e->msg);
  return rc;
}

/* A new instance from cfg and params, charged to the quota and written to
 * the data dir, not yet visible.  Under the catalog lock.  NULL on failure
 * (e says why; nothing was changed). */
static instance *build(request *r, const instance_cfg *cfg, const float *params, const spec_rows *rows, derr *e) {
  registry *reg = r->app->reg;
  if (registry_check_new(reg, cfg->name, e) < 0 || registry_check_quota(reg, instance_cfg_footprint(cfg), e) < 0)
    return NULL;
  instance *in = instance_new(cfg, &r->app->env);
  if (!in) {
    derr_set(e, E_QUOTA, "not enough memory for this instance");
    return NULL;
  }
  instance_init_params(in, params);
  for (size_t i = 0; rows && i < cfg->ntensors; i++) /* a sparse tensor's explicit initial rows */
    if (rows[i].k && instance_init_rows(in, (int)i, rows[i].rows, rows[i].k, rows[i].vals) < 0) {
      derr_set(e, E_QUOTA, "not enough memory for the initial rows of %s", cfg->tensors[i].name);
      instance_unref(in);
      return NULL;
    }
  uint64_t floats = instance_floats(in);
  if (registry_charge(reg, floats, e) < 0) {
    instance_unref(in);
    return NULL;
  }
  instance_change_lock(in);
  int rc = save(r, in, e); /* durable before anyone can see it */
  instance_change_unlock(in);
  if (rc < 0) {
    registry_uncharge(reg, floats);
    instance_unref(in);
    return NULL;
  }
  return in;
}

enum MHD_Result h_create(request *r) {
  if (handlers_parse_body(r) == HANDLERS_REPLIED) return http_replied(r);
  derr e = {0};
  if (r->name[0] && json_is_object(r->doc.root)) { /* PUT /v1/optimizers/{name}: the name is in the path */
    json_t *n = json_object_get(r->doc.root, "name");
    if (!n) json_object_set_new(r->doc.root, "name", json_string(r->name));
    else if (!json_is_string(n) || strcmp(json_string_value(n), r->name)) {
      derr_set(&e, E_BAD_REQUEST, "name: the body names '%.64s' but the path '%s'",
               json_is_string(n) ? json_string_value(n) : "?", r->name);
      return reply_error(r, E_BAD_REQUEST, &e);
    }
  }
  instance_cfg cfg;
  float *params = NULL;
  spec_rows *rows = NULL;
  int rc = spec_parse_create_rows(&r->doc, (uint64_t)r->app->cfg->max_params, &cfg, &params, &rows, &e);
  if (rc < 0) return reply_error(r, rc, &e);
  r->decode_ms = 0;
  registry_change_lock(r->app->reg);
  instance *in = build(r, &cfg, params, rows, &e);
  if (in && (rc = registry_add(r->app->reg, in, &e)) < 0) { /* cannot happen under the catalog lock */
    registry_uncharge(r->app->reg, instance_floats(in));
    instance_unref(in);
    in = NULL;
  }
  registry_change_unlock(r->app->reg);
  mem_free_floats(params, cfg.n);
  spec_rows_free(rows, cfg.ntensors);
  instance_cfg_free(&cfg);
  if (!in) return reply_error(r, e.code, &e);
  const instance_layout *l = instance_layout_of(in);
  log_info("instance created", "instance=%s algorithm=%s size=%zu mode=%s", l->name, optim_alg_name(l->alg), l->n,
           l->mode == MODE_SYNC ? "sync" : "async");
  json_t *desc = handlers_describe_json(in);
  instance_unref(in);
  return reply_json(r, MHD_HTTP_CREATED, desc);
}

enum MHD_Result h_list(request *r) {
  instance **all;
  size_t n = registry_list(r->app->reg, &all);
  json_t *arr = json_array();
  for (size_t i = 0; i < n; i++) {
    instance_info info;
    instance_info_get(all[i], &info);
    const instance_layout *l = instance_layout_of(all[i]);
    json_array_append_new(arr, json_pack("{s:s,s:s,s:s,s:I,s:I,s:I}", "name", l->name, "algorithm",
                                         optim_alg_name(l->alg), "mode", l->mode == MODE_SYNC ? "sync" : "async",
                                         "step", (json_int_t)info.step, "size", (json_int_t)l->n, "workers_seen",
                                         (json_int_t)info.workers_seen));
    instance_unref(all[i]);
  }
  free(all);
  return reply_json(r, MHD_HTTP_OK, json_pack("{s:o}", "optimizers", arr));
}

enum MHD_Result h_describe(request *r) {
  instance *in;
  if (handlers_find(r, &in) == HANDLERS_REPLIED) return http_replied(r);
  return reply_json(r, MHD_HTTP_OK, handlers_describe_json(in));
}

/* Writes the instance's state with configuration c (the change about to be
 * made) before it is made in memory: a refused write changes nothing.  The
 * caller holds the change lock, so no snapshot of this instance can come
 * between this write and the change in memory. */
static int save_with(request *r, instance *in, const instance_cfg *c, derr *e) {
  if (!r->app->ps) return 0;
  instance_state st;
  if (instance_export(in, &st) < 0) return derr_set(e, E_QUOTA, "out of memory copying the state");
  instance_cfg_free(&st.cfg);
  instance_cfg_copy(&st.cfg, c);
  st.version++; /* what instance_reconfigure will make it */
  int rc = persist_save_state(r->app->ps, &st, e);
  instance_state_free(&st);
  if (rc < 0) log_error("snapshot failed", "instance=%s error=\"%s\"", c->name, e->msg);
  return rc;
}

/* Under the change lock: parse, charge, write, change. */
static int patch_locked(request *r, instance *in, derr *e) {
  bool deleted;
  instance_version(in, &deleted);
  if (deleted) return derr_set(e, E_NO_INSTANCE, "the instance was deleted or replaced meanwhile");
  instance_cfg cur, next;
  instance_cfg_get(in, &cur);
  int rc = spec_parse_patch(&r->doc, &cur, &next, e);
  instance_cfg_free(&cur);
  if (rc < 0) return rc;
  uint64_t cost = instance_reconfigure_cost(in, &next);
  unsigned added = 0;
  if ((rc = registry_charge(r->app->reg, cost, e)) == 0) {
    /* memory first, then the file, then the change, which can no longer fail:
     * a file never holds a configuration that memory refused */
    if ((rc = instance_reconfigure_prepare(in, &next, &added, e)) == 0 && (rc = save_with(r, in, &next, e)) < 0)
      instance_reconfigure_abort(in, added);
    if (rc == 0) rc = instance_reconfigure(in, &next, e);
    if (rc < 0) registry_uncharge(r->app->reg, cost);
  }
  instance_cfg_free(&next);
  return rc;
}

enum MHD_Result h_patch(request *r) {
  instance *in;
  if (handlers_find(r, &in) == HANDLERS_REPLIED) return http_replied(r);
  if (handlers_parse_body(r) == HANDLERS_REPLIED) return http_replied(r);
  derr e = {0};
  instance_change_lock(in);
  int rc = patch_locked(r, in, &e);
  instance_change_unlock(in);
  if (rc < 0) return reply_error(r, rc, &e);
  log_info("instance changed", "instance=%s", instance_name(in));
  return reply_json(r, MHD_HTTP_OK, handlers_describe_json(in));
}

enum MHD_Result h_delete(request *r) {
  instance *in;
  if (handlers_find(r, &in) == HANDLERS_REPLIED) return http_replied(r);
  derr e = {0};
  registry *reg = r->app->reg;
  registry_change_lock(reg);
  instance *cur = registry_get(reg, r->name); /* the one to delete: another request may have replaced it */
  int rc = cur ? 0 : derr_set(&e, E_NO_INSTANCE, NULL);
  if (cur) {
    instance_change_lock(cur);
    /* the files go first: if they cannot, nothing changes */
    if (r->app->ps && (rc = persist_remove(r->app->ps, r->name, &e)) < 0)
      log_error("snapshot removal failed", "instance=%s error=\"%s\"", r->name, e.msg);
    instance *gone = rc == 0 ? registry_remove(reg, r->name) : NULL;
    if (gone) {
      instance_close(gone, E_NO_INSTANCE, "the instance was deleted");
      registry_uncharge(reg, instance_floats(gone));
      instance_unref(gone);
    }
    instance_change_unlock(cur);
    instance_unref(cur);
  }
  registry_change_unlock(reg);
  if (rc < 0) return reply_error(r, rc, &e);
  log_info("instance deleted", "instance=%s", r->name);
  return reply_json(r, MHD_HTTP_OK, json_pack("{s:s,s:b}", "name", r->name, "deleted", 1));
}

enum MHD_Result h_snapshot(request *r) {
  instance *in;
  if (handlers_find(r, &in) == HANDLERS_REPLIED) return http_replied(r);
  derr e = {0};
  if (!r->app->ps) return reply_error(r, E_NO_DATA_DIR, NULL);
  uint64_t step;
  if (persist_save_now(r->app->ps, in, &step, &e) < 0) {
    log_error("snapshot failed", "instance=%s error=\"%s\"", instance_name(in), e.msg);
    return reply_error(r, e.code, &e);
  }
  return reply_json(r, MHD_HTTP_OK, json_pack("{s:s,s:I,s:b}", "name", instance_name(in), "step", (json_int_t)step,
                                              "durable", 1));
}
