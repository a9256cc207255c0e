/* handlers_cluster: GET /v1/cluster, the replica group as this member sees
 * it (members, leader, term, applied indexes).  A daemon without --cluster
 * answers role "standalone".  HTTP threads; reads replica_status only. */
#include <jansson.h>

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

enum MHD_Result h_cluster(request *r) {
  if (!r->app->rp)
    return reply_json(r, MHD_HTTP_OK,
                      json_pack("{s:n,s:s,s:n,s:n,s:I,s:I,s:I,s:[]}", "node_id", "role", "standalone", "leader",
                                "leader_http", "term", (json_int_t)0, "commit_index", (json_int_t)0,
                                "applied_index", (json_int_t)0, "members"));
  replica_status st;
  replica_status_get(r->app->rp, &st);
  json_t *members = json_array();
  for (size_t i = 0; i < st.nmembers; i++) json_array_append_new(members, member_json(&st.members[i], st.leader_id));
  json_t *j = json_pack("{s:I,s:s,s:I,s:I,s:I,s:o}", "node_id", (json_int_t)st.id, "role", role_name(st.role), "term",
                        (json_int_t)st.term, "commit_index", (json_int_t)st.commit_index, "applied_index",
                        (json_int_t)st.applied_index, "members", members);
  json_object_set_new(j, "leader", st.leader_id ? json_integer((json_int_t)st.leader_id) : json_null());
  json_object_set_new(j, "leader_http", st.leader_http[0] ? json_string(st.leader_http) : json_null());
  return reply_json(r, MHD_HTTP_OK, j);
}
