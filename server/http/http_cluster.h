/* http_cluster: writes on a replica (--cluster).  A follower answers a
 * write 307 with Location on the leader (503 no_leader when it knows none);
 * the leader suspends the request, proposes it as one Raft entry (route,
 * name, query, Idempotency-Key, body), and every member runs that entry
 * through the route's own handler, in log order, on the loop thread (the
 * replayed request has no connection; its reply is held).  On the member that
 * proposed it, the held reply is the answer to the suspended request.
 * Threads: http_cluster_write on HTTP threads; apply and fail on the loop
 * thread (replica's callbacks).  Never replies twice, never applies a
 * refused write.
 */
#ifndef DESCENT_HTTP_CLUSTER_H
#define DESCENT_HTTP_CLUSTER_H

#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "change.h"

typedef struct request request;

/* The sink of replicas' sync rounds (instance_env.round_changes), ctx the
 * app: a closed round is proposed as one entry. */
void http_cluster_sink(void *app, change_sink *out);

/* A write (route flag R_REPL) on a replica: redirected, refused or proposed. */
enum MHD_Result http_cluster_write(request *r);

/* A read that asked for the leader (Descent-Read: leader) on a member that
 * does not lead: http_cluster_redirect answers it 307 (or 503 no_leader). */
bool http_cluster_misread(request *r);
enum MHD_Result http_cluster_redirect(request *r);
/* A read of an instance that asked for the leader, on the leader: it is
 * answered once a barrier entry of this term has committed and applied
 * here (linearizable: no write acknowledged before it can be missing), or
 * 503 leadership_lost / 307 if leadership went meanwhile. */
bool http_cluster_leader_read(request *r);
enum MHD_Result http_cluster_read(request *r);

/* replica_apply_fn and replica_fail_fn, ctx = the app. */
void http_cluster_apply(void *ctx, const void *data, size_t len, void *origin, uint64_t index);
void http_cluster_fail(void *ctx, void *origin, int code);
/* replica_opts.lost: fails every open sync round (503 leadership_lost; the
 * workers retry with their keys on the new leader).  Loop thread. */
void http_cluster_lost(void *ctx);

#endif
