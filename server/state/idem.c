/* idem: the idempotency window of an instance, a ring of IDEM_LEN keyed
 * outcomes.  A retry with a known key gets the first outcome back (with the
 * first reply's parameters while they fit in IDEM_SNAP_BUDGET bytes),
 * never a second application.  Completed keys are copied by instance_export
 * and restored by instance_from_state (idem__export/idem__import): persist
 * writes them into snapshots, so a retry after a restart is replayed too;
 * the JSON state document (GET/PUT .../state) does not carry them.  Owns the
 * kept psnap references.  Everything here runs under the instance lock
 * (asserted), on HTTP threads, the loop thread and the snapshot threads. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "instance_internal.h"
#include "mem.h"

int idem__find(instance *in, const char *key) {
  INSTANCE_ASSERT_LOCKED(in);
  for (size_t i = 0; i < IDEM_LEN; i++)
    if (in->idem[i].r.key[0] && strcmp(in->idem[i].r.key, key) == 0) return (int)i;
  return -1;
}

static size_t snap_bytes(instance *in) {
  size_t b = 0;
  for (size_t i = 0; i < IDEM_LEN; i++)
    if (in->idem[i].snap) b += in->idem[i].snap->n * sizeof(float);
  return b;
}

int idem__claim(instance *in, const char *key) {
  INSTANCE_ASSERT_LOCKED(in);
  size_t i = in->idem_next;
  in->idem_next = (in->idem_next + 1) % IDEM_LEN;
  idem_entry *e = &in->idem[i];
  psnap_unref(e->snap);
  memset(e, 0, sizeof *e);
  snprintf(e->r.key, sizeof e->r.key, "%s", key);
  return (int)i;
}

void idem__done(instance *in, int slot, int code, const derr *err, uint64_t step, psnap *snap) {
  INSTANCE_ASSERT_LOCKED(in);
  if (slot < 0) return;
  idem_entry *e = &in->idem[slot];
  e->r.code = code;
  if (err) e->r.err = *err;
  e->r.step = step;
  e->pending = NULL;
  e->queued = NULL; /* log mode: its change is done; a retry replays this outcome */
  if (code) return;
  size_t bytes = in->cfg.n * sizeof(float);
  if (bytes > in->idem_snap_budget) return;
  /* make room: drop kept parameters from the oldest entries first */
  size_t held = snap_bytes(in);
  for (size_t k = 0; held + bytes > in->idem_snap_budget && k < IDEM_LEN; k++) {
    idem_entry *o = &in->idem[(in->idem_next + k) % IDEM_LEN];
    if (o->snap && o != e) {
      held -= o->snap->n * sizeof(float);
      psnap_unref(o->snap);
      o->snap = NULL;
    }
  }
  e->snap = snap ? psnap_ref(snap) : psnap__new(in->pool, in->params, in->cfg.n, step);
}

void idem__forget(instance *in, int slot) {
  INSTANCE_ASSERT_LOCKED(in);
  if (slot < 0) return;
  psnap_unref(in->idem[slot].snap);
  memset(&in->idem[slot], 0, sizeof in->idem[slot]);
}

void idem__export(instance *in, instance_state *s) {
  INSTANCE_ASSERT_LOCKED(in);
  s->idem = mem_xmalloc(IDEM_LEN * sizeof *s->idem);
  s->nidem = 0;
  for (size_t k = 0; k < IDEM_LEN; k++) { /* oldest first: the ring from its next slot */
    const idem_entry *e = &in->idem[(in->idem_next + k) % IDEM_LEN];
    /* not a key still waiting for its outcome: a sync round's (pending) or a
     * change not yet durable (queued, log mode), which the restored state
     * would lack if the daemon died before the log held it; a retry must
     * apply it then, not replay an outcome that never happened */
    if (e->r.key[0] && !e->pending && !e->queued) s->idem[s->nidem++] = e->r;
  }
}

void idem__import(instance *in, const instance_state *s) {
  size_t first = s->nidem > IDEM_LEN ? s->nidem - IDEM_LEN : 0;
  for (size_t i = first; i < s->nidem; i++) {
    int slot = idem__claim(in, s->idem[i].key);
    in->idem[slot].r = s->idem[i];
  }
}
