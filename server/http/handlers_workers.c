/* handlers_workers: the workers an instance has seen, and its step history
 * (the recent steps, and the whole run downsampled). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "handlers.h"
#include "history.h"
#include "http_reply.h"
#include "http_server.h"
#include "timers.h"

enum MHD_Result h_workers(request *r) {
  instance *in;
  if (handlers_find(r, &in) == HANDLERS_REPLIED) return http_replied(r);
  worker_info *w;
  uint64_t step;
  size_t n = instance_workers_copy(in, &w, &step);
  uint64_t now = timers_now_ms();
  json_t *arr = json_array();
  for (size_t i = 0; i < n; i++) {
    json_t *o = json_pack("{s:s,s:I,s:I,s:o,s:o,s:I,s:s}", "name", w[i].name, "pushes", (json_int_t)w[i].pushes,
                          "rejected", (json_int_t)w[i].rejected, "last_push",
                          w[i].last_push_time > 0 ? jbuf_real(w[i].last_push_time) : json_null(), "last_push_step",
                          w[i].last_push_step >= 0 ? json_integer(w[i].last_push_step) : json_null(), "staleness",
                          (json_int_t)w[i].staleness, "lease", w[i].dropped ? "expired" : "live");
    json_object_set_new(o, "idle_ms", json_integer((json_int_t)(now - w[i].last_seen_ms)));
    json_array_append_new(arr, o);
  }
  free(w);
  return reply_json(r, MHD_HTTP_OK, json_pack("{s:I,s:o}", "step", (json_int_t)step, "workers", arr));
}

/* ?range=recent (the default): the ring of the last steps, as "history".
 * ?range=all: the same, and the whole run downsampled, as "whole". */
enum MHD_Result h_history(request *r) {
  instance *in;
  if (handlers_find(r, &in) == HANDLERS_REPLIED) return http_replied(r);
  const char *range = http_arg(r, "range");
  bool all = range && strcmp(range, "all") == 0;
  if (range && !all && strcmp(range, "recent") != 0) {
    derr e;
    derr_set(&e, E_BAD_QUERY, "?range=%.40s: expected recent or all", range);
    return reply_error(r, E_BAD_QUERY, &e);
  }
  json_t *reply = json_object();
  history_entry *h;
  size_t n = instance_history_copy(in, &h);
  json_t *hist = json_array();
  const instance_layout *l = instance_layout_of(in);
  bool sparse = false;
  for (size_t t = 0; t < l->ntensors; t++) sparse |= l->tensors[t].sparse;
  for (size_t i = 0; i < n; i++) {
    json_t *o = json_pack("{s:I,s:o,s:o,s:o,s:o}", "step", (json_int_t)h[i].step, "time", jbuf_real(h[i].time), "loss",
                          jbuf_real(h[i].loss), "grad_norm", jbuf_real(h[i].grad_norm), "lr", jbuf_real(h[i].lr));
    if (sparse) json_object_set_new(o, "rows_touched", json_integer((json_int_t)h[i].rows_touched));
    json_array_append_new(hist, o);
  }
  free(h);
  json_object_set_new(reply, "history", hist);
  if (all) {
    history_bucket *b;
    uint64_t span, total;
    size_t nb = instance_history_whole_copy(in, &b, &span, &total);
    json_t *arr = json_array();
    for (size_t i = 0; i < nb; i++) {
      json_t *o = json_pack("{s:I,s:I,s:I,s:o}", "first_step", (json_int_t)b[i].first_step, "last_step",
                            (json_int_t)b[i].last_step, "steps", (json_int_t)b[i].steps, "time",
                            jbuf_real(b[i].last_time));
      json_object_set_new(o, "loss", jbuf_real(history_bucket_loss(&b[i])));
      json_object_set_new(o, "loss_min", jbuf_real(b[i].loss_min));
      json_object_set_new(o, "loss_max", jbuf_real(b[i].loss_max));
      json_object_set_new(o, "grad_norm", jbuf_real(history_bucket_grad_norm(&b[i])));
      json_object_set_new(o, "lr", jbuf_real(b[i].lr));
      json_array_append_new(arr, o);
    }
    free(b);
    json_object_set_new(reply, "whole", json_pack("{s:I,s:I,s:o}", "span", (json_int_t)span, "steps",
                                                  (json_int_t)total, "buckets", arr));
  }
  return reply_json(r, MHD_HTTP_OK, reply);
}
