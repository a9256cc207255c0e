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
  instance *in;
  if (handlers_find(r, &in) == HANDLERS_REPLIED) return http_replied(r);
  instance_state s;
  if (instance_export(in, &s) < 0) return reply_error(r, E_QUOTA, NULL);
  jbuf b;
  jbuf_init(&b, r->app->pool, s.cfg.n * 12 * (1 + (size_t)__builtin_popcount(s.have)) + 4096);
  spec_state_write(&b, &s);
  jbuf_put(&b, "\n", 1);
  instance_state_free(&s);
  return reply_jbuf(r, MHD_HTTP_OK, &b, "application/json");
}

/* Under the catalog lock and the change lock of `old` (the instance it
 * replaces, or NULL): builds the instance of s, charges its quota, writes
 * it, and only then puts it in the registry.  On failure nothing changed. */
static instance *import(request *r, const instance_state *s, instance *old, derr *e) {
  registry *reg = r->app->reg;
  uint64_t old_floats = old ? instance_floats(old) : 0, want = instance_cfg_footprint(&s->cfg);
  if ((!old && registry_check_new(reg, s->cfg.name, e) < 0) ||
      registry_check_quota(reg, want > old_floats ? want - old_floats : 0, e) < 0)
    return NULL;
  instance *in = instance_from_state(s, &r->app->env);
  if (!in) {
    derr_set(e, E_QUOTA, "not enough memory for this state");
    return NULL;
  }
  uint64_t floats = instance_floats(in), more = floats > old_floats ? floats - old_floats : 0;
  if (registry_charge(reg, more, e) < 0) {
    instance_unref(in);
    return NULL;
  }
  instance_change_lock(in);
  int rc = r->app->ps ? persist_save(r->app->ps, in, e) : 0; /* durable first */
  instance_change_unlock(in);
  if (rc < 0) {
    log_error("snapshot failed", "instance=%s error=\"%s\"", s->cfg.name, e->msg);
    registry_uncharge(reg, more);
    instance_unref(in);
    return NULL;
  }
  instance *prev = registry_replace(reg, in);
  if (prev) {
    instance_close(prev, E_CONFLICT, "the instance was replaced by an imported state");
    registry_uncharge(reg, old_floats > floats ? old_floats - floats : 0);
    instance_unref(prev);
  }
  return in;
}

enum MHD_Result h_state_put(request *r) {
  if (handlers_parse_body(r) == HANDLERS_REPLIED) return http_replied(r);
  derr e = {0};
  instance_state s;
  int rc = spec_parse_state(&r->doc, r->name, (uint64_t)r->app->cfg->max_params, &s, &e);
  if (rc < 0) return reply_error(r, rc, &e);
  registry *reg = r->app->reg;
  registry_change_lock(reg);
  instance *old = registry_get(reg, r->name);
  bool replaced = old != NULL;
  if (old) instance_change_lock(old);
  instance *in = import(r, &s, old, &e);
  if (old) {
    instance_change_unlock(old);
    instance_unref(old);
  }
  registry_change_unlock(reg);
  instance_state_free(&s);
  if (!in) return reply_error(r, e.code, &e);
  instance_info info;
  instance_info_get(in, &info);
  log_info("state imported", "instance=%s step=%llu replaced=%s", instance_name(in), (unsigned long long)info.step,
           replaced ? "yes" : "no");
  json_t *desc = handlers_describe_json(in);
  instance_unref(in);
  return reply_json(r, replaced ? MHD_HTTP_OK : MHD_HTTP_CREATED, desc);
}
