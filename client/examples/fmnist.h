/* fmnist: the seed's linear classifier on Fashion-MNIST, for the demo workers
 * (the seed: neuralnets' tutorial "Optimizers: a deep dive into the evolution
 * of optimization algorithms in deep learning", which descent grew from; not
 * part of this repository).
 *
 * Reads Debian's dataset-fashion-mnist (gzipped IDX files) into float32
 * inputs scaled to [0, 1] with a constant 1 appended (the bias folded into
 * W, so W is 10 x 785 and s = W x), and computes the seed's loss,
 *   L = (1/N) sum_i sum_{j != y_i} max(0, s_j - s_{y_i} + 1) + lambda sum_k W_k^2,
 * its analytic gradient, and the accuracy.  A double-precision version of
 * the loss and gradient serves the numeric gradient and the gradient check.
 * No allocation inside the loss functions; any thread.
 */
#ifndef FMNIST_H
#define FMNIST_H

#include <stddef.h>
#include <stdint.h>

#define FM_CLASSES 10
#define FM_PIXELS 784
#define FM_D 785 /* pixels + the bias input */
#define FM_W (FM_CLASSES * FM_D)
#define FM_LAMBDA 1e-4

typedef struct fm_set {
  size_t n;
  float *x;       /* n x FM_D */
  uint8_t *y;     /* n labels */
} fm_set;

/* Loads images and labels (gzipped IDX).  Returns 0, or -1 with a message on stderr. */
int fm_load(fm_set *s, const char *images_gz, const char *labels_gz);
void fm_free(fm_set *s);

/* Loss (and, when grad is not NULL, its gradient into grad[FM_W]) over the
 * samples idx[0..m) (idx NULL: samples 0..m-1), in float with float
 * accumulation of the dot products in 8 lanes. */
double fm_loss_grad(const float *W, const fm_set *s, const uint32_t *idx, size_t m, float *grad);

/* The same in double (for the numeric gradient and the gradient check). */
double fm_loss_grad_d(const double *W, const fm_set *s, const uint32_t *idx, size_t m, double *grad);

/* Fraction of samples 0..n-1 classified right (argmax of W x). */
double fm_accuracy(const float *W, const fm_set *s);

/* A permutation of 0..n-1 from a seed (Fisher-Yates with splitmix64). */
void fm_permutation(uint32_t *perm, size_t n, uint64_t seed);

#endif
