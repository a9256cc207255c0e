/* test_journal: --durability log on the state layer's side, through a fake
 * change_sink that keeps the submitted changes (the test plays the journal:
 * it commits or refuses them).  A queued push changes nothing until it is
 * durable; then it applies as a snapshot-mode twin does, bit for bit; its
 * bytes, applied to a copy taken before (instance_apply_change, as replay
 * does), give the same state, for dense and sparse pushes and a sync round
 * with rows; a refused batch refuses the request with nothing applied and
 * forgets its key; a PATCH holds durable changes until its configuration is
 * set.  The test thread drives everything. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "instance.h"
#include "mem.h"
#include "optim.h"
#include "statefix.h"
#include "suites.h"
#include "testutil.h"

static fix F;
static void setup(void) { fix_init(&F); }
static void teardown(void) { fix_cleanup(&F); }

#define MAXQ 64
typedef struct fake_sink {
  change *q[MAXQ];
  size_t n;
  unsigned char *bytes[MAXQ]; /* each change's entry, copied at commit */
  size_t len[MAXQ], nbytes;
} fake_sink;

static void fake_submit(void *ctx, change *c) {
  fake_sink *s = ctx;
  ck_assert_uint_lt(s->n, MAXQ);
  s->q[s->n++] = c;
}

/* Commits (code 0) or refuses every queued change, in order. */
static void finish_all(fake_sink *s, int code) {
  for (size_t i = 0; i < s->n; i++) {
    change *c = s->q[i];
    if (!code) {
      unsigned char *b = mem_xmalloc(c->len + 1);
      size_t off = 0;
      for (int k = 0; k < c->iovcnt; k++) {
        memcpy(b + off, c->iov[k].iov_base, c->iov[k].iov_len);
        off += c->iov[k].iov_len;
      }
      ck_assert_uint_eq(off, c->len);
      s->bytes[s->nbytes] = b;
      s->len[s->nbytes++] = c->len;
    }
    derr e = {0};
    if (code) derr_set(&e, code, "the disk is full");
    c->done(c, code, code ? &e : NULL);
  }
  s->n = 0;
}

static void sink_free(fake_sink *s) {
  for (size_t i = 0; i < s->nbytes; i++) free(s->bytes[i]);
}

static instance *log_instance(fake_sink *s, const fix_spec *sp, change_sink *cs) {
  *cs = (change_sink){fake_submit, s};
  instance_state st;
  fix_state(&st, sp);
  instance_env env = F.env;
  env.changes = cs;
  instance *in = instance_from_state(&st, &env);
  instance_state_free(&st);
  ck_assert_ptr_nonnull(in);
  return in;
}

/* A copy of in's state now, as a new instance in snapshot mode (its log id kept). */
static instance *copy_of(instance *in) {
  instance_state st;
  ck_assert_int_eq(instance_export(in, &st), 0);
  instance *c = instance_from_state(&st, &F.env);
  instance_state_free(&st);
  return c;
}

static void ck_same(instance *a, instance *b) {
  instance_state x, y;
  ck_assert_int_eq(instance_export(a, &x), 0);
  ck_assert_int_eq(instance_export(b, &y), 0);
  ck_assert_uint_eq(x.step, y.step);
  ck_floats_bits(y.params, x.params, x.cfg.n, "params");
  for (int bf = 0; bf < OPTIM_NBUF; bf++) {
    ck_assert((x.buf[bf] == NULL) == (y.buf[bf] == NULL));
    if (x.buf[bf]) ck_floats_bits(y.buf[bf], x.buf[bf], x.cfg.n, "buffer");
  }
  ck_assert_uint_eq(x.nidem, y.nidem);
  for (size_t i = 0; i < x.nidem; i++) ck_assert_str_eq(x.idem[i].key, y.idem[i].key);
  instance_state_free(&x);
  instance_state_free(&y);
}

START_TEST(queued_push_applies_only_when_durable) {
  fake_sink s = {0};
  change_sink cs;
  fix_spec sp = {.alg = "adam", .lr = 0.01, .n = 3};
  instance *in = log_instance(&s, &sp, &cs);
  instance *twin = fix_instance(&F, &sp);
  instance *start = copy_of(in);
  twaiter t[3], u;
  for (int i = 0; i < 3; i++) tw_init(&t[i]);
  tw_init(&u);
  float gs[3][3]; /* a queued push's gradient is the request's until it is done */
  for (int i = 0; i < 3; i++) {
    float *g = gs[i], h[3] = {1.0f + i, -0.5f, 0.25f * i};
    memcpy(g, h, sizeof h);
    push p = fix_push("w0", i, g); /* step i: ahead of the applied state, not of the logical one */
    p.key = i == 1 ? "k:once" : NULL;
    ck_assert_int_eq(tw_push(in, &t[i], p), PUSH_WAITING);
    ck_assert_int_eq(t[i].suspends, 1);
    float now[3];
    ck_assert_uint_eq(fix_read(in, now), 0); /* nothing applied before it is durable */
    push q = fix_push("w0", i, h);
    q.key = p.key;
    ck_assert_int_eq(tw_push(twin, &u, q), PUSH_DONE);
  }
  float g[3] = {9, 9, 9};
  push retry = fix_push("w0", -1, g);
  retry.key = "k:once";
  twaiter r;
  tw_init(&r);
  ck_assert_int_eq(tw_push(in, &r, retry), PUSH_WAITING); /* waits with the first */
  finish_all(&s, 0);
  for (int i = 0; i < 3; i++) {
    ck_assert_int_eq(t[i].wakes, 1);
    ck_assert_uint_eq(t[i].w.step, (uint64_t)i + 1);
  }
  ck_assert_int_eq(r.wakes, 1);
  ck_assert_int_eq(r.w.code, 0);
  ck_assert_uint_eq(r.w.step, 2);
  ck_assert(r.w.replayed);
  ck_same(in, twin);
  /* replay: the entries' bytes on the copy taken before give the same state */
  for (size_t i = 0; i < s.nbytes; i++) {
    derr e = {0};
    ck_assert_int_eq(instance_apply_change(start, s.bytes[i], s.len[i], &e), 0);
  }
  ck_same(start, in);
  derr e = {0};
  ck_assert_int_eq(instance_apply_change(start, s.bytes[0], s.len[0], &e), 1); /* already in its state */
  char name[NAME_MAX_LEN + 1];
  ck_assert_int_eq(instance_change_name(s.bytes[0], s.len[0], name, &e), 0);
  ck_assert_str_eq(name, "t");
  s.bytes[0][5] ^= 1; /* kind */
  ck_assert_int_lt(instance_apply_change(start, s.bytes[0], s.len[0], &e), 0);
  sink_free(&s);
  for (int i = 0; i < 3; i++) tw_cleanup(&t[i]);
  tw_cleanup(&u);
  tw_cleanup(&r);
  instance_unref(in);
  instance_unref(twin);
  instance_unref(start);
}
END_TEST

START_TEST(refused_batch_changes_nothing) {
  fake_sink s = {0};
  change_sink cs;
  fix_spec sp = {.alg = "sgd", .lr = 1, .n = 2};
  instance *in = log_instance(&s, &sp, &cs);
  twaiter t;
  tw_init(&t);
  float g[2] = {1, 2};
  push p = fix_push(NULL, -1, g);
  p.key = "k:x";
  ck_assert_int_eq(tw_push(in, &t, p), PUSH_WAITING);
  finish_all(&s, E_DISK_FULL);
  ck_assert_int_eq(t.wakes, 1);
  ck_outcome_err(&t, E_DISK_FULL, "the disk is full");
  float now[2];
  ck_assert_uint_eq(fix_read(in, now), 0);
  ck_assert(now[0] == 0 && now[1] == 0);
  /* the key was forgotten: the retry is a new push, applied once it is durable */
  ck_assert_int_eq(tw_push(in, &t, p), PUSH_WAITING);
  finish_all(&s, 0);
  ck_assert_int_eq(t.w.code, 0);
  ck_assert_uint_eq(fix_read(in, now), 1);
  ck_assert(now[0] == -1 && now[1] == -2);
  sink_free(&s);
  tw_cleanup(&t);
  instance_unref(in);
}
END_TEST

/* A snapshot taken while a keyed push is queued (submitted, not durable)
 * must not carry its key: if the daemon dies before the entry is written,
 * the state restored from that snapshot lacks the push, and a retry of the
 * key must apply it, not replay an outcome that never happened (the lost
 * batch of test_log_faults: acknowledged, never applied). */
START_TEST(snapshot_of_queued_push_has_no_key) {
  fake_sink s = {0};
  change_sink cs;
  fix_spec sp = {.alg = "sgd", .lr = 1, .n = 2};
  instance *in = log_instance(&s, &sp, &cs);
  twaiter t, r;
  tw_init(&t);
  tw_init(&r);
  float g[2] = {1, 2};
  push p = fix_push(NULL, -1, g);
  p.key = "k:inflight";
  ck_assert_int_eq(tw_push(in, &t, p), PUSH_WAITING);
  instance_state st;
  ck_assert_int_eq(instance_export(in, &st), 0);
  ck_assert_uint_eq(st.nidem, 0);
  instance_state_free(&st);
  instance *restarted = copy_of(in); /* the kill came before the entry was written */
  ck_assert_int_eq(tw_push(restarted, &r, p), PUSH_DONE);
  ck_assert_int_eq(r.w.code, 0);
  ck_assert(!r.w.replayed);
  float now[2];
  ck_assert_uint_eq(fix_read(restarted, now), 1);
  ck_assert(now[0] == -1 && now[1] == -2);
  finish_all(&s, 0); /* durable: now the key is the snapshot's */
  ck_assert_int_eq(instance_export(in, &st), 0);
  ck_assert_uint_eq(st.nidem, 1);
  ck_assert_str_eq(st.idem[0].key, "k:inflight");
  instance_state_free(&st);
  sink_free(&s);
  tw_cleanup(&t);
  tw_cleanup(&r);
  instance_unref(in);
  instance_unref(restarted);
}
END_TEST

START_TEST(patch_holds_durable_changes) {
  fake_sink s = {0};
  change_sink cs;
  fix_spec sp = {.alg = "sgd", .lr = 1, .n = 1};
  instance *in = log_instance(&s, &sp, &cs);
  twaiter t;
  tw_init(&t);
  float g[1] = {2};
  ck_assert_int_eq(tw_push(in, &t, fix_push(NULL, -1, g)), PUSH_WAITING);
  instance_cfg c;
  instance_cfg_get(in, &c);
  c.hyper.lr = 0.5;
  unsigned added;
  derr e = {0};
  instance_change_lock(in);
  ck_assert_int_eq(instance_reconfigure_prepare(in, &c, &added, &e), 0);
  finish_all(&s, 0); /* durable while the PATCH writes its snapshot: held */
  ck_assert_int_eq(t.wakes, 0);
  float now[1];
  ck_assert_uint_eq(fix_read(in, now), 0);
  ck_assert_int_eq(instance_reconfigure(in, &c, &e), 0);
  instance_change_unlock(in);
  ck_assert_int_eq(t.wakes, 1);
  ck_assert_uint_eq(fix_read(in, now), 1);
  ck_assert(now[0] == -1); /* after the new lr, as replay on the PATCH's snapshot does */
  instance_cfg_free(&c);
  sink_free(&s);
  tw_cleanup(&t);
  instance_unref(in);
}
END_TEST

START_TEST(sync_round_is_one_entry) {
  fake_sink s = {0};
  change_sink cs;
  fix_spec sp = {.alg = "sgd", .lr = 1, .n = 2, .mode = MODE_SYNC, .workers = 2};
  instance *in = log_instance(&s, &sp, &cs);
  instance *start = copy_of(in);
  twaiter a, b;
  tw_init(&a);
  tw_init(&b);
  float ga[2] = {1, 3}, gb[2] = {3, 5};
  push pa = fix_push("a", 0, ga), pb = fix_push("b", 0, gb);
  pb.key = "s:b:1";
  ck_assert_int_eq(tw_push(in, &b, pb), PUSH_WAITING);
  ck_assert_int_eq(tw_push(in, &a, pa), PUSH_WAITING); /* closed the round: queued, not applied */
  ck_assert_uint_eq(s.n, 1);
  finish_all(&s, 0);
  ck_assert_int_eq(a.wakes, 1);
  ck_assert_int_eq(b.wakes, 1);
  ck_assert_ptr_nonnull(a.w.snap);
  ck_assert(a.w.snap->v[0] == -2 && a.w.snap->v[1] == -4); /* the mean */
  derr e = {0};
  ck_assert_int_eq(instance_apply_change(start, s.bytes[0], s.len[0], &e), 0);
  ck_same(start, in);
  sink_free(&s);
  tw_cleanup(&a);
  tw_cleanup(&b);
  instance_unref(in);
  instance_unref(start);
}
END_TEST

/* An instance "sp" with a dense "w" [2] and a sparse "E" [1000, 2]. */
static instance *sparse_instance(const char *alg, int mode, uint32_t workers, const change_sink *cs) {
  instance_state st;
  memset(&st, 0, sizeof st);
  instance_cfg *c = &st.cfg;
  derr e = {0};
  snprintf(c->name, sizeof c->name, "sp");
  ck_assert_int_eq(optim_alg_parse(alg, &c->alg, &c->hyper, &e), 0);
  c->hyper.lr = 0.5;
  c->mode = mode;
  c->max_staleness = -1;
  c->workers = workers;
  c->aggregate = AGG_MEAN;
  c->tensors = mem_xcalloc(2, sizeof(tensor));
  tensor *w = &c->tensors[0], *E = &c->tensors[1];
  snprintf(w->name, sizeof w->name, "w");
  w->ndim = 1;
  w->shape[0] = w->count = 2;
  snprintf(E->name, sizeof E->name, "E");
  E->ndim = 2;
  E->shape[0] = E->vrows = 1000;
  E->shape[1] = E->dim = 2;
  E->sparse = true;
  E->offset = 2;
  E->init = (tensor_init){.kind = TENSOR_INIT_NORMAL, .a = 0, .b = 1, .seed = 5};
  c->ntensors = 2;
  c->n = 2;
  st.params = mem_alloc_floats(2);
  st.params[0] = 0.5f;
  st.best_loss = INFINITY;
  st.next_id = 1;
  instance_env env = F.env;
  env.changes = cs;
  instance *in = instance_from_state(&st, &env);
  instance_state_free(&st);
  ck_assert_ptr_nonnull(in);
  return in;
}

/* Same steps, same dense parameters, same held rows and row buffers. */
static void ck_same_rows(instance *a, instance *b) {
  ck_same(a, b);
  instance_state x, y;
  ck_assert_int_eq(instance_export(a, &x), 0);
  ck_assert_int_eq(instance_export(b, &y), 0);
  size_t m = x.rows[0].m;
  ck_assert_uint_gt(m, 0);
  ck_assert_uint_eq(m, y.rows[0].m);
  ck_assert(memcmp(x.rows[0].ids, y.rows[0].ids, m * 8) == 0);
  ck_floats_bits(y.rows[0].params, x.rows[0].params, m * 2, "row params");
  for (int bf = 0; bf < OPTIM_NBUF; bf++)
    if (x.rows[0].buf[bf]) ck_floats_bits(y.rows[0].buf[bf], x.rows[0].buf[bf], m * 2, "row buffer");
  instance_state_free(&x);
  instance_state_free(&y);
}

START_TEST(sparse_entries_replay_bit_for_bit) {
  const char *algs[2] = {"sgd", "adagrad"};
  for (int a = 0; a < 2; a++) {
    fake_sink s = {0};
    change_sink cs = {fake_submit, &s};
    instance *in = sparse_instance(algs[a], MODE_ASYNC, 0, &cs);
    instance *start = copy_of(in);
    twaiter t[3];
    uint64_t ids[3][3] = {{5, 2, 5}, {999, 5, 0}, {2, 2, 2}};
    float vals[3][6], g[3][2];
    push_rows pr[3];
    for (int i = 0; i < 3; i++) {
      tw_init(&t[i]);
      for (int k = 0; k < 6; k++) vals[i][k] = (float)((k * 5 + i * 3) % 7) / 4.0f - 0.7f;
      g[i][0] = 0.25f * i, g[i][1] = -1;
      pr[i] = (push_rows){3, ids[i], vals[i]};
      push p = fix_push(NULL, -1, g[i]);
      p.rows = &pr[i];
      p.emit = true;
      ck_assert_int_eq(tw_push(in, &t[i], p), PUSH_WAITING);
    }
    finish_all(&s, 0);
    for (int i = 0; i < 3; i++) ck_assert_int_eq(t[i].w.code, 0);
    for (size_t i = 0; i < s.nbytes; i++) {
      derr e = {0};
      ck_assert_int_eq(instance_apply_change(start, s.bytes[i], s.len[i], &e), 0);
    }
    ck_same_rows(start, in);
    sink_free(&s);
    for (int i = 0; i < 3; i++) tw_cleanup(&t[i]);
    instance_unref(in);
    instance_unref(start);
  }
}
END_TEST

START_TEST(sparse_round_replays_bit_for_bit) {
  fake_sink s = {0};
  change_sink cs = {fake_submit, &s};
  instance *in = sparse_instance("adagrad", MODE_SYNC, 2, &cs);
  instance *start = copy_of(in);
  twaiter a, b;
  tw_init(&a);
  tw_init(&b);
  uint64_t ia[2] = {3, 7}, ib[3] = {7, 7, 1};
  float va[4] = {1, 2, 3, 4}, vb[6] = {-1, 0.5f, 2, 2, 0.25f, -3}, ga[2] = {1, 1}, gb[2] = {3, -1};
  push_rows pa = {2, ia, va}, pb = {3, ib, vb};
  push p = fix_push("b", 0, gb);
  p.rows = &pb;
  ck_assert_int_eq(tw_push(in, &b, p), PUSH_WAITING);
  p = fix_push("a", 0, ga);
  p.rows = &pa;
  ck_assert_int_eq(tw_push(in, &a, p), PUSH_WAITING);
  finish_all(&s, 0);
  ck_assert_int_eq(a.w.code, 0);
  ck_assert_int_eq(b.w.code, 0);
  ck_assert_ptr_nonnull(b.w.rows);
  ck_assert_uint_eq(b.w.rows->n, 6); /* b's rows, with their new values */
  derr e = {0};
  ck_assert_uint_eq(s.nbytes, 1);
  ck_assert_int_eq(instance_apply_change(start, s.bytes[0], s.len[0], &e), 0);
  ck_same_rows(start, in);
  psnap_unref(a.w.rows);
  psnap_unref(b.w.rows);
  sink_free(&s);
  tw_cleanup(&a);
  tw_cleanup(&b);
  instance_unref(in);
  instance_unref(start);
}
END_TEST

Suite *suite_journal(void) {
  Suite *s = suite_create("journal");
  TCase *tc = tcase_create("log mode");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, queued_push_applies_only_when_durable);
  tcase_add_test(tc, refused_batch_changes_nothing);
  tcase_add_test(tc, snapshot_of_queued_push_has_no_key);
  tcase_add_test(tc, patch_holds_durable_changes);
  tcase_add_test(tc, sync_round_is_one_entry);
  tcase_add_test(tc, sparse_entries_replay_bit_for_bit);
  tcase_add_test(tc, sparse_round_replays_bit_for_bit);
  suite_add_tcase(s, tc);
  return s;
}
