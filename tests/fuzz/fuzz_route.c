/* fuzz_route: request routing, instance names and query strings.
 *
 * Input: "METHOD\nTARGET" where TARGET is a request target, path and
 * optional "?query".  The path is routed as sent and after percent-decoding
 * (MHD_http_unescape, as libmicrohttpd does before calling us).
 *
 * Invariants:
 *   - routes_match agrees with a reference segment matcher over the table
 *     (routes_at): the first route whose path and method match, else 405
 *     with exactly the methods of the matching paths in Allow, else 404;
 *   - it never writes past name_cap / allow_cap (exact-size heap buffers,
 *     also tiny ones), always terminates them, and copies the {name}
 *     segment (truncated to name_cap - 1);
 *   - spec_name_ok agrees with [A-Za-z0-9][A-Za-z0-9._-]{0,63};
 *   - query values decode in place to at most their length, and a worker
 *     name there is validated like an instance name.
 */
#include <microhttpd.h>
#include <stdbool.h>

#include "fuzz.h"
#include "http_routes.h"
#include "spec.h"

static bool ref_name_ok(const char *s, size_t n) {
  if (n < 1 || n > 64) return false;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-'))) return false;
  }
  return true;
}

/* Does url match pattern segment by segment?  *seg, *seg_len: the {name} segment. */
static bool ref_match(const char *pattern, const char *url, const char **seg, size_t *seg_len) {
  const char *p = pattern, *u = url;
  *seg = NULL;
  *seg_len = 0;
  for (;;) {
    size_t pl = strcspn(p, "/"), ul = strcspn(u, "/");
    if (pl == 6 && !strncmp(p, "{name}", 6)) {
      if (ul == 0) return false;
      *seg = u;
      *seg_len = ul;
    } else if (pl != ul || strncmp(p, u, pl)) {
      return false;
    }
    p += pl;
    u += ul;
    if (!*p || !*u) return !*p && !*u;
    p++; /* both at '/' */
    u++;
  }
}

static void check_route(const char *method, const char *url, size_t name_cap, size_t allow_cap) {
  char *name = malloc(name_cap ? name_cap : 1), *allow = malloc(allow_cap ? allow_cap : 1);
  memset(name, 'N', name_cap ? name_cap : 1);
  memset(allow, 'A', allow_cap ? allow_cap : 1);
  unsigned status = 0;
  const route *r = routes_match(method, url, name, name_cap, &status, allow, allow_cap);
  const char *m = strcmp(method, "HEAD") == 0 ? "GET" : method;

  /* the reference answer */
  const route *want = NULL;
  const char *seg = NULL;
  size_t seg_len = 0;
  bool path_known = false;
  char ref_allow[256] = "";
  for (size_t i = 0; i < routes_count(); i++) {
    const route *x = routes_at(i);
    const char *s;
    size_t sl;
    if (!ref_match(x->path, url, &s, &sl)) continue;
    if (!strcmp(x->method, m)) {
      want = x;
      seg = s;
      seg_len = sl;
      break;
    }
    path_known = true;
    if (strlen(ref_allow) + strlen(x->method) + 3 < allow_cap) {
      if (ref_allow[0]) strcat(ref_allow, ", ");
      strcat(ref_allow, x->method);
    }
  }
  FUZZ_CHECK(r == want, "%s %s: routed to %s %s, the table says %s", method, url, r ? r->method : "-",
             r ? r->path : "-", want ? want->path : "-");
  if (r) {
    if (seg && name_cap) {
      size_t c = seg_len < name_cap - 1 ? seg_len : name_cap - 1;
      FUZZ_CHECK(!memcmp(name, seg, c) && name[c] == 0, "%s: {name} copied wrongly", url);
      if (name_cap == 257 && seg_len < 257) FUZZ_CHECK(spec_name_ok(name) == ref_name_ok(seg, seg_len), "name '%s'", name);
    }
  } else {
    FUZZ_CHECK(status == (path_known ? 405u : 404u), "%s %s: status %u", method, url, status);
    if (allow_cap) FUZZ_CHECK(!strcmp(allow, ref_allow), "%s %s: Allow '%.*s', want '%s'", method, url,
                              (int)allow_cap, allow, ref_allow);
  }
  free(name);
  free(allow);
}

static void check_query(char *q) {
  char *save = NULL;
  for (char *kv = strtok_r(q, "&", &save); kv; kv = strtok_r(NULL, "&", &save)) {
    char *eq = strchr(kv, '=');
    char *val = eq ? eq + 1 : kv + strlen(kv);
    if (eq) *eq = 0;
    size_t before = strlen(val);
    size_t after = MHD_http_unescape(val);
    FUZZ_CHECK(after <= before && strlen(val) <= after, "unescape grew %zu -> %zu", before, after);
    MHD_http_unescape(kv);
    if (!strcmp(kv, "worker")) FUZZ_CHECK(spec_name_ok(val) == ref_name_ok(val, strlen(val)), "worker '%s'", val);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *s = fuzz_strndup(data, size);
  char *nl = strchr(s, '\n');
  const char *method = "GET";
  char *target = s;
  if (nl) {
    *nl = 0;
    method = s;
    target = nl + 1;
  }
  char *query = strchr(target, '?');
  if (query) *query++ = 0;
  size_t small = size ? data[0] % 12 : 0;

  check_route(method, target, 257, 64); /* the sizes http_server uses */
  check_route(method, target, small, small * 2);
  char *dec = strdup(target);
  MHD_http_unescape(dec); /* what libmicrohttpd hands the access handler */
  check_route(method, dec, 257, 64);
  FUZZ_CHECK(spec_name_ok(dec) == ref_name_ok(dec, strlen(dec)), "'%s'", dec);
  free(dec);
  if (query) check_query(query);
  free(s);
  return 0;
}
