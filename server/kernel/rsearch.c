/* rsearch: candidate slots and the keep-the-best rule of random search
 * (rsearch.h).  Owns the slots' arrays; never does I/O or locking (the
 * caller serializes).  Any thread, under the caller's instance lock. */
#include "rsearch.h"

#include <math.h>
#include <string.h>

#include "mem.h"
#include "rng.h"

void rsearch_init(rsearch *rs, size_t n) {
  memset(rs, 0, sizeof *rs);
  rs->n = n;
  rs->best_loss = INFINITY;
  rs->next_id = 1;
}

void rsearch_cleanup(rsearch *rs) {
  if (!rs) return;
  for (int i = 0; i < RSEARCH_SLOTS; i++) mem_free_floats(rs->slot[i].x, rs->n);
  memset(rs->slot, 0, sizeof rs->slot);
}

bool rsearch_next_needs_memory(const rsearch *rs) { return !rs->slot[rs->next_id % RSEARCH_SLOTS].x; }

size_t rsearch_slots_held(const rsearch *rs) {
  size_t k = 0;
  for (int i = 0; i < RSEARCH_SLOTS; i++) k += rs->slot[i].x != NULL;
  return k;
}

int rsearch_ask(rsearch *rs, const optim_hyper *h, const float *params, uint64_t *id,
                const float **x, derr *e) {
  struct rsearch_slot *s = &rs->slot[rs->next_id % RSEARCH_SLOTS];
  if (!s->x && !(s->x = mem_alloc_floats(rs->n)))
    return derr_set(e, E_QUOTA, "not enough memory for a candidate of %zu floats", rs->n);
  uint64_t k = rs->next_id++;
  s->id = k;
  rng_fill_normal(s->x, rs->n, 0, h->seed, k, 0.0, h->scale);
  if (h->center == OPTIM_CENTER_BEST)
    for (size_t i = 0; i < rs->n; i++) s->x[i] = params[i] + s->x[i];
  *id = k;
  *x = s->x;
  return 0;
}

int rsearch_tell(rsearch *rs, uint64_t id, double loss, float *params, bool *improved, derr *e) {
  if (!isfinite(loss)) return derr_set(e, E_NOT_FINITE, "loss: must be finite");
  struct rsearch_slot *s = &rs->slot[id % RSEARCH_SLOTS];
  if (id == 0 || s->id != id)
    return derr_set(e, E_CONFLICT,
                    "candidate %llu is unknown, already told, or older than the last %d asked",
                    (unsigned long long)id, RSEARCH_SLOTS);
  *improved = loss < rs->best_loss;
  if (*improved) {
    memcpy(params, s->x, rs->n * sizeof(float));
    rs->best_loss = loss;
    rs->best_id = id;
  }
  s->id = 0;
  rs->tells++;
  return 0;
}
