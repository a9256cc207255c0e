/* handlers: one function per route (see http_routes.c), grouped by resource
 * family: handlers_optimizers.c (create, list, describe, patch, delete),
 * handlers_step.c (step, params), handlers_rows.c (rows of sparse tensors), handlers_state.c (state export/import),
 * handlers_search.c (ask, tell), handlers_workers.c (workers, history),
 * handlers_misc.c (healthz, metrics, dashboard), handlers_playground.c.
 *
 * Each runs on an HTTP thread once the whole body has arrived, replies
 * through http_reply (errors from the error table only), and either queues
 * a response or suspends the request with an on_resume continuation.
 */
#ifndef DESCENT_HANDLERS_H
#define DESCENT_HANDLERS_H

#include <jansson.h>
#include <microhttpd.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct request request;

enum MHD_Result h_healthz(request *r);
enum MHD_Result h_metrics(request *r);
enum MHD_Result h_dashboard(request *r);
enum MHD_Result h_playground(request *r);
enum MHD_Result h_create(request *r);
enum MHD_Result h_list(request *r);
enum MHD_Result h_describe(request *r);
enum MHD_Result h_patch(request *r);
enum MHD_Result h_delete(request *r);
enum MHD_Result h_snapshot(request *r);
enum MHD_Result h_step(request *r);
enum MHD_Result h_params(request *r);
enum MHD_Result h_rows_get(request *r);
enum MHD_Result h_rows_post(request *r);
enum MHD_Result h_state_get(request *r);
enum MHD_Result h_state_put(request *r);
enum MHD_Result h_ask(request *r);
enum MHD_Result h_tell(request *r);
enum MHD_Result h_workers(request *r);
enum MHD_Result h_history(request *r);
enum MHD_Result h_cluster(request *r);
enum MHD_Result h_member_add(request *r);
enum MHD_Result h_member_remove(request *r);

/* ---- shared by the handler files (handlers_common.c) ----------------------------
 *
 * A helper that finds the request wrong answers it itself (an error from the
 * table) and says so with HANDLERS_REPLIED; the handler then returns
 * http_replied(r), what queuing that reply returned:
 *
 *   instance *in;
 *   if (handlers_find(r, &in) == HANDLERS_REPLIED) return http_replied(r);
 */
typedef enum handlers_flow {
  HANDLERS_GO_ON = 0, /* nothing was replied: carry on */
  HANDLERS_REPLIED,   /* an error reply is queued: return http_replied(r) */
} handlers_flow;

struct instance;
/* *in = r->in = the instance named in the path (a reference the request
 * holds), or replies 404 unknown_instance. */
handlers_flow handlers_find(request *r, struct instance **in);
/* Parses the JSON body into r->doc, or replies its error. */
handlers_flow handlers_parse_body(request *r);
/* The integer query argument key, which must lie in [lo, hi]: *given says
 * whether it was there (*out set then; untouched otherwise); a bad one is
 * replied 400 bad_query. */
handlers_flow handlers_arg_int(request *r, const char *key, int64_t lo, int64_t hi, int64_t *out, bool *given);

/* The description of an instance (GET /v1/optimizers/{name}): a new object. */
json_t *handlers_describe_json(struct instance *in);

#endif
