/* handlers_misc: the health check. */
#include "handlers.h"
#include "http_reply.h"
#include "http_server.h"

enum MHD_Result h_healthz(request *r) {
  return reply_json(r, MHD_HTTP_OK, json_pack("{s:s}", "status", "ok"));
}
