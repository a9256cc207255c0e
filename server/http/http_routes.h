/* http_routes: the one table of every route the daemon serves.
 *
 * The table yields dispatch, 404 for unknown paths, 405 with the Allow
 * header's methods for known paths with another method, 415 for bodies of the
 * wrong type, 400 for query parameters the route does not read, which routes
 * are private (Cache-Control: no-store), and `descentd --print-routes` (which
 * a test diffs against proto/openapi.yaml).  No I/O, no allocation.
 * Read-only data; any thread.
 */
#ifndef DESCENT_HTTP_ROUTES_H
#define DESCENT_HTTP_ROUTES_H

#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef struct request request;

enum route_flags {
  R_PUBLIC = 1u << 0,    /* no token needed */
  R_WRITE = 1u << 1,     /* needs a read-write token */
  R_JSON = 1u << 2,      /* takes a JSON body */
  R_BINARY = 1u << 3,    /* takes an application/octet-stream body */
  R_BODY_OPT = 1u << 4,  /* the body may be empty */
  R_NO_STORE = 1u << 5,  /* replies carry Cache-Control: no-store (the API) */
  R_NAME = 1u << 6,      /* the path has a {name} segment */
  R_REPL = 1u << 7,      /* a change: replicas run it from the Raft log (http_cluster.c) */
};

typedef struct route {
  const char *method;
  const char *path; /* segments; "{name}" matches an instance name */
  enum MHD_Result (*fn)(request *r);
  unsigned flags;
  const char *const *params; /* the query parameters it reads, NULL-terminated */
} route;

/* Looks up (method, url).  Returns the route, or NULL with *status 404 or
 * 405 (then `allow` receives the methods the table serves at that path,
 * comma-separated, for the Allow header; methods that would not fit in
 * allow_cap are left out, and 64 bytes hold any list of this table).
 * The {name} segment is copied into name (up to name_cap - 1 bytes,
 * unvalidated). */
const route *routes_match(const char *method, const char *url, char *name, size_t name_cap,
                          unsigned *status, char *allow, size_t allow_cap);

/* Whether rt reads the query parameter key. */
bool routes_param_known(const route *rt, const char *key);
/* rt's query parameters as "a, b, c" ("none" when it reads none) into out;
 * returns out. */
const char *routes_params_list(const route *rt, char *out, size_t cap);

void routes_print(FILE *out); /* "METHOD PATH" per line */

/* The table itself, for per-route counters: routes_count() entries. */
size_t routes_count(void);
const route *routes_at(size_t i);
size_t routes_index(const route *r);

#endif
