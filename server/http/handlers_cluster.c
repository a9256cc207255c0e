/* handlers_cluster: GET /v1/cluster, the replica group as this member sees
 * it (members, leader, term, applied indexes), and membership changes on
 * the leader (POST /v1/cluster/members, DELETE /v1/cluster/members/{id}),
 * which suspend the request until raft has done them.  A daemon without
 * --cluster answers role "standalone" (and 409 to membership changes).
 * HTTP threads; the change's answer comes from the loop thread. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "http_cluster.h"

#include "handlers.h"
#include "http_reply.h"
#include "http_server.h"
#include "replica.h"

static const char *role_name(int role) {
  switch (role) {
  case REPLICA_LEADER: return "leader";
  case REPLICA_CANDIDATE: return "candidate";
  case REPLICA_FOLLOWER: return "follower";
  default: return "unavailable";
  }
}

static json_t *member_json(const replica_member *m, uint64_t leader) {
  json_t *j = json_pack("{s:I,s:s,s:s,s:b,s:b}", "id", (json_int_t)m->id, "address", m->address, "role",
                        m->voter ? "voter" : "standby", "leader", m->id == leader, "voting", m->voter);
  json_object_set_new(j, "http", m->http[0] ? json_string(m->http) : json_null());
  json_object_set_new(j, "applied_index", m->applied >= 0 ? json_integer(m->applied) : json_null());
  return j;
}

static json_t *cluster_json(request *r);

enum MHD_Result h_cluster(request *r) { return reply_json(r, MHD_HTTP_OK, cluster_json(r)); }

/* The loop thread: raft finished (or refused) the change. */
static void changed(void *ctx, int code, const char *msg) {
  request *r = ctx;
  r->capture = true;
  if (code == 0) {
    reply_json(r, MHD_HTTP_OK, cluster_json(r));
  } else if (code == E_NO_LEADER) {
    http_cluster_redirect(r);
  } else {
    derr e;
    derr_set(&e, code, "membership change refused: %s", msg);
    reply_error(r, code, &e);
  }
  http__resume(r);
  http__request_unref(r);
}

/* Common checks: a replica's leader.  Else replied (409, 307, 503). */
static handlers_flow change_allowed(request *r) {
  derr e;
  if (!r->app->rp) {
    derr_set(&e, E_CONFLICT, "this daemon is not a replica (no --cluster)");
    reply_error(r, E_CONFLICT, &e);
    return HANDLERS_REPLIED;
  }
  if (!replica_is_leader(r->app->rp)) {
    http_cluster_redirect(r);
    return HANDLERS_REPLIED;
  }
  return HANDLERS_GO_ON;
}

static enum MHD_Result start_change(request *r, bool add, uint64_t id, const char *address) {
  r->on_resume = reply_held;
  http__request_ref(r);
  http_suspend(r);
  replica_change(r->app->rp, add, id, address, changed, r);
  return MHD_YES;
}

enum MHD_Result h_member_add(request *r) {
  if (change_allowed(r) == HANDLERS_REPLIED || handlers_parse_body(r) == HANDLERS_REPLIED) return http_replied(r);
  json_t *id = json_object_get(r->doc.root, "id"), *addr = json_object_get(r->doc.root, "address");
  derr e;
  if (!json_is_integer(id) || json_integer_value(id) < 1 || !json_is_string(addr) ||
      !strchr(json_string_value(addr), ':') || strlen(json_string_value(addr)) >= 64) {
    derr_set(&e, E_BAD_VALUE, "expected {\"id\": a positive integer, \"address\": \"HOST:PORT\" (its Raft address)}");
    return reply_error(r, E_BAD_VALUE, &e);
  }
  return start_change(r, true, (uint64_t)json_integer_value(id), json_string_value(addr));
}

enum MHD_Result h_member_remove(request *r) {
  if (change_allowed(r) == HANDLERS_REPLIED) return http_replied(r);
  char *end;
  unsigned long long id = strtoull(r->name, &end, 10);
  if (*end || id == 0) {
    derr e;
    derr_set(&e, E_BAD_VALUE, "'%s' is not a member id (a positive integer)", r->name);
    return reply_error(r, E_BAD_VALUE, &e);
  }
  return start_change(r, false, id, NULL);
}

static json_t *cluster_json(request *r) {
  if (!r->app->rp)
    return json_pack("{s:n,s:s,s:n,s:n,s:I,s:I,s:I,s:[]}", "node_id", "role", "standalone", "leader",
                                "leader_http", "term", (json_int_t)0, "commit_index", (json_int_t)0,
                                "applied_index", (json_int_t)0, "members");
  replica_status st;
  replica_status_get(r->app->rp, &st);
  json_t *members = json_array();
  for (size_t i = 0; i < st.nmembers; i++) json_array_append_new(members, member_json(&st.members[i], st.leader_id));
  json_t *j = json_pack("{s:I,s:s,s:I,s:I,s:I,s:o}", "node_id", (json_int_t)st.id, "role", role_name(st.role), "term",
                        (json_int_t)st.term, "commit_index", (json_int_t)st.commit_index, "applied_index",
                        (json_int_t)st.applied_index, "members", members);
  json_object_set_new(j, "leader", st.leader_id ? json_integer((json_int_t)st.leader_id) : json_null());
  json_object_set_new(j, "leader_http", st.leader_http[0] ? json_string(st.leader_http) : json_null());
  return j;
}
