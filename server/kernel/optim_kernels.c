/* optim_kernels: the fused single-pass loops of every algorithm.
 *
 * One pass reads the gradient, the parameters and each state buffer once and
 * writes each once.  fmaf() sits exactly where torch's CPU kernels fuse a
 * multiply-add, and this file is built with -ffp-contract=off so nothing else
 * is fused: with FMA hardware the results are bit-identical to torch 1.13.
 * Each loop is compiled three times (AVX-512, AVX2+FMA, baseline x86-64) and
 * picked at load time by the CPU (GCC target_clones); other CPUs get the
 * portable build.  Flags that decide which arrays are touched are compile-time
 * constants of an always-inline body; the rest are loop-invariant selects.
 * No allocation, no I/O; any thread.
 */
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "optim.h"
#include "optim_internal.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(DESCENT_NO_CLONES)
#define KCLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define KCLONES
#endif
#define KBODY static inline __attribute__((always_inline))

KBODY void sgd_body(const optim_plan *pl, float *restrict p, float *restrict g,
                    float *restrict mb, size_t n, const bool MOM, const bool EMIT) {
  const unsigned f = pl->flags;
  const bool scale = f & OPTIM_F_SCALE, wd = f & OPTIM_F_WD;
  const bool nest = f & OPTIM_F_NESTEROV, first = f & OPTIM_F_FIRST;
  const float gs = pl->gscale, swd = pl->s[SGD_WD], mom = pl->s[SGD_MOM];
  const float damp1 = pl->s[SGD_DAMP1], nlr = pl->s[SGD_NLR];
  for (size_t i = 0; i < n; i++) {
    float d = g[i];
    if (scale) d *= gs;
    if (wd) d = fmaf(p[i], swd, d);
    if (MOM) {
      float b = first ? d : fmaf(d, damp1, mb[i] * mom);
      mb[i] = b;
      d = nest ? fmaf(b, mom, d) : b;
    }
    float np = fmaf(d, nlr, p[i]);
    p[i] = np;
    if (EMIT) g[i] = np;
  }
}

KBODY void adagrad_body(const optim_plan *pl, float *restrict p, float *restrict g,
                        float *restrict sum, size_t n, const bool EMIT) {
  const unsigned f = pl->flags;
  const bool scale = f & OPTIM_F_SCALE, wd = f & OPTIM_F_WD;
  const float gs = pl->gscale, swd = pl->s[ADAGRAD_WD];
  const float nclr = pl->s[ADAGRAD_NCLR], eps = pl->s[ADAGRAD_EPS];
  for (size_t i = 0; i < n; i++) {
    float d = g[i];
    if (scale) d *= gs;
    float pi = p[i];
    if (wd) d = fmaf(pi, swd, d);
    float s = fmaf(d, d, sum[i]);
    sum[i] = s;
    float std = sqrtf(s) + eps;
    float np = pi + (nclr * d) / std;
    p[i] = np;
    if (EMIT) g[i] = np;
  }
}

KBODY void rmsprop_body(const optim_plan *pl, float *restrict p, float *restrict g,
                        float *restrict sq, float *restrict ga, float *restrict mb, size_t n,
                        const bool CENTERED, const bool MOM, const bool EMIT) {
  const unsigned f = pl->flags;
  const bool scale = f & OPTIM_F_SCALE, wd = f & OPTIM_F_WD;
  const float gs = pl->gscale, swd = pl->s[RMS_WD], alpha = pl->s[RMS_ALPHA];
  const float alpha1 = pl->s[RMS_ALPHA1], eps = pl->s[RMS_EPS];
  const float mom = pl->s[RMS_MOM], nlr = pl->s[RMS_NLR];
  for (size_t i = 0; i < n; i++) {
    float d = g[i];
    if (scale) d *= gs;
    float pi = p[i];
    if (wd) d = fmaf(pi, swd, d);
    float v = fmaf(alpha1 * d, d, sq[i] * alpha);
    sq[i] = v;
    float avg;
    if (CENTERED) {
      float m = fmaf(d, alpha1, ga[i] * alpha);
      ga[i] = m;
      avg = sqrtf(fmaf(-m, m, v));
    } else {
      avg = sqrtf(v);
    }
    avg = avg + eps;
    float np;
    if (MOM) {
      float b = mb[i] * mom + d / avg;
      mb[i] = b;
      np = fmaf(b, nlr, pi);
    } else {
      np = pi + (nlr * d) / avg;
    }
    p[i] = np;
    if (EMIT) g[i] = np;
  }
}

KBODY void adam_body(const optim_plan *pl, float *restrict p, float *restrict g,
                     float *restrict ea, float *restrict eas, float *restrict mx, size_t n,
                     const bool AMS, const bool DECOUPLED, const bool EMIT) {
  const unsigned f = pl->flags;
  const bool scale = f & OPTIM_F_SCALE, wd = f & OPTIM_F_WD;
  const float gs = pl->gscale, swd = pl->s[ADAM_WD];
  const float b1 = pl->s[ADAM_B1], b1c = pl->s[ADAM_B1C];
  const float b2 = pl->s[ADAM_B2], b2c = pl->s[ADAM_B2C];
  const float sbc2 = pl->s[ADAM_SQRT_BC2], eps = pl->s[ADAM_EPS];
  const float nstep = pl->s[ADAM_NSTEP], decay = pl->s[ADAM_DECAY];
  for (size_t i = 0; i < n; i++) {
    float d = g[i];
    if (scale) d *= gs;
    float pi = p[i];
    if (DECOUPLED) pi = pi * decay;
    if (wd) d = fmaf(pi, swd, d);
    float m = fmaf(d, b1c, ea[i] * b1);
    float v = fmaf(b2c * d, d, eas[i] * b2);
    ea[i] = m;
    eas[i] = v;
    if (AMS) {
      float o = mx[i];
      v = o > v ? o : v;
      mx[i] = v;
    }
    float denom = sqrtf(v) / sbc2 + eps;
    float np = pi + (nstep * m) / denom;
    p[i] = np;
    if (EMIT) g[i] = np;
  }
}

/* Each instantiation below is one clone family; the switch picks the body
 * whose constant flags match the plan. */
#define ARGS const optim_plan *pl, float *restrict p, float *restrict g, float *const *buf, size_t n

KCLONES static void k_sgd(ARGS, bool mom, bool emit) {
  float *mb = buf[OPTIM_BUF_MOMENTUM];
  if (mom) {
    if (emit) sgd_body(pl, p, g, mb, n, true, true);
    else sgd_body(pl, p, g, mb, n, true, false);
  } else {
    if (emit) sgd_body(pl, p, g, NULL, n, false, true);
    else sgd_body(pl, p, g, NULL, n, false, false);
  }
}

KCLONES static void k_adagrad(ARGS, bool emit) {
  if (emit) adagrad_body(pl, p, g, buf[OPTIM_BUF_SUM], n, true);
  else adagrad_body(pl, p, g, buf[OPTIM_BUF_SUM], n, false);
}

KCLONES static void k_rmsprop(ARGS, bool centered, bool mom, bool emit) {
  float *sq = buf[OPTIM_BUF_SQUARE_AVG], *ga = buf[OPTIM_BUF_GRAD_AVG];
  float *mb = buf[OPTIM_BUF_MOMENTUM];
  switch ((centered ? 4 : 0) | (mom ? 2 : 0) | (emit ? 1 : 0)) {
  case 0: rmsprop_body(pl, p, g, sq, NULL, NULL, n, false, false, false); break;
  case 1: rmsprop_body(pl, p, g, sq, NULL, NULL, n, false, false, true); break;
  case 2: rmsprop_body(pl, p, g, sq, NULL, mb, n, false, true, false); break;
  case 3: rmsprop_body(pl, p, g, sq, NULL, mb, n, false, true, true); break;
  case 4: rmsprop_body(pl, p, g, sq, ga, NULL, n, true, false, false); break;
  case 5: rmsprop_body(pl, p, g, sq, ga, NULL, n, true, false, true); break;
  case 6: rmsprop_body(pl, p, g, sq, ga, mb, n, true, true, false); break;
  default: rmsprop_body(pl, p, g, sq, ga, mb, n, true, true, true); break;
  }
}

KCLONES static void k_adam(ARGS, bool ams, bool decoupled, bool emit) {
  float *ea = buf[OPTIM_BUF_EXP_AVG], *eas = buf[OPTIM_BUF_EXP_AVG_SQ];
  float *mx = buf[OPTIM_BUF_MAX_EXP_AVG_SQ];
  switch ((ams ? 4 : 0) | (decoupled ? 2 : 0) | (emit ? 1 : 0)) {
  case 0: adam_body(pl, p, g, ea, eas, NULL, n, false, false, false); break;
  case 1: adam_body(pl, p, g, ea, eas, NULL, n, false, false, true); break;
  case 2: adam_body(pl, p, g, ea, eas, NULL, n, false, true, false); break;
  case 3: adam_body(pl, p, g, ea, eas, NULL, n, false, true, true); break;
  case 4: adam_body(pl, p, g, ea, eas, mx, n, true, false, false); break;
  case 5: adam_body(pl, p, g, ea, eas, mx, n, true, false, true); break;
  case 6: adam_body(pl, p, g, ea, eas, mx, n, true, true, false); break;
  default: adam_body(pl, p, g, ea, eas, mx, n, true, true, true); break;
  }
}

void optim_apply(const optim_plan *pl, float *p, float *g, float *const buf[OPTIM_NBUF],
                 size_t n, bool emit) {
  const unsigned f = pl->flags;
  switch (pl->alg) {
  case OPTIM_SGD: k_sgd(pl, p, g, buf, n, f & OPTIM_F_MOM, emit); break;
  case OPTIM_ADAGRAD: k_adagrad(pl, p, g, buf, n, emit); break;
  case OPTIM_RMSPROP:
    k_rmsprop(pl, p, g, buf, n, f & OPTIM_F_CENTERED, f & OPTIM_F_MOM, emit);
    break;
  case OPTIM_ADAM:
  case OPTIM_ADAMW:
    k_adam(pl, p, g, buf, n, f & OPTIM_F_AMSGRAD, f & OPTIM_F_DECOUPLED, emit);
    break;
  default: break;
  }
}

KCLONES void optim_sumsq_acc(double acc[8], const float *g, size_t n, size_t base) {
  size_t i = 0;
  double a[8];
  memcpy(a, acc, sizeof a);
  for (; i < n && ((base + i) & 7); i++) a[(base + i) & 7] += (double)g[i] * (double)g[i];
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; j++) a[j] += (double)g[i + j] * (double)g[i + j];
  for (; i < n; i++) a[(base + i) & 7] += (double)g[i] * (double)g[i];
  memcpy(acc, a, sizeof a);
}

KCLONES int optim_all_finite(const float *g, size_t n, size_t *where) {
  uint32_t bad = 0;
  for (size_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, &g[i], sizeof u);
    bad |= (u & 0x7f800000u) == 0x7f800000u;
  }
  if (!bad) return 1;
  for (size_t i = 0; i < n; i++)
    if (!isfinite(g[i])) {
      if (where) *where = i;
      break;
    }
  return 0;
}

KCLONES int optim_scan(const float *g, size_t n, double *sumsq, size_t *where) {
  double a[8] = {0};
  uint32_t bad = 0;
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; j++) {
      uint32_t u;
      memcpy(&u, &g[i + j], sizeof u);
      bad |= (u & 0x7f800000u) == 0x7f800000u;
      a[j] += (double)g[i + j] * (double)g[i + j];
    }
  for (; i < n; i++) {
    uint32_t u;
    memcpy(&u, &g[i], sizeof u);
    bad |= (u & 0x7f800000u) == 0x7f800000u;
    a[i & 7] += (double)g[i] * (double)g[i];
  }
  if (bad) return optim_all_finite(g, n, where);
  *sumsq = optim_sumsq_total(a);
  return 1;
}

const char *optim_isa(void) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(DESCENT_NO_CLONES)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("x86-64-v4")) return "avx512";
  if (__builtin_cpu_supports("x86-64-v3")) return "avx2";
#endif
  return "generic";
}
