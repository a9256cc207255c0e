/* fmnist: IDX loading, the multiclass SVM loss and its gradient. */
#include "fmnist.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static int read_all(const char *path, unsigned char **out, size_t *len) {
  gzFile f = gzopen(path, "rb");
  if (!f) {
    fprintf(stderr, "fmnist: cannot open %s (install dataset-fashion-mnist)\n", path);
    return -1;
  }
  size_t cap = 1 << 20, n = 0;
  unsigned char *b = malloc(cap);
  for (;;) {
    if (!b) break;
    if (n == cap) {
      unsigned char *nb = realloc(b, cap *= 2);
      if (!nb) {
        free(b);
        b = NULL;
        break;
      }
      b = nb;
    }
    int r = gzread(f, b + n, (unsigned)(cap - n));
    if (r < 0) {
      free(b);
      b = NULL;
      break;
    }
    if (r == 0) break;
    n += (size_t)r;
  }
  gzclose(f);
  if (!b) {
    fprintf(stderr, "fmnist: cannot read %s\n", path);
    return -1;
  }
  *out = b;
  *len = n;
  return 0;
}

static uint32_t be32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int fm_load(fm_set *s, const char *images_gz, const char *labels_gz) {
  memset(s, 0, sizeof *s);
  unsigned char *im = NULL, *lb = NULL;
  size_t imlen, lblen;
  int rc = -1;
  if (read_all(images_gz, &im, &imlen) < 0 || read_all(labels_gz, &lb, &lblen) < 0) goto out;
  if (imlen < 16 || be32(im) != 0x803 || lblen < 8 || be32(lb) != 0x801) {
    fprintf(stderr, "fmnist: %s or %s is not an IDX file\n", images_gz, labels_gz);
    goto out;
  }
  size_t n = be32(im + 4), rows = be32(im + 8), cols = be32(im + 12);
  if (rows * cols != FM_PIXELS || be32(lb + 4) != n || imlen < 16 + n * FM_PIXELS || lblen < 8 + n) {
    fprintf(stderr, "fmnist: unexpected sizes in %s\n", images_gz);
    goto out;
  }
  s->n = n;
  s->x = malloc(n * FM_D * sizeof(float));
  s->y = malloc(n);
  if (!s->x || !s->y) goto out;
  for (size_t i = 0; i < n; i++) {
    float *xi = s->x + i * FM_D;
    for (size_t k = 0; k < FM_PIXELS; k++) xi[k] = im[16 + i * FM_PIXELS + k] / 255.0f;
    xi[FM_PIXELS] = 1.0f;
    s->y[i] = lb[8 + i];
  }
  rc = 0;
out:
  free(im);
  free(lb);
  if (rc) fm_free(s);
  return rc;
}

void fm_free(fm_set *s) {
  free(s->x);
  free(s->y);
  memset(s, 0, sizeof *s);
}

static float dot(const float *a, const float *b) {
  float acc[8] = {0};
  size_t k = 0;
  for (; k + 8 <= FM_D; k += 8)
    for (int j = 0; j < 8; j++) acc[j] += a[k + j] * b[k + j];
  float t = 0;
  for (; k < FM_D; k++) t += a[k] * b[k];
  return t + ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

double fm_loss_grad(const float *W, const fm_set *s, const uint32_t *idx, size_t m, float *grad) {
  if (grad) memset(grad, 0, FM_W * sizeof(float));
  double loss = 0;
  for (size_t t = 0; t < m; t++) {
    size_t i = idx ? idx[t] : t;
    const float *x = s->x + i * FM_D;
    int y = s->y[i];
    float sc[FM_CLASSES];
    for (int c = 0; c < FM_CLASSES; c++) sc[c] = dot(W + c * FM_D, x);
    int positive = 0;
    for (int c = 0; c < FM_CLASSES; c++) {
      if (c == y) continue;
      float margin = sc[c] - sc[y] + 1.0f;
      if (margin > 0) {
        loss += margin;
        positive++;
        if (grad)
          for (size_t k = 0; k < FM_D; k++) grad[c * FM_D + k] += x[k];
      }
    }
    if (grad && positive)
      for (size_t k = 0; k < FM_D; k++) grad[y * FM_D + k] -= (float)positive * x[k];
  }
  double reg = 0;
  for (size_t k = 0; k < FM_W; k++) reg += (double)W[k] * W[k];
  if (grad) {
    float inv = 1.0f / (float)m;
    for (size_t k = 0; k < FM_W; k++) grad[k] = grad[k] * inv + (float)(2 * FM_LAMBDA) * W[k];
  }
  return loss / (double)m + FM_LAMBDA * reg;
}

double fm_loss_grad_d(const double *W, const fm_set *s, const uint32_t *idx, size_t m, double *grad) {
  if (grad) memset(grad, 0, FM_W * sizeof(double));
  double loss = 0;
  for (size_t t = 0; t < m; t++) {
    size_t i = idx ? idx[t] : t;
    const float *x = s->x + i * FM_D;
    int y = s->y[i];
    double sc[FM_CLASSES];
    for (int c = 0; c < FM_CLASSES; c++) {
      double a = 0;
      for (size_t k = 0; k < FM_D; k++) a += W[c * FM_D + k] * x[k];
      sc[c] = a;
    }
    int positive = 0;
    for (int c = 0; c < FM_CLASSES; c++) {
      if (c == y) continue;
      double margin = sc[c] - sc[y] + 1.0;
      if (margin > 0) {
        loss += margin;
        positive++;
        if (grad)
          for (size_t k = 0; k < FM_D; k++) grad[c * FM_D + k] += x[k];
      }
    }
    if (grad && positive)
      for (size_t k = 0; k < FM_D; k++) grad[y * FM_D + k] -= positive * (double)x[k];
  }
  double reg = 0;
  for (size_t k = 0; k < FM_W; k++) reg += W[k] * W[k];
  if (grad)
    for (size_t k = 0; k < FM_W; k++) grad[k] = grad[k] / (double)m + 2 * FM_LAMBDA * W[k];
  return loss / (double)m + FM_LAMBDA * reg;
}

double fm_accuracy(const float *W, const fm_set *s) {
  size_t right = 0;
  for (size_t i = 0; i < s->n; i++) {
    const float *x = s->x + i * FM_D;
    int best = 0;
    float bs = -INFINITY;
    for (int c = 0; c < FM_CLASSES; c++) {
      float v = dot(W + c * FM_D, x);
      if (v > bs) {
        bs = v;
        best = c;
      }
    }
    right += best == s->y[i];
  }
  return s->n ? (double)right / (double)s->n : 0;
}

static uint64_t splitmix(uint64_t *st) {
  uint64_t z = (*st += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

void fm_permutation(uint32_t *perm, size_t n, uint64_t seed) {
  for (size_t i = 0; i < n; i++) perm[i] = (uint32_t)i;
  uint64_t st = seed;
  for (size_t i = n; i > 1; i--) {
    size_t j = (size_t)(splitmix(&st) % i);
    uint32_t t = perm[i - 1];
    perm[i - 1] = perm[j];
    perm[j] = t;
  }
}
