/* bench_wire: one binary step round trip against raw loopback TCP.
 *
 * A real descentd holds an Adam instance of n parameters (default 10^7).  A
 * round trip sends the n-float gradient as an application/octet-stream
 * POST .../step and reads the n-float parameters back; the baseline, in the
 * same rounds, sends as many bytes to a peer process over plain loopback TCP
 * and reads as many back (the peer only streams them through a small
 * buffer).  The client side is the same blocking send/recv loops on a
 * kept-alive connection, to and from the same big buffers, so the ratio is
 * what the daemon (HTTP, receiving the body, the finite and norm scan, the
 * kernel, the reply) costs over moving the bytes.
 * GB/s counts both directions (2 * 4n bytes per round trip).
 * The same step with bfloat16 bodies both ways (dtype=bfloat16: half the
 * bytes, widened and narrowed by the daemon) is timed in the same rounds,
 * against the raw TCP moving the float32 bytes.
 */
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_half.h"
#include "common.h"
#include "daemon.h"
#include "mem.h"

/* Where the raw TCP baseline runs: loopback throughput depends on whether
 * both ends share a CPU, so each round tries both placements and the
 * baseline is the best of them (the daemon is never pinned). */
static cpu_set_t all_cpus;

/* Pins pid (0: the caller) to the k-th allowed CPU, or unpins it (k < 0). */
static void pin_to(pid_t pid, int k) {
  cpu_set_t one;
  if (k < 0 || CPU_COUNT(&all_cpus) < 2) {
    sched_setaffinity(pid, sizeof all_cpus, &all_cpus);
    return;
  }
  for (int c = 0; c < CPU_SETSIZE; c++)
    if (CPU_ISSET(c, &all_cpus) && k-- == 0) {
      CPU_ZERO(&one);
      CPU_SET(c, &one);
      sched_setaffinity(pid, sizeof one, &one);
      return;
    }
}

int main(int argc, char **argv) {
  const char *bin = bench_arg(argc, argv, "--daemon", "build/bin/descentd");
  size_t n = (size_t)atof(bench_arg(argc, argv, "--n", "1e7"));
  int rounds = atoi(bench_arg(argc, argv, "--rounds", "20"));
  bench_out_open(bench_arg(argc, argv, "--out", NULL));
  size_t bytes = n * sizeof(float);
  float *grad = mem_alloc_floats(n), *back = mem_alloc_floats(n);
  uint16_t *hgrad = mem_alloc_big(n * 2 + 1), *hback = mem_alloc_big(n * 2 + 1);
  if (!grad || !back || !hgrad || !hback) return 1;
  bench_fill(grad, n, 7, 1e-3f, 0.0f);
  codec_half_narrow(DTYPE_BFLOAT16, grad, hgrad, n);

  bench_daemon d;
  if (bench_daemon_start(&d, bin, NULL) < 0) { /* unpinned: the daemon as it runs anywhere */
    fprintf(stderr, "bench_wire: cannot start %s\n", bin);
    return 1;
  }
  int epid_port = 0;
  sched_getaffinity(0, sizeof all_cpus, &all_cpus);
  pid_t epid = bench_echo_start(&epid_port);
  int hs = bench_connect(d.port), es = epid > 0 ? bench_connect(epid_port) : -1;
  char body[512];
  int bl = snprintf(body, sizeof body,
                    "{\"name\":\"wire\",\"algorithm\":\"adam\",\"tensors\":[{\"name\":\"w\",\"shape\":[%zu],"
                    "\"init\":\"zeros\"}]}",
                    n);
  int st = hs < 0 ? -1
                  : bench_http(hs, "POST /v1/optimizers HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n",
                               body, (size_t)bl, NULL, 0, NULL);
  if (st != 201 && st != 200) {
    fprintf(stderr, "bench_wire: create answered %d\n", st);
    goto out;
  }
  static const char step_head[] = "POST /v1/optimizers/wire/step HTTP/1.1\r\nHost: b\r\n"
                                   "Content-Type: application/octet-stream\r\nAccept: application/octet-stream\r\n";
  static const char half_head[] = "POST /v1/optimizers/wire/step HTTP/1.1\r\nHost: b\r\n"
                                   "Content-Type: application/octet-stream; dtype=bfloat16\r\n"
                                   "Accept: application/octet-stream; dtype=bfloat16\r\n";
  double best_http = 1e30, best_tcp = 1e30, best_half = 1e30, apply_ms = -1, decode_ms = -1, half_decode_ms = -1;
  for (int r = 0; r < rounds + 1; r++) {
    double tcp = 1e30;
    for (int placement = 0; placement < 2; placement++) { /* both ends free; on two different CPUs */
      pin_to(0, placement ? 0 : -1);
      pin_to(epid, placement ? 1 : -1);
      double t0 = bench_now();
      if (bench_tcp_round(es, grad, back, bytes) < 0) {
        fprintf(stderr, "bench_wire: raw TCP round trip failed\n");
        goto out;
      }
      tcp = bench_min(tcp, bench_now() - t0);
    }
    pin_to(0, -1);
    double t1 = bench_now();
    size_t got = 0;
    char rh[2048];
    st = bench_http_h(hs, step_head, grad, bytes, back, bytes, &got, rh, sizeof rh);
    double t2 = bench_now();
    if (st != 200 || got != bytes) {
      fprintf(stderr, "bench_wire: step answered %d with %zu bytes\n", st, got);
      goto out;
    }
    double t3 = bench_now();
    size_t hgot = 0;
    char hh[2048];
    st = bench_http_h(hs, half_head, hgrad, n * 2, hback, n * 2, &hgot, hh, sizeof hh);
    double t4 = bench_now();
    if (st != 200 || hgot != n * 2) {
      fprintf(stderr, "bench_wire: bfloat16 step answered %d with %zu bytes\n", st, hgot);
      goto out;
    }
    if (r == 0) continue; /* the first step allocates pooled buffers */
    if (t4 - t3 < best_half) {
      best_half = t4 - t3;
      half_decode_ms = bench_server_timing(hh, "decode");
    }
    best_tcp = bench_min(best_tcp, tcp);
    if (t2 - t1 < best_http) {
      best_http = t2 - t1;
      apply_ms = bench_server_timing(rh, "apply");
      decode_ms = bench_server_timing(rh, "decode");
    }
  }
  {
    double gb = 2.0 * (double)bytes * 1e-9;
    double g_http = gb / best_http, g_tcp = gb / best_tcp;
    printf("wire: %zu-float round trip (%.0f MB each way), best of %d\n", n, bytes / 1e6, rounds);
    printf("  raw loopback TCP        %8.2f ms  %6.2f GB/s\n", best_tcp * 1e3, g_tcp);
    printf("  binary step (HTTP)      %8.2f ms  %6.2f GB/s  (%.0f%% of TCP; server: decode %.2f ms, apply %.2f ms)\n",
           best_http * 1e3, g_http, 100 * g_http / g_tcp, decode_ms, apply_ms);
    printf("  bfloat16 step (HTTP)    %8.2f ms  %6.2f GB/s of float32 values  (%.2fx faster than raw float32 TCP; "
           "server decode %.2f ms)\n",
           best_half * 1e3, gb / best_half, best_tcp / best_half, half_decode_ms);
    bench_put(best_half * 1e3, "wire.bf16.ms");
    bench_put(best_tcp / best_half, "wire.bf16.vs_tcp");
    bench_put((double)n, "wire.n");
    bench_put(g_tcp, "wire.tcp.gbps");
    bench_put(g_http, "wire.step.gbps");
    bench_put(best_tcp * 1e3, "wire.tcp.ms");
    bench_put(best_http * 1e3, "wire.step.ms");
    bench_put(apply_ms, "wire.step.apply_ms");
    bench_put(decode_ms, "wire.step.decode_ms");
  }
out:
  if (hs >= 0) close(hs);
  if (es >= 0) close(es);
  if (epid > 0) {
    kill(epid, SIGTERM);
    waitpid(epid, NULL, 0);
  }
  bench_daemon_stop(&d);
  bench_out_close();
  return 0;
}
