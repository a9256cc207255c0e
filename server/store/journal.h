/* journal: the ordered stream of changes of --durability log (log before
 * apply), with a pluggable backend that makes them durable: the local
 * write-ahead log (wal.c: fsynced segments in the data dir, group commit)
 * or a Raft group (replica: committed once a majority has it).
 *
 * The flow of a push in log mode:
 *   1. HTTP thread, under the instance lock: the push is validated against
 *      the instance's logical state (the applied state plus the changes
 *      already queued), encoded as a `change` (server/state/change.h: iov
 *      pieces over the request's own buffers, proto/log.md's entry), given
 *      its seq, and submitted through the change_sink; the request is
 *      suspended (no thread parked).
 *   2. the backend makes queued changes durable, several at once (local: one
 *      writev + one fdatasync for the whole batch; Raft: a majority), then
 *      calls each change's done(c, 0) in submission order, from ONE thread
 *      with no lock held; done applies it (instance lock per change, the
 *      same kernels) and completes its waiters.
 *   3. a batch that cannot be made durable: done(c, code) for it and for
 *      every change queued behind it (they were validated against a state
 *      that now will not be), nothing applied, the stream consistent (the
 *      local log truncated back to its last good entry); later changes are
 *      tried again.
 * Changes made elsewhere or read back (replay at start-up, a Raft
 * follower) have no `change`: the backend passes their bytes to
 * journal_apply, which finds the instance and applies them with the same
 * code.  Both paths must give the same bits.
 *
 * Configuration changes (create, PATCH, PUT .../state, delete) are not
 * journal entries in the local backend: each writes its snapshot before its
 * reply, as in snapshot mode, and the snapshot records the seq of the last
 * change it contains (proto/snapshot.md "log_seq"), so replay applies on top
 * of it exactly the changes after it, in order: a PATCH between two queued
 * pushes is then ordered exactly (the queued ones apply after it, live and
 * in replay).  A Raft backend may carry them as entries of the kinds
 * proto/log.md reserves (CHANGE_CREATE ...).
 *
 * Lock order (instance.h): the sink's submit takes the journal's queue
 * mutex, a leaf, under the instance lock; the backend's thread holds no
 * journal lock while it calls done or journal_apply.  Thread-safe.
 */
#ifndef DESCENT_JOURNAL_H
#define DESCENT_JOURNAL_H

#include <stdint.h>

#include "change.h"
#include "errors.h"
#include "registry.h"

typedef struct journal journal;

/* Figures for /metrics (descent_log_*). */
typedef struct journal_stats {
  uint64_t entries;  /* changes made durable */
  uint64_t batches;  /* writes (local: writev+fdatasync groups) */
  uint64_t fsyncs;   /* fdatasync calls */
  uint64_t bytes;    /* bytes appended */
  uint64_t failed;   /* changes refused because the batch failed */
  uint64_t replayed; /* entries applied at start-up */
  uint64_t dropped;  /* torn tails dropped at start-up */
} journal_stats;

/* A backend.  `self` is the backend's own state; every function may be
 * NULL except submit. */
typedef struct journal_backend {
  const char *name; /* "log", "raft" */
  /* Queues c (under the instance lock: only link it, wake the writer). */
  void (*submit)(void *self, change *c);
  /* Start-up, before serving: hands every durable change beyond the loaded
   * snapshots to journal_apply, in order.  0, or a negative code with e
   * saying why (the daemon refuses to start). */
  int (*replay)(void *self, journal *j, derr *e);
  /* A snapshot of instance `name` holding every change up to seq is
   * durable: the changes up to seq may be dropped (the local log deletes
   * the segments it covers and starts a new one). */
  void (*cut)(void *self, const char *name, uint64_t seq);
  /* Instance `name` was deleted (its snapshot removed): drop its changes;
   * a change of it still queued is written nowhere the new instance of that
   * name could replay. */
  void (*forget)(void *self, const char *name);
  /* Stops: every change still queued is still written (or refused) and
   * done, then the backend's threads end.  Idempotent. */
  void (*stop)(void *self);
  void (*free)(void *self);
  void (*stats)(void *self, journal_stats *out);
} journal_backend;

/* A journal over backend be (self: its state, owned by the journal from now
 * on) and the instances of r. */
journal *journal_new(registry *r, const journal_backend *be, void *self);
/* Stops the backend (see stop), frees it and the journal. */
void journal_free(journal *j);

/* The sink the state layer submits to (instance_env.changes). */
const change_sink *journal_sink(journal *j);

/* A change's bytes (proto/log.md's entry, without the local log's frame):
 * finds its instance by name and applies it with the push path's code.  0;
 * 1 if it is already in the instance's state (seq <= the instance's) and
 * was skipped; 2 if it was refused as live (a sparse step over the quota,
 * e says why); or a negative code (unknown instance, a seq that skips one,
 * a step that does not follow, a malformed entry) with e saying why.  For
 * backends: replay at start-up, Raft followers' FSM apply. */
int journal_apply(journal *j, const unsigned char *entry, size_t len, derr *e);

/* Stops the backend: what is queued is still made durable (or refused) and
 * done; then its thread ends.  Idempotent.  Shutdown, after the HTTP
 * server stopped and before the final snapshots. */
void journal_stop(journal *j);

/* Whether instance `name` is loaded (replay: segments of others are orphans). */
bool journal_knows(journal *j, const char *name);

/* Calls the backend's replay (start-up).  As the backend's replay. */
int journal_replay(journal *j, derr *e);
/* Forwards to the backend (persist calls these after a snapshot is durable
 * and after a delete). */
void journal_cut(journal *j, const char *name, uint64_t seq);
void journal_forget(journal *j, const char *name);
void journal_get_stats(journal *j, journal_stats *out);
const char *journal_backend_name(const journal *j);

/* The local backend (wal.c): segments DIR/NAME.log.SEQ (proto/log.md),
 * one writer thread doing group commit.  NULL with e set if dir cannot be
 * used.  The returned pair is what journal_new takes. */
void *wal_open(const char *dir, const journal_backend **be, derr *e);

#endif
