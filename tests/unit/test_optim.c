/* test_optim: the kernels against real torch.optim vectors, and the
 * hyperparameter rules (defaults, aliases, torch's argument checks). */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "optim.h"
#include "suites.h"
#include "testutil.h"

/* Runs case c through optim_apply, each step cut into `parts` slices, and
 * checks every step within tolerance.  Returns the number of elements (over
 * all steps) that differ from torch in any bit. */
static size_t run_case(const torch_case *c, int parts, float *final_p, float *final_buf[OPTIM_NBUF]) {
  size_t n = c->n, inexact = 0;
  float *p = malloc(n * sizeof(float) + 1), *g = malloc(n * sizeof(float) + 1);
  float *buf[OPTIM_NBUF] = {0};
  unsigned need = optim_buffers(c->alg, &c->hyper), fresh = need;
  for (int b = 0; b < OPTIM_NBUF; b++)
    if (need & (1u << b)) {
      buf[b] = malloc(n * sizeof(float) + 1);
      for (size_t i = 0; i < n; i++) buf[b][i] = optim_buf_initial(c->alg, &c->hyper, b);
    }
  memcpy(p, c->init, n * sizeof(float));
  float *S = malloc(n * sizeof(float));
  for (size_t i = 0; i < n; i++) S[i] = fabsf(c->init[i]);
  for (size_t t = 0; t < c->steps; t++) {
    memcpy(g, c->grads + t * n, n * sizeof(float));
    optim_plan pl;
    optim_plan_init(&pl, c->alg, &c->hyper, c->hyper.lr, t + 1, fresh, 1.0f);
    fresh = 0;
    size_t start = 0;
    for (int k = 0; k < parts; k++) {
      size_t end = k == parts - 1 ? n : start + (n - start) / 2 + (size_t)k;
      if (end > n) end = n;
      float *sb[OPTIM_NBUF];
      for (int b = 0; b < OPTIM_NBUF; b++) sb[b] = buf[b] ? buf[b] + start : NULL;
      optim_apply(&pl, p + start, g + start, sb, end - start, true);
      start = end;
    }
    const float *want = c->expected + t * n;
    for (size_t i = 0; i < n; i++) {
      if (fabsf(want[i]) > S[i]) S[i] = fabsf(want[i]);
      CHECK(within_tol(p[i], want[i], S[i]), "%s step %zu lane %zu: ours %.9g torch %.9g",
                    c->name, t + 1, i, p[i], want[i]);
      CHECK(memcmp(&p[i], &g[i], sizeof(float)) == 0, "emit differs from params");
      if (memcmp(&p[i], &want[i], sizeof(float)) != 0) inexact++;
    }
  }
  if (final_p) memcpy(final_p, p, n * sizeof(float));
  for (int b = 0; b < OPTIM_NBUF; b++) {
    if (final_buf && buf[b]) memcpy(final_buf[b], buf[b], n * sizeof(float));
    free(buf[b]);
  }
  free(S);
  free(p);
  free(g);
  return inexact;
}

START_TEST(torch_vectors) {
  torch_case c;
  torch_case_load(&c, torch_case_names[_i]);
  float *fb[OPTIM_NBUF] = {0};
  for (int b = 0; b < OPTIM_NBUF; b++) fb[b] = calloc(c.n, sizeof(float));
  size_t inexact = run_case(&c, 1, NULL, fb);
  /* every state buffer torch has, we have, within tolerance */
  unsigned need = optim_buffers(c.alg, &c.hyper);
  for (int b = 0; b < OPTIM_NBUF; b++) {
    ck_assert_msg(!!c.state[b] == !!(need & (1u << b)), "%s: buffer %s presence", c.name,
                  optim_buf_name(b));
    if (!c.state[b]) continue;
    for (size_t i = 0; i < c.n; i++) {
      float S = fabsf(c.state[b][i]);
      for (size_t t = 0; t < c.steps; t++) S = fmaxf(S, fabsf(c.grads[t * c.n + i]));
      CHECK(within_tol(fb[b][i], c.state[b][i], S), "%s %s[%zu]: ours %.9g torch %.9g",
                    c.name, optim_buf_name(b), i, fb[b][i], c.state[b][i]);
    }
  }
  ck_assert_int_eq(c.final_step < 0, !optim_has_step(c.alg));
  if (c.final_step >= 0) ck_assert(c.final_step == (double)c.steps);
  /* fmaf where torch fuses, nothing else: bit-identical to torch */
  ck_assert_msg(inexact == 0, "%s: %zu values differ from torch in some bit", c.name, inexact);
  for (int b = 0; b < OPTIM_NBUF; b++) free(fb[b]);
  torch_case_free(&c);
}
END_TEST

/* Cutting a step into slices (threads, shards) changes no bit. */
START_TEST(torch_vectors_sliced) {
  torch_case c;
  torch_case_load(&c, torch_case_names[_i]);
  float *whole = malloc(c.n * sizeof(float)), *sliced = malloc(c.n * sizeof(float));
  run_case(&c, 1, whole, NULL);
  run_case(&c, 3, sliced, NULL);
  ck_assert(memcmp(whole, sliced, c.n * sizeof(float)) == 0);
  free(whole);
  free(sliced);
  torch_case_free(&c);
}
END_TEST

/* SIMD bodies and scalar tails agree: lengths 0, 1, 7 and 1000003, every
 * algorithm variant, the whole array at once vs one element at a time. */
static const size_t tail_lengths[] = {0, 1, 7, 1000003};

START_TEST(simd_tails) {
  size_t n = tail_lengths[_i];
  static const char *algs[] = {"sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"};
  for (size_t a = 0; a < sizeof algs / sizeof *algs; a++)
    for (int variant = 0; variant < 4; variant++) {
      optim_alg alg;
      optim_hyper h;
      ck_assert_int_eq(optim_alg_parse(algs[a], &alg, &h, NULL), 0);
      h.weight_decay = variant & 1 ? 0.01 : 0;
      h.maximize = variant & 2;
      h.amsgrad = h.centered = variant & 1;
      if (alg == OPTIM_RMSPROP) h.momentum = variant & 2 ? 0.5 : 0;
      size_t m = n + 1; /* a guard element that must not change */
      float *p1 = mem_alloc_floats(m), *p2 = mem_alloc_floats(m);
      float *g1 = mem_alloc_floats(m), *g2 = mem_alloc_floats(m);
      float *b1[OPTIM_NBUF] = {0}, *b2[OPTIM_NBUF] = {0};
      for (size_t i = 0; i < m; i++) {
        p1[i] = p2[i] = (float)((i * 7919) % 2001) / 1000.0f - 1.0f;
        g1[i] = g2[i] = (float)((i * 104729) % 4001) / 2000.0f - 1.0f;
      }
      unsigned need = optim_buffers(alg, &h);
      for (int b = 0; b < OPTIM_NBUF; b++)
        if (need & (1u << b)) {
          b1[b] = mem_alloc_floats(m);
          b2[b] = mem_alloc_floats(m);
          for (size_t i = 0; i < m; i++) b1[b][i] = b2[b][i] = (float)(i % 5) * 0.25f;
        }
      for (uint64_t step = 1; step <= 2; step++) {
        optim_plan pl;
        optim_plan_init(&pl, alg, &h, h.lr, step, step == 1 ? need : 0, 0.75f);
        optim_apply(&pl, p1, g1, b1, n, true);
        for (size_t i = 0; i < n; i++) {
          float *s2[OPTIM_NBUF];
          for (int b = 0; b < OPTIM_NBUF; b++) s2[b] = b2[b] ? b2[b] + i : NULL;
          optim_apply(&pl, p2 + i, g2 + i, s2, 1, true);
        }
      }
      ck_assert_msg(memcmp(p1, p2, m * sizeof(float)) == 0, "%s variant %d n=%zu", algs[a], variant, n);
      ck_assert_msg(memcmp(g1, g2, m * sizeof(float)) == 0, "%s emit n=%zu", algs[a], n);
      for (int b = 0; b < OPTIM_NBUF; b++)
        if (b1[b]) ck_assert(memcmp(b1[b], b2[b], m * sizeof(float)) == 0);
      ck_assert(p1[n] == p2[n] && p1[n] == (float)((n * 7919) % 2001) / 1000.0f - 1.0f);
      if (n > 0) ck_assert(p1[0] != -1.0f); /* it moved */
      mem_free_floats(p1, m);
      mem_free_floats(p2, m);
      mem_free_floats(g1, m);
      mem_free_floats(g2, m);
      for (int b = 0; b < OPTIM_NBUF; b++) {
        mem_free_floats(b1[b], m);
        mem_free_floats(b2[b], m);
      }
    }
}
END_TEST

/* Changing lr between steps, as editing a torch param_group does: SGD's
 * update is exactly fma(g, -lr_t, p); Adam's moments ignore lr and its step
 * uses the new lr with the same bias correction. */
START_TEST(lr_changes_between_steps) {
  torch_case c;
  torch_case_load(&c, "adam_default");
  size_t n = c.n;
  float *p = malloc(n * sizeof(float)), *g = malloc(n * sizeof(float));
  float *ea = calloc(n, sizeof(float)), *eas = calloc(n, sizeof(float));
  float *buf[OPTIM_NBUF] = {0};
  buf[OPTIM_BUF_EXP_AVG] = ea;
  buf[OPTIM_BUF_EXP_AVG_SQ] = eas;
  memcpy(p, c.init, n * sizeof(float));
  for (size_t t = 0; t < 20; t++) {
    double lr = t < 10 ? c.hyper.lr : 0.01;
    float *before = malloc(n * sizeof(float));
    memcpy(before, p, n * sizeof(float));
    memcpy(g, c.grads + t * n, n * sizeof(float));
    optim_plan pl;
    optim_plan_init(&pl, c.alg, &c.hyper, lr, t + 1, 0, 1.0f);
    optim_apply(&pl, p, g, buf, n, false);
    if (t < 10) {
      ck_assert(memcmp(p, c.expected + t * n, n * sizeof(float)) == 0);
    } else {
      double bc1 = 1 - pow(0.9, (double)(t + 1)), bc2 = 1 - pow(0.999, (double)(t + 1));
      for (size_t i = 0; i < n; i++) {
        float denom = sqrtf(eas[i]) / (float)sqrt(bc2) + (float)1e-8;
        float want = before[i] + ((float)(-(lr / bc1)) * ea[i]) / denom;
        CHECK(p[i] == want, "step %zu lane %zu", t + 1, i);
      }
    }
    free(before);
  }
  /* plain SGD: each step exactly fma(g, -lr_t, p) */
  optim_alg alg;
  optim_hyper h;
  optim_alg_parse("sgd", &alg, &h, NULL);
  float q = 1.0f, lrs[] = {0.5f, 0.25f, 0.125f};
  for (int t = 0; t < 3; t++) {
    float gg = 3.0f, want = fmaf(gg, -lrs[t], q);
    optim_plan pl;
    optim_plan_init(&pl, alg, &h, lrs[t], (uint64_t)t + 1, 0, 1.0f);
    float *nob[OPTIM_NBUF] = {0};
    optim_apply(&pl, &q, &gg, nob, 1, false);
    ck_assert(q == want);
  }
  ck_assert(q == 1.0f - 3.0f * (0.5f + 0.25f + 0.125f));
  free(p);
  free(g);
  free(ea);
  free(eas);
  torch_case_free(&c);
}
END_TEST

/* torch's constructor checks, each refused with a message naming the value. */
static const struct {
  const char *alg, *field;
  double value;
  const char *needle;
} bad_hyper[] = {
    {"sgd", "lr", -0.1, "hyper.lr"},
    {"adam", "eps", -1e-8, "hyper.eps"},
    {"rmsprop", "weight_decay", -1, "hyper.weight_decay"},
    {"sgd", "momentum", -0.5, "hyper.momentum"},
    {"adam", "beta0", 1.0, "hyper.betas[0]"},
    {"adamw", "beta1", -0.1, "hyper.betas[1]"},
    {"adagrad", "lr_decay", -1, "hyper.lr_decay"},
    {"adagrad", "initial_accumulator_value", -1, "hyper.initial_accumulator_value"},
    {"rmsprop", "alpha", -0.5, "hyper.alpha"},
    {"nesterov", "dampening", 0.1, "hyper.nesterov"},
    {"sgd", "nesterov_no_momentum", 0, "hyper.nesterov"},
    {"adam", "lr", NAN, "hyper.lr: must be finite"},
    {"sgd", "lr", INFINITY, "hyper.lr: must be finite"},
    {"random_search", "scale", 0, "hyper.scale"},
};

START_TEST(hyper_checks) {
  optim_alg alg;
  optim_hyper h;
  derr e = {0};
  ck_assert_int_eq(optim_alg_parse(bad_hyper[_i].alg, &alg, &h, &e), 0);
  ck_assert_int_eq(optim_hyper_check(alg, &h, &e), 0);
  const char *f = bad_hyper[_i].field;
  double v = bad_hyper[_i].value;
  if (!strcmp(f, "lr")) h.lr = v;
  else if (!strcmp(f, "eps")) h.eps = v;
  else if (!strcmp(f, "weight_decay")) h.weight_decay = v;
  else if (!strcmp(f, "momentum")) h.momentum = v;
  else if (!strcmp(f, "beta0")) h.betas[0] = v;
  else if (!strcmp(f, "beta1")) h.betas[1] = v;
  else if (!strcmp(f, "lr_decay")) h.lr_decay = v;
  else if (!strcmp(f, "initial_accumulator_value")) h.initial_accumulator_value = v;
  else if (!strcmp(f, "alpha")) h.alpha = v;
  else if (!strcmp(f, "dampening")) h.dampening = v;
  else if (!strcmp(f, "scale")) h.scale = v;
  else if (!strcmp(f, "nesterov_no_momentum")) h.nesterov = true;
  ck_assert_int_eq(optim_hyper_check(alg, &h, &e), -E_BAD_VALUE);
  ck_assert_int_eq(e.code, E_BAD_VALUE);
  ck_assert_msg(strstr(e.msg, bad_hyper[_i].needle) != NULL, "message '%s'", e.msg);
}
END_TEST

START_TEST(defaults_and_aliases) {
  optim_alg alg;
  optim_hyper h;
  derr e = {0};
  ck_assert_int_eq(optim_alg_parse("momentum", &alg, &h, &e), 0);
  ck_assert_int_eq(alg, OPTIM_SGD);
  ck_assert(h.momentum == 0.9 && !h.nesterov);
  ck_assert_int_eq(optim_alg_parse("nesterov", &alg, &h, &e), 0);
  ck_assert(alg == OPTIM_SGD && h.momentum == 0.9 && h.nesterov);
  ck_assert_int_eq(optim_alg_parse("adamw", &alg, &h, &e), 0);
  ck_assert(h.weight_decay == 1e-2 && h.lr == 1e-3 && h.betas[0] == 0.9 && h.betas[1] == 0.999);
  ck_assert(h.eps == 1e-8 && !h.amsgrad);
  ck_assert_int_eq(optim_alg_parse("adagrad", &alg, &h, &e), 0);
  ck_assert(h.eps == 1e-10 && h.lr == 1e-2 && h.initial_accumulator_value == 0);
  ck_assert_int_eq(optim_alg_parse("rmsprop", &alg, &h, &e), 0);
  ck_assert(h.alpha == 0.99 && h.lr == 1e-2 && h.eps == 1e-8);
  ck_assert_int_eq(optim_alg_parse("lbfgs", &alg, &h, &e), -E_UNKNOWN_ALGORITHM);
  ck_assert(strstr(e.msg, "lbfgs") != NULL);
  ck_assert_str_eq(optim_alg_name(OPTIM_ADAMW), "adamw");
  for (int b = 0; b < OPTIM_NBUF; b++) ck_assert_int_eq(optim_buf_from_name(optim_buf_name(b)), b);
  ck_assert_int_eq(optim_buf_from_name("nope"), -1);
  /* buffers follow the hyperparameters, as torch's state does */
  optim_alg_parse("rmsprop", &alg, &h, &e);
  ck_assert_uint_eq(optim_buffers(alg, &h), 1u << OPTIM_BUF_SQUARE_AVG);
  h.centered = true;
  h.momentum = 0.1;
  ck_assert_uint_eq(optim_buffers(alg, &h), 1u << OPTIM_BUF_SQUARE_AVG | 1u << OPTIM_BUF_GRAD_AVG |
                                                1u << OPTIM_BUF_MOMENTUM);
  optim_alg_parse("sgd", &alg, &h, &e);
  ck_assert_uint_eq(optim_buffers(alg, &h), 0);
}
END_TEST

START_TEST(norms_and_checks) {
  float g[19];
  double want = 0;
  for (int i = 0; i < 19; i++) {
    g[i] = (float)(i - 9) * 0.5f;
    want += (double)g[i] * g[i];
  }
  ck_assert(optim_sumsq(g, 19) == want); /* small integers: exact */
  /* accumulating in pieces with the global index gives the same bits */
  double acc[8] = {0};
  optim_sumsq_acc(acc, g, 5, 0);
  optim_sumsq_acc(acc, g + 5, 14, 5);
  ck_assert(optim_sumsq_total(acc) == optim_sumsq(g, 19));
  ck_assert(optim_clip_coef(0, 10) == 1.0f);
  ck_assert(optim_clip_coef(1.0, 0.5) == 1.0f);
  ck_assert(optim_clip_coef(1.0, 4.0) == (float)(1.0 / (4.0 + 1e-6)));
  size_t where = 99;
  ck_assert_int_eq(optim_all_finite(g, 19, &where), 1);
  g[13] = NAN;
  ck_assert_int_eq(optim_all_finite(g, 19, &where), 0);
  ck_assert_uint_eq(where, 13);
  g[13] = 0;
  g[2] = -INFINITY;
  ck_assert_int_eq(optim_all_finite(g, 19, &where), 0);
  ck_assert_uint_eq(where, 2);
  ck_assert_int_eq(optim_all_finite(g, 0, &where), 1);
}
END_TEST

/* The push path's one-pass scan gives optim_sumsq's bits and optim_all_finite's index. */
START_TEST(scan_is_finite_check_plus_norm) {
  size_t n = 100003;
  float *g = malloc(n * sizeof(float));
  for (size_t i = 0; i < n; i++) g[i] = (float)((i * 2654435761u) % 100003) * 1e-3f - 50.0f + (float)i * 1e-9f;
  for (size_t len = 0; len < 40; len++) {
    double s = -1;
    size_t where = 99;
    ck_assert_int_eq(optim_scan(g + 3, len, &s, &where), 1);
    ck_assert(s == optim_sumsq(g + 3, len));
  }
  double s = -1;
  size_t where = 0;
  ck_assert_int_eq(optim_scan(g, n, &s, &where), 1);
  ck_assert(s == optim_sumsq(g, n));
  g[77777] = INFINITY;
  g[90000] = NAN;
  ck_assert_int_eq(optim_scan(g, n, &s, &where), 0);
  ck_assert_uint_eq(where, 77777);
  free(g);
}
END_TEST

/* Clipping multiplies the gradient first, exactly as clip_grad_norm_'s
 * p.grad.mul_(coef) before the step. */
START_TEST(gscale_is_premultiply) {
  optim_alg alg;
  optim_hyper h;
  optim_alg_parse("adam", &alg, &h, NULL);
  float p1 = 0.5f, p2 = 0.5f, g1 = 3.0f, g2 = 3.0f * 0.3f;
  float ea1 = 0, eas1 = 0, ea2 = 0, eas2 = 0;
  float *b1[OPTIM_NBUF] = {0}, *b2[OPTIM_NBUF] = {0};
  b1[OPTIM_BUF_EXP_AVG] = &ea1;
  b1[OPTIM_BUF_EXP_AVG_SQ] = &eas1;
  b2[OPTIM_BUF_EXP_AVG] = &ea2;
  b2[OPTIM_BUF_EXP_AVG_SQ] = &eas2;
  optim_plan a, b;
  optim_plan_init(&a, alg, &h, h.lr, 1, 0, 0.3f);
  optim_plan_init(&b, alg, &h, h.lr, 1, 0, 1.0f);
  optim_apply(&a, &p1, &g1, b1, 1, false);
  optim_apply(&b, &p2, &g2, b2, 1, false);
  ck_assert(p1 == p2 && ea1 == ea2 && eas1 == eas2);
}
END_TEST

Suite *suite_optim(void) {
  Suite *s = suite_create("optim");
  TCase *tc = tcase_create("torch");
  tcase_set_timeout(tc, 60);
  tcase_add_loop_test(tc, torch_vectors, 0, TORCH_NCASES);
  tcase_add_loop_test(tc, torch_vectors_sliced, 0, TORCH_NCASES);
  suite_add_tcase(s, tc);
  tc = tcase_create("kernels");
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, simd_tails, 0, sizeof tail_lengths / sizeof *tail_lengths);
  tcase_add_test(tc, lr_changes_between_steps);
  tcase_add_test(tc, gscale_is_premultiply);
  tcase_add_test(tc, norms_and_checks);
  tcase_add_test(tc, scan_is_finite_check_plus_norm);
  suite_add_tcase(s, tc);
  tc = tcase_create("hyper");
  tcase_add_loop_test(tc, hyper_checks, 0, sizeof bad_hyper / sizeof *bad_hyper);
  tcase_add_test(tc, defaults_and_aliases);
  suite_add_tcase(s, tc);
  return s;
}
