/* testutil: loads the torch.optim reference vectors for the unit suites. */
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const torch_case_names[] = {
    "sgd_plain", "sgd_momentum", "sgd_momentum_dampening", "sgd_nesterov", "sgd_momentum_wd",
    "sgd_nesterov_wd", "sgd_maximize", "adagrad_default", "adagrad_decay", "adagrad_maximize",
    "rmsprop_default", "rmsprop_wd", "rmsprop_momentum", "rmsprop_centered",
    "rmsprop_centered_momentum", "rmsprop_maximize", "adam_default", "adam_amsgrad", "adam_wd",
    "adam_betas_eps", "adam_maximize", "adamw_default", "adamw_amsgrad", "adamw_maximize", NULL};

void json_floats(json_t *arr, float *out, size_t n) {
  ck_assert_msg(json_is_array(arr) && json_array_size(arr) == n, "array of %zu expected", n);
  for (size_t i = 0; i < n; i++) out[i] = (float)json_number_value(json_array_get(arr, i));
}

void torch_case_load(torch_case *c, const char *name) {
  memset(c, 0, sizeof *c);
  char path[256];
  snprintf(path, sizeof path, "data/optim/%s.json", name);
  json_error_t err;
  json_t *j = json_load_file(path, 0, &err);
  ck_assert_msg(j != NULL, "%s: %s", path, err.text);
  snprintf(c->name, sizeof c->name, "%s", name);
  derr e = {0};
  ck_assert_int_eq(optim_alg_parse(json_string_value(json_object_get(j, "algorithm")), &c->alg,
                                   &c->hyper, &e), 0);
  json_t *h = json_object_get(j, "hyper");
  const char *k;
  json_t *v;
  json_object_foreach(h, k, v) {
    const optim_hyper_field *f = optim_hyper_fields;
    while (f->name && strcmp(f->name, k) != 0) f++;
    ck_assert_msg(f->name != NULL, "%s: unknown hyper %s", name, k);
    char *base = (char *)&c->hyper + f->offset;
    if (f->kind == OPTIM_HK_NUM) *(double *)base = json_number_value(v);
    else if (f->kind == OPTIM_HK_BOOL) *(bool *)base = json_is_true(v);
    else if (f->kind == OPTIM_HK_PAIR) {
      ((double *)base)[0] = json_number_value(json_array_get(v, 0));
      ((double *)base)[1] = json_number_value(json_array_get(v, 1));
    }
  }
  ck_assert_int_eq(optim_hyper_check(c->alg, &c->hyper, &e), 0);
  c->n = json_integer_value(json_object_get(j, "n"));
  c->steps = json_integer_value(json_object_get(j, "steps"));
  c->init = malloc(c->n * sizeof(float));
  c->grads = malloc(c->n * c->steps * sizeof(float));
  c->expected = malloc(c->n * c->steps * sizeof(float));
  json_floats(json_object_get(j, "init"), c->init, c->n);
  for (size_t t = 0; t < c->steps; t++) {
    json_floats(json_array_get(json_object_get(j, "grads"), t), c->grads + t * c->n, c->n);
    json_floats(json_array_get(json_object_get(j, "expected"), t), c->expected + t * c->n, c->n);
  }
  json_t *fs = json_object_get(j, "final_state");
  c->final_step = -1;
  json_object_foreach(fs, k, v) {
    if (strcmp(k, "step") == 0) {
      c->final_step = json_number_value(v);
      continue;
    }
    int b = optim_buf_from_name(k);
    ck_assert_msg(b >= 0, "%s: unknown state %s", name, k);
    c->state[b] = malloc(c->n * sizeof(float));
    json_floats(v, c->state[b], c->n);
  }
  json_decref(j);
}

void torch_case_free(torch_case *c) {
  free(c->init);
  free(c->grads);
  free(c->expected);
  for (int b = 0; b < OPTIM_NBUF; b++) free(c->state[b]);
}

int within_tol(float ours, float torch, float S) {
  return fabsf(ours - torch) <= 1e-6f + 1e-5f * S;
}
