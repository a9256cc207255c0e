/* handlers_workers: the workers an instance has seen, and its step history. */
#include <math.h>
#include <stdlib.h>

#include "handlers.h"
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

enum MHD_Result h_history(request *r) {
  instance *in;
  if (handlers_find(r, &in) == HANDLERS_REPLIED) return http_replied(r);
  history_entry *h;
  size_t n = instance_history_copy(in, &h);
  json_t *arr = json_array();
  for (size_t i = 0; i < n; i++)
    json_array_append_new(arr, json_pack("{s:I,s:o,s:o,s:o,s:o}", "step", (json_int_t)h[i].step, "time", jbuf_real(h[i].time),
                                         "loss", jbuf_real(h[i].loss), "grad_norm", jbuf_real(h[i].grad_norm),
                                         "lr", jbuf_real(h[i].lr)));
  free(h);
  return reply_json(r, MHD_HTTP_OK, json_pack("{s:o}", "history", arr));
}
