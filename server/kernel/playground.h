/* playground: the seed's optimizers at work on built-in 2-D objectives (the
 * seed: neuralnets' optimizers tutorial that descent grew from, not part of
 * this repository), with
 * gradients computed here, so curl alone can watch them (POST /v1/playground).
 *
 *   ravine         f = (x^2 + 100 y^2) / 2       (the seed's Problem 1: SGD zig-zags)
 *   saddle         f = x^2 - y^2                 (Problem 2: a saddle point)
 *   rosenbrock     f = (1 - x)^2 + 100 (y - x^2)^2
 *   local_minimum  f = x^4 - 3 x^2 + x + y^2     (Problem 2: a local minimum near
 *                  x = 1.13 beside the global one near x = -1.30)
 * Optional gradient noise (Problem 3): each component gets noise * N(0, 1)
 * from the counter-based generator (stream = step), so a seed repeats.
 * The optimizer is the same kernel the daemon serves (float32 parameters);
 * losses are evaluated in double.  Pure computation; any thread.
 */
#ifndef DESCENT_PLAYGROUND_H
#define DESCENT_PLAYGROUND_H

#include <stdint.h>

#include "errors.h"
#include "optim.h"

enum pg_objective { PG_RAVINE, PG_SADDLE, PG_ROSENBROCK, PG_LOCAL_MINIMUM, PG__COUNT };

#define PLAYGROUND_MAX_STEPS 100000

typedef struct pg_run {
  int objective;
  optim_alg alg;
  optim_hyper hyper;
  double start[2];
  uint64_t steps;
  double noise;
  uint64_t seed;
} pg_run;

int playground_objective(const char *name); /* -1 if unknown */
const char *playground_objective_name(int objective);
double playground_loss(int objective, double x, double y);
void playground_grad(int objective, double x, double y, double g[2]);

/* Runs r: traj receives steps+1 points (x, y pairs; the start first), losses
 * steps+1 values.  Returns 0 or an error (nothing is written then). */
int playground_run(const pg_run *r, float *traj, double *losses, derr *e);

#endif
