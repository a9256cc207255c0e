/* handlers_misc: the health check, the Prometheus metrics, and the dashboard
 * page (one self-contained HTML file compiled into the binary). */
#include "handlers.h"
#include "http_reply.h"
#include "http_server.h"
#include "metrics.h"

/* dashboard.html, linked in by dashboard_blob.S */
extern const char descent_dashboard_html[];
extern const char descent_dashboard_html_end[];

enum MHD_Result h_healthz(request *r) {
  return reply_json(r, MHD_HTTP_OK, json_pack("{s:s}", "status", "ok"));
}

enum MHD_Result h_metrics(request *r) {
  jbuf b;
  jbuf_init(&b, r->app->pool, 64 << 10);
  metrics_write(r->app, r->hs, &b);
  return reply_jbuf(r, MHD_HTTP_OK, &b, "text/plain; version=0.0.4; charset=utf-8");
}

enum MHD_Result h_dashboard(request *r) {
  return reply_static(r, MHD_HTTP_OK, descent_dashboard_html,
                      (size_t)(descent_dashboard_html_end - descent_dashboard_html), "text/html; charset=utf-8");
}
