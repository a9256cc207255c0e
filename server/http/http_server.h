/* http_server: libmicrohttpd behind descent's request lifecycle.
 *
 * Owns the MHD daemon (internal thread pool, epoll, suspend/resume), the
 * request object of every connection, body reading, authentication, and
 * every suspension: a suspended request is on one list, holds a timer when
 * it has a deadline, and is resumed exactly once (by its waker, its timer,
 * or shutdown).
 *
 * Bodies: the route, the token, the query parameters and the declared size
 * are checked when the headers are in, before a byte of the body is read.
 * Memory is taken as the bytes arrive: a pooled buffer that doubles, up to
 * the declared size (in place once it is 2 MiB or more: its pages move, none
 * is copied or touched ahead of the data), except that a body whose declared
 * size matches an idle pooled buffer takes it whole at its first byte
 * (already touched: it costs no new memory, and the binary push stays
 * zero-copy).
 * Every body buffer is charged to one budget (--max-body-memory) until its
 * request ends; a body that would pass it is refused with 503 busy: when the
 * headers are in if its declared size does not fit, else at its end, the
 * rest having been read and dropped (libmicrohttpd 0.9.75 cannot answer in
 * the middle of an upload).
 *
 * Request states:
 *   NEW --headers ok--> BODY --complete--> HANDLER --reply queued--> DONE
 *                                             '--suspend--> SUSPENDED --resume--> RESUMED --reply--> DONE
 * Handlers run on MHD's threads; wakers may run on any thread.
 */
#ifndef DESCENT_HTTP_SERVER_H
#define DESCENT_HTTP_SERVER_H

#include <microhttpd.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "app.h"
#include "codec_json.h"
#include "instance.h"
#include "timers.h"

struct route;

enum content_kind { CT_NONE, CT_JSON, CT_BINARY, CT_OTHER };
enum req_state { RS_NEW, RS_BODY, RS_HANDLER, RS_SUSPENDED, RS_RESUMED, RS_DONE };

typedef struct request request;
typedef enum MHD_Result (*resume_fn)(request *r);

struct request {
  app *app;
  http_server *hs;
  struct MHD_Connection *conn;
  const struct route *route;
  char name[NAME_MAX_LEN + 1]; /* the {name} of the path, if any */
  char method[8];
  char allow[64];              /* a 405's Allow header (from the route table) */
  int auth;                    /* enum auth_level */
  int content;                 /* enum content_kind */
  unsigned status;             /* the status queued */
  enum MHD_Result queued;      /* what queuing the reply returned; MHD_NO until then */
  bool accept_binary;
  int dtype;        /* enum wire_dtype of a binary body (codec_half.h) */
  int accept_dtype; /* enum wire_dtype binary replies are sent in */
  atomic_int refs;
  int state;
  /* body */
  char *body;
  size_t len, cap;
  size_t declared;             /* Content-Length (0: none, or chunked) */
  size_t charged;              /* bytes charged to the body budget, released with the request */
  int refused;                 /* 0, or E_TOO_LARGE / E_BUSY: the rest of the body is dropped */
  /* timing, for Server-Timing */
  uint64_t t_start_ns;
  uint64_t t_headers_ms;   /* when the headers were in (timers_now_ms): bounds a slow body */
  double decode_ms, apply_ms, encode_ms;
  /* suspension */
  request *snext, *sprev; /* on the server's suspended list */
  waiter w;
  dtimer timer;           /* on_timeout, armed by http_arm_timeout */
  atomic_bool woken;      /* http_wake ran (cancels a timer armed after it) */
  instance *in;           /* a reference, while the handler needs it */
  resume_fn on_resume;
  /* handler scratch, released with the request */
  jdoc doc;
  bool doc_used;
  float *grad;
  size_t grad_cap;
  size_t grad_len;   /* a binary float32 body kept as r->grad: its bytes (0: grad is n floats only) */
  void *rows_buf;    /* a push's sparse scratch (codec_push_bufs.rows), pooled */
  size_t rows_cap;
  push_rows *prows;  /* a push's sparse tensors, one per sparse tensor (into rows_buf or grad) */
  bool want_params;
  /* replicas (http_cluster.c): a write goes through the Raft log and is
   * run from it as a replayed request (conn NULL) whose reply is held, not
   * queued; the proposer's request then queues the held reply. */
  bool capture;               /* reply_queue keeps the response in held */
  struct MHD_Response *held;
  const char *rargs;          /* a replayed request's query: key\0value\0..., rargs_len bytes */
  size_t rargs_len;
  const char *ridem;          /* its Idempotency-Key, or NULL */
};

/* What the reply a helper queued returned: a handler whose helper answered
 * the request itself (an error) returns this. */
static inline enum MHD_Result http_replied(const request *r) { return r->queued; }

/* Starts serving on cfg->listen.  Prints "listening on http(s)://HOST:PORT"
 * on stdout.  Returns NULL with e set on failure. */
http_server *http_server_start(app *a, derr *e);

/* Stops accepting new connections (in-flight requests go on). */
void http_server_quiesce(http_server *hs);
/* Stops the daemon; every suspended request must have been resumed. */
void http_server_stop(http_server *hs);

uint16_t http_server_port(http_server *hs);
/* Open connections (0 while the server is still starting).  Any thread. */
unsigned http_server_connections(http_server *hs);
size_t http_server_suspended(http_server *hs);
/* Requests currently inside a handler or waiting (for shutdown). */
int http_server_active(http_server *hs);

/* Suspends r (from its handler, on its thread).  Used as the `suspend`
 * callback of instance_push / instance_wait_step. */
void http_suspend(void *r);

/* Arms r's timeout: at `deadline` (ms), `instance_unwait` is tried and, if
 * the request was still waiting, it is resumed.  The handler's thread, after
 * the waiter was registered: a wake that came first (on another thread)
 * leaves the timer disarmed. */
void http_arm_timeout(request *r, uint64_t deadline_ms);

/* The waker for r->w: cancels the timer and resumes r.  Any thread. */
void http_wake(waiter *w);

/* Requests answered, by route (routes_index; routes_count() for unmatched)
 * and status: *n receives the number of status slots, statuses[k] the status
 * of slot k (0 for "any other"); counts[route * n + k] the count.  The slots
 * are 200, 201 and every status of the error table (DERR_TABLE), so there
 * are at most E__COUNT + 2 of them plus "other". */
#define HTTP_STATUS_SLOTS (E__COUNT + 3)
void http_server_counts(http_server *hs, const unsigned **statuses, size_t *n, uint64_t *counts);

/* Bytes the bodies of requests in flight hold, and the --max-body-memory budget. */
size_t http_server_body_bytes(http_server *hs);
size_t http_server_body_limit(http_server *hs);

/* For http_cluster.c: a request object with no connection (a replayed
 * write), its release, and resuming a suspended request.  Any thread. */
request *http__request_new(http_server *hs, const char *method);
void http__request_unref(request *r);
void http__request_ref(request *r);
void http__resume(request *r);

/* Query argument of r (NULL if absent). */
const char *http_arg(request *r, const char *key);
const char *http_header(request *r, const char *key);

#endif
