/* bench_durability: what each durability mode costs (issue 16), side by side.
 *
 * For Adam instances of 10^3, 10^5 and 10^7 parameters, 16 async workers
 * (libcurl multi, kept-alive connections, binary gradients, ?params=none)
 * push as fast as replies come back; pushes per second and p50/p99 latency
 * in three modes, each a fresh daemon (or group) with a fresh data dir:
 *   snapshot  --data-dir (the default durability: periodic snapshots);
 *   log       --data-dir --durability log (fsynced log, group commit);
 *   replicas  three members on loopback (--node-id, --cluster), load on the
 *             leader (found by which member accepts the create).
 * A mode the daemon does not know yet (it exits at the unknown option) is
 * reported as not supported.  In the same run: the disk's fsynced write
 * bandwidth and fsyncs per second in the data dir, and one-way loopback TCP
 * bandwidth, the bounds the 10^7 figures are read against.
 * Owns its data dirs (removed at the end) and the daemons it starts.
 */
#include <fcntl.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common.h"
#include "daemon.h"
#include "load.h"

#define MAX_NODES 3

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

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

/* ---- the machine's bounds ------------------------------------------------------ */

/* fsynced write bandwidth: `chunks` writes of `bytes`, fdatasync after each
 * (a big log entry's pattern); and first, small appends (4 KiB) with
 * fdatasync each: how many group commits per second the disk allows. */
static void disk_bounds(const char *dir, size_t bytes, int chunks, double *mbps, double *fsyncs) {
  char path[512];
  snprintf(path, sizeof path, "%s/disk-probe", dir);
  int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
  char *buf = malloc(bytes);
  *mbps = *fsyncs = NAN;
  if (fd < 0 || !buf) goto out;
  memset(buf, 0x5a, bytes);
  int n = 0;
  double t0 = bench_now();
  while (bench_now() - t0 < 1.0) {
    if (write(fd, buf, 4096) != 4096 || fdatasync(fd) < 0) break;
    n++;
  }
  *fsyncs = n / (bench_now() - t0);
  t0 = bench_now();
  for (int i = 0; i < chunks; i++) {
    for (size_t o = 0; o < bytes;) {
      ssize_t k = write(fd, buf + o, bytes - o);
      if (k <= 0) goto out;
      o += (size_t)k;
    }
    if (fdatasync(fd) < 0) goto out;
  }
  *mbps = (double)bytes * chunks / (bench_now() - t0) / 1e6;
out:
  if (fd >= 0) close(fd);
  unlink(path);
  free(buf);
}

/* One-way loopback TCP: a forked sink reads and drops `total` bytes and
 * answers one byte; GB/s from the first byte sent to that answer. */
static double loopback_gbps(size_t total) {
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t al = sizeof a;
  if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 1) < 0 ||
      getsockname(ls, (struct sockaddr *)&a, &al) < 0)
    return NAN;
  pid_t pid = fork();
  if (pid == 0) {
    int s = accept(ls, NULL, NULL);
    static char sinkbuf[256 << 10];
    for (size_t left = total; s >= 0 && left;) {
      ssize_t k = recv(s, sinkbuf, left < sizeof sinkbuf ? left : sizeof sinkbuf, 0);
      if (k <= 0) _exit(1);
      left -= (size_t)k;
    }
    if (s >= 0) bench_send_all(s, "k", 1);
    _exit(0);
  }
  close(ls);
  int s = bench_connect(ntohs(a.sin_port));
  size_t chunk = 4u << 20;
  char *buf = malloc(chunk);
  double g = NAN;
  if (s >= 0 && buf) {
    memset(buf, 1, chunk);
    double t0 = bench_now();
    int ok = 0;
    for (size_t left = total; left; left -= left < chunk ? left : chunk)
      if ((ok = bench_send_all(s, buf, left < chunk ? left : chunk)) < 0) break;
    char c;
    if (ok == 0 && bench_recv_all(s, &c, 1) == 0) g = (double)total / (bench_now() - t0) / 1e9;
  }
  if (s >= 0) close(s);
  free(buf);
  waitpid(pid, NULL, 0);
  return g;
}

/* ---- daemons ------------------------------------------------------------------------ */

typedef struct group {
  bench_daemon node[MAX_NODES];
  int n, leader; /* index of the member the load goes to */
  char dir[512];
} group;

static int free_port(void) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t al = sizeof a;
  int p = -1;
  if (s >= 0 && bind(s, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(s, (struct sockaddr *)&a, &al) == 0)
    p = ntohs(a.sin_port);
  if (s >= 0) close(s);
  return p;
}

static void group_stop(group *g) {
  for (int i = 0; i < g->n; i++) bench_daemon_stop(&g->node[i]);
  if (g->dir[0]) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g->dir);
    if (system(cmd) != 0) fprintf(stderr, "bench_durability: could not remove %s\n", g->dir);
  }
  memset(g, 0, sizeof *g);
}

/* Starts mode's daemon(s) under a fresh dir in base.  0, or -1 with nothing
 * left running (the daemon refused the options). */
static int group_start(group *g, const char *bin, const char *mode, const char *base) {
  memset(g, 0, sizeof *g);
  snprintf(g->dir, sizeof g->dir, "%s/dur-%s-XXXXXX", base, mode);
  if (!mkdtemp(g->dir)) {
    g->dir[0] = 0;
    return -1;
  }
  if (strcmp(mode, "replicas")) {
    const char *extra[] = {"--data-dir", g->dir, !strcmp(mode, "log") ? "--durability" : NULL, "log", NULL};
    g->n = 1;
    if (bench_daemon_start(&g->node[0], bin, extra) < 0) {
      group_stop(g);
      return -1;
    }
    return 0;
  }
  int rport[MAX_NODES];
  char cluster[256] = "", ids[MAX_NODES][8], dirs[MAX_NODES][560];
  for (int i = 0; i < MAX_NODES; i++) {
    rport[i] = free_port();
    size_t l = strlen(cluster);
    snprintf(cluster + l, sizeof cluster - l, "%s%d=127.0.0.1:%d", i ? "," : "", i + 1, rport[i]);
  }
  for (int i = 0; i < MAX_NODES; i++) {
    snprintf(ids[i], sizeof ids[i], "%d", i + 1);
    snprintf(dirs[i], sizeof dirs[i], "%s/n%d", g->dir, i + 1);
    mkdir(dirs[i], 0700);
    const char *extra[] = {"--data-dir", dirs[i], "--node-id", ids[i], "--cluster", cluster, NULL};
    if (bench_daemon_start(&g->node[i], bin, extra) < 0) {
      group_stop(g);
      return -1;
    }
    g->n = i + 1;
  }
  return 0;
}

/* Whether member i says (GET /v1/cluster, its own "role") it leads. */
static bool is_leader(group *g, int i) {
  char buf[4096];
  if (http_json(g->node[i].port, "GET /v1/cluster", NULL, buf, sizeof buf) != 200) return false;
  const char *role = strstr(buf, "\"role\":");
  return role && !strncmp(role + 7, "\"leader\"", 8);
}

/* Creates the instance on the leader (one daemon: itself).  A replica
 * group waits for a member to report that it leads before the create: a
 * write accepted before the group has formed is not replicated (found by
 * this benchmark: see docs/benchmarks.md).  0 or -1. */
static int group_create(group *g, const char *json) {
  char err[512] = "";
  g->leader = -1;
  for (int tries = 0; g->n > 1 && g->leader < 0 && tries < 200; tries++) {
    for (int i = 0; i < g->n && g->leader < 0; i++)
      if (is_leader(g, i)) g->leader = i;
    struct timespec ts = {0, 50 * 1000 * 1000};
    if (g->leader < 0) nanosleep(&ts, NULL);
  }
  if (g->n == 1) g->leader = 0;
  if (g->leader < 0) {
    fprintf(stderr, "bench_durability: no member became the leader\n");
    return -1;
  }
  int st = http_json(g->node[g->leader].port, "POST /v1/optimizers", json, err, sizeof err);
  if (st == 201 || st == 200) return 0;
  fprintf(stderr, "bench_durability: create answered %d: %.200s\n", st, err);
  return -1;
}

/* A counter or gauge from /metrics (no labels), or NAN. */
static double metric(int port, const char *name) {
  static char buf[1 << 20];
  if (http_json(port, "GET /metrics", NULL, buf, sizeof buf) != 200) return NAN;
  char key[128];
  snprintf(key, sizeof key, "\n%s ", name);
  const char *p = strstr(buf, key);
  return p ? atof(p + strlen(key)) : NAN;
}

/* ---- one measurement ------------------------------------------------------------- */

typedef struct result {
  double pps, p50, p99, per_fsync; /* per_fsync: log entries per fdatasync over the whole run */
  long failures, pushes, last_failure, redirects;
} result;

static int measure(group *g, size_t n, int workers, double secs, const float *grad, result *r) {
  char json[512], url[256], mp[128];
  snprintf(json, sizeof json,
           "{\"name\":\"dur\",\"algorithm\":\"adam\",\"tensors\":[{\"name\":\"w\",\"shape\":[%zu],\"init\":\"zeros\"}]}",
           n);
  if (group_create(g, json) < 0) return -1;
  snprintf(url, sizeof url, "%s/v1/optimizers/dur/step?params=none", g->node[g->leader].base);
  load L;
  load_init(&L, workers, url, (const char *)grad, n * sizeof(float), true);
  L.follow = true;
  L.lat_cap = 2000000;
  L.lat = malloc((size_t)L.lat_cap * sizeof *L.lat);
  /* big pushes: 16 x 40 MB in flight take seconds to drain, so a longer
   * window (and warm-up) than the small sizes need */
  bool big = n >= 1000000;
  double warm = big ? 3.0 : 0.3;
  if (big && secs < 8) secs = 8;
  long k = load_run(&L, warm, secs, NULL, NULL);
  qsort(L.lat, (size_t)L.nlat, sizeof *L.lat, cmp_double);
  r->pps = (double)k / secs;
  r->pushes = k;
  r->p50 = L.nlat ? L.lat[L.nlat / 2] * 1e3 : NAN;
  r->p99 = L.nlat ? L.lat[(L.nlat * 99) / 100] * 1e3 : NAN;
  r->failures = L.failures;
  r->last_failure = L.last_failure;
  r->redirects = L.redirects;
  double entries = metric(g->node[g->leader].port, "descent_log_entries_total");
  double fsyncs = metric(g->node[g->leader].port, "descent_log_fsyncs_total");
  r->per_fsync = fsyncs > 0 ? entries / fsyncs : NAN;
  free(L.lat);
  load_free(&L);
  snprintf(mp, sizeof mp, "DELETE /v1/optimizers/dur");
  http_json(g->node[g->leader].port, mp, NULL, NULL, 0);
  return 0;
}

int main(int argc, char **argv) {
  const char *bin = bench_arg(argc, argv, "--daemon", "build/bin/descentd");
  double secs = atof(bench_arg(argc, argv, "--seconds", "3"));
  int workers = atoi(bench_arg(argc, argv, "--workers", "16"));
  const char *sizes_arg = bench_arg(argc, argv, "--sizes", "1e3,1e5,1e7");
  const char *modes_arg = bench_arg(argc, argv, "--modes", "snapshot,log,replicas");
  const char *base = bench_arg(argc, argv, "--dir", "build/bench");
  bench_out_open(bench_arg(argc, argv, "--out", NULL));
  setvbuf(stdout, NULL, _IOLBF, 0); /* progress as it goes, also into a file */
  curl_global_init(CURL_GLOBAL_DEFAULT);
  mkdir(base, 0755);

  size_t sizes[8];
  int ns = 0;
  for (const char *p = sizes_arg; *p && ns < 8; p = strchr(p, ',') ? strchr(p, ',') + 1 : p + strlen(p))
    sizes[ns++] = (size_t)atof(p);
  size_t nmax = 0;
  for (int i = 0; i < ns; i++) nmax = sizes[i] > nmax ? sizes[i] : nmax;
  float *grad = malloc(nmax * sizeof(float));
  bench_fill(grad, nmax, 11, 1e-3f, 0.0f);

  double mbps, fsyncs, lo;
  disk_bounds(base, 40u << 20, 6, &mbps, &fsyncs);
  lo = loopback_gbps((size_t)2 << 30);
  printf("durability: %d async workers, binary pushes (?params=none), %.0f s per figure; data dirs under %s\n",
         workers, secs, base);
  printf("  disk: fsynced writes %.0f MB/s (40 MiB + fdatasync), %.0f fdatasyncs/s (4 KiB appends); loopback TCP "
         "one way %.2f GB/s\n",
         mbps, fsyncs, lo);
  bench_put(mbps, "dur.disk.mbps");
  bench_put(fsyncs, "dur.disk.fsyncs_per_s");
  bench_put(lo, "dur.lo.gbps");
  bench_put((double)workers, "dur.workers");
  printf("  %-9s %10s %10s %10s %10s %8s %10s\n", "mode", "params", "pushes/s", "p50 ms", "p99 ms", "failed",
         "per fsync");
  int rc = 0;
  for (const char *m = modes_arg; *m; m = strchr(m, ',') ? strchr(m, ',') + 1 : m + strlen(m)) {
    char mode[32];
    snprintf(mode, sizeof mode, "%.*s", (int)strcspn(m, ","), m);
    for (int i = 0; i < ns; i++) {
      group g;
      if (group_start(&g, bin, mode, base) < 0) {
        printf("  %-9s not supported by this daemon yet (it refused the options)\n", mode);
        bench_put_str(!strcmp(mode, "log") ? "dur.log.supported" : "dur.replicas.supported", "0");
        break;
      }
      result r;
      if (measure(&g, sizes[i], workers, secs, grad, &r) < 0) {
        printf("  %-9s %10zu  (the instance could not be created)\n", mode, sizes[i]);
        rc = 1;
      } else {
        printf("  %-9s %10zu %10.1f %10.3f %10.3f %8ld %10.2f\n", mode, sizes[i], r.pps, r.p50, r.p99, r.failures,
               r.per_fsync);
        if (r.redirects) printf("  %-9s %10s (%ld pushes answered 307: the leader moved; followed)\n", "", "", r.redirects);
        if (r.failures) printf("  %-9s %10s (failed pushes: the last answered %ld)\n", "", "", r.last_failure);
        if (!isnan(r.per_fsync)) bench_put(r.per_fsync, "dur.%s.%zu.per_fsync", mode, sizes[i]);
        bench_put(r.pps, "dur.%s.%zu.pps", mode, sizes[i]);
        bench_put(r.p50, "dur.%s.%zu.p50_ms", mode, sizes[i]);
        bench_put(r.p99, "dur.%s.%zu.p99_ms", mode, sizes[i]);
        bench_put((double)r.failures, "dur.%s.%zu.failures", mode, sizes[i]);
        if (sizes[i] >= 1000000)
          printf("  %-9s %10s %10.0f MB/s of gradients pushed\n", "", "", r.pps * sizes[i] * 4 / 1e6);
      }
      group_stop(&g);
    }
  }
  free(grad);
  curl_global_cleanup();
  bench_out_close();
  return rc;
}
