/* metrics: writing the exposition from the live counters. */
#include "metrics.h"

#include <math.h>
#include <stdlib.h>
#include <time.h>

#include "http_routes.h"
#include "http_server.h"
#include "journal.h"
#include "mem.h"
#include "optim.h"
#include "persist.h"
#include "registry.h"

static double wall(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void log_metrics(jbuf *b, app *a);

static void head(jbuf *b, const char *name, const char *type, const char *help) {
  jbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A sample value: Prometheus writes NaN and +Inf by name. */
static void val(jbuf *b, double v) {
  if (isnan(v)) jbuf_puts(b, " NaN\n");
  else if (isinf(v)) jbuf_puts(b, v > 0 ? " +Inf\n" : " -Inf\n");
  else jbuf_printf(b, " %.17g\n", v);
}

typedef struct snap {
  instance *in;
  struct instance_stats st;
  uint64_t step;
  double lr;
  worker_info *w;
  size_t nw;
} snap;

static void process_metrics(app *a, http_server *hs, jbuf *b) {
  head(b, "descent_build_info", "gauge", "Version and kernel instruction set of this daemon.");
  jbuf_printf(b, "descent_build_info{version=\"%s\",kernels=\"%s\"} 1\n", DESCENT_VERSION, optim_isa());
  head(b, "descent_start_time_seconds", "gauge", "Unix time the daemon started.");
  jbuf_puts(b, "descent_start_time_seconds");
  val(b, a->started);
  head(b, "descent_uptime_seconds", "gauge", "Seconds since the daemon started.");
  jbuf_puts(b, "descent_uptime_seconds");
  val(b, wall() - a->started);
  head(b, "descent_instances", "gauge", "Optimizer instances held.");
  jbuf_printf(b, "descent_instances %zu\n", registry_count(a->reg));
  head(b, "descent_memory_floats", "gauge", "Floats held over all instances (parameters and state), against --max-params.");
  jbuf_printf(b, "descent_memory_floats %llu\n", (unsigned long long)registry_floats(a->reg));
  head(b, "descent_memory_floats_limit", "gauge", "The --max-params quota.");
  jbuf_printf(b, "descent_memory_floats_limit %ld\n", a->cfg->max_params);
  if (hs) {
    head(b, "descent_http_connections", "gauge", "Open HTTP connections.");
    jbuf_printf(b, "descent_http_connections %u\n", http_server_connections(hs));
    head(b, "descent_http_waiting_requests", "gauge", "Requests suspended in a sync round or a long-poll.");
    jbuf_printf(b, "descent_http_waiting_requests %zu\n", http_server_suspended(hs));
    const unsigned *statuses;
    size_t ns, nr = routes_count();
    head(b, "descent_http_body_bytes", "gauge", "Memory the bodies of requests in flight hold, against --max-body-memory.");
    jbuf_printf(b, "descent_http_body_bytes %zu\n", http_server_body_bytes(hs));
    head(b, "descent_http_body_bytes_limit", "gauge", "The --max-body-memory budget.");
    jbuf_printf(b, "descent_http_body_bytes_limit %zu\n", http_server_body_limit(hs));
    uint64_t *counts = mem_xmalloc((nr + 1) * HTTP_STATUS_SLOTS * sizeof *counts);
    {
      http_server_counts(hs, &statuses, &ns, counts);
      head(b, "descent_http_requests_total", "counter", "HTTP requests answered, by route and status.");
      for (size_t r = 0; r <= nr; r++)
        for (size_t k = 0; k < ns; k++) {
          uint64_t c = counts[r * ns + k];
          if (!c) continue;
          const route *rt = routes_at(r);
          char code[16];
          if (statuses[k]) snprintf(code, sizeof code, "%u", statuses[k]);
          else snprintf(code, sizeof code, "other");
          jbuf_printf(b, "descent_http_requests_total{method=\"%s\",route=\"%s\",code=\"%s\"} %llu\n",
                      rt ? rt->method : "", rt ? rt->path : "unmatched", code, (unsigned long long)c);
        }
      free(counts);
    }
  }
  if (a->ps) {
    persist_stats ps;
    persist_get_stats(a->ps, &ps);
    head(b, "descent_snapshots_total", "counter", "Snapshot files written.");
    jbuf_printf(b, "descent_snapshots_total %llu\n", (unsigned long long)ps.written);
    head(b, "descent_snapshot_failures_total", "counter", "Snapshot writes that failed.");
    jbuf_printf(b, "descent_snapshot_failures_total %llu\n", (unsigned long long)ps.failed);
    head(b, "descent_snapshot_last_timestamp_seconds", "gauge", "Unix time of the last snapshot written (0: none yet).");
    jbuf_puts(b, "descent_snapshot_last_timestamp_seconds");
    val(b, ps.last_time);
    head(b, "descent_snapshot_age_seconds", "gauge", "Seconds since the last snapshot was written (NaN: none yet).");
    jbuf_puts(b, "descent_snapshot_age_seconds");
    val(b, ps.last_time > 0 ? wall() - ps.last_time : NAN);
    head(b, "descent_snapshot_duration_seconds", "gauge", "How long the last snapshot took to write.");
    jbuf_puts(b, "descent_snapshot_duration_seconds");
    val(b, ps.last_duration);
  }
  if (a->jr) log_metrics(b, a);
}

/* --durability log: the journal's counters. */
static void log_metrics(jbuf *b, app *a) {
  journal_stats st;
  journal_get_stats(a->jr, &st);
  head(b, "descent_log_entries_total", "counter", "Changes made durable in the log (--durability log).");
  jbuf_printf(b, "descent_log_entries_total %llu\n", (unsigned long long)st.entries);
  head(b, "descent_log_batches_total", "counter", "Log writes (group commits).");
  jbuf_printf(b, "descent_log_batches_total %llu\n", (unsigned long long)st.batches);
  head(b, "descent_log_fsyncs_total", "counter", "fdatasync calls of the log.");
  jbuf_printf(b, "descent_log_fsyncs_total %llu\n", (unsigned long long)st.fsyncs);
  head(b, "descent_log_bytes_total", "counter", "Bytes appended to the log.");
  jbuf_printf(b, "descent_log_bytes_total %llu\n", (unsigned long long)st.bytes);
  head(b, "descent_log_failures_total", "counter", "Changes refused because their batch could not be written.");
  jbuf_printf(b, "descent_log_failures_total %llu\n", (unsigned long long)st.failed);
  head(b, "descent_log_replayed_total", "counter", "Log entries applied at start-up.");
  jbuf_printf(b, "descent_log_replayed_total %llu\n", (unsigned long long)st.replayed);
}

/* A consistent copy of each instance's figures, each part taken under the
 * instance's own lock (nothing here reads an instance's fields itself). */
static size_t snaps_take(app *a, instance ***all, snap **out) {
  size_t n = registry_list(a->reg, all);
  snap *s = mem_xcalloc(n ? n : 1, sizeof *s);
  for (size_t i = 0; i < n; i++) {
    instance *in = (*all)[i];
    s[i].in = in;
    instance_stats_copy(in, &s[i].st, &s[i].step);
    s[i].lr = instance_lr(in);
    s[i].nw = instance_workers_copy(in, &s[i].w, &s[i].step);
  }
  *out = s;
  return n;
}

static void snaps_free(instance **all, snap *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free(s[i].w);
    instance_unref(all[i]);
  }
  free(s);
  free(all);
}

#define EACH for (size_t i = 0; i < n; i++)
#define L(i) instance_name(s[i].in)

static void instance_counters(jbuf *b, const snap *s, size_t n) {
  head(b, "descent_instance_info", "gauge", "One series per instance, with its algorithm and mode.");
  EACH jbuf_printf(b, "descent_instance_info{instance=\"%s\",algorithm=\"%s\",mode=\"%s\"} 1\n", L(i),
                   optim_alg_name(instance_layout_of(s[i].in)->alg),
                   instance_layout_of(s[i].in)->mode == MODE_SYNC ? "sync" : "async");
  head(b, "descent_steps_total", "counter", "Optimizer steps applied.");
  EACH jbuf_printf(b, "descent_steps_total{instance=\"%s\"} %llu\n", L(i), (unsigned long long)s[i].st.steps);
  head(b, "descent_step", "gauge", "The instance's current step.");
  EACH jbuf_printf(b, "descent_step{instance=\"%s\"} %llu\n", L(i), (unsigned long long)s[i].step);
  head(b, "descent_pushes_total", "counter", "Gradient pushes received (applied, joined a round, or refused).");
  EACH jbuf_printf(b, "descent_pushes_total{instance=\"%s\"} %llu\n", L(i), (unsigned long long)s[i].st.pushes);
  head(b, "descent_pushes_rejected_total", "counter", "Pushes refused, by reason (the error code).");
  EACH for (int c = 1; c < E__COUNT; c++) if (s[i].st.rejected[c])
      jbuf_printf(b, "descent_pushes_rejected_total{instance=\"%s\",reason=\"%s\"} %llu\n", L(i), derr_name(c),
                  (unsigned long long)s[i].st.rejected[c]);
}

static void instance_timing(jbuf *b, const snap *s, size_t n) {
  head(b, "descent_step_apply_seconds", "histogram", "Time to apply one optimizer step (under the instance lock).");
  EACH {
    uint64_t cum = 0;
    /* the last bucket holds the steps slower than every bound: only +Inf counts it */
    for (int k = 0; k < INSTANCE_LATENCY_BUCKETS - 1; k++) {
      cum += s[i].st.latency_buckets[k];
      jbuf_printf(b, "descent_step_apply_seconds_bucket{instance=\"%s\",le=\"%.6g\"} %llu\n", L(i),
                  (double)(1u << k) * 1e-6, (unsigned long long)cum);
    }
    jbuf_printf(b, "descent_step_apply_seconds_bucket{instance=\"%s\",le=\"+Inf\"} %llu\n", L(i),
                (unsigned long long)s[i].st.steps);
    jbuf_printf(b, "descent_step_apply_seconds_sum{instance=\"%s\"}", L(i));
    val(b, (double)s[i].st.apply_ns_total * 1e-9);
    jbuf_printf(b, "descent_step_apply_seconds_count{instance=\"%s\"} %llu\n", L(i), (unsigned long long)s[i].st.steps);
  }
  head(b, "descent_step_phase_seconds_total", "counter",
       "Time spent per phase of step requests, as in Server-Timing: decode, apply, encode.");
  EACH {
    jbuf_printf(b, "descent_step_phase_seconds_total{instance=\"%s\",phase=\"decode\"}", L(i));
    val(b, (double)s[i].st.decode_ns_total * 1e-9);
    jbuf_printf(b, "descent_step_phase_seconds_total{instance=\"%s\",phase=\"apply\"}", L(i));
    val(b, (double)s[i].st.apply_ns_total * 1e-9);
    jbuf_printf(b, "descent_step_phase_seconds_total{instance=\"%s\",phase=\"encode\"}", L(i));
    val(b, (double)s[i].st.encode_ns_total * 1e-9);
  }
}

static void instance_gauges(jbuf *b, const snap *s, size_t n) {
  head(b, "descent_loss", "gauge", "The last loss reported by workers (NaN: none yet).");
  EACH {
    jbuf_printf(b, "descent_loss{instance=\"%s\"}", L(i));
    val(b, s[i].st.last_loss);
  }
  head(b, "descent_grad_norm", "gauge", "Global L2 norm of the last applied gradient (NaN: none yet).");
  EACH {
    jbuf_printf(b, "descent_grad_norm{instance=\"%s\"}", L(i));
    val(b, s[i].st.last_grad_norm);
  }
  head(b, "descent_learning_rate", "gauge", "The lr the next step will use (schedule applied).");
  EACH {
    jbuf_printf(b, "descent_learning_rate{instance=\"%s\"}", L(i));
    val(b, s[i].lr);
  }
  head(b, "descent_parameters", "gauge", "Parameters held by the instance (dense tensors; rows: descent_rows_held).");
  EACH jbuf_printf(b, "descent_parameters{instance=\"%s\"} %zu\n", L(i), instance_layout_of(s[i].in)->n);
}

/* Sparse tensors: rows held by each (read under the instance lock, one
 * tensor at a time) and the rows the last step updated. */
static void rows_series(jbuf *b, const snap *s, size_t n) {
  head(b, "descent_rows_held", "gauge", "Rows a sparse tensor holds (touched at least once, or given at create).");
  EACH {
    const instance_layout *l = instance_layout_of(s[i].in);
    for (size_t t = 0; t < l->ntensors; t++)
      if (l->tensors[t].sparse)
        jbuf_printf(b, "descent_rows_held{instance=\"%s\",tensor=\"%s\"} %llu\n", L(i), l->tensors[t].name,
                    (unsigned long long)instance_rows_held(s[i].in, (int)t));
  }
  head(b, "descent_rows_touched", "gauge", "Distinct rows of sparse tensors the last step updated.");
  EACH {
    const instance_layout *l = instance_layout_of(s[i].in);
    bool sparse = false;
    for (size_t t = 0; t < l->ntensors; t++) sparse |= l->tensors[t].sparse;
    if (sparse)
      jbuf_printf(b, "descent_rows_touched{instance=\"%s\"} %llu\n", L(i), (unsigned long long)s[i].st.rows_touched);
  }
}

static void worker_series(jbuf *b, const snap *s, size_t n) {
  head(b, "descent_workers", "gauge", "Workers seen, by lease state.");
  EACH {
    size_t live = 0;
    for (size_t k = 0; k < s[i].nw; k++) live += !s[i].w[k].dropped;
    jbuf_printf(b, "descent_workers{instance=\"%s\",lease=\"live\"} %zu\n", L(i), live);
    jbuf_printf(b, "descent_workers{instance=\"%s\",lease=\"expired\"} %zu\n", L(i), s[i].nw - live);
  }
  head(b, "descent_worker_pushes_total", "counter", "Pushes accepted from each worker.");
  EACH for (size_t k = 0; k < s[i].nw; k++)
      jbuf_printf(b, "descent_worker_pushes_total{instance=\"%s\",worker=\"%s\"} %llu\n", L(i), s[i].w[k].name,
                  (unsigned long long)s[i].w[k].pushes);
  head(b, "descent_worker_rejected_total", "counter", "Pushes refused from each worker.");
  EACH for (size_t k = 0; k < s[i].nw; k++)
      jbuf_printf(b, "descent_worker_rejected_total{instance=\"%s\",worker=\"%s\"} %llu\n", L(i), s[i].w[k].name,
                  (unsigned long long)s[i].w[k].rejected);
  head(b, "descent_worker_last_push_timestamp_seconds", "gauge", "Unix time of each worker's last accepted push.");
  EACH for (size_t k = 0; k < s[i].nw; k++) {
      jbuf_printf(b, "descent_worker_last_push_timestamp_seconds{instance=\"%s\",worker=\"%s\"}", L(i), s[i].w[k].name);
      val(b, s[i].w[k].last_push_time > 0 ? s[i].w[k].last_push_time : NAN);
    }
  head(b, "descent_worker_staleness_steps", "gauge", "How many steps old each worker's last gradient was when it arrived.");
  EACH for (size_t k = 0; k < s[i].nw; k++)
      jbuf_printf(b, "descent_worker_staleness_steps{instance=\"%s\",worker=\"%s\"} %llu\n", L(i), s[i].w[k].name,
                  (unsigned long long)s[i].w[k].staleness);
}

#undef EACH
#undef L

void metrics_write(app *a, http_server *hs, jbuf *b) {
  process_metrics(a, hs, b);
  instance **all;
  snap *s;
  size_t n = snaps_take(a, &all, &s);
  instance_counters(b, s, n);
  instance_timing(b, s, n);
  instance_gauges(b, s, n);
  rows_series(b, s, n);
  worker_series(b, s, n);
  snaps_free(all, s, n);
}
