/* schedule: learning-rate schedules, as torch.optim.lr_scheduler's closed
 * forms, advanced once per optimizer step.
 *
 * Step t (1-based) uses lr(t - 1): torch calls scheduler.step() after
 * optimizer.step(), so the first step runs at the base lr.
 *   step:          base * gamma^floor(t / step_size)            (StepLR)
 *   exponential:   base * gamma^t                               (ExponentialLR)
 *   cosine:        eta_min + (base - eta_min)(1 + cos(pi t / T_max)) / 2
 *                                                               (CosineAnnealingLR)
 *   linear_warmup: base * (start + (end - start) min(t, total) / total)
 *                                                               (LinearLR)
 * Pure functions; any thread.
 */
#ifndef DESCENT_SCHEDULE_H
#define DESCENT_SCHEDULE_H

#include <stdint.h>

enum schedule_kind { SCHED_NONE, SCHED_STEP, SCHED_EXPONENTIAL, SCHED_COSINE, SCHED_LINEAR_WARMUP };

typedef struct schedule {
  int kind;
  double step_size, gamma;         /* step, exponential */
  double t_max, eta_min;           /* cosine */
  double start_factor, end_factor; /* linear_warmup */
  double total_iters;              /* linear_warmup */
} schedule;

/* The lr for an optimizer whose `t` steps have already been taken. */
double schedule_lr(const schedule *s, double base, uint64_t t);

const char *schedule_name(int kind);
int schedule_kind_from_name(const char *name); /* -1 if unknown */

#endif
