/* handlers_common: lookups every handler family shares. */
#include <errno.h>
#include <stdlib.h>

#include "handlers.h"
#include "http_reply.h"
#include "http_server.h"
#include "registry.h"
#include "spec.h"
#include <math.h>

instance *handlers_instance(request *r, enum MHD_Result *ret) {
  if (r->in) return r->in;
  r->in = registry_get(r->app->reg, r->name);
  if (!r->in) {
    derr e;
    derr_set(&e, E_NO_INSTANCE, "no optimizer instance named '%s'", r->name);
    *ret = reply_error(r, E_NO_INSTANCE, &e);
  }
  return r->in;
}

int handlers_json_body(request *r, enum MHD_Result *ret) {
  derr e = {0};
  int rc = jdoc_parse(&r->doc, r->app->pool, r->body ? r->body : "", r->len, &e);
  r->doc_used = true;
  if (rc < 0) {
    *ret = reply_error(r, rc, &e);
    return -1;
  }
  return 0;
}

int handlers_query_int(request *r, const char *key, int64_t lo, int64_t hi, int64_t *out, enum MHD_Result *ret) {
  const char *v = http_arg(r, key);
  if (!v) return 0;
  char *end;
  errno = 0;
  long long x = strtoll(v, &end, 10);
  if (!*v || *end || errno || x < lo || x > hi) {
    derr e;
    derr_set(&e, E_BAD_QUERY, "?%s=%.40s: expected an integer between %lld and %lld", key, v, (long long)lo,
             (long long)hi);
    *ret = reply_error(r, E_BAD_QUERY, &e);
    return -1;
  }
  *out = x;
  return 1;
}

json_t *handlers_describe_json(instance *in) {
  instance_cfg c;
  instance_cfg_get(in, &c);
  instance_info info;
  instance_info_get(in, &info);
  json_t *o = spec_cfg_json(&c);
  json_object_set_new(o, "step", json_integer((json_int_t)info.step));
  json_object_set_new(o, "lr", jbuf_real(info.lr));
  json_object_set_new(o, "workers_seen", json_integer((json_int_t)info.workers_seen));
  json_object_set_new(o, "waiting", json_integer((json_int_t)info.waiting));
  json_object_set_new(o, "created", jbuf_real(info.created));
  if (c.alg == OPTIM_RANDOM_SEARCH)
    json_object_set_new(o, "best_loss", jbuf_real(info.best_loss));
  instance_cfg_free(&c);
  return o;
}
