/* http_routes: the route table, path matching and the per-route query
 * parameters. */
#include "http_routes.h"

#include <stdbool.h>
#include <string.h>

#include "handlers.h"

/* The query parameters each route reads (grep the handlers for http_arg and
 * handlers_arg_int when adding one); any other is refused with 400. */
static const char *const no_params[] = {NULL};
static const char *const step_params[] = {"worker", "step", "seq", "loss", "grad_norm", "params", NULL};
static const char *const pull_params[] = {"wait_for_step", "timeout_ms", "worker", NULL};
static const char *const history_params[] = {"range", NULL};
static const char *const rows_get_params[] = {"tensor", "ids", NULL};
static const char *const rows_post_params[] = {"tensor", NULL};

#define API (R_NO_STORE)
#define ONE (R_NO_STORE | R_NAME)
static const route routes[] = {
    {"GET", "/healthz", h_healthz, R_PUBLIC, no_params},
    {"GET", "/metrics", h_metrics, 0, no_params},
    {"GET", "/", h_dashboard, R_PUBLIC, no_params},
    {"POST", "/v1/optimizers", h_create, API | R_WRITE | R_REPL | R_JSON, no_params},
    {"GET", "/v1/optimizers", h_list, API, no_params},
    {"GET", "/v1/optimizers/{name}", h_describe, ONE, no_params},
    /* create with the name in the path (routable by proxies) */
    {"PUT", "/v1/optimizers/{name}", h_create, ONE | R_WRITE | R_REPL | R_JSON, no_params},
    {"PATCH", "/v1/optimizers/{name}", h_patch, ONE | R_WRITE | R_REPL | R_JSON, no_params},
    {"DELETE", "/v1/optimizers/{name}", h_delete, ONE | R_WRITE | R_REPL | R_BODY_OPT, no_params},
    {"POST", "/v1/optimizers/{name}/step", h_step, ONE | R_WRITE | R_REPL | R_JSON | R_BINARY, step_params},
    {"GET", "/v1/optimizers/{name}/params", h_params, ONE, pull_params},
    {"GET", "/v1/optimizers/{name}/rows", h_rows_get, ONE, rows_get_params},
    {"POST", "/v1/optimizers/{name}/rows", h_rows_post, ONE | R_JSON | R_BINARY, rows_post_params},
    {"GET", "/v1/optimizers/{name}/state", h_state_get, ONE, no_params},
    {"PUT", "/v1/optimizers/{name}/state", h_state_put, ONE | R_WRITE | R_REPL | R_JSON, no_params},
    {"POST", "/v1/optimizers/{name}/snapshot", h_snapshot, ONE | R_WRITE, no_params},
    {"POST", "/v1/optimizers/{name}/ask", h_ask, ONE | R_WRITE | R_REPL | R_JSON | R_BODY_OPT, no_params},
    {"POST", "/v1/optimizers/{name}/tell", h_tell, ONE | R_WRITE | R_REPL | R_JSON, no_params},
    {"GET", "/v1/optimizers/{name}/workers", h_workers, ONE, no_params},
    {"GET", "/v1/optimizers/{name}/history", h_history, ONE, history_params},
    {"GET", "/v1/cluster", h_cluster, API, no_params},
    {"POST", "/v1/cluster/members", h_member_add, API | R_WRITE | R_JSON, no_params},
    {"DELETE", "/v1/cluster/members/{name}", h_member_remove, ONE | R_WRITE | R_BODY_OPT, no_params},
    {"POST", "/v1/playground", h_playground, API | R_WRITE | R_JSON, no_params},
};
#undef API
#undef ONE
#define NROUTES (sizeof routes / sizeof *routes)

/* Does url match pattern?  Copies the {name} segment. */
static int match(const char *pattern, const char *url, char *name, size_t cap) {
  const char *p = pattern, *u = url;
  while (*p && *u) {
    if (!strncmp(p, "{name}", 6)) {
      const char *end = strchr(u, '/');
      size_t n = end ? (size_t)(end - u) : strlen(u);
      if (n == 0) return 0;
      if (name && cap) {
        size_t c = n < cap - 1 ? n : cap - 1;
        memcpy(name, u, c);
        name[c] = 0;
      }
      p += 6;
      u += n;
      continue;
    }
    if (*p != *u) return 0;
    p++;
    u++;
  }
  return *p == 0 && *u == 0;
}

const route *routes_match(const char *method, const char *url, char *name, size_t name_cap,
                          unsigned *status, char *allow, size_t allow_cap) {
  const char *m = strcmp(method, "HEAD") == 0 ? "GET" : method;
  bool path_known = false;
  if (allow && allow_cap) allow[0] = 0;
  for (size_t i = 0; i < NROUTES; i++) {
    if (!match(routes[i].path, url, name, name_cap)) continue;
    if (strcmp(routes[i].method, m) == 0) return &routes[i];
    path_known = true;
    if (allow && allow_cap && strlen(allow) + strlen(routes[i].method) + 3 < allow_cap) {
      if (allow[0]) strcat(allow, ", ");
      strcat(allow, routes[i].method);
    }
  }
  *status = path_known ? 405 : 404;
  return NULL;
}

bool routes_param_known(const route *rt, const char *key) {
  for (const char *const *p = rt->params; p && *p; p++)
    if (!strcmp(*p, key)) return true;
  return false;
}

const char *routes_params_list(const route *rt, char *out, size_t cap) {
  size_t k = 0;
  if (cap) out[0] = 0;
  for (const char *const *p = rt->params; p && *p; p++) {
    int w = snprintf(out + k, cap > k ? cap - k : 0, "%s%s", k ? ", " : "", *p);
    if (w > 0) k += (size_t)w;
  }
  if (!k && cap) snprintf(out, cap, "none");
  return out;
}

void routes_print(FILE *out) {
  for (size_t i = 0; i < NROUTES; i++) fprintf(out, "%s %s\n", routes[i].method, routes[i].path);
}

size_t routes_count(void) { return NROUTES; }
const route *routes_at(size_t i) { return i < NROUTES ? &routes[i] : NULL; }
size_t routes_index(const route *r) { return r ? (size_t)(r - routes) : NROUTES; }
