/* optim: algorithm names, hyperparameter defaults and checks, step plans.
 *
 * Everything here is torch.optim 1.13's behaviour written down: defaults,
 * the constructor's argument checks, which state buffers exist, and the
 * scalars each step derives in double before rounding them to float once.
 * The loops that use those scalars live in optim_kernels.c.  No I/O, no
 * allocation; any thread.
 */
#include "optim.h"

#include <math.h>
#include <stddef.h>
#include <ctype.h>
#include <stdint.h>
#include <string.h>

#include "optim_internal.h"

const optim_hyper_field optim_hyper_fields[] = {
#define OPTIM_FIELD_ROW(name, kind, field, algs) \
  {name, OPTIM_HK_##kind, offsetof(optim_hyper, field), algs},
    OPTIM_HYPER_TABLE(OPTIM_FIELD_ROW)
#undef OPTIM_FIELD_ROW
    {NULL, 0, 0, 0},
};

static const char *const alg_names[OPTIM__COUNT] = {
    [OPTIM_SGD] = "sgd",         [OPTIM_ADAGRAD] = "adagrad", [OPTIM_RMSPROP] = "rmsprop",
    [OPTIM_ADAM] = "adam",       [OPTIM_ADAMW] = "adamw",
    [OPTIM_RANDOM_SEARCH] = "random_search", [OPTIM_SPARSE_ADAM] = "sparse_adam",
};

static const char *const buf_names[OPTIM_NBUF] = {
    [OPTIM_BUF_MOMENTUM] = "momentum_buffer", [OPTIM_BUF_SUM] = "sum",
    [OPTIM_BUF_SQUARE_AVG] = "square_avg",    [OPTIM_BUF_GRAD_AVG] = "grad_avg",
    [OPTIM_BUF_EXP_AVG] = "exp_avg",          [OPTIM_BUF_EXP_AVG_SQ] = "exp_avg_sq",
    [OPTIM_BUF_MAX_EXP_AVG_SQ] = "max_exp_avg_sq",
};

const char *optim_alg_name(optim_alg alg) {
  return (unsigned)alg < OPTIM__COUNT ? alg_names[alg] : "unknown";
}

const char *optim_buf_name(int buf) {
  return (unsigned)buf < OPTIM_NBUF ? buf_names[buf] : "unknown";
}

int optim_buf_from_name(const char *name) {
  for (int i = 0; i < OPTIM_NBUF; i++)
    if (strcmp(buf_names[i], name) == 0) return i;
  return -1;
}

void optim_hyper_defaults(optim_alg alg, optim_hyper *h) {
  memset(h, 0, sizeof *h);
  h->betas[0] = 0.9;
  h->betas[1] = 0.999;
  h->alpha = 0.99;
  h->eps = 1e-8;
  h->scale = 1e-3;
  switch (alg) {
  case OPTIM_SGD: h->lr = 1e-3; break;
  case OPTIM_ADAGRAD: h->lr = 1e-2; h->eps = 1e-10; break;
  case OPTIM_RMSPROP: h->lr = 1e-2; break;
  case OPTIM_ADAM: h->lr = 1e-3; break;
  case OPTIM_ADAMW: h->lr = 1e-3; h->weight_decay = 1e-2; break;
  case OPTIM_SPARSE_ADAM: h->lr = 1e-3; break;
  case OPTIM_RANDOM_SEARCH: break;
  default: break;
  }
}

/* Edit distance of a and b (short names only), for "did you mean". */
static size_t distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b), row[32];
  if (la >= 32 || lb >= 32) return SIZE_MAX;
  for (size_t j = 0; j <= lb; j++) row[j] = j;
  for (size_t i = 1; i <= la; i++) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= lb; j++) {
      size_t up = row[j], best = diag + (a[i - 1] != b[j - 1]);
      if (up + 1 < best) best = up + 1;
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      diag = up;
      row[j] = best;
    }
  }
  return row[lb];
}

int optim_alg_parse(const char *name, optim_alg *alg, optim_hyper *h, derr *e) {
  static const char *const known[] = {"sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw",
                                      "random_search", "sparse_adam"};
  char low[32];
  size_t n = strlen(name);
  if (n >= sizeof low) n = sizeof low - 1;
  for (size_t i = 0; i < n; i++) low[i] = (char)tolower((unsigned char)name[i]);
  low[n] = 0; /* names are matched case-insensitively: "Adam" is adam */
  optim_alg a = OPTIM__COUNT;
  for (int i = 0; i < OPTIM__COUNT; i++)
    if (strlen(name) < sizeof low && strcmp(low, alg_names[i]) == 0) a = (optim_alg)i;
  bool momentum_alias = strcmp(low, "momentum") == 0;
  bool nesterov_alias = strcmp(low, "nesterov") == 0;
  if (momentum_alias || nesterov_alias) a = OPTIM_SGD;
  if (a == OPTIM__COUNT) {
    const char *best = NULL;
    size_t bd = 3; /* suggest only a close name: at most two edits away */
    for (size_t i = 0; i < sizeof known / sizeof *known; i++) {
      size_t d = distance(low, known[i]);
      if (d < bd) bd = d, best = known[i];
    }
    if (best)
      return derr_set(e, E_UNKNOWN_ALGORITHM, "unknown algorithm '%.64s': did you mean '%s'? (sgd, momentum, "
                      "nesterov, adagrad, rmsprop, adam, adamw, random_search, sparse_adam)", name, best);
    return derr_set(e, E_UNKNOWN_ALGORITHM,
                    "unknown algorithm '%.64s' (sgd, momentum, nesterov, adagrad, rmsprop, "
                    "adam, adamw, random_search, sparse_adam)",
                    name);
  }
  *alg = a;
  optim_hyper_defaults(a, h);
  if (momentum_alias || nesterov_alias) h->momentum = 0.9;
  if (nesterov_alias) h->nesterov = true;
  return 0;
}

bool optim_has_step(optim_alg alg) { return alg != OPTIM_SGD && alg != OPTIM_RANDOM_SEARCH; }

int optim_hyper_check(optim_alg alg, const optim_hyper *h, derr *e) {
  for (const optim_hyper_field *f = optim_hyper_fields; f->name; f++) {
    const char *base = (const char *)h + f->offset;
    double v[2];
    int nv = 0;
    if (f->kind == OPTIM_HK_NUM) memcpy(&v[nv++], base, sizeof(double));
    if (f->kind == OPTIM_HK_PAIR) {
      memcpy(v, base, sizeof v);
      nv = 2;
    }
    for (int i = 0; i < nv; i++)
      if (!isfinite(v[i])) return derr_set(e, E_BAD_VALUE, "hyper.%s: must be finite", f->name);
  }
  if (h->lr < 0) return derr_set(e, E_BAD_VALUE, "hyper.lr: invalid learning rate %g", h->lr);
  if (h->weight_decay < 0)
    return derr_set(e, E_BAD_VALUE, "hyper.weight_decay: invalid weight_decay value %g",
                    h->weight_decay);
  if (h->momentum < 0)
    return derr_set(e, E_BAD_VALUE, "hyper.momentum: invalid momentum value %g", h->momentum);
  if (h->eps < 0) return derr_set(e, E_BAD_VALUE, "hyper.eps: invalid epsilon value %g", h->eps);
  switch (alg) {
  case OPTIM_SGD:
    if (h->nesterov && (h->momentum <= 0 || h->dampening != 0))
      return derr_set(e, E_BAD_VALUE,
                      "hyper.nesterov: Nesterov momentum requires a momentum and zero dampening");
    break;
  case OPTIM_ADAGRAD:
    if (h->lr_decay < 0)
      return derr_set(e, E_BAD_VALUE, "hyper.lr_decay: invalid lr_decay value %g", h->lr_decay);
    if (h->initial_accumulator_value < 0)
      return derr_set(e, E_BAD_VALUE,
                      "hyper.initial_accumulator_value: invalid initial_accumulator_value %g",
                      h->initial_accumulator_value);
    break;
  case OPTIM_RMSPROP:
    if (h->alpha < 0) return derr_set(e, E_BAD_VALUE, "hyper.alpha: invalid alpha value %g", h->alpha);
    break;
  case OPTIM_ADAM:
  case OPTIM_ADAMW:
    for (int i = 0; i < 2; i++)
      if (!(h->betas[i] >= 0 && h->betas[i] < 1))
        return derr_set(e, E_BAD_VALUE, "hyper.betas[%d]: invalid beta parameter %g (must be in [0, 1))",
                        i, h->betas[i]);
    break;
  case OPTIM_SPARSE_ADAM: /* torch.optim.SparseAdam: lr and eps strictly positive */
    if (!(h->lr > 0)) return derr_set(e, E_BAD_VALUE, "hyper.lr: invalid learning rate %g", h->lr);
    if (!(h->eps > 0)) return derr_set(e, E_BAD_VALUE, "hyper.eps: invalid epsilon value %g", h->eps);
    for (int i = 0; i < 2; i++)
      if (!(h->betas[i] >= 0 && h->betas[i] < 1))
        return derr_set(e, E_BAD_VALUE, "hyper.betas[%d]: invalid beta parameter at index %d: %g (must be in [0, 1))",
                        i, i, h->betas[i]);
    break;
  case OPTIM_RANDOM_SEARCH:
    if (!(h->scale > 0))
      return derr_set(e, E_BAD_VALUE, "hyper.scale: must be positive, got %g", h->scale);
    if (h->center != OPTIM_CENTER_ZERO && h->center != OPTIM_CENTER_BEST)
      return derr_set(e, E_BAD_VALUE, "hyper.center: must be \"zero\" or \"best\"");
    break;
  default:
    return derr_set(e, E_UNKNOWN_ALGORITHM, NULL);
  }
  return 0;
}

unsigned optim_buffers(optim_alg alg, const optim_hyper *h) {
  switch (alg) {
  case OPTIM_SGD: return h->momentum != 0 ? 1u << OPTIM_BUF_MOMENTUM : 0;
  case OPTIM_ADAGRAD: return 1u << OPTIM_BUF_SUM;
  case OPTIM_RMSPROP:
    return 1u << OPTIM_BUF_SQUARE_AVG | (h->momentum > 0 ? 1u << OPTIM_BUF_MOMENTUM : 0) |
           (h->centered ? 1u << OPTIM_BUF_GRAD_AVG : 0);
  case OPTIM_SPARSE_ADAM: return 1u << OPTIM_BUF_EXP_AVG | 1u << OPTIM_BUF_EXP_AVG_SQ;
  case OPTIM_ADAM:
  case OPTIM_ADAMW:
    return 1u << OPTIM_BUF_EXP_AVG | 1u << OPTIM_BUF_EXP_AVG_SQ |
           (h->amsgrad ? 1u << OPTIM_BUF_MAX_EXP_AVG_SQ : 0);
  default: return 0;
  }
}

float optim_buf_initial(optim_alg alg, const optim_hyper *h, int buf) {
  if (alg == OPTIM_ADAGRAD && buf == OPTIM_BUF_SUM) return (float)h->initial_accumulator_value;
  return 0.0f;
}

void optim_plan_init(optim_plan *pl, optim_alg alg, const optim_hyper *h, double lr,
                     uint64_t step, unsigned fresh, float gscale) {
  memset(pl, 0, sizeof *pl);
  pl->alg = alg;
  /* maximize negates the gradient first; folding the sign into the gradient
   * scale is exact (a sign flip and a multiply by 1 change no bits). */
  pl->gscale = h->maximize ? -gscale : gscale;
  unsigned f = 0;
  if (gscale != 1.0f || h->maximize) f |= OPTIM_F_SCALE;
  if (h->weight_decay != 0) f |= OPTIM_F_WD;
  float *s = pl->s;
  switch (alg) {
  case OPTIM_SGD:
    if (h->momentum != 0) f |= OPTIM_F_MOM;
    if (h->nesterov) f |= OPTIM_F_NESTEROV;
    if (fresh & (1u << OPTIM_BUF_MOMENTUM)) f |= OPTIM_F_FIRST;
    s[SGD_WD] = (float)h->weight_decay;
    s[SGD_MOM] = (float)h->momentum;
    s[SGD_DAMP1] = (float)(1.0 - h->dampening);
    s[SGD_NLR] = (float)(-lr);
    break;
  case OPTIM_ADAGRAD: {
    double clr = lr / (1.0 + (double)(step - 1) * h->lr_decay);
    s[ADAGRAD_WD] = (float)h->weight_decay;
    s[ADAGRAD_NCLR] = (float)(-clr);
    s[ADAGRAD_EPS] = (float)h->eps;
    break;
  }
  case OPTIM_RMSPROP:
    if (h->momentum > 0) f |= OPTIM_F_MOM;
    if (h->centered) f |= OPTIM_F_CENTERED;
    s[RMS_WD] = (float)h->weight_decay;
    s[RMS_ALPHA] = (float)h->alpha;
    s[RMS_ALPHA1] = (float)(1.0 - h->alpha);
    s[RMS_EPS] = (float)h->eps;
    s[RMS_MOM] = (float)h->momentum;
    s[RMS_NLR] = (float)(-lr);
    break;
  case OPTIM_ADAM:
  case OPTIM_ADAMW: {
    double b1 = h->betas[0], b2 = h->betas[1];
    double bc1 = 1.0 - pow(b1, (double)step);
    double bc2 = 1.0 - pow(b2, (double)step);
    if (h->amsgrad) f |= OPTIM_F_AMSGRAD;
    if (alg == OPTIM_ADAMW) {
      f |= OPTIM_F_DECOUPLED;
      f &= ~OPTIM_F_WD;
    }
    s[ADAM_WD] = (float)h->weight_decay;
    s[ADAM_B1] = (float)b1;
    s[ADAM_B1C] = (float)(1.0 - b1);
    s[ADAM_B2] = (float)b2;
    s[ADAM_B2C] = (float)(1.0 - b2);
    s[ADAM_SQRT_BC2] = (float)sqrt(bc2);
    s[ADAM_EPS] = (float)h->eps;
    s[ADAM_NSTEP] = (float)(-(lr / bc1));
    s[ADAM_DECAY] = (float)(1.0 - lr * h->weight_decay);
    break;
  }
  case OPTIM_SPARSE_ADAM: { /* F.sparse_adam: step_size = lr * sqrt(bc2) / bc1, in double */
    double b1 = h->betas[0], b2 = h->betas[1];
    double bc1 = 1.0 - pow(b1, (double)step);
    double bc2 = 1.0 - pow(b2, (double)step);
    f &= ~OPTIM_F_WD; /* SparseAdam has no weight decay */
    s[SPADAM_B1C] = (float)(1.0 - b1);
    s[SPADAM_B2C] = (float)(1.0 - b2);
    s[SPADAM_EPS] = (float)h->eps;
    s[SPADAM_NSTEP] = (float)(-(lr * sqrt(bc2) / bc1));
    break;
  }
  default: break;
  }
  pl->flags = f;
}

float optim_clip_coef(double max_norm, double norm) {
  if (!(max_norm > 0)) return 1.0f;
  double c = max_norm / (norm + 1e-6);
  return c < 1.0 ? (float)c : 1.0f;
}

double optim_sumsq(const float *g, size_t n) {
  double acc[8] = {0};
  optim_sumsq_acc(acc, g, n, 0);
  return optim_sumsq_total(acc);
}

double optim_sumsq_total(const double acc[8]) {
  double t = 0;
  for (int j = 0; j < 8; j++) t += acc[j];
  return t;
}
