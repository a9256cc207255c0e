/* handlers_playground: POST /v1/playground, the seed's (neuralnets' optimizers
 * tutorial that descent grew from, not part of this repository) optimizers on built-in
 * objectives (see playground.h), answered with the whole trajectory. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "codec_float.h"
#include "handlers.h"
#include "http_reply.h"
#include "http_server.h"
#include "mem.h"
#include "playground.h"
#include "spec.h"

static int parse(request *r, pg_run *run, derr *e) {
  json_t *root = r->doc.root;
  if (!json_is_object(root)) return derr_set(e, E_BAD_REQUEST, "the body must be a JSON object");
  const char *k;
  json_t *v;
  static const char *const keys[] = {"objective", "algorithm", "hyper", "start", "steps", "noise", "seed"};
  json_object_foreach(root, k, v) {
    bool ok = false;
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) ok |= !strcmp(k, keys[i]);
    if (!ok) return derr_set(e, E_BAD_REQUEST, "%.64s: unknown field (%s)", k,
                             "objective, algorithm, hyper, start, steps, noise, seed");
  }
  const char *obj = json_string_value(json_object_get(root, "objective"));
  if (!obj) return derr_set(e, E_BAD_REQUEST, "objective: required (ravine, saddle, rosenbrock, local_minimum)");
  if ((run->objective = playground_objective(obj)) < 0)
    return derr_set(e, E_BAD_VALUE, "objective: unknown '%.32s' (ravine, saddle, rosenbrock, local_minimum)", obj);
  const char *alg = json_string_value(json_object_get(root, "algorithm"));
  if (!alg) return derr_set(e, E_BAD_REQUEST, "algorithm: required");
  int rc = optim_alg_parse(alg, &run->alg, &run->hyper, e);
  if (rc < 0) return rc;
  if ((rc = spec_parse_hyper(run->alg, json_object_get(root, "hyper"), &run->hyper, e)) < 0) return rc;
  json_t *start = json_object_get(root, "start");
  if (!json_is_array(start) || json_array_size(start) != 2 || !json_is_number(json_array_get(start, 0)) ||
      !json_is_number(json_array_get(start, 1)))
    return derr_set(e, E_BAD_REQUEST, "start: expected [x, y]");
  run->start[0] = json_number_value(json_array_get(start, 0));
  run->start[1] = json_number_value(json_array_get(start, 1));
  json_t *steps = json_object_get(root, "steps");
  if (!json_is_integer(steps) || json_integer_value(steps) < 0)
    return derr_set(e, E_BAD_REQUEST, "steps: required, a non-negative integer");
  if (json_integer_value(steps) > PLAYGROUND_MAX_STEPS)
    return derr_set(e, E_BAD_VALUE, "steps: at most %d", PLAYGROUND_MAX_STEPS);
  run->steps = (uint64_t)json_integer_value(steps);
  json_t *noise = json_object_get(root, "noise");
  run->noise = 0;
  if (noise && !json_is_null(noise)) {
    if (!json_is_number(noise) || json_number_value(noise) < 0)
      return derr_set(e, E_BAD_VALUE, "noise: a non-negative number (the gradient noise's standard deviation)");
    run->noise = json_number_value(noise);
  }
  json_t *seed = json_object_get(root, "seed");
  run->seed = 0;
  if (seed && !json_is_null(seed)) {
    if (!json_is_integer(seed) || json_integer_value(seed) < 0)
      return derr_set(e, E_BAD_VALUE, "seed: a non-negative integer");
    run->seed = (uint64_t)json_integer_value(seed);
  }
  return 0;
}

enum MHD_Result h_playground(request *r) {
  if (handlers_parse_body(r) == HANDLERS_REPLIED) return http_replied(r);
  pg_run run;
  memset(&run, 0, sizeof run);
  derr e = {0};
  int rc = parse(r, &run, &e);
  if (rc < 0) return reply_error(r, rc, &e);
  size_t npts = (size_t)run.steps + 1;
  /* at most PLAYGROUND_MAX_STEPS + 1 points (checked by parse): small */
  float *traj = mem_xmalloc(2 * npts * sizeof *traj);
  double *losses = mem_xmalloc(npts * sizeof *losses);
  if ((rc = playground_run(&run, traj, losses, &e)) < 0) {
    free(traj);
    free(losses);
    return reply_error(r, rc, &e);
  }
  jbuf b;
  jbuf_init(&b, r->app->pool, npts * 64 + 256);
  jbuf_printf(&b, "{\"objective\":\"%s\",\"algorithm\":\"%s\",\"trajectory\":[",
              playground_objective_name(run.objective), optim_alg_name(run.alg));
  char num[CODEC_FLOAT_MAX + 8];
  for (size_t i = 0; i < npts; i++) {
    jbuf_puts(&b, i ? ",[" : "[");
    jbuf_put(&b, num, codec_float_print(traj[2 * i], num));
    jbuf_put(&b, ",", 1);
    jbuf_put(&b, num, codec_float_print(traj[2 * i + 1], num));
    jbuf_put(&b, "]", 1);
  }
  jbuf_puts(&b, "],\"losses\":[");
  for (size_t i = 0; i < npts; i++) {
    if (i) jbuf_put(&b, ",", 1);
    jbuf_put(&b, num, codec_double_print(losses[i], num));
  }
  jbuf_puts(&b, "]}\n");
  free(traj);
  free(losses);
  return reply_jbuf(r, MHD_HTTP_OK, &b, "application/json");
}
