/* bench_shards: issue 8's figure: one 10^7-parameter Adam binary step
 * (gradient in, parameters out) through libdescent, on one daemon and
 * sharded over three daemons on loopback, best of N round trips each, as
 * GB/s counting both directions (2 * 4 * 10^7 bytes per step).
 *
 * The three daemons share this machine's cores with each other and with the
 * client, so on a 2-core VM the sharded figure shows the fan-out's cost, not
 * the gain three hosts would give; the doc says so.  Daemons are started
 * and stopped by pid (bench/daemon.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "daemon.h"
#include "descent.h"

#define N 10000000u

static double run(const char *url, float *g, float *p, int rounds) {
  descent_error e;
  descent *d = descent_open(url, NULL, &e);
  if (!d) {
    fprintf(stderr, "bench_shards: open %s: %s\n", url, e.message);
    return -1;
  }
  char spec[256];
  snprintf(spec, sizeof spec,
           "{\"name\":\"shardbench\",\"algorithm\":\"adam\",\"tensors\":[{\"name\":\"w\",\"shape\":[%u]}]}", N);
  double best = -1;
  if (descent_create(d, spec, NULL, &e) < 0) {
    fprintf(stderr, "bench_shards: create: %s\n", e.message);
    goto out;
  }
  uint64_t step;
  for (int r = 0; r <= rounds; r++) { /* round 0 warms the buffers up */
    double t = bench_now();
    if (descent_push(d, "shardbench", g, N, NULL, p, &step, &e) < 0) {
      fprintf(stderr, "bench_shards: push: %s\n", e.message);
      best = -1;
      goto out;
    }
    t = bench_now() - t;
    if (r > 0 && (best < 0 || t < best)) best = t;
  }
out:
  descent_close(d);
  return best;
}

int main(int argc, char **argv) {
  bench_out_open(bench_arg(argc, argv, "--out", NULL));
  const char *bin = bench_arg(argc, argv, "--daemon", "build/bin/descentd");
  int rounds = atoi(bench_arg(argc, argv, "--rounds", "5"));
  float *g = malloc(N * sizeof(float)), *p = malloc(N * sizeof(float));
  if (!g || !p) return 1;
  bench_fill(g, N, 7, 1e-3f, 0);
  double gbps[2] = {0, 0};
  int ok = 1;
  for (int k = 0; k < 2 && ok; k++) {
    int shards = k ? 3 : 1;
    bench_daemon ds[3];
    char urls[256] = "";
    for (int i = 0; i < shards; i++) {
      const char *extra[] = {"--max-body", "1G", NULL};
      if (bench_daemon_start(&ds[i], bin, extra) < 0) {
        fprintf(stderr, "bench_shards: cannot start %s\n", bin);
        for (int j = 0; j < i; j++) bench_daemon_stop(&ds[j]);
        ok = 0;
        break;
      }
      if (i) strcat(urls, ",");
      strcat(urls, ds[i].base);
    }
    if (!ok) break;
    double t = run(urls, g, p, rounds);
    for (int i = 0; i < shards; i++) bench_daemon_stop(&ds[i]);
    if (t <= 0) {
      ok = 0;
      break;
    }
    gbps[k] = 2.0 * 4.0 * N / t / 1e9;
    printf("shards: %d daemon%s: best %.1f ms per 10^7-float Adam step round trip, %.2f GB/s\n", shards,
           shards > 1 ? "s" : "", t * 1e3, gbps[k]);
  }
  if (ok) {
    bench_put(gbps[0], "shards.1.gbps");
    bench_put(gbps[1], "shards.3.gbps");
  }
  bench_out_close();
  free(g);
  free(p);
  return ok ? 0 : 1;
}
