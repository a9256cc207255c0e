/* test_codec_json: the number-array pre-pass, its error positions, and the
 * writer's round trip. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_json.h"
#include "suites.h"
#include "testutil.h"

static char *numbers(size_t n, const char *sep) {
  char *s = malloc(n * 24 + 16);
  size_t o = 0;
  s[o++] = '[';
  for (size_t i = 0; i < n; i++) o += (size_t)sprintf(s + o, "%s%g", i ? sep : "", (double)i * 0.5 - 3);
  s[o++] = ']';
  s[o] = 0;
  return s;
}

START_TEST(big_arrays_skip_jansson) {
  char *arr = numbers(1000, ", ");
  char *doc = malloc(strlen(arr) * 2 + 200);
  sprintf(doc, "{\"worker\": \"w1\", \"grads\": {\"W\": %s, \"b\": [1, 2.5]}, \"tags\": [\"x\", 1]}", arr);
  jdoc d;
  derr e = {0};
  ck_assert_int_eq(jdoc_parse(&d, NULL, doc, strlen(doc), &e), 0);
  ck_assert_uint_eq(d.narrays, 1);
  json_t *W = json_object_get(json_object_get(d.root, "grads"), "W");
  ck_assert(json_is_string(W)); /* a placeholder */
  ck_assert_int_eq(jdoc_count(&d, W), 1000);
  float *v = malloc(1000 * sizeof(float));
  ck_assert_int_eq(jdoc_floats(&d, W, v, 1000, NULL, 0, "grads.W", &e), 0);
  for (int i = 0; i < 1000; i++) ck_assert(v[i] == (float)(i * 0.5 - 3));
  ck_assert_int_eq(jdoc_floats(&d, W, v, 999, NULL, 0, "grads.W", &e), -E_BAD_LENGTH);
  ck_assert_str_eq(e.msg, "grads.W: expected 999 values, got 1000");
  json_t *b = json_object_get(json_object_get(d.root, "grads"), "b");
  ck_assert(json_is_array(b)); /* short arrays stay jansson */
  ck_assert_int_eq(jdoc_floats(&d, b, v, 2, NULL, 0, "grads.b", &e), 0);
  ck_assert(v[0] == 1 && v[1] == 2.5f);
  ck_assert_int_eq(jdoc_floats(&d, json_object_get(d.root, "tags"), v, 2, NULL, 0, "tags", &e),
                   -E_BAD_REQUEST);
  jdoc_free(&d);
  free(v);
  free(doc);
  free(arr);
}
END_TEST

START_TEST(nested_shapes) {
  /* 4 x 5 nested, and a ragged one */
  const char *doc = "{\"a\": [[1,2,3,4,5],[6,7,8,9,10],[11,12,13,14,15],[16,17,18,19,20]],"
                    " \"r\": [[1,2,3,4,5,6,7,8],[1,2,3,4,5,6,7,8,9]]}";
  jdoc d;
  derr e = {0};
  ck_assert_int_eq(jdoc_parse(&d, NULL, doc, strlen(doc), &e), 0);
  float v[20];
  size_t shape[2] = {4, 5}, wrong[2] = {5, 4};
  json_t *a = json_object_get(d.root, "a");
  ck_assert_int_eq(jdoc_floats(&d, a, v, 20, shape, 2, "a", &e), 0);
  for (int i = 0; i < 20; i++) ck_assert(v[i] == (float)(i + 1));
  ck_assert_int_eq(jdoc_floats(&d, a, v, 20, wrong, 2, "a", &e), -E_BAD_LENGTH);
  ck_assert_int_eq(jdoc_floats(&d, json_object_get(d.root, "r"), v, 17, NULL, 0, "r", &e),
                   -E_BAD_REQUEST);
  jdoc_free(&d);
  /* a small nested array through jansson */
  const char *doc2 = "[[1,2],[3,4]]";
  ck_assert_int_eq(jdoc_parse(&d, NULL, doc2, strlen(doc2), &e), 0);
  size_t s22[2] = {2, 2};
  ck_assert_int_eq(jdoc_floats(&d, d.root, v, 4, s22, 2, "x", &e), 0);
  ck_assert(v[3] == 4);
  jdoc_free(&d);
}
END_TEST

static const struct {
  const char *doc, *needle;
} bad_docs[] = {
    {"{\"a\": [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,]}", "column 47"},
    {"{\"a\": [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16 17]}", "line 1"},
    {"{\"a\": [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,NaN]}", "line 1"},
    {"{\"a\": \"x\\u0000y\"}", "\\u0000"},
    {"{\"a\": 1,\n \"a\": 2}", "line 2"},
    {"{\"a\": [1.]}", "line 1"},
    {"", "line 1"},
    {"{\"a\": [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17], \"b\": }", "column 57"},
};

START_TEST(syntax_errors_say_where) {
  jdoc d;
  derr e = {0};
  const char *doc = bad_docs[_i].doc;
  ck_assert_int_eq(jdoc_parse(&d, NULL, doc, strlen(doc), &e), -E_BAD_JSON);
  ck_assert_msg(strstr(e.msg, bad_docs[_i].needle) != NULL, "'%s' -> '%s'", doc, e.msg);
  ck_assert(d.root == NULL);
  jdoc_free(&d);
}
END_TEST

START_TEST(deep_nesting_is_refused) {
  size_t depth = 200000;
  char *doc = malloc(2 * depth + 1);
  memset(doc, '[', depth);
  memset(doc + depth, ']', depth);
  jdoc d;
  derr e = {0};
  ck_assert_int_eq(jdoc_parse(&d, NULL, doc, 2 * depth, &e), -E_BAD_JSON);
  jdoc_free(&d);
  free(doc);
}
END_TEST

START_TEST(writer_round_trips) {
  float v[100];
  for (int i = 0; i < 100; i++) v[i] = (float)sin(i) * 1e-3f;
  json_t *root = json_pack("{s:i, s:{s:o, s:o}}", "step", 3, "params", "W", jbuf_placeholder(0), "b",
                           jbuf_placeholder(1));
  jbuf_array arrays[2] = {{v, 100, NULL, 0}, {v, 3, NULL, 0}};
  jbuf b;
  jbuf_init(&b, NULL, 16);
  jbuf_json_splice(&b, root, arrays, 2);
  ck_assert(!b.failed);
  jdoc d;
  derr e = {0};
  ck_assert_int_eq(jdoc_parse(&d, NULL, b.p, b.len, &e), 0);
  ck_assert_int_eq(json_integer_value(json_object_get(d.root, "step")), 3);
  float w[100];
  ck_assert_int_eq(jdoc_floats(&d, json_object_get(json_object_get(d.root, "params"), "W"), w, 100,
                               NULL, 0, "W", &e), 0);
  ck_assert(memcmp(v, w, sizeof w) == 0);
  ck_assert_int_eq(jdoc_floats(&d, json_object_get(json_object_get(d.root, "params"), "b"), w, 3,
                               NULL, 0, "b", &e), 0);
  ck_assert(memcmp(v, w, 3 * sizeof(float)) == 0);
  jdoc_free(&d);
  jbuf_release(&b);
  json_decref(root);
}
END_TEST

Suite *suite_codec_json(void) {
  Suite *s = suite_create("codec_json");
  TCase *tc = tcase_create("codec_json");
  tcase_add_test(tc, big_arrays_skip_jansson);
  tcase_add_test(tc, nested_shapes);
  tcase_add_loop_test(tc, syntax_errors_say_where, 0, sizeof bad_docs / sizeof *bad_docs);
  tcase_add_test(tc, deep_nesting_is_refused);
  tcase_add_test(tc, writer_round_trips);
  suite_add_tcase(s, tc);
  return s;
}
