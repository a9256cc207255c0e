/* instance: the lifetime of an instance (allocation, references, close and
 * shutdown), configuration helpers, and the short reads that copy one
 * figure under the lock.  Owns the instance's memory: the last
 * instance_unref frees every array and table.  Never does I/O, never frees
 * while a reference is out (timers hold one while armed).  Any thread; see
 * instance.h for the invariants and the lock order. */
#include "instance.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "instance_internal.h"
#include "kpool.h"
#include "mem.h"

/* ---- locking and time ------------------------------------------------------- */

#ifdef DESCENT_DEBUG
static _Thread_local char self_token;
uintptr_t instance__self(void) { return (uintptr_t)&self_token; }
#endif

void instance__lock(instance *in) {
  pthread_mutex_lock(&in->lock);
#ifdef DESCENT_DEBUG
  atomic_store(&in->owner, instance__self());
#endif
}

void instance__unlock(instance *in) {
#ifdef DESCENT_DEBUG
  assert(atomic_load(&in->owner) == instance__self());
  atomic_store(&in->owner, 0);
#endif
  pthread_mutex_unlock(&in->lock);
}

void instance_change_lock(instance *in) { pthread_mutex_lock(&in->change_lock); }
void instance_change_unlock(instance *in) { pthread_mutex_unlock(&in->change_lock); }

static _Thread_local double pinned_wall;

void instance_clock_pin(double unix_s) { pinned_wall = unix_s; }

double instance__wall_now(void) {
  if (pinned_wall > 0) return pinned_wall;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

uint64_t instance__mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- configuration ---------------------------------------------------------- */

void instance_cfg_free(instance_cfg *c) {
  if (!c) return;
  free(c->tensors);
  c->tensors = NULL;
  c->ntensors = 0;
}

void instance_cfg_copy(instance_cfg *dst, const instance_cfg *src) {
  *dst = *src;
  dst->tensors = mem_xmalloc((src->ntensors ? src->ntensors : 1) * sizeof(tensor));
  if (src->ntensors) memcpy(dst->tensors, src->tensors, src->ntensors * sizeof(tensor));
}

int instance_layout_tensor(const instance_layout *l, const char *name) {
  for (size_t i = 0; i < l->ntensors; i++)
    if (strcmp(l->tensors[i].name, name) == 0) return (int)i;
  return -1;
}

int instance_cfg_tensor(const instance_cfg *c, const char *name) {
  instance_layout l = instance_cfg_layout(c);
  return instance_layout_tensor(&l, name);
}

uint64_t instance_cfg_footprint(const instance_cfg *c) {
  optim_hyper h = c->hyper;
  unsigned need = optim_buffers(c->alg, &h);
  uint64_t k = 1 + (uint64_t)__builtin_popcount(need);
  if (c->mode == MODE_SYNC) k++; /* the combine scratch */
  return k * (uint64_t)c->n;
}

unsigned instance_cfg_row_buffers(const instance_cfg *c) { return optim_buffers(c->alg, &c->hyper); }

instance_layout instance_cfg_layout(const instance_cfg *c) {
  return (instance_layout){
      .name = c->name, .alg = c->alg, .mode = c->mode, .n = c->n, .ntensors = c->ntensors, .tensors = c->tensors};
}

/* ---- lifetime --------------------------------------------------------------- */

void instance__free_buffers(instance *in, unsigned which) {
  for (int b = 0; b < OPTIM_NBUF; b++) {
    if (!(which & in->have & (1u << b))) continue;
    mem_free_floats(in->buf[b], in->cfg.n);
    in->buf[b] = NULL;
    in->have &= ~(1u << b);
    in->fresh &= ~(1u << b);
  }
}

int instance__alloc_buffers(instance *in, unsigned need) {
  unsigned added = 0;
  for (int b = 0; b < OPTIM_NBUF; b++) {
    if (!(need & (1u << b)) || (in->have & (1u << b))) continue;
    float *a = mem_alloc_floats(in->cfg.n);
    if (!a) { /* all or nothing: a refusal holds no new buffer */
      instance__free_buffers(in, added);
      return -E_QUOTA;
    }
    added |= 1u << b;
    float init = optim_buf_initial(in->cfg.alg, &in->cfg.hyper, b);
    if (init != 0)
      for (size_t i = 0; i < in->cfg.n; i++) a[i] = init;
    in->buf[b] = a;
    in->have |= 1u << b;
    in->fresh |= 1u << b;
  }
  return 0;
}

instance *instance__alloc(const instance_cfg *cfg, const instance_env *env) {
  instance *in = mem_xcalloc(1, sizeof *in);
  pthread_mutex_init(&in->lock, NULL);
  pthread_mutex_init(&in->change_lock, NULL);
  atomic_init(&in->refs, 1);
  instance_cfg_copy(&in->cfg, cfg);
  in->layout = instance_cfg_layout(&in->cfg);
  in->pool = env->pool;
  in->tm = env->tm;
  in->kp = env->kp;
  in->reg = env->reg;
  in->changes = env->changes;
  in->log_id = journal__new_id();
  if (env->round_changes && cfg->mode == MODE_SYNC) { /* a replica: the same id on every member */
    in->changes = env->round_changes;
    in->log_id = journal__name_id(cfg->name);
  }
  in->incarnation = env->incarnations ? atomic_fetch_add(env->incarnations, 1) + 1 : 0;
  in->created = instance__wall_now();
  in->params = mem_alloc_floats(cfg->n);
  in->idem = mem_xcalloc(IDEM_LEN, sizeof *in->idem);
  in->hist = mem_xcalloc(HISTORY_LEN, sizeof *in->hist);
  in->idem_snap_budget = IDEM_SNAP_BUDGET;
  in->stats.last_loss = NAN;
  in->stats.last_grad_norm = NAN;
  round__init(in);
  sparse__init(in);
  if (!in->params) goto fail;
  if (cfg->alg == OPTIM_RANDOM_SEARCH) {
    in->rs = mem_xcalloc(1, sizeof *in->rs);
    rsearch_init(in->rs, cfg->n);
  }
  if (cfg->mode == MODE_SYNC && !(in->scratch = mem_alloc_floats(cfg->n))) goto fail;
  return in;
fail:
  instance_unref(in);
  return NULL;
}

instance *instance_new(const instance_cfg *cfg, const instance_env *env) {
  instance *in = instance__alloc(cfg, env);
  if (!in) return NULL;
  if (instance__alloc_buffers(in, optim_buffers(cfg->alg, &cfg->hyper)) < 0) {
    instance_unref(in);
    return NULL;
  }
  in->lr_now = schedule_lr(&in->cfg.sched, in->cfg.hyper.lr, 0);
  return in;
}

void instance_init_params(instance *in, const float *params) {
  assert(atomic_load(&in->refs) == 1); /* not published yet */
  if (in->cfg.n) memcpy(in->params, params, in->cfg.n * sizeof(float));
}

instance *instance_ref(instance *in) {
  atomic_fetch_add(&in->refs, 1);
  return in;
}

void instance_unref(instance *in) {
  if (!in || atomic_fetch_sub(&in->refs, 1) != 1) return;
  size_t n = in->cfg.n;
  mem_free_floats(in->params, n);
  mem_free_floats(in->scratch, n);
  for (int b = 0; b < OPTIM_NBUF; b++) mem_free_floats(in->buf[b], n);
  if (in->rs) {
    rsearch_cleanup(in->rs);
    free(in->rs);
  }
  for (size_t i = 0; i < IDEM_LEN && in->idem; i++) psnap_unref(in->idem[i].snap);
  free(in->idem);
  free(in->hist);
  for (size_t i = 0; i < in->nworkers; i++) free(in->workers[i]);
  free(in->workers);
  for (size_t j = 0; j < in->round.count; j++) psnap_unref(in->round.part[j].rows);
  free(in->round.part);
  sparse__free(in);
  instance_cfg_free(&in->cfg);
  pthread_mutex_destroy(&in->lock);
  pthread_mutex_destroy(&in->change_lock);
  free(in);
}

/* ---- immutable parts -------------------------------------------------------- */

const instance_layout *instance_layout_of(const instance *in) { return &in->layout; }
const char *instance_name(const instance *in) { return in->layout.name; }
uint64_t instance_incarnation(const instance *in) { return in->incarnation; }

/* ---- close and shutdown ----------------------------------------------------- */

static void close_waiters(instance *in, int code, const char *msg, bool deleted) {
  wake_list wl = {0};
  instance__lock(in);
  if (deleted) in->deleted = true;
  else in->stopping = true;
  derr e = {0};
  derr_set(&e, code, "%s", msg ? msg : derr_default(code));
  waiters__fail_pollers(in, code, &e, &wl);
  if (in->round.count) round__fail(in, code, e.msg, &wl, NULL);
  round__reset(in);
  instance__unlock(in);
  waiters__run(&wl);
}

void instance_close(instance *in, int code, const char *msg) { close_waiters(in, code, msg, true); }

void instance_shutdown(instance *in) {
  close_waiters(in, E_SHUTTING_DOWN, "the daemon is shutting down; retry after it restarts", false);
}

/* ---- reads ------------------------------------------------------------------ */

uint64_t instance_read(instance *in, float *out) {
  instance__lock(in);
  memcpy(out, in->params, in->cfg.n * sizeof(float));
  uint64_t s = in->step;
  instance__unlock(in);
  return s;
}

void instance_cfg_get(instance *in, instance_cfg *out) {
  instance__lock(in);
  instance_cfg_copy(out, &in->cfg);
  instance__unlock(in);
}

void instance_info_get(instance *in, instance_info *out) {
  instance__lock(in);
  out->step = in->step;
  out->lr = in->lr_now;
  out->created = in->created;
  out->workers_seen = in->nworkers;
  out->waiting = in->round.count;
  for (waiter *w = in->pollers; w; w = w->next) out->waiting++;
  out->best_loss = in->rs ? in->rs->best_loss : NAN;
  instance__unlock(in);
}

double instance_lr(instance *in) {
  instance__lock(in);
  double lr = in->lr_now;
  instance__unlock(in);
  return lr;
}

uint64_t instance_version(instance *in, bool *deleted) {
  instance__lock(in);
  uint64_t v = in->version;
  if (deleted) *deleted = in->deleted;
  instance__unlock(in);
  return v;
}

uint64_t instance_floats(instance *in) {
  instance__lock(in);
  uint64_t f = instance__held_floats(in);
  instance__unlock(in);
  return f;
}

void instance_note_codec(instance *in, double decode_ms, double encode_ms) {
  instance__lock(in);
  in->stats.decode_ns_total += (uint64_t)(decode_ms * 1e6);
  in->stats.encode_ns_total += (uint64_t)(encode_ms * 1e6);
  instance__unlock(in);
}

/* ---- sparse rows ------------------------------------------------------------ */

uint64_t instance_read_rows(instance *in, int t, const uint64_t *ids, size_t k, float *out) {
  int i = sparse__ordinal(in, t);
  assert(i >= 0);
  instance__lock(in);
  const rows *rt = &in->rows[i];
  for (size_t j = 0; j < k; j++) rows_read(rt, ids[j], out + j * rt->D);
  uint64_t s = in->step;
  instance__unlock(in);
  return s;
}

uint64_t instance_rows_held(instance *in, int t) {
  int i = sparse__ordinal(in, t);
  if (i < 0) return 0;
  instance__lock(in);
  uint64_t m = in->rows[i].count;
  instance__unlock(in);
  return m;
}

int instance_init_rows(instance *in, int t, const uint64_t *ids, size_t k, const float *vals) {
  assert(atomic_load(&in->refs) == 1); /* not published yet */
  int i = sparse__ordinal(in, t);
  assert(i >= 0);
  rows *rt = &in->rows[i];
  if (rows_reserve(rt, k) < 0) return -E_QUOTA; /* at most k new: room is invisible */
  for (size_t j = 0; j < k; j++) memcpy(rows_get(rt, ids[j], NULL), vals + j * rt->D, rt->D * sizeof(float));
  in->stats.rows_held = 0;
  for (size_t r = 0; r < in->nsparse; r++) in->stats.rows_held += in->rows[r].count;
  return 0;
}

void instance_stats_copy(instance *in, struct instance_stats *out, uint64_t *step) {
  instance__lock(in);
  *out = in->stats;
  *step = in->step;
  instance__unlock(in);
}
