/* handlers_search: ask and tell for random_search instances (Approach 1 of
 * the seed, neuralnets' optimizers tutorial that descent grew from, not part
 * of this repository): a worker asks for a candidate, evaluates its loss,
 * tells it. */
#include <math.h>
#include <string.h>

#include "handlers.h"
#include "http_reply.h"
#include "http_server.h"

enum MHD_Result h_ask(request *r) {
  instance *in;
  if (handlers_find(r, &in) == HANDLERS_REPLIED) return http_replied(r);
  if (r->len) { /* an optional {} body */
    if (handlers_parse_body(r) == HANDLERS_REPLIED) return http_replied(r);
    if (!json_is_object(r->doc.root) || json_object_size(r->doc.root)) {
      derr e;
      derr_set(&e, E_BAD_REQUEST, "ask takes no fields (send {} or nothing)");
      return reply_error(r, E_BAD_REQUEST, &e);
    }
  }
  const instance_layout *c = instance_layout_of(in);
  size_t cap;
  float *x = bufpool_get(r->app->pool, c->n * sizeof(float) + 1, &cap);
  if (!x) return reply_error(r, E_QUOTA, NULL);
  uint64_t id;
  derr e = {0};
  int rc = instance_ask(in, &id, x, &e);
  if (rc < 0) {
    bufpool_put(r->app->pool, x, cap);
    return reply_error(r, rc, &e);
  }
  if (r->accept_binary) {
    char idh[32];
    snprintf(idh, sizeof idh, "%llu", (unsigned long long)id);
    struct MHD_Response *resp = MHD_create_response_from_buffer(c->n * sizeof(float), x, MHD_RESPMEM_MUST_COPY);
    bufpool_put(r->app->pool, x, cap);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, "Descent-Candidate", idh);
    return reply_queue(r, MHD_HTTP_OK, resp, "application/octet-stream");
  }
  jbuf b;
  jbuf_init(&b, r->app->pool, c->n * 12 + 256);
  jbuf_printf(&b, "{\"candidate\":%llu,\"params\":{", (unsigned long long)id);
  for (size_t i = 0; i < c->ntensors; i++) {
    jbuf_printf(&b, "%s\"%s\":", i ? "," : "", c->tensors[i].name);
    jbuf_floats(&b, x + c->tensors[i].offset, c->tensors[i].count);
  }
  jbuf_puts(&b, "}}\n");
  bufpool_put(r->app->pool, x, cap);
  return reply_jbuf(r, MHD_HTTP_OK, &b, "application/json");
}

enum MHD_Result h_tell(request *r) {
  instance *in;
  if (handlers_find(r, &in) == HANDLERS_REPLIED) return http_replied(r);
  if (handlers_parse_body(r) == HANDLERS_REPLIED) return http_replied(r);
  json_t *root = r->doc.root, *cand = json_object_get(root, "candidate"), *loss = json_object_get(root, "loss");
  derr e = {0};
  if (!json_is_object(root) || json_object_size(root) != 2 || !json_is_integer(cand) || json_integer_value(cand) < 1 ||
      !json_is_number(loss)) {
    derr_set(&e, E_BAD_REQUEST, "tell takes {\"candidate\": id, \"loss\": number}");
    return reply_error(r, E_BAD_REQUEST, &e);
  }
  bool improved = false;
  double best;
  uint64_t step;
  int rc = instance_tell(in, (uint64_t)json_integer_value(cand), json_number_value(loss), &improved, &best, &step, &e);
  if (rc < 0) return reply_error(r, rc, &e);
  return reply_json(r, MHD_HTTP_OK,
                    json_pack("{s:I,s:b,s:o}", "step", (json_int_t)step, "improved", improved, "best_loss",
                              jbuf_real(best)));
}
