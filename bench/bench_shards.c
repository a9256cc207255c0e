/* bench_shards: HOOK for issue 8: a 10^7-parameter binary step over 1 vs 3
 * shards on loopback.
 *
 * The sharding client (libdescent spreading one logical instance over
 * several daemons, push/pull fanned out with libcurl multi) is being built
 * separately.  Until client/descent.h defines DESCENT_HAVE_SHARDS, this
 * program prints that the figure is skipped and records nothing, so
 * `make bench` and bench_report skip the row cleanly.
 *
 * TO FILL IN when the client lands (everything else is in place: the daemon
 * helpers in daemon.h, the results keys bench_report reads):
 *   1. start one daemon, then three (bench_daemon_start / _stop);
 *   2. through the sharding client, create a 10^7-parameter Adam instance
 *      over [one URL] and over [three URLs];
 *   3. time best-of-N binary push round trips (gradient in, parameters
 *      out) on each, after one warm-up step;
 *   4. bench_put(GB/s, "shards.1.gbps") and bench_put(GB/s, "shards.3.gbps"),
 *      GB/s counting both directions (2 * 4 * 10^7 bytes per step).
 */
#include <stdio.h>

#include "common.h"

#if defined(__has_include)
#if __has_include("descent.h")
#include "descent.h"
#endif
#endif

int main(int argc, char **argv) {
  bench_out_open(bench_arg(argc, argv, "--out", NULL));
#ifdef DESCENT_HAVE_SHARDS
  printf("shards: the sharding client exists; this benchmark still has to be written against it (see the\n"
         "        HOOK comment at the top of bench/bench_shards.c)\n");
#else
  printf("shards: skipped (libdescent has no sharding client yet; HOOK in bench/bench_shards.c)\n");
#endif
  bench_put(1, "shards.skipped"); /* remove once the figures above are recorded */
  bench_out_close();
  return 0;
}
