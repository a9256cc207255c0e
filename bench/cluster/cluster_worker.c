/* cluster_worker: one simulated host's worker for make bench-cluster and
 * tests/integration/test_netns_cluster.py (bench/cluster/README.md).
 *
 *   cluster_worker create --urls U0,U1,... --spec JSON
 *   cluster_worker run    --urls U --name M --n N --worker W [--mode sync]
 *                         [--steps K | --seconds T | --until-stop]
 *                         [--dtype float32|bfloat16]
 *                         [--client libdescent|raw] [--grad fixed|dynamic]
 *                         [--pipeline K] [--params-out FILE]
 *   cluster_worker export --urls U --name M --out FILE
 *
 * `run` opens a handle (range sharding over the URLs, proto/sharding.md),
 * pulls the parameters, prints "ready", waits for one line on stdin (the
 * orchestrator's "go", so that every worker starts together; with
 * --until-stop a second line stops it), then pushes
 * and receives the parameters in a loop and prints one JSON line of timings
 * (CLOCK_MONOTONIC, shared by every namespace).  float32 goes through
 * libdescent's descent_push; bfloat16 bodies (the contract's "Wire
 * precision"), which libdescent cannot send yet, go through the raw client
 * below: the same split rule and URL order, one kept-alive libcurl handle
 * per shard in one multi handle, as libdescent does.  `--client raw` sends
 * float32 that way too, so the two dtypes can be compared on one client.
 * `export` writes the gathered state document without its "created" time.
 * Single-threaded; never starts or stops a daemon.
 */
#include <curl/curl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "descent.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static const char *arg(int argc, char **argv, const char *name, const char *def) {
  for (int i = 2; i + 1 < argc; i++)
    if (strcmp(argv[i], name) == 0) return argv[i + 1];
  return def;
}

static int fail(const char *what, const descent_error *e) {
  fprintf(stderr, "cluster_worker: %s: %s: %s\n", what, e->code, e->message);
  return 1;
}

static uint32_t mix(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

/* A gradient that depends on the parameters, the worker and the step (as in
 * tests/client/sharding_test.c), so any difference between runs grows. */
static void grad_dynamic(const float *p, float *g, size_t n, int w, uint64_t t) {
  float k = 0.01f * (float)(w + 1);
  for (size_t i = 0; i < n; i++) {
    uint32_t h = mix((uint32_t)i * 2654435761u ^ (uint32_t)(t * 40503u + (uint32_t)w * 977u));
    g[i] = p[i] * k + ((float)(h & 1023) - 511.5f) * 1e-4f;
  }
}

static void grad_fixed(float *g, size_t n, int w) {
  for (size_t i = 0; i < n; i++) g[i] = ((float)(mix((uint32_t)i ^ ((uint32_t)w << 24)) & 4095) - 2047.5f) * 1e-6f;
}

/* float32 -> bfloat16, round to nearest even (no NaN reaches here) */
static void to_bf16(const float *f, uint16_t *h, size_t n) {
  for (size_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, &f[i], 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    h[i] = (uint16_t)(u >> 16);
  }
}

static void from_bf16(const uint16_t *h, float *f, size_t n) {
  for (size_t i = 0; i < n; i++) {
    uint32_t u = (uint32_t)h[i] << 16;
    memcpy(&f[i], &u, 4);
  }
}

/* ---- the raw client: one push to every shard at once ------------------------------ */

typedef struct shard {
  CURL *easy;
  char base[256];
  size_t lo, hi;     /* its range of the flat vector */
  char *out;         /* where its reply goes */
  size_t got, want;  /* reply bytes */
  long status;
  uint64_t step;
  char err[CURL_ERROR_SIZE];
} shard;

typedef struct raw {
  CURLM *multi;
  shard *s;
  size_t ns;
  size_t width; /* bytes per value: 4 or 2 */
  struct curl_slist *hdrs;
} raw;

static size_t raw_body(char *p, size_t sz, size_t nm, void *cls) {
  shard *s = cls;
  size_t n = sz * nm;
  if (s->got + n > s->want) return 0; /* longer than the range: fail the transfer */
  memcpy(s->out + s->got, p, n);
  s->got += n;
  return n;
}

static size_t raw_header(char *p, size_t sz, size_t nm, void *cls) {
  shard *s = cls;
  size_t n = sz * nm;
  if (n > 13 && strncasecmp(p, "Descent-Step:", 13) == 0) s->step = strtoull(p + 13, NULL, 10);
  return n;
}

static int raw_open(raw *r, const char *urls, size_t n, const char *dtype) {
  memset(r, 0, sizeof *r);
  r->width = strcmp(dtype, "bfloat16") == 0 ? 2 : 4;
  size_t cap = 1;
  for (const char *c = urls; *c; c++) cap += *c == ',';
  r->s = calloc(cap, sizeof *r->s);
  r->multi = curl_multi_init();
  if (!r->s || !r->multi) return -1;
  const char *c = urls;
  while (*c) {
    size_t len = strcspn(c, ",");
    if (len == 0 || len >= sizeof r->s[0].base) return -1;
    memcpy(r->s[r->ns].base, c, len);
    r->ns++;
    c += len + (c[len] == ',');
  }
  for (size_t k = 0; k < r->ns; k++) { /* proto/sharding.md, rule 2 */
    shard *s = &r->s[k];
    s->lo = (size_t)((unsigned __int128)k * n / r->ns);
    s->hi = (size_t)((unsigned __int128)(k + 1) * n / r->ns);
    s->easy = curl_easy_init();
    if (!s->easy) return -1;
  }
  char ct[96], acc[96];
  snprintf(ct, sizeof ct, "Content-Type: application/octet-stream%s", r->width == 2 ? "; dtype=bfloat16" : "");
  snprintf(acc, sizeof acc, "Accept: application/octet-stream%s", r->width == 2 ? "; dtype=bfloat16" : "");
  r->hdrs = curl_slist_append(NULL, ct);
  r->hdrs = curl_slist_append(r->hdrs, acc);
  r->hdrs = curl_slist_append(r->hdrs, "Expect:");
  return r->hdrs ? 0 : -1;
}

static void raw_close(raw *r) {
  for (size_t k = 0; k < r->ns; k++) curl_easy_cleanup(r->s[k].easy);
  if (r->multi) curl_multi_cleanup(r->multi);
  curl_slist_free_all(r->hdrs);
  free(r->s);
}

/* Pushes body (n values of r->width bytes) and receives the parameters into
 * out (same layout); out NULL asks for none (?params=none); body NULL pulls
 * (GET .../params) instead.  Returns 0, or -1 with a message on stderr. */
static int raw_push(raw *r, const char *name, const char *worker, int64_t step, const void *body, void *out,
                    uint64_t *got_step) {
  for (size_t k = 0; k < r->ns; k++) {
    shard *s = &r->s[k];
    char url[512];
    int o = snprintf(url, sizeof url, "%s/v1/optimizers/%s/%s?", s->base, name, body ? "step" : "params");
    if (worker) o += snprintf(url + o, sizeof url - (size_t)o, "worker=%s&", worker);
    if (!out) o += snprintf(url + o, sizeof url - (size_t)o, "params=none&");
    if (step >= 0 && body) snprintf(url + o, sizeof url - (size_t)o, "step=%" PRId64, step);
    s->out = out ? (char *)out + s->lo * r->width : NULL;
    s->got = 0;
    s->want = out ? (s->hi - s->lo) * r->width : 0;
    s->status = 0;
    s->err[0] = 0;
    CURL *e = s->easy;
    curl_easy_setopt(e, CURLOPT_URL, url);
    if (body) {
      curl_easy_setopt(e, CURLOPT_POST, 1L);
      curl_easy_setopt(e, CURLOPT_POSTFIELDS, (const char *)body + s->lo * r->width);
      curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)((s->hi - s->lo) * r->width));
    } else {
      curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->hdrs);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, raw_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, raw_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, s);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, s->err);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_multi_add_handle(r->multi, e);
  }
  int running = 1;
  while (running) {
    if (curl_multi_perform(r->multi, &running) != CURLM_OK) return -1;
    if (running) curl_multi_poll(r->multi, NULL, 0, 1000, NULL);
  }
  int rc = 0;
  CURLMsg *m;
  int left;
  while ((m = curl_multi_info_read(r->multi, &left)))
    if (m->msg == CURLMSG_DONE && m->data.result != CURLE_OK) {
      for (size_t k = 0; k < r->ns; k++)
        if (r->s[k].easy == m->easy_handle)
          fprintf(stderr, "cluster_worker: shard %zu: %s\n", k, r->s[k].err[0] ? r->s[k].err : "transfer failed");
      rc = -1;
    }
  for (size_t k = 0; k < r->ns; k++) {
    shard *s = &r->s[k];
    curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &s->status);
    curl_multi_remove_handle(r->multi, s->easy);
    if (rc == 0 && (s->status != 200 || s->got != s->want)) {
      fprintf(stderr, "cluster_worker: shard %zu (%s): status %ld, %zu of %zu reply bytes\n", k, s->base, s->status,
              s->got, s->want);
      rc = -1;
    }
  }
  /* the smallest step held, as libdescent reports after settling (async
   * pushes from several lanes reach the shards in different orders) */
  *got_step = r->s[0].step;
  for (size_t k = 1; k < r->ns; k++)
    if (r->s[k].step < *got_step) *got_step = r->s[k].step;
  return rc;
}

/* ---- commands ------------------------------------------------------------------------ */

static int cmd_create(int argc, char **argv) {
  const char *urls = arg(argc, argv, "--urls", NULL), *spec = arg(argc, argv, "--spec", NULL);
  if (!urls || !spec) return 2;
  descent_error e;
  descent *d = descent_open(urls, NULL, &e);
  if (!d) return fail("open", &e);
  int rc = descent_create(d, spec, NULL, &e) < 0 ? fail("create", &e) : 0;
  descent_close(d);
  return rc;
}

static int cmd_export(int argc, char **argv) {
  const char *urls = arg(argc, argv, "--urls", NULL), *name = arg(argc, argv, "--name", NULL),
             *path = arg(argc, argv, "--out", NULL);
  if (!urls || !name || !path) return 2;
  descent_error e;
  descent *d = descent_open(urls, NULL, &e);
  if (!d) return fail("open", &e);
  char *s = NULL;
  size_t len = 0;
  int rc = 0;
  if (descent_state_export(d, name, &s, &len, &e) < 0) {
    rc = fail("export", &e);
  } else {
    char *c = strstr(s, "\"created\":"); /* two instances created apart differ only there */
    if (c) {
      char *end = c + strcspn(c, ",}");
      if (*end == ',') end++;
      memmove(c, end, strlen(end) + 1);
      len = strlen(s);
    }
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(s, 1, len, f) != len || fclose(f) != 0) {
      fprintf(stderr, "cluster_worker: cannot write %s\n", path);
      rc = 1;
    }
  }
  descent_free(s);
  descent_close(d);
  return rc;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* One request in flight: its own handle (or raw client) and buffers.  By
 * default a worker has one lane that pushes and receives the parameters in
 * the reply, so its link carries one direction at a time.  --pipeline K
 * gives it 2K lanes in 2K threads, as a parameter-server worker that
 * overlaps communication: K push gradients (?params=none), K pull the
 * parameters, so both directions of its link are busy; with K = 2 one
 * lane's request still moves while the other waits for its slowest shard
 * (a sharded request ends when every shard has answered).  Lanes share
 * only the read-only gradient and the options. */
enum lane_role { LANE_PUSHPULL, LANE_PUSH, LANE_PULL };

typedef struct lane {
  const struct job *job;
  enum lane_role role;
  descent *d;
  raw r;
  float *p, *g;         /* g: the job's when fixed, the lane's own when dynamic */
  uint16_t *g16, *p16;  /* bfloat16 bodies */
  uint64_t step;
  double *lat;
  size_t cap;
  long done;
  double t_first, t_end;
  int rc;
} lane;

typedef struct job {
  const char *urls, *name, *dtype, *client, *worker;
  size_t n;
  long steps;
  double seconds;
  int w, sync, dynamic, raw, bf16, until_stop;
  _Atomic int stop; /* --until-stop: set when "stop" arrives on stdin */
} job;

static int lane_open(lane *l, const job *j, float *fixed_g, uint16_t *fixed_g16) {
  memset(l, 0, sizeof *l);
  l->job = j;
  descent_error e;
  l->d = descent_open(j->urls, NULL, &e);
  if (!l->d) return fail("open", &e);
  /* Sharded async pushes from many lanes reach the shards in different
   * orders, and over a slow link a shard may take seconds to receive the
   * pushes already applied elsewhere: the default 2 s settle reports a
   * false step_mismatch (a 40 MB push takes 0.64 s at 500 Mbit/s alone,
   * ~5 s when 8 share a link). */
  descent_set_option(l->d, DESCENT_OPT_SETTLE_MS, 120000);
  l->cap = j->steps > 0 ? (size_t)j->steps + 1 : 100000;
  l->lat = malloc(l->cap * sizeof *l->lat);
  l->p = malloc(j->n * sizeof *l->p);
  l->g = j->dynamic ? malloc(j->n * sizeof *l->g) : fixed_g;
  if (j->bf16) {
    l->p16 = malloc(j->n * 2);
    l->g16 = j->dynamic ? malloc(j->n * 2) : fixed_g16;
  }
  if (!l->lat || !l->p || !l->g || (j->bf16 && (!l->p16 || !l->g16))) return 1;
  if (j->raw && raw_open(&l->r, j->urls, j->n, j->dtype) < 0) {
    fprintf(stderr, "cluster_worker: raw client: bad --urls\n");
    return 1;
  }
  if (descent_pull(l->d, j->name, l->p, j->n, -1, 0, &l->step, &e) < 0) return fail("pull", &e);
  return 0;
}

static void lane_close(lane *l) {
  const job *j = l->job;
  if (!j) return;
  if (j->raw) raw_close(&l->r);
  descent_close(l->d);
  free(l->p);
  free(l->p16);
  if (j->dynamic) {
    free(l->g);
    free(l->g16);
  }
  free(l->lat);
}

static void *lane_run(void *arg) {
  lane *l = arg;
  const job *j = l->job;
  char wname[32];
  snprintf(wname, sizeof wname, "w%d", j->w);
  descent_error e;
  l->rc = 1;
  for (;;) {
    if (j->steps > 0 && l->done >= j->steps) break;
    if (j->until_stop ? atomic_load(&((job *)j)->stop)
                      : j->steps <= 0 && l->done > 0 && l->t_end - l->t_first >= j->seconds)
      break;
    if ((size_t)l->done >= l->cap) break;
    if (j->dynamic) grad_dynamic(l->p, l->g, j->n, j->w, l->step);
    double t0 = now();
    if (l->role != LANE_PUSHPULL) {
      int bad;
      if (j->raw) {
        bad = raw_push(&l->r, j->name, NULL, -1, l->role == LANE_PUSH ? (const void *)(j->bf16 ? (void *)l->g16 : l->g) : NULL,
                       l->role == LANE_PULL ? (j->bf16 ? (void *)l->p16 : l->p) : NULL, &l->step) < 0;
      } else if (l->role == LANE_PUSH) {
        bad = descent_push(l->d, j->name, l->g, j->n, NULL, NULL, &l->step, &e) < 0;
      } else {
        bad = descent_pull(l->d, j->name, l->p, j->n, -1, 0, &l->step, &e) < 0;
      }
      if (bad) {
        if (!j->raw) fail(l->role == LANE_PUSH ? "push" : "pull", &e);
        return NULL;
      }
      if (j->bf16 && l->role == LANE_PULL) from_bf16(l->p16, l->p, j->n);
    } else if (j->raw) {
      const void *body = l->g;
      void *dst = l->p;
      if (j->bf16) {
        if (j->dynamic) to_bf16(l->g, l->g16, j->n);
        body = l->g16;
        dst = l->p16;
      }
      if (raw_push(&l->r, j->name, j->sync ? wname : NULL, (int64_t)l->step, body, dst, &l->step) < 0) return NULL;
      if (j->bf16) from_bf16(l->p16, l->p, j->n);
    } else {
      descent_push_opts o = DESCENT_PUSH_OPTS_INIT;
      o.worker = j->sync ? wname : NULL;
      o.step = j->sync ? (int64_t)l->step : -1; /* async lanes interleave: no staleness check */
      if (descent_push(l->d, j->name, l->g, j->n, &o, l->p, &l->step, &e) < 0) {
        fail("push", &e);
        return NULL;
      }
    }
    l->t_end = now();
    l->lat[l->done++] = l->t_end - t0;
    if (l->done == 1) l->t_first = l->t_end;
  }
  l->rc = 0;
  return NULL;
}

static int cmd_run(int argc, char **argv) {
  job j = {0};
  j.urls = arg(argc, argv, "--urls", NULL);
  j.name = arg(argc, argv, "--name", NULL);
  j.worker = arg(argc, argv, "--worker", "0");
  j.dtype = arg(argc, argv, "--dtype", "float32");
  j.client = arg(argc, argv, "--client", strcmp(j.dtype, "float32") ? "raw" : "libdescent");
  const char *mode = arg(argc, argv, "--mode", "async"), *out_path = arg(argc, argv, "--params-out", NULL);
  j.n = (size_t)strtod(arg(argc, argv, "--n", "0"), NULL);
  j.steps = atol(arg(argc, argv, "--steps", "0"));
  j.seconds = atof(arg(argc, argv, "--seconds", "0"));
  j.sync = strcmp(mode, "sync") == 0;
  j.dynamic = strcmp(arg(argc, argv, "--grad", "fixed"), "dynamic") == 0;
  j.raw = strcmp(j.client, "raw") == 0;
  j.bf16 = strcmp(j.dtype, "bfloat16") == 0;
  j.w = atoi(j.worker);
  for (int i = 2; i < argc; i++) j.until_stop |= strcmp(argv[i], "--until-stop") == 0;
  int pipeline = atoi(arg(argc, argv, "--pipeline", "0"));
  int inflight = pipeline ? 2 * pipeline : 1;
  if (pipeline < 0 || pipeline > 4) {
    fprintf(stderr, "cluster_worker: --pipeline K: K from 1 to 4\n");
    return 2;
  }
  if (!j.urls || !j.name || j.n == 0 || (j.steps <= 0 && j.seconds <= 0 && !j.until_stop)) return 2;
  if (pipeline && (j.sync || j.dynamic)) {
    fprintf(stderr, "cluster_worker: --pipeline is for async workers with a fixed gradient\n");
    return 2;
  }
  if (!j.bf16 && strcmp(j.dtype, "float32")) return 2;
  if (j.bf16 && !j.raw) {
    fprintf(stderr, "cluster_worker: libdescent sends float32 only; bfloat16 needs --client raw\n");
    return 2;
  }
  lane lanes[8];
  memset(lanes, 0, sizeof lanes);
  pthread_t th[8];
  float *g = j.dynamic ? NULL : malloc(j.n * sizeof *g);
  uint16_t *g16 = j.dynamic || !j.bf16 ? NULL : malloc(j.n * 2);
  int rc = 1;
  if (!j.dynamic) {
    if (!g || (j.bf16 && !g16)) goto out;
    grad_fixed(g, j.n, j.w);
    if (j.bf16) to_bf16(g, g16, j.n);
  }
  for (int k = 0; k < inflight; k++) {
    if (lane_open(&lanes[k], &j, g, g16)) goto out;
    lanes[k].role = pipeline ? (k < pipeline ? LANE_PUSH : LANE_PULL) : LANE_PUSHPULL;
  }
  printf("ready\n");
  fflush(stdout);
  char line[64];
  if (!fgets(line, sizeof line, stdin)) goto out;
  double t_go = now();
  int started = 0;
  for (; started < inflight; started++)
    if (pthread_create(&th[started], NULL, lane_run, &lanes[started])) break;
  if (j.until_stop) { /* the next line (or EOF) stops every lane after its request */
    if (!fgets(line, sizeof line, stdin)) line[0] = 0;
    atomic_store(&j.stop, 1);
  }
  for (int k = 0; k < started; k++) pthread_join(th[k], NULL);
  if (started < inflight) goto out;
  for (int k = 0; k < inflight; k++)
    if (lanes[k].rc) goto out;
  if (out_path) {
    FILE *f = fopen(out_path, "wb");
    if (!f || fwrite(lanes[0].p, sizeof(float), j.n, f) != j.n || fclose(f) != 0) {
      fprintf(stderr, "cluster_worker: cannot write %s\n", out_path);
      goto out;
    }
  }
  /* each lane's first push is its warm-up (TCP ramp, first touch of the
   * buffers); the rate counts the pushes after it */
  double rate = 0, pull_rate = 0, t_first = 1e300, t_end = 0;
  long pushes = 0;
  size_t nl = 0;
  double *all = malloc((size_t)inflight * lanes[0].cap * sizeof *all);
  if (!all) goto out;
  for (int k = 0; k < inflight; k++) {
    lane *l = &lanes[k];
    double r = l->done > 1 && l->t_end > l->t_first ? (double)(l->done - 1) / (l->t_end - l->t_first) : 0;
    if (l->role == LANE_PULL) {
      pull_rate += r;
      continue;
    }
    pushes += l->done;
    rate += r;
    if (l->role == LANE_PUSHPULL) pull_rate += r;
    if (l->t_first < t_first) t_first = l->t_first;
    if (l->t_end > t_end) t_end = l->t_end;
    for (long i = 1; i < l->done; i++) all[nl++] = l->lat[i];
  }
  double med = 0, mn = 0, mx = 0;
  if (nl) {
    qsort(all, nl, sizeof *all, cmp_double);
    mn = all[0];
    mx = all[nl - 1];
    med = all[nl / 2];
  }
  free(all);
  printf("{\"worker\":%d,\"dtype\":\"%s\",\"client\":\"%s\",\"pipeline\":%d,\"pushes\":%ld,\"rate\":%.6f,"
         "\"pull_rate\":%.6f,"
         "\"t_go\":%.6f,\"t_first\":%.6f,\"t_end\":%.6f,\"first_s\":%.6f,\"min_s\":%.6f,\"median_s\":%.6f,"
         "\"max_s\":%.6f,\"step\":%" PRIu64 "}\n",
         j.w, j.dtype, j.client, pipeline, pushes, rate, pull_rate, t_go, t_first, t_end, lanes[0].done ? lanes[0].lat[0] : 0.0,
         mn, med, mx, lanes[0].step);
  rc = 0;
out:
  for (int k = 0; k < inflight; k++) lane_close(&lanes[k]);
  free(g);
  free(g16);
  return rc;
}

int main(int argc, char **argv) {
  int rc = 2;
  if (argc >= 2 && strcmp(argv[1], "create") == 0) rc = cmd_create(argc, argv);
  else if (argc >= 2 && strcmp(argv[1], "run") == 0) rc = cmd_run(argc, argv);
  else if (argc >= 2 && strcmp(argv[1], "export") == 0) rc = cmd_export(argc, argv);
  if (rc == 2) fprintf(stderr, "usage: cluster_worker create|run|export ... (see bench/cluster/cluster_worker.c)\n");
  return rc;
}
