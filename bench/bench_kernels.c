/* bench_kernels: every algorithm's fused step against this machine's memory
 * bandwidth, measured side by side in one run.
 *
 * For n float32 parameters (default 10^7) it times, best of --rounds, one
 * optim_apply per algorithm on one thread and kpool_apply on every core,
 * and in the same rounds memcpy, STREAM triad and an in-place
 * read-modify-write stream (a[i] += s * b[i], the kernels' own access
 * pattern).  The rounds interleave every measurement, so a noisy neighbour
 * slows all of them alike and the ratios hold.  The bytes-moved bound of an
 * algorithm is (3 + 2 * buffers) * 4 bytes per element (read p, g and each
 * buffer; write p and each buffer) at the read-modify-write bandwidth.
 * --sweep FILE also writes throughput against size (10^3..10^8) for the plot.
 * Single process, no I/O beyond stdout and the results file.
 */
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "kpool.h"
#include "mem.h"
#include "optim.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define BCLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define BCLONES
#endif

/* ---- the algorithms ---------------------------------------------------------- */

typedef struct kcase {
  const char *label; /* results key and table row */
  const char *alg;   /* optim_alg_parse name (aliases allowed) */
  bool centered, amsgrad;
} kcase;

static const kcase cases[] = {
    {"sgd", "sgd", false, false},         {"momentum", "momentum", false, false},
    {"nesterov", "nesterov", false, false}, {"adagrad", "adagrad", false, false},
    {"rmsprop", "rmsprop", false, false}, {"rmsprop_centered", "rmsprop", true, false},
    {"adam", "adam", false, false},       {"adam_amsgrad", "adam", false, true},
    {"adamw", "adamw", false, false},
};
#define NCASES (sizeof cases / sizeof cases[0])

typedef struct prepared {
  optim_alg alg;
  optim_hyper h;
  unsigned need;
  int bytes; /* per element, emit off */
} prepared;

static void prepare(const kcase *k, prepared *pr) {
  derr e;
  if (optim_alg_parse(k->alg, &pr->alg, &pr->h, &e) < 0) abort();
  pr->h.centered = k->centered;
  pr->h.amsgrad = k->amsgrad;
  pr->need = optim_buffers(pr->alg, &pr->h);
  pr->bytes = (3 + 2 * __builtin_popcount(pr->need)) * 4;
}

/* Parameters, gradient and every buffer, allocated once, pre-touched. */
typedef struct arena {
  size_t n;
  float *p, *g, *buf[OPTIM_NBUF];
  float *a, *b, *c, *d; /* bandwidth streams */
} arena;

/* bufs: mask of the buffers to allocate; streams: the bandwidth arrays. */
static void arena_init(arena *A, size_t n, unsigned bufs, bool streams) {
  memset(A, 0, sizeof *A);
  A->n = n;
  A->p = mem_alloc_floats(n);
  A->g = mem_alloc_floats(n);
  if (!A->p || !A->g) abort();
  bench_fill(A->p, n, 1, 1.0f, 0.0f);
  bench_fill(A->g, n, 2, 0.5f, 0.0f);
  for (int b = 0; b < OPTIM_NBUF; b++) {
    if (!(bufs & (1u << b))) continue;
    if (!(A->buf[b] = mem_alloc_floats(n))) abort();
    if (b == OPTIM_BUF_SUM)
      for (size_t i = 0; i < n; i++) A->buf[b][i] = 0.1f;
  }
  if (streams) {
    A->a = mem_alloc_floats(n);
    A->b = mem_alloc_floats(n);
    A->c = mem_alloc_floats(n);
    A->d = mem_alloc_floats(n);
    if (!A->a || !A->b || !A->c || !A->d) abort();
    bench_fill(A->b, n, 3, 1.0f, 0.0f);
    bench_fill(A->c, n, 4, 1.0f, 0.0f);
  }
}

static void arena_free(arena *A) {
  mem_free_floats(A->p, A->n);
  mem_free_floats(A->g, A->n);
  for (int b = 0; b < OPTIM_NBUF; b++) mem_free_floats(A->buf[b], A->n);
  mem_free_floats(A->a, A->n);
  mem_free_floats(A->b, A->n);
  mem_free_floats(A->c, A->n);
  mem_free_floats(A->d, A->n);
}

/* One step of pr on [0, n) of A; kp NULL: the calling thread alone. */
static void step(const prepared *pr, arena *A, size_t n, uint64_t t, kpool *kp) {
  optim_plan pl;
  optim_plan_init(&pl, pr->alg, &pr->h, pr->h.lr, t, 0, 1.0f);
  float *b[OPTIM_NBUF];
  for (int i = 0; i < OPTIM_NBUF; i++) b[i] = (pr->need & (1u << i)) ? A->buf[i] : NULL;
  if (kp) kpool_apply(kp, &pl, A->p, A->g, b, n, false);
  else optim_apply(&pl, A->p, A->g, b, n, false);
}

/* ---- bandwidth streams ------------------------------------------------------- */

BCLONES static void triad(float *restrict a, const float *restrict b, const float *restrict c, float s,
                          size_t n) {
  for (size_t i = 0; i < n; i++) a[i] = b[i] + s * c[i];
}

/* The access pattern of a kernel with k buffers and no arithmetic to speak
 * of: read g, and read and write p and each of the k buffers in place. */
BCLONES static void pattern(int k, float *restrict g, float *restrict p, float *restrict b1,
                            float *restrict b2, float *restrict b3, size_t n) {
  switch (k) {
  case 0:
    for (size_t i = 0; i < n; i++) p[i] = p[i] * 0.5f + g[i];
    break;
  case 1:
    for (size_t i = 0; i < n; i++) {
      float x = g[i];
      p[i] = p[i] * 0.5f + x;
      b1[i] = b1[i] * 0.5f + x;
    }
    break;
  case 2:
    for (size_t i = 0; i < n; i++) {
      float x = g[i];
      p[i] = p[i] * 0.5f + x;
      b1[i] = b1[i] * 0.5f + x;
      b2[i] = b2[i] * 0.5f + x;
    }
    break;
  default:
    for (size_t i = 0; i < n; i++) {
      float x = g[i];
      p[i] = p[i] * 0.5f + x;
      b1[i] = b1[i] * 0.5f + x;
      b2[i] = b2[i] * 0.5f + x;
      b3[i] = b3[i] * 0.5f + x;
    }
    break;
  }
}

/* Streams: memcpy and STREAM triad (as those benchmarks count bytes), then
 * the in-place patterns with 0..3 buffers (12, 20, 28, 36 bytes/element). */
enum { S_MEMCPY, S_TRIAD, S_PAT0, S_PAT1, S_PAT2, S_PAT3, S_COUNT };
static const char *const stream_names[S_COUNT] = {"memcpy", "triad", "inplace0", "inplace1", "inplace2",
                                                  "inplace3"};
static const int stream_bytes[S_COUNT] = {8, 12, 12, 20, 28, 36};

static void stream_run(int kind, arena *A, size_t lo, size_t hi) {
  size_t n = hi - lo;
  switch (kind) {
  case S_MEMCPY: memcpy(A->a + lo, A->b + lo, n * sizeof(float)); break;
  case S_TRIAD: triad(A->a + lo, A->b + lo, A->c + lo, 0.5f, n); break;
  default:
    pattern(kind - S_PAT0, A->g + lo, A->a + lo, A->b + lo, A->c + lo, A->d + lo, n);
    break;
  }
}

typedef struct par {
  int kind;
  arena *A;
  size_t lo, hi;
} par;

static void *par_main(void *arg) {
  par *q = arg;
  stream_run(q->kind, q->A, q->lo, q->hi);
  return NULL;
}

/* The CPUs this process may use, for pinning stream threads the way kpool
 * pins its helpers (one per CPU), so both sides of the ratio get the same
 * chance of running in parallel on a shared machine. */
static int cpus[CPU_SETSIZE], ncpu;

static void cpus_init(void) {
  cpu_set_t allowed;
  if (sched_getaffinity(0, sizeof allowed, &allowed) == 0)
    for (int c = 0; c < CPU_SETSIZE; c++)
      if (CPU_ISSET(c, &allowed)) cpus[ncpu++] = c;
}

/* A stream on `threads` threads (equal slices; with more than one, thread k
 * is pinned to allowed CPU k, the caller only waits); returns seconds. */
static double stream_time(int kind, arena *A, size_t n, int threads) {
  pthread_t tid[64];
  par q[64];
  if (threads > 64) threads = 64;
  size_t per = (n / (size_t)threads + 15) & ~(size_t)15;
  if (threads == 1) {
    double t0 = bench_now();
    stream_run(kind, A, 0, n);
    return bench_now() - t0;
  }
  double t0 = bench_now();
  for (int k = 0; k < threads; k++) {
    size_t lo = per * (size_t)k, hi = k == threads - 1 ? n : lo + per;
    if (hi > n) hi = n;
    if (lo > hi) lo = hi;
    q[k] = (par){kind, A, lo, hi};
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    if (ncpu >= threads) {
      cpu_set_t one;
      CPU_ZERO(&one);
      CPU_SET(cpus[k], &one);
      pthread_attr_setaffinity_np(&attr, sizeof one, &one);
    }
    pthread_create(&tid[k], &attr, par_main, &q[k]);
    pthread_attr_destroy(&attr);
  }
  for (int k = 0; k < threads; k++) pthread_join(tid[k], NULL);
  return bench_now() - t0;
}

/* ---- the sweep (plot data) ---------------------------------------------------- */

/* Best time per call of fn, over enough repetitions to last >= 2 ms each. */
typedef void (*timed_fn)(void *ctx);

/* For k contexts (ctx + i * stride), interleaved: each round times every
 * context once; out[i] = its best time per call. */
static void best_per_call_n(timed_fn fn, void *ctx, size_t stride, int k, int rounds, double *out) {
  int reps[8];
  for (int i = 0; i < k; i++) {
    void *c = (char *)ctx + (size_t)i * stride;
    reps[i] = 1;
    for (;;) {
      double t0 = bench_now();
      for (int r = 0; r < reps[i]; r++) fn(c);
      if (bench_now() - t0 >= 2e-3 || reps[i] >= (1 << 24)) break;
      reps[i] *= 2;
    }
    out[i] = 1e30;
  }
  for (int round = 0; round < rounds; round++)
    for (int i = 0; i < k; i++) {
      void *c = (char *)ctx + (size_t)i * stride;
      double t0 = bench_now();
      for (int r = 0; r < reps[i]; r++) fn(c);
      out[i] = bench_min(out[i], (bench_now() - t0) / reps[i]);
    }
}

typedef struct sweep_ctx {
  const prepared *pr;
  arena *A;
  size_t n;
  kpool *kp;
  uint64_t t;
  int kind;
} sweep_ctx;

static void sweep_step(void *ctx) {
  sweep_ctx *s = ctx;
  step(s->pr, s->A, s->n, ++s->t, s->kp);
}

static void sweep_stream(void *ctx) {
  sweep_ctx *s = ctx;
  stream_run(s->kind, s->A, 0, s->n);
}

/* Effective GB/s (bytes moved / time) against n: Adam and SGD-momentum on
 * one thread and on every core (kpool: small steps stay on one), and Adam's
 * access pattern without arithmetic (its bytes-moved bound); one line per
 * size. */
static void sweep(const char *path, kpool *kp, size_t max_n, int rounds) {
  FILE *f = fopen(path, "w");
  if (!f) {
    fprintf(stderr, "bench_kernels: cannot write %s\n", path);
    return;
  }
  prepared adam, mom;
  for (size_t i = 0; i < NCASES; i++) {
    if (!strcmp(cases[i].label, "adam")) prepare(&cases[i], &adam);
    if (!strcmp(cases[i].label, "momentum")) prepare(&cases[i], &mom);
  }
  fprintf(f, "# n adam_1t adam_all momentum_1t momentum_all adam_pattern_1t (GB/s)\n");
  printf("\nsweep (effective GB/s = bytes moved / time):\n");
  printf("%12s %10s %10s %10s %10s %12s\n", "n", "adam 1T", "adam all", "mom 1T", "mom all", "pattern 1T");
  static const double sizes[] = {1e3, 3e3, 1e4, 3e4, 1e5, 3e5, 1e6, 3e6, 1e7, 3e7, 1e8};
  for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
    size_t n = (size_t)sizes[si];
    if (n > max_n) break;
    arena A; /* the kernels' arrays, then (freed first) the pattern's: 5 arrays at most */
    arena_init(&A, n, adam.need | mom.need, false);
    sweep_ctx c[4] = {{&adam, &A, n, NULL, 0, 0}, {&adam, &A, n, kp, 0, 0}, {&mom, &A, n, NULL, 0, 0},
                      {&mom, &A, n, kp, 0, 0}};
    double t[5];
    best_per_call_n(sweep_step, c, sizeof c[0], 4, rounds, t);
    arena_free(&A);
    arena_init(&A, n, 0, true);
    sweep_ctx sc = {.A = &A, .n = n, .kind = S_PAT2};
    best_per_call_n(sweep_stream, &sc, sizeof sc, 1, rounds, t + 4);
    double a1 = t[0], aa = t[1], m1 = t[2], ma = t[3], r1 = t[4];
    double gb = 1e-9 * (double)n;
    double v[5] = {gb * adam.bytes / a1, gb * adam.bytes / aa, gb * mom.bytes / m1, gb * mom.bytes / ma,
                   gb * stream_bytes[S_PAT2] / r1};
    fprintf(f, "%zu %.3f %.3f %.3f %.3f %.3f\n", n, v[0], v[1], v[2], v[3], v[4]);
    printf("%12zu %10.1f %10.1f %10.1f %10.1f %12.1f\n", n, v[0], v[1], v[2], v[3], v[4]);
    fflush(stdout);
    arena_free(&A);
  }
  fclose(f);
}

/* ---- the machine --------------------------------------------------------------- */

static void machine(void) {
  char model[256] = "unknown", line[4096];
  int avx512 = 0, avx2 = 0, fma = 0;
  FILE *f = fopen("/proc/cpuinfo", "r");
  while (f && fgets(line, sizeof line, f)) {
    if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
      snprintf(model, sizeof model, "%s", strchr(line, ':') + 2);
      model[strcspn(model, "\n")] = 0;
    }
    if (!strncmp(line, "flags", 5)) {
      avx512 = strstr(line, " avx512f") != NULL;
      avx2 = strstr(line, " avx2") != NULL;
      fma = strstr(line, " fma") != NULL;
    }
  }
  if (f) fclose(f);
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  printf("machine: %s, %ld cores, avx512f=%d avx2=%d fma=%d, kernels dispatch to %s\n", model, cores, avx512,
         avx2, fma, optim_isa());
  char flags[64];
  snprintf(flags, sizeof flags, "avx512f=%d avx2=%d fma=%d, kernels: %s", avx512, avx2, fma, optim_isa());
  bench_put((double)cores, "machine.cores");
  bench_put_str("machine.model", model);
  bench_put_str("machine.flags", flags);
}

/* ---- main ---------------------------------------------------------------------- */

int main(int argc, char **argv) {
  size_t n = (size_t)atof(bench_arg(argc, argv, "--n", "1e7"));
  int rounds = atoi(bench_arg(argc, argv, "--rounds", "15"));
  const char *sweep_path = bench_arg(argc, argv, "--sweep", NULL);
  size_t sweep_max = (size_t)atof(bench_arg(argc, argv, "--sweep-max", "1e8"));
  bench_out_open(bench_arg(argc, argv, "--out", NULL));
  if (rounds < 1) rounds = 1;
  machine();
  cpus_init();
  kpool *kp = kpool_new(0);
  int threads = kpool_threads(kp);

  arena A;
  arena_init(&A, n, (1u << OPTIM_NBUF) - 1, true);
  prepared pr[NCASES];
  for (size_t i = 0; i < NCASES; i++) prepare(&cases[i], &pr[i]);

  /* every measurement once per round, best of all rounds */
  double s1[S_COUNT], sn[S_COUNT], k1[NCASES], kn[NCASES];
  for (int s = 0; s < S_COUNT; s++) s1[s] = sn[s] = 1e30;
  for (size_t i = 0; i < NCASES; i++) k1[i] = kn[i] = 1e30;
  uint64_t t = 0;
  for (size_t i = 0; i < NCASES; i++) step(&pr[i], &A, n, ++t, NULL); /* warm */
  for (int r = 0; r < rounds; r++) {
    for (int s = 0; s < S_COUNT; s++) {
      s1[s] = bench_min(s1[s], stream_time(s, &A, n, 1));
      sn[s] = bench_min(sn[s], stream_time(s, &A, n, threads));
    }
    for (size_t i = 0; i < NCASES; i++) {
      double t0 = bench_now();
      step(&pr[i], &A, n, ++t, NULL);
      double t1 = bench_now();
      step(&pr[i], &A, n, ++t, kp);
      double t2 = bench_now();
      k1[i] = bench_min(k1[i], t1 - t0);
      kn[i] = bench_min(kn[i], t2 - t1);
    }
  }

  printf("\nbandwidth at n=%zu floats (best of %d rounds):\n", n, rounds);
  printf("  %-9s %7s %12s %12s\n", "stream", "B/elem", "1T GB/s", "all GB/s");
  for (int s = 0; s < S_COUNT; s++) {
    double g1 = 1e-9 * (double)n * stream_bytes[s] / s1[s], gn = 1e-9 * (double)n * stream_bytes[s] / sn[s];
    printf("  %-9s %7d %12.1f %12.1f\n", stream_names[s], stream_bytes[s], g1, gn);
    bench_put(g1, "bw.%s.t1", stream_names[s]);
    bench_put(gn, "bw.%s.tall", stream_names[s]);
  }
  bench_put(threads, "kern.threads");
  bench_put((double)n, "kern.n");

  printf("\nkernels at n=%zu (ns/element, best of %d rounds; bound: the same bytes moved in the\n"
         "same in-place pattern without arithmetic, measured above; all = kpool on %d threads):\n",
         n, rounds, threads);
  printf("  %-17s %6s %8s %8s %9s %9s %8s %9s\n", "algorithm", "B/elem", "bound1T", "1T", "1T/bound", "boundall",
         "all", "1T/all");
  for (size_t i = 0; i < NCASES; i++) {
    int k = S_PAT0 + __builtin_popcount(pr[i].need);
    double ns1 = k1[i] * 1e9 / (double)n, nsn = kn[i] * 1e9 / (double)n;
    double b1 = s1[k] * 1e9 / (double)n, bn = sn[k] * 1e9 / (double)n;
    printf("  %-17s %6d %8.3f %8.3f %9.2f %9.3f %8.3f %9.2f\n", cases[i].label, pr[i].bytes, b1, ns1, ns1 / b1,
           bn, nsn, ns1 / nsn);
    bench_put(pr[i].bytes, "kern.%s.bytes", cases[i].label);
    bench_put(b1, "kern.%s.bound1", cases[i].label);
    bench_put(bn, "kern.%s.boundall", cases[i].label);
    bench_put(ns1, "kern.%s.t1", cases[i].label);
    bench_put(nsn, "kern.%s.tall", cases[i].label);
  }
  fflush(stdout);
  arena_free(&A);

  if (sweep_path) sweep(sweep_path, kp, sweep_max, rounds < 7 ? rounds : 7);
  kpool_free(kp);
  bench_out_close();
  return 0;
}
