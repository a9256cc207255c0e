/* test_routes: the route table without HTTP: matching and the {name}
 * segment, 404 and 405 with the Allow list, the query parameters each route
 * takes, and the flags that drive auth, bodies and caching. */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "handlers.h"
#include "http_routes.h"
#include "suites.h"

static const struct {
  const char *method, *url;
  const char *path; /* the route's pattern; NULL: none */
  const char *name; /* the {name} copied out */
  unsigned status;  /* when no route */
  const char *allow;
} cases[] = {
    {"GET", "/healthz", "/healthz", "", 0, ""},
    {"HEAD", "/healthz", "/healthz", "", 0, ""}, /* HEAD is served as GET */
    {"GET", "/", "/", "", 0, ""},
    {"GET", "/metrics", "/metrics", "", 0, ""},
    {"POST", "/v1/optimizers", "/v1/optimizers", "", 0, ""},
    {"GET", "/v1/optimizers/m1", "/v1/optimizers/{name}", "m1", 0, ""},
    {"PUT", "/v1/optimizers/a.b-c_d", "/v1/optimizers/{name}", "a.b-c_d", 0, ""},
    {"POST", "/v1/optimizers/m/step", "/v1/optimizers/{name}/step", "m", 0, ""},
    {"GET", "/v1/optimizers/m/params", "/v1/optimizers/{name}/params", "m", 0, ""},
    {"PUT", "/v1/optimizers/m/state", "/v1/optimizers/{name}/state", "m", 0, ""},
    {"GET", "/v1/optimizers/x/history", "/v1/optimizers/{name}/history", "x", 0, ""},
    {"POST", "/v1/playground", "/v1/playground", "", 0, ""},
    /* 405: the path is served with other methods, listed in table order */
    {"POST", "/healthz", NULL, "", 405, "GET"},
    {"DELETE", "/v1/optimizers", NULL, "", 405, "POST, GET"},
    {"POST", "/v1/optimizers/m", NULL, "m", 405, "GET, PUT, PATCH, DELETE"},
    {"GET", "/v1/optimizers/m/step", NULL, "m", 405, "POST"},
    {"DELETE", "/v1/optimizers/m/state", NULL, "m", 405, "GET, PUT"},
    {"HEAD", "/v1/playground", NULL, "", 405, "POST"},
    /* 404 */
    {"GET", "/nope", NULL, "", 404, ""},
    {"GET", "/v1/optimizers/", NULL, "", 404, ""},      /* an empty name */
    {"GET", "/v1/optimizers/m/", NULL, "", 404, ""},    /* a trailing slash */
    {"POST", "/v1/optimizers/m/steps", NULL, "", 404, ""},
    {"GET", "/v1/optimizers/m/params/x", NULL, "", 404, ""},
    {"GET", "/healthz/", NULL, "", 404, ""},
    {"GET", "", NULL, "", 404, ""},
};

START_TEST(match_table) {
  char name[32] = "unset", allow[64] = "unset";
  unsigned status = 0;
  const route *rt = routes_match(cases[_i].method, cases[_i].url, name, sizeof name, &status, allow, sizeof allow);
  if (cases[_i].path) {
    ck_assert_msg(rt != NULL, "%s %s: no route", cases[_i].method, cases[_i].url);
    ck_assert_str_eq(rt->path, cases[_i].path);
    ck_assert_str_eq(rt->method, strcmp(cases[_i].method, "HEAD") ? cases[_i].method : "GET");
    if (cases[_i].name[0]) ck_assert_str_eq(name, cases[_i].name);
  } else {
    ck_assert_msg(rt == NULL, "%s %s: matched %s", cases[_i].method, cases[_i].url, rt ? rt->path : "");
    ck_assert_uint_eq(status, cases[_i].status);
    ck_assert_str_eq(allow, cases[_i].allow);
  }
}
END_TEST

START_TEST(name_is_cut_to_its_buffer) {
  char name[4], allow[64];
  unsigned status = 0;
  const route *rt = routes_match("GET", "/v1/optimizers/abcdefgh/params", name, sizeof name, &status, allow, sizeof allow);
  ck_assert_ptr_nonnull(rt);
  ck_assert_str_eq(rt->path, "/v1/optimizers/{name}/params");
  ck_assert_str_eq(name, "abc");
  /* an Allow buffer too small for the whole list keeps the methods that fit, whole */
  char tiny[8] = "x";
  ck_assert_ptr_null(routes_match("POST", "/v1/optimizers/m", NULL, 0, &status, tiny, sizeof tiny));
  ck_assert_uint_eq(status, 405);
  ck_assert_str_eq(tiny, "GET");
}
END_TEST

static const route *find(const char *method, const char *path) {
  for (size_t i = 0; i < routes_count(); i++) {
    const route *rt = routes_at(i);
    if (!strcmp(rt->method, method) && !strcmp(rt->path, path)) return rt;
  }
  ck_abort_msg("no route %s %s", method, path);
  return NULL;
}

START_TEST(query_parameters_per_route) {
  char buf[128];
  const route *step = find("POST", "/v1/optimizers/{name}/step");
  ck_assert_str_eq(routes_params_list(step, buf, sizeof buf), "worker, step, seq, loss, grad_norm, params");
  static const char *const yes[] = {"worker", "step", "seq", "loss", "grad_norm", "params"};
  for (size_t i = 0; i < sizeof yes / sizeof *yes; i++) ck_assert(routes_param_known(step, yes[i]));
  static const char *const no[] = {"stpe", "Step", "", "wait_for_step", "timeout_ms", "token", "worker "};
  for (size_t i = 0; i < sizeof no / sizeof *no; i++) ck_assert_msg(!routes_param_known(step, no[i]), "'%s'", no[i]);
  const route *pull = find("GET", "/v1/optimizers/{name}/params");
  ck_assert_str_eq(routes_params_list(pull, buf, sizeof buf), "wait_for_step, timeout_ms, worker");
  ck_assert(routes_param_known(pull, "worker"));
  ck_assert(!routes_param_known(pull, "step"));
  const route *hist = find("GET", "/v1/optimizers/{name}/history");
  ck_assert_str_eq(routes_params_list(hist, buf, sizeof buf), "range");
  const route *rows_get = find("GET", "/v1/optimizers/{name}/rows"), *rows_post = find("POST", "/v1/optimizers/{name}/rows");
  ck_assert_str_eq(routes_params_list(rows_get, buf, sizeof buf), "tensor, ids");
  ck_assert_str_eq(routes_params_list(rows_post, buf, sizeof buf), "tensor");
  size_t with = 0;
  for (size_t i = 0; i < routes_count(); i++) {
    const route *rt = routes_at(i);
    if (rt == step || rt == pull || rt == hist || rt == rows_get || rt == rows_post) continue;
    ck_assert_msg(!strcmp(routes_params_list(rt, buf, sizeof buf), "none"), "%s %s takes %s", rt->method, rt->path, buf);
    ck_assert(!routes_param_known(rt, "worker"));
    with++;
  }
  ck_assert_uint_eq(with, routes_count() - 5);
  char small[12];
  ck_assert_str_eq(routes_params_list(step, small, sizeof small), "worker, ste"); /* cut, still terminated */
}
END_TEST

START_TEST(flags_follow_the_paths) {
  for (size_t i = 0; i < routes_count(); i++) {
    const route *rt = routes_at(i);
    bool api = !strncmp(rt->path, "/v1/", 4), named = strstr(rt->path, "{name}") != NULL;
    ck_assert_msg(!!(rt->flags & R_NO_STORE) == api, "%s %s: no-store", rt->method, rt->path);
    ck_assert_msg(!!(rt->flags & R_NAME) == named, "%s %s: R_NAME", rt->method, rt->path);
    /* POST .../rows only reads (the ids are in the body): a read-only token may pull rows */
    bool writes = strcmp(rt->method, "GET") != 0 && !strstr(rt->path, "/rows");
    ck_assert_msg(!!(rt->flags & R_WRITE) == writes, "%s %s: R_WRITE", rt->method, rt->path);
    ck_assert_msg(!(rt->flags & R_PUBLIC) || !api, "%s %s: public", rt->method, rt->path);
    ck_assert_ptr_nonnull(rt->fn);
    ck_assert_uint_eq(routes_index(rt), i);
  }
  ck_assert(find("GET", "/healthz")->flags & R_PUBLIC);
  ck_assert(find("GET", "/")->flags & R_PUBLIC);
  ck_assert(!(find("GET", "/metrics")->flags & R_PUBLIC));
  ck_assert(find("POST", "/v1/optimizers/{name}/step")->flags & R_BINARY);
  ck_assert_uint_eq(routes_index(NULL), routes_count());
  ck_assert_ptr_null(routes_at(routes_count()));
}
END_TEST

START_TEST(print_lists_every_route) {
  char buf[4096];
  FILE *f = fmemopen(buf, sizeof buf, "w");
  routes_print(f);
  fclose(f);
  ck_assert(!strncmp(buf, "GET /healthz\nGET /metrics\nGET /\nPOST /v1/optimizers\n", 52));
  size_t lines = 0;
  for (char *p = buf; *p; p++) lines += *p == '\n';
  ck_assert_uint_eq(lines, routes_count());
}
END_TEST

Suite *suite_routes(void) {
  Suite *s = suite_create("routes");
  TCase *tc = tcase_create("routes");
  tcase_add_loop_test(tc, match_table, 0, (int)(sizeof cases / sizeof *cases));
  tcase_add_test(tc, name_is_cut_to_its_buffer);
  tcase_add_test(tc, query_parameters_per_route);
  tcase_add_test(tc, flags_follow_the_paths);
  tcase_add_test(tc, print_lists_every_route);
  suite_add_tcase(s, tc);
  return s;
}
