/* journal_state: --durability log on the state layer's side.  A validated
 * push (or a closed sync round) becomes a `logged` change: its entry
 * (proto/log.md) is described by iov pieces over the request's own buffers
 * and submitted to the instance's change_sink; when the journal says it is
 * durable (done, code 0) it is applied here with the kernels a live push
 * takes, and its waiters are completed; a refused batch refuses them with
 * nothing applied.  Entries read back (replay, a follower) are applied by
 * instance_apply_change with the same code.  Never does I/O; owns the
 * logged changes until done.  The journal's thread (done), HTTP threads and
 * the loop thread (submit, under the instance lock), main (replay). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "instance_internal.h"
#include "mem.h"

#define ENTRY_MAGIC "DLE1"
#define HDR_FIXED 72
#define KIND_PUSH 1
#define KIND_ROUND 2

struct logged {
  change c; /* first: done receives &c */
  instance *in;
  int kind;
  waiter *waiters; /* push: the push and the retries of its key */
  int slot;        /* push: idempotency slot or -1 */
  push p;          /* a copy; grad and rows point into the request's buffers */
  double sumsq;    /* push: the dense gradient's squared norm */
  char worker[NAME_MAX_LEN + 1], key[IDEM_KEY_MAX + 1];
  struct participant *part; /* round: the participants (grad unused) */
  size_t npart;
  float *grad; /* round: the combined gradient (pooled) */
  size_t grad_cap;
  push_rows *rrows; /* round: the concatenated sparse rows (owned copies), NULL if none */
  unsigned char *hdr;
  struct iovec *iov;
  uint64_t *ks; /* sparse: each tensor's k, little-endian */
  logged *next_deferred;
};

static void put16(unsigned char *b, uint16_t v) { memcpy(b, &v, 2); }
static void put32(unsigned char *b, uint32_t v) { memcpy(b, &v, 4); }
static void put64(unsigned char *b, uint64_t v) { memcpy(b, &v, 8); }
static uint16_t get16(const unsigned char *b) { uint16_t v; memcpy(&v, b, 2); return v; }
static uint32_t get32(const unsigned char *b) { uint32_t v; memcpy(&v, b, 4); return v; }
static uint64_t get64(const unsigned char *b) { uint64_t v; memcpy(&v, b, 8); return v; }
static void putd(unsigned char *b, double v) { memcpy(b, &v, 8); }
static double getd(const unsigned char *b) { double v; memcpy(&v, b, 8); return v; }

uint64_t journal__new_id(void) {
  uint64_t id = 0;
  if (getrandom(&id, sizeof id, 0) != sizeof id) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    id = (uint64_t)ts.tv_sec * 1000000007u ^ (uint64_t)ts.tv_nsec ^ (uint64_t)(uintptr_t)&ts;
  }
  return id ? id : 1;
}

uint64_t journal__name_id(const char *name) {
  uint64_t h = 14695981039346656037ull; /* FNV-1a */
  for (const unsigned char *p = (const unsigned char *)name; *p; p++) h = (h ^ *p) * 1099511628211ull;
  return h ? h : 1;
}

uint64_t journal__logical_step(const instance *in) { return in->step + in->queued; }

/* The header (fixed part, names, keys, padding) into lg->hdr; its length. */
static size_t write_header(instance *in, logged *lg, uint64_t seq) {
  const char *name = in->layout.name, *worker = lg->kind == KIND_PUSH ? lg->worker : "";
  size_t a = strlen(name), b = strlen(worker), len = HDR_FIXED + a + b, c;
  if (lg->kind == KIND_PUSH) {
    c = strlen(lg->key);
    len += c;
  } else {
    c = lg->npart;
    for (size_t j = 0; j < c; j++) {
      int k = lg->part[j].idem;
      len += 4 + strlen(lg->part[j].w->name) + (k >= 0 ? strlen(in->idem[k].r.key) : 0);
    }
  }
  len = (len + 3) & ~(size_t)3;
  unsigned char *h = lg->hdr = mem_xcalloc(1, len);
  memcpy(h, ENTRY_MAGIC, 4);
  put16(h + 4, (uint16_t)lg->kind);
  put64(h + 8, in->log_id);
  put64(h + 16, seq);
  put64(h + 24, journal__logical_step(in));
  put64(h + 32, (uint64_t)lg->p.step);
  putd(h + 40, lg->p.loss);
  putd(h + 48, lg->p.grad_norm);
  put32(h + 56, (uint32_t)in->cfg.n);
  put32(h + 60, (uint32_t)in->nsparse);
  put16(h + 64, (uint16_t)a);
  put16(h + 66, (uint16_t)b);
  put16(h + 68, (uint16_t)c);
  unsigned char *q = h + HDR_FIXED;
  memcpy(q, name, a), q += a;
  memcpy(q, worker, b), q += b;
  if (lg->kind == KIND_PUSH) {
    memcpy(q, lg->key, c);
    return len;
  }
  for (size_t j = 0; j < c; j++) {
    const char *wn = lg->part[j].w->name, *key = lg->part[j].idem >= 0 ? in->idem[lg->part[j].idem].r.key : "";
    size_t wl = strlen(wn), kl = strlen(key);
    put16(q, (uint16_t)wl), q += 2;
    memcpy(q, wn, wl), q += wl;
    put16(q, (uint16_t)kl), q += 2;
    memcpy(q, key, kl), q += kl;
  }
  return len;
}

static void done_cb(change *c, int code, const derr *err);

/* Encodes lg as iov pieces (header, dense floats, each sparse tensor's k,
 * prs and values) and submits it. */
static void submit(instance *in, logged *lg, const float *grad, const push_rows *prs) {
  uint64_t seq = ++in->log_next;
  size_t s = in->nsparse, nio = 0, hl = write_header(in, lg, seq);
  lg->iov = mem_xcalloc(2 + 3 * s, sizeof *lg->iov);
  lg->iov[nio++] = (struct iovec){lg->hdr, hl};
  lg->c.len = hl + in->cfg.n * sizeof(float);
  if (in->cfg.n) lg->iov[nio++] = (struct iovec){(void *)grad, in->cfg.n * sizeof(float)};
  if (s) lg->ks = mem_xcalloc(s, sizeof *lg->ks);
  for (size_t t = 0, i = 0; t < in->layout.ntensors; t++) {
    const tensor *tn = &in->layout.tensors[t];
    if (!tn->sparse) continue;
    uint64_t k = prs ? prs[i].k : 0;
    put64((unsigned char *)&lg->ks[i], k);
    lg->iov[nio++] = (struct iovec){&lg->ks[i], 8};
    if (k) {
      lg->iov[nio++] = (struct iovec){(void *)prs[i].rows, k * 8};
      lg->iov[nio++] = (struct iovec){prs[i].vals, k * tn->dim * sizeof(float)};
    }
    lg->c.len += 8 + k * 8 + k * tn->dim * sizeof(float);
    i++;
  }
  lg->c.iov = lg->iov;
  lg->c.iovcnt = (int)nio;
  lg->c.instance = in->layout.name;
  lg->c.seq = seq;
  lg->c.done = done_cb;
  lg->c.arg = lg;
  in->queued++;
  in->changes->submit(in->changes->ctx, &lg->c);
}

int journal__push(instance *in, push *p, waiter *w, double sumsq, void (*suspend)(void *), void *arg) {
  INSTANCE_ASSERT_LOCKED(in);
  logged *lg = mem_xcalloc(1, sizeof *lg);
  lg->in = instance_ref(in);
  lg->kind = KIND_PUSH;
  lg->p = *p;
  lg->sumsq = sumsq;
  snprintf(lg->worker, sizeof lg->worker, "%s", p->worker ? p->worker : "");
  snprintf(lg->key, sizeof lg->key, "%s", p->key ? p->key : "");
  lg->p.worker = p->worker ? lg->worker : NULL;
  lg->p.key = p->key ? lg->key : NULL;
  lg->slot = p->key ? idem__claim(in, p->key) : -1;
  if (lg->slot >= 0) in->idem[lg->slot].queued = lg;
  w->next = NULL;
  w->linked = 1;
  lg->waiters = w;
  submit(in, lg, p->grad, p->rows);
  suspend(arg); /* under the lock: done cannot run before it */
  return PUSH_WAITING;
}

/* The round's concatenated rows (in the sparse scratch) as owned copies. */
static push_rows *copy_rows(instance *in, const push_rows *pr) {
  push_rows *out = mem_xcalloc(in->nsparse, sizeof *out);
  for (size_t i = 0, t = 0; t < in->layout.ntensors; t++) {
    if (!in->layout.tensors[t].sparse) continue;
    size_t k = pr[i].k, D = in->layout.tensors[t].dim;
    uint64_t *ids = mem_xmalloc(k * 8 + 1);
    float *vals = mem_xmalloc(k * D * sizeof(float) + 1);
    if (k) memcpy(ids, pr[i].rows, k * 8);
    if (k) memcpy(vals, pr[i].vals, k * D * sizeof(float));
    out[i] = (push_rows){k, ids, vals};
    i++;
  }
  return out;
}

static void free_rows(size_t n, push_rows *pr) {
  for (size_t i = 0; pr && i < n; i++) {
    free((void *)pr[i].rows);
    free(pr[i].vals);
  }
  free(pr);
}

/* The round's keys into their slots in worker-name order (the order a
 * replay or a follower claims them in), so the idempotency window reads the
 * same on every member.  The slots were claimed at join, in arrival order. */
static void order_keys(instance *in) {
  struct round *r = &in->round;
  int slots[r->count ? r->count : 1];
  idem_entry ents[r->count ? r->count : 1];
  size_t n = 0;
  for (size_t j = 0; j < r->count; j++)
    if (r->part[j].idem >= 0) slots[n] = r->part[j].idem, ents[n++] = in->idem[r->part[j].idem];
  for (size_t a = 1; a < n; a++) /* oldest first: ring order from idem_next */
    for (size_t b = a; b > 0 && (slots[b] - (int)in->idem_next + IDEM_LEN) % IDEM_LEN <
                                    (slots[b - 1] - (int)in->idem_next + IDEM_LEN) % IDEM_LEN; b--) {
      int t = slots[b];
      slots[b] = slots[b - 1], slots[b - 1] = t;
    }
  for (size_t j = 0, i = 0; j < r->count; j++)
    if (r->part[j].idem >= 0) {
      in->idem[slots[i]] = ents[i];
      r->part[j].idem = slots[i++];
    }
}

void journal__round(instance *in, double loss, wake_list *wl, waiter *self) {
  INSTANCE_ASSERT_LOCKED(in);
  order_keys(in);
  push_rows pr[in->nsparse ? in->nsparse : 1];
  derr e = {0};
  if (in->nsparse && sparse__concat(in, pr, &e) < 0) {
    round__fail(in, e.code, e.msg, wl, self);
    return;
  }
  logged *lg = mem_xcalloc(1, sizeof *lg);
  lg->in = instance_ref(in);
  lg->kind = KIND_ROUND;
  lg->p = (push){.step = (int64_t)in->step, .loss = loss, .grad_norm = NAN};
  lg->slot = -1;
  lg->rrows = in->nsparse ? copy_rows(in, pr) : NULL;
  lg->npart = in->round.count;
  lg->part = mem_xcalloc(lg->npart, sizeof *lg->part);
  memcpy(lg->part, in->round.part, lg->npart * sizeof *lg->part);
  for (size_t j = 0; j < lg->npart; j++) {
    lg->part[j].grad = NULL;      /* the requests' buffers: not needed past the combination */
    in->round.part[j].rows = NULL; /* its copy of the rows (replies) moves to the entry */
    int k = lg->part[j].idem;
    if (k >= 0) {
      in->idem[k].pending = NULL;
      in->idem[k].queued = lg;
    }
  }
  lg->grad = bufpool_get(in->pool, in->cfg.n * sizeof(float) + 1, &lg->grad_cap);
  if (!lg->grad) lg->grad = mem_alloc_floats(in->cfg.n), lg->grad_cap = 0;
  if (in->cfg.n) memcpy(lg->grad, in->scratch, in->cfg.n * sizeof(float));
  submit(in, lg, lg->grad, lg->rrows);
  round__reset(in);
}

bool journal__attach_retry(instance *in, int k, waiter *w) {
  INSTANCE_ASSERT_LOCKED(in);
  logged *lg = in->idem[k].queued;
  if (!lg) return false;
  waiter **head = &lg->waiters;
  for (size_t j = 0; j < lg->npart; j++)
    if (lg->part[j].idem == k) head = &lg->part[j].waiters;
  while (*head) head = &(*head)->next; /* after the first: it keeps its own reply */
  w->next = NULL;
  w->linked = 1;
  *head = w;
  return true;
}

static void free_logged(logged *lg) {
  if (lg->grad && lg->grad_cap) bufpool_put(lg->in->pool, lg->grad, lg->grad_cap);
  else if (lg->grad) mem_free_floats(lg->grad, lg->in->cfg.n);
  for (size_t j = 0; j < lg->npart; j++) psnap_unref(lg->part[j].rows);
  free_rows(lg->in->nsparse, lg->rrows);
  instance_unref(lg->in);
  free(lg->part);
  free(lg->hdr);
  free(lg->iov);
  free(lg->ks);
  free(lg);
}

/* Completes a chain of waiters (the first the original request, then the
 * retries, which get the first's outcome). */
static void complete_chain(instance *in, waiter *w, int code, const derr *e, psnap *snap, psnap *prs,
                           double ms, wake_list *wl) {
  bool retry = false;
  for (waiter *next; w; w = next) {
    next = w->next;
    w->linked = 0;
    if (code) apply__reject(in, w, code, e);
    else waiters__complete(w, 0, NULL, in->step);
    w->snap = code ? NULL : psnap_ref(snap);
    w->rows = code ? NULL : psnap_ref(prs);
    w->apply_ms = ms;
    w->replayed = retry && !code;
    retry = true;
    waiters__add(wl, w);
  }
}

/* The slot k still carries lg's key (not evicted by a newer one). */
static bool slot_of(instance *in, int k, const logged *lg) { return k >= 0 && in->idem[k].queued == lg; }

/* A push's step, with the bookkeeping a live async push does: the sparse
 * rows coalesced and charged first (0, or the refusal with nothing
 * changed), the norm over the dense gradient and the rows unless the push
 * gave one.  *ms: the step's time. */
static int apply_push(instance *in, push *p, double sumsq, double *ms, derr *e) {
  if (in->nsparse && sparse__prepare(in, p->rows, 1, &sumsq, e) < 0) return -e->code;
  double norm = isnan(p->grad_norm) ? sqrt(sumsq) : p->grad_norm;
  uint64_t t0 = instance__mono_ns();
  apply__step_rows(in, p->grad, p->rows, true, norm, p->loss, p->emit);
  *ms = (double)(instance__mono_ns() - t0) / 1e6;
  worker_info *wk = p->worker && *p->worker ? workers__get(in, p->worker, true) : NULL;
  if (wk) {
    wk->last_push_time = instance__wall_now();
    wk->last_push_step = p->step >= 0 ? p->step : (int64_t)in->step - 1;
    wk->staleness = (uint64_t)((int64_t)in->step - 1 - wk->last_push_step);
    wk->pushes++;
  }
  return 0;
}

/* A round's step: the combined dense gradient g and rows (concatenated;
 * coalesced and divided here as a live round does). */
static int apply_round(instance *in, float *g, push_rows *prs, size_t count, double loss, double *ms, derr *e) {
  double sumsq = 0;
  if (apply__scan_sumsq(in, g, &sumsq, e) < 0) return -e->code;
  float divide = in->cfg.aggregate == AGG_MEAN && count > 1 ? (float)count : 1;
  if (in->nsparse && sparse__prepare(in, prs, divide, &sumsq, e) < 0) return -e->code;
  uint64_t t0 = instance__mono_ns();
  apply__step_rows(in, g, in->nsparse ? prs : NULL, false, sqrt(sumsq), loss, false);
  *ms = (double)(instance__mono_ns() - t0) / 1e6;
  return 0;
}

static void refuse_logged(instance *in, logged *lg, int code, const derr *err, wake_list *wl);

/* A durable change's turn (under the lock).  A sparse step the quota
 * refuses now is refused (its entry is refused the same way at replay). */
static void apply_logged(instance *in, logged *lg, wake_list *wl) {
  if (lg->c.seq > in->log_seq) in->log_seq = lg->c.seq;
  double ms = 0;
  derr e = {0};
  if (lg->kind == KIND_PUSH) {
    if (apply_push(in, &lg->p, lg->sumsq, &ms, &e) < 0) {
      refuse_logged(in, lg, e.code, &e, wl);
      return;
    }
    if (slot_of(in, lg->slot, lg)) idem__done(in, lg->slot, 0, NULL, in->step, NULL);
    complete_chain(in, lg->waiters, 0, NULL, NULL, NULL, ms, wl);
    waiters__wake_pollers(in, wl);
    return;
  }
  if (apply_round(in, lg->grad, lg->rrows, lg->npart, lg->p.loss, &ms, &e) < 0) {
    refuse_logged(in, lg, e.code, &e, wl);
    return;
  }
  psnap *snap = psnap__new(in->pool, in->params, in->cfg.n, in->step);
  uint64_t now = timers_now_ms();
  for (size_t j = 0; j < lg->npart; j++) {
    struct participant *p = &lg->part[j];
    p->w->last_seen_ms = now;
    if (p->rows) sparse__fill_copy(in, p->rows);
    if (slot_of(in, p->idem, lg)) idem__done(in, p->idem, 0, NULL, in->step, snap);
    complete_chain(in, p->waiters, 0, NULL, snap, p->rows, ms, wl);
  }
  psnap_unref(snap);
  waiters__wake_pollers(in, wl);
}

/* A change that will never be durable (under the lock): nothing applied. */
static void refuse_logged(instance *in, logged *lg, int code, const derr *err, wake_list *wl) {
  derr e = {0};
  if (err && err->code) e = *err;
  else derr_set(&e, code, NULL);
  if (lg->kind == KIND_PUSH) {
    if (slot_of(in, lg->slot, lg)) idem__forget(in, lg->slot);
    complete_chain(in, lg->waiters, code, &e, NULL, NULL, 0, wl);
    return;
  }
  for (size_t j = 0; j < lg->npart; j++) {
    if (slot_of(in, lg->part[j].idem, lg)) idem__forget(in, lg->part[j].idem);
    complete_chain(in, lg->part[j].waiters, code, &e, NULL, NULL, 0, wl);
  }
}

/* The journal's thread: lg is durable (code 0) or refused. */
static void done_cb(change *c, int code, const derr *err) {
  logged *lg = c->arg;
  instance *in = lg->in;
  wake_list wl = {0};
  instance__lock(in);
  if (!code && in->log_hold) { /* a PATCH is between its snapshot and its change: after it */
    lg->next_deferred = NULL;
    if (in->deferred_tail) in->deferred_tail->next_deferred = lg;
    else in->deferred = lg;
    in->deferred_tail = lg;
    instance__unlock(in);
    return;
  }
  in->queued--;
  if (!code && in->deleted) code = E_NO_INSTANCE;
  if (code) refuse_logged(in, lg, code, code == E_NO_INSTANCE ? NULL : err, &wl);
  else apply_logged(in, lg, &wl);
  instance__unlock(in);
  waiters__run(&wl);
  free_logged(lg);
}

void journal__hold(instance *in) {
  INSTANCE_ASSERT_LOCKED(in);
  if (in->changes) in->log_hold++;
}

void journal__release(instance *in, wake_list *wl) {
  INSTANCE_ASSERT_LOCKED(in);
  if (!in->log_hold || --in->log_hold) return;
  for (logged *lg = in->deferred, *next; lg; lg = next) {
    next = lg->next_deferred;
    in->queued--;
    if (in->deleted) refuse_logged(in, lg, E_NO_INSTANCE, NULL, wl);
    else apply_logged(in, lg, wl);
    free_logged(lg); /* the caller holds its own reference: never the last */
  }
  in->deferred = in->deferred_tail = NULL;
}

/* ---- entries read back ------------------------------------------------------ */

typedef struct entry_view {
  int kind;
  uint64_t log_id, seq;
  int64_t step;
  double loss, norm;
  uint32_t n, s;
  const unsigned char *name, *worker, *keys;
  size_t a, b, c, keys_len;
  const unsigned char *payload;
  size_t payload_len;
} entry_view;

static int parse(const unsigned char *x, size_t len, entry_view *v, derr *e) {
  if (len < HDR_FIXED || memcmp(x, ENTRY_MAGIC, 4))
    return derr_set(e, E_BAD_REQUEST, "log entry: too short or bad magic");
  v->kind = get16(x + 4);
  v->log_id = get64(x + 8);
  v->seq = get64(x + 16);
  v->step = (int64_t)get64(x + 32);
  v->loss = getd(x + 40);
  v->norm = getd(x + 48);
  v->n = get32(x + 56);
  v->s = get32(x + 60);
  v->a = get16(x + 64), v->b = get16(x + 66), v->c = get16(x + 68);
  size_t off = HDR_FIXED + v->a + v->b;
  if (v->a == 0 || v->a > NAME_MAX_LEN || v->b > NAME_MAX_LEN || off > len)
    return derr_set(e, E_BAD_REQUEST, "log entry: bad name lengths");
  v->name = x + HDR_FIXED, v->worker = x + HDR_FIXED + v->a, v->keys = x + off;
  size_t kl = 0;
  if (v->kind == KIND_PUSH) {
    kl = v->c;
  } else if (v->kind == KIND_ROUND) {
    for (size_t j = 0; j < v->c; j++) {
      if (off + kl + 2 > len) return derr_set(e, E_BAD_REQUEST, "log entry: participants cut short");
      kl += 2 + get16(x + off + kl);
      if (off + kl + 2 > len) return derr_set(e, E_BAD_REQUEST, "log entry: participants cut short");
      kl += 2 + get16(x + off + kl);
    }
  } else {
    return derr_set(e, E_BAD_REQUEST, "log entry: unknown kind %d", v->kind);
  }
  if (kl > IDEM_KEY_MAX && v->kind == KIND_PUSH) return derr_set(e, E_BAD_REQUEST, "log entry: key too long");
  off = (off + kl + 3) & ~(size_t)3;
  if (off > len) return derr_set(e, E_BAD_REQUEST, "log entry: cut short");
  v->keys_len = kl;
  v->payload = x + off;
  v->payload_len = len - off;
  return 0;
}

int instance_change_name(const unsigned char *entry, size_t len, char *name, derr *e) {
  entry_view v;
  int rc = parse(entry, len, &v, e);
  if (rc < 0) return rc;
  memcpy(name, v.name, v.a);
  name[v.a] = 0;
  return 0;
}

/* The payload against the layout; the sparse sections as owned copies
 * (*prs, NULL if the instance has none; free_rows). */
static int decode_payload(instance *in, const entry_view *v, push_rows **prs, derr *e) {
  *prs = NULL;
  if (v->n != in->cfg.n || v->s != in->nsparse)
    return derr_set(e, E_BAD_LENGTH, "log entry: %u dense floats and %u sparse tensors; the instance has %zu and %zu",
                    v->n, v->s, in->cfg.n, in->nsparse);
  size_t off = (size_t)v->n * 4;
  if (in->nsparse) *prs = mem_xcalloc(in->nsparse, sizeof **prs);
  for (size_t t = 0, i = 0; t < in->layout.ntensors; t++) {
    const tensor *tn = &in->layout.tensors[t];
    if (!tn->sparse) continue;
    uint64_t k = off + 8 <= v->payload_len ? get64(v->payload + off) : UINT64_MAX;
    size_t left = v->payload_len - (off + 8 <= v->payload_len ? off + 8 : v->payload_len);
    if (k == UINT64_MAX || k > left / 8 || k * 8 + k * tn->dim * 4 > left)
      return derr_set(e, E_BAD_LENGTH, "log entry: sparse section of %s cut short", tn->name);
    off += 8;
    uint64_t *ids = mem_xmalloc(k * 8 + 1);
    float *vals = mem_xmalloc(k * tn->dim * 4 + 1);
    memcpy(ids, v->payload + off, k * 8);
    memcpy(vals, v->payload + off + k * 8, k * tn->dim * 4);
    off += k * 8 + k * tn->dim * 4;
    (*prs)[i++] = (push_rows){k, ids, vals};
  }
  if (off != v->payload_len)
    return derr_set(e, E_BAD_LENGTH, "log entry: payload of %zu bytes, expected %zu", v->payload_len, off);
  return 0;
}

static void apply_round_entry(instance *in, const entry_view *v, float *g, push_rows *prs, derr *e) {
  double ms;
  if (apply_round(in, g, prs, v->c, v->loss, &ms, e) < 0) return;
  psnap *snap = NULL;
  size_t off = 0;
  for (size_t j = 0; j < v->c; j++) {
    char wn[NAME_MAX_LEN + 1], key[IDEM_KEY_MAX + 1];
    size_t wl = get16(v->keys + off);
    snprintf(wn, sizeof wn, "%.*s", (int)wl, (const char *)v->keys + off + 2);
    off += 2 + wl;
    size_t kl = get16(v->keys + off);
    snprintf(key, sizeof key, "%.*s", (int)kl, (const char *)v->keys + off + 2);
    off += 2 + kl;
    worker_info *wk = workers__get(in, wn, true);
    wk->last_seen_ms = timers_now_ms(); /* a member taking over leads with live leases */
    wk->last_push_time = instance__wall_now();
    wk->last_push_step = (int64_t)in->step - 1;
    wk->staleness = 0;
    wk->pushes++;
    if (!kl) continue;
    if (!snap) snap = psnap__new(in->pool, in->params, in->cfg.n, in->step);
    idem__done(in, idem__claim(in, key), 0, NULL, in->step, snap);
  }
  psnap_unref(snap);
}

/* Under the lock: v applied with g (n floats, ours) and rows.  A change the
 * live daemon refused after logging it (the quota) is refused again: e says
 * why, nothing changed. */
static void apply_view(instance *in, const entry_view *v, float *g, push_rows *prs, derr *e) {
  in->log_seq = v->seq;
  if (v->seq > in->log_next) in->log_next = v->seq;
  if (v->kind == KIND_ROUND) {
    apply_round_entry(in, v, g, prs, e);
    return;
  }
  char worker[NAME_MAX_LEN + 1], key[IDEM_KEY_MAX + 1];
  snprintf(worker, sizeof worker, "%.*s", (int)v->b, (const char *)v->worker);
  snprintf(key, sizeof key, "%.*s", (int)v->c, (const char *)v->keys);
  push p = {.worker = v->b ? worker : NULL, .step = v->step, .loss = v->loss, .grad = g, .rows = prs,
            .key = v->c ? key : NULL, .grad_norm = v->norm};
  double sumsq = 0, ms;
  if (apply__scan_sumsq(in, g, &sumsq, e) < 0 || apply_push(in, &p, sumsq, &ms, e) < 0) return;
  if (p.key) idem__done(in, idem__claim(in, p.key), 0, NULL, in->step, NULL);
}

int instance_apply_change(instance *in, const unsigned char *entry, size_t len, derr *e) {
  entry_view v;
  push_rows *prs;
  int rc = parse(entry, len, &v, e);
  if (rc < 0) return rc;
  if (v.log_id != in->log_id) return 1; /* an earlier instance of this name */
  if ((rc = decode_payload(in, &v, &prs, e)) < 0) {
    free_rows(in->nsparse, prs);
    return rc;
  }
  size_t cap = 0;
  float *g = bufpool_get(in->pool, (size_t)v.n * sizeof(float) + 1, &cap);
  if (!g) {
    free_rows(in->nsparse, prs);
    return derr_set(e, E_QUOTA, "out of memory for a %u-float log entry", v.n);
  }
  memcpy(g, v.payload, (size_t)v.n * sizeof(float));
  wake_list wl = {0};
  derr refused = {0};
  instance__lock(in);
  if (v.seq <= in->log_seq) rc = 1;
  else if (in->queued) rc = derr_set(e, E_CONFLICT, "log entry %llu: the instance has changes of its own queued",
                                     (unsigned long long)v.seq);
  else apply_view(in, &v, g, prs, &refused);
  if (rc == 0) waiters__wake_pollers(in, &wl);
  instance__unlock(in);
  waiters__run(&wl);
  bufpool_put(in->pool, g, cap);
  free_rows(in->nsparse, prs);
  if (refused.code) {
    derr_set(e, refused.code, "%s", refused.msg);
    return 2;
  }
  return rc;
}
