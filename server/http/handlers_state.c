/* handlers_state: exporting the whole state (GET .../state) and importing
 * one (PUT .../state), which creates or atomically replaces the instance.
 * An exported state imported into a fresh daemon continues bit for bit. */
#include <stdio.h>

#include "handlers.h"
#include "http_reply.h"
#include "http_server.h"
#include "log.h"
#include "persist.h"
#include "registry.h"
#include "spec.h"

enum MHD_Result h_state_get(request *r) {
  enum MHD_Result ret = MHD_NO;
  instance *in = handlers_instance(r, &ret);
  if (!in) return ret;
  instance_state s;
  if (instance_export(in, &s) < 0) return reply_error(r, E_QUOTA, NULL);
  jbuf b;
  jbuf_init(&b, r->app->pool, s.cfg.n * 12 * (1 + (size_t)__builtin_popcount(s.have)) + 4096);
  spec_state_write(&b, &s);
  jbuf_put(&b, "\n", 1);
  instance_state_free(&s);
  return reply_jbuf(r, MHD_HTTP_OK, &b, "application/json");
}

enum MHD_Result h_state_put(request *r) {
  enum MHD_Result ret = MHD_NO;
  if (handlers_json_body(r, &ret) < 0) return ret;
  derr e = {0};
  instance_state s;
  int rc = spec_parse_state(&r->doc, r->name, (uint64_t)r->app->cfg->max_params, &s, &e);
  if (rc < 0) return reply_error(r, rc, &e);
  instance *old = registry_get(r->app->reg, r->name);
  uint64_t replacing = old ? instance_cfg_footprint(&old->cfg) : 0;
  if (old) instance_unref(old);
  if ((rc = registry_check_quota(r->app->reg, &s.cfg, replacing, &e)) < 0) {
    instance_state_free(&s);
    return reply_error(r, rc, &e);
  }
  instance *in = instance_from_state(&s, &r->app->env);
  instance_state_free(&s);
  if (!in) return reply_error(r, E_QUOTA, NULL);
  pthread_mutex_lock(&in->cfg_lock);
  /* durable first: if the data dir refuses, nothing changes */
  if (r->app->ps && (rc = persist_save(r->app->ps, in, &e)) < 0) {
    pthread_mutex_unlock(&in->cfg_lock);
    log_error("snapshot failed", "instance=%s error=\"%s\"", in->cfg.name, e.msg);
    instance_unref(in);
    return reply_error(r, rc, &e);
  }
  if ((rc = registry_replace(r->app->reg, in, &old, &e)) < 0) {
    /* lost a race for the quota: put the files back as they were */
    derr e2 = {0};
    instance *cur = registry_get(r->app->reg, r->name);
    if (r->app->ps) {
      if (cur) persist_save(r->app->ps, cur, &e2);
      else persist_remove(r->app->ps, r->name, &e2);
    }
    if (cur) instance_unref(cur);
    pthread_mutex_unlock(&in->cfg_lock);
    instance_unref(in);
    return reply_error(r, rc, &e);
  }
  if (old) {
    instance_close(old, E_CONFLICT, "the instance was replaced by an imported state");
    instance_unref(old);
  }
  pthread_mutex_unlock(&in->cfg_lock);
  log_info("state imported", "instance=%s step=%llu replaced=%s", in->cfg.name, (unsigned long long)in->step,
           replacing ? "yes" : "no");
  json_t *desc = handlers_describe_json(in);
  instance_unref(in);
  return reply_json(r, replacing ? MHD_HTTP_OK : MHD_HTTP_CREATED, desc);
}
