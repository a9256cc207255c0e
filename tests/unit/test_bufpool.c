/* test_bufpool: size classes, reuse, and trimming idle buffers. */
#include <check.h>
#include <string.h>
#include <unistd.h>

#include "bufpool.h"
#include "suites.h"

START_TEST(classes_waste_under_a_quarter) {
  bufpool *bp = bufpool_new((size_t)1 << 30);
  static const size_t sizes[] = {40000, 65536, 65537, 100000, 4000000, 40000000, 40000001};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    size_t cap = 0;
    void *p = bufpool_get(bp, sizes[i], &cap);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_ge(cap, sizes[i]);
    if (sizes[i] >= 65536) ck_assert_msg(cap < sizes[i] + sizes[i] / 4, "%zu bytes in a %zu-byte buffer", sizes[i], cap);
    memset(p, 1, sizes[i]);
    bufpool_put(bp, p, cap);
  }
  ck_assert_uint_eq(bufpool_busy_bytes(bp), 0);
  bufpool_free(bp);
}
END_TEST

START_TEST(reuse_then_trim) {
  bufpool *bp = bufpool_new((size_t)1 << 30);
  size_t cap, cap2;
  void *p = bufpool_get(bp, 40000000, &cap);
  ck_assert_ptr_nonnull(p);
  bufpool_put(bp, p, cap);
  ck_assert_uint_eq(bufpool_idle_bytes(bp), cap);
  void *q = bufpool_get(bp, 39000000, &cap2); /* the same class: the same buffer */
  ck_assert_ptr_eq(q, p);
  ck_assert_uint_eq(cap2, cap);
  bufpool_put(bp, q, cap2);
  ck_assert_uint_eq(bufpool_trim(bp, 60000), 0); /* used just now: kept */
  ck_assert_uint_eq(bufpool_idle_bytes(bp), cap);
  usleep(30000);
  ck_assert_uint_eq(bufpool_trim(bp, 10), cap); /* idle for longer than 10 ms: released */
  ck_assert_uint_eq(bufpool_idle_bytes(bp), 0);
  ck_assert_uint_eq(bufpool_trim(NULL, 0), 0);
  bufpool_free(bp);
}
END_TEST

START_TEST(idle_whole_and_in_place_growth) {
  bufpool *bp = bufpool_new((size_t)1 << 30);
  size_t cap, cap2;
  ck_assert_ptr_null(bufpool_get_idle(bp, 6u << 20, &cap)); /* nothing idle: nothing allocated */
  ck_assert_uint_eq(bufpool_busy_bytes(bp), 0);
  ck_assert_uint_eq(bufpool_capacity(bp, 6u << 20), 6u << 20);
  ck_assert_uint_eq(bufpool_capacity(bp, 100), 100); /* small: exact */
  char *p = bufpool_get(bp, 3u << 20, &cap);
  ck_assert_uint_eq(cap, bufpool_capacity(bp, 3u << 20));
  for (size_t i = 0; i < cap; i += 4096) p[i] = (char)(i >> 12);
  char *q = bufpool_grow(bp, p, cap, 6u << 20, &cap2); /* in place: contents kept */
  ck_assert_ptr_nonnull(q);
  ck_assert_uint_eq(cap2, 6u << 20);
  for (size_t i = 0; i < cap; i += 4096) ck_assert_int_eq(q[i], (char)(i >> 12));
  memset(q + cap, 7, cap2 - cap);
  ck_assert_uint_eq(bufpool_busy_bytes(bp), cap2);
  bufpool_put(bp, q, cap2);
  ck_assert_ptr_eq(bufpool_get_idle(bp, 6u << 20, &cap), q); /* the same size again: taken whole */
  ck_assert_uint_eq(cap, cap2);
  ck_assert_uint_eq(bufpool_idle_bytes(bp), 0);
  bufpool_put(bp, q, cap);
  char *s = bufpool_get(bp, 200000, &cap); /* pooled but not mapped: not grown in place */
  ck_assert_ptr_null(bufpool_grow(bp, s, cap, 400000, &cap2));
  bufpool_put(bp, s, cap);
  ck_assert_uint_eq(bufpool_busy_bytes(bp), 0);
  bufpool_free(bp);
}
END_TEST

Suite *suite_bufpool(void) {
  Suite *s = suite_create("bufpool");
  TCase *tc = tcase_create("bufpool");
  tcase_add_test(tc, classes_waste_under_a_quarter);
  tcase_add_test(tc, reuse_then_trim);
  tcase_add_test(tc, idle_whole_and_in_place_growth);
  suite_add_tcase(s, tc);
  return s;
}
