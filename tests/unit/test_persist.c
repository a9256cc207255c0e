/* test_persist: snapshot bytes and snapshot files.  Encode/decode round
 * trips bit for bit (every configuration field, odd float bit patterns,
 * buffers, random-search state); every truncation, every single-bit flip and
 * foreign files refused with their exact message; files written through a
 * temp data dir (.prev kept, older versions and deleted instances never
 * written), and persist_load_all setting damaged files aside as
 * NAME.snap.bad with the reason in the log.  Public API only. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "instance.h"
#include "log.h"
#include "mem.h"
#include "optim.h"
#include "persist.h"
#include "registry.h"
#include "statefix.h"
#include "suites.h"
#include "testutil.h"

static fix F;
static char dir[64];

#define SNAPSHOT_CHANGED(p, r) persist_snapshot_changed(p, r, NULL, NULL)

static void setup(void) { fix_init(&F); }
static void teardown(void) { fix_cleanup(&F); }
/* files: the info lines (temporary file removed, snapshot loaded) stay out
 * of the test output; the errors load_all logs are captured and checked */
static void setup_files(void) {
  fix_init(&F);
  log_set_level(LOG_WARN);
}
static void teardown_files(void) {
  log_set_level(LOG_INFO);
  fix_cleanup(&F);
}

/* ---- a state with everything in it -------------------------------------------- */

static void rich_state(instance_state *s, const char *name) {
  memset(s, 0, sizeof *s);
  instance_cfg *c = &s->cfg;
  derr e = {0};
  snprintf(c->name, sizeof c->name, "%s", name);
  ck_assert_int_eq(optim_alg_parse("adam", &c->alg, &c->hyper, &e), 0);
  c->hyper.lr = 0.0123456789;
  c->hyper.betas[0] = 0.8;
  c->hyper.betas[1] = 0.95;
  c->hyper.eps = 1e-7;
  c->hyper.weight_decay = 0.01;
  c->hyper.amsgrad = true;
  c->mode = MODE_SYNC;
  c->max_staleness = -1;
  c->workers = 3;
  c->min_workers = 2;
  c->round_timeout_ms = 500;
  c->aggregate = AGG_SUM;
  c->worker_lease_ms = 1234;
  c->clip_grad_norm = 2.5;
  c->sched = (schedule){.kind = SCHED_STEP, .step_size = 10, .gamma = 0.5, .start_factor = 1.0 / 3,
                        .end_factor = 1.0, .total_iters = 5};
  c->ntensors = 2;
  c->tensors = mem_xcalloc(2, sizeof(tensor));
  snprintf(c->tensors[0].name, sizeof c->tensors[0].name, "W");
  c->tensors[0].ndim = 2;
  c->tensors[0].shape[0] = 2;
  c->tensors[0].shape[1] = 3;
  c->tensors[0].count = 6;
  snprintf(c->tensors[1].name, sizeof c->tensors[1].name, "b");
  c->tensors[1].ndim = 1;
  c->tensors[1].shape[0] = 2;
  c->tensors[1].count = 2;
  c->tensors[1].offset = 6;
  c->tensors[1].origin = 5;
  c->n = 8;
  s->step = 7;
  s->version = 9;
  s->created = 1795568428.25;
  s->incarnation = 3;
  static const float odd[8] = {-0.0f, 1e-45f, FLT_MAX, -FLT_MAX, 1.0f / 3, 0x1.fffffep-1f, FLT_MIN, -2.5f};
  s->params = mem_alloc_floats(8);
  memcpy(s->params, odd, sizeof odd);
  const int bufs[3] = {OPTIM_BUF_EXP_AVG, OPTIM_BUF_EXP_AVG_SQ, OPTIM_BUF_MAX_EXP_AVG_SQ};
  for (int k = 0; k < 3; k++) {
    s->buf[bufs[k]] = mem_alloc_floats(8);
    for (int i = 0; i < 8; i++) s->buf[bufs[k]][i] = (float)(k + 1) * 0.1f + (float)i * 1e-3f;
    s->have |= 1u << bufs[k];
  }
  s->best_loss = INFINITY;
  s->next_id = 1;
}

static void ck_same_state(const instance_state *a, const instance_state *b) {
  const instance_cfg *x = &a->cfg, *y = &b->cfg;
  ck_assert_str_eq(x->name, y->name);
  ck_assert_int_eq(x->alg, y->alg);
  ck_assert(x->hyper.lr == y->hyper.lr);
  ck_assert(x->hyper.momentum == y->hyper.momentum);
  ck_assert(x->hyper.dampening == y->hyper.dampening);
  ck_assert(x->hyper.weight_decay == y->hyper.weight_decay);
  ck_assert(x->hyper.eps == y->hyper.eps);
  ck_assert(x->hyper.betas[0] == y->hyper.betas[0] && x->hyper.betas[1] == y->hyper.betas[1]);
  ck_assert(x->hyper.amsgrad == y->hyper.amsgrad && x->hyper.maximize == y->hyper.maximize);
  ck_assert(x->hyper.nesterov == y->hyper.nesterov);
  ck_assert(x->hyper.scale == y->hyper.scale);
  ck_assert_int_eq(x->hyper.center, y->hyper.center);
  ck_assert_uint_eq(x->hyper.seed, y->hyper.seed);
  ck_assert_int_eq(x->mode, y->mode);
  ck_assert_int_eq(x->max_staleness, y->max_staleness);
  ck_assert_uint_eq(x->workers, y->workers);
  ck_assert_uint_eq(x->min_workers, y->min_workers);
  ck_assert_uint_eq(x->round_timeout_ms, y->round_timeout_ms);
  ck_assert_int_eq(x->aggregate, y->aggregate);
  ck_assert_uint_eq(x->worker_lease_ms, y->worker_lease_ms);
  ck_assert(x->clip_grad_norm == y->clip_grad_norm);
  ck_assert_int_eq(x->sched.kind, y->sched.kind);
  ck_assert(x->sched.step_size == y->sched.step_size && x->sched.gamma == y->sched.gamma);
  ck_assert(x->sched.t_max == y->sched.t_max && x->sched.eta_min == y->sched.eta_min);
  ck_assert(x->sched.start_factor == y->sched.start_factor && x->sched.end_factor == y->sched.end_factor);
  ck_assert(x->sched.total_iters == y->sched.total_iters);
  ck_assert_uint_eq(x->ntensors, y->ntensors);
  for (size_t t = 0; t < x->ntensors; t++) {
    const tensor *p = &x->tensors[t], *q = &y->tensors[t];
    ck_assert_str_eq(p->name, q->name);
    ck_assert_int_eq(p->ndim, q->ndim);
    for (int k = 0; k < p->ndim; k++) ck_assert_uint_eq(p->shape[k], q->shape[k]);
    ck_assert_uint_eq(p->count, q->count);
    ck_assert_uint_eq(p->offset, q->offset);
    ck_assert_uint_eq(p->origin, q->origin);
  }
  ck_assert_uint_eq(x->n, y->n);
  ck_assert_uint_eq(a->step, b->step);
  ck_assert_uint_eq(a->version, b->version);
  ck_assert(a->created == b->created);
  ck_assert_uint_eq(a->have, b->have);
  ck_assert_uint_eq(a->fresh, b->fresh);
  ck_assert_int_eq(memcmp(a->params, b->params, x->n * sizeof(float)), 0);
  for (int k = 0; k < OPTIM_NBUF; k++)
    if ((a->have & (1u << k)) && !(a->fresh & (1u << k)))
      ck_assert_int_eq(memcmp(a->buf[k], b->buf[k], x->n * sizeof(float)), 0);
  if (x->alg != OPTIM_RANDOM_SEARCH) return; /* the rest means nothing for the others */
  ck_assert(a->best_loss == b->best_loss);
  ck_assert_uint_eq(a->next_id, b->next_id);
  ck_assert_uint_eq(a->tells, b->tells);
  ck_assert_uint_eq(a->best_id, b->best_id);
}

/* ---- round trips ------------------------------------------------------------- */

START_TEST(round_trip_bit_for_bit) {
  instance_state s, d;
  rich_state(&s, "snap-1.a");
  unsigned char *bytes, *again;
  size_t len, len2;
  ck_assert_int_eq(persist_encode(&s, &bytes, &len), 0);
  ck_assert_int_eq(memcmp(bytes, "DESCENTS\1\0\0\0", 12), 0);
  derr e = {0};
  ck_assert_int_eq(persist_decode(bytes, len, &d, &e), 0);
  d.incarnation = s.incarnation; /* not part of the file */
  ck_same_state(&s, &d);
  ck_assert_int_eq(persist_encode(&d, &again, &len2), 0);
  ck_assert_uint_eq(len2, len);
  ck_assert_int_eq(memcmp(again, bytes, len), 0);
  free(bytes), free(again);
  instance_state_free(&s), instance_state_free(&d);
}
END_TEST

START_TEST(fresh_buffers_are_not_written) {
  instance_state s, d;
  fix_state(&s, &(fix_spec){.name = "m", .n = 3, .momentum = 0.9, .step = 0});
  s.have = s.fresh = 1u << OPTIM_BUF_MOMENTUM; /* allocated, no history yet */
  s.buf[OPTIM_BUF_MOMENTUM] = mem_alloc_floats(3);
  unsigned char *bytes;
  size_t len;
  ck_assert_int_eq(persist_encode(&s, &bytes, &len), 0);
  derr e = {0};
  ck_assert_int_eq(persist_decode(bytes, len, &d, &e), 0);
  ck_assert_uint_eq(d.have, 0);
  ck_assert_uint_eq(d.fresh, 1u << OPTIM_BUF_MOMENTUM);
  ck_assert_ptr_null(d.buf[OPTIM_BUF_MOMENTUM]);
  /* and the file is parameters only: 16 + header + 3 floats + CRC */
  uint32_t hl = (uint32_t)bytes[12] | (uint32_t)bytes[13] << 8 | (uint32_t)bytes[14] << 16 | (uint32_t)bytes[15] << 24;
  ck_assert_uint_eq(len, 16 + hl + 3 * 4 + 4);
  free(bytes);
  instance_state_free(&s), instance_state_free(&d);
}
END_TEST

START_TEST(random_search_state_round_trips) {
  instance_state s, d;
  fix_state(&s, &(fix_spec){.name = "rs", .alg = "random_search", .n = 2, .step = 16});
  s.best_loss = 0.125;
  s.next_id = 17;
  s.tells = 16;
  s.best_id = 9;
  s.params[0] = 1.5f, s.params[1] = -3;
  unsigned char *bytes;
  size_t len;
  ck_assert_int_eq(persist_encode(&s, &bytes, &len), 0);
  derr e = {0};
  ck_assert_int_eq(persist_decode(bytes, len, &d, &e), 0);
  ck_same_state(&s, &d);
  free(bytes);
  instance_state_free(&s), instance_state_free(&d);
}
END_TEST

/* ---- damaged and foreign bytes --------------------------------------------------- */

static void ck_refused(const unsigned char *b, size_t len, const char *msg) {
  instance_state d;
  derr e = {0};
  int rc = persist_decode(b, len, &d, &e);
  CHECK(rc == -E_BAD_REQUEST, "len %zu: rc %d, want %d (%s)", len, rc, -E_BAD_REQUEST, e.msg);
  CHECK(strcmp(e.msg, msg) == 0, "len %zu: message '%s', want '%s'", len, e.msg, msg);
  CHECK(d.params == NULL && d.cfg.tensors == NULL, "len %zu: outputs not empty", len);
}

START_TEST(every_truncation_refused) {
  instance_state s;
  rich_state(&s, "cut");
  unsigned char *bytes;
  size_t len;
  ck_assert_int_eq(persist_encode(&s, &bytes, &len), 0);
  for (size_t l = 0; l < len; l++)
    ck_refused(bytes, l, l < 20 ? "not a descent snapshot (bad magic)" : "checksum mismatch (damaged or cut short)");
  free(bytes);
  instance_state_free(&s);
}
END_TEST

START_TEST(every_bit_flip_refused) {
  instance_state s;
  rich_state(&s, "flip");
  unsigned char *bytes;
  size_t len;
  ck_assert_int_eq(persist_encode(&s, &bytes, &len), 0);
  char msg[64];
  for (size_t i = 0; i < len; i++)
    for (int bit = 0; bit < 8; bit++) {
      bytes[i] ^= (unsigned char)(1u << bit);
      if (i < 8) snprintf(msg, sizeof msg, "not a descent snapshot (bad magic)");
      else if (i < 12) snprintf(msg, sizeof msg, "unsupported snapshot version %u", 1u ^ (1u << (8 * (i - 8) + (unsigned)bit)));
      else snprintf(msg, sizeof msg, "checksum mismatch (damaged or cut short)");
      ck_refused(bytes, len, msg);
      bytes[i] ^= (unsigned char)(1u << bit);
    }
  instance_state d;
  derr e = {0};
  ck_assert_int_eq(persist_decode(bytes, len, &d, &e), 0); /* restored: good again */
  instance_state_free(&d);
  free(bytes);
  instance_state_free(&s);
}
END_TEST

/* A file with a correct CRC: magic, version, header length hl (as given),
 * header text, `nfloats` floats of 1.0. */
static unsigned char *forge(uint32_t version, uint32_t hl, const char *header, size_t nfloats, size_t *len) {
  size_t h = strlen(header);
  *len = 16 + h + nfloats * 4 + 4;
  unsigned char *b = mem_xcalloc(1, *len);
  memcpy(b, "DESCENTS", 8);
  for (int k = 0; k < 4; k++) b[8 + k] = (unsigned char)(version >> (8 * k));
  for (int k = 0; k < 4; k++) b[12 + k] = (unsigned char)(hl >> (8 * k));
  memcpy(b + 16, header, h);
  float one = 1.0f;
  for (size_t i = 0; i < nfloats; i++) memcpy(b + 16 + h + 4 * i, &one, 4);
  uint32_t crc = (uint32_t)crc32(crc32(0, NULL, 0), b, (uInt)(*len - 4));
  for (int k = 0; k < 4; k++) b[*len - 4 + k] = (unsigned char)(crc >> (8 * k));
  return b;
}

#define GOOD_HEADER(extra)                                                                      \
  "{\"name\":\"f\",\"algorithm\":\"sgd\",\"hyper\":{\"lr\":0.5},\"mode\":\"async\",\"tensors\":[" \
  "{\"name\":\"w\",\"shape\":[2]}],\"step\":3" extra "}"

START_TEST(forged_files_refused_for_their_reason) {
  size_t len;
  unsigned char *b;
  struct {
    uint32_t version;
    long hl; /* -1: the header's length */
    const char *header;
    size_t nfloats;
    const char *msg;
  } cases[] = {
      {3, -1, GOOD_HEADER(""), 2, "unsupported snapshot version 3"},
      {2, -1, GOOD_HEADER(""), 2, "header: sparse tensors (and only they) need a version 2 file with \"rows\""},
      {0, -1, GOOD_HEADER(""), 2, "unsupported snapshot version 0"},
      {1, 0x7fffffff, GOOD_HEADER(""), 2, "header length out of range"},
      {1, -1, "not json", 2, "header: '[' or '{' expected near 'not'"},
      {1, -1, "{\"name\":\"f\"}", 2, "algorithm: required (sgd, momentum, nesterov, adagrad, rmsprop, adam, adamw, random_search, sparse_adam)"},
      {1, -1, "{\"name\":\"f\",\"algorithm\":\"sgd\",\"tensors\":[{\"name\":\"w\",\"shape\":[2]}]}", 2, "header: step missing"},
      {1, -1, GOOD_HEADER(",\"buffers\":[\"nope\"]"), 4, "header: bad buffer list"},
      {1, -1, GOOD_HEADER(",\"buffers\":[\"momentum_buffer\",\"momentum_buffer\"]"), 6, "header: bad buffer list"},
      {1, -1, GOOD_HEADER(""), 1, "size mismatch: the arrays do not match the header"},
      {1, -1, GOOD_HEADER(""), 3, "size mismatch: the arrays do not match the header"},
      {1, -1, GOOD_HEADER(",\"buffers\":[\"momentum_buffer\"]"), 2, "size mismatch: the arrays do not match the header"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    uint32_t hl = cases[i].hl < 0 ? (uint32_t)strlen(cases[i].header) : (uint32_t)cases[i].hl;
    b = forge(cases[i].version, hl, cases[i].header, cases[i].nfloats, &len);
    instance_state d;
    derr e = {0};
    ck_assert_msg(persist_decode(b, len, &d, &e) < 0, "case %zu decoded", i);
    ck_assert_msg(strcmp(e.msg, cases[i].msg) == 0, "case %zu: '%s', want '%s'", i, e.msg, cases[i].msg);
    ck_assert_ptr_null(d.params);
    free(b);
  }
  /* and the forge itself makes good files */
  b = forge(1, (uint32_t)strlen(GOOD_HEADER("")), GOOD_HEADER(""), 2, &len);
  instance_state d;
  derr e = {0};
  ck_assert_int_eq(persist_decode(b, len, &d, &e), 0);
  ck_assert_str_eq(d.cfg.name, "f");
  ck_assert_uint_eq(d.step, 3);
  ck_assert(d.params[0] == 1.0f && d.params[1] == 1.0f);
  instance_state_free(&d);
  free(b);
}
END_TEST

START_TEST(foreign_bytes_refused) {
  static const char png[] = "\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0";
  static const char text[] = "this is a text file that someone named x.snap\n";
  ck_refused((const unsigned char *)png, sizeof png - 1, "not a descent snapshot (bad magic)");
  ck_refused((const unsigned char *)text, sizeof text - 1, "not a descent snapshot (bad magic)");
  ck_refused((const unsigned char *)"", 0, "not a descent snapshot (bad magic)");
  ck_refused((const unsigned char *)"DESCENTS", 8, "not a descent snapshot (bad magic)");
}
END_TEST

/* ---- files --------------------------------------------------------------------- */

static void mkdir_tmp(void) {
  snprintf(dir, sizeof dir, "/tmp/descent-unit-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void rm_tmp(void) {
  DIR *d = opendir(dir);
  ck_assert_ptr_nonnull(d);
  struct dirent *de;
  char path[512];
  while ((de = readdir(d)))
    if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
      snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
      unlink(path);
    }
  closedir(d);
  ck_assert_int_eq(rmdir(dir), 0);
}

static void write_file(const char *name, const void *b, size_t len) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  ck_assert_ptr_nonnull(f);
  ck_assert_uint_eq(fwrite(b, 1, len, f), len);
  ck_assert_int_eq(fclose(f), 0);
}

/* The file's bytes (caller frees), or NULL if absent. */
static unsigned char *read_file(const char *name, size_t *len) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *b = mem_xmalloc(n ? (size_t)n : 1);
  *len = fread(b, 1, (size_t)n, f);
  fclose(f);
  return b;
}

static bool exists(const char *name) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  return access(path, F_OK) == 0;
}

static int by_name(const void *a, const void *b) { return strcmp(a, b); }

/* The directory's names, sorted, joined by spaces. */
static void listing(char *out, size_t cap) {
  char names[32][256];
  int n = 0;
  DIR *d = opendir(dir);
  struct dirent *de;
  while ((de = readdir(d)) && n < 32)
    if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
      snprintf(names[n++], sizeof names[0], "%s", de->d_name);
  closedir(d);
  qsort(names, (size_t)n, sizeof names[0], by_name);
  out[0] = 0;
  for (int i = 0; i < n; i++) {
    if (i) strncat(out, " ", cap - strlen(out) - 1);
    strncat(out, names[i], cap - strlen(out) - 1);
  }
}

/* The step of the snapshot file `name` (decoded), or aborts. */
static uint64_t file_step(const char *name) {
  size_t len;
  unsigned char *b = read_file(name, &len);
  ck_assert_msg(b != NULL, "%s missing", name);
  instance_state s;
  derr e = {0};
  ck_assert_msg(persist_decode(b, len, &s, &e) == 0, "%s: %s", name, e.msg);
  uint64_t step = s.step;
  instance_state_free(&s);
  free(b);
  return step;
}

START_TEST(saves_keep_prev_and_never_go_back) {
  mkdir_tmp();
  derr e = {0};
  persist *p = persist_open(dir, &e);
  ck_assert_ptr_nonnull(p);
  instance_state s;
  fix_state(&s, &(fix_spec){.name = "m", .n = 2, .step = 1});
  s.incarnation = 5;
  s.version = 1;
  ck_assert_int_eq(persist_save_state(p, &s, &e), 0);
  ck_assert_uint_eq(file_step("m.snap"), 1);
  ck_assert(!exists("m.snap.prev"));
  s.step = 2, s.version = 2;
  ck_assert_int_eq(persist_save_state(p, &s, &e), 0);
  ck_assert_uint_eq(file_step("m.snap"), 2);
  ck_assert_uint_eq(file_step("m.snap.prev"), 1);
  persist_stats st;
  persist_get_stats(p, &st);
  ck_assert_uint_eq(st.written, 2);
  ck_assert_uint_eq(st.failed, 0);
  ck_assert(st.last_time > 0);
  /* an older version of the same incarnation: skipped, and no error */
  s.step = 9, s.version = 1;
  ck_assert_int_eq(persist_save_state(p, &s, &e), 0);
  s.version = 2; /* the same version again: skipped too */
  ck_assert_int_eq(persist_save_state(p, &s, &e), 0);
  /* an older incarnation (a save that lost the race to a replacing PUT) */
  s.incarnation = 4, s.version = 100;
  ck_assert_int_eq(persist_save_state(p, &s, &e), 0);
  ck_assert_uint_eq(file_step("m.snap"), 2);
  persist_get_stats(p, &st);
  ck_assert_uint_eq(st.written, 2);
  /* a newer incarnation with a lower version is written (a re-created name) */
  s.incarnation = 6, s.version = 1, s.step = 3;
  ck_assert_int_eq(persist_save_state(p, &s, &e), 0);
  ck_assert_uint_eq(file_step("m.snap"), 3);
  /* deleted: both files go, and a late save of that incarnation stays out */
  ck_assert_int_eq(persist_remove(p, "m", &e), 0);
  ck_assert(!exists("m.snap") && !exists("m.snap.prev"));
  s.version = 7;
  ck_assert_int_eq(persist_save_state(p, &s, &e), 0);
  ck_assert(!exists("m.snap"));
  ck_assert_int_eq(persist_remove(p, "never-saved", &e), 0);
  instance_state_free(&s);
  char ls[512];
  listing(ls, sizeof ls);
  ck_assert_str_eq(ls, "");
  persist_close(p);
  rm_tmp();
}
END_TEST

START_TEST(one_daemon_per_data_dir) {
  mkdir_tmp();
  derr e = {0};
  persist *p = persist_open(dir, &e);
  ck_assert_ptr_nonnull(p);
  ck_assert_ptr_null(persist_open(dir, &e));
  ck_assert_int_eq(e.code, E_IO);
  char want[160];
  snprintf(want, sizeof want, "the data dir %s is in use by another descentd (%s)", dir, strerror(EWOULDBLOCK));
  ck_assert_str_eq(e.msg, want);
  persist_close(p);
  p = persist_open(dir, &e); /* released by close */
  ck_assert_ptr_nonnull(p);
  persist_close(p);
  rm_tmp();
}
END_TEST

/* stderr into a file for the duration (load_all says why in the log). */
static int saved_stderr = -1;
static char logpath[128];
static void capture_log(void) {
  snprintf(logpath, sizeof logpath, "%s.log", dir);
  int fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ck_assert_int_ge(fd, 0);
  fflush(stderr);
  saved_stderr = dup(2);
  dup2(fd, 2);
  close(fd);
}
static char *release_log(void) {
  fflush(stderr);
  dup2(saved_stderr, 2);
  close(saved_stderr);
  FILE *f = fopen(logpath, "rb");
  ck_assert_ptr_nonnull(f);
  static char text[16384];
  size_t n = fread(text, 1, sizeof text - 1, f);
  text[n] = 0;
  fclose(f);
  unlink(logpath);
  return text;
}

static void ck_log_has(const char *log, const char *fmt, const char *arg) {
  char want[512];
  snprintf(want, sizeof want, fmt, dir, arg);
  ck_assert_msg(strstr(log, want) != NULL, "the log lacks: %s\n--- log:\n%s", want, log);
}

START_TEST(load_all_sets_damaged_files_aside) {
  mkdir_tmp();
  instance_state good, s;
  rich_state(&good, "good");
  unsigned char *b;
  size_t len;
  write_file("x.snap.tmp", "partial", 7); /* a crash mid-write */
  derr e = {0};
  persist *p = persist_open(dir, &e);
  ck_assert_ptr_nonnull(p);
  ck_assert(!exists("x.snap.tmp"));
  ck_assert_int_eq(persist_save_state(p, &good, &e), 0);
  persist_close(p);

  rich_state(&s, "cut");
  persist_encode(&s, &b, &len);
  write_file("cut.snap", b, len - 10);
  free(b);
  instance_state_free(&s);
  rich_state(&s, "flip");
  persist_encode(&s, &b, &len);
  b[len - 20] ^= 0x10; /* in the arrays */
  write_file("flip.snap", b, len);
  free(b);
  instance_state_free(&s);
  rich_state(&s, "someone");
  persist_encode(&s, &b, &len);
  write_file("other.snap", b, len); /* a good file under another name */
  free(b);
  instance_state_free(&s);
  write_file("junk.snap", "hello", 5);
  write_file("notes.txt", "not ours", 8);
  write_file(".hidden.snap", "not a name", 10); /* no instance could be called that: left alone */

  p = persist_open(dir, &e);
  ck_assert_ptr_nonnull(p);
  registry *r = registry_new(10, 1000);
  capture_log();
  int loaded = persist_load_all(p, r, &F.env);
  char *log = release_log();
  ck_assert_int_eq(loaded, 1);
  ck_assert_uint_eq(registry_count(r), 1);
  char ls[512];
  listing(ls, sizeof ls);
  ck_assert_str_eq(ls, ".hidden.snap cut.snap.bad flip.snap.bad good.snap junk.snap.bad notes.txt other.snap.bad");
  ck_log_has(log, "file=%s/%s reason=\"checksum mismatch (damaged or cut short)\" kept_as=cut.snap.bad", "cut.snap");
  ck_log_has(log, "file=%s/%s reason=\"checksum mismatch (damaged or cut short)\" kept_as=flip.snap.bad", "flip.snap");
  ck_log_has(log, "file=%s/%s reason=\"not a descent snapshot (bad magic)\" kept_as=junk.snap.bad", "junk.snap");
  ck_log_has(log, "file=%s/%s reason=\"the file holds instance 'someone'\" kept_as=other.snap.bad", "other.snap");
  b = read_file("junk.snap.bad", &len); /* set aside as it was */
  ck_assert_uint_eq(len, 5);
  ck_assert_int_eq(memcmp(b, "hello", 5), 0);
  free(b);

  /* the loaded instance is the saved state, bit for bit */
  instance *in = registry_get(r, "good");
  ck_assert_ptr_nonnull(in);
  instance_state got;
  ck_assert_int_eq(instance_export(in, &got), 0);
  got.incarnation = good.incarnation;
  got.created = good.created;
  ck_same_state(&good, &got);
  instance_state_free(&got);
  /* unchanged since it was loaded: nothing to snapshot; after a change, one */
  ck_assert_int_eq(SNAPSHOT_CHANGED(p, r), 0);
  instance_unref(in);
  registry_free(r);

  /* a second start loads the good one again and leaves the .bad files be */
  persist_close(p);
  p = persist_open(dir, &e);
  r = registry_new(10, 1000);
  capture_log();
  loaded = persist_load_all(p, r, &F.env);
  release_log();
  ck_assert_int_eq(loaded, 1);
  listing(ls, sizeof ls);
  ck_assert_str_eq(ls, ".hidden.snap cut.snap.bad flip.snap.bad good.snap junk.snap.bad notes.txt other.snap.bad");
  registry_free(r);
  persist_close(p);
  instance_state_free(&good);
  rm_tmp();
}
END_TEST

START_TEST(load_all_over_the_quota_keeps_the_good_file) {
  mkdir_tmp();
  instance_state good;
  rich_state(&good, "good"); /* 8 floats: params, 3 adam buffers, the sync scratch: 40 */
  derr e = {0};
  persist *p = persist_open(dir, &e);
  ck_assert_ptr_nonnull(p);
  ck_assert_int_eq(persist_save_state(p, &good, &e), 0);
  registry *r = registry_new(10, 39);
  capture_log();
  int loaded = persist_load_all(p, r, &F.env);
  char *log = release_log();
  ck_assert_int_eq(loaded, 0);
  ck_assert_uint_eq(registry_count(r), 0);
  ck_assert_uint_eq(registry_floats(r), 0);
  char ls[512];
  listing(ls, sizeof ls);
  ck_assert_str_eq(ls, "good.snap"); /* a limit is no damage: not set aside */
  ck_assert_msg(strstr(log, "msg=\"snapshot not loaded\" file=good.snap reason=\"" FIX_QUOTA_NEEDS " 40 floats "
                            "(parameters and state) but only 39 of the 39 allowed are free (--max-params)\"") != NULL,
                "log: %s", log);
  registry_free(r);
  r = registry_new(10, 40); /* with room, the same file loads */
  capture_log();
  ck_assert_int_eq(persist_load_all(p, r, &F.env), 1);
  release_log();
  ck_assert_uint_eq(registry_floats(r), 40);
  registry_free(r);
  persist_close(p);
  instance_state_free(&good);
  rm_tmp();
}
END_TEST

START_TEST(snapshot_changed_writes_only_changed_instances) {
  mkdir_tmp();
  derr e = {0};
  persist *p = persist_open(dir, &e);
  registry *r = registry_new(10, 1000);
  instance *a = fix_instance(&F, &(fix_spec){.name = "a", .n = 2});
  instance *b = fix_instance(&F, &(fix_spec){.name = "b", .n = 2});
  ck_assert_int_eq(registry_add(r, a, &e), 0);
  ck_assert_int_eq(registry_add(r, b, &e), 0);
  ck_assert_int_eq(SNAPSHOT_CHANGED(p, r), 2); /* never written */
  ck_assert_int_eq(SNAPSHOT_CHANGED(p, r), 0);
  float g[2] = {1, 2};
  twaiter t;
  tw_init(&t);
  ck_assert_int_eq(tw_push(b, &t, fix_push(NULL, -1, g)), PUSH_DONE);
  tw_cleanup(&t);
  ck_assert_int_eq(SNAPSHOT_CHANGED(p, r), 1);
  ck_assert_uint_eq(file_step("a.snap"), 0);
  ck_assert_uint_eq(file_step("b.snap"), 1);
  ck_assert_uint_eq(file_step("b.snap.prev"), 0);
  size_t len;
  unsigned char *bytes = read_file("b.snap", &len);
  instance_state s;
  ck_assert_int_eq(persist_decode(bytes, len, &s, &e), 0);
  const float want[2] = {-1, -2};
  ck_floats_bits(s.params, want, 2, "b.snap params");
  instance_state_free(&s);
  free(bytes);
  instance_unref(a), instance_unref(b);
  registry_free(r);
  persist_close(p);
  rm_tmp();
}
END_TEST

Suite *suite_persist(void) {
  Suite *s = suite_create("persist");
  TCase *tc = tcase_create("bytes");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, round_trip_bit_for_bit);
  tcase_add_test(tc, fresh_buffers_are_not_written);
  tcase_add_test(tc, random_search_state_round_trips);
  tcase_add_test(tc, every_truncation_refused);
  tcase_add_test(tc, every_bit_flip_refused);
  tcase_add_test(tc, forged_files_refused_for_their_reason);
  tcase_add_test(tc, foreign_bytes_refused);
  suite_add_tcase(s, tc);
  tc = tcase_create("files");
  tcase_add_checked_fixture(tc, setup_files, teardown_files);
  tcase_add_test(tc, saves_keep_prev_and_never_go_back);
  tcase_add_test(tc, one_daemon_per_data_dir);
  tcase_add_test(tc, load_all_sets_damaged_files_aside);
  tcase_add_test(tc, load_all_over_the_quota_keeps_the_good_file);
  tcase_add_test(tc, snapshot_changed_writes_only_changed_instances);
  suite_add_tcase(s, tc);
  return s;
}
