/* bench_service: descentd as its users see it, over loopback HTTP.
 *
 * One daemon for the throughput figures, a fresh one for the memory figures:
 *   async   16 workers, each on its own kept-alive connection, pushing
 *           1000-float gradients to one Adam instance as fast as replies come
 *           back (JSON, then binary bodies); steps per second;
 *   sync    8 workers in sync mode on a 1000-float Adam instance, each pushing
 *           its next gradient as soon as its round answers; round latency
 *           (first push of a round sent -> last reply of it received);
 *   big     one client stepping a 10^6-parameter Adam instance, JSON and
 *           binary bodies, parameters in every reply; steps per second;
 *   memory  a 10^7-parameter Adam instance: VmRSS at rest after creation,
 *           VmHWM during binary steps (reset first through clear_refs), and
 *           VmRSS at rest again after them, against parameters plus state.
 * The load generator is libcurl's multi interface on this one thread (no
 * thread per connection); the memory figure uses a plain socket client.
 */
#include <curl/curl.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_float.h"
#include "common.h"
#include "daemon.h"
#include "load.h"

/* ---- helpers ------------------------------------------------------------------- */

static int create(int port, const char *json) {
  int s = bench_connect(port);
  if (s < 0) return -1;
  int st = bench_http(s, "POST /v1/optimizers HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n", json,
                      strlen(json), NULL, 0, NULL);
  close(s);
  return st == 201 || st == 200 ? 0 : -1;
}

static char *json_grads(const float *v, size_t n, size_t *len) {
  char *s = malloc(n * (CODEC_FLOAT_MAX + 1) + 32);
  size_t o = (size_t)sprintf(s, "{\"grads\":[");
  for (size_t i = 0; i < n; i++) {
    if (i) s[o++] = ',';
    o += codec_float_print(v[i], s + o);
  }
  o += (size_t)sprintf(s + o, "]}");
  *len = o;
  return s;
}

/* ---- sync rounds ------------------------------------------------------------------- */

#define MAX_ROUNDS 100000

typedef struct sync_ctx {
  double *first_send, *last_reply;
  long rounds;
} sync_ctx;

static void sync_done(conn *c, double now, void *ctx) {
  sync_ctx *s = ctx;
  long r = c->pushes - 1; /* the round this reply closes (0-based) */
  if (r < 0 || r >= MAX_ROUNDS) return;
  if (s->first_send[r] == 0 || c->sent_at < s->first_send[r]) s->first_send[r] = c->sent_at;
  if (now > s->last_reply[r]) s->last_reply[r] = now;
  if (r + 1 > s->rounds) s->rounds = r + 1;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* ---- main ------------------------------------------------------------------------------ */

int main(int argc, char **argv) {
  const char *bin = bench_arg(argc, argv, "--daemon", "build/bin/descentd");
  double secs = atof(bench_arg(argc, argv, "--seconds", "3"));
  size_t big_n = (size_t)atof(bench_arg(argc, argv, "--big-n", "1e6"));
  size_t mem_n = (size_t)atof(bench_arg(argc, argv, "--mem-n", "1e7"));
  bench_out_open(bench_arg(argc, argv, "--out", NULL));
  curl_global_init(CURL_GLOBAL_DEFAULT);
  int rc = 1;
  bench_daemon d = {0}, dm = {0};
  if (bench_daemon_start(&d, bin, NULL) < 0) {
    fprintf(stderr, "bench_service: cannot start %s\n", bin);
    return 1;
  }
  char json[512], url[256];

  /* async: 16 workers x 1000 floats */
  const size_t small = 1000;
  float *g = malloc(small * sizeof(float));
  bench_fill(g, small, 5, 1e-3f, 0.0f);
  size_t jlen;
  char *jbody = json_grads(g, small, &jlen);
  snprintf(json, sizeof json,
           "{\"name\":\"async\",\"algorithm\":\"adam\",\"tensors\":[{\"name\":\"w\",\"shape\":[%zu],\"init\":\"zeros\"}]}",
           small);
  if (create(d.port, json) < 0) goto out;
  snprintf(url, sizeof url, "%s/v1/optimizers/async/step", d.base);
  printf("service (libcurl multi load generator, %.0f s per figure):\n", secs);
  double sps[2];
  for (int bin_body = 0; bin_body < 2; bin_body++) {
    load L;
    load_init(&L, 16, url, bin_body ? (const char *)g : jbody, bin_body ? small * sizeof(float) : jlen, bin_body);
    long k = load_run(&L, 0.3, secs, NULL, NULL);
    sps[bin_body] = (double)k / secs;
    printf("  async, 16 workers, 1000 floats, %-6s  %9.0f steps/s%s\n", bin_body ? "binary" : "JSON",
           sps[bin_body], L.failures ? "  (FAILURES)" : "");
    if (L.failures) fprintf(stderr, "bench_service: %ld failed pushes\n", L.failures);
    load_free(&L);
  }
  bench_put(sps[0], "svc.async.json.sps");
  bench_put(sps[1], "svc.async.bin.sps");

  /* sync: 8 workers */
  snprintf(json, sizeof json,
           "{\"name\":\"sync\",\"algorithm\":\"adam\",\"mode\":\"sync\",\"workers\":8,"
           "\"tensors\":[{\"name\":\"w\",\"shape\":[%zu],\"init\":\"zeros\"}]}",
           small);
  if (create(d.port, json) < 0) goto out;
  {
    snprintf(url, sizeof url, "%s/v1/optimizers/sync/step?worker=w%%d&params=all", d.base);
    sync_ctx s = {calloc(MAX_ROUNDS, sizeof(double)), calloc(MAX_ROUNDS, sizeof(double)), 0};
    load L;
    load_init(&L, 8, url, (const char *)g, small * sizeof(float), true);
    load_run(&L, 0, secs, sync_done, &s);
    long nr = 0;
    double *lat = malloc((size_t)(s.rounds + 1) * sizeof(double));
    for (long r = 1; r < s.rounds - 1; r++) /* the first and the last may be partial */
      if (s.last_reply[r] > 0) lat[nr++] = (s.last_reply[r] - s.first_send[r]) * 1e3;
    qsort(lat, (size_t)nr, sizeof *lat, cmp_double);
    double p50 = nr ? lat[nr / 2] : NAN, p99 = nr ? lat[(nr * 99) / 100] : NAN;
    printf("  sync, 8 workers, 1000 floats, binary   %9.3f ms per round (p50), p99 %.3f ms, %.0f rounds/s%s\n", p50,
           p99, (double)s.rounds / secs, L.failures ? "  (FAILURES)" : "");
    bench_put(p50, "svc.sync.round_ms_p50");
    bench_put(p99, "svc.sync.round_ms_p99");
    bench_put((double)s.rounds / secs, "svc.sync.rounds_per_s");
    load_free(&L);
    free(lat);
    free(s.first_send);
    free(s.last_reply);
  }

  /* big: one client, 10^6-parameter Adam, JSON and binary */
  snprintf(json, sizeof json,
           "{\"name\":\"big\",\"algorithm\":\"adam\",\"tensors\":[{\"name\":\"w\",\"shape\":[%zu],\"init\":\"zeros\"}]}",
           big_n);
  if (create(d.port, json) < 0) goto out;
  {
    float *bg = malloc(big_n * sizeof(float));
    bench_fill(bg, big_n, 9, 1e-3f, 0.0f);
    size_t blen;
    char *bj = json_grads(bg, big_n, &blen);
    snprintf(url, sizeof url, "%s/v1/optimizers/big/step", d.base);
    double bsps[2];
    for (int bin_body = 0; bin_body < 2; bin_body++) {
      load L;
      load_init(&L, 1, url, bin_body ? (const char *)bg : bj, bin_body ? big_n * sizeof(float) : blen, bin_body);
      long k = load_run(&L, 0.3, secs, NULL, NULL);
      bsps[bin_body] = (double)k / secs;
      printf("  one client, %zu-param Adam, %-6s  %9.1f steps/s%s\n", big_n, bin_body ? "binary" : "JSON",
             bsps[bin_body], L.failures ? "  (FAILURES)" : "");
      load_free(&L);
    }
    bench_put(bsps[0], "svc.big.json.sps");
    bench_put(bsps[1], "svc.big.bin.sps");
    free(bj);
    free(bg);
  }
  bench_daemon_stop(&d);

  /* memory: a fresh daemon with one 10^7-parameter Adam instance */
  if (bench_daemon_start(&dm, bin, NULL) < 0) goto out;
  {
    snprintf(json, sizeof json,
             "{\"name\":\"mem\",\"algorithm\":\"adam\",\"tensors\":[{\"name\":\"w\",\"shape\":[%zu],\"init\":\"zeros\"}]}",
             mem_n);
    long base_kb = bench_proc_kb(dm.pid, "VmRSS");
    if (create(dm.port, json) < 0) goto out;
    struct timespec pause = {1, 0};
    nanosleep(&pause, NULL);
    long rest_kb = bench_proc_kb(dm.pid, "VmRSS");
    int hwm_ok = bench_reset_hwm(dm.pid) == 0;
    float *mg = malloc(mem_n * sizeof(float)), *back = malloc(mem_n * sizeof(float));
    bench_fill(mg, mem_n, 13, 1e-3f, 0.0f);
    int s = bench_connect(dm.port);
    int steps = 0;
    long peak_seen = 0;
    static const char head[] = "POST /v1/optimizers/mem/step HTTP/1.1\r\nHost: b\r\nContent-Type: "
                               "application/octet-stream\r\nAccept: application/octet-stream\r\n";
    double warm = 1e30, cold = NAN;
    for (int i = 0; i < 8 && s >= 0; i++) {
      size_t got;
      double t0 = bench_now();
      int st = bench_http(s, head, mg, mem_n * sizeof(float), back, mem_n * sizeof(float), &got);
      if (st != 200) break;
      if (i) warm = bench_min(warm, bench_now() - t0);
      steps++;
      long now_kb = bench_proc_kb(dm.pid, "VmRSS");
      if (now_kb > peak_seen) peak_seen = now_kb;
    }
    long peak_kb = hwm_ok ? bench_proc_kb(dm.pid, "VmHWM") : peak_seen;
    /* the daemon hands idle pooled buffers back after 5 s unused (checked each second) */
    struct timespec idle = {7, 0};
    nanosleep(&idle, NULL);
    long after_kb = bench_proc_kb(dm.pid, "VmRSS");
    if (s >= 0) { /* the price of that: the next step touches fresh pages again */
      size_t got;
      double t0 = bench_now();
      if (bench_http(s, head, mg, mem_n * sizeof(float), back, mem_n * sizeof(float), &got) == 200)
        cold = bench_now() - t0;
      close(s);
    }
    double theory = 3.0 * (double)mem_n * sizeof(float); /* params, exp_avg, exp_avg_sq */
    double mib = 1024.0 * 1024.0, kb = 1024.0;
    printf("  memory, %zu-param Adam (params + state = %.1f MiB), daemon alone %.1f MiB:\n", mem_n, theory / mib,
           base_kb * kb / mib);
    printf("    at rest after create  %8.1f MiB  (%.3fx + %.1f MiB)\n", rest_kb * kb / mib, rest_kb * kb / theory,
           (rest_kb * kb - theory) / mib);
    printf("    peak during %d binary steps %6.1f MiB  (%.3fx; limit 1.6x + 16 MiB = %.1f MiB)%s\n", steps,
           peak_kb * kb / mib, peak_kb * kb / theory, (1.6 * theory) / mib + 16, hwm_ok ? "" : " (sampled)");
    printf("    at rest 7 s after them %7.1f MiB  (%.3fx; limit 1.1x + 16 MiB = %.1f MiB)\n", after_kb * kb / mib,
           after_kb * kb / theory, (1.1 * theory) / mib + 16);
    printf("    binary step round trip: warm %.1f ms, first after the idle pause %.1f ms\n", warm * 1e3, cold * 1e3);
    bench_put(warm * 1e3, "mem.step_warm_ms");
    bench_put(cold * 1e3, "mem.step_cold_ms");
    bench_put(theory, "mem.theory_bytes");
    bench_put(base_kb * kb, "mem.base_bytes");
    bench_put(rest_kb * kb, "mem.rest_bytes");
    bench_put(peak_kb * kb, "mem.peak_bytes");
    bench_put(after_kb * kb, "mem.after_bytes");
    free(mg);
    free(back);
  }
  rc = 0;
out:
  if (rc) fprintf(stderr, "bench_service: a create failed\n");
  bench_daemon_stop(&d);
  bench_daemon_stop(&dm);
  free(jbody);
  free(g);
  curl_global_cleanup();
  bench_out_close();
  return rc;
}
