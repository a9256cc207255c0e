/* bench_sparse_kernels: the sparse row kernels (server/kernel/optim_sparse.c)
 * alone: ns per row of optim_sparse_coalesce and of optim_sparse_apply for
 * sgd, adagrad and sparse_adam, k rows of D floats pushed into a table of V
 * row blocks (random rows, as an embedding batch touches them), and the
 * bytes a row must move against a memory stream of the same size.
 * Single process, one thread, no I/O beyond stdout and the results file
 * (keys sparse_kernels.*).  Usage: bench_sparse_kernels [--D 64] [--k 4096]
 * [--V 65536] [--rounds 30] [--out FILE]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "optim.h"
#include "optim_sparse.h"

static uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  return x ^ (x >> 33);
}

/* Best-of-rounds ns per row of coalescing k ids drawn from [0, space). */
static double bench_coalesce(size_t k, size_t D, uint64_t space, int rounds, size_t *m_out) {
  uint64_t *rows = malloc(k * 8), *ur = malloc(k * 8);
  float *g = malloc(k * D * 4), *ug = malloc(k * D * 4);
  uint32_t *order = malloc(k * 4);
  bench_fill(g, k * D, 3, 1.0f, 0.0f);
  double best = 1e30;
  for (int r = 0; r < rounds; r++) {
    for (size_t i = 0; i < k; i++) rows[i] = mix(i + (uint64_t)r * k) % space;
    double t0 = bench_now();
    *m_out = optim_sparse_coalesce(rows, g, k, D, ur, ug, order);
    best = bench_min(best, bench_now() - t0);
  }
  free(rows), free(ur), free(g), free(ug), free(order);
  return best * 1e9 / (double)k;
}

/* Best-of-rounds ns per row of one step of alg on k distinct random rows. */
static double bench_apply(const char *name, size_t k, size_t D, size_t V, int rounds, size_t *bytes_row) {
  optim_alg alg;
  optim_hyper h;
  optim_alg_parse(name, &alg, &h, NULL);
  size_t rf = optim_sparse_row_floats(alg, &h, D);
  float *tab = malloc(V * rf * 4), *g = malloc(k * D * 4), *out = malloc(k * D * 4);
  float **blk = malloc(k * sizeof *blk);
  bench_fill(tab, V * rf, 1, 0.5f, 0.0f);
  for (size_t i = 0; i < V * rf; i++)
    if (i % rf >= D) tab[i] = tab[i] * tab[i]; /* sums, second moments >= 0 */
  bench_fill(g, k * D, 2, 1.0f, 0.0f);
  double best = 1e30;
  for (int r = 0; r < rounds; r++) {
    /* k distinct rows: a random start and an odd stride modulo V (a power of 2) */
    uint64_t start = mix((uint64_t)r) % V, stride = (mix((uint64_t)r + 99) % V) | 1;
    for (size_t i = 0; i < k; i++) blk[i] = tab + ((start + i * stride) % V) * rf;
    optim_plan pl;
    optim_plan_init(&pl, alg, &h, h.lr, (uint64_t)r + 1, 0, 1.0f);
    double t0 = bench_now();
    optim_sparse_apply(&pl, blk, g, k, D, out);
    best = bench_min(best, bench_now() - t0);
  }
  /* read g and the block, write the block and the reply row */
  *bytes_row = (D + rf) * 4 + (rf + D) * 4;
  free(tab), free(g), free(out), free(blk);
  return best * 1e9 / (double)k;
}

/* ns per byte of a read+write stream over `bytes` (memcpy), best of rounds. */
static double bench_stream(size_t bytes, int rounds) {
  char *a = malloc(bytes), *b = malloc(bytes);
  memset(a, 1, bytes), memset(b, 2, bytes);
  double best = 1e30;
  for (int r = 0; r < rounds; r++) {
    double t0 = bench_now();
    memcpy(b, a, bytes);
    best = bench_min(best, bench_now() - t0);
    a[r % bytes] = b[(r * 7) % bytes];
  }
  free(a), free(b);
  return best * 1e9 / (double)(2 * bytes); /* a copy reads and writes each byte */
}

int main(int argc, char **argv) {
  size_t D = (size_t)atof(bench_arg(argc, argv, "--D", "64"));
  size_t k = (size_t)atof(bench_arg(argc, argv, "--k", "4096"));
  size_t V = (size_t)atof(bench_arg(argc, argv, "--V", "65536"));
  int rounds = atoi(bench_arg(argc, argv, "--rounds", "30"));
  if (V & (V - 1)) V = 65536; /* the row picker needs a power of two */
  bench_out_open(bench_arg(argc, argv, "--out", NULL));
  printf("sparse kernels: k=%zu rows of D=%zu, table of V=%zu rows, isa %s, best of %d\n", k, D, V, optim_isa(),
         rounds);
  size_t m = 0;
  static const struct {
    const char *label;
    uint64_t space;
  } spaces[] = {{"sorted", 0}, {"ids<1e6", 1000000}, {"ids<2^40", 1ull << 40}, {"ids<k/4", 0}};
  for (size_t s = 0; s < 4; s++) {
    double ns;
    if (s == 0) { /* already distinct and ascending: the copy path */
      uint64_t *rows = malloc(k * 8), *ur = malloc(k * 8);
      float *g = malloc(k * D * 4), *ug = malloc(k * D * 4);
      uint32_t *order = malloc(k * 4);
      for (size_t i = 0; i < k; i++) rows[i] = 3 * i;
      bench_fill(g, k * D, 3, 1.0f, 0.0f);
      double best = 1e30;
      for (int r = 0; r < rounds; r++) {
        double t0 = bench_now();
        m = optim_sparse_coalesce(rows, g, k, D, ur, ug, order);
        best = bench_min(best, bench_now() - t0);
      }
      ns = best * 1e9 / (double)k;
      free(rows), free(ur), free(g), free(ug), free(order);
    } else {
      ns = bench_coalesce(k, D, s == 3 ? (k / 4 ? k / 4 : 1) : spaces[s].space, rounds, &m);
    }
    printf("  coalesce %-9s %7.1f ns/row  (%zu distinct of %zu)\n", spaces[s].label, ns, m, k);
    bench_put(ns, "sparse_kernels.coalesce_ns_row.%s.D%zu.k%zu", spaces[s].label, D, k);
  }
  double stream = bench_stream(64u << 20, rounds < 10 ? rounds : 10);
  printf("  memory stream (memcpy 64 MiB) %.3f ns/byte\n", stream);
  static const char *algs[] = {"sgd", "adagrad", "sparse_adam"};
  for (size_t a = 0; a < 3; a++) {
    size_t bytes;
    double ns = bench_apply(algs[a], k, D, V, rounds, &bytes);
    printf("  apply %-11s %7.1f ns/row  %5.2f GB/s  (%zu B/row; %.2fx the stream's time for them)\n", algs[a], ns,
           (double)bytes / ns, bytes, ns / ((double)bytes * stream));
    bench_put(ns, "sparse_kernels.apply_ns_row.%s.D%zu.k%zu", algs[a], D, k);
    bench_put(ns / ((double)bytes * stream), "sparse_kernels.apply_vs_stream.%s.D%zu.k%zu", algs[a], D, k);
  }
  bench_out_close();
  return 0;
}
