/* rsearch: the seed's Approach 1, random search, as an ask/tell core (the
 * seed: neuralnets' optimizers tutorial that descent grew from, not part of
 * this repository).
 *
 * ask proposes a candidate center + scale * N(0, 1), where center is zero or
 * the best parameters so far, drawn from the counter-based generator with
 * stream = candidate id, so candidate k of a seed is the same everywhere.
 * tell reports a candidate's loss; the best candidate (lowest loss) is kept
 * in the instance's parameters and best_loss only ever decreases.  Up to
 * RSEARCH_SLOTS candidates may be outstanding; older ones are forgotten.
 *
 * Ownership: each slot's n floats belong to the rsearch (allocated by the
 * first ask that uses the slot, freed by rsearch_cleanup).  No I/O and no
 * lock: calls on one rsearch must be serialized by the caller (the state
 * layer holds the instance lock).
 */
#ifndef DESCENT_RSEARCH_H
#define DESCENT_RSEARCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "errors.h"
#include "optim.h"

#define RSEARCH_SLOTS 64

typedef struct rsearch {
  size_t n;          /* parameters per candidate */
  double best_loss;  /* +inf until the first tell */
  uint64_t next_id;  /* id of the next candidate (ids start at 1) */
  uint64_t tells;    /* losses received */
  uint64_t best_id;  /* candidate that holds best_loss, 0 = none */
  struct rsearch_slot {
    uint64_t id; /* 0 = free */
    float *x;    /* n floats, allocated on first use, reused */
  } slot[RSEARCH_SLOTS];
} rsearch;

void rsearch_init(rsearch *rs, size_t n);
void rsearch_cleanup(rsearch *rs);

/* Proposes the next candidate: *id and *x (borrowed, valid until the slot is
 * reused) are set.  params is the current best (read when center = best).
 * Returns 0. */
/* Whether the next ask needs a new slot's n floats (the caller charges
 * them first), and how many slots hold memory now. */
bool rsearch_next_needs_memory(const rsearch *rs);
size_t rsearch_slots_held(const rsearch *rs);

int rsearch_ask(rsearch *rs, const optim_hyper *h, const float *params, uint64_t *id,
                const float **x, derr *e);

/* Takes the loss of candidate id.  If it beats best_loss, copies the candidate
 * into params and sets *improved.  Unknown or forgotten ids and non-finite
 * losses are refused (-E_CONFLICT, -E_NOT_FINITE) with nothing changed. */
int rsearch_tell(rsearch *rs, uint64_t id, double loss, float *params, bool *improved, derr *e);

#endif
