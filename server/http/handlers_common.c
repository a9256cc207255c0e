/* handlers_common: lookups every handler family shares (the instance of the
 * path, the JSON body, integer query arguments), each answering the request
 * itself when it is wrong.  HTTP threads. */
#include <errno.h>
#include <stdlib.h>

#include "handlers.h"
#include "http_reply.h"
#include "http_server.h"
#include "registry.h"
#include "spec.h"

handlers_flow handlers_find(request *r, instance **in) {
  if (!r->in) r->in = registry_get(r->app->reg, r->name);
  *in = r->in;
  if (r->in) return HANDLERS_GO_ON;
  derr e;
  derr_set(&e, E_NO_INSTANCE, "no optimizer instance named '%s'", r->name);
  reply_error(r, E_NO_INSTANCE, &e);
  return HANDLERS_REPLIED;
}

handlers_flow handlers_parse_body(request *r) {
  derr e = {0};
  int rc = jdoc_parse(&r->doc, r->app->pool, r->body ? r->body : "", r->len, &e);
  r->doc_used = true;
  if (rc == 0) return HANDLERS_GO_ON;
  reply_error(r, rc, &e);
  return HANDLERS_REPLIED;
}

handlers_flow handlers_arg_int(request *r, const char *key, int64_t lo, int64_t hi, int64_t *out, bool *given) {
  *given = false;
  const char *v = http_arg(r, key);
  if (!v) return HANDLERS_GO_ON;
  char *end;
  errno = 0;
  long long x = strtoll(v, &end, 10);
  if (!*v || *end || errno || x < lo || x > hi) {
    derr e;
    derr_set(&e, E_BAD_QUERY, "?%s=%.40s: expected an integer between %lld and %lld", key, v, (long long)lo,
             (long long)hi);
    reply_error(r, E_BAD_QUERY, &e);
    return HANDLERS_REPLIED;
  }
  *out = x;
  *given = true;
  return HANDLERS_GO_ON;
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
  json_t *ts = json_object_get(o, "tensors");
  for (size_t i = 0; i < c.ntensors; i++) /* a sparse tensor: the rows it holds now */
    if (c.tensors[i].sparse)
      json_object_set_new(json_array_get(ts, i), "rows_held", json_integer((json_int_t)instance_rows_held(in, (int)i)));
  if (c.alg == OPTIM_RANDOM_SEARCH)
    json_object_set_new(o, "best_loss", jbuf_real(info.best_loss));
  instance_cfg_free(&c);
  return o;
}
