/* http_reply: response construction and the common headers. */
#include "http_reply.h"
#include "http_routes.h"
#include "mem.h"
#include "replica.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct pooled {
  bufpool *pool;
  void *buf;
  size_t cap;
} pooled;

static void free_pooled(void *cls) {
  pooled *p = cls;
  bufpool_put(p->pool, p->buf, p->cap);
  free(p);
}

void reply_step_header(struct MHD_Response *resp, uint64_t step) {
  char s[32];
  snprintf(s, sizeof s, "%" PRIu64, step);
  MHD_add_response_header(resp, "Descent-Step", s);
}

enum MHD_Result reply_queue(request *r, unsigned status, struct MHD_Response *resp, const char *ctype) {
  if (!resp) return MHD_NO;
  if (ctype) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
  if (r->route && (r->route->flags & R_NO_STORE)) MHD_add_response_header(resp, "Cache-Control", "no-store");
  if (r->decode_ms > 0 || r->apply_ms > 0 || r->encode_ms > 0) {
    char st[160];
    snprintf(st, sizeof st, "decode;dur=%.3f, apply;dur=%.3f, encode;dur=%.3f", r->decode_ms, r->apply_ms,
             r->encode_ms);
    MHD_add_response_header(resp, "Server-Timing", st);
  }
  if (r->app->rp) {
    char ai[32];
    snprintf(ai, sizeof ai, "%" PRIu64, replica_applied(r->app->rp));
    MHD_add_response_header(resp, "Descent-Applied-Index", ai);
  }
  r->status = status;
  if (r->capture) { /* a replicated write: held for the request that proposed it */
    if (r->held) MHD_destroy_response(r->held);
    r->held = resp;
    r->state = RS_DONE;
    r->queued = MHD_YES;
    return MHD_YES;
  }
  enum MHD_Result ret = MHD_queue_response(r->conn, status, resp);
  MHD_destroy_response(resp);
  r->state = RS_DONE;
  r->queued = ret;
  return ret;
}

enum MHD_Result reply_held(request *r) {
  struct MHD_Response *resp = r->held;
  r->held = NULL;
  r->capture = false;
  if (!resp) return MHD_NO;
  enum MHD_Result ret = MHD_queue_response(r->conn, r->status, resp);
  MHD_destroy_response(resp);
  r->state = RS_DONE;
  r->queued = ret;
  return ret;
}

enum MHD_Result reply_pooled(request *r, unsigned status, void *buf, size_t len, size_t cap,
                             const char *ctype) {
  return reply_pooled_step(r, status, buf, len, cap, ctype, -1);
}

enum MHD_Result reply_pooled_step(request *r, unsigned status, void *buf, size_t len, size_t cap,
                                  const char *ctype, int64_t step) {
  pooled *p = mem_xmalloc(sizeof *p);
  *p = (pooled){r->app->pool, buf, cap};
  struct MHD_Response *resp =
      MHD_create_response_from_buffer_with_free_callback_cls(len, buf, free_pooled, p);
  if (!resp) {
    free_pooled(p);
    return MHD_NO;
  }
  if (step >= 0) reply_step_header(resp, (uint64_t)step);
  return reply_queue(r, status, resp, ctype);
}

enum MHD_Result reply_static(request *r, unsigned status, const void *buf, size_t len, const char *ctype) {
  struct MHD_Response *resp = MHD_create_response_from_buffer(len, (void *)buf, MHD_RESPMEM_PERSISTENT);
  return reply_queue(r, status, resp, ctype);
}

enum MHD_Result reply_jbuf(request *r, unsigned status, jbuf *b, const char *ctype) {
  if (b->failed) {
    jbuf_release(b);
    derr e;
    derr_set(&e, E_QUOTA, "not enough memory to encode the reply");
    return reply_error(r, E_QUOTA, &e);
  }
  size_t len, cap;
  char *p = jbuf_take(b, &len, &cap);
  return reply_pooled(r, status, p, len, cap, ctype ? ctype : "application/json");
}

enum MHD_Result reply_json(request *r, unsigned status, json_t *body) {
  jbuf b;
  jbuf_init(&b, r->app->pool, 512);
  jbuf_json_splice(&b, body, NULL, 0);
  json_decref(body);
  jbuf_put(&b, "\n", 1);
  return reply_jbuf(r, status, &b, "application/json");
}

/* Copies msg into out (cap bytes) with every byte that does not belong to a
 * well-formed UTF-8 sequence replaced by '?'.  Messages quote what the client
 * sent (names from the path, query values, cut at a byte count, perhaps in
 * the middle of a character), and jansson refuses a string that is not
 * UTF-8: without this such an error would go out with an empty body. */
static void utf8_clean(char *out, size_t cap, const char *msg) {
  const unsigned char *p = (const unsigned char *)msg;
  size_t o = 0;
  while (*p && o + 1 < cap) {
    unsigned c = p[0];
    size_t len = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    bool ok = len > 0 && o + len < cap;
    for (size_t k = 1; ok && k < len; k++) ok = (p[k] & 0xc0) == 0x80;
    /* no overlong forms, no surrogates, nothing above U+10FFFF */
    if (ok && len > 2)
      ok = !((c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] >= 0xa0) || (c == 0xf0 && p[1] < 0x90) ||
             (c == 0xf4 && p[1] >= 0x90));
    if (!ok) {
      out[o++] = '?';
      p++;
      continue;
    }
    memcpy(out + o, p, len);
    o += len;
    p += len;
  }
  out[o] = 0;
}

static enum MHD_Result error_reply(request *r, int code, const derr *e, bool with_step, uint64_t step) {
  if (code < 0) code = -code;
  char msg[sizeof e->msg];
  utf8_clean(msg, sizeof msg, e && e->msg[0] ? e->msg : derr_default(code));
  json_t *err = json_pack("{s:s,s:s}", "code", derr_name(code), "message", msg);
  if (with_step) json_object_set_new(err, "step", json_integer((json_int_t)step));
  json_t *body = json_pack("{s:o}", "error", err);
  jbuf b;
  jbuf_init(&b, r->app->pool, 512);
  jbuf_json_splice(&b, body, NULL, 0);
  json_decref(body);
  jbuf_put(&b, "\n", 1);
  size_t len, cap;
  char *p = jbuf_take(&b, &len, &cap);
  if (!p) return MHD_NO;
  pooled *pp = mem_xmalloc(sizeof *pp);
  *pp = (pooled){r->app->pool, p, cap};
  struct MHD_Response *resp = MHD_create_response_from_buffer_with_free_callback_cls(len, p, free_pooled, pp);
  if (!resp) {
    free_pooled(pp);
    return MHD_NO;
  }
  if (code == E_METHOD && r->allow[0]) MHD_add_response_header(resp, "Allow", r->allow); /* from the route table */
  if (code == E_UNAUTHORIZED) MHD_add_response_header(resp, "WWW-Authenticate", "Bearer realm=\"descent\"");
  return reply_queue(r, (unsigned)derr_status(code), resp, "application/json");
}

enum MHD_Result reply_error(request *r, int code, const derr *e) { return error_reply(r, code, e, false, 0); }

enum MHD_Result reply_error_step(request *r, int code, const derr *e, uint64_t step) {
  return error_reply(r, code, e, true, step);
}
