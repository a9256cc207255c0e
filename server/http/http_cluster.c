/* http_cluster: a replica's writes as Raft entries (see http_cluster.h).
 *
 * Entry bytes (after replica's own header): u8 version (1), u8 route index,
 * u8 content kind, u8 dtype + 1, u8 accept_binary, u8 accept_dtype + 1,
 * u16 name length, u16 key length, u32 query length, f64 the leader's wall
 * clock when it took the write (all little-endian), then the name, the Idempotency-Key with its NUL, the query as
 * key\0value\0 pairs, and the body to the end.
 * A sync instance's closed round is an entry of its own (u8 3, 7 zeros, f64
 * clock, then proto/log.md's round entry): proposed by round_submit (the
 * instances' round sink), applied by the log mode's code on every member.
 */
#include "http_cluster.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <stdint.h>
#include <time.h>

#include "app.h"
#include "bufpool.h"
#include "handlers.h"
#include "http_reply.h"
#include "http_routes.h"
#include "http_server.h"
#include "instance.h"
#include "log.h"
#include "replica.h"

#define ENTRY_VERSION 1
#define ENTRY_ROUND 3 /* a closed sync round: u8 3, 7 zeros, f64 wall clock, then proto/log.md's entry */
#define ROUND_HEAD 16
#define FIXED 22
#define ARGS_MAX 2048

typedef struct args_buf {
  char b[ARGS_MAX];
  size_t n;
  bool overflow;
} args_buf;

static enum MHD_Result collect_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
  (void)kind;
  args_buf *a = cls;
  const char *v = value ? value : "";
  size_t kl = strlen(key) + 1, vl = strlen(v) + 1;
  if (a->n + kl + vl > sizeof a->b) {
    a->overflow = true;
    return MHD_NO;
  }
  memcpy(a->b + a->n, key, kl);
  memcpy(a->b + a->n + kl, v, vl);
  a->n += kl + vl;
  return MHD_YES;
}

static double wall_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void put16(unsigned char *b, size_t v) {
  b[0] = (unsigned char)(v & 0xff);
  b[1] = (unsigned char)(v >> 8);
}
static size_t get16(const unsigned char *b) { return (size_t)b[0] | (size_t)b[1] << 8; }

/* ---- 307 to the leader ---------------------------------------------------------- */

static void url_escape(char *out, size_t cap, size_t *o, const char *s) {
  static const char hex[] = "0123456789ABCDEF";
  for (; *s && *o + 4 < cap; s++) {
    unsigned char c = (unsigned char)*s;
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || strchr("-._~", c)) {
      out[(*o)++] = (char)c;
    } else {
      out[(*o)++] = '%';
      out[(*o)++] = hex[c >> 4];
      out[(*o)++] = hex[c & 15];
    }
  }
  out[*o] = 0;
}

/* leader + the route's path with r's name + r's query. */
static void location(request *r, const char *leader, const args_buf *q, char *out, size_t cap) {
  size_t o = (size_t)snprintf(out, cap, "%s", leader);
  for (const char *p = r->route->path; *p && o + 1 < cap;) {
    if (!strncmp(p, "{name}", 6)) {
      url_escape(out, cap, &o, r->name);
      p += 6;
    } else {
      out[o++] = *p++;
      out[o] = 0;
    }
  }
  for (size_t i = 0, k = 0; i < q->n && o + 2 < cap; k++) {
    const char *key = q->b + i, *val = key + strlen(key) + 1;
    out[o++] = k ? '&' : '?';
    out[o] = 0;
    url_escape(out, cap, &o, key);
    if (o + 2 < cap) out[o++] = '=', out[o] = 0;
    url_escape(out, cap, &o, val);
    i += strlen(key) + 1 + strlen(val) + 1;
  }
}

/* 307 on the leader this member knows, or 503 no_leader. */
static enum MHD_Result not_leader(request *r, const args_buf *q) {
  replica_status st;
  replica_status_get(r->app->rp, &st);
  if (!st.leader_id || st.leader_id == st.id || !st.leader_http[0]) {
    derr e;
    derr_set(&e, E_NO_LEADER, "no leader now (term %llu): retry later, with the same Idempotency-Key",
             (unsigned long long)st.term);
    return reply_error(r, E_NO_LEADER, &e);
  }
  char loc[4096];
  location(r, st.leader_http, q, loc, sizeof loc);
  struct MHD_Response *resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
  if (!resp) return MHD_NO;
  MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, loc);
  char id[32];
  snprintf(id, sizeof id, "%llu", (unsigned long long)st.leader_id);
  MHD_add_response_header(resp, "Descent-Leader", id);
  return reply_queue(r, MHD_HTTP_TEMPORARY_REDIRECT, resp, NULL);
}

static bool wants_leader(request *r) {
  const char *v = http_header(r, "Descent-Read");
  return v && !strcasecmp(v, "leader");
}

bool http_cluster_misread(request *r) { return wants_leader(r) && !replica_reads_ready(r->app->rp); }

/* ---- linearizable reads ------------------------------------------------------------------ */

/* A leader that a partition cut off still believes it leads for up to an
 * election timeout, while the majority's new leader acknowledges writes:
 * answering Descent-Read: leader from memory could miss them.  So such a
 * read waits for a barrier entry of this term to commit (a majority still
 * follows) and apply here, then runs its handler as usual. */

static enum MHD_Result read_go(request *r) {
  r->w.code = 0;
  return r->route->fn(r);
}

static enum MHD_Result read_refused(request *r) {
  if (r->w.code == E_NO_LEADER) return http_cluster_redirect(r);
  if (r->w.code == E_LEADERSHIP_LOST) {
    derr e;
    derr_set(&e, E_LEADERSHIP_LOST, "this member stopped leading before it could confirm the read: retry "
             "(on the new leader)");
    return reply_error(r, E_LEADERSHIP_LOST, &e);
  }
  return reply_error(r, r->w.code, NULL);
}

/* Loop thread (or at once when the member is closing). */
static void read_confirmed(void *ctx, int code, const char *msg) {
  (void)msg;
  request *r = ctx;
  r->w.code = code;
  r->on_resume = code ? read_refused : read_go;
  http__resume(r);
  http__request_unref(r);
}

bool http_cluster_leader_read(request *r) {
  return wants_leader(r) && !strncmp(r->route->path, "/v1/optimizers", 14);
}

enum MHD_Result http_cluster_read(request *r) {
  http__request_ref(r); /* the barrier's: dropped once confirmed */
  http_suspend(r);
  replica_read_barrier(r->app->rp, read_confirmed, r);
  return MHD_YES;
}

enum MHD_Result http_cluster_redirect(request *r) {
  args_buf q = {.n = 0};
  MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, collect_arg, &q);
  return not_leader(r, &q);
}

/* ---- proposing ---------------------------------------------------------------------- */

/* A push to a sync instance: it joins the round here, in memory (the
 * round's close proposes ONE entry, round_submit). */
static bool sync_push(request *r) {
  if (r->route->fn != h_step) return false;
  instance *in = registry_get(r->app->reg, r->name);
  bool sync = in && instance_layout_of(in)->mode == MODE_SYNC;
  if (in) instance_unref(in);
  return sync;
}

static enum MHD_Result resumed(request *r) { return reply_held(r); }

enum MHD_Result http_cluster_write(request *r) {
  args_buf q = {.n = 0};
  MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, collect_arg, &q);
  derr e;
  if (q.overflow) {
    derr_set(&e, E_BAD_REQUEST, "the query string is longer than %d bytes", ARGS_MAX);
    return reply_error(r, E_BAD_REQUEST, &e);
  }
  if (!replica_is_leader(r->app->rp)) return not_leader(r, &q);
  if (sync_push(r)) {
    /* a round joins only once the entries of earlier terms are applied
     * (their keys known): else a retry of a committed round could join again */
    if (replica_reads_ready(r->app->rp)) return r->route->fn(r);
    derr_set(&e, E_NO_LEADER, "the new leader is catching up with its log: retry with the same Idempotency-Key");
    return reply_error(r, E_NO_LEADER, &e);
  }
  const char *idem = http_header(r, "Idempotency-Key");
  size_t nl = strlen(r->name), kl = idem ? strlen(idem) + 1 : 0;
  if (kl > 1024) {
    derr_set(&e, E_BAD_REQUEST, "Idempotency-Key: 1 to 100 characters");
    return reply_error(r, E_BAD_REQUEST, &e);
  }
  unsigned char head[FIXED + NAME_MAX_LEN + 1024 + ARGS_MAX];
  head[0] = ENTRY_VERSION;
  head[1] = (unsigned char)routes_index(r->route);
  head[2] = (unsigned char)r->content;
  head[3] = (unsigned char)(r->dtype + 1);
  head[4] = r->accept_binary;
  head[5] = (unsigned char)(r->accept_dtype + 1);
  put16(head + 6, nl);
  put16(head + 8, kl);
  head[10] = (unsigned char)(q.n & 0xff), head[11] = (unsigned char)(q.n >> 8), head[12] = head[13] = 0;
  double now = wall_now();
  memcpy(head + 14, &now, sizeof now);
  memcpy(head + FIXED, r->name, nl);
  if (kl) memcpy(head + FIXED + nl, idem, kl);
  memcpy(head + FIXED + nl + kl, q.b, q.n);
  r->on_resume = resumed;
  http__request_ref(r); /* the proposal's: dropped once answered */
  http_suspend(r);
  replica_propose2(r->app->rp, head, FIXED + nl + kl + q.n, r->body, r->len, r);
  return MHD_YES;
}

/* ---- answering -------------------------------------------------------------------------- */

/* Hands s's held reply to the proposer o and resumes it. */
static void answer(request *o, request *s) {
  o->held = s->held;
  o->status = s->status;
  s->held = NULL;
  http__resume(o);
  http__request_unref(o);
}

/* ---- closed sync rounds ------------------------------------------------------------------ */

/* A round's change travels as origin with its low bit set (a request's
 * pointer never has it). */
static void *change_origin(change *c) { return (void *)((uintptr_t)c | 1); }
static change *origin_change(void *o) { return (uintptr_t)o & 1 ? (change *)((uintptr_t)o & ~(uintptr_t)1) : NULL; }

/* replica_propose2 fails at once when the member is closing, in
 * round_submit, under the instance lock: the change's done (which takes
 * that lock) then runs on a thread of its own. */
static _Thread_local bool in_submit;

/* change_sink.submit (under the instance lock): the round's entry, with the
 * leader's clock, proposed as one Raft entry. */
static void round_submit(void *ctx, change *c) {
  app *a = ctx;
  unsigned char head[ROUND_HEAD] = {ENTRY_ROUND};
  double now = wall_now();
  memcpy(head + 8, &now, sizeof now);
  unsigned char *body = malloc(c->len ? c->len : 1);
  if (!body) abort();
  size_t off = 0;
  for (int i = 0; i < c->iovcnt; i++) {
    memcpy(body + off, c->iov[i].iov_base, c->iov[i].iov_len);
    off += c->iov[i].iov_len;
  }
  in_submit = true;
  replica_propose2(a->rp, head, sizeof head, body, off, change_origin(c));
  in_submit = false;
  free(body);
}

void http_cluster_sink(void *app_, change_sink *out) { *out = (change_sink){round_submit, app_}; }

/* A round entry committed: its change's turn on the leader that proposed
 * it, else applied from its bytes (followers, replay after a restart). */
static void apply_round(app *a, const unsigned char *b, size_t len, change *c, uint64_t index) {
  double t;
  memcpy(&t, b + 8, sizeof t);
  instance_clock_pin(t > 0 ? t : 0);
  if (c) {
    c->done(c, 0, NULL);
    instance_clock_pin(0);
    return;
  }
  derr e = {0};
  char name[NAME_MAX_LEN + 1];
  int rc = instance_change_name(b + ROUND_HEAD, len - ROUND_HEAD, name, &e);
  instance *in = rc < 0 ? NULL : registry_get(a->reg, name);
  if (in) rc = instance_apply_round(in, b + ROUND_HEAD, len - ROUND_HEAD, &e);
  else if (rc == 0) rc = 1; /* deleted since */
  instance_clock_pin(0);
  if (in) instance_unref(in);
  if (rc < 0 || rc == 2)
    log_error("replica: round entry not applied", "index=%llu error=\"%s\"", (unsigned long long)index, e.msg);
}

void http_cluster_lost(void *ctx) {
  app *a = ctx;
  instance **list;
  size_t n = registry_list(a->reg, &list);
  for (size_t i = 0; i < n; i++) {
    instance_round_abort(list[i], E_LEADERSHIP_LOST, "this member stopped leading while the round was open: "
                         "retry with the same Idempotency-Key (on the new leader)");
    instance_unref(list[i]);
  }
  free(list);
}

struct late_fail {
  change *c;
  int code;
};
static void *late_fail_main(void *arg) {
  struct late_fail *lf = arg;
  lf->c->done(lf->c, lf->code, NULL);
  free(lf);
  return NULL;
}

void http_cluster_fail(void *ctx, void *origin, int code) {
  (void)ctx;
  change *c = origin_change(origin);
  if (c && in_submit) {
    struct late_fail *lf = malloc(sizeof *lf);
    pthread_t t;
    pthread_attr_t at;
    if (!lf) abort();
    *lf = (struct late_fail){c, code};
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &at, late_fail_main, lf)) abort();
    pthread_attr_destroy(&at);
    return;
  }
  if (c) { /* the round is lost: its workers retry with their keys */
    derr e;
    derr_set(&e, code, code == E_LEADERSHIP_LOST ? "the leader lost its leadership before this round committed; "
             "it may still commit: retry with the same Idempotency-Key" : "this round was not committed: retry");
    c->done(c, code, &e);
    return;
  }
  request *o = origin;
  o->capture = true;
  if (code == E_NO_LEADER) {
    args_buf q = {.n = 0};
    MHD_get_connection_values(o->conn, MHD_GET_ARGUMENT_KIND, collect_arg, &q);
    not_leader(o, &q);
  } else if (code == E_LEADERSHIP_LOST) {
    derr e;
    derr_set(&e, E_LEADERSHIP_LOST, "the leader lost its leadership before this write committed; it may still "
             "commit: retry with the same Idempotency-Key");
    reply_error(o, code, &e);
  } else {
    reply_error(o, code, NULL);
  }
  http__resume(o);
  http__request_unref(o);
}

/* The replayed request of one entry, or NULL (logged) if it is malformed. */
static request *replayed(app *a, const unsigned char *b, size_t len) {
  if (len < FIXED || b[0] != ENTRY_VERSION) return NULL;
  size_t nl = get16(b + 6), kl = get16(b + 8), ql = get16(b + 10);
  const route *rt = routes_at(b[1]);
  if (!rt || !(rt->flags & R_REPL) || nl > NAME_MAX_LEN || FIXED + nl + kl + ql > len) return NULL;
  if ((kl && b[FIXED + nl + kl - 1]) || (ql && b[FIXED + nl + kl + ql - 1])) return NULL;
  request *s = http__request_new(a->http, rt->method);
  s->route = rt;
  memcpy(s->name, b + FIXED, nl);
  s->name[nl] = 0;
  s->content = b[2];
  s->dtype = (int)b[3] - 1;
  s->accept_binary = b[4];
  s->accept_dtype = (int)b[5] - 1;
  s->ridem = kl ? (const char *)b + FIXED + nl : NULL;
  s->rargs = (const char *)b + FIXED + nl + kl;
  s->rargs_len = ql;
  size_t off = FIXED + nl + kl + ql, bl = len - off;
  if (bl) {
    s->body = bufpool_get(a->pool, bl, &s->cap);
    if (!s->body) abort(); /* a member that cannot apply an entry cannot stay identical */
    memcpy(s->body, b + off, bl);
    s->len = bl;
  }
  s->capture = true;
  s->state = RS_HANDLER;
  return s;
}

void http_cluster_apply(void *ctx, const void *data, size_t len, void *origin, uint64_t index) {
  app *a = ctx;
  const unsigned char *b = data;
  if (len >= ROUND_HEAD && b[0] == ENTRY_ROUND) {
    apply_round(a, b, len, origin_change(origin), index);
    return;
  }
  if (origin_change(origin)) { /* cannot happen: a change's entry is a round's */
    http_cluster_fail(ctx, origin, E_INTERNAL);
    return;
  }
  request *o = origin;
  request *s = a->http ? replayed(a, data, len) : NULL;
  if (!s) {
    log_error("replica: entry not applied", "index=%llu bytes=%zu%s", (unsigned long long)index, len,
              a->http ? " malformed=true" : " stopped=true");
    if (o) http_cluster_fail(ctx, o, E_INTERNAL);
    return;
  }
  double t;
  memcpy(&t, (const unsigned char *)data + 14, sizeof t);
  instance_clock_pin(t > 0 ? t : 0);
  s->route->fn(s);
  instance_clock_pin(0);
  if (o) answer(o, s);
  http__request_unref(s);
}
