/* search: random-search ask/tell on an instance (the candidates come from
 * kernel/rsearch.c; the instance holds the best point as its parameters).
 * A tell is a step: it bumps the step, the history and wakes long-polls.
 * HTTP threads. */
#include <math.h>
#include <string.h>

#include "instance_internal.h"

int instance_ask(instance *in, uint64_t *id, float *out, derr *e) {
  if (!in->rs) return derr_set(e, E_WRONG_ALGORITHM, "ask and tell are for random_search instances");
  instance__lock(in);
  if (in->deleted) {
    instance__unlock(in);
    return derr_set(e, E_NO_INSTANCE, NULL);
  }
  const float *x;
  int rc = rsearch_ask(in->rs, &in->cfg.hyper, in->params, id, &x, e);
  if (rc == 0) memcpy(out, x, in->cfg.n * sizeof(float));
  in->version++;
  instance__unlock(in);
  return rc;
}

int instance_tell(instance *in, uint64_t id, double loss, bool *improved, double *best_loss, uint64_t *step,
                  derr *e) {
  if (!in->rs) return derr_set(e, E_WRONG_ALGORITHM, "ask and tell are for random_search instances");
  instance__lock(in);
  int rc = in->deleted ? derr_set(e, E_NO_INSTANCE, NULL) : rsearch_tell(in->rs, id, loss, in->params, improved, e);
  wake_list wl = {0};
  if (rc == 0) {
    in->step++;
    in->version++;
    history__add(in, loss, NAN, NAN);
    in->stats.steps++;
    in->stats.pushes++;
    waiters__wake_pollers(in, &wl);
  }
  *best_loss = in->rs->best_loss;
  *step = in->step;
  instance__unlock(in);
  waiters__run(&wl);
  return rc;
}
