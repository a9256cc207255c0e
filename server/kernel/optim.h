/* optim: the optimizer algorithms, their hyperparameters and fused kernels.
 *
 * Owns the update rules of torch.optim 1.13 (single-tensor path) for sgd,
 * adagrad, rmsprop, adam and adamw, in float32, with torch's argument checks,
 * defaults and state-buffer names.  Parameters and every state buffer are flat
 * float arrays; a step is one pass over memory (optim_apply) on any slice
 * [0, n) of them, so callers may split a tensor across threads or daemons.
 *
 * Never does I/O, JSON or allocation.  Every function is pure or writes only
 * to the arrays it is given: callable from any thread; the caller serializes
 * steps on the same arrays.
 */
#ifndef DESCENT_OPTIM_H
#define DESCENT_OPTIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "errors.h"

typedef enum optim_alg {
  OPTIM_SGD,
  OPTIM_ADAGRAD,
  OPTIM_RMSPROP,
  OPTIM_ADAM,
  OPTIM_ADAMW,
  OPTIM_RANDOM_SEARCH, /* zeroth order: ask/tell, see rsearch.h */
  OPTIM_SPARSE_ADAM,   /* torch.optim.SparseAdam: sparse tensors only, optim_sparse.h */
  OPTIM__COUNT
} optim_alg;

/* State buffers, under torch's names (optim_buf_name). */
enum optim_buf {
  OPTIM_BUF_MOMENTUM,       /* momentum_buffer: sgd, rmsprop with momentum */
  OPTIM_BUF_SUM,            /* sum: adagrad */
  OPTIM_BUF_SQUARE_AVG,     /* square_avg: rmsprop */
  OPTIM_BUF_GRAD_AVG,       /* grad_avg: centered rmsprop */
  OPTIM_BUF_EXP_AVG,        /* exp_avg: adam, adamw, sparse_adam */
  OPTIM_BUF_EXP_AVG_SQ,     /* exp_avg_sq: adam, adamw, sparse_adam */
  OPTIM_BUF_MAX_EXP_AVG_SQ, /* max_exp_avg_sq: amsgrad */
  OPTIM_NBUF
};

enum optim_center { OPTIM_CENTER_ZERO, OPTIM_CENTER_BEST };

/* Every hyperparameter of every algorithm, as doubles the way torch keeps
 * them (Python floats); the kernels round derived scalars to float once. */
typedef struct optim_hyper {
  double lr, momentum, dampening, weight_decay;
  double lr_decay, initial_accumulator_value, eps, alpha;
  double betas[2];
  bool nesterov, maximize, centered, amsgrad;
  /* random_search: candidates are center + scale * N(0, 1) */
  double scale;
  int center; /* enum optim_center */
  uint64_t seed;
} optim_hyper;

/* The hyperparameter table: X(json name, kind, field, algorithms mask).
 * Kinds: NUM (double), BOOL, PAIR (betas), CENTER ("zero"|"best"), SEED. */
#define OPTIM_A(a) (1u << (a))
#define OPTIM_GRADIENT_ALGS                                                          \
  (OPTIM_A(OPTIM_SGD) | OPTIM_A(OPTIM_ADAGRAD) | OPTIM_A(OPTIM_RMSPROP) |             \
   OPTIM_A(OPTIM_ADAM) | OPTIM_A(OPTIM_ADAMW))
#define OPTIM_HYPER_TABLE(X)                                                            \
  X("lr", NUM, lr, OPTIM_GRADIENT_ALGS | OPTIM_A(OPTIM_SPARSE_ADAM))                    \
  X("momentum", NUM, momentum, OPTIM_A(OPTIM_SGD) | OPTIM_A(OPTIM_RMSPROP))             \
  X("dampening", NUM, dampening, OPTIM_A(OPTIM_SGD))                                    \
  X("nesterov", BOOL, nesterov, OPTIM_A(OPTIM_SGD))                                     \
  X("weight_decay", NUM, weight_decay, OPTIM_GRADIENT_ALGS)                             \
  X("maximize", BOOL, maximize, OPTIM_GRADIENT_ALGS | OPTIM_A(OPTIM_SPARSE_ADAM))       \
  X("lr_decay", NUM, lr_decay, OPTIM_A(OPTIM_ADAGRAD))                                  \
  X("initial_accumulator_value", NUM, initial_accumulator_value, OPTIM_A(OPTIM_ADAGRAD)) \
  X("eps", NUM, eps,                                                                    \
    OPTIM_A(OPTIM_ADAGRAD) | OPTIM_A(OPTIM_RMSPROP) | OPTIM_A(OPTIM_ADAM) |             \
        OPTIM_A(OPTIM_ADAMW) | OPTIM_A(OPTIM_SPARSE_ADAM))                              \
  X("alpha", NUM, alpha, OPTIM_A(OPTIM_RMSPROP))                                        \
  X("centered", BOOL, centered, OPTIM_A(OPTIM_RMSPROP))                                 \
  X("betas", PAIR, betas,                                                                \
    OPTIM_A(OPTIM_ADAM) | OPTIM_A(OPTIM_ADAMW) | OPTIM_A(OPTIM_SPARSE_ADAM))            \
  X("amsgrad", BOOL, amsgrad, OPTIM_A(OPTIM_ADAM) | OPTIM_A(OPTIM_ADAMW))               \
  X("scale", NUM, scale, OPTIM_A(OPTIM_RANDOM_SEARCH))                                  \
  X("center", CENTER, center, OPTIM_A(OPTIM_RANDOM_SEARCH))                             \
  X("seed", SEED, seed, OPTIM_A(OPTIM_RANDOM_SEARCH))

enum optim_hyper_kind { OPTIM_HK_NUM, OPTIM_HK_BOOL, OPTIM_HK_PAIR, OPTIM_HK_CENTER, OPTIM_HK_SEED };

typedef struct optim_hyper_field {
  const char *name;
  int kind;      /* enum optim_hyper_kind */
  size_t offset; /* offsetof(optim_hyper, field) */
  unsigned algs; /* OPTIM_A() mask of the algorithms that take it */
} optim_hyper_field;

/* The table above as an array, terminated by a {NULL} row. */
extern const optim_hyper_field optim_hyper_fields[];

/* Looks up an algorithm by name, including the aliases of the seed (neuralnets'
 * optimizers tutorial that descent grew from, not in this repository): "momentum"
 * (sgd, momentum 0.9 unless given) and "nesterov" (sgd, nesterov, momentum
 * 0.9 unless given).  Fills *alg and *h with torch's defaults for it.
 * Returns 0, or -E_UNKNOWN_ALGORITHM with nothing written. */
int optim_alg_parse(const char *name, optim_alg *alg, optim_hyper *h, derr *e);

const char *optim_alg_name(optim_alg alg); /* canonical name: "sgd", ... */

/* torch's defaults for alg (sgd: lr 0.001, as torch >= 2.2; torch 1.13 had
 * no default). */
void optim_hyper_defaults(optim_alg alg, optim_hyper *h);

/* torch's constructor checks, plus finiteness of every value.  Returns 0 or
 * -E_BAD_VALUE with a message naming the hyperparameter. */
int optim_hyper_check(optim_alg alg, const optim_hyper *h, derr *e);

/* The buffers a step of alg with h reads or writes (mask of 1u << buf). */
unsigned optim_buffers(optim_alg alg, const optim_hyper *h);

const char *optim_buf_name(int buf);      /* "momentum_buffer", ... */
int optim_buf_from_name(const char *name); /* -1 if unknown */

/* The value a fresh buffer starts at (adagrad's sum: initial_accumulator_value). */
float optim_buf_initial(optim_alg alg, const optim_hyper *h, int buf);

/* Whether the algorithm's torch state has a `step` entry (adagrad, rmsprop,
 * adam, adamw, sparse_adam); sgd's state has none. */
bool optim_has_step(optim_alg alg);

/* One step's scalars, derived once in double and rounded to float, as torch
 * does.  Built by optim_plan_init, then used for any number of slices. */
typedef struct optim_plan {
  optim_alg alg;
  unsigned flags;
  float gscale; /* gradient multiplier (clip coefficient), 1 = none */
  float s[10];  /* per-algorithm scalars, see optim.c */
} optim_plan;

/* Prepares step number `step` (1-based: the step being taken) with learning
 * rate lr (the schedule's value; h->lr is ignored).  `fresh` is the mask of
 * buffers that hold no history yet (sgd clones its first momentum buffer).
 * `gscale` multiplies the gradient first (clip_grad_norm_'s coefficient);
 * pass 1.0f for none. */
void optim_plan_init(optim_plan *pl, optim_alg alg, const optim_hyper *h, double lr,
                     uint64_t step, unsigned fresh, float gscale);

/* Applies one step to elements [0, n) of a dense tensor (never sparse_adam,
 * which torch runs on sparse gradients only: optim_sparse_apply; given it,
 * this changes nothing): p and the buffers in optim_buffers()
 * are updated in place; g is read, and when `emit` is set, overwritten with
 * the new parameters (so a request's gradient buffer becomes its reply).
 * buf[] holds a pointer per enum optim_buf (NULL where unused); the arrays
 * must not overlap.  Any slice of a step may be applied by another thread. */
void optim_apply(const optim_plan *pl, float *p, float *g, float *const buf[OPTIM_NBUF],
                 size_t n, bool emit);

/* Sum of squares of g in double, in a fixed order (8 lanes by index mod 8,
 * lanes added left to right): the same bits on every machine and in every
 * client, so a sharded client can compute a global norm identically. */
double optim_sumsq(const float *g, size_t n);

/* Adds the lanes of optim_sumsq-style partial sums; exposed so a sharded
 * caller can accumulate over several arrays in order. */
void optim_sumsq_acc(double acc[8], const float *g, size_t n, size_t base);
double optim_sumsq_total(const double acc[8]);

/* clip_grad_norm_'s coefficient for a total norm: max_norm / (norm + 1e-6),
 * clamped to at most 1, as float.  max_norm <= 0 means no clipping (1.0f). */
float optim_clip_coef(double max_norm, double norm);

/* 1 if every value is finite, else 0 and *where = the first bad index. */
int optim_all_finite(const float *g, size_t n, size_t *where);

/* Both in one pass over g: returns optim_all_finite's answer and, when all
 * are finite, *sumsq = optim_sumsq(g, n) to the bit (the push path reads a
 * gradient once before the step instead of twice). */
int optim_scan(const float *g, size_t n, double *sumsq, size_t *where);

/* The ISA the kernels dispatched to on this CPU: "avx512", "avx2" or "generic". */
const char *optim_isa(void);

#endif
