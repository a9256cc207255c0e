/* replica: this daemon as one member of a Raft group (Debian's libraft,
 * canonical raft 0.15, with its libuv I/O and TCP transport on the daemon's
 * loop).  Owns the raft instance, its directory (DATA_DIR/raft: the log and
 * Raft's snapshots), the proposals queue, the FSM (apply / snapshot /
 * restore) and the member table that GET /v1/cluster shows.
 *
 * Every change is an entry: the layer above encodes it (replica_propose),
 * the leader appends it, and once a majority has it every member hands it to
 * the same apply function, in log order, on the loop thread; so the members
 * hold bit-identical state.  Raft's snapshot is the snapshot bytes
 * (proto/snapshot.md, persist_encode) of every instance; restoring one
 * replaces the registry's instances.  The leader's HTTP address travels as
 * an entry of its own (announce) when it is elected, so followers can answer
 * 307 with its Location.
 *
 * Threads: raft and the FSM run on the loop thread only; replica_propose,
 * replica_status and replica_applied may be called from any thread.  Never
 * calls a raft function off the loop thread; never blocks the loop on the
 * network.
 */
#ifndef DESCENT_REPLICA_H
#define DESCENT_REPLICA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "errors.h"
#include "instance.h"
#include "registry.h"

typedef struct replica replica;

/* Applies one committed entry (data, len: the bytes given to
 * replica_propose).  origin: what replica_propose was given when this member
 * proposed the entry and is still waiting for it, else NULL (a follower, a
 * replay after a restart).  index: the entry's log index.  Loop thread. */
typedef void (*replica_apply_fn)(void *ctx, const void *data, size_t len, void *origin, uint64_t index);
/* The entry proposed for origin will not be applied by this member for it:
 * code E_NO_LEADER (not the leader: raft never took it), E_LEADERSHIP_LOST
 * (appended, but leadership went before the commit: it may still commit
 * under the next leader; a retry with its idempotency key replays it) or
 * E_SHUTTING_DOWN.  Loop thread (or the proposer's, once replica_close
 * ran). */
typedef void (*replica_fail_fn)(void *ctx, void *origin, int code);

typedef struct replica_opts {
  uint64_t id;
  const char *cluster;  /* ID=HOST:PORT,... */
  const char *data_dir; /* the Raft dir is data_dir/raft */
  unsigned election_timeout_ms;
  unsigned snapshot_entries; /* 0: 512 */
  bool join;                 /* --join: never bootstrap; wait to be added by the leader */
  registry *reg;
  const instance_env *env;
  replica_apply_fn apply;
  replica_fail_fn fail;
  /* This member stopped leading (loop thread, from its poll; may be NULL). */
  void (*lost)(void *ctx);
  void *ctx;
} replica_opts;

/* Parses --cluster into ids and addresses: 0, or -E_BAD_REQUEST with e. */
int replica_parse_cluster(const char *spec, uint64_t *ids, char (*addrs)[64], size_t max, size_t *n, derr *e);

/* The member, not started yet (role unavailable: writes are refused
 * no_leader), so that the HTTP server can know it from its first request.
 * o's strings must outlive it. */
replica *replica_new(const replica_opts *o);
/* Loop thread, once the HTTP server listens: opens the Raft dir, bootstraps
 * the group from --cluster on its first start, and starts the member, which
 * announces http_url (this member's HTTP base URL) whenever it is elected.
 * 0, or a negative error code with e set. */
int replica_start(replica *rp, uv_loop_t *loop, const char *http_url, derr *e);
/* Loop thread: stops raft (pending proposals fail E_SHUTTING_DOWN); the
 * loop's handles close asynchronously.  Free after the loop has run out. */
void replica_close(replica *rp);
void replica_free(replica *rp);

/* Proposes an entry: data (len bytes) is copied.  origin is handed back to
 * exactly one of apply (with the entry) or fail.  Any thread. */
void replica_propose(replica *rp, const void *data, size_t len, void *origin);

/* The largest entry (bytes, replica_propose's len) a member takes: 64 KiB
 * per millisecond of the election timeout (64 MiB at 1000 ms).  A member
 * checksums, writes and applies an entry in one run of its loop thread, with
 * no heartbeat or timer between (measured: ~3.5-7 ms per MB on a loaded
 * 2-core machine, per member); a bigger one would stall it past the
 * election timeout and depose the leader.  It is also the meter: at most
 * this many bytes of proposals are in raft's hands at a time (one entry
 * always), the others wait their turn in order; after one of an eighth of
 * it or more the next waits a heartbeat (followers apply it in a run of its
 * own, not with the next one's checksum).  Any thread. */
#define REPLICA_ENTRY_BYTES_PER_MS ((size_t)64 << 10)
size_t replica_max_entry(const replica *rp);

/* Two writes of one header then a body, as one entry (avoids a copy). */
void replica_propose2(replica *rp, const void *head, size_t hlen, const void *body, size_t blen, void *origin);

/* Membership (the leader only): adds member id at its Raft address (a spare
 * first, promoted to voter once it has caught up from a snapshot and the
 * log), or removes id.  done(ctx, code, msg) runs once on the loop thread:
 * code 0 done; E_NO_LEADER not the leader; E_CONFLICT another change is
 * under way or the id is taken/unknown; E_BAD_VALUE bad id or address;
 * E_SHUTTING_DOWN.  Any thread. */
typedef void (*replica_change_fn)(void *ctx, int code, const char *msg);
void replica_change(replica *rp, bool add, uint64_t id, const char *address, replica_change_fn done, void *ctx);

/* A linearizable read (Descent-Read: leader): appends a barrier entry of
 * this term; done(ctx, 0, "") runs on the loop thread once it is committed
 * and applied here -- a majority still follows this leader, and every write
 * acknowledged before the call is in its state -- or done(ctx, code, msg)
 * with E_NO_LEADER (not the leader), E_LEADERSHIP_LOST (deposed meanwhile)
 * or E_SHUTTING_DOWN.  Any thread. */
void replica_read_barrier(replica *rp, replica_change_fn done, void *ctx);

enum replica_role { REPLICA_FOLLOWER, REPLICA_CANDIDATE, REPLICA_LEADER, REPLICA_UNAVAILABLE };

#define REPLICA_MAX_MEMBERS 16
typedef struct replica_member {
  uint64_t id;
  char address[64]; /* Raft address */
  char http[128];   /* HTTP base URL once announced, else "" */
  int voter;        /* 1 voter, 0 standby/spare */
  int64_t applied;  /* this member: its applied index; the leader: each match index; else -1 */
} replica_member;

typedef struct replica_status {
  uint64_t id;
  int role;           /* enum replica_role */
  uint64_t term;
  uint64_t leader_id; /* 0: none known */
  char leader_http[128];
  uint64_t commit_index, applied_index, last_index;
  size_t nmembers;
  replica_member members[REPLICA_MAX_MEMBERS];
} replica_status;

/* A copy of the latest figures (refreshed on the loop thread every few ms
 * and after each apply).  Any thread. */
void replica_status_get(replica *rp, replica_status *out);
/* The index of the last entry applied here.  Any thread. */
uint64_t replica_applied(replica *rp);
/* Whether this member leads now (a hint: leadership can go at any time). */
bool replica_is_leader(replica *rp);
/* Any thread: leader and caught up with its own term (has applied an entry
 * of it), so its state holds every write acknowledged before: reads with
 * Descent-Read: leader wait (503 no_leader) until then. */
bool replica_reads_ready(replica *rp);

#endif
