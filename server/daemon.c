/* daemon: wiring the modules together around the libuv loop: start-up,
 * periodic snapshots (on a libuv pool thread), idle-buffer trimming and the
 * graceful shutdown.  Owns the app (every module's handle) and the loop's
 * handles, all freed at the end of daemon_run.  Never writes a
 * file on the loop thread while serving: periodic snapshots go to the pool;
 * only the final ones, once the HTTP server has stopped, block it.  Runs on
 * the main thread, which is the loop thread; only snap_work runs elsewhere
 * (a pool thread).  See daemon.h. */
#include "daemon.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <uv.h>

#include "app.h"
#include "http_cluster.h"
#include "http_server.h"
#include "journal.h"
#include "log.h"
#include "mem.h"
#include "persist.h"
#include "replica.h"

#define DRAIN_MS 10000
/* Pooled buffers unused this long go back to the system (checked every
 * POOL_TRIM_MS): steady traffic keeps its buffers warm, an idle daemon
 * shrinks to its instances' own memory. */
#define POOL_IDLE_MS 5000
#define POOL_TRIM_MS 1000

typedef struct daemon_state {
  app a;
  uv_signal_t sigint, sigterm;
  uv_timer_t snap_timer, drain_timer, pool_timer;
  uv_work_t snap_work;
  bool snap_busy, stopping, drained, handles;
  int exit_code; /* of a run that got as far as the loop */
  uint64_t drain_deadline;
  atomic_uint_fast64_t incarnations;
} daemon_state;

static double wall(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void raise_fd_limit(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

/* ---- periodic snapshots (a pool thread does the writing) ---------------------- */

static void snap_work(uv_work_t *w) {
  daemon_state *d = w->data;
  int n = persist_snapshot_changed(d->a.ps, d->a.reg, NULL, NULL);
  if (n) log_debug("snapshots written", "count=%d", n);
}

static void snap_done(uv_work_t *w, int status) {
  (void)status;
  daemon_state *d = w->data;
  d->snap_busy = false;
}

static void on_snap_timer(uv_timer_t *t) {
  daemon_state *d = t->data;
  if (d->snap_busy || d->stopping) return;
  d->snap_busy = true;
  d->snap_work.data = d;
  uv_queue_work(d->a.loop, &d->snap_work, snap_work, snap_done);
}

static void on_pool_timer(uv_timer_t *t) {
  daemon_state *d = t->data;
  size_t freed = bufpool_trim(d->a.pool, POOL_IDLE_MS);
  if (freed) log_debug("idle buffers released", "bytes=%zu", freed);
}

/* ---- shutdown ---------------------------------------------------------------------- */

/* The last snapshots of a clean stop, retried for --final-snapshot-timeout
 * seconds (a full disk may free up); each instance still unwritten is
 * named in the log, and the exit status says so (DAEMON_EXIT_SNAPSHOT). */
static void final_snapshots(daemon_state *d) {
  uint64_t deadline = timers_now_ms() + (uint64_t)(d->a.cfg->final_snapshot_timeout * 1000);
  size_t failed = 0;
  int written = 0;
  for (;;) {
    bool last = timers_now_ms() >= deadline;
    written += persist_snapshot_changed(d->a.ps, d->a.reg,
                                        last ? "final snapshot failed" : "final snapshot failed, retrying", &failed);
    if (!failed || last) break;
    uv_sleep(200);
  }
  if (failed) {
    log_error("final snapshots incomplete: exiting 74", "failed=%zu written=%d", failed, written);
    d->exit_code = DAEMON_EXIT_SNAPSHOT;
  } else {
    log_info("final snapshots written", "count=%d", written);
  }
}

static void finish(daemon_state *d) {
  if (d->drained) return;
  d->drained = true;
  uv_timer_stop(&d->drain_timer);
  http_server_stop(d->a.http);
  d->a.http = NULL;
  if (d->a.jr) journal_stop(d->a.jr); /* what is queued is written and applied first */
  if (d->a.ps) final_snapshots(d);
  uv_close((uv_handle_t *)&d->sigint, NULL);
  uv_close((uv_handle_t *)&d->sigterm, NULL);
  uv_close((uv_handle_t *)&d->snap_timer, NULL);
  uv_close((uv_handle_t *)&d->drain_timer, NULL);
  uv_close((uv_handle_t *)&d->pool_timer, NULL);
  timers_close(d->a.tm);
}

static void on_drain(uv_timer_t *t) {
  daemon_state *d = t->data;
  if (d->snap_busy) return; /* let the periodic snapshot finish first */
  int active = http_server_active(d->a.http);
  if (active > 0 && timers_now_ms() < d->drain_deadline) return;
  if (active > 0) log_warn("shutdown: requests still running, closing them", "active=%d", active);
  finish(d);
}

static void begin_shutdown(daemon_state *d, const char *why) {
  if (d->stopping) return;
  d->stopping = true;
  log_info("shutting down", "signal=%s", why);
  atomic_store(&d->a.stopping, true);
  http_server_quiesce(d->a.http);
  replica_close(d->a.rp); /* writes waiting for a commit are answered 503 */
  uv_timer_stop(&d->snap_timer);
  instance **all;
  size_t n = registry_list(d->a.reg, &all);
  for (size_t i = 0; i < n; i++) {
    instance_shutdown(all[i]);
    instance_unref(all[i]);
  }
  free(all);
  d->drain_deadline = timers_now_ms() + DRAIN_MS;
  uv_timer_start(&d->drain_timer, on_drain, 0, 10);
}

static void on_signal(uv_signal_t *s, int signum) {
  begin_shutdown(s->data, signum == SIGINT ? "SIGINT" : "SIGTERM");
}

/* ---- run ----------------------------------------------------------------------------- */

/* --durability log: the local log as the journal's backend (before the
 * snapshots load: loaded instances take the journal's sink). */
static int start_journal(app *a, derr *e) {
  const journal_backend *be;
  void *self = wal_open(a->cfg->data_dir, &be, e);
  if (!self) {
    fprintf(stderr, "descentd: %s\n", e->msg);
    return -e->code;
  }
  a->jr = journal_new(a->reg, be, self);
  a->env.changes = journal_sink(a->jr);
  persist_set_journal(a->ps, a->jr);
  return 0;
}

/* --durability: snapshot or log (which needs --data-dir). */
static int durability_mode(const config *cfg, bool *log_mode) {
  *log_mode = !strcmp(cfg->durability, "log");
  if (!*log_mode && strcmp(cfg->durability, "snapshot")) {
    fprintf(stderr, "descentd: --durability %s: expected snapshot or log\n", cfg->durability);
    return -E_BAD_VALUE;
  }
  if (*log_mode && !cfg->data_dir) {
    fprintf(stderr, "descentd: --durability log needs --data-dir (the log lives beside the snapshots)\n");
    return -E_BAD_VALUE;
  }
  return 0;
}

/* The modules every request needs, and the instances of the data dir.
 * Returns 0, or a negative error code after printing why (the caller
 * cleans up). */
static int start_modules(daemon_state *d, uv_loop_t *loop) {
  app *a = &d->a;
  const config *cfg = a->cfg;
  derr e = {0};
  bool log_mode;
  if (durability_mode(cfg, &log_mode) < 0) return -E_BAD_VALUE;
  a->pool = bufpool_new((size_t)1 << 30);
  a->tm = timers_new(loop);
  a->kp = kpool_new((int)cfg->threads);
  a->reg = registry_new((size_t)cfg->max_instances, (uint64_t)cfg->max_params);
  a->env = (instance_env){a->pool, a->tm, a->kp, &d->incarnations, a->reg, NULL, NULL};
  if (cfg->token_file && !(a->au = auth_load(cfg->token_file, &e))) {
    fprintf(stderr, "descentd: %s\n", e.msg);
    return -e.code;
  }
  if (cfg->cluster || cfg->node_id) {
    if (!cfg->cluster || cfg->node_id <= 0 || !cfg->data_dir) {
      fprintf(stderr, "descentd: replicas need --node-id (a positive id), --cluster and --data-dir together\n");
      return -E_BAD_REQUEST;
    }
    if (log_mode) {
      fprintf(stderr, "descentd: --durability log with --cluster: a replica already logs every change (its Raft "
                      "log, fsynced before a majority acknowledges); leave --durability at snapshot\n");
      return -E_BAD_REQUEST;
    }
    log_info("replica: state comes from the Raft log", "dir=%s/raft", cfg->data_dir);
    http_cluster_sink(a, &a->round_sink);
    a->env.round_changes = &a->round_sink;
    replica_opts o = {.id = (uint64_t)cfg->node_id, .cluster = cfg->cluster, .data_dir = cfg->data_dir,
                      .election_timeout_ms = (unsigned)cfg->election_timeout,
                      .snapshot_entries = (unsigned)cfg->raft_snapshot_entries, .join = cfg->join, .reg = a->reg, .env = &a->env,
                      .apply = http_cluster_apply, .fail = http_cluster_fail, .lost = http_cluster_lost,
                      .ctx = a};
    a->rp = replica_new(&o);
  } else if (cfg->data_dir) {
    if (!(a->ps = persist_open(cfg->data_dir, &e))) {
      fprintf(stderr, "descentd: %s\n", e.msg);
      return -e.code;
    }
    if (log_mode && start_journal(a, &e) < 0) return -e.code;
    int n = persist_load_all(a->ps, a->reg, &a->env);
    log_info("data dir ready", "dir=%s instances=%d durability=%s", cfg->data_dir, n, cfg->durability);
    if (a->jr && journal_replay(a->jr, &e) < 0) {
      fprintf(stderr, "descentd: %s\n", e.msg);
      return -e.code;
    }
  }
  return 0;
}

/* This member's HTTP base URL: --listen's host (a wildcard one: the host of
 * its Raft address) and the port it got. */
static void http_url(daemon_state *d, char *out, size_t cap) {
  const config *cfg = d->a.cfg;
  char host[128] = "127.0.0.1";
  const char *l = cfg->listen, *colon = strrchr(l, ':');
  if (colon && colon > l && (size_t)(colon - l) < sizeof host) snprintf(host, sizeof host, "%.*s", (int)(colon - l), l);
  if (!strcmp(host, "0.0.0.0") || !strcmp(host, "[::]") || !strcmp(host, "::")) {
    uint64_t ids[REPLICA_MAX_MEMBERS];
    char addrs[REPLICA_MAX_MEMBERS][64];
    size_t n = 0;
    derr e;
    if (replica_parse_cluster(cfg->cluster, ids, addrs, REPLICA_MAX_MEMBERS, &n, &e) == 0)
      for (size_t i = 0; i < n; i++)
        if (ids[i] == (uint64_t)cfg->node_id) snprintf(host, sizeof host, "%.*s", (int)(strrchr(addrs[i], ':') - addrs[i]), addrs[i]);
  }
  snprintf(out, cap, "%s://%s:%u", cfg->tls_cert ? "https" : "http", host, (unsigned)http_server_port(d->a.http));
}

/* The Raft member (after the HTTP server: it announces its port). */
static int start_replica(daemon_state *d, uv_loop_t *loop) {
  app *a = &d->a;
  char url[160];
  http_url(d, url, sizeof url);
  derr e = {0};
  if (replica_start(a->rp, loop, url, &e) < 0) {
    fprintf(stderr, "descentd: %s\n", e.msg);
    return -(e.code ? e.code : E_IO);
  }
  return 0;
}

/* The loop's handles (signals, timers), then the HTTP server (0, or a
 * negative error code after printing why).  Handles
 * first: once "listening on" is printed, SIGTERM must be graceful (signals
 * are delivered only inside uv_run, after the server started). */
static int start_serving(daemon_state *d, uv_loop_t *loop) {
  app *a = &d->a;
  const config *cfg = a->cfg;
  derr e = {0};
  uv_timer_init(loop, &d->snap_timer);
  uv_timer_init(loop, &d->drain_timer);
  uv_timer_init(loop, &d->pool_timer);
  d->snap_timer.data = d->drain_timer.data = d->pool_timer.data = d;
  d->handles = true;
  uv_signal_init(loop, &d->sigint);
  uv_signal_init(loop, &d->sigterm);
  d->sigint.data = d->sigterm.data = d;
  uv_signal_start(&d->sigint, on_signal, SIGINT);
  uv_signal_start(&d->sigterm, on_signal, SIGTERM);
  if (!(a->http = http_server_start(a, &e))) {
    fprintf(stderr, "descentd: %s\n", e.msg);
    return -e.code;
  }
  if (a->ps && cfg->snapshot_interval > 0) {
    uint64_t ms = (uint64_t)(cfg->snapshot_interval * 1000);
    if (!ms) ms = 1;
    uv_timer_start(&d->snap_timer, on_snap_timer, ms, ms);
  }
  uv_timer_start(&d->pool_timer, on_pool_timer, POOL_TRIM_MS, POOL_TRIM_MS);
  return cfg->cluster ? start_replica(d, loop) : 0;
}

int daemon_run(const config *cfg) {
  daemon_state *d = mem_xcalloc(1, sizeof *d);
  int code = 1;
  uv_loop_t loop;
  uv_loop_init(&loop);
  app *a = &d->a;
  a->cfg = cfg;
  a->loop = &loop;
  a->started = wall();
  int lvl = log_level_parse(cfg->log_level);
  if (lvl < 0) {
    fprintf(stderr, "descentd: --log-level %s: expected debug, info, warn or error\n", cfg->log_level);
    goto out_loop;
  }
  log_set_level(lvl);
  signal(SIGPIPE, SIG_IGN);
  raise_fd_limit();
  if (start_modules(d, &loop) < 0 || start_serving(d, &loop) < 0) goto out;
  uv_run(&loop, UV_RUN_DEFAULT);
  code = d->exit_code;
  log_info("stopped", "%s", "");
out:
  if (d->handles && !d->drained) { /* failed before the loop ran: close the handles */
    uv_close((uv_handle_t *)&d->sigint, NULL);
    uv_close((uv_handle_t *)&d->sigterm, NULL);
    uv_close((uv_handle_t *)&d->snap_timer, NULL);
    uv_close((uv_handle_t *)&d->drain_timer, NULL);
    uv_close((uv_handle_t *)&d->pool_timer, NULL);
  }
  if (a->http) http_server_stop(a->http);
  journal_free(a->jr);
  registry_free(a->reg);
  replica_free(a->rp);
  persist_close(a->ps);
  auth_free(a->au);
  kpool_free(a->kp);
  if (a->tm && !d->drained) {
    timers_close(a->tm);
    uv_run(&loop, UV_RUN_DEFAULT);
  }
  timers_free(a->tm);
  bufpool_free(a->pool);
out_loop:
  uv_loop_close(&loop);
  free(d);
  return code;
}
