/* handlers: one function per route (see http_routes.c), grouped by resource
 * family: handlers_optimizers.c (create, list, describe, patch, delete),
 * handlers_step.c (step, params), handlers_state.c (state export/import),
 * handlers_search.c (ask, tell), handlers_workers.c (workers, history),
 * handlers_misc.c (healthz, metrics, dashboard), handlers_playground.c.
 *
 * Each runs on an HTTP thread once the whole body has arrived, replies
 * through http_reply (errors from the error table only), and either queues
 * a response or suspends the request with an on_resume continuation.
 */
#ifndef DESCENT_HANDLERS_H
#define DESCENT_HANDLERS_H

#include <microhttpd.h>

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
enum MHD_Result h_state_get(request *r);
enum MHD_Result h_state_put(request *r);
enum MHD_Result h_ask(request *r);
enum MHD_Result h_tell(request *r);
enum MHD_Result h_workers(request *r);
enum MHD_Result h_history(request *r);

/* Shared by the handler files (handlers_common.c). */
struct instance;
/* r->in = the instance named in the path, or replies 404/400 and returns NULL. */
struct instance *handlers_instance(request *r, enum MHD_Result *ret);
/* Parses the JSON body into r->doc; replies the error and returns -1 on failure. */
int handlers_json_body(request *r, enum MHD_Result *ret);
/* Reads an integer query argument; *out untouched if absent.  -1 (replied 400) if bad. */
int handlers_query_int(request *r, const char *key, int64_t lo, int64_t hi, int64_t *out, enum MHD_Result *ret);

#endif

/* The description of an instance (GET /v1/optimizers/{name}): a new object. */
#include <jansson.h>
json_t *handlers_describe_json(struct instance *in);
