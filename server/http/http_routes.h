/* http_routes: the one table of every route the daemon serves.
 *
 * The table yields dispatch, 404 for unknown paths, 405 with an Allow header
 * for known paths with another method, 415 for bodies of the wrong type, and
 * `descentd --print-routes` (which a test diffs against proto/openapi.yaml).
 * Read-only data; any thread.
 */
#ifndef DESCENT_HTTP_ROUTES_H
#define DESCENT_HTTP_ROUTES_H

#include <microhttpd.h>
#include <stddef.h>
#include <stdio.h>

typedef struct request request;

enum route_flags {
  R_PUBLIC = 1u << 0,    /* no token needed */
  R_WRITE = 1u << 1,     /* needs a read-write token */
  R_JSON = 1u << 2,      /* takes a JSON body */
  R_BINARY = 1u << 3,    /* takes an application/octet-stream body */
  R_BODY_OPT = 1u << 4,  /* the body may be empty */
};

typedef struct route {
  const char *method;
  const char *path; /* segments; "{name}" matches an instance name */
  enum MHD_Result (*fn)(request *r);
  unsigned flags;
} route;

/* Looks up (method, url).  Returns the route, or NULL with *status 404 or
 * 405 (then `allow` receives the allowed methods, comma-separated).  The
 * {name} segment is copied into name (up to 256 bytes, unvalidated). */
const route *routes_match(const char *method, const char *url, char *name, size_t name_cap,
                          unsigned *status, char *allow, size_t allow_cap);

void routes_print(FILE *out); /* "METHOD PATH" per line */

/* The table itself, for per-route counters: routes_count() entries. */
size_t routes_count(void);
const route *routes_at(size_t i);
size_t routes_index(const route *r);

#endif
