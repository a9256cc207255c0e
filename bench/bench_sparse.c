/* bench_sparse: row pushes to sparse tensors through a real descentd (issue 15).
 *
 * Two tables, 4096 random rows per step, binary bodies (u64 k, k u64 rows,
 * k*D f32) on one kept-alive connection (plain sockets: no client library's
 * copies in the figure), parameters of the pushed rows in every reply:
 *   t1m64   10^6 x 64, sparse_adam and adagrad: steps on a fresh table
 *           (rows mostly new) and on a table whose every row is held;
 *   h40d16  2^40 x 16 (hashed features), same algorithms: every step's rows
 *           are new (allocated and initialised by the daemon).
 * Per step: the round trip, the daemon's own apply time (Server-Timing), the
 * bytes on the wire against a dense push of the whole table, and, in the
 * same rounds, a memory-bound reference: the same rows' blocks (params plus
 * state) read, updated in place with trivial arithmetic and copied out, in
 * this process on an array of the same size (the bytes the apply must move).
 * Memory: a fresh daemon, a 2^40 x 16 sparse_adam table, 10^6 distinct rows
 * touched; VmRSS against the floats held (descent_memory_floats) and the
 * fixed overhead (RSS with the empty instance).  With --torch PYTHON, torch's
 * local sparse step (bench_sparse.py --serve, a co-process) is timed after
 * every daemon step, in the same rounds.  Daemon steps and the reference run
 * on the calling thread only.
 */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "daemon.h"
#include "mem.h"

#define K_ROWS 4096

static uint64_t rng_state = 88172645463325252ull;

static uint64_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* ---- daemon requests ------------------------------------------------------------ */

static int http_json(int port, const char *method_path, const char *json, char *out, size_t cap) {
  int s = bench_connect(port);
  if (s < 0) return -1;
  char head[512];
  snprintf(head, sizeof head, "%s HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n", method_path);
  size_t got = 0;
  int st = bench_http(s, head, json, json ? strlen(json) : 0, out, cap ? cap - 1 : 0, &got);
  if (out && cap) out[got < cap ? got : cap - 1] = 0;
  close(s);
  return st;
}

/* The init of the tables (--init): a seeded normal by default, as an
 * embedding table starts; "zeros" shows what the seeded values cost. */
static const char *init_json = "{\"normal\":{\"mean\":0,\"std\":0.01,\"seed\":1}}";

static int create_sparse(int port, const char *name, const char *alg, uint64_t V, int D, const char *init, char *err,
                         size_t ecap) {
  char json[768];
  snprintf(json, sizeof json,
           "{\"name\":\"%s\",\"algorithm\":\"%s\",\"hyper\":{\"lr\":0.01},\"tensors\":[{\"name\":\"emb\","
           "\"shape\":[%llu,%d],\"sparse\":true,\"init\":%s}]}",
           name, alg, (unsigned long long)V, D, init ? init : init_json);
  int st = http_json(port, "POST /v1/optimizers", json, err, ecap);
  return st == 201 || st == 200 ? 0 : st;
}

static void delete_instance(int port, const char *name) {
  char mp[160];
  snprintf(mp, sizeof mp, "DELETE /v1/optimizers/%s", name);
  http_json(port, mp, NULL, NULL, 0);
}

/* descent_memory_floats from /metrics (floats held over all instances), or -1. */
static double metric_floats(int port) {
  static char buf[1 << 20];
  if (http_json(port, "GET /metrics", NULL, buf, sizeof buf) != 200) return -1;
  const char *p = strstr(buf, "\ndescent_memory_floats ");
  return p ? atof(p + 23) : -1;
}

/* ---- one body --------------------------------------------------------------------- */

typedef struct body {
  unsigned char *buf; /* u64 k | k u64 rows | k*D f32 */
  size_t len;
  uint64_t *rows;
  float *vals;
  unsigned char *reply;
  size_t reply_cap;
} body;

static void body_init(body *b, size_t k, int D) {
  b->len = 8 + k * 8 + k * (size_t)D * 4;
  b->buf = mem_alloc_big(b->len + 64);
  b->reply_cap = b->len + 4096;
  b->reply = mem_alloc_big(b->reply_cap);
  uint64_t kk = k;
  memcpy(b->buf, &kk, 8);
  b->rows = (uint64_t *)(b->buf + 8);
  b->vals = (float *)(b->buf + 8 + k * 8);
  bench_fill(b->vals, k * (size_t)D, 3, 1e-2f, 0.0f);
}

/* rows: uniform random in [0, V) (mode 0), or first, first+1, ... (mode 1). */
static void body_rows(body *b, size_t k, uint64_t V, int mode, uint64_t first) {
  for (size_t i = 0; i < k; i++) b->rows[i] = mode ? (first + i) % V : rnd() % V;
}

typedef struct stepres {
  int status;
  double rt, apply, decode, encode; /* seconds; the daemon's phases from Server-Timing, -1 if absent */
  size_t reply;
} stepres;

static stepres do_step(int s, const char *name, body *b) {
  char head[384], rh[2048];
  snprintf(head, sizeof head,
           "POST /v1/optimizers/%s/step HTTP/1.1\r\nHost: b\r\nContent-Type: application/octet-stream\r\n"
           "Accept: application/octet-stream\r\n",
           name);
  stepres r = {0};
  rh[0] = 0;
  double t0 = bench_now();
  r.status = bench_http_h(s, head, b->buf, b->len, b->reply, b->reply_cap, &r.reply, rh, sizeof rh);
  r.rt = bench_now() - t0;
  double a = bench_server_timing(rh, "apply"), dc = bench_server_timing(rh, "decode");
  double ec = bench_server_timing(rh, "encode");
  r.apply = a >= 0 ? a * 1e-3 : -1;
  r.decode = dc >= 0 ? dc * 1e-3 : -1;
  r.encode = ec >= 0 ? ec * 1e-3 : -1;
  return r;
}

/* ---- the memory-bound reference ------------------------------------------------ */

/* The bytes a sparse step must move for one row, in the same pattern: read
 * the gradient row, read and write the row's block (D params and nbuf*D
 * state floats, contiguous), write the row's new params out.  Trivial
 * arithmetic, vectorised like the kernels (-O3, the AVX-512 clone), the
 * blocks of the rows 4 ahead prefetched. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define BCLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define BCLONES
#endif

BCLONES static void ref_step(float *restrict blocks, const uint64_t *restrict rows, size_t k, int D, int nbuf,
                             const float *restrict g, float *restrict out) {
  size_t rowf = (size_t)D * (size_t)(1 + nbuf);
  for (size_t i = 0; i < k; i++) {
    if (i + 4 < k) /* the next rows' blocks, as a gathering kernel would ask for them */
      for (size_t o = 0; o < rowf; o += 16) __builtin_prefetch(blocks + rows[i + 4] * rowf + o, 1);
    float *b = blocks + rows[i] * rowf;
    const float *gi = g + i * (size_t)D;
    for (int j = 1; j <= nbuf; j++)
      for (int c = 0; c < D; c++) b[j * D + c] += gi[c];
    for (int c = 0; c < D; c++) {
      b[c] -= 1e-3f * gi[c];
      out[i * (size_t)D + c] = b[c];
    }
  }
}

/* ---- one table, one algorithm ----------------------------------------------- */

typedef struct tcase {
  const char *label, *alg;
  uint64_t V;
  int D, nbuf;
  bool zeros; /* init "zeros" (the fresh rows cost no seeded values); phase "zeroed" */
} tcase;

/* ---- torch, stepped in the same rounds ------------------------------------ */

/* bench_sparse.py --serve as a co-process (--torch PYTHON): "table LABEL V D"
 * makes its table, "step T" runs one local sparse step on T threads (0:
 * every core) and answers the seconds it took. */
static FILE *torch_in, *torch_out;
static pid_t torch_pid;

static void torch_start(const char *py, const char *script) {
  int to[2], from[2];
  if (!py || !*py || pipe(to) < 0 || pipe(from) < 0) return;
  torch_pid = fork();
  if (torch_pid == 0) {
    dup2(to[0], 0);
    dup2(from[1], 1);
    close(to[1]);
    close(from[0]);
    execl(py, py, script, "--serve", (char *)NULL);
    _exit(127);
  }
  close(to[0]);
  close(from[1]);
  torch_in = fdopen(to[1], "w");
  torch_out = fdopen(from[0], "r");
}

/* One command; the answer line in line (cap bytes).  0 or -1 (torch gone). */
static int torch_cmd(const char *cmd, char *line, size_t cap) {
  if (!torch_in || fprintf(torch_in, "%s\n", cmd) < 0 || fflush(torch_in) != 0 || !fgets(line, (int)cap, torch_out)) {
    if (torch_in) fprintf(stderr, "bench_sparse: the torch co-process stopped answering\n");
    if (torch_in) fclose(torch_in);
    if (torch_out) fclose(torch_out);
    torch_in = torch_out = NULL;
    return -1;
  }
  return 0;
}

static double torch_step(int threads) {
  char cmd[32], line[64];
  snprintf(cmd, sizeof cmd, "step %d", threads);
  return torch_cmd(cmd, line, sizeof line) == 0 ? atof(line) : NAN;
}

static void torch_stop(void) {
  if (torch_in) fclose(torch_in); /* EOF: it exits */
  if (torch_out) fclose(torch_out);
  torch_in = torch_out = NULL;
  if (torch_pid > 0) waitpid(torch_pid, NULL, 0);
  torch_pid = 0;
}

/* The raw TCP echo peer (bench_echo_start): each step is followed by a
 * plain loopback round trip of the push's bytes out and as many back. */
static int echo_sock = -1;

typedef struct phase {
  double rt_best, rt_med, ap_best, ap_med, ref_best, tcp_best, dec_best, enc_best;
  double torch1, torchall; /* best local torch step, one thread and every core; NAN: not run */
  size_t reply;
  int steps;
} phase;

/* steps timed steps (random rows), each followed by one reference step on
 * the same row ids (reduced mod ref_rows) over `ref`. */
static int run_phase(int s, const char *name, body *b, const tcase *tc, int steps, float *ref, uint64_t ref_rows,
                     float *ref_out, phase *ph) {
  double *rt = calloc((size_t)steps, sizeof *rt), *ap = calloc((size_t)steps, sizeof *ap);
  uint64_t *rr = malloc(K_ROWS * sizeof *rr);
  int na = 0, ok = 0;
  memset(ph, 0, sizeof *ph);
  ph->ref_best = ph->tcp_best = ph->dec_best = ph->enc_best = ph->torch1 = ph->torchall = 1e30;
  for (int i = 0; i < steps; i++) {
    body_rows(b, K_ROWS, tc->V, 0, 0);
    stepres r = do_step(s, name, b);
    if (r.status != 200) {
      fprintf(stderr, "bench_sparse: %s step answered %d: %.200s\n", name, r.status, (char *)b->reply);
      break;
    }
    rt[ok++] = r.rt;
    if (r.apply >= 0) ap[na++] = r.apply;
    if (r.decode >= 0) ph->dec_best = bench_min(ph->dec_best, r.decode);
    if (r.encode >= 0) ph->enc_best = bench_min(ph->enc_best, r.encode);
    if (torch_in) {
      double t1 = torch_step(1), ta = torch_step(0);
      if (!isnan(t1)) ph->torch1 = bench_min(ph->torch1, t1);
      if (!isnan(ta)) ph->torchall = bench_min(ph->torchall, ta);
    }
    if (echo_sock >= 0) {
      double t0 = bench_now();
      if (bench_tcp_round(echo_sock, b->buf, b->reply, b->len) == 0)
        ph->tcp_best = bench_min(ph->tcp_best, bench_now() - t0);
    }
    ph->reply = r.reply;
    if (ref) {
      for (size_t j = 0; j < K_ROWS; j++) rr[j] = b->rows[j] % ref_rows;
      double t0 = bench_now();
      ref_step(ref, rr, K_ROWS, tc->D, tc->nbuf, b->vals, ref_out);
      ph->ref_best = bench_min(ph->ref_best, bench_now() - t0);
    }
  }
  qsort(rt, (size_t)ok, sizeof *rt, cmp_double);
  qsort(ap, (size_t)na, sizeof *ap, cmp_double);
  ph->steps = ok;
  ph->rt_best = ok ? rt[0] : NAN;
  ph->rt_med = ok ? rt[ok / 2] : NAN;
  ph->ap_best = na ? ap[0] : NAN;
  ph->ap_med = na ? ap[na / 2] : NAN;
  if (!ref) ph->ref_best = NAN;
  if (ph->tcp_best > 1e29) ph->tcp_best = NAN;
  if (ph->torch1 > 1e29) ph->torch1 = NAN;
  if (ph->torchall > 1e29) ph->torchall = NAN;
  if (ph->dec_best > 1e29) ph->dec_best = NAN;
  if (ph->enc_best > 1e29) ph->enc_best = NAN;
  free(rt);
  free(ap);
  free(rr);
  return ok == steps ? 0 : -1;
}

static void put_phase(const tcase *tc, const char *ph_name, const phase *ph) {
  bench_put(ph->rt_best * 1e3, "sparse.%s.%s.%s.rt_ms", tc->label, tc->alg, ph_name);
  bench_put(ph->rt_med * 1e3, "sparse.%s.%s.%s.rt_med_ms", tc->label, tc->alg, ph_name);
  bench_put(ph->ap_best * 1e3, "sparse.%s.%s.%s.apply_ms", tc->label, tc->alg, ph_name);
  bench_put(ph->ap_med * 1e3, "sparse.%s.%s.%s.apply_med_ms", tc->label, tc->alg, ph_name);
  if (!isnan(ph->ref_best)) bench_put(ph->ref_best * 1e3, "sparse.%s.%s.%s.ref_ms", tc->label, tc->alg, ph_name);
  bench_put(K_ROWS / ph->rt_best, "sparse.%s.%s.%s.rows_per_s", tc->label, tc->alg, ph_name);
  bench_put(ph->tcp_best * 1e3, "sparse.%s.%s.%s.tcp_ms", tc->label, tc->alg, ph_name);
  if (!isnan(ph->torch1)) {
    bench_put(ph->torch1 * 1e3, "sparse.%s.%s.%s.torch1_ms", tc->label, tc->alg, ph_name);
    bench_put(ph->torchall * 1e3, "sparse.%s.%s.%s.torchall_ms", tc->label, tc->alg, ph_name);
    bench_put(bench_min(ph->torch1, ph->torchall) * 1e3, "sparse.%s.%s.%s.torch_ms", tc->label, tc->alg, ph_name);
  }
  bench_put(ph->dec_best * 1e3, "sparse.%s.%s.%s.decode_ms", tc->label, tc->alg, ph_name);
  bench_put(ph->enc_best * 1e3, "sparse.%s.%s.%s.encode_ms", tc->label, tc->alg, ph_name);
  char refs[16] = "-", ratio[16] = "-";
  if (!isnan(ph->ref_best)) {
    snprintf(refs, sizeof refs, "%.3f", ph->ref_best * 1e3);
    snprintf(ratio, sizeof ratio, "%.2f", ph->ap_best / ph->ref_best);
  }
  printf("  %-7s %-11s %-6s %8.3f %8.3f %9.0f %8.3f %8.3f %8s %7s %8.3f %7.3f %7.3f %7.3f %7.3f\n", tc->label, tc->alg,
         ph_name, ph->rt_best * 1e3, ph->rt_med * 1e3, K_ROWS / ph->rt_best, ph->ap_best * 1e3, ph->ap_med * 1e3, refs,
         ratio, ph->tcp_best * 1e3, ph->dec_best * 1e3, ph->enc_best * 1e3, ph->torch1 * 1e3, ph->torchall * 1e3);
}

/* Runs one case on daemon d: create, fresh-table steps, (small tables) fill
 * every row and run the held-table steps, delete. */
static int run_case(bench_daemon *d, const tcase *tc, int steps, float *ref, uint64_t ref_rows, float *ref_out) {
  char name[64], err[512];
  snprintf(name, sizeof name, "%s_%s%s", tc->label, tc->alg, tc->zeros ? "_z" : "");
  int st = create_sparse(d->port, name, tc->alg, tc->V, tc->D, tc->zeros ? "\"zeros\"" : NULL, err, sizeof err);
  if (st) {
    printf("  %-7s %-11s create answered %d: %.160s\n", tc->label, tc->alg, st, err);
    return -1;
  }
  int s = bench_connect(d->port);
  body b;
  body_init(&b, K_ROWS, tc->D);
  phase ph;
  if (torch_in) { /* torch's table: the same shape; the hashed one as 10^6 rows (it cannot hold 2^40) */
    char cmd[96], line[64];
    snprintf(cmd, sizeof cmd, "table %s %llu %d", tc->alg,
             (unsigned long long)(tc->V > 1000000 ? 1000000 : tc->V), tc->D);
    torch_cmd(cmd, line, sizeof line);
  }
  int rc = 0;
  /* two untimed steps: pooled buffers, connection */
  for (int i = 0; i < 2; i++) {
    body_rows(&b, K_ROWS, tc->V, 0, 0);
    do_step(s, name, &b);
  }
  if (run_phase(s, name, &b, tc, steps, ref, ref_rows, ref_out, &ph) < 0) rc = -1;
  else put_phase(tc, tc->zeros ? "zeroed" : "fresh", &ph);
  if (tc->zeros) goto done;
  size_t wire = b.len + ph.reply;
  double dense = 2.0 * (double)tc->V * tc->D * 4;
  bench_put((double)b.len, "sparse.%s.%s.push_bytes", tc->label, tc->alg);
  bench_put((double)ph.reply, "sparse.%s.%s.reply_bytes", tc->label, tc->alg);
  bench_put(dense / (double)wire, "sparse.%s.%s.dense_over_wire", tc->label, tc->alg);
  if (!rc && tc->V <= 10000000) { /* hold every row, then step on held rows */
    double t0 = bench_now();
    int fills = 0;
    for (uint64_t first = 0; first < tc->V; first += K_ROWS, fills++) {
      body_rows(&b, K_ROWS, tc->V, 1, first);
      if (do_step(s, name, &b).status != 200) {
        rc = -1;
        break;
      }
    }
    double fill_s = bench_now() - t0;
    bench_put(fills * (double)K_ROWS / fill_s, "sparse.%s.%s.fill_rows_per_s", tc->label, tc->alg);
    if (!rc && run_phase(s, name, &b, tc, steps, ref, ref_rows, ref_out, &ph) == 0) put_phase(tc, "held", &ph);
  }
done:
  close(s);
  delete_instance(d->port, name);
  mem_free_big(b.buf, b.len + 64);
  mem_free_big(b.reply, b.reply_cap);
  return rc;
}

/* ---- memory -------------------------------------------------------------------- */

static void run_memory(const char *bin, uint64_t touch) {
  bench_daemon dm;
  if (bench_daemon_start(&dm, bin, NULL) < 0) return;
  const tcase tc = {"h40d16", "sparse_adam", 1ull << 40, 16, 2, false};
  struct timespec pause = {1, 0}, idle = {7, 0};
  nanosleep(&pause, NULL);
  long base_kb = bench_proc_kb(dm.pid, "VmRSS");
  char err[512];
  if (create_sparse(dm.port, "mem", tc.alg, tc.V, tc.D, NULL, err, sizeof err)) {
    bench_daemon_stop(&dm);
    return;
  }
  nanosleep(&pause, NULL);
  long fixed_kb = bench_proc_kb(dm.pid, "VmRSS");
  int s = bench_connect(dm.port);
  body b;
  body_init(&b, K_ROWS, tc.D);
  /* distinct ids: an odd multiplier is a bijection mod 2^40 */
  uint64_t n = 0;
  while (n < touch) {
    for (size_t i = 0; i < K_ROWS; i++, n++) b.rows[i] = (n * 0x9E3779B97F4Bull + 12345) & (tc.V - 1);
    if (do_step(s, "mem", &b).status != 200) break;
  }
  close(s);
  nanosleep(&idle, NULL); /* idle pooled bodies are handed back after 5 s */
  long after_kb = bench_proc_kb(dm.pid, "VmRSS");
  long hwm_kb = bench_proc_kb(dm.pid, "VmHWM");
  double floats = metric_floats(dm.port);
  double held = floats * 4, mib = 1048576.0;
  double over = (double)(after_kb - fixed_kb) * 1024.0;
  printf("  memory: 2^40 x 16 sparse_adam, %llu rows touched; floats held %.0f (%.1f MiB)\n",
         (unsigned long long)n, floats, held / mib);
  printf("    daemon alone %.1f MiB, with the empty instance %.1f MiB (the fixed overhead)\n", base_kb / 1024.0,
         fixed_kb / 1024.0);
  printf("    after touching: %.1f MiB = fixed + %.1f MiB = fixed + %.3fx floats held (goal <= 1.3x); peak %.1f MiB\n",
         after_kb / 1024.0, over / mib, over / held, hwm_kb / 1024.0);
  bench_put((double)n, "spmem.rows");
  bench_put(held, "spmem.held_bytes");
  bench_put(base_kb * 1024.0, "spmem.base_bytes");
  bench_put(fixed_kb * 1024.0, "spmem.fixed_bytes");
  bench_put(after_kb * 1024.0, "spmem.after_bytes");
  bench_put(hwm_kb * 1024.0, "spmem.peak_bytes");
  mem_free_big(b.buf, b.len + 64);
  mem_free_big(b.reply, b.reply_cap);
  bench_daemon_stop(&dm);
}

int main(int argc, char **argv) {
  const char *bin = bench_arg(argc, argv, "--daemon", "build/bin/descentd");
  int steps = atoi(bench_arg(argc, argv, "--steps", "100"));
  uint64_t touch = (uint64_t)atof(bench_arg(argc, argv, "--touch", "1e6"));
  bool no_mem = bench_flag(argc, argv, "--no-memory");
  if (!strcmp(bench_arg(argc, argv, "--init", "normal"), "zeros")) init_json = "\"zeros\"";
  bench_out_open(bench_arg(argc, argv, "--out", NULL));
  setvbuf(stdout, NULL, _IOLBF, 0); /* progress as it goes, also into a file */
  bench_daemon d;
  if (bench_daemon_start(&d, bin, NULL) < 0) {
    fprintf(stderr, "bench_sparse: cannot start %s\n", bin);
    return 1;
  }
  char err[512];
  int st = create_sparse(d.port, "probe", "sparse_adam", 16, 4, NULL, err, sizeof err);
  if (st) {
    printf("sparse: not supported by this daemon yet (create answered %d: %.160s)\n", st, err);
    bench_put_str("sparse.supported", "0");
    bench_daemon_stop(&d);
    bench_out_close();
    return 0;
  }
  delete_instance(d.port, "probe");
  bench_put_str("sparse.supported", "1");
  static const tcase cases[] = {
      {"t1m64", "sparse_adam", 1000000, 64, 2, false},
      {"t1m64", "adagrad", 1000000, 64, 1, false},
      {"h40d16", "sparse_adam", 1ull << 40, 16, 2, false},
      {"h40d16", "adagrad", 1ull << 40, 16, 1, false},
      {"h40d16", "sparse_adam", 1ull << 40, 16, 2, true},
      {"h40d16", "adagrad", 1ull << 40, 16, 1, true},
  };
  torch_start(bench_arg(argc, argv, "--torch", NULL),
              bench_arg(argc, argv, "--torch-script", "bench/bench_sparse.py"));
  int echo_port = 0;
  pid_t epid = bench_echo_start(&echo_port);
  if (epid > 0) echo_sock = bench_connect(echo_port);
  /* the reference arrays: 10^6 blocks of the case's size, pre-touched */
  const uint64_t ref_rows = 1000000;
  printf("sparse: %d rows per step, binary, one connection, best/median of %d steps (ms); ref = the same\n"
         "rows' blocks moved in place by this process (bytes-bound), apply/ref = the daemon's best apply over it;\n"
         "raw tcp = the same bytes out and back over plain loopback TCP; decode, encode: the daemon's, best;\n"
         "torch1, torch*: torch's local sparse step (--torch), one thread and every core, in the same rounds\n",
         K_ROWS, steps);
  printf("  %-7s %-11s %-6s %8s %8s %9s %8s %8s %8s %7s %8s %7s %7s %7s %7s\n", "table", "algorithm", "rows", "rt", "rt med",
         "rows/s", "apply", "apl med", "ref", "apl/ref", "raw tcp", "decode", "encode", "torch1", "torch*");
  int failed = 0;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const tcase *tc = &cases[i];
    size_t rowf = (size_t)tc->D * (size_t)(1 + tc->nbuf);
    float *ref = mem_alloc_floats(ref_rows * rowf), *ref_out = mem_alloc_floats(K_ROWS * (size_t)tc->D);
    if (ref) memset(ref, 0, ref_rows * rowf * sizeof(float));
    if (run_case(&d, tc, steps, ref, ref_rows, ref_out) < 0) failed++;
    bench_put((double)((4 + 2 * tc->nbuf) * tc->D * 4), "sparse.%s.%s.bytes_per_row", tc->label, tc->alg);
    if (ref) mem_free_floats(ref, ref_rows * rowf);
    if (ref_out) mem_free_floats(ref_out, K_ROWS * (size_t)tc->D);
  }
  bench_daemon_stop(&d);
  if (echo_sock >= 0) close(echo_sock);
  if (epid > 0) { /* first: the peer, forked after torch, holds torch's stdin open too */
    kill(epid, SIGTERM);
    waitpid(epid, NULL, 0);
  }
  torch_stop();
  if (!no_mem) run_memory(bin, touch);
  bench_out_close();
  return failed ? 1 : 0;
}
