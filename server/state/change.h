/* change: one change of an instance on its way into the journal (log before
 * apply), as the state layer hands it to whatever makes it durable.  The
 * state layer cannot see the store layer above it, so the journal
 * (server/store/journal.h) reaches it only through the change_sink below,
 * which instance_env carries (NULL: --durability snapshot, nothing queued).
 *
 * A change's bytes are the entry of proto/log.md (header, then the push in
 * the binary push layout), described by iov pieces that point into the
 * request's own buffers: nothing is copied before the write.  Types only;
 * the functions live in server/state/journal_state.c and the store. */
#ifndef DESCENT_CHANGE_H
#define DESCENT_CHANGE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "errors.h"

typedef struct change change;
struct change {
  /* filled by the submitter (the state layer), valid until done returns */
  const struct iovec *iov; /* the whole entry, header first (the submitter's array) */
  int iovcnt;
  size_t len;           /* sum of the iov lengths */
  const char *instance; /* the instance's name (a local backend picks its log by it) */
  uint64_t seq;         /* the instance's change number, 1, 2, ... (header copy) */
  /* Called exactly once per change, on the journal's thread (local log: its
   * writer; Raft: the loop thread), with no lock held, in the order the
   * changes were submitted.  code 0: the change is durable and it is its
   * turn: the callee applies it before returning.  code > 0 (E_DISK_FULL,
   * E_READ_ONLY, E_IO, E_NO_LEADER, E_SHUTTING_DOWN ...): it never will
   * be durable; apply nothing and refuse the request with code/err. */
  void (*done)(change *c, int code, const derr *err);
  void *arg;
  /* the journal's */
  change *next;
  uint64_t index; /* position in the journal's stream once durable */
};

/* Where the state layer queues changes.  submit is called under the
 * instance lock (so the queue order is the order of `seq` within an
 * instance), from any thread; it only links c (a leaf mutex), never does
 * I/O and never calls done itself. */
typedef struct change_sink {
  void (*submit)(void *ctx, change *c);
  void *ctx;
} change_sink;

#endif
