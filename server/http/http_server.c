/* http_server: the MHD daemon, request objects, bodies and their memory
 * budget, auth and the suspend/resume bookkeeping.  See http_server.h for
 * the state diagram.  Allocations: small internal ones through mem_x*
 * (abort on out-of-memory); bodies through the pool, charged to the budget
 * first, refused cleanly (503 busy) when it or the system says no. */
#include "http_server.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "codec_half.h"
#include "http_reply.h"
#include "http_cluster.h"
#include "http_routes.h"
#include "log.h"
#include "mem.h"
#include "spec.h"

#define CONN_MEMORY (256u << 10)
/* A growing body's first buffer (unless its declared size is smaller). */
#define BODY_CHUNK (256u << 10)

struct http_server {
  app *app;
  struct MHD_Daemon *_Atomic d; /* set once MHD_start_daemon returns, while its threads may already serve */
  uint16_t port;
  MHD_socket quiesced; /* the listening socket after quiesce: closed after the daemon stops */
  pthread_mutex_t lock; /* guards the suspended list and counters */
  request *suspended;
  size_t nsuspended;
  atomic_int active;
  char *tls_cert, *tls_key;
  _Atomic uint64_t *counts; /* (routes_count() + 1) x HTTP_STATUS_SLOTS */
  unsigned status_slots[HTTP_STATUS_SLOTS]; /* see status_slots_init; 0 = any other */
  _Atomic size_t body_bytes; /* charged by bodies in flight */
  size_t body_limit;         /* --max-body-memory */
};

/* The statuses counted per route: the successes handlers answer with, then
 * every status of the error table once, in the table's order; the
 * remaining slots stay 0 (the last one counts any other status). */
static void status_slots_init(unsigned *slots) {
  static const unsigned ok[] = {MHD_HTTP_OK, MHD_HTTP_CREATED};
  size_t n = 0;
  for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) slots[n++] = ok[i];
  for (int code = 1; code < E__COUNT; code++) {
    unsigned st = (unsigned)derr_status(code);
    bool seen = false;
    for (size_t k = 0; k < n; k++) seen |= slots[k] == st;
    if (!seen) slots[n++] = st;
  }
  while (n < HTTP_STATUS_SLOTS) slots[n++] = 0;
}

static size_t status_slot(const http_server *hs, unsigned st) {
  for (size_t k = 0; k < HTTP_STATUS_SLOTS - 1 && hs->status_slots[k]; k++)
    if (hs->status_slots[k] == st) return k;
  return HTTP_STATUS_SLOTS - 1; /* any other */
}

void http_server_counts(http_server *hs, const unsigned **statuses, size_t *n, uint64_t *counts) {
  *statuses = hs->status_slots;
  *n = HTTP_STATUS_SLOTS;
  size_t total = (routes_count() + 1) * HTTP_STATUS_SLOTS;
  for (size_t i = 0; i < total; i++) counts[i] = atomic_load(&hs->counts[i]);
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- request objects ---------------------------------------------------------- */

static void on_timeout(dtimer *t);

static request *request_new(http_server *hs, struct MHD_Connection *c, const char *method) {
  request *r = mem_xcalloc(1, sizeof *r);
  r->app = hs->app;
  r->hs = hs;
  r->conn = c;
  snprintf(r->method, sizeof r->method, "%s", method);
  atomic_init(&r->refs, 1);
  atomic_init(&r->woken, false);
  r->state = RS_NEW;
  r->queued = MHD_NO;
  r->t_headers_ms = timers_now_ms();
  r->t_start_ns = now_ns();
  dtimer_init(&r->timer, on_timeout, r);
  atomic_fetch_add(&hs->active, 1);
  return r;
}

static void request_unref(request *r) {
  if (!r || atomic_fetch_sub(&r->refs, 1) != 1) return;
  bufpool_put(r->app->pool, r->body, r->cap);
  bufpool_put(r->app->pool, r->grad, r->grad_cap);
  bufpool_put(r->app->pool, r->rows_buf, r->rows_cap);
  if (r->charged) atomic_fetch_sub(&r->hs->body_bytes, r->charged);
  if (r->doc_used) jdoc_free(&r->doc);
  if (r->held) MHD_destroy_response(r->held);
  psnap_unref(r->w.snap);
  psnap_unref(r->w.rows);
  if (r->in) instance_unref(r->in);
  atomic_fetch_sub(&r->hs->active, 1);
  free(r); /* mem_xcalloc'd */
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
  (void)c;
  http_server *hs = cls;
  request *r = *con_cls;
  if (!r) return;
  if (r->status) {
    size_t ri = routes_index(r->route);
    atomic_fetch_add(&hs->counts[ri * HTTP_STATUS_SLOTS + status_slot(hs, r->status)], 1);
    if (log_get_level() <= LOG_DEBUG)
      log_debug("request", "method=%s route=%s status=%u ms=%.3f%s", r->method, r->route ? r->route->path : "-",
                r->status, r->t_start_ns ? (double)(now_ns() - r->t_start_ns) / 1e6 : 0.0,
                toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " aborted=true");
  }
  request_unref(r);
  *con_cls = NULL;
}

request *http__request_new(http_server *hs, const char *method) { return request_new(hs, NULL, method); }
void http__request_unref(request *r) { request_unref(r); }
void http__request_ref(request *r) { atomic_fetch_add(&r->refs, 1); }

/* A replayed request's query: key\0value\0 pairs. */
static const char *replayed_arg(const request *r, const char *key) {
  const char *p = r->rargs, *end = r->rargs + r->rargs_len;
  while (p < end) {
    const char *v = p + strlen(p) + 1;
    if (v >= end) break;
    if (!strcmp(p, key)) return v;
    p = v + strlen(v) + 1;
  }
  return NULL;
}

const char *http_arg(request *r, const char *key) {
  if (!r->conn) return r->rargs ? replayed_arg(r, key) : NULL;
  return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key);
}

const char *http_header(request *r, const char *key) {
  if (!r->conn) return !strcasecmp(key, "Idempotency-Key") ? r->ridem : NULL;
  return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, key);
}

/* ---- suspension ---------------------------------------------------------------- */

void http_suspend(void *arg) {
  request *r = arg;
  http_server *hs = r->hs;
  pthread_mutex_lock(&hs->lock);
  r->state = RS_SUSPENDED;
  r->sprev = NULL;
  r->snext = hs->suspended;
  if (hs->suspended) hs->suspended->sprev = r;
  hs->suspended = r;
  hs->nsuspended++;
  pthread_mutex_unlock(&hs->lock);
  MHD_suspend_connection(r->conn);
}

static void resume(request *r) {
  http_server *hs = r->hs;
  pthread_mutex_lock(&hs->lock);
  if (r->sprev) r->sprev->snext = r->snext;
  else hs->suspended = r->snext;
  if (r->snext) r->snext->sprev = r->sprev;
  r->snext = r->sprev = NULL;
  hs->nsuspended--;
  r->state = RS_RESUMED;
  pthread_mutex_unlock(&hs->lock);
  MHD_resume_connection(r->conn);
}

void http__resume(request *r) { resume(r); }

static void on_timeout(dtimer *t) { /* loop thread */
  request *r = t->arg;
  if (r->in && instance_unwait(r->in, &r->w)) resume(r);
  request_unref(r); /* the timer's reference */
}

/* The waker and the handler arming the timer may run at the same time on
 * two threads (the wake can come as soon as the waiter is registered).  Each
 * writes first (woken; the timer's heap slot, under the timers' mutex) and
 * reads the other's second, so at least one of them sees both: the timer is
 * either cancelled by the waker, or by http_arm_timeout itself, or fires and
 * finds nothing to unwait.  Exactly one timers_cancel can succeed, so the
 * timer's reference is dropped once. */
void http_arm_timeout(request *r, uint64_t deadline_ms) {
  atomic_fetch_add(&r->refs, 1);
  if (!timers_arm(r->app->tm, &r->timer, deadline_ms)) {
    request_unref(r);
    return;
  }
  if (atomic_load(&r->woken) && timers_cancel(r->app->tm, &r->timer)) request_unref(r);
}

void http_wake(waiter *w) {
  request *r = w->arg;
  atomic_store(&r->woken, true);
  if (timers_cancel(r->app->tm, &r->timer)) request_unref(r);
  resume(r);
}

size_t http_server_suspended(http_server *hs) {
  pthread_mutex_lock(&hs->lock);
  size_t n = hs->nsuspended;
  pthread_mutex_unlock(&hs->lock);
  return n;
}

int http_server_active(http_server *hs) { return atomic_load(&hs->active); }

size_t http_server_body_bytes(http_server *hs) { return atomic_load(&hs->body_bytes); }
size_t http_server_body_limit(http_server *hs) { return hs->body_limit; }

/* ---- the access handler ---------------------------------------------------------- */

static enum MHD_Result early_error(request *r, int code, const char *fmt, ...) {
  derr e = {0};
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e.msg, sizeof e.msg, fmt, ap);
  va_end(ap);
  e.code = code;
  return reply_error(r, code, &e);
}

static int content_kind(const char *ct) {
  if (!ct || !*ct) return CT_NONE;
  size_t n = strcspn(ct, ";");
  while (n && (ct[n - 1] == ' ' || ct[n - 1] == '\t')) n--;
  if ((n == 16 && !strncasecmp(ct, "application/json", n)) || (n == 9 && !strncasecmp(ct, "text/json", n)) ||
      (n == 33 && !strncasecmp(ct, "application/x-www-form-urlencoded", n)))
    return CT_JSON;
  if (n == 24 && !strncasecmp(ct, "application/octet-stream", n)) return CT_BINARY;
  return CT_OTHER;
}

/* Headers that must not repeat: with two Content-Types or Content-Lengths
 * the request means different things to different readers (libmicrohttpd
 * takes the first; a proxy in front of us may have taken the last). */
struct header_count {
  int content_type, content_length;
};

static enum MHD_Result count_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
  (void)kind;
  (void)value;
  struct header_count *hc = cls;
  if (!strcasecmp(key, MHD_HTTP_HEADER_CONTENT_TYPE)) hc->content_type++;
  if (!strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH)) hc->content_length++;
  return MHD_YES;
}

/* The query parameters must all be ones the route reads: a typo such as
 * ?stpe=5 would otherwise silently turn the staleness check off. */
struct arg_check {
  const route *rt;
  const char *unknown;
};

static enum MHD_Result check_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
  (void)kind;
  (void)value;
  struct arg_check *ac = cls;
  if (routes_param_known(ac->rt, key)) return MHD_YES;
  ac->unknown = key;
  return MHD_NO; /* stop at the first unknown one */
}

/* 404 or 405 for a request no route serves. */
static enum MHD_Result no_route(request *r, const char *url, unsigned status) {
  if (status == 405) return early_error(r, E_METHOD, "%s is not allowed here; allowed: %s", r->method, r->allow);
  static const char base[] = "/v1/optimizers/";
  if (!strncmp(url, base, sizeof base - 1)) { /* a bad name rather than a bad path */
    const char *seg = url + sizeof base - 1;
    size_t n = strcspn(seg, "/");
    char nm[NAME_MAX_LEN + 2];
    snprintf(nm, sizeof nm, "%.*s", (int)(n < sizeof nm - 1 ? n : sizeof nm - 1), seg);
    if (n > NAME_MAX_LEN || !spec_name_ok(nm))
      return early_error(r, E_BAD_NAME, "'%.80s' is not an instance name ([A-Za-z0-9][A-Za-z0-9._-]{0,63})", seg);
  }
  return early_error(r, E_NOT_FOUND, "no resource at %.200s", url);
}

/* The declared body, checked before any of it is read: allowed here, not
 * over --max-body, of a type the route takes, and able to fit in the body
 * budget now.  Takes no memory. */
static enum MHD_Result check_body(request *r) {
  app *a = r->app;
  http_server *hs = r->hs;
  const char *cl = http_header(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
  const char *te = http_header(r, MHD_HTTP_HEADER_TRANSFER_ENCODING);
  unsigned long long len = cl ? strtoull(cl, NULL, 10) : 0;
  if (len == 0 && te == NULL) return MHD_YES;
  if (!(r->route->flags & (R_JSON | R_BINARY)))
    return early_error(r, E_BAD_REQUEST, "%s %s takes no body", r->method, r->route->path);
  if (len > (unsigned long long)a->cfg->max_body)
    return early_error(r, E_TOO_LARGE, "the body is %llu bytes; the limit is %ld (--max-body)", len, a->cfg->max_body);
  r->content = content_kind(http_header(r, MHD_HTTP_HEADER_CONTENT_TYPE));
  bool ok = (r->content == CT_JSON || r->content == CT_NONE) ? (r->route->flags & R_JSON)
            : r->content == CT_BINARY                        ? (r->route->flags & R_BINARY)
                                                             : false;
  if (!ok)
    return early_error(r, E_MEDIA_TYPE, "%s %s takes %s", r->method, r->route->path,
                       r->route->flags & R_BINARY ? "application/json or application/octet-stream"
                                                  : "application/json (curl: -H 'Content-Type: application/json')");
  if (r->content == CT_NONE) r->content = CT_JSON;
  if (r->content == CT_BINARY && (r->dtype = codec_half_dtype(http_header(r, MHD_HTTP_HEADER_CONTENT_TYPE))) < 0)
    return early_error(r, E_MEDIA_TYPE, "Content-Type: dtype must be float32, bfloat16 or float16");
  r->declared = (size_t)len;
  size_t held = atomic_load(&hs->body_bytes), need = bufpool_capacity(a->pool, r->declared);
  if (need > hs->body_limit)
    return early_error(r, E_BUSY, "a %llu-byte body is more than --max-body-memory (%zu bytes) lets bodies hold", len,
                       hs->body_limit);
  if (need > hs->body_limit - (held < hs->body_limit ? held : hs->body_limit))
    return early_error(r, E_BUSY, "the bodies in flight hold %zu of the %zu bytes --max-body-memory allows; retry later",
                       held, hs->body_limit);
  return MHD_YES;
}

/* First call: the headers are in.  Route, authenticate, check the query
 * parameters and the body's declared size and type before reading any of
 * it. */
static enum MHD_Result begin(request *r, const char *url) {
  app *a = r->app;
  unsigned status = 0;
  char name[257];
  name[0] = 0;
  r->route = routes_match(r->method, url, name, sizeof name, &status, r->allow, sizeof r->allow);
  if (atomic_load(&a->stopping)) return early_error(r, E_SHUTTING_DOWN, "the daemon is shutting down");
  if (!r->route) return no_route(r, url, status);
  r->auth = auth_check(a->au, http_header(r, MHD_HTTP_HEADER_AUTHORIZATION));
  if (!(r->route->flags & R_PUBLIC)) {
    if (r->auth == AUTH_NONE)
      return early_error(r, E_UNAUTHORIZED, "send a valid token as 'Authorization: Bearer TOKEN'");
    if ((r->route->flags & R_WRITE) && r->auth < AUTH_WRITE)
      return early_error(r, E_FORBIDDEN, "this token is read-only");
  }
  if (r->route->flags & R_NAME) {
    if (!spec_name_ok(name))
      return early_error(r, E_BAD_NAME, "'%.80s' is not an instance name ([A-Za-z0-9][A-Za-z0-9._-]{0,63})", name);
    snprintf(r->name, sizeof r->name, "%.64s", name);
  }
  struct arg_check ac = {r->route, NULL};
  MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, check_arg, &ac);
  if (ac.unknown) {
    char known[160];
    return early_error(r, E_BAD_REQUEST, "?%.40s: unknown query parameter (%s %s takes: %s)", ac.unknown, r->method,
                       r->route->path, routes_params_list(r->route, known, sizeof known));
  }
  struct header_count hc = {0};
  MHD_get_connection_values(r->conn, MHD_HEADER_KIND, count_header, &hc);
  if (hc.content_type > 1 || hc.content_length > 1)
    return early_error(r, E_BAD_REQUEST, "Content-Type and Content-Length may each be given once");
  const char *accept = http_header(r, MHD_HTTP_HEADER_ACCEPT);
  r->accept_binary = accept && strstr(accept, "application/octet-stream") != NULL;
  if (r->accept_binary && (r->accept_dtype = codec_half_dtype(strstr(accept, "application/octet-stream"))) < 0)
    return early_error(r, E_MEDIA_TYPE, "Accept: dtype must be float32, bfloat16 or float16");
  r->state = RS_BODY; /* before check_body: a refusal there sets RS_DONE */
  return check_body(r);
}

/* Charges bytes to the body budget; false (nothing charged) if it would
 * pass --max-body-memory.  Any HTTP thread. */
static bool body_charge(request *r, size_t bytes) {
  http_server *hs = r->hs;
  size_t cur = atomic_load(&hs->body_bytes);
  do {
    if (bytes > hs->body_limit || cur > hs->body_limit - bytes) return false;
  } while (!atomic_compare_exchange_weak(&hs->body_bytes, &cur, cur + bytes));
  r->charged += bytes;
  return true;
}

static void body_uncharge(request *r, size_t bytes) {
  atomic_fetch_sub(&r->hs->body_bytes, bytes);
  r->charged -= bytes;
}

/* Refuses the body with code: its memory goes back now, the rest of it is
 * read and dropped, and the error is the reply at its end. */
static void body_refuse(request *r, int code) {
  bufpool_put(r->app->pool, r->body, r->cap);
  body_uncharge(r, r->charged);
  r->body = NULL;
  r->len = r->cap = 0;
  r->refused = code;
}

/* Makes room for `need` bytes.  The first time, an idle pooled buffer of
 * the whole declared size when there is one (already touched: no new
 * memory, no copy).  Otherwise the buffer doubles (at least BODY_CHUNK, at
 * most the declared size or --max-body): in place when it is big enough to
 * be mapped (its pages move, only the difference is charged), else into a
 * new buffer, both charged while what came so far is copied.  False:
 * refused (busy). */
static bool body_grow(request *r, size_t need) {
  bufpool *pool = r->app->pool;
  size_t ncap;
  char *nb;
  if (!r->body && r->declared >= need && (nb = bufpool_get_idle(pool, r->declared, &ncap))) {
    if (!body_charge(r, ncap)) {
      bufpool_put(pool, nb, ncap);
      return false;
    }
    r->body = nb;
    r->cap = ncap;
    return true;
  }
  size_t top = r->declared ? r->declared : (size_t)r->app->cfg->max_body;
  size_t want = r->cap * 2 > BODY_CHUNK ? r->cap * 2 : BODY_CHUNK;
  if (want > top) want = top;
  if (want < need) want = need;
  if (!(ncap = bufpool_capacity(pool, want))) return false;
  if (r->body && ncap > r->cap && body_charge(r, ncap - r->cap)) {
    if ((nb = bufpool_grow(pool, r->body, r->cap, want, &ncap))) {
      r->body = nb;
      r->cap = ncap;
      return true;
    }
    body_uncharge(r, bufpool_capacity(pool, want) - r->cap);
  }
  if (!body_charge(r, ncap)) return false;
  if (!(nb = bufpool_get(pool, want, &ncap))) return false; /* charged: released by body_refuse */
  if (r->len) memcpy(nb, r->body, r->len);
  if (r->body) {
    bufpool_put(pool, r->body, r->cap);
    body_uncharge(r, r->cap);
  }
  r->body = nb;
  r->cap = ncap;
  return true;
}

static void body_append(request *r, const char *data, size_t n) {
  if (r->refused) return;
  if (r->len + n > (size_t)r->app->cfg->max_body) { /* chunked: no declared size to refuse early */
    body_refuse(r, E_TOO_LARGE);
    return;
  }
  if (r->len + n > r->cap && !body_grow(r, r->len + n)) {
    body_refuse(r, E_BUSY);
    return;
  }
  memcpy(r->body + r->len, data, n);
  r->len += n;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                 const char *version, const char *upload, size_t *upload_size, void **con_cls) {
  (void)version;
  http_server *hs = cls;
  request *r = *con_cls;
  if (!r) {
    r = request_new(hs, c, method);
    *con_cls = r;
    return begin(r, url);
  }
  if (r->state == RS_DONE) return MHD_YES;
  if (*upload_size) {
    /* libmicrohttpd's timeout only counts silence, so a client dribbling a
     * byte now and then (slowloris) would hold its connection forever and,
     * with enough of them, every connection slot.  A body gets the idle
     * timeout plus one second per 64 KiB received (big bodies on slow links
     * still get through); a slower one is cut off. */
    uint64_t allowed_ms = (uint64_t)r->app->cfg->connection_timeout * 1000 + r->len / 64;
    if (timers_now_ms() - r->t_headers_ms > allowed_ms) {
      log_warn("slow request cut off", "method=%s path=%s received=%zu", r->method,
               r->route ? r->route->path : "?", r->len);
      return MHD_NO;
    }
    body_append(r, upload, *upload_size);
    *upload_size = 0;
    return MHD_YES;
  }
  if (r->state == RS_RESUMED) {
    r->state = RS_HANDLER;
    return r->on_resume ? r->on_resume(r) : MHD_NO;
  }
  if (r->state != RS_BODY) return MHD_YES; /* suspended: nothing to do */
  if (r->refused == E_TOO_LARGE)
    return early_error(r, E_TOO_LARGE, "the body is larger than %ld bytes (--max-body)", r->app->cfg->max_body);
  if (r->refused == E_BUSY)
    return early_error(r, E_BUSY, "the bodies in flight hold the %zu bytes --max-body-memory allows; retry later",
                       r->hs->body_limit);
  if ((r->route->flags & (R_JSON | R_BINARY)) && !(r->route->flags & R_BODY_OPT) && r->len == 0 &&
      strcmp(r->route->method, "GET") != 0)
    return early_error(r, E_BAD_REQUEST, "%s %s needs a body", r->method, r->route->path);
  r->state = RS_HANDLER;
  if (r->app->rp && (r->route->flags & R_REPL)) return http_cluster_write(r);
  if (r->app->rp && http_cluster_misread(r)) return http_cluster_redirect(r);
  if (r->app->rp && http_cluster_leader_read(r)) return http_cluster_read(r);
  return r->route->fn(r);
}

/* ---- start / stop ------------------------------------------------------------------ */

static int hex_digit(char c) {
  return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Decodes %XX in the path and in query values, as libmicrohttpd's own
 * unescaping does, except "%00": decoded, that NUL would silently cut the
 * string short ("/v1/optimizers/m%00x" would name instance "m",
 * "?worker=w%00x" worker "w").  It stays "%00", which no name or number
 * accepts, so the request is refused instead of obeyed.  HTTP threads. */
static size_t unescape(void *cls, struct MHD_Connection *c, char *s) {
  (void)cls;
  (void)c;
  char *w = s;
  for (const char *p = s; *p; p++) {
    int hi, lo;
    if (p[0] == '%' && (hi = hex_digit(p[1])) >= 0 && (lo = hex_digit(p[2])) >= 0 && (hi | lo)) {
      *w++ = (char)(hi << 4 | lo);
      p += 2;
    } else {
      *w++ = *p;
    }
  }
  *w = 0;
  return (size_t)(w - s);
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
  (void)cls;
  char msg[512];
  vsnprintf(msg, sizeof msg, fmt, ap);
  size_t n = strlen(msg);
  while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' ')) msg[--n] = 0;
  for (char *p = msg; *p; p++)
    if (*p == '"') *p = '\'';
  log_debug("libmicrohttpd", "detail=\"%s\"", msg);
}

static char *slurp(const char *path, derr *e) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    derr_set(e, E_IO, "cannot read %s", path);
    return NULL;
  }
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  if (n < 0 || n > (1 << 20)) {
    fclose(f);
    derr_set(e, E_IO, "%s: not a PEM file", path);
    return NULL;
  }
  char *s = mem_xmalloc((size_t)n + 1);
  size_t got = fread(s, 1, (size_t)n, f);
  fclose(f);
  s[got] = 0;
  return s;
}

/* --listen's HOST:PORT (HOST may be [v6]) resolved into ss; host receives
 * HOST without brackets.  0 or -E_BAD_REQUEST with e set. */
static int parse_listen(const char *listen, struct sockaddr_storage *ss, int *family, long *port, char *host,
                        size_t host_cap, derr *e) {
  const char *colon = strrchr(listen, ':');
  if (!colon || colon == listen) return derr_set(e, E_BAD_REQUEST, "--listen %s: expected HOST:PORT", listen);
  size_t hl = (size_t)(colon - listen);
  if (listen[0] == '[' && hl >= 2 && listen[hl - 1] == ']') snprintf(host, host_cap, "%.*s", (int)(hl - 2), listen + 1);
  else snprintf(host, host_cap, "%.*s", (int)hl, listen);
  char *end;
  *port = strtol(colon + 1, &end, 10);
  if (*end || *port < 0 || *port > 65535) return derr_set(e, E_BAD_REQUEST, "--listen %s: bad port", listen);
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
  struct addrinfo *ai = NULL;
  char portstr[16];
  snprintf(portstr, sizeof portstr, "%ld", *port);
  if (getaddrinfo(host, portstr, &hints, &ai) != 0 || !ai)
    return derr_set(e, E_BAD_REQUEST, "--listen %s: cannot resolve %s", listen, host);
  memcpy(ss, ai->ai_addr, ai->ai_addrlen);
  *family = ai->ai_family;
  freeaddrinfo(ai);
  return 0;
}

http_server *http_server_start(app *a, derr *e) {
  const config *cfg = a->cfg;
  http_server *hs = mem_xcalloc(1, sizeof *hs);
  hs->app = a;
  hs->quiesced = MHD_INVALID_SOCKET;
  pthread_mutex_init(&hs->lock, NULL);
  hs->counts = mem_xcalloc((routes_count() + 1) * HTTP_STATUS_SLOTS, sizeof *hs->counts);
  status_slots_init(hs->status_slots);
  atomic_init(&hs->body_bytes, 0);
  hs->body_limit = (size_t)cfg->max_body_memory;
  char host[256];
  const char *listen = cfg->listen;
  struct sockaddr_storage ss;
  int family = AF_UNSPEC;
  long port = 0;
  if (parse_listen(listen, &ss, &family, &port, host, sizeof host, e) < 0) goto fail;

  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                   MHD_USE_ERROR_LOG | MHD_USE_TURBO;
  if (family == AF_INET6) flags |= MHD_USE_IPv6;
  long threads = cfg->threads > 0 ? cfg->threads : sysconf(_SC_NPROCESSORS_ONLN);
  if (threads < 1) threads = 1;
  if (threads > 64) threads = 64;
  struct MHD_OptionItem ops[16];
  int k = 0;
  /* the logger first: libmicrohttpd reports problems with the options that
   * follow through whichever logger is set at that point */
  ops[k++] = (struct MHD_OptionItem){MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_log, NULL};
  ops[k++] = (struct MHD_OptionItem){MHD_OPTION_SOCK_ADDR, 0, &ss};
  ops[k++] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE, (intptr_t)threads, NULL};
  ops[k++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT, (intptr_t)cfg->max_connections, NULL};
  ops[k++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT, (intptr_t)cfg->connection_timeout, NULL};
  ops[k++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_MEMORY_LIMIT, (intptr_t)CONN_MEMORY, NULL};
  ops[k++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, hs};
  ops[k++] = (struct MHD_OptionItem){MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024, NULL};
  ops[k++] = (struct MHD_OptionItem){MHD_OPTION_UNESCAPE_CALLBACK, (intptr_t)unescape, NULL};
  if (cfg->tls_cert) {
    if (!MHD_is_feature_supported(MHD_FEATURE_TLS)) {
      derr_set(e, E_BAD_REQUEST, "this libmicrohttpd was built without TLS");
      goto fail;
    }
    if (!(hs->tls_cert = slurp(cfg->tls_cert, e)) || !(hs->tls_key = slurp(cfg->tls_key, e))) goto fail;
    flags |= MHD_USE_TLS;
    ops[k++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, hs->tls_cert};
    ops[k++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, hs->tls_key};
  }
  ops[k++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
  hs->d = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, on_access, hs, MHD_OPTION_ARRAY, ops,
                           MHD_OPTION_END);
  if (!hs->d) {
    derr_set(e, E_IO, "cannot listen on %s (address in use, or a bad TLS certificate/key?)", listen);
    goto fail;
  }
  const union MHD_DaemonInfo *info = MHD_get_daemon_info(hs->d, MHD_DAEMON_INFO_BIND_PORT);
  hs->port = info ? info->port : (uint16_t)port;
  char shown[300];
  if (family == AF_INET6) snprintf(shown, sizeof shown, "[%s]", host);
  else snprintf(shown, sizeof shown, "%s", host);
  printf("listening on %s://%s:%u\n", cfg->tls_cert ? "https" : "http", shown, hs->port);
  fflush(stdout);
  log_info("listening", "address=%s:%u tls=%s threads=%ld", shown, hs->port, cfg->tls_cert ? "on" : "off", threads);
  return hs;
fail:
  free(hs->tls_cert);
  free(hs->tls_key);
  free(hs->counts);
  pthread_mutex_destroy(&hs->lock);
  free(hs);
  return NULL;
}

/* MHD's threads may still hold the quiesced socket in their epoll sets
 * (MHD_quiesce_daemon: "must not be closed until after MHD_stop_daemon"), so
 * it is shut down now, which refuses new connections at once, and closed by
 * http_server_stop. */
void http_server_quiesce(http_server *hs) {
  if (!hs || !hs->d || hs->quiesced != MHD_INVALID_SOCKET) return;
  hs->quiesced = MHD_quiesce_daemon(hs->d);
  if (hs->quiesced != MHD_INVALID_SOCKET) shutdown(hs->quiesced, SHUT_RDWR);
}

void http_server_stop(http_server *hs) {
  if (!hs) return;
  if (hs->d) MHD_stop_daemon(hs->d);
  if (hs->quiesced != MHD_INVALID_SOCKET) close(hs->quiesced);
  free(hs->tls_cert);
  free(hs->tls_key);
  free(hs->counts);
  pthread_mutex_destroy(&hs->lock);
  free(hs);
}

uint16_t http_server_port(http_server *hs) { return hs->port; }

unsigned http_server_connections(http_server *hs) {
  struct MHD_Daemon *d = atomic_load(&hs->d);
  if (!d) return 0; /* still starting */
  const union MHD_DaemonInfo *i = MHD_get_daemon_info(d, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
  return i ? i->num_connections : 0;
}
