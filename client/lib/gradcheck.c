/* gradcheck: the seed's tools for worker authors (the seed: neuralnets'
 * optimizers tutorial that descent grew from, not part of this repository): a numeric gradient by
 * central differences (Approach 2), the gradient check that compares it
 * with an analytic one (the seed's tip), and the global gradient norm
 * computed exactly as the daemon computes it for clip_grad_norm.
 * Pure computation, no I/O, no allocation; any thread.
 */
#include <math.h>

#include "internal.h"

int descent_numeric_gradient(descent_fn f, void *ctx, double *x, size_t n, double h, double *grad) {
  if (!f || (n && (!x || !grad))) return DESCENT_EINVAL;
  if (!(h > 0) || !isfinite(h)) h = 1e-5;
  for (size_t i = 0; i < n; i++) {
    double xi = x[i];
    x[i] = xi + h;
    double fp = f(x, ctx);
    x[i] = xi - h;
    double fm = f(x, ctx);
    x[i] = xi; /* restored exactly: the saved value, not xi - h + h */
    grad[i] = (fp - fm) / (2 * h);
  }
  return 0;
}

double descent_gradient_check(const double *analytic, const double *numeric, size_t n, size_t *worst) {
  double max = 0;
  size_t at = 0;
  for (size_t i = 0; i < n; i++) {
    double a = analytic[i], m = numeric[i];
    double scale = fmax(fmax(fabs(a), fabs(m)), 1e-12);
    double e = a == m ? 0 : fabs(a - m) / scale;
    if (isnan(e)) e = INFINITY; /* a NaN anywhere is the worst possible answer */
    if (e > max) {
      max = e;
      at = i;
    }
  }
  if (worst) *worst = at;
  return max;
}

double descent_grad_norm(const float *g, size_t n) {
  /* the daemon's optim_sumsq: lane j sums the squares of g[i], i = j mod 8,
   * in index order; the lanes are then added left to right */
  double lane[8] = {0};
  for (size_t i = 0; i < n; i++) lane[i & 7] += (double)g[i] * (double)g[i];
  double t = 0;
  for (int j = 0; j < 8; j++) t += lane[j];
  return sqrt(t);
}
