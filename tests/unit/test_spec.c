/* test_spec: the JSON forms of an instance.  Create bodies (good ones read
 * field by field; refused ones, as a table, each with its code and exact
 * message and nothing left to free), PATCH bodies (only run-time settings,
 * the current configuration untouched), state documents (a write/parse
 * round trip to the same text, and refusals), and names.  No locks, no I/O. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_json.h"
#include "instance.h"
#include "mem.h"
#include "optim.h"
#include "spec.h"
#include "suites.h"

static jdoc parse(const char *text) {
  jdoc d;
  derr e = {0};
  ck_assert_msg(jdoc_parse(&d, NULL, text, strlen(text), &e) == 0, "%s: %s", text, e.msg);
  return d;
}

/* A good create body: returns cfg and params (caller frees both). */
static void create_ok(const char *text, instance_cfg *c, float **params) {
  jdoc d = parse(text);
  memset(c, 0, sizeof *c);
  derr e = {0};
  int rc = spec_parse_create(&d, UINT64_MAX, c, params, &e);
  ck_assert_msg(rc == 0, "%s: %s", text, e.msg);
  jdoc_free(&d);
}

/* ---- names ------------------------------------------------------------------- */

START_TEST(names) {
  char longest[65], too_long[66];
  memset(longest, 'a', 64), longest[64] = 0;
  memset(too_long, 'a', 65), too_long[65] = 0;
  const char *good[] = {"a", "Z9", "a.b", "a-b_c.9", "0", longest};
  const char *bad[] = {"", "-a", ".a", "_a", "a b", "a/b", "a:b", "é", too_long};
  for (size_t i = 0; i < sizeof good / sizeof *good; i++) ck_assert_msg(spec_name_ok(good[i]), "%s", good[i]);
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) ck_assert_msg(!spec_name_ok(bad[i]), "%s", bad[i]);
  ck_assert(!spec_name_ok(NULL));
}
END_TEST

/* ---- create ------------------------------------------------------------------- */

START_TEST(create_async_adam_read_field_by_field) {
  instance_cfg c;
  float *p;
  create_ok("{\"name\": \"m1\", \"algorithm\": \"adam\", \"hyper\": {\"lr\": 0.01, \"betas\": [0.8, 0.9]},"
            " \"tensors\": [{\"name\": \"W\", \"shape\": [2, 3], \"init\": {\"constant\": 0.5}},"
            "              {\"name\": \"b\", \"shape\": [2], \"values\": [1, -2]}],"
            " \"clip_grad_norm\": 1.5, \"schedule\": {\"type\": \"cosine\", \"T_max\": 100}}",
            &c, &p);
  ck_assert_str_eq(c.name, "m1");
  ck_assert_int_eq(c.alg, OPTIM_ADAM);
  ck_assert(c.hyper.lr == 0.01);
  ck_assert(c.hyper.betas[0] == 0.8 && c.hyper.betas[1] == 0.9);
  ck_assert(c.hyper.eps == 1e-8); /* torch's default */
  ck_assert(c.hyper.weight_decay == 0 && !c.hyper.amsgrad);
  ck_assert_int_eq(c.mode, MODE_ASYNC);
  ck_assert_int_eq(c.max_staleness, -1);
  ck_assert_uint_eq(c.worker_lease_ms, SPEC_DEFAULT_LEASE_MS);
  ck_assert(c.clip_grad_norm == 1.5);
  ck_assert_int_eq(c.sched.kind, SCHED_COSINE);
  ck_assert(c.sched.t_max == 100 && c.sched.eta_min == 0);
  ck_assert_uint_eq(c.ntensors, 2);
  ck_assert_str_eq(c.tensors[0].name, "W");
  ck_assert_int_eq(c.tensors[0].ndim, 2);
  ck_assert_uint_eq(c.tensors[0].shape[0], 2);
  ck_assert_uint_eq(c.tensors[0].shape[1], 3);
  ck_assert_uint_eq(c.tensors[0].count, 6);
  ck_assert_uint_eq(c.tensors[0].offset, 0);
  ck_assert_str_eq(c.tensors[1].name, "b");
  ck_assert_uint_eq(c.tensors[1].offset, 6);
  ck_assert_uint_eq(c.tensors[1].count, 2);
  ck_assert_uint_eq(c.n, 8);
  const float want[8] = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 1, -2};
  ck_assert_int_eq(memcmp(p, want, sizeof want), 0);
  ck_assert_uint_eq(instance_cfg_footprint(&c), 3 * 8); /* params, exp_avg, exp_avg_sq */
  mem_free_floats(p, c.n);
  instance_cfg_free(&c);
}
END_TEST

START_TEST(create_sync_momentum_alias) {
  instance_cfg c;
  float *p;
  create_ok("{\"name\": \"s\", \"algorithm\": \"momentum\", \"mode\": \"sync\", \"workers\": 4, \"min_workers\": 3,"
            " \"round_timeout_ms\": 250, \"aggregate\": \"sum\", \"worker_lease_ms\": 1000,"
            " \"tensors\": [{\"name\": \"w\", \"shape\": [2, 2], \"values\": [[1, 2], [3, 4]]}]}",
            &c, &p);
  ck_assert_int_eq(c.alg, OPTIM_SGD);
  ck_assert(c.hyper.momentum == 0.9 && !c.hyper.nesterov);
  ck_assert_int_eq(c.mode, MODE_SYNC);
  ck_assert_uint_eq(c.workers, 4);
  ck_assert_uint_eq(c.min_workers, 3);
  ck_assert_uint_eq(c.round_timeout_ms, 250);
  ck_assert_int_eq(c.aggregate, AGG_SUM);
  ck_assert_uint_eq(c.worker_lease_ms, 1000);
  const float want[4] = {1, 2, 3, 4}; /* nested to the shape, read row-major */
  ck_assert_int_eq(memcmp(p, want, sizeof want), 0);
  ck_assert_uint_eq(instance_cfg_footprint(&c), 3 * 4); /* params, momentum, round scratch */
  mem_free_floats(p, c.n);
  instance_cfg_free(&c);
  create_ok("{\"name\": \"n\", \"algorithm\": \"nesterov\", \"hyper\": {\"momentum\": 0.5},"
            " \"tensors\": [{\"name\": \"w\", \"shape\": [1]}], \"max_staleness\": 0}",
            &c, &p);
  ck_assert(c.hyper.nesterov && c.hyper.momentum == 0.5);
  ck_assert_int_eq(c.max_staleness, 0);
  ck_assert(p[0] == 0.0f);
  mem_free_floats(p, c.n);
  instance_cfg_free(&c);
}
END_TEST

#define T1 "\"tensors\": [{\"name\": \"w\", \"shape\": [3]}]"
#define SGD "\"name\": \"a\", \"algorithm\": \"sgd\""
#define SYNC SGD ", " T1 ", \"mode\": \"sync\""

static const struct refused {
  uint64_t max_floats;
  const char *body;
  int code;
  const char *msg;
} refused[] = {
    {0, "[1, 2]", E_BAD_REQUEST, "the body must be a JSON object"},
    {0, "{" SGD ", " T1 ", \"foo\": 1}", E_BAD_REQUEST, "foo: unknown field"},
    {0, "{\"algorithm\": \"sgd\", " T1 "}", E_BAD_REQUEST, "name: required"},
    {0, "{\"name\": \"-x\", \"algorithm\": \"sgd\", " T1 "}", E_BAD_NAME,
     "name: '-x' does not match [A-Za-z0-9][A-Za-z0-9._-]{0,63}"},
    {0, "{\"name\": 5, \"algorithm\": \"sgd\", " T1 "}", E_BAD_REQUEST, "name: expected a string"},
    {0, "{\"name\": \"a\", " T1 "}", E_BAD_REQUEST,
     "algorithm: required (sgd, momentum, nesterov, adagrad, rmsprop, adam, adamw, random_search, sparse_adam)"},
    {0, "{\"name\": \"a\", \"algorithm\": \"lbfgs\", " T1 "}", E_UNKNOWN_ALGORITHM,
     "unknown algorithm 'lbfgs' (sgd, momentum, nesterov, adagrad, rmsprop, adam, adamw, random_search, sparse_adam)"},
    {0, "{" SGD ", " T1 ", \"hyper\": {\"betas\": [0.9, 0.99]}}", E_UNKNOWN_HYPER,
     "hyper.betas: sgd has no hyperparameter of that name"},
    {0, "{" SGD ", " T1 ", \"hyper\": {\"lr\": -1}}", E_BAD_VALUE, "hyper.lr: invalid learning rate -1"},
    {0, "{" SGD ", " T1 ", \"hyper\": {\"lr\": \"x\"}}", E_BAD_REQUEST, "hyper.lr: expected a number"},
    {0, "{" SGD ", " T1 ", \"hyper\": {\"nesterov\": 1}}", E_BAD_REQUEST, "hyper.nesterov: expected true or false"},
    {0, "{" SGD ", " T1 ", \"hyper\": [1]}", E_BAD_REQUEST, "hyper: expected an object"},
    {0, "{\"name\": \"a\", \"algorithm\": \"adam\", " T1 ", \"hyper\": {\"betas\": [0.9]}}", E_BAD_REQUEST,
     "hyper.betas: expected two numbers"},
    {0, "{\"name\": \"a\", \"algorithm\": \"adam\", " T1 ", \"hyper\": {\"betas\": [1.0, 0.5]}}", E_BAD_VALUE,
     "hyper.betas[0]: invalid beta parameter 1 (must be in [0, 1))"},
    {0, "{" SGD ", " T1 ", \"mode\": \"fast\"}", E_BAD_VALUE, "mode: expected \"async\" or \"sync\""},
    {0, "{" SYNC "}", E_BAD_REQUEST, "workers: sync mode needs \"workers\": N"},
    {0, "{" SYNC ", \"workers\": 2, \"min_workers\": 3}", E_BAD_VALUE, "min_workers: must be at most workers (2)"},
    {0, "{" SYNC ", \"workers\": 3, \"round_timeout_ms\": 0}", E_BAD_VALUE,
     "round_timeout_ms: must be between 1 and 86400000"},
    {0, "{" SYNC ", \"workers\": 3, \"round_timeout_ms\": 86400001}", E_BAD_VALUE,
     "round_timeout_ms: must be between 1 and 86400000"},
    {0, "{" SYNC ", \"workers\": 3, \"max_staleness\": 3}", E_BAD_VALUE,
     "max_staleness: only for \"mode\": \"async\" (sync rounds refuse any stale gradient)"},
    {0, "{" SYNC ", \"workers\": 3, \"aggregate\": \"median\"}", E_BAD_VALUE, "aggregate: expected \"mean\" or \"sum\""},
    {0, "{" SGD ", " T1 ", \"workers\": 2}", E_BAD_VALUE, "workers: only for \"mode\": \"sync\""},
    {0, "{" SGD ", " T1 ", \"aggregate\": \"sum\"}", E_BAD_VALUE, "aggregate: only for \"mode\": \"sync\""},
    {0, "{" SGD ", " T1 ", \"round_timeout_ms\": 5}", E_BAD_VALUE, "round_timeout_ms: only for \"mode\": \"sync\""},
    {0, "{" SYNC ", \"workers\": 0}", E_BAD_VALUE, "workers: must be between 1 and 100000"},
    {0, "{" SYNC ", \"workers\": 1.5}", E_BAD_REQUEST, "workers: expected an integer"},
    {0, "{" SYNC ", \"workers\": \"2\"}", E_BAD_REQUEST, "workers: expected an integer"},
    {0, "{" SGD ", " T1 ", \"max_staleness\": -2}", E_BAD_VALUE,
     "max_staleness: must be between 0 and 4611686018427387903"},
    {0, "{" SGD ", " T1 ", \"clip_grad_norm\": -1}", E_BAD_VALUE,
     "clip_grad_norm: must be a positive number (or 0/null: off)"},
    {0, "{\"name\": \"a\", \"algorithm\": \"random_search\", " T1 ", \"mode\": \"sync\", \"workers\": 2}",
     E_BAD_VALUE, "mode: random_search instances are async (ask/tell)"},
    {0, "{" SGD "}", E_BAD_REQUEST, "tensors: expected a non-empty array of {\"name\", \"shape\"}"},
    {0, "{" SGD ", \"tensors\": []}", E_BAD_REQUEST, "tensors: expected a non-empty array of {\"name\", \"shape\"}"},
    {0, "{" SGD ", \"tensors\": [{\"name\": \"w\", \"shape\": [2, 0]}]}", E_BAD_REQUEST,
     "tensors[0].shape[1]: must be a positive integer"},
    {0, "{" SGD ", \"tensors\": [{\"name\": \"w\"}]}", E_BAD_REQUEST, "tensors[0].shape: required"},
    {0, "{" SGD ", \"tensors\": [{\"name\": \"w\", \"shape\": [1,1,1,1,1,1,1,1,1]}]}", E_BAD_REQUEST,
     "tensors[0].shape: at most 8 dimensions"},
    {0, "{" SGD ", \"tensors\": [{\"name\": \"w\", \"shape\": [2199023255553]}]}", E_QUOTA,
     "tensors[0].shape: too many elements"},
    {0, "{" SGD ", \"tensors\": [{\"name\": \"w\", \"shape\": [1]}, {\"name\": \"w\", \"shape\": [1]}]}", E_BAD_REQUEST,
     "tensors[1].name: 'w' appears twice"},
    {0, "{" SGD ", \"tensors\": [{\"name\": \"9 x\", \"shape\": [1]}]}", E_BAD_NAME,
     "tensors[0].name: tensor names match [A-Za-z0-9][A-Za-z0-9._-]{0,63}"},
    {0, "{" SGD ", \"tensors\": [{\"name\": \"w\", \"shape\": [1], \"dtype\": \"f16\"}]}", E_BAD_REQUEST,
     "tensors[0].dtype: unknown field"},
    {0, "{" SGD ", \"tensors\": [{\"name\": \"w\", \"shape\": [3], \"values\": [1, 2]}]}", E_BAD_LENGTH,
     "tensors[0].values: expected 3 values, got 2"},
    {0, "{" SGD ", \"tensors\": [{\"name\": \"w\", \"shape\": [2], \"values\": [1, 1e39]}]}", E_NOT_FINITE,
     "tensors[0].values[1]: NaN or infinite"},
    {0, "{" SGD ", \"tensors\": [{\"name\": \"w\", \"shape\": [1], \"values\": [1], \"init\": \"zeros\"}]}",
     E_BAD_REQUEST, "tensors[0]: give \"values\" or \"init\", not both"},
    {0, "{" SGD ", \"tensors\": [{\"name\": \"w\", \"shape\": [1], \"init\": {\"constant\": 1e39}}]}", E_NOT_FINITE,
     "tensors[0].init.constant: not finite in float32"},
    {0, "{" SGD ", \"tensors\": [{\"name\": \"w\", \"shape\": [1], \"init\": {\"xavier\": {}}}]}", E_BAD_REQUEST,
     "tensors[0].init: unknown init 'xavier' (zeros, values, constant, normal, uniform)"},
    {0, "{" SGD ", \"tensors\": [{\"name\": \"w\", \"shape\": [1], \"init\": {\"uniform\": {\"low\": 1, \"high\": 0}}}]}",
     E_BAD_VALUE, "tensors[0].init.uniform: high must be at least low"},
    {0, "{" SGD ", \"tensors\": [{\"name\": \"w\", \"shape\": [1], \"init\": {\"normal\": {\"std\": -1}}}]}",
     E_BAD_VALUE, "tensors[0].init.normal: std must be non-negative"},
    {0, "{" SGD ", " T1 ", \"schedule\": {\"type\": \"step\"}}", E_BAD_REQUEST, "schedule.step_size: required"},
    {0, "{" SGD ", " T1 ", \"schedule\": {\"gamma\": 0.5}}", E_BAD_REQUEST,
     "schedule.type: required (step, exponential, cosine, linear_warmup)"},
    {0, "{" SGD ", " T1 ", \"schedule\": {\"type\": \"warp\"}}", E_BAD_VALUE,
     "schedule.type: unknown schedule 'warp' (step, exponential, cosine, linear_warmup)"},
    {0, "{" SGD ", " T1 ", \"schedule\": {\"type\": \"exponential\", \"gamma\": 0.9, \"T_max\": 3}}", E_BAD_VALUE,
     "schedule.T_max: unknown field"},
    {0, "{" SGD ", " T1 ", \"schedule\": {\"type\": \"exponential\", \"gamma\": 0}}", E_BAD_VALUE,
     "schedule: gamma must be positive and eta_min non-negative"},
    {0, "{" SGD ", " T1 ", \"schedule\": {\"type\": \"linear_warmup\", \"start_factor\": 0}}", E_BAD_VALUE,
     "schedule: start_factor must be in (0, 1] and end_factor in [0, 1]"},
    {2, "{" SGD ", " T1 "}", E_QUOTA, "this instance needs 3 floats (parameters and state); the limit is 2 (--max-params)"},
    {11, "{\"name\": \"a\", \"algorithm\": \"adam\", \"tensors\": [{\"name\": \"w\", \"shape\": [4]}]}", E_QUOTA,
     "this instance needs 12 floats (parameters and state); the limit is 11 (--max-params)"},
};

START_TEST(create_refused) {
  const struct refused *r = &refused[_i];
  jdoc d = parse(r->body);
  instance_cfg c;
  memset(&c, 0, sizeof c); /* see test_bugs.c: an uninitialised cfg is freed on one path */
  float *p = (float *)&c; /* must be reset */
  derr e = {0};
  int rc = spec_parse_create(&d, r->max_floats ? r->max_floats : UINT64_MAX, &c, &p, &e);
  ck_assert_msg(rc == -r->code, "case %d (%s): rc %d, want %d; message: %s", _i, r->body, rc, -r->code, e.msg);
  ck_assert_int_eq(e.code, r->code);
  ck_assert_msg(strcmp(e.msg, r->msg) == 0, "case %d: '%s', want '%s'", _i, e.msg, r->msg);
  ck_assert_ptr_null(p);
  ck_assert_ptr_null(c.tensors); /* holds nothing to free */
  jdoc_free(&d);
}
END_TEST

START_TEST(long_bad_names_are_cut_in_the_message) {
  char body[400], name[101];
  memset(name, 'x', 100), name[0] = '_', name[100] = 0;
  snprintf(body, sizeof body, "{\"name\": \"%s\", \"algorithm\": \"sgd\", " T1 "}", name);
  jdoc d = parse(body);
  instance_cfg c = {0};
  float *p;
  derr e = {0};
  ck_assert_int_eq(spec_parse_create(&d, UINT64_MAX, &c, &p, &e), -E_BAD_NAME);
  char want[200];
  snprintf(want, sizeof want, "name: '%.80s' does not match [A-Za-z0-9][A-Za-z0-9._-]{0,63}", name);
  ck_assert_str_eq(e.msg, want);
  jdoc_free(&d);
}
END_TEST

START_TEST(sync_rounds_get_the_default_deadline) {
  instance_cfg c;
  float *p;
  create_ok("{" SYNC ", \"workers\": 3, \"min_workers\": 2}", &c, &p);
  ck_assert_uint_eq(c.round_timeout_ms, SPEC_ROUND_TIMEOUT_DEFAULT_MS);
  ck_assert_uint_eq(c.min_workers, 2);
  mem_free_floats(p, c.n);
  instance_cfg_free(&c);
  create_ok("{" SYNC ", \"workers\": 3, \"round_timeout_ms\": null}", &c, &p);
  ck_assert_uint_eq(c.round_timeout_ms, SPEC_ROUND_TIMEOUT_DEFAULT_MS);
  mem_free_floats(p, c.n);
  instance_cfg_free(&c);
  create_ok("{" SGD ", " T1 "}", &c, &p); /* async: no rounds, no deadline */
  ck_assert_uint_eq(c.round_timeout_ms, 0);
  mem_free_floats(p, c.n);
  instance_cfg_free(&c);
}
END_TEST

/* ---- patch -------------------------------------------------------------------- */

static int patch(const char *text, const instance_cfg *cur, instance_cfg *out, derr *e) {
  jdoc d = parse(text);
  memset(out, 0, sizeof *out);
  int rc = spec_parse_patch(&d, cur, out, e);
  jdoc_free(&d);
  return rc;
}

START_TEST(patch_changes_only_run_time_settings) {
  instance_cfg cur, out;
  float *p;
  create_ok("{\"name\": \"a\", \"algorithm\": \"sgd\", \"hyper\": {\"lr\": 0.1}, " T1 ", \"clip_grad_norm\": 2}",
            &cur, &p);
  mem_free_floats(p, cur.n);
  derr e = {0};
  ck_assert_int_eq(patch("{\"hyper\": {\"lr\": 0.5, \"momentum\": 0.9}, \"max_staleness\": 4, \"clip_grad_norm\": null,"
                         " \"worker_lease_ms\": 50, \"schedule\": {\"type\": \"exponential\", \"gamma\": 0.5}}",
                         &cur, &out, &e),
                   0);
  ck_assert(out.hyper.lr == 0.5 && out.hyper.momentum == 0.9);
  ck_assert_int_eq(out.max_staleness, 4);
  ck_assert(out.clip_grad_norm == 0);
  ck_assert_uint_eq(out.worker_lease_ms, 50);
  ck_assert_int_eq(out.sched.kind, SCHED_EXPONENTIAL);
  ck_assert(out.sched.gamma == 0.5);
  ck_assert_str_eq(out.name, "a");
  ck_assert_uint_eq(out.n, 3);
  ck_assert_ptr_ne(out.tensors, cur.tensors); /* its own copy */
  ck_assert_str_eq(out.tensors[0].name, "w");
  ck_assert_uint_eq(instance_cfg_footprint(&out), 6); /* the new momentum buffer counts */
  /* the current configuration is untouched */
  ck_assert(cur.hyper.lr == 0.1 && cur.hyper.momentum == 0);
  ck_assert_int_eq(cur.max_staleness, -1);
  ck_assert(cur.clip_grad_norm == 2);
  instance_cfg next; /* null switches a limit off again */
  ck_assert_int_eq(patch("{\"max_staleness\": null, \"schedule\": null}", &out, &next, &e), 0);
  ck_assert_int_eq(next.max_staleness, -1);
  ck_assert_int_eq(next.sched.kind, SCHED_NONE);
  instance_cfg_free(&next);
  instance_cfg_free(&out);
  ck_assert_int_eq(patch("{}", &cur, &out, &e), 0); /* nothing: the same */
  ck_assert(out.hyper.lr == 0.1 && out.clip_grad_norm == 2);
  instance_cfg_free(&out);
  instance_cfg_free(&cur);
}
END_TEST

START_TEST(patch_refused) {
  instance_cfg cur, sync, out;
  float *p;
  create_ok("{\"name\": \"a\", \"algorithm\": \"sgd\", " T1 "}", &cur, &p);
  mem_free_floats(p, cur.n);
  create_ok("{" SYNC ", \"workers\": 3}", &sync, &p);
  mem_free_floats(p, sync.n);
  static const struct {
    int sync;
    const char *body;
    int code;
    const char *msg;
  } cases[] = {
      {0, "[]", E_BAD_REQUEST, "the body must be a JSON object"},
      {0, "{\"name\": \"b\"}", E_BAD_VALUE,
       "name: cannot be changed at run time (export the state, edit it, and PUT it back)"},
      {0, "{\"algorithm\": \"adam\"}", E_BAD_VALUE,
       "algorithm: cannot be changed at run time (export the state, edit it, and PUT it back)"},
      {0, "{\"tensors\": []}", E_BAD_VALUE,
       "tensors: cannot be changed at run time (export the state, edit it, and PUT it back)"},
      {0, "{\"mode\": \"sync\"}", E_BAD_VALUE,
       "mode: cannot be changed at run time (export the state, edit it, and PUT it back)"},
      {1, "{\"aggregate\": \"sum\"}", E_BAD_VALUE,
       "aggregate: cannot be changed at run time (export the state, edit it, and PUT it back)"},
      {0, "{\"size\": 3}", E_BAD_REQUEST, "size: unknown field"},
      {0, "{\"hyper\": {\"lr\": -1}}", E_BAD_VALUE, "hyper.lr: invalid learning rate -1"},
      {0, "{\"hyper\": {\"eps\": 1}}", E_UNKNOWN_HYPER, "hyper.eps: sgd has no hyperparameter of that name"},
      {0, "{\"workers\": 2}", E_BAD_VALUE, "workers: only for \"mode\": \"sync\""},
      {1, "{\"min_workers\": 9}", E_BAD_VALUE, "min_workers: must be at most workers (3)"},
      {1, "{\"max_staleness\": 1}", E_BAD_VALUE,
       "max_staleness: only for \"mode\": \"async\" (sync rounds refuse any stale gradient)"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    derr e = {0};
    int rc = patch(cases[i].body, cases[i].sync ? &sync : &cur, &out, &e);
    ck_assert_msg(rc == -cases[i].code, "case %zu: rc %d (%s)", i, rc, e.msg);
    ck_assert_msg(strcmp(e.msg, cases[i].msg) == 0, "case %zu: '%s', want '%s'", i, e.msg, cases[i].msg);
    ck_assert_ptr_null(out.tensors);
  }
  /* a sync patch that is whole: workers and min_workers with a timeout */
  derr e = {0};
  ck_assert_int_eq(patch("{\"workers\": 5, \"min_workers\": 4, \"round_timeout_ms\": 100}", &sync, &out, &e), 0);
  ck_assert_uint_eq(out.workers, 5);
  ck_assert_uint_eq(out.min_workers, 4);
  ck_assert_uint_eq(out.round_timeout_ms, 100);
  ck_assert_uint_eq(sync.workers, 3);
  instance_cfg_free(&out);
  instance_cfg_free(&cur);
  instance_cfg_free(&sync);
}
END_TEST

/* ---- configuration and state documents ---------------------------------------------- */

static char *dump(json_t *o) {
  jbuf b;
  jbuf_init(&b, NULL, 256);
  jbuf_json_splice(&b, o, NULL, 0);
  json_decref(o);
  jbuf_put(&b, "", 1);
  size_t len, cap;
  return jbuf_take(&b, &len, &cap);
}

START_TEST(hyper_json_in_table_order) {
  optim_alg a;
  optim_hyper h;
  derr e = {0};
  ck_assert_int_eq(optim_alg_parse("momentum", &a, &h, &e), 0);
  h.lr = 0.1;
  char *s = dump(spec_hyper_json(a, &h));
  ck_assert_str_eq(s, "{\"lr\":0.1,\"momentum\":0.9,\"dampening\":0,\"nesterov\":false,\"weight_decay\":0,\"maximize\":false}");
  free(s);
}
END_TEST

START_TEST(cfg_json_round_trips) {
  instance_cfg c, back;
  float *p;
  create_ok("{\"name\": \"r\", \"algorithm\": \"rmsprop\", \"hyper\": {\"centered\": true, \"momentum\": 0.5},"
            " \"mode\": \"sync\", \"workers\": 3, \"min_workers\": 2, \"round_timeout_ms\": 40, \"aggregate\": \"sum\","
            " \"tensors\": [{\"name\": \"W\", \"shape\": [2, 2]}, {\"name\": \"b\", \"shape\": [3], \"origin\": 7}],"
            " \"schedule\": {\"type\": \"step\", \"step_size\": 5, \"gamma\": 0.25}}",
            &c, &p);
  mem_free_floats(p, c.n);
  ck_assert_uint_eq(c.tensors[1].origin, 7);
  char *text = dump(spec_cfg_json(&c));
  json_error_t je;
  json_t *root = json_loads(text, 0, &je);
  ck_assert_ptr_nonnull(root);
  derr e = {0};
  ck_assert_int_eq(spec_parse_cfg_json(root, &back, &e), 0);
  json_decref(root);
  char *again = dump(spec_cfg_json(&back));
  ck_assert_str_eq(again, text); /* the same document again */
  ck_assert_int_eq(back.alg, OPTIM_RMSPROP);
  ck_assert(back.hyper.centered && back.hyper.momentum == 0.5);
  ck_assert_uint_eq(back.min_workers, 2);
  ck_assert_int_eq(back.aggregate, AGG_SUM);
  ck_assert_uint_eq(back.tensors[1].offset, 4);
  ck_assert_uint_eq(back.tensors[1].origin, 7);
  ck_assert(back.sched.step_size == 5 && back.sched.gamma == 0.25);
  free(text), free(again);
  instance_cfg_free(&c), instance_cfg_free(&back);
  json_t *one = json_integer(1);
  ck_assert_int_eq(spec_parse_cfg_json(one, &back, &e), -E_BAD_REQUEST);
  ck_assert_str_eq(e.msg, "expected an object");
  json_decref(one);
}
END_TEST

/* An adam state at step 3 with both buffers, as an export would give it. */
static void adam_state(instance_state *s) {
  memset(s, 0, sizeof *s);
  float *p;
  create_ok("{\"name\": \"m1\", \"algorithm\": \"adam\", \"hyper\": {\"lr\": 0.01},"
            " \"tensors\": [{\"name\": \"W\", \"shape\": [2, 2]}, {\"name\": \"b\", \"shape\": [1]}]}",
            &s->cfg, &p);
  s->params = p;
  for (size_t i = 0; i < 5; i++) p[i] = 0.1f * (float)i - 0.2f;
  s->buf[OPTIM_BUF_EXP_AVG] = mem_alloc_floats(5);
  s->buf[OPTIM_BUF_EXP_AVG_SQ] = mem_alloc_floats(5);
  for (size_t i = 0; i < 5; i++) {
    s->buf[OPTIM_BUF_EXP_AVG][i] = 1.0f / (float)(i + 3);
    s->buf[OPTIM_BUF_EXP_AVG_SQ][i] = 1e-5f * (float)(i + 1);
  }
  s->have = 1u << OPTIM_BUF_EXP_AVG | 1u << OPTIM_BUF_EXP_AVG_SQ;
  s->step = 3;
  s->created = 1795568428.5;
  s->best_loss = INFINITY;
  s->next_id = 1;
}

static char *state_text(const instance_state *s) {
  jbuf b;
  jbuf_init(&b, NULL, 1024);
  spec_state_write(&b, s);
  jbuf_put(&b, "", 1);
  size_t len, cap;
  return jbuf_take(&b, &len, &cap);
}

START_TEST(state_document_round_trips) {
  instance_state s, t;
  adam_state(&s);
  char *text = state_text(&s);
  jdoc d = parse(text);
  derr e = {0};
  ck_assert_int_eq(spec_parse_state(&d, "m1", UINT64_MAX, &t, &e), 0);
  jdoc_free(&d);
  ck_assert_uint_eq(t.step, 3);
  ck_assert(t.created == s.created);
  ck_assert_uint_eq(t.have, s.have);
  ck_assert_uint_eq(t.fresh, 0);
  ck_assert_int_eq(memcmp(t.params, s.params, 5 * sizeof(float)), 0);
  ck_assert_int_eq(memcmp(t.buf[OPTIM_BUF_EXP_AVG], s.buf[OPTIM_BUF_EXP_AVG], 5 * sizeof(float)), 0);
  ck_assert_int_eq(memcmp(t.buf[OPTIM_BUF_EXP_AVG_SQ], s.buf[OPTIM_BUF_EXP_AVG_SQ], 5 * sizeof(float)), 0);
  char *again = state_text(&t);
  ck_assert_str_eq(again, text);
  free(again);
  instance_state_free(&t);
  /* the same document imported under its own name only */
  d = parse(text);
  ck_assert_int_eq(spec_parse_state(&d, "other", UINT64_MAX, &t, &e), -E_BAD_REQUEST);
  ck_assert_str_eq(e.msg, "name: the document is for 'm1', not 'other'");
  ck_assert_ptr_null(t.params);
  ck_assert_int_eq(spec_parse_state(&d, "m1", 14, &t, &e), -E_QUOTA);
  ck_assert_str_eq(e.msg, "this instance needs 15 floats (parameters and state); the limit is 14 (--max-params)");
  jdoc_free(&d);
  free(text);
  instance_state_free(&s);
}
END_TEST

#define ST_HEAD "\"algorithm\": \"adam\", \"tensors\": [{\"name\": \"W\", \"shape\": [2]}]"
#define ST_SGD "\"algorithm\": \"sgd\", \"tensors\": [{\"name\": \"W\", \"shape\": [2]}]"

START_TEST(state_documents_refused) {
  static const struct {
    const char *body;
    int code;
    const char *msg;
  } cases[] = {
      {"3", E_BAD_REQUEST, "the body must be a JSON object"},
      {"{" ST_HEAD ", \"step\": 0, \"params\": {\"W\": [1, 2]}, \"foo\": 1}", E_BAD_REQUEST, "foo: unknown field"},
      {"{" ST_HEAD ", \"format\": \"descent-state/2\", \"step\": 0, \"params\": {\"W\": [1, 2]}}", E_BAD_VALUE,
       "format: expected \"descent-state/1\""},
      {"{" ST_HEAD ", \"params\": {\"W\": [1, 2]}}", E_BAD_REQUEST, "step: required"},
      {"{" ST_HEAD ", \"step\": -1, \"params\": {\"W\": [1, 2]}}", E_BAD_VALUE,
       "step: must be between 0 and 4611686018427387903"},
      {"{" ST_HEAD ", \"step\": 0}", E_BAD_REQUEST, "params: required"},
      {"{" ST_HEAD ", \"step\": 0, \"params\": [1, 2]}", E_BAD_REQUEST, "params: expected an object by tensor name"},
      {"{" ST_HEAD ", \"step\": 0, \"params\": {}}", E_BAD_LENGTH, "params.W: missing"},
      {"{" ST_HEAD ", \"step\": 0, \"params\": {\"W\": [1, 2], \"X\": [1]}}", E_UNKNOWN_TENSOR,
       "params.X: no tensor of that name"},
      {"{" ST_HEAD ", \"step\": 0, \"params\": {\"W\": [1, 2, 3]}}", E_BAD_LENGTH,
       "params.W: expected 2 values, got 3"},
      {"{" ST_HEAD ", \"step\": 0, \"params\": {\"W\": [1, 1e39]}}", E_NOT_FINITE, "params.W[1]: NaN or infinite"},
      {"{" ST_HEAD ", \"step\": 0, \"params\": {\"W\": [1, 2]}, \"buffers\": {\"sum\": {\"W\": [1, 2]}}}", E_BAD_VALUE,
       "buffers.sum: adam with these hyperparameters has no such state"},
      {"{" ST_HEAD ", \"step\": 0, \"params\": {\"W\": [1, 2]}, \"buffers\": [1]}", E_BAD_REQUEST,
       "buffers: expected an object by state name"},
      {"{" ST_HEAD ", \"step\": 3, \"params\": {\"W\": [1, 2]}, \"buffers\": {\"exp_avg_sq\": {\"W\": [1, 2]}}}",
       E_BAD_REQUEST, "buffers.exp_avg: required at step 3"},
      {"{" ST_HEAD ", \"step\": 0, \"params\": {\"W\": [1, 2]}, \"created\": -1}", E_BAD_VALUE,
       "created: a non-negative unix time"},
      {"{" ST_SGD ", \"step\": 0, \"params\": {\"W\": [1, 2]}, \"random_search\": {}}", E_BAD_VALUE,
       "random_search: only for random_search instances, as an object"},
      {"{" ST_SGD ", \"step\": 0, \"params\": {\"W\": [1, 2]}, \"buffers\": {\"exp_avg\": {\"W\": [1, 2]}}}",
       E_BAD_VALUE, "buffers.exp_avg: sgd with these hyperparameters has no such state"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    jdoc d = parse(cases[i].body);
    instance_state s;
    derr e = {0};
    int rc = spec_parse_state(&d, "m1", UINT64_MAX, &s, &e);
    ck_assert_msg(rc == -cases[i].code, "case %zu: rc %d (%s)", i, rc, e.msg);
    ck_assert_msg(strcmp(e.msg, cases[i].msg) == 0, "case %zu: '%s', want '%s'", i, e.msg, cases[i].msg);
    ck_assert_ptr_null(s.params);
    ck_assert_ptr_null(s.cfg.tensors);
    jdoc_free(&d);
  }
}
END_TEST

START_TEST(state_document_accepted_forms) {
  /* no name (the URL's), sgd keeping a momentum_buffer at momentum 0, step 0 without buffers */
  jdoc d = parse("{" ST_SGD ", \"step\": 2, \"params\": {\"W\": [1.5, -2]},"
                 " \"buffers\": {\"momentum_buffer\": {\"W\": [0.25, 0.5]}}}");
  instance_state s;
  derr e = {0};
  ck_assert_int_eq(spec_parse_state(&d, "named-by-url", UINT64_MAX, &s, &e), 0);
  jdoc_free(&d);
  ck_assert_str_eq(s.cfg.name, "named-by-url");
  ck_assert_uint_eq(s.step, 2);
  ck_assert(s.params[0] == 1.5f && s.params[1] == -2.0f);
  ck_assert_uint_eq(s.have, 1u << OPTIM_BUF_MOMENTUM);
  ck_assert(s.buf[OPTIM_BUF_MOMENTUM][1] == 0.5f);
  instance_state_free(&s);
  d = parse("{" ST_HEAD ", \"step\": 0, \"params\": {\"W\": [1, 2]}}");
  ck_assert_int_eq(spec_parse_state(&d, "m1", UINT64_MAX, &s, &e), 0);
  jdoc_free(&d);
  ck_assert_uint_eq(s.have, 0);
  ck_assert_uint_eq(s.fresh, 1u << OPTIM_BUF_EXP_AVG | 1u << OPTIM_BUF_EXP_AVG_SQ);
  instance_state_free(&s);
}
END_TEST

START_TEST(random_search_state_document) {
  jdoc d = parse("{\"algorithm\": \"random_search\", \"hyper\": {\"scale\": 0.5, \"center\": \"best\", \"seed\": 7},"
                 " \"tensors\": [{\"name\": \"x\", \"shape\": [2]}], \"step\": 4, \"params\": {\"x\": [0.5, -1]},"
                 " \"random_search\": {\"best_loss\": 0.25, \"next_candidate\": 6, \"tells\": 4, \"best_candidate\": 3}}");
  instance_state s;
  derr e = {0};
  ck_assert_int_eq(spec_parse_state(&d, "rs", UINT64_MAX, &s, &e), 0);
  jdoc_free(&d);
  ck_assert_int_eq(s.cfg.alg, OPTIM_RANDOM_SEARCH);
  ck_assert(s.cfg.hyper.scale == 0.5);
  ck_assert_int_eq(s.cfg.hyper.center, OPTIM_CENTER_BEST);
  ck_assert_uint_eq(s.cfg.hyper.seed, 7);
  ck_assert(s.best_loss == 0.25);
  ck_assert_uint_eq(s.next_id, 6);
  ck_assert_uint_eq(s.tells, 4);
  ck_assert_uint_eq(s.best_id, 3);
  char *text = state_text(&s);
  d = parse(text);
  instance_state t;
  ck_assert_int_eq(spec_parse_state(&d, "rs", UINT64_MAX, &t, &e), 0);
  jdoc_free(&d);
  char *again = state_text(&t);
  ck_assert_str_eq(again, text);
  free(text), free(again);
  instance_state_free(&s), instance_state_free(&t);
  d = parse("{\"algorithm\": \"random_search\", \"tensors\": [{\"name\": \"x\", \"shape\": [1]}], \"step\": 0,"
            " \"params\": {\"x\": [0]}, \"random_search\": {\"next_candidate\": 0}}");
  ck_assert_int_eq(spec_parse_state(&d, "rs", UINT64_MAX, &s, &e), -E_BAD_VALUE);
  ck_assert_str_eq(e.msg, "random_search.next_candidate: must be between 1 and 4611686018427387903");
  jdoc_free(&d);
}
END_TEST

/* A refused create frees nothing it did not make: h_create passes an
 * uninitialised stack configuration (once a crash: POST without "name"). */
START_TEST(create_without_name_leaves_an_uninitialised_cfg_alone) {
  static const char body[] = "{\"algorithm\": \"sgd\", \"tensors\": [{\"name\": \"w\", \"shape\": [2]}]}";
  jdoc d;
  derr e = {0};
  ck_assert_int_eq(jdoc_parse(&d, NULL, body, strlen(body), &e), 0);
  instance_cfg cfg;
  memset(&cfg, 0x5a, sizeof cfg); /* what an uninitialised stack variable may hold */
  float *params;
  int rc = spec_parse_create(&d, UINT64_MAX, &cfg, &params, &e);
  ck_assert_int_eq(rc, -E_BAD_REQUEST);
  ck_assert_str_eq(e.msg, "name: required");
  ck_assert_ptr_null(params);
  jdoc_free(&d);
}
END_TEST

Suite *suite_spec(void) {
  Suite *s = suite_create("spec");
  TCase *tc = tcase_create("create");
  tcase_add_test(tc, names);
  tcase_add_test(tc, create_without_name_leaves_an_uninitialised_cfg_alone);
  tcase_add_test(tc, create_async_adam_read_field_by_field);
  tcase_add_test(tc, create_sync_momentum_alias);
  tcase_add_loop_test(tc, create_refused, 0, (int)(sizeof refused / sizeof *refused));
  tcase_add_test(tc, long_bad_names_are_cut_in_the_message);
  tcase_add_test(tc, sync_rounds_get_the_default_deadline);
  suite_add_tcase(s, tc);
  tc = tcase_create("patch");
  tcase_add_test(tc, patch_changes_only_run_time_settings);
  tcase_add_test(tc, patch_refused);
  suite_add_tcase(s, tc);
  tc = tcase_create("documents");
  tcase_add_test(tc, hyper_json_in_table_order);
  tcase_add_test(tc, cfg_json_round_trips);
  tcase_add_test(tc, state_document_round_trips);
  tcase_add_test(tc, state_documents_refused);
  tcase_add_test(tc, state_document_accepted_forms);
  tcase_add_test(tc, random_search_state_document);
  suite_add_tcase(s, tc);
  return s;
}
