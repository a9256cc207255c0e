/* handlers_optimizers: create, list, describe, change and delete instances.
 * Configuration changes are written to the data dir before the reply. */
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

/* Saves in when there is a data dir; on failure replies 500 and returns -1. */
static int save(request *r, instance *in, enum MHD_Result *ret) {
  if (!r->app->ps) return 0;
  derr e = {0};
  if (persist_save(r->app->ps, in, &e) < 0) {
    log_error("snapshot failed", "instance=%s error=\"%s\"", in->cfg.name, e.msg);
    *ret = reply_error(r, E_IO, &e);
    return -1;
  }
  return 0;
}

enum MHD_Result h_create(request *r) {
  enum MHD_Result ret = MHD_NO;
  if (handlers_json_body(r, &ret) < 0) return ret;
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
  int rc = spec_parse_create(&r->doc, (uint64_t)r->app->cfg->max_params, &cfg, &params, &e);
  if (rc < 0) return reply_error(r, rc, &e);
  r->decode_ms = 0;
  if ((rc = registry_check_quota(r->app->reg, &cfg, 0, &e)) < 0) {
    mem_free_floats(params, cfg.n);
    instance_cfg_free(&cfg);
    return reply_error(r, rc, &e);
  }
  instance *in = instance_new(&cfg, &r->app->env);
  if (!in) {
    mem_free_floats(params, cfg.n);
    instance_cfg_free(&cfg);
    derr_set(&e, E_QUOTA, "not enough memory for this instance");
    return reply_error(r, E_QUOTA, &e);
  }
  memcpy(in->params, params, cfg.n * sizeof(float));
  mem_free_floats(params, cfg.n);
  instance_cfg_free(&cfg);
  pthread_mutex_lock(&in->cfg_lock);
  if ((rc = registry_add(r->app->reg, in, &e)) < 0) {
    pthread_mutex_unlock(&in->cfg_lock);
    instance_unref(in);
    return reply_error(r, rc, &e);
  }
  if (save(r, in, &ret) < 0) {
    instance *gone = registry_remove(r->app->reg, in->cfg.name);
    if (gone) instance_unref(gone);
    pthread_mutex_unlock(&in->cfg_lock);
    instance_unref(in);
    return ret;
  }
  pthread_mutex_unlock(&in->cfg_lock);
  log_info("instance created", "instance=%s algorithm=%s size=%zu mode=%s", in->cfg.name,
           optim_alg_name(in->cfg.alg), in->cfg.n, in->cfg.mode == MODE_SYNC ? "sync" : "async");
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
    instance *in = all[i];
    json_array_append_new(arr, json_pack("{s:s,s:s,s:s,s:I,s:I,s:I}", "name", in->cfg.name, "algorithm",
                                         optim_alg_name(in->cfg.alg), "mode",
                                         in->cfg.mode == MODE_SYNC ? "sync" : "async", "step",
                                         (json_int_t)info.step, "size", (json_int_t)in->cfg.n, "workers_seen",
                                         (json_int_t)info.workers_seen));
    instance_unref(in);
  }
  free(all);
  return reply_json(r, MHD_HTTP_OK, json_pack("{s:o}", "optimizers", arr));
}

enum MHD_Result h_describe(request *r) {
  enum MHD_Result ret = MHD_NO;
  instance *in = handlers_instance(r, &ret);
  if (!in) return ret;
  return reply_json(r, MHD_HTTP_OK, handlers_describe_json(in));
}

/* Writes the instance's state with configuration c (the change about to be
 * made) before it is made in memory: a refused write changes nothing. */
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

enum MHD_Result h_patch(request *r) {
  enum MHD_Result ret = MHD_NO;
  instance *in = handlers_instance(r, &ret);
  if (!in) return ret;
  if (handlers_json_body(r, &ret) < 0) return ret;
  derr e = {0};
  pthread_mutex_lock(&in->cfg_lock);
  instance_cfg cur, next;
  instance_cfg_get(in, &cur);
  int rc = spec_parse_patch(&r->doc, &cur, &next, &e);
  if (rc == 0) {
    uint64_t more = instance_cfg_footprint(&next) > instance_cfg_footprint(&cur)
                        ? instance_cfg_footprint(&next) - instance_cfg_footprint(&cur)
                        : 0;
    if (more && registry_floats(r->app->reg) + more > (uint64_t)r->app->cfg->max_params)
      rc = derr_set(&e, E_QUOTA, "the new optimizer state needs %llu more floats than --max-params allows",
                    (unsigned long long)more);
    if (rc == 0) rc = save_with(r, in, &next, &e);
    if (rc == 0) rc = instance_reconfigure(in, &next, &e);
    instance_cfg_free(&next);
  }
  instance_cfg_free(&cur);
  pthread_mutex_unlock(&in->cfg_lock);
  if (rc < 0) return reply_error(r, rc, &e);
  log_info("instance changed", "instance=%s", in->cfg.name);
  return reply_json(r, MHD_HTTP_OK, handlers_describe_json(in));
}

enum MHD_Result h_delete(request *r) {
  enum MHD_Result ret = MHD_NO;
  instance *in = handlers_instance(r, &ret);
  if (!in) return ret;
  /* the files go first: if they cannot, nothing changes */
  pthread_mutex_lock(&in->cfg_lock);
  derr e = {0};
  int rc = r->app->ps ? persist_remove(r->app->ps, r->name, &e) : 0;
  if (rc < 0) {
    pthread_mutex_unlock(&in->cfg_lock);
    log_error("snapshot removal failed", "instance=%s error=\"%s\"", r->name, e.msg);
    return reply_error(r, rc, &e);
  }
  instance *gone = registry_remove(r->app->reg, r->name);
  if (gone) {
    instance_close(gone, E_NO_INSTANCE, "the instance was deleted");
    instance_unref(gone);
  }
  pthread_mutex_unlock(&in->cfg_lock);
  log_info("instance deleted", "instance=%s", r->name);
  return reply_json(r, MHD_HTTP_OK, json_pack("{s:s,s:b}", "name", r->name, "deleted", 1));
}
