/* test_codec_push: sparse tensors in the codecs.  Create bodies with
 * sparse tensors ([V, D] up to 2^62, offset, seeded and explicit inits,
 * torch's refusals as 422), JSON pushes with rows (ids above 2^24 exact),
 * and binary pushes: used in place when they can be, gathered when dense
 * parts are split, ids copied when unaligned, half precision widened, and
 * every malformed body refused with its code and nothing left behind; the
 * binary reply mirrors the push.  No locks, no I/O. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_half.h"
#include "codec_json.h"
#include "codec_push.h"
#include "instance.h"
#include "mem.h"
#include "spec.h"
#include "suites.h"

static int create(const char *text, instance_cfg *c, float **params, spec_rows **rows, derr *e) {
  jdoc d;
  ck_assert_int_eq(jdoc_parse(&d, NULL, text, strlen(text), e), 0);
  int rc = spec_parse_create_rows(&d, UINT64_MAX, c, params, rows, e);
  jdoc_free(&d);
  return rc;
}

START_TEST(create_sparse) {
  instance_cfg c;
  float *p;
  spec_rows *rows;
  derr e = {0};
  const char *body = "{\"name\":\"m\",\"algorithm\":\"adagrad\",\"tensors\":["
                     "{\"name\":\"emb\",\"shape\":[4611686018427387904,8],\"sparse\":true,\"offset\":5,"
                     "\"init\":{\"normal\":{\"std\":0.1,\"seed\":7}}},{\"name\":\"W\",\"shape\":[3]}]}";
  ck_assert_msg(create(body, &c, &p, &rows, &e) == 0, "%s", e.msg);
  ck_assert(c.tensors[0].sparse && c.tensors[0].vrows == (1ull << 62) && c.tensors[0].dim == 8);
  ck_assert_int_eq(c.tensors[0].count, 0);
  ck_assert_int_eq(c.tensors[0].origin, 5);
  ck_assert_int_eq(c.tensors[0].init.kind, TENSOR_INIT_NORMAL);
  ck_assert(c.tensors[0].init.b == 0.1 && c.tensors[0].init.seed == 7);
  ck_assert_int_eq(c.n, 3);
  ck_assert_int_eq(c.tensors[1].offset, 0);
  ck_assert_ptr_null(rows);
  /* the description names the init, and reads back */
  json_t *j = spec_cfg_json(&c);
  json_t *t0 = json_array_get(json_object_get(j, "tensors"), 0);
  ck_assert(json_is_true(json_object_get(t0, "sparse")));
  ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(json_object_get(t0, "init"), "normal"), "seed")), 7);
  jbuf jb;
  jbuf_init(&jb, NULL, 256);
  jbuf_json_splice(&jb, j, NULL, 0);
  json_t *again = json_loadb(jb.p, jb.len, 0, NULL);
  jbuf_release(&jb);
  instance_cfg back;
  ck_assert_msg(spec_parse_cfg_json(again, &back, &e) == 0, "%s", e.msg);
  json_decref(again);
  ck_assert(back.tensors[0].sparse && back.tensors[0].vrows == (1ull << 62) && back.tensors[0].origin == 5);
  ck_assert(back.tensors[0].init.kind == TENSOR_INIT_NORMAL && back.tensors[0].init.b == 0.1);
  instance_cfg_free(&back);
  json_decref(j);
  mem_free_floats(p, c.n);
  instance_cfg_free(&c);
}
END_TEST

START_TEST(create_explicit_rows) {
  instance_cfg c;
  float *p;
  spec_rows *rows;
  derr e = {0};
  const char *body = "{\"name\":\"m\",\"algorithm\":\"sgd\",\"tensors\":[{\"name\":\"emb\",\"shape\":[100,2],"
                     "\"sparse\":true,\"init\":{\"rows\":[9,3],\"values\":[[1,2],[3,4]]}}]}";
  ck_assert_msg(create(body, &c, &p, &rows, &e) == 0, "%s", e.msg);
  ck_assert_ptr_nonnull(rows);
  ck_assert_int_eq(rows[0].k, 2);
  ck_assert(rows[0].rows[0] == 9 && rows[0].rows[1] == 3 && rows[0].vals[3] == 4.0f);
  spec_rows_free(rows, c.ntensors);
  mem_free_floats(p, c.n);
  instance_cfg_free(&c);
}
END_TEST

/* Refused create bodies: code and a word of the message. */
static const struct {
  const char *body;
  int code;
  const char *says;
} bad_creates[] = {
    {"{\"name\":\"m\",\"algorithm\":\"adam\",\"tensors\":[{\"name\":\"e\",\"shape\":[10,2],\"sparse\":true}]}",
     E_BAD_VALUE, "sparse"},
    {"{\"name\":\"m\",\"algorithm\":\"sparse_adam\",\"tensors\":[{\"name\":\"e\",\"shape\":[10,2],\"sparse\":true},"
     "{\"name\":\"W\",\"shape\":[2]}]}", E_BAD_VALUE, "dense"},
    {"{\"name\":\"m\",\"algorithm\":\"sgd\",\"tensors\":[{\"name\":\"e\",\"shape\":[10],\"sparse\":true}]}",
     E_BAD_REQUEST, "[V, D]"},
    {"{\"name\":\"m\",\"algorithm\":\"sgd\",\"tensors\":[{\"name\":\"e\",\"shape\":[4611686018427387905,2],"
     "\"sparse\":true}]}", E_BAD_VALUE, "2^62"},
    {"{\"name\":\"m\",\"algorithm\":\"sgd\",\"tensors\":[{\"name\":\"e\",\"shape\":[10,2],\"sparse\":true,"
     "\"init\":{\"rows\":[3,3],\"values\":[[1,2],[3,4]]}}]}", E_BAD_VALUE, "twice"},
    {"{\"name\":\"m\",\"algorithm\":\"sgd\",\"tensors\":[{\"name\":\"e\",\"shape\":[10,2],\"sparse\":true,"
     "\"init\":{\"rows\":[10],\"values\":[[1,2]]}}]}", E_BAD_VALUE, "out of range"},
    {"{\"name\":\"m\",\"algorithm\":\"sgd\",\"tensors\":[{\"name\":\"e\",\"shape\":[10,2],\"sparse\":true,"
     "\"init\":{\"rows\":[1],\"values\":[[1,2,3]]}}]}", E_BAD_LENGTH, "expected 2"},
    {"{\"name\":\"m\",\"algorithm\":\"sgd\",\"tensors\":[{\"name\":\"e\",\"shape\":[10,2],\"sparse\":true,"
     "\"values\":[1,2]}]}", E_BAD_REQUEST, "values"},
};

START_TEST(create_refused) {
  instance_cfg c;
  float *p = (float *)1;
  spec_rows *rows = (spec_rows *)1;
  derr e = {0};
  int rc = create(bad_creates[_i].body, &c, &p, &rows, &e);
  ck_assert_msg(rc == -bad_creates[_i].code, "case %d: %d %s", _i, rc, e.msg);
  ck_assert_msg(strstr(e.msg, bad_creates[_i].says), "case %d: %s", _i, e.msg);
  ck_assert_ptr_null(p);
  ck_assert_ptr_null(rows);
}
END_TEST

/* An instance layout: W[3] dense, emb [2^40, 2] sparse, b[1] dense (split). */
static tensor T3[3];
static instance_layout layout3(bool split) {
  memset(T3, 0, sizeof T3);
  snprintf(T3[0].name, sizeof T3[0].name, "W");
  T3[0].ndim = 1, T3[0].shape[0] = 3, T3[0].count = 3, T3[0].offset = 0;
  snprintf(T3[1].name, sizeof T3[1].name, "emb");
  T3[1].ndim = 2, T3[1].shape[0] = 1ull << 40, T3[1].shape[1] = 2, T3[1].sparse = true, T3[1].vrows = 1ull << 40,
  T3[1].dim = 2, T3[1].offset = 3;
  snprintf(T3[2].name, sizeof T3[2].name, "b");
  T3[2].ndim = 1, T3[2].shape[0] = 1, T3[2].count = 1, T3[2].offset = 3;
  return (instance_layout){.name = "m", .n = split ? 4 : 3, .ntensors = split ? 3 : 2, .tensors = T3};
}

START_TEST(json_rows) {
  instance_layout l = layout3(true);
  char body[4096];
  size_t o = (size_t)snprintf(body, sizeof body, "{\"grads\":{\"W\":[1,2,3],\"b\":[4],\"emb\":{\"rows\":[");
  for (int i = 0; i < 20; i++) o += (size_t)snprintf(body + o, sizeof body - o, "%s%llu", i ? "," : "", (1ull << 39) + 2ull * i + 1);
  o += (size_t)snprintf(body + o, sizeof body - o, "],\"values\":[");
  for (int i = 0; i < 20; i++) o += (size_t)snprintf(body + o, sizeof body - o, "%s[%d,%d.5]", i ? "," : "", i, i);
  snprintf(body + o, sizeof body - o, "]}}}");
  jdoc d;
  derr e = {0};
  ck_assert_int_eq(jdoc_parse(&d, NULL, body, strlen(body), &e), 0);
  push p = {.step = -1};
  int64_t seq = -1;
  codec_push_bufs b;
  ck_assert_msg(codec_push_json(&d, &l, NULL, &p, &seq, &b, &e) == 0, "%s", e.msg);
  ck_assert(p.grad[0] == 1 && p.grad[3] == 4);
  ck_assert_int_eq(p.rows[0].k, 20);
  for (int i = 0; i < 20; i++) {
    ck_assert_uint_eq(p.rows[0].rows[i], (1ull << 39) + 2ull * i + 1); /* exact above 2^24 */
    ck_assert(p.rows[0].vals[2 * i] == (float)i && p.rows[0].vals[2 * i + 1] == (float)i + 0.5f);
  }
  codec_push_bufs_release(&b, NULL);
  jdoc_free(&d);
  /* an id >= V, and a missing sparse tensor: refused, outputs untouched */
  const char *bad[] = {"{\"grads\":{\"W\":[1,2,3],\"b\":[4],\"emb\":{\"rows\":[1099511627776],\"values\":[[1,2]]}}}",
                       "{\"grads\":{\"W\":[1,2,3],\"b\":[4]}}", "{\"grads\":[1,2,3,4]}"};
  const int codes[] = {E_BAD_VALUE, E_BAD_LENGTH, E_BAD_REQUEST};
  for (int k = 0; k < 3; k++) {
    ck_assert_int_eq(jdoc_parse(&d, NULL, bad[k], strlen(bad[k]), &e), 0);
    push q = {.step = -1};
    codec_push_bufs nb = {0};
    ck_assert_int_eq(codec_push_json(&d, &l, NULL, &q, &seq, &nb, &e), -codes[k]);
    ck_assert(!nb.grad && !nb.rows && !q.rows && !q.grad);
    jdoc_free(&d);
  }
}
END_TEST

/* Appends a sparse section (k rows, ids and values) in dtype to buf at *o. */
static void put_rows(char *buf, size_t *o, const uint64_t *ids, const float *v, uint64_t k, size_t D, int dtype) {
  memcpy(buf + *o, &k, 8);
  *o += 8;
  memcpy(buf + *o, ids, k * 8);
  *o += k * 8;
  codec_half_narrow(dtype, v, buf + *o, k * D);
  *o += k * D * codec_half_size(dtype);
}

START_TEST(binary_in_place) {
  instance_layout l = layout3(false); /* W then emb: dense first, used in place */
  _Alignas(64) char body[256];
  float w[3] = {1, 2, 3}, v[6] = {.5f, 1.5f, 2.5f, 3.5f, 4.5f, 5.5f};
  uint64_t ids[3] = {7, 7, (1ull << 40) - 1};
  size_t o = 12;
  memcpy(body, w, 12);
  put_rows(body, &o, ids, v, 3, 2, DTYPE_FLOAT32);
  push p = {0};
  codec_push_bufs b;
  derr e = {0};
  ck_assert_msg(codec_push_binary(&l, NULL, DTYPE_FLOAT32, body, o, &p, &b, &e) == 0, "%s", e.msg);
  ck_assert(b.grad_in_body && p.grad == (float *)(void *)body && !b.rows_cap == 0);
  ck_assert(p.rows[0].k == 3 && p.rows[0].vals == (float *)(void *)(body + 12 + 8 + 24));
  ck_assert(p.rows[0].rows != (const uint64_t *)(void *)(body + 20)); /* byte 20 is not 8-aligned: copied */
  ck_assert(p.rows[0].rows[2] == (1ull << 40) - 1 && p.rows[0].vals[5] == 5.5f);
  /* the reply mirrors the push */
  char out[256];
  ck_assert_uint_eq(codec_push_reply_size(&l, p.rows, DTYPE_FLOAT32), o);
  codec_push_reply_write(&l, p.grad, p.rows, DTYPE_FLOAT32, out);
  ck_assert(!memcmp(out, body, o));
  codec_push_bufs_release(&b, NULL);
}
END_TEST

START_TEST(binary_split_half) {
  instance_layout l = layout3(true); /* W, emb, b: the dense parts are gathered */
  for (int dtype = DTYPE_FLOAT32; dtype <= DTYPE_FLOAT16; dtype++) {
    _Alignas(64) char body[256];
    size_t vs = codec_half_size(dtype), o = 0;
    float w[3] = {1, 2, 3}, bb = 4, v[4] = {.5f, 1.5f, 2.5f, 3.5f};
    uint64_t ids[2] = {1, 0};
    codec_half_narrow(dtype, w, body, 3);
    o = 3 * vs;
    put_rows(body, &o, ids, v, 2, 2, dtype);
    codec_half_narrow(dtype, &bb, body + o, 1);
    o += vs;
    push p = {0};
    codec_push_bufs b;
    derr e = {0};
    ck_assert_msg(codec_push_binary(&l, NULL, dtype, body, o, &p, &b, &e) == 0, "%s", e.msg);
    ck_assert(!b.grad_in_body);
    ck_assert(p.grad[0] == 1 && p.grad[2] == 3 && p.grad[3] == 4);
    ck_assert(p.rows[0].k == 2 && p.rows[0].rows[0] == 1 && p.rows[0].vals[3] == 3.5f);
    char out[256];
    ck_assert_uint_eq(codec_push_reply_size(&l, p.rows, dtype), o);
    codec_push_reply_write(&l, p.grad, p.rows, dtype, out);
    ck_assert(!memcmp(out, body, o));
    codec_push_bufs_release(&b, NULL);
    /* malformed: one byte short, one byte over, k too large, an id >= V */
    push q = {0};
    codec_push_bufs nb = {0};
    ck_assert_int_eq(codec_push_binary(&l, NULL, dtype, body, o - 1, &q, &nb, &e), -E_BAD_LENGTH);
    ck_assert_int_eq(codec_push_binary(&l, NULL, dtype, body, o + 1, &q, &nb, &e), -E_BAD_LENGTH);
    uint64_t huge = 1ull << 40;
    memcpy(body + 3 * vs, &huge, 8);
    ck_assert_int_eq(codec_push_binary(&l, NULL, dtype, body, o, &q, &nb, &e), -E_BAD_LENGTH);
    ck_assert_msg(strstr(e.msg, "k = 1099511627776"), "%s", e.msg);
    uint64_t two = 2, bad = 1ull << 40;
    memcpy(body + 3 * vs, &two, 8);
    memcpy(body + 3 * vs + 16, &bad, 8);
    ck_assert_int_eq(codec_push_binary(&l, NULL, dtype, body, o, &q, &nb, &e), -E_BAD_VALUE);
    ck_assert_msg(strstr(e.msg, "row[1]"), "%s", e.msg);
    ck_assert(!nb.grad && !nb.rows && !q.rows && !q.grad);
  }
}
END_TEST

Suite *suite_codec_push(void) {
  Suite *s = suite_create("codec_push");
  TCase *tc = tcase_create("sparse");
  tcase_add_test(tc, create_sparse);
  tcase_add_test(tc, create_explicit_rows);
  tcase_add_loop_test(tc, create_refused, 0, (int)(sizeof bad_creates / sizeof *bad_creates));
  tcase_add_test(tc, json_rows);
  tcase_add_test(tc, binary_in_place);
  tcase_add_test(tc, binary_split_half);
  suite_add_tcase(s, tc);
  return s;
}
