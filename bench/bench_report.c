/* bench_report: the table of ratios, from the results file of one run.
 *
 * Reads the "key<TAB>value" lines every benchmark program appended (later
 * lines win), prints one table per family with each ratio beside the target
 * of issue 6, and a closing list of targets met and missed.  Missing figures
 * (a skipped column, a benchmark that was not run) print as "-" and their
 * targets as "n/a".  Never fails the build: timings are reported, not
 * asserted.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_KEYS 1024

typedef struct kv {
  char key[96];
  char val[160];
} kv;

static kv kvs[MAX_KEYS];
static int nkv;

static const char *sval(const char *key) {
  for (int i = nkv - 1; i >= 0; i--)
    if (!strcmp(kvs[i].key, key)) return kvs[i].val;
  return NULL;
}

static double val(const char *fmt, const char *a, const char *b) {
  char key[96];
  snprintf(key, sizeof key, fmt, a, b);
  const char *s = sval(key);
  return s ? strtod(s, NULL) : NAN;
}

#define V(k) val(k, "", "")

/* Whether any figure's key starts with prefix (a section that ran). */
static int ran(const char *prefix) {
  for (int i = 0; i < nkv; i++)
    if (!strncmp(kvs[i].key, prefix, strlen(prefix))) return 1;
  return 0;
}

/* x in fmt, or "-" if it was not measured; from a small ring of buffers so
 * one printf can take several. */
static const char *num(double x, const char *fmt) {
  static char ring[16][32];
  static int k;
  if (isnan(x)) return "-";
  char *buf = ring[k++ % 16];
  snprintf(buf, sizeof ring[0], fmt, x);
  return buf;
}

/* The closing summary: one line per target. */
static int met, missed, na;
static char summary[64][200];
static int nsum;

static void target(const char *what, double got, double limit, int at_least, const char *unit) {
  const char *verdict = isnan(got) ? "n/a" : (at_least ? got >= limit : got <= limit) ? "met" : "MISSED";
  if (isnan(got)) na++;
  else if (!strcmp(verdict, "met")) met++;
  else missed++;
  if (nsum >= 64) return;
  if (isnan(got))
    snprintf(summary[nsum++], sizeof summary[0], "  %-6s %-58s %8s  (%s %g%s)", verdict, what, "-",
             at_least ? ">=" : "<=", limit, unit);
  else
    snprintf(summary[nsum++], sizeof summary[0], "  %-6s %-58s %8.3g%s (%s %g%s)", verdict, what, got, unit,
             at_least ? ">=" : "<=", limit, unit);
}

static const char *const algs[] = {"sgd",     "momentum",         "nesterov",     "adagrad", "rmsprop",
                                   "rmsprop_centered", "adam", "adam_amsgrad", "adamw"};

/* ns/element per algorithm, one thread and all, beside the bound and torch. */
static void report_kernels(void) {
  const char *tv = sval("torch.version");
  double n = V("kern.n"), threads = V("kern.threads");
  printf("\nkernels: ns/element at n=%.0f float32; bound = the same bytes in the same in-place pattern with no\n"
         "arithmetic, measured in this run (bnd 1/a: how that pattern itself scales from 1 to %.0f threads);\n"
         "all = kpool on %.0f threads; torch %s, one thread, best of foreach off/on with the\n"
         "allocator tuned (default process in the last column)\n",
         n, threads, threads, tv ? tv : "(not installed)");
  printf("  %-17s %4s %7s %7s %7s %7s %7s %8s %7s %8s %8s\n", "algorithm", "B/el", "bound", "1T", "1T/bnd", "all",
         "1T/all", "bnd 1/a", "torch", "torch/1T", "default");
  printf("  %-17s %4s %7s %7s %7s %7s %7s %8s %7s %8s %8s\n", "", "", "", "", "<=1.2", "", ">=1.7", "", "", ">=3", "");
  double worst_bound = NAN, worst_scale = NAN, worst_torch = NAN;
  const char *wb = "", *ws = "", *wt = "";
  for (size_t i = 0; i < sizeof algs / sizeof algs[0]; i++) {
    const char *a = algs[i];
    double bytes = val("kern.%s.bytes", a, ""), bound = val("kern.%s.bound1", a, "");
    double bound_all = val("kern.%s.boundall", a, "");
    double t1 = val("kern.%s.t1", a, ""), tall = val("kern.%s.tall", a, "");
    double tf0 = val("torch.%s.tuned.fe%s", a, "0"), tf1 = val("torch.%s.tuned.fe%s", a, "1");
    double d0 = val("torch.%s.default.fe%s", a, "0"), d1 = val("torch.%s.default.fe%s", a, "1");
    double torch = isnan(tf0) ? tf1 : isnan(tf1) ? tf0 : fmin(tf0, tf1);
    double dflt = isnan(d0) ? d1 : isnan(d1) ? d0 : fmin(d0, d1);
    double rb = t1 / bound, rs = t1 / tall, rt = torch / t1;
    printf("  %-17s %4s %7s %7s %7s %7s %7s %8s %7s %8s %8s\n", a, num(bytes, "%.0f"), num(bound, "%.3f"),
           num(t1, "%.3f"), num(rb, "%.2f"), num(tall, "%.3f"), num(rs, "%.2f"),
           num(bound / bound_all, "%.2f"), num(torch, "%.3f"), num(rt, "%.2f"), num(dflt, "%.3f"));
    if (!isnan(rb) && (isnan(worst_bound) || rb > worst_bound)) worst_bound = rb, wb = a;
    if (!isnan(rs) && (isnan(worst_scale) || rs < worst_scale)) worst_scale = rs, ws = a;
    if (!isnan(rt) && (isnan(worst_torch) || rt < worst_torch)) worst_torch = rt, wt = a;
  }
  printf("  bandwidth, 1 thread / all: memcpy %s / %s GB/s, STREAM triad %s / %s GB/s, in-place (Adam's\n"
         "  pattern, 28 B/el) %s / %s GB/s\n",
         num(V("bw.memcpy.t1"), "%.1f"), num(V("bw.memcpy.tall"), "%.1f"), num(V("bw.triad.t1"), "%.1f"),
         num(V("bw.triad.tall"), "%.1f"), num(V("bw.inplace2.t1"), "%.1f"),
         num(V("bw.inplace2.tall"), "%.1f"));
  char what[128];
  snprintf(what, sizeof what, "kernel 1T / bytes-moved bound, worst (%s)", wb);
  target(what, worst_bound, 1.2, 0, "x");
  snprintf(what, sizeof what, "kernel 1T / all cores, worst (%s)", ws);
  target(what, worst_scale, 1.7, 1, "x");
  snprintf(what, sizeof what, "torch tuned / kernel 1T, worst (%s)", wt);
  target(what, worst_torch, 3, 1, "x");
  double adam_t = fmin(val("torch.%s.tuned.fe%s", "adam", "0"), val("torch.%s.tuned.fe%s", "adam", "1"));
  target("torch tuned / kernel 1T, adam", adam_t / val("kern.%s.t1", "adam", ""), 3, 1, "x");
}

/* The binary step round trip against raw TCP. */
static void report_wire(void) {
  double step = V("wire.step.gbps"), tcp = V("wire.tcp.gbps");
  printf("\nwire: one %s-float binary step round trip over loopback (both directions counted)\n",
         num(V("wire.n"), "%.0f"));
  printf("  binary step %s GB/s (%s ms, server apply %s ms)   raw TCP %s GB/s (%s ms)   ratio %s  (>=0.5)\n",
         num(step, "%.2f"), num(V("wire.step.ms"), "%.1f"), num(V("wire.step.apply_ms"), "%.1f"), num(tcp, "%.2f"),
         num(V("wire.tcp.ms"), "%.1f"), num(step / tcp, "%.2f"));
  target("binary step round trip / raw loopback TCP", step / tcp, 0.5, 1, "x");
  printf("  bfloat16 step %s ms: %s x faster than raw float32 TCP  (>=1.7)\n", num(V("wire.bf16.ms"), "%.1f"),
         num(V("wire.bf16.vs_tcp"), "%.2f"));
  target("bfloat16 step round trip vs raw float32 TCP", V("wire.bf16.vs_tcp"), 1.7, 1, "x");
}

/* JSON floats per second against jansson. */
static void report_json(void) {
  double dco = V("json.decode.ours"), dcj = V("json.decode.jansson"), dcl = V("json.decode.jansson_loads");
  double eco = V("json.encode.ours"), ecj = V("json.encode.jansson"), ecd = V("json.encode.jansson_dumps");
  printf("\nJSON floats per second (whole job: text <-> float array; jansson's loads/dumps alone in brackets)\n");
  printf("  decode  ours %s M/s   jansson %s M/s (%s)   ratio %s (%s)  (>=5)\n", num(dco / 1e6, "%.1f"),
         num(dcj / 1e6, "%.2f"), num(dcl / 1e6, "%.2f"), num(dco / dcj, "%.1f"),
         num(dco / dcl, "%.1f"));
  printf("  encode  ours %s M/s   jansson %s M/s (%s)   ratio %s (%s)  (>=5)\n", num(eco / 1e6, "%.1f"),
         num(ecj / 1e6, "%.2f"), num(ecd / 1e6, "%.2f"), num(eco / ecj, "%.1f"),
         num(eco / ecd, "%.1f"));
  target("JSON decode / jansson json_loadb alone", dco / dcl, 5, 1, "x");
  target("JSON encode / jansson json_dumpb alone", eco / ecd, 5, 1, "x");
}

/* Steps per second, round latency, resident memory. */
static void report_service(void) {
  printf("\nservice (libcurl multi load generator over loopback)\n");
  printf("  async, 16 workers x 1000 floats   JSON %s steps/s   binary %s steps/s\n",
         num(V("svc.async.json.sps"), "%.0f"), num(V("svc.async.bin.sps"), "%.0f"));
  printf("  sync, 8 workers x 1000 floats     round latency p50 %s ms, p99 %s ms (%s rounds/s)\n",
         num(V("svc.sync.round_ms_p50"), "%.3f"), num(V("svc.sync.round_ms_p99"), "%.3f"),
         num(V("svc.sync.rounds_per_s"), "%.0f"));
  printf("  one client, 10^6-param Adam       JSON %s steps/s   binary %s steps/s\n",
         num(V("svc.big.json.sps"), "%.1f"), num(V("svc.big.bin.sps"), "%.1f"));
  double th = V("mem.theory_bytes"), mib = 1048576.0;
  double rest = V("mem.rest_bytes"), peak = V("mem.peak_bytes"), after = V("mem.after_bytes");
  printf("  memory, 10^7-param Adam: params+state %s MiB; at rest %s MiB (%sx); peak in binary steps %s MiB\n"
         "  (%sx); at rest after them %s MiB (%sx); limits 1.1x+16 = %s MiB, 1.6x+16 = %s MiB\n",
         num(th / mib, "%.1f"), num(rest / mib, "%.1f"), num(rest / th, "%.3f"),
         num(peak / mib, "%.1f"), num(peak / th, "%.3f"), num(after / mib, "%.1f"),
         num(after / th, "%.3f"), num(1.1 * th / mib + 16, "%.1f"), num(1.6 * th / mib + 16, "%.1f"));
  target("RSS at rest after create (MiB)", rest / mib, 1.1 * th / mib + 16, 0, "");
  target("RSS at rest after binary steps (MiB)", after / mib, 1.1 * th / mib + 16, 0, "");
  target("RSS peak during binary steps (MiB)", peak / mib, 1.6 * th / mib + 16, 0, "");
}

/* Issue 8: one 10^7-parameter step through libdescent, 1 vs 3 shards. */
static void report_shards(void) {
  double s1 = V("shards.1.gbps"), s3 = V("shards.3.gbps");
  printf("\nshards: 10^7-parameter binary step over 1 vs 3 shards on loopback\n");
  if (isnan(s1) || isnan(s3)) printf("  not measured (bench_shards failed: see its output above)\n");
  else
    printf("  1 shard %s GB/s   3 shards %s GB/s   ratio %s (all three daemons and the client share this\n"
           "  machine's cores: on separate hosts each shard moves a third of the bytes)\n",
           num(s1, "%.2f"), num(s3, "%.2f"), num(s3 / s1, "%.2f"));
}

/* Issue 15: row pushes against torch's local sparse step and the bytes bound. */
static const char *const sp_tables[] = {"t1m64", "h40d16"};
static const char *const sp_algs[] = {"sparse_adam", "adagrad"};

static double spv(const char *fmt, const char *t, const char *a) {
  char key[160];
  snprintf(key, sizeof key, fmt, t, a);
  const char *s = sval(key);
  return s ? strtod(s, NULL) : NAN;
}

static void report_sparse(void) {
  const char *sup = sval("sparse.supported");
  printf("\nsparse: 4096 random rows per step, binary push with the rows' parameters in the reply, one connection;\n"
         "t1m64 = 10^6 x 64, h40d16 = 2^40 x 16 (torch: a 10^6 x 16 stand-in, it cannot hold 2^40 rows);\n"
         "bound = the same rows' blocks moved in place by the benchmark (B/row = read g, read+write the block,\n"
         "write the reply row); torch = opt.step() alone, best of all cores / one thread, in the same rounds;\n"
         "best = torch over (tcp + bound): the most any round trip on this loopback could gain\n");
  if (sup && !strcmp(sup, "0")) {
    printf("  not measured: this daemon has no sparse tensors yet\n");
    target("sparse apply / bytes-moved bound (t1m64, held rows)", NAN, 1.5, 0, "x");
    target("torch local sparse step / round trip (t1m64)", NAN, 3, 1, "x");
    target("RSS over fixed, 10^6 rows of 2^40 / floats held", NAN, 1.3, 0, "x");
    return;
  }
  printf("  %-7s %-11s %-6s %5s %7s %8s %7s %7s %7s %7s %7s %8s %7s %8s\n", "table", "algorithm", "rows", "B/row",
         "rt ms", "rows/s", "apply", "bound", "apl/bnd", "tcp ms", "torch", "torch/rt", "best", "dense/wire");
  printf("  %-7s %-11s %-6s %5s %7s %8s %7s %7s %7s %7s %7s %8s %7s %8s\n", "", "", "", "", "", "", "", "", "<=1.5",
         "", "", ">=3", "", "");
  double worst_b[3] = {NAN, NAN, NAN}, worst_t[2] = {NAN, NAN};
  static const char *const phs[] = {"fresh", "zeroed", "held"};
  for (int t = 0; t < 2; t++)
    for (int ph = 0; ph < 3; ph++)
      for (int a = 0; a < 2; a++) {
        const char *phn = phs[ph];
        char f[96];
#define SPF(what) (snprintf(f, sizeof f, "sparse.%%s.%%s.%s." what, phn), spv(f, sp_tables[t], sp_algs[a]))
        double rt = SPF("rt_ms");
        if (isnan(rt)) continue;
        double ap = SPF("apply_ms"), ref = SPF("ref_ms"), tcp = SPF("tcp_ms"), torch = SPF("torch_ms");
#undef SPF
        if (isnan(torch)) torch = spv("torchsp.%s.%s.ms", sp_tables[t], sp_algs[a]); /* bench_sparse.py alone */
        double bpr = spv("sparse.%s.%s.bytes_per_row", sp_tables[t], sp_algs[a]);
        double dw = spv("sparse.%s.%s.dense_over_wire", sp_tables[t], sp_algs[a]);
        /* best: torch over the fastest any round trip could be here, the raw
         * TCP round trip of the same bytes plus the bytes-bound apply */
        printf("  %-7s %-11s %-6s %5s %7s %8s %7s %7s %7s %7s %7s %8s %7s %8s\n", sp_tables[t], sp_algs[a], phn,
               num(bpr, "%.0f"), num(rt, "%.3f"), num(4096 / rt * 1e3, "%.0f"), num(ap, "%.3f"), num(ref, "%.3f"),
               num(ap / ref, "%.2f"), num(tcp, "%.3f"), num(torch, "%.3f"), num(torch / rt, "%.2f"),
               num(torch / (tcp + ref), "%.2f"), num(dw, "%.3g"));
        /* the goals: held rows of the 10^6 table; new rows of the hashed
         * one, seeded (fresh) and zeros (zeroed) */
        int gb = t == 0 ? (ph == 2 ? 0 : -1) : (ph == 0 ? 1 : ph == 1 ? 2 : -1);
        if (gb >= 0 && !isnan(ap / ref) && (isnan(worst_b[gb]) || ap / ref > worst_b[gb])) worst_b[gb] = ap / ref;
        int gt = (t == 0 && ph == 2) ? 0 : (t == 1 && ph == 0) ? 1 : -1;
        if (gt >= 0 && !isnan(torch / rt) && (isnan(worst_t[gt]) || torch / rt < worst_t[gt])) worst_t[gt] = torch / rt;
      }
  target("sparse apply / bytes-moved bound, t1m64 held rows, worst", worst_b[0], 1.5, 0, "x");
  target("sparse apply / bytes bound, h40d16 new rows (normal init)", worst_b[1], 1.5, 0, "x");
  target("sparse apply / bytes bound, h40d16 new rows (zeros init)", worst_b[2], 1.5, 0, "x");
  target("torch local sparse step / round trip, t1m64 held, worst", worst_t[0], 3, 1, "x");
  target("torch local sparse step / round trip, h40d16, worst", worst_t[1], 3, 1, "x");
  double held = V("spmem.held_bytes"), fixed = V("spmem.fixed_bytes"), after = V("spmem.after_bytes");
  double mib = 1048576.0;
  printf("  memory, 2^40 x 16 sparse_adam, %s rows touched: floats held %s MiB; daemon alone %s MiB, with the\n"
         "  empty instance %s MiB (fixed); after touching %s MiB = fixed + %sx held (<=1.3); peak %s MiB\n",
         num(V("spmem.rows"), "%.0f"), num(held / mib, "%.1f"), num(V("spmem.base_bytes") / mib, "%.1f"),
         num(fixed / mib, "%.1f"), num(after / mib, "%.1f"), num((after - fixed) / held, "%.3f"),
         num(V("spmem.peak_bytes") / mib, "%.1f"));
  target("RSS over fixed, rows of a 2^40 table / floats held", (after - fixed) / held, 1.3, 0, "x");
}

/* Issue 16: pushes per second in each durability mode. */
static void report_durability(void) {
  static const char *const modes[] = {"snapshot", "log", "replicas"};
  static const char *const sizes[] = {"1000", "100000", "10000000"};
  printf("\ndurability: Adam, %s async workers, binary pushes (?params=none); pushes/s (p50 / p99 ms); the\n"
         "same run's disk: %s MB/s fsynced writes, %s fdatasyncs/s; loopback TCP %s GB/s one way\n",
         num(V("dur.workers"), "%.0f"), num(V("dur.disk.mbps"), "%.0f"), num(V("dur.disk.fsyncs_per_s"), "%.0f"),
         num(V("dur.lo.gbps"), "%.2f"));
  printf("  %-9s %28s %28s %28s\n", "mode", "10^3", "10^5", "10^7");
  for (int m = 0; m < 3; m++) {
    char cells[3][64];
    for (int z = 0; z < 3; z++) {
      char k[96];
      snprintf(k, sizeof k, "dur.%s.%s.pps", modes[m], sizes[z]);
      double pps = V(k);
      snprintf(k, sizeof k, "dur.%s.%s.p50_ms", modes[m], sizes[z]);
      double p50 = V(k);
      snprintf(k, sizeof k, "dur.%s.%s.p99_ms", modes[m], sizes[z]);
      double p99 = V(k);
      snprintf(cells[z], sizeof cells[z], "%s (%s / %s)", num(pps, "%.1f"), num(p50, "%.2f"), num(p99, "%.1f"));
    }
    printf("  %-9s %28s %28s %28s\n", modes[m], cells[0], cells[1], cells[2]);
  }
  double s3 = V("dur.snapshot.1000.pps"), l3 = V("dur.log.1000.pps");
  double s5 = V("dur.snapshot.100000.pps"), l5 = V("dur.log.100000.pps"), r5 = V("dur.replicas.100000.pps");
  double l7 = V("dur.log.10000000.pps"), r7 = V("dur.replicas.10000000.pps"), s7 = V("dur.snapshot.10000000.pps");
  printf("  10^7: snapshot %s MB/s of gradients; log %s MB/s against the disk's %s MB/s; replicas %s MB/s\n"
         "  (the leader sends each entry to two followers: %s MB/s on loopback, against %s MB/s)\n",
         num(s7 * 40, "%.0f"), num(l7 * 40, "%.0f"), num(V("dur.disk.mbps"), "%.0f"), num(r7 * 40, "%.0f"),
         num(r7 * 80, "%.0f"), num(V("dur.lo.gbps") * 1e3, "%.0f"));
  target("log / snapshot pushes/s, 10^3 params", l3 / s3, 0.7, 1, "x");
  target("log / snapshot pushes/s, 10^5 params", l5 / s5, 0.7, 1, "x");
  target("three replicas / snapshot pushes/s, 10^5 params", r5 / s5, 0.4, 1, "x");
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: bench_report RESULTS.tsv\n");
    return 2;
  }
  FILE *f = fopen(argv[1], "r");
  if (!f) {
    fprintf(stderr, "bench_report: cannot read %s\n", argv[1]);
    return 0;
  }
  char line[512];
  while (fgets(line, sizeof line, f) && nkv < MAX_KEYS) {
    char *tab = strchr(line, '\t');
    if (!tab) continue;
    *tab = 0;
    snprintf(kvs[nkv].key, sizeof kvs[nkv].key, "%.95s", line);
    snprintf(kvs[nkv].val, sizeof kvs[nkv].val, "%.159s", tab + 1);
    kvs[nkv].val[strcspn(kvs[nkv].val, "\n")] = 0;
    nkv++;
  }
  fclose(f);
  const char *model = sval("machine.model"), *flags = sval("machine.flags");
  printf("\n==== descent benchmarks: ratios measured side by side in one run ====\n");
  printf("machine: %s, %s cores, %s\n", model ? model : "?", sval("machine.cores") ? sval("machine.cores") : "?",
         flags ? flags : "?");

  if (ran("kern.")) report_kernels();
  if (ran("wire.")) report_wire();
  if (ran("json.")) report_json();
  if (ran("svc.") || ran("mem.")) report_service();
  if (ran("shards.")) report_shards();
  if (ran("sparse.")) report_sparse();
  if (ran("dur.")) report_durability();

  printf("\ntargets (issues 6, 15, 16): %d met, %d missed, %d not measured\n", met, missed, na);
  for (int i = 0; i < nsum; i++) printf("%s\n", summary[i]);
  return 0;
}
