/* http_routes: the route table and path matching. */
#include "http_routes.h"

#include <stdbool.h>
#include <string.h>

#include "handlers.h"

static const route routes[] = {
    {"GET", "/healthz", h_healthz, R_PUBLIC},
    {"GET", "/metrics", h_metrics, 0},
    {"GET", "/", h_dashboard, R_PUBLIC},
    {"POST", "/v1/optimizers", h_create, R_WRITE | R_JSON},
    {"GET", "/v1/optimizers", h_list, 0},
    {"GET", "/v1/optimizers/{name}", h_describe, 0},
    {"PUT", "/v1/optimizers/{name}", h_create, R_WRITE | R_JSON}, /* create, name in the path (routable by proxies) */
    {"PATCH", "/v1/optimizers/{name}", h_patch, R_WRITE | R_JSON},
    {"DELETE", "/v1/optimizers/{name}", h_delete, R_WRITE | R_BODY_OPT},
    {"POST", "/v1/optimizers/{name}/step", h_step, R_WRITE | R_JSON | R_BINARY},
    {"GET", "/v1/optimizers/{name}/params", h_params, 0},
    {"GET", "/v1/optimizers/{name}/state", h_state_get, 0},
    {"PUT", "/v1/optimizers/{name}/state", h_state_put, R_WRITE | R_JSON},
    {"POST", "/v1/optimizers/{name}/snapshot", h_snapshot, R_WRITE},
    {"POST", "/v1/optimizers/{name}/ask", h_ask, R_WRITE | R_JSON | R_BODY_OPT},
    {"POST", "/v1/optimizers/{name}/tell", h_tell, R_WRITE | R_JSON},
    {"GET", "/v1/optimizers/{name}/workers", h_workers, 0},
    {"GET", "/v1/optimizers/{name}/history", h_history, 0},
    {"POST", "/v1/playground", h_playground, R_WRITE | R_JSON},
};
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

void routes_print(FILE *out) {
  for (size_t i = 0; i < NROUTES; i++) fprintf(out, "%s %s\n", routes[i].method, routes[i].path);
}

size_t routes_count(void) { return NROUTES; }
const route *routes_at(size_t i) { return i < NROUTES ? &routes[i] : NULL; }
size_t routes_index(const route *r) { return r ? (size_t)(r - routes) : NROUTES; }
