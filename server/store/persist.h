/* persist: snapshots of instances in the data dir (format: proto/snapshot.md).
 *
 * A snapshot is NAME.snap: magic, version, a JSON header (the configuration),
 * raw little-endian float32 arrays, and a CRC-32 of everything before it.
 * It is written as NAME.snap.tmp, fsynced, renamed over NAME.snap (the file
 * it replaces is kept as NAME.snap.prev), and the directory fsynced: a reader
 * sees the old file or the new one, never half.  A file that fails its
 * checks is never loaded: it is renamed NAME.snap.bad (the log says why), the
 * previous good file stays beside it as NAME.snap.prev, and the daemon starts
 * without that instance.  The directory is locked (flock): one daemon each.
 *
 * Saves of one instance are serialized and never go back in time (a save of
 * an older version than the last written one is skipped).  The copy of the
 * state is taken under the instance lock (one memcpy per array); the write
 * happens outside it.  Thread-safe.  Lock order (instance.h): a caller may
 * hold the catalog lock and the instance's change lock; persist's own lock
 * comes after them and is never held while an instance lock is taken.
 * Nothing here keeps a pointer to an instance or a state past the call.
 */
#ifndef DESCENT_PERSIST_H
#define DESCENT_PERSIST_H

#include <stdint.h>

#include "errors.h"
#include "instance.h"
#include "registry.h"

typedef struct persist persist;

/* Opens (creating) dir and removes leftover temporary files. */
persist *persist_open(const char *dir, derr *e);
void persist_close(persist *p);

/* Writes a snapshot of in now (config changes: durable before the reply).
 * The caller holds in's change lock.  0 when written, or when skipped
 * because a newer version or incarnation was written or the incarnation was
 * deleted; -E_IO if the file cannot be written; -E_QUOTA if no memory for
 * the copy. */
int persist_save(persist *p, instance *in, derr *e);

/* Writes an already exported state (PATCH writes the state it is about to
 * make).  Returns as persist_save (never -E_QUOTA). */
int persist_save_state(persist *p, const instance_state *s, derr *e);

/* Removes NAME.snap.prev, then NAME.snap (delete), and from then on never
 * writes that incarnation again.  On failure NAME.snap is still there (the
 * older .prev may be gone) and later saves go on as before. */
int persist_remove(persist *p, const char *name, derr *e);

/* Loads every NAME.snap into r (charging its quota).  Returns the number
 * loaded; damaged files are logged, set aside and skipped.  At start-up
 * only, before any other thread uses r: it adds without the catalog lock. */
int persist_load_all(persist *p, registry *r, const instance_env *env);

/* Saves every instance whose state changed since its last snapshot, each
 * under its change lock (instance_change_lock), so that a save never
 * carries an older configuration over a newer acknowledged one.  Returns
 * how many were written; *failed (may be NULL) receives how many could not
 * be, each logged with `fail_msg` ("snapshot failed" if NULL) and its name.
 * Blocking: run it off the loop thread. */
int persist_snapshot_changed(persist *p, registry *r, const char *fail_msg, size_t *failed);

/* Writes a snapshot of in now, under its change lock, if it changed since
 * the last one (POST .../snapshot).  0 once durable (*step: the step the
 * file holds), or -E_IO. */
int persist_save_now(persist *p, instance *in, uint64_t *step, derr *e);

/* Encodes / decodes the snapshot bytes (exposed for tests and fuzzing).
 * encode: *out is the caller's (free()), returns 0.  decode: 0 with s filled
 * (caller frees with instance_state_free), or a negative error with e saying
 * why and s empty: -E_BAD_REQUEST for the file's structure, the decoder's
 * code for a bad configuration, -E_QUOTA when out of memory. */
int persist_encode(const instance_state *s, unsigned char **out, size_t *len);
int persist_decode(const unsigned char *buf, size_t len, instance_state *s, derr *e);

/* --durability log: snapshots record the log seq they hold (log_id,
 * log_seq), each durable snapshot cuts j's log up to it, and a delete makes
 * j forget the instance's log.  Before serving (start-up). */
typedef struct journal journal;
void persist_set_journal(persist *p, journal *j);

/* Last snapshot figures, for metrics. */
typedef struct persist_stats {
  uint64_t written, failed;
  double last_time;     /* unix seconds of the last successful write, 0 none */
  double last_duration; /* seconds */
} persist_stats;
void persist_get_stats(persist *p, persist_stats *out);

#endif
