/* testutil: helpers shared by the unit suites: torch reference vectors. */
#ifndef DESCENT_TESTUTIL_H
#define DESCENT_TESTUTIL_H

#include <jansson.h>
#include <stddef.h>

#include "optim.h"

/* An assertion for hot loops: Check's ck_assert* records a checkpoint
 * (a write to its message file) on every pass; this only acts on failure. */
#define CHECK(cond, ...)                        \
  do {                                          \
    if (!(cond)) ck_abort_msg(__VA_ARGS__);     \
  } while (0)

/* One torch.optim run from tests/data/optim/<case>.json. */
typedef struct torch_case {
  char name[64];
  optim_alg alg;
  optim_hyper hyper;
  size_t n, steps;
  float *init;     /* n */
  float *grads;    /* steps * n */
  float *expected; /* steps * n */
  float *state[OPTIM_NBUF]; /* final state vectors, NULL when absent */
  double final_step;        /* -1 when absent */
} torch_case;

/* Names of every case file, NULL-terminated. */
extern const char *const torch_case_names[];
#define TORCH_NCASES 24

/* Loads data/optim/<name>.json (aborts the test on failure). */
void torch_case_load(torch_case *c, const char *name);
void torch_case_free(torch_case *c);

/* Fills out[0..n) from a JSON array of numbers (parsed as double, cast to float). */
void json_floats(json_t *arr, float *out, size_t n);

/* The reference README's tolerance: |ours - torch| <= 1e-6 + 1e-5 * S. */
int within_tol(float ours, float torch, float S);

#endif
