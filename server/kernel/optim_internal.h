/* optim_internal: the plan's flag bits and scalar slots, shared by optim.c
 * (which fills them) and optim_kernels.c and optim_sparse.c (which read them).
 * Not public: nothing outside server/kernel/optim*.c includes it.  Constants only. */
#ifndef DESCENT_OPTIM_INTERNAL_H
#define DESCENT_OPTIM_INTERNAL_H

enum {
  OPTIM_F_SCALE = 1u << 0,     /* multiply g by gscale (clip, maximize) */
  OPTIM_F_WD = 1u << 1,        /* coupled (L2) weight decay */
  OPTIM_F_MOM = 1u << 2,       /* momentum buffer in use */
  OPTIM_F_NESTEROV = 1u << 3,  /* sgd nesterov */
  OPTIM_F_FIRST = 1u << 4,     /* sgd: momentum buffer is fresh: clone d */
  OPTIM_F_CENTERED = 1u << 5,  /* rmsprop centered */
  OPTIM_F_AMSGRAD = 1u << 6,   /* adam amsgrad */
  OPTIM_F_DECOUPLED = 1u << 7, /* adamw decoupled weight decay */
};

enum { SGD_WD, SGD_MOM, SGD_DAMP1, SGD_NLR };
enum { ADAGRAD_WD, ADAGRAD_NCLR, ADAGRAD_EPS };
enum { RMS_WD, RMS_ALPHA, RMS_ALPHA1, RMS_EPS, RMS_MOM, RMS_NLR };
enum { SPADAM_B1C, SPADAM_B2C, SPADAM_EPS, SPADAM_NSTEP };
enum { ADAM_WD, ADAM_B1, ADAM_B1C, ADAM_B2, ADAM_B2C, ADAM_SQRT_BC2, ADAM_EPS, ADAM_NSTEP, ADAM_DECAY };

#endif
