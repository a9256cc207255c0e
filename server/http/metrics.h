/* metrics: GET /metrics, Prometheus text exposition format 0.0.4.
 *
 * Nothing is kept here: every scrape reads the live counters of the
 * registry's instances (steps, pushes, rejections by reason, apply latency
 * histogram, decode/apply/encode time, loss, gradient norm, lr, workers and
 * per-worker pushes, last push and staleness), the HTTP server (requests by
 * route and status, connections, waiting requests, memory held by bodies)
 * and the snapshotter.
 * Names follow Prometheus conventions (descent_ prefix, _total counters,
 * _seconds units).  Runs on an HTTP thread.
 */
#ifndef DESCENT_METRICS_H
#define DESCENT_METRICS_H

#include "app.h"
#include "codec_json.h"

/* Writes the whole exposition into b.  hs is the server the scrape came
 * through (the request's own, not a->http, which the main thread sets only
 * once the server has started, racing with the first requests). */
void metrics_write(app *a, http_server *hs, jbuf *b);

#endif
