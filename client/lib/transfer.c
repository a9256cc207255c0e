/* transfer: running HTTP requests over libcurl: one request, or one per
 * shard at once through the multi interface (never a thread per shard), and
 * turning each outcome into 0 or an error filled from the daemon's JSON
 * ({"error": {"code", "message", "step"}}).
 *
 * Binary replies are written straight into the caller's buffer (bounded by
 * its capacity); other bodies are collected as text.  Bodies are sent from
 * the caller's memory without a copy.  A replica group's requests follow
 * 307 to the leader and are retried across its members (failover), never in
 * a way that could apply a change twice.  Runs on the handle's thread.
 */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include "internal.h"

void descent__req_init(descent__req *r, size_t shard, const char *method) {
  memset(r, 0, sizeof *r);
  r->shard = shard;
  r->method = method;
  r->step = -1;
  r->candidate = -1;
}

void descent__req_cleanup(descent__req *r) {
  if (!r) return;
  free(r->text);
  r->text = NULL;
  r->text_len = r->text_cap = 0;
}

int descent__req_path(descent__req *r, descent_error *err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(r->path, sizeof r->path, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= sizeof r->path)
    return descent__fail(err, DESCENT_EINVAL, "the request path is longer than %zu bytes", sizeof r->path - 1);
  return 0;
}

/* ---- callbacks (run inside curl_multi_perform, on the handle's thread) ---------- */

static int64_t header_int(const char *v, size_t n) {
  int64_t x = 0;
  size_t i = 0;
  while (i < n && (v[i] == ' ' || v[i] == '\t')) i++;
  if (i == n || v[i] < '0' || v[i] > '9') return -1;
  for (; i < n && v[i] >= '0' && v[i] <= '9'; i++) {
    if (x > (INT64_MAX - 9) / 10) return -1;
    x = x * 10 + (v[i] - '0');
  }
  return x;
}

static bool header_is(const char *line, size_t n, const char *name, const char **value, size_t *vlen) {
  size_t k = strlen(name);
  if (n <= k || strncasecmp(line, name, k) || line[k] != ':') return false;
  *value = line + k + 1;
  *vlen = n - k - 1;
  while (*vlen && ((*value)[*vlen - 1] == '\r' || (*value)[*vlen - 1] == '\n')) (*vlen)--;
  return true;
}

static size_t on_header(char *line, size_t size, size_t nitems, void *arg) {
  descent__req *r = arg;
  size_t n = size * nitems;
  const char *v;
  size_t vl;
  if (n > 5 && !strncmp(line, "HTTP/", 5)) { /* a new status line (after 100 Continue too) */
    const char *sp = memchr(line, ' ', n);
    r->status = sp ? (long)header_int(sp + 1, n - (size_t)(sp + 1 - line)) : 0;
    r->binary = false;
    r->step = -1;
    r->candidate = -1;
  } else if (header_is(line, n, "Content-Type", &v, &vl)) {
    while (vl && (*v == ' ' || *v == '\t')) v++, vl--;
    r->binary = vl >= 24 && !strncasecmp(v, "application/octet-stream", 24);
  } else if (header_is(line, n, "Descent-Step", &v, &vl)) {
    r->step = header_int(v, vl);
  } else if (header_is(line, n, "Descent-Candidate", &v, &vl)) {
    r->candidate = header_int(v, vl);
  }
  return n;
}

static int text_append(descent__req *r, const char *p, size_t n) {
  if (r->text_len + n + 1 > r->text_cap) {
    size_t cap = r->text_cap ? r->text_cap : 4096;
    while (cap < r->text_len + n + 1) cap *= 2;
    char *t = realloc(r->text, cap);
    if (!t) {
      r->oom = true;
      return -1;
    }
    r->text = t;
    r->text_cap = cap;
  }
  memcpy(r->text + r->text_len, p, n);
  r->text_len += n;
  r->text[r->text_len] = 0;
  return 0;
}

static size_t on_body(char *p, size_t size, size_t nmemb, void *arg) {
  descent__req *r = arg;
  size_t n = size * nmemb;
  bool ok = r->status >= 200 && r->status < 300;
  if (ok && r->sink) return n;
  if (ok && r->binary && r->target) {
    if (r->target_len < r->target_cap) {
      size_t room = r->target_cap - r->target_len;
      memcpy((char *)r->target + r->target_len, p, n < room ? n : room);
    }
    r->target_len += n; /* a longer reply is noticed by the caller, never written */
    return n;
  }
  if (ok && r->binary) {
    r->target_len += n;
    return n;
  }
  /* error bodies are short; a 2xx text body (exports) may be large */
  if (!ok && r->text_len > (1u << 20)) return n;
  return text_append(r, p, n) < 0 ? 0 : n;
}

/* ---- running -------------------------------------------------------------------- */

/* Sets up r's easy handle; headers are built into *hdrs (freed by the caller). */
static int setup(descent *d, descent__req *r, struct curl_slist **hdrs, descent_error *err) {
  CURL *e = d->shard[r->shard].easy;
  curl_easy_reset(e);
  char url[1024];
  int un = snprintf(url, sizeof url, "%s%s", d->shard[r->shard].base, r->path);
  if (un < 0 || (size_t)un >= sizeof url) return descent__fail(err, DESCENT_EINVAL, "the URL is too long");
  struct curl_slist *h = NULL, *t;
#define ADD(s)                                               \
  do {                                                       \
    if (!(t = curl_slist_append(h, (s)))) goto oom;          \
    h = t;                                                   \
  } while (0)
  char line[160];
  if (d->auth) ADD(d->auth);
  if (r->accept_type) {
    char acc[160];
    snprintf(acc, sizeof acc, "Accept: %s", r->accept_type);
    ADD(acc);
  } else {
    ADD(r->accept_binary ? "Accept: application/octet-stream" : "Accept: application/json");
  }
  ADD("Expect:"); /* no 100-continue round trip before big bodies */
  if (r->body) {
    snprintf(line, sizeof line, "Content-Type: %s", r->content_type ? r->content_type : "application/json");
    ADD(line);
  }
  if (r->idem_key) {
    snprintf(line, sizeof line, "Idempotency-Key: %s", r->idem_key);
    ADD(line);
  }
  /* reads through the leader (GET, and POST .../rows; a write goes there anyway),
   * but for GET /v1/cluster: the view of the member asked */
  if (d->read_leader && !r->local && strcmp(r->path, "/v1/cluster")) ADD("Descent-Read: leader");
#undef ADD
  *hdrs = h;
  int bad = 0;
  bad |= curl_easy_setopt(e, CURLOPT_URL, url) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_HTTPHEADER, h) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_HEADERDATA, r) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_WRITEDATA, r) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->curl_msg) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, d->connect_ms) != CURLE_OK;
  if (d->ca_file) bad |= curl_easy_setopt(e, CURLOPT_CAINFO, d->ca_file) != CURLE_OK;
  /* replicas (--cluster): a follower answers a write 307 on its leader; the
   * same method, body and token go there (the members of one group are one
   * service; the body is a buffer, so it can be sent again) */
  bad |= curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_MAXREDIRS, 3L) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_UNRESTRICTED_AUTH, 1L) != CURLE_OK;
  if (d->shard[r->shard].nmembers > 1) {
    /* a member whose host is lost sends no RST: keepalive probes notice it in
     * about 5 + 9 * 2 s (a live kernel answers them, long-polls included), and
     * the request fails over */
    bad |= curl_easy_setopt(e, CURLOPT_TCP_KEEPIDLE, 5L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_TCP_KEEPINTVL, 2L) != CURLE_OK;
  }
  if (d->timeout_ms) bad |= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, d->timeout_ms + r->wait_ms) != CURLE_OK;
  if (!strcmp(r->method, "GET")) {
    bad |= curl_easy_setopt(e, CURLOPT_HTTPGET, 1L) != CURLE_OK;
  } else if (!strcmp(r->method, "DELETE")) {
    bad |= curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "DELETE") != CURLE_OK;
  } else {
    /* POST, PUT, PATCH: the body straight from the caller's memory */
    bad |= curl_easy_setopt(e, CURLOPT_POST, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(r->body ? r->body_len : 0)) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body ? r->body : "") != CURLE_OK;
    if (strcmp(r->method, "POST")) bad |= curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method) != CURLE_OK;
  }
  if (bad) return descent__fail(err, DESCENT_EINVAL, "libcurl refused an option for %s", url);
  r->curl_msg[0] = 0;
  r->cc = CURLE_OK;
  r->status = 0;
  r->target_len = 0;
  r->text_len = 0;
  if (r->text) r->text[0] = 0;
  return 0;
oom:
  curl_slist_free_all(h);
  return descent__fail(err, DESCENT_ENOMEM, NULL);
}

descent__req *descent__reqs_new(size_t n) { return calloc(n ? n : 1, sizeof(descent__req)); }

void descent__reqs_free(descent__req *r, size_t n) {
  if (!r) return;
  for (size_t i = 0; i < n; i++) descent__req_cleanup(&r[i]);
  free(r);
}

/* One round: runs the requests marked in todo[] concurrently. */
static int perform_round(descent *d, descent__req *reqs, size_t n, const bool *todo, descent_error *err) {
  struct curl_slist *hdrs[DESCENT__MAX_SHARDS] = {0};
  bool added[DESCENT__MAX_SHARDS] = {0};
  int rc = 0;
  for (size_t i = 0; i < n; i++) {
    descent__req *r = &reqs[i];
    if (!todo[i]) continue;
    if ((rc = setup(d, r, &hdrs[i], err)) < 0) goto out;
    if (curl_multi_add_handle(d->multi, d->shard[r->shard].easy) != CURLM_OK) {
      rc = descent__fail(err, DESCENT_EINVAL, "curl_multi_add_handle failed (two requests on one daemon?)");
      goto out;
    }
    added[i] = true;
  }
  int running = 1;
  while (running) {
    CURLMcode mc = curl_multi_perform(d->multi, &running);
    if (mc == CURLM_OK && running) mc = curl_multi_poll(d->multi, NULL, 0, 1000, NULL);
    if (mc != CURLM_OK) {
      rc = descent__fail(err, DESCENT_ECONNECT, "libcurl: %s", curl_multi_strerror(mc));
      goto out;
    }
  }
  CURLMsg *m;
  int left;
  while ((m = curl_multi_info_read(d->multi, &left)))
    if (m->msg == CURLMSG_DONE)
      for (size_t i = 0; i < n; i++)
        if (todo[i] && d->shard[reqs[i].shard].easy == m->easy_handle) reqs[i].cc = m->data.result;
out:
  for (size_t i = 0; i < n; i++)
    if (added[i]) curl_multi_remove_handle(d->multi, d->shard[reqs[i].shard].easy);
  for (size_t i = 0; i < n; i++) curl_slist_free_all(hdrs[i]);
  return rc;
}

/* ---- failover across a replica group's members ------------------------------------ */

static bool is_push(const descent__req *r) {
  const char *q = strchr(r->path, '?');
  size_t n = q ? (size_t)(q - r->path) : strlen(r->path);
  return !strcmp(r->method, "POST") && n > 5 && !strncmp(r->path + n - 5, "/step", 5);
}

/* A retry cannot apply it twice: a read, or a write the daemon deduplicates. */
static bool retry_safe(const descent__req *r) {
  if (!strcmp(r->method, "GET") || r->idem_key || (strstr(r->path, "seq=") && strstr(r->path, "worker="))) return true;
  return !strcmp(r->method, "POST") && strstr(r->path, "/rows?"); /* reading rows */
}

/* A push to a group without a key of its own gets a random one, the same on every retry. */
static void give_key(const descent *d, descent__req *r) {
  if (d->shard[r->shard].nmembers < 2 || !is_push(r) || retry_safe(r)) return;
  unsigned char b[16];
  if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) return; /* no key: an ambiguous failure is not retried */
  memcpy(r->auto_key, "c-", 3);
  for (size_t i = 0; i < sizeof b; i++) snprintf(r->auto_key + 2 + 2 * i, 3, "%02x", b[i]);
  r->idem_key = r->auto_key;
}

/* The server's error code of a 503 reply ("" if none). */
static void reply_code(const descent__req *r, char *code, size_t cap) {
  code[0] = 0;
  json_t *root = r->text ? json_loadb(r->text, r->text_len, 0, NULL) : NULL;
  const char *c = json_string_value(json_object_get(json_object_get(root, "error"), "code"));
  if (c) snprintf(code, cap, "%s", c);
  json_decref(root);
}

/* After one attempt: true when it is to be sent again (to the next member). */
static bool should_retry(const descent *d, const descent__req *r) {
  size_t members = d->shard[r->shard].nmembers;
  if (r->no_retry || r->oom) return false;
  if (r->cc != CURLE_OK) {
    if (members < 2 || r->cc == CURLE_ABORTED_BY_CALLBACK) return false;
    return r->cc == CURLE_COULDNT_CONNECT || r->cc == CURLE_COULDNT_RESOLVE_HOST || retry_safe(r); /* never got there */
  }
  if (r->status != 503) return false;
  char code[64];
  reply_code(r, code, sizeof code);
  if (!strcmp(code, "no_leader") || (members > 1 && !strcmp(code, "shutting_down"))) return true;
  return !strcmp(code, "leadership_lost") && retry_safe(r);
}

/* A reply came (through 307s perhaps): the member that gave it is the one to ask next time. */
static void learn_leader(descent *d, const descent__req *r) {
  descent__shard *s = &d->shard[r->shard];
  char *url = NULL;
  if (s->nmembers < 2 || curl_easy_getinfo(s->easy, CURLINFO_EFFECTIVE_URL, &url) != CURLE_OK || !url) return;
  for (size_t i = 0; i < s->nmembers; i++) {
    size_t n = strlen(s->members[i]);
    if (!strncmp(url, s->members[i], n) && url[n] == '/') {
      s->cur = i;
      s->base = s->members[i];
      return;
    }
  }
}

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

int descent__perform(descent *d, descent__req *reqs, size_t n, descent_error *err) {
  bool todo[DESCENT__MAX_SHARDS];
  if (n > d->nshards) return descent__fail(err, DESCENT_EINVAL, "more requests than daemons");
  for (size_t i = 0; i < n; i++) {
    todo[i] = true;
    give_key(d, &reqs[i]);
  }
  double deadline = now_ms() + (double)d->failover_ms;
  for (int tries = 1;; tries++) {
    int rc = perform_round(d, reqs, n, todo, err);
    if (rc < 0) return rc;
    bool again = false;
    for (size_t i = 0; i < n; i++) {
      if (!todo[i]) continue;
      descent__shard *s = &d->shard[reqs[i].shard];
      todo[i] = should_retry(d, &reqs[i]) && now_ms() < deadline;
      if (!todo[i] && reqs[i].cc == CURLE_OK) learn_leader(d, &reqs[i]);
      if (todo[i] && s->nmembers > 1) { /* the next member */
        s->cur = (s->cur + 1) % s->nmembers;
        s->base = s->members[s->cur];
      }
      again |= todo[i];
    }
    if (!again) return 0;
    struct timespec ts = {0, (long)(tries < 15 ? 20 * tries : 300) * 1000000L};
    nanosleep(&ts, NULL);
  }
}

/* ---- outcomes ------------------------------------------------------------------- */

static int transport_error(const descent *d, const descent__req *r, descent_error *err) {
  const char *detail = r->curl_msg[0] ? r->curl_msg : curl_easy_strerror(r->cc);
  int rc = r->cc == CURLE_OPERATION_TIMEDOUT ? DESCENT_ETIMEOUT : DESCENT_ECONNECT;
  if (r->cc == CURLE_WRITE_ERROR && r->oom) rc = DESCENT_ENOMEM;
  /* a certificate that does not verify: say how to trust the daemon's own */
  const char *hint = "";
  if (r->cc == CURLE_PEER_FAILED_VERIFICATION)
    hint = d->ca_file ? " (DESCENT_CA_FILE names the CA bundle this was checked against: is it the daemon's "
                        "certificate, or the CA that signed it?)"
                      : " (a daemon with its own or a self-signed certificate: set DESCENT_CA_FILE to that "
                        "certificate's PEM file to trust it)";
  else if (r->cc == CURLE_SSL_CACERT_BADFILE)
    hint = " (DESCENT_CA_FILE: not a readable PEM file)";
  descent__fail(err, rc, "%s %.200s%s: %s%s", r->method, d->shard[r->shard].base, r->path, detail, hint);
  return rc;
}

int descent__req_result(const descent *d, const descent__req *r, descent_error *err, int64_t *err_step) {
  if (err_step) *err_step = -1;
  int rc;
  if (r->cc != CURLE_OK) {
    rc = transport_error(d, r, err);
    descent__prefix_shard(err, d, r->shard);
    return rc;
  }
  if (r->oom) return descent__fail(err, DESCENT_ENOMEM, "out of memory reading the reply");
  if (r->status >= 200 && r->status < 300) return 0;
  rc = r->status >= 500 || r->status < 400 ? DESCENT_ESERVER : DESCENT_EREFUSED;
  descent__fail(err, rc, "HTTP %ld", r->status);
  if (err) err->status = (int)r->status;
  json_t *root = r->text ? json_loadb(r->text, r->text_len, 0, NULL) : NULL;
  json_t *e = json_object_get(root, "error");
  const char *code = json_string_value(json_object_get(e, "code"));
  const char *msg = json_string_value(json_object_get(e, "message"));
  json_t *st = json_object_get(e, "step");
  if (err_step && json_is_integer(st)) *err_step = json_integer_value(st);
  if (err) {
    if (code && msg) {
      snprintf(err->code, sizeof err->code, "%s", code);
      snprintf(err->message, sizeof err->message, "%s", msg);
    } else {
      /* not our daemon's error (a proxy, say): keep what it said */
      snprintf(err->code, sizeof err->code, "http_%ld", r->status);
      snprintf(err->message, sizeof err->message, "HTTP %ld from %.150s%.150s: %.150s", r->status,
               d->shard[r->shard].base, r->path, r->text ? r->text : "(no body)");
    }
  }
  json_decref(root);
  descent__prefix_shard(err, d, r->shard);
  return rc;
}
