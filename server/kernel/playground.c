/* playground: the built-in objectives and their gradients (in double), and
 * playground_run, which steps the daemon's own optimizer kernel on float32
 * (x, y) and writes the trajectory and losses into the caller's arrays.
 * Owns no state; never allocates or does I/O (the caller sizes traj and
 * losses).  Any thread (HTTP threads, POST /v1/playground). */
#include "playground.h"

#include <math.h>
#include <string.h>

#include "rng.h"
#include "rsearch.h"

static const char *const names[PG__COUNT] = {"ravine", "saddle", "rosenbrock", "local_minimum"};

int playground_objective(const char *name) {
  for (int i = 0; i < PG__COUNT; i++)
    if (!strcmp(name, names[i])) return i;
  return -1;
}

const char *playground_objective_name(int o) { return o >= 0 && o < PG__COUNT ? names[o] : "unknown"; }

double playground_loss(int o, double x, double y) {
  switch (o) {
  case PG_RAVINE: return (x * x + 100 * y * y) / 2;
  case PG_SADDLE: return x * x - y * y;
  case PG_ROSENBROCK: return (1 - x) * (1 - x) + 100 * (y - x * x) * (y - x * x);
  default: return x * x * x * x - 3 * x * x + x + y * y;
  }
}

void playground_grad(int o, double x, double y, double g[2]) {
  switch (o) {
  case PG_RAVINE:
    g[0] = x;
    g[1] = 100 * y;
    break;
  case PG_SADDLE:
    g[0] = 2 * x;
    g[1] = -2 * y;
    break;
  case PG_ROSENBROCK:
    g[0] = -2 * (1 - x) - 400 * x * (y - x * x);
    g[1] = 200 * (y - x * x);
    break;
  default:
    g[0] = 4 * x * x * x - 6 * x + 1;
    g[1] = 2 * y;
    break;
  }
}

static int run_search(const pg_run *r, float *p, float *traj, double *losses, derr *e) {
  rsearch rs;
  rsearch_init(&rs, 2);
  for (uint64_t t = 1; t <= r->steps; t++) {
    uint64_t id;
    const float *x;
    bool improved;
    int rc = rsearch_ask(&rs, &r->hyper, p, &id, &x, e);
    if (rc == 0) rc = rsearch_tell(&rs, id, playground_loss(r->objective, x[0], x[1]), p, &improved, e);
    if (rc < 0) {
      rsearch_cleanup(&rs);
      return rc;
    }
    traj[2 * t] = p[0];
    traj[2 * t + 1] = p[1];
    losses[t] = playground_loss(r->objective, p[0], p[1]);
  }
  rsearch_cleanup(&rs);
  return 0;
}

int playground_run(const pg_run *r, float *traj, double *losses, derr *e) {
  if (r->objective < 0 || r->objective >= PG__COUNT) return derr_set(e, E_BAD_VALUE, "objective: unknown");
  if (r->steps > PLAYGROUND_MAX_STEPS)
    return derr_set(e, E_BAD_VALUE, "steps: at most %d", PLAYGROUND_MAX_STEPS);
  if (!isfinite(r->noise) || r->noise < 0) return derr_set(e, E_BAD_VALUE, "noise: must be a non-negative number");
  float p[2] = {(float)r->start[0], (float)r->start[1]};
  if (!isfinite(p[0]) || !isfinite(p[1])) return derr_set(e, E_NOT_FINITE, "start: not finite in float32");
  traj[0] = p[0];
  traj[1] = p[1];
  losses[0] = playground_loss(r->objective, p[0], p[1]);
  if (r->alg == OPTIM_RANDOM_SEARCH) return run_search(r, p, traj, losses, e);
  if (r->alg == OPTIM_SPARSE_ADAM) /* torch.optim.SparseAdam refuses dense gradients */
    return derr_set(e, E_BAD_VALUE, "algorithm: sparse_adam takes sparse gradients only "
                    "(torch: SparseAdam does not support dense gradients, please consider Adam instead)");
  float bufs[OPTIM_NBUF][2];
  float *buf[OPTIM_NBUF];
  unsigned need = optim_buffers(r->alg, &r->hyper);
  for (int b = 0; b < OPTIM_NBUF; b++) {
    float v = optim_buf_initial(r->alg, &r->hyper, b);
    bufs[b][0] = bufs[b][1] = v;
    buf[b] = (need & (1u << b)) ? bufs[b] : NULL;
  }
  unsigned fresh = need;
  for (uint64_t t = 1; t <= r->steps; t++) {
    double gd[2];
    playground_grad(r->objective, p[0], p[1], gd);
    float g[2];
    for (int i = 0; i < 2; i++) {
      double noise = r->noise > 0 ? r->noise * rng_normal(r->seed, t, (uint64_t)i) : 0;
      g[i] = (float)(gd[i] + noise);
    }
    optim_plan pl;
    optim_plan_init(&pl, r->alg, &r->hyper, r->hyper.lr, t, fresh, 1.0f);
    fresh = 0;
    optim_apply(&pl, p, g, buf, 2, false);
    traj[2 * t] = p[0];
    traj[2 * t + 1] = p[1];
    losses[t] = playground_loss(r->objective, p[0], p[1]);
  }
  return 0;
}
