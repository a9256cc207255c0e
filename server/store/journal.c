/* journal: the stream of changes between the state layer (which submits
 * them through a change_sink) and a backend that makes them durable (wal.c,
 * or a Raft member).  Owns the backend once given; routes entries read back
 * to their instance (journal_apply).  Never does I/O itself and holds no
 * lock of its own: the backend serializes.  HTTP and loop threads (submit,
 * under an instance lock), the backend's thread, main (replay, free). */
#include "journal.h"

#include <stdlib.h>

#include "instance.h"
#include "mem.h"

struct journal {
  registry *reg;
  const journal_backend *be;
  void *self;
  change_sink sink;
  journal_stats extra; /* what journal_apply counts */
};

static void sink_submit(void *ctx, change *c) {
  journal *j = ctx;
  j->be->submit(j->self, c);
}

journal *journal_new(registry *r, const journal_backend *be, void *self) {
  journal *j = mem_xcalloc(1, sizeof *j);
  j->reg = r;
  j->be = be;
  j->self = self;
  j->sink = (change_sink){sink_submit, j};
  return j;
}

void journal_free(journal *j) {
  if (!j) return;
  if (j->be->stop) j->be->stop(j->self);
  if (j->be->free) j->be->free(j->self);
  free(j);
}

const change_sink *journal_sink(journal *j) { return &j->sink; }

int journal_apply(journal *j, const unsigned char *entry, size_t len, derr *e) {
  char name[NAME_MAX_LEN + 1];
  int rc = instance_change_name(entry, len, name, e);
  if (rc < 0) return rc;
  instance *in = registry_get(j->reg, name);
  if (!in) return derr_set(e, E_NO_INSTANCE, "log entry for instance '%s', which is not loaded", name);
  rc = instance_apply_change(in, entry, len, e);
  instance_unref(in);
  if (rc == 0) j->extra.replayed++;
  return rc;
}

bool journal_knows(journal *j, const char *name) {
  instance *in = registry_get(j->reg, name);
  instance_unref(in);
  return in != NULL;
}

int journal_replay(journal *j, derr *e) { return j->be->replay ? j->be->replay(j->self, j, e) : 0; }

void journal_cut(journal *j, const char *name, uint64_t seq) {
  if (j->be->cut) j->be->cut(j->self, name, seq);
}

void journal_forget(journal *j, const char *name) {
  if (j->be->forget) j->be->forget(j->self, name);
}

void journal_get_stats(journal *j, journal_stats *out) {
  *out = (journal_stats){0};
  if (j->be->stats) j->be->stats(j->self, out);
  out->replayed += j->extra.replayed;
}

const char *journal_backend_name(const journal *j) { return j->be->name; }

void journal_stop(journal *j) {
  if (j->be->stop) j->be->stop(j->self);
}
