/* fmnist_worker: a training worker for the seed's road trip (the seed:
 * neuralnets' optimizers tutorial that descent grew from, not part of this
 * repository), written against
 * libdescent (the binary format): it computes the seed's SVM loss and
 * gradient on its share of each mini-batch and pushes it; the daemon holds
 * the optimizer.  Modes:
 *   train    sync mini-batch training: worker r of R takes the r-th part of
 *            every batch (batches from one seeded permutation per epoch, the
 *            same in every worker); --batch 0 means full-batch descent
 *   random   random search: ask for candidates, score each on the first
 *            --score-n training images, tell the loss
 *   numeric  the seed's Approach 2: numeric-gradient descent on a small
 *            subset (central differences), its cost against the analytic
 *            gradient, and the gradient check of the analytic one
 *   eval     pull the parameters; training loss and test accuracy
 * Every result is one JSON line on stdout; progress goes to stderr.
 */
#include <getopt.h>
#include <stdbool.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "descent.h"
#include "fmnist.h"

typedef struct opts {
  const char *url, *name, *mode, *data;
  int rank, workers, epochs, steps, eval_every;
  size_t batch, train_n, score_n, candidates, numeric_n, curve_n;
  uint64_t seed;
} opts;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *what, int rc, const descent_error *e) {
  fprintf(stderr, "fmnist_worker: %s: %s (%s %d: %s)\n", what, descent_strerror(rc), e->code, e->status, e->message);
  exit(1);
}

static void load(const opts *o, const char *which, fm_set *s) {
  char im[512], lb[512];
  snprintf(im, sizeof im, "%s/%s-images-idx3-ubyte.gz", o->data, which);
  snprintf(lb, sizeof lb, "%s/%s-labels-idx1-ubyte.gz", o->data, which);
  if (fm_load(s, im, lb) < 0) exit(1);
}

/* ---- train ------------------------------------------------------------------ */

static int run_train(const opts *o, descent *d) {
  fm_set tr;
  load(o, "train", &tr);
  size_t n = o->train_n && o->train_n < tr.n ? o->train_n : tr.n;
  bool full = o->batch == 0;
  size_t batch = full ? n : o->batch;
  size_t per_epoch = full ? 1 : n / batch;
  size_t total = full ? (size_t)o->steps : per_epoch * (size_t)o->epochs;
  float *W = malloc(FM_W * sizeof(float)), *g = malloc(FM_W * sizeof(float));
  uint32_t *perm = malloc(n * sizeof(uint32_t));
  descent_error e;
  uint64_t step;
  int rc = descent_pull(d, o->name, W, FM_W, -1, 0, &step, &e);
  if (rc < 0) die("pull", rc, &e);
  char worker[32];
  snprintf(worker, sizeof worker, "w%d", o->rank);
  size_t curve_n = o->curve_n < n ? o->curve_n : n;
  double t0 = now();
  for (size_t s = 0; s < total; s++) {
    size_t epoch = s / per_epoch, k = s % per_epoch;
    if (k == 0) fm_permutation(perm, n, o->seed * 1000003u + epoch);
    /* this worker's part of the batch */
    size_t lo = k * batch + batch * (size_t)o->rank / (size_t)o->workers;
    size_t hi = k * batch + batch * (size_t)(o->rank + 1) / (size_t)o->workers;
    double loss = fm_loss_grad(W, &tr, perm + lo, hi - lo, g);
    if (o->rank == 0 && o->eval_every && s % (size_t)o->eval_every == 0)
      printf("{\"event\":\"curve\",\"step\":%llu,\"loss\":%.6f}\n", (unsigned long long)step,
             fm_loss_grad(W, &tr, NULL, curve_n, NULL));
    descent_push_opts po = DESCENT_PUSH_OPTS_INIT;
    po.worker = worker;
    po.step = (int64_t)step;
    po.loss = loss;
    rc = descent_push(d, o->name, g, FM_W, &po, W, &step, &e);
    if (rc < 0) die("push", rc, &e);
    if (o->rank == 0 && (s + 1) % (per_epoch > 20 ? per_epoch / 4 : 5) == 0)
      fprintf(stderr, "  %s: step %llu/%zu, batch loss %.4f\n", o->name, (unsigned long long)step, total, loss);
  }
  if (o->rank == 0) {
    printf("{\"event\":\"curve\",\"step\":%llu,\"loss\":%.6f}\n", (unsigned long long)step,
           fm_loss_grad(W, &tr, NULL, curve_n, NULL));
    printf("{\"event\":\"trained\",\"steps\":%llu,\"seconds\":%.3f}\n", (unsigned long long)step, now() - t0);
  }
  fflush(stdout);
  free(W);
  free(g);
  free(perm);
  fm_free(&tr);
  return 0;
}

/* ---- random search ---------------------------------------------------------------- */

static int run_random(const opts *o, descent *d) {
  fm_set tr;
  load(o, "train", &tr);
  size_t m = o->score_n < tr.n ? o->score_n : tr.n;
  float *x = malloc(FM_W * sizeof(float));
  size_t mine = o->candidates / (size_t)o->workers + ((size_t)o->rank < o->candidates % (size_t)o->workers);
  double best = INFINITY, t0 = now();
  for (size_t c = 0; c < mine; c++) {
    descent_error e;
    uint64_t id;
    int rc = descent_ask(d, o->name, x, FM_W, &id, &e);
    if (rc < 0) die("ask", rc, &e);
    double loss = fm_loss_grad(x, &tr, NULL, m, NULL);
    int improved;
    double b;
    if ((rc = descent_tell(d, o->name, id, loss, &improved, &b, &e)) < 0) die("tell", rc, &e);
    best = b;
    if (o->rank == 0 && (c + 1) % (mine / 4 ? mine / 4 : 1) == 0)
      fprintf(stderr, "  random search: %zu candidates told by worker 0, best loss so far %.4f\n", c + 1, best);
  }
  if (o->rank == 0) printf("{\"event\":\"searched\",\"best_loss\":%.6f,\"seconds\":%.3f}\n", best, now() - t0);
  free(x);
  fm_free(&tr);
  return 0;
}

/* ---- numeric gradient ---------------------------------------------------------------- */

typedef struct num_ctx {
  const fm_set *s;
  size_t m;
} num_ctx;

static double loss_d(const double *W, void *ctx) {
  const num_ctx *c = ctx;
  return fm_loss_grad_d(W, c->s, NULL, c->m, NULL);
}

static int run_numeric(const opts *o, descent *d) {
  fm_set tr;
  load(o, "train", &tr);
  num_ctx ctx = {&tr, o->numeric_n < tr.n ? o->numeric_n : tr.n};
  float *W = malloc(FM_W * sizeof(float)), *g = malloc(FM_W * sizeof(float));
  double *Wd = malloc(FM_W * sizeof(double)), *gn = malloc(FM_W * sizeof(double)), *ga = malloc(FM_W * sizeof(double));
  descent_error e;
  uint64_t step;
  int rc = descent_pull(d, o->name, W, FM_W, -1, 0, &step, &e);
  if (rc < 0) die("pull", rc, &e);
  /* the gradient check first, in double, at the starting point */
  for (size_t k = 0; k < FM_W; k++) Wd[k] = W[k];
  double t = now();
  fm_loss_grad_d(Wd, &tr, NULL, ctx.m, ga);
  double analytic_s = now() - t;
  t = now();
  descent_numeric_gradient(loss_d, &ctx, Wd, FM_W, 1e-5, gn);
  double numeric_s = now() - t;
  /* the relative error of the whole gradient, ||a - n|| / max(||a||, ||n||),
   * and the worst single parameter (descent_gradient_check) among those whose
   * gradient is at least 1e-3 of the largest: central differences of a loss
   * near 9 carry about 1e-10 of rounding noise even in double, so parameters
   * fed only by always-black pixels (true gradient 2 lambda W, ~1e-8) cannot
   * be checked one by one */
  double dd = 0, aa = 0, nn = 0, big = 0;
  for (size_t k = 0; k < FM_W; k++) {
    dd += (ga[k] - gn[k]) * (ga[k] - gn[k]);
    aa += ga[k] * ga[k];
    nn += gn[k] * gn[k];
    big = fmax(big, fabs(ga[k]));
  }
  double rel = sqrt(dd) / fmax(sqrt(fmax(aa, nn)), 1e-300);
  size_t worst = 0, kept = 0;
  double elem = 0;
  for (size_t k = 0; k < FM_W; k++) {
    if (fabs(ga[k]) < 1e-3 * big) continue;
    size_t w;
    double r = descent_gradient_check(ga + k, gn + k, 1, &w);
    kept++;
    if (r > elem) {
      elem = r;
      worst = k;
    }
  }
  fprintf(stderr, "  gradient check on %zu images: relative error %.3g; worst of %zu parameters %.3g (parameter %zu)\n",
          ctx.m, rel, kept, elem, worst);
  /* numeric-gradient descent: a few steps through the daemon, each gradient
   * by central differences (2 x 7850 loss evaluations) */
  double t0 = now();
  for (int s = 0; s < o->steps; s++) {
    for (size_t k = 0; k < FM_W; k++) Wd[k] = W[k];
    descent_numeric_gradient(loss_d, &ctx, Wd, FM_W, 1e-5, gn);
    for (size_t k = 0; k < FM_W; k++) g[k] = (float)gn[k];
    rc = descent_push(d, o->name, g, FM_W, NULL, W, &step, &e);
    if (rc < 0) die("push", rc, &e);
    fprintf(stderr, "  numeric-gradient step %d: loss on the subset %.4f\n", s + 1,
            fm_loss_grad(W, &tr, NULL, ctx.m, NULL));
  }
  double per_step = o->steps ? (now() - t0) / o->steps : numeric_s;
  printf("{\"event\":\"numeric\",\"images\":%zu,\"gradient_check\":%.6g,\"gradient_check_elementwise\":%.6g,"
         "\"elements_checked\":%zu,\"numeric_seconds\":%.6f,\"analytic_seconds\":%.6f,\"step_seconds\":%.6f,"
         "\"steps\":%llu}\n",
         ctx.m, rel, elem, kept, numeric_s, analytic_s, per_step, (unsigned long long)step);
  free(W);
  free(g);
  free(Wd);
  free(gn);
  free(ga);
  fm_free(&tr);
  return 0;
}

/* ---- eval ------------------------------------------------------------------------ */

static int run_eval(const opts *o, descent *d) {
  fm_set tr, te;
  load(o, "train", &tr);
  load(o, "t10k", &te);
  float *W = malloc(FM_W * sizeof(float));
  descent_error e;
  uint64_t step;
  int rc = descent_pull(d, o->name, W, FM_W, -1, 0, &step, &e);
  if (rc < 0) die("pull", rc, &e);
  size_t n = o->train_n && o->train_n < tr.n ? o->train_n : tr.n;
  double loss = fm_loss_grad(W, &tr, NULL, n, NULL);
  printf("{\"event\":\"eval\",\"step\":%llu,\"train_loss\":%.6f,\"train_acc\":%.6f,\"test_acc\":%.6f}\n",
         (unsigned long long)step, loss, fm_accuracy(W, &tr), fm_accuracy(W, &te));
  free(W);
  fm_free(&tr);
  fm_free(&te);
  return 0;
}

static void usage(void) {
  fprintf(stderr,
          "usage: fmnist_worker MODE --url URL --name INSTANCE [options]\n"
          "  MODE: train | random | numeric | eval\n"
          "  --rank R --workers N   this worker's index and the worker count (train, random)\n"
          "  --batch B              global mini-batch (train; 0 = full batch)\n"
          "  --epochs E | --steps S epochs of mini-batches, or full-batch / numeric steps\n"
          "  --train-n N            use the first N training images (default all)\n"
          "  --score-n N --candidates C   random search: images per score, candidates in all\n"
          "  --numeric-n N          numeric mode: images in the subset\n"
          "  --eval-every K --curve-n N   train: rank 0 evaluates the loss on N images every K steps\n"
          "  --seed S --data DIR    batch order seed; dataset directory\n");
}

int main(int argc, char **argv) {
  opts o = {.url = getenv("DESCENT_URL"), .data = "/usr/share/datasets/fashion-mnist", .workers = 1,
            .epochs = 1, .steps = 1, .batch = 256, .score_n = 2000, .candidates = 1000, .numeric_n = 100,
            .curve_n = 5000, .eval_every = 0, .seed = 1};
  if (argc < 2) {
    usage();
    return 2;
  }
  o.mode = argv[1];
  static const struct option lo[] = {
      {"url", 1, 0, 'u'},       {"name", 1, 0, 'n'},       {"rank", 1, 0, 'r'},      {"workers", 1, 0, 'w'},
      {"batch", 1, 0, 'b'},     {"epochs", 1, 0, 'e'},     {"steps", 1, 0, 's'},     {"train-n", 1, 0, 't'},
      {"score-n", 1, 0, 'S'},   {"candidates", 1, 0, 'c'}, {"numeric-n", 1, 0, 'N'}, {"eval-every", 1, 0, 'E'},
      {"curve-n", 1, 0, 'C'},   {"seed", 1, 0, 'x'},       {"data", 1, 0, 'd'},      {0, 0, 0, 0}};
  int c;
  optind = 2;
  while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    switch (c) {
    case 'u': o.url = optarg; break;
    case 'n': o.name = optarg; break;
    case 'r': o.rank = atoi(optarg); break;
    case 'w': o.workers = atoi(optarg); break;
    case 'b': o.batch = strtoull(optarg, NULL, 10); break;
    case 'e': o.epochs = atoi(optarg); break;
    case 's': o.steps = atoi(optarg); break;
    case 't': o.train_n = strtoull(optarg, NULL, 10); break;
    case 'S': o.score_n = strtoull(optarg, NULL, 10); break;
    case 'c': o.candidates = strtoull(optarg, NULL, 10); break;
    case 'N': o.numeric_n = strtoull(optarg, NULL, 10); break;
    case 'E': o.eval_every = atoi(optarg); break;
    case 'C': o.curve_n = strtoull(optarg, NULL, 10); break;
    case 'x': o.seed = strtoull(optarg, NULL, 10); break;
    case 'd': o.data = optarg; break;
    default: usage(); return 2;
    }
  }
  if (!o.url || !o.name || o.workers < 1 || o.rank < 0 || o.rank >= o.workers) {
    usage();
    return 2;
  }
  descent_error e;
  descent *d = descent_open(o.url, getenv("DESCENT_TOKEN"), &e);
  if (!d) die("open", DESCENT_ECONNECT, &e);
  int rc;
  if (!strcmp(o.mode, "train")) rc = run_train(&o, d);
  else if (!strcmp(o.mode, "random")) rc = run_random(&o, d);
  else if (!strcmp(o.mode, "numeric")) rc = run_numeric(&o, d);
  else if (!strcmp(o.mode, "eval")) rc = run_eval(&o, d);
  else {
    usage();
    rc = 2;
  }
  descent_close(d);
  return rc;
}
