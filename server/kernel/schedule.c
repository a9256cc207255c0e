/* schedule: the closed forms of torch's lr schedulers (schedule.h), in
 * double.  Owns no state: pure functions, no allocation, no I/O.  Any
 * thread. */
#include "schedule.h"

#include <math.h>
#include <string.h>

static const char *const names[] = {"none", "step", "exponential", "cosine", "linear_warmup"};

const char *schedule_name(int kind) { return kind >= 0 && kind <= SCHED_LINEAR_WARMUP ? names[kind] : "none"; }

int schedule_kind_from_name(const char *name) {
  for (int i = 1; i <= SCHED_LINEAR_WARMUP; i++)
    if (strcmp(names[i], name) == 0) return i;
  return -1;
}

double schedule_lr(const schedule *s, double base, uint64_t t) {
  double x = (double)t;
  switch (s->kind) {
  case SCHED_STEP: return base * pow(s->gamma, floor(x / s->step_size));
  case SCHED_EXPONENTIAL: return base * pow(s->gamma, x);
  case SCHED_COSINE: return s->eta_min + (base - s->eta_min) * (1 + cos(M_PI * x / s->t_max)) / 2;
  case SCHED_LINEAR_WARMUP: {
    double f = x < s->total_iters ? x / s->total_iters : 1.0;
    return base * (s->start_factor + (s->end_factor - s->start_factor) * f);
  }
  default: return base;
  }
}
