/* http_reply: building and queuing responses for a request.
 *
 * Every reply gets the common headers (Content-Type, Cache-Control:
 * no-store for routes flagged R_NO_STORE, Server-Timing when the handler
 * measured it).  Errors always come from the error table as
 * {"error": {"code", "message"}} plus, where useful, the instance's current
 * "step"; a 405 carries Allow from r->allow (which the route table filled).
 * Each reply function returns what MHD_queue_response returned, and records
 * it in r->queued (see http_replied).  Pooled buffers handed to a
 * reply go back to the pool when libmicrohttpd is done sending them.
 * Called on the request's HTTP thread.
 */
#ifndef DESCENT_HTTP_REPLY_H
#define DESCENT_HTTP_REPLY_H

#include <jansson.h>
#include <microhttpd.h>
#include <stdint.h>

#include "codec_json.h"
#include "errors.h"
#include "http_server.h"

/* Small JSON documents through jansson (steals body). */
enum MHD_Result reply_json(request *r, unsigned status, json_t *body);
/* A built text (takes b's buffer). */
enum MHD_Result reply_jbuf(request *r, unsigned status, jbuf *b, const char *ctype);
/* Raw bytes from the pool (taken: returned to r->app->pool after sending). */
enum MHD_Result reply_pooled(request *r, unsigned status, void *buf, size_t len, size_t cap,
                             const char *ctype);
/* As reply_pooled, with a Descent-Step header (step >= 0). */
enum MHD_Result reply_pooled_step(request *r, unsigned status, void *buf, size_t len, size_t cap,
                                  const char *ctype, int64_t step);
/* Static bytes (never freed). */
enum MHD_Result reply_static(request *r, unsigned status, const void *buf, size_t len, const char *ctype);
/* An error from the table (e may be NULL: the table's message). */
enum MHD_Result reply_error(request *r, int code, const derr *e);
/* An error that also carries the instance's current step. */
enum MHD_Result reply_error_step(request *r, int code, const derr *e, uint64_t step);
/* Queues resp (adding the common headers) and drops our reference. */
enum MHD_Result reply_queue(request *r, unsigned status, struct MHD_Response *resp, const char *ctype);

/* A reply header for the step, e.g. Descent-Step. */
/* Queues the response a replicated write held (r->held, r->status). */
enum MHD_Result reply_held(request *r);
void reply_step_header(struct MHD_Response *resp, uint64_t step);

#endif
