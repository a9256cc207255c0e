/* workers: the table of workers an instance has seen (by name), with the
 * figures GET .../workers shows and the lease each sync member holds.
 * Entries are never removed while the instance lives (a dropped member
 * keeps its row, flagged).  HTTP threads and the loop thread (leases). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "instance_internal.h"
#include "mem.h"

worker_info *workers__get(instance *in, const char *name, bool create) {
  INSTANCE_ASSERT_LOCKED(in);
  for (size_t i = 0; i < in->nworkers; i++)
    if (strcmp(in->workers[i]->name, name) == 0) return in->workers[i];
  if (!create) return NULL;
  if (in->nworkers == in->workers_cap) {
    in->workers_cap = in->workers_cap ? in->workers_cap * 2 : 16;
    in->workers = mem_xrealloc(in->workers, in->workers_cap * sizeof *in->workers);
  }
  worker_info *w = mem_xcalloc(1, sizeof *w);
  snprintf(w->name, sizeof w->name, "%s", name);
  w->last_push_step = -1;
  in->workers[in->nworkers++] = w;
  return w;
}

void instance_touch_worker(instance *in, const char *name) {
  if (!name || !*name) return;
  instance__lock(in);
  worker_info *w = workers__get(in, name, false);
  if (w) w->last_seen_ms = timers_now_ms();
  instance__unlock(in);
}

size_t instance_workers_copy(instance *in, worker_info **out, uint64_t *step) {
  instance__lock(in);
  size_t n = in->nworkers;
  *out = mem_xmalloc((n ? n : 1) * sizeof **out);
  for (size_t i = 0; i < n; i++) (*out)[i] = *in->workers[i];
  *step = in->step;
  instance__unlock(in);
  return n;
}
