/* test_registry: the name -> instance table and its quotas: add, get,
 * exists, the instance and float limits with their exact messages, replace
 * (returning the old instance), remove, list order by name, and the counts
 * after each.  Refused operations change nothing.  Public API only.
 *
 * This is the registry API before the state-layer split (registry_add
 * charging the quota itself); test_registry_charge.c has the suite for the
 * API after it (main 310790c), selected by INSTANCE_LATENCY_BUCKETS.  Once
 * merged, delete this file. */
#include "instance.h"

#ifndef INSTANCE_LATENCY_BUCKETS
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "instance.h"
#include "registry.h"
#include "statefix.h"
#include "suites.h"

static fix F;
static void setup(void) { fix_init(&F); }
static void teardown(void) { fix_cleanup(&F); }

/* An sgd instance of n floats (sync: 2n, with the combine scratch). */
static instance *mk(const char *name, size_t n, int mode) {
  fix_spec sp = {.name = name, .n = n, .mode = mode, .workers = mode == MODE_SYNC ? 2 : 0};
  return fix_instance(&F, &sp);
}

static void ck_name(instance *in, const char *want) {
  instance_cfg c;
  instance_cfg_get(in, &c);
  ck_assert_str_eq(c.name, want);
  instance_cfg_free(&c);
}

/* registry_get(name) is `want` (NULL: absent). */
static void ck_get(registry *r, const char *name, instance *want) {
  instance *got = registry_get(r, name);
  ck_assert_ptr_eq(got, want);
  instance_unref(got);
}

static void ck_counts(registry *r, size_t count, uint64_t floats) {
  ck_assert_uint_eq(registry_count(r), count);
  ck_assert_uint_eq(registry_floats(r), floats);
}

START_TEST(add_get_list_in_name_order) {
  registry *r = registry_new(100, 100000);
  static const char *const names[] = {"b", "a_b", "a", "c", "A1", "a.b", "a-b"};
  static const char *const sorted[] = {"A1", "a", "a-b", "a.b", "a_b", "b", "c"};
  instance *in[7];
  uint64_t floats = 0;
  derr e = {0};
  for (int i = 0; i < 7; i++) {
    size_t n = 10 * (size_t)(i + 1);
    int mode = !strcmp(names[i], "c") ? MODE_SYNC : MODE_ASYNC;
    in[i] = mk(names[i], n, mode);
    ck_assert_int_eq(registry_add(r, in[i], &e), 0);
    floats += mode == MODE_SYNC ? 2 * n : n;
    ck_counts(r, (size_t)i + 1, floats);
  }
  ck_assert_uint_eq(floats, 10 + 20 + 30 + 80 + 50 + 60 + 70); /* c (sync, n 40) counts 80 */
  instance **all;
  ck_assert_uint_eq(registry_list(r, &all), 7);
  for (int i = 0; i < 7; i++) {
    ck_name(all[i], sorted[i]);
    instance_unref(all[i]);
  }
  free(all);
  ck_get(r, "a", in[2]);
  ck_get(r, "A1", in[4]);
  ck_get(r, "A", NULL); /* names are case-sensitive and whole */
  ck_get(r, "a.", NULL);
  ck_get(r, "", NULL);
  for (int i = 0; i < 7; i++) instance_unref(in[i]); /* the registry keeps its own references */
  ck_counts(r, 7, floats);
  instance *c = registry_get(r, "c"); /* still alive and findable */
  ck_assert_ptr_nonnull(c);
  ck_name(c, "c");
  instance_unref(c);
  registry_free(r);
}
END_TEST

START_TEST(list_of_many_is_sorted) {
  registry *r = registry_new(2000, 1u << 30);
  derr e = {0};
  char name[16];
  for (int i = 99; i >= 0; i--) { /* added backwards, spread over the buckets */
    snprintf(name, sizeof name, "w%03d", (i * 37) % 100);
    instance *in = mk(name, 1, MODE_ASYNC);
    ck_assert_int_eq(registry_add(r, in, &e), 0);
    instance_unref(in);
  }
  ck_counts(r, 100, 100);
  instance **all;
  ck_assert_uint_eq(registry_list(r, &all), 100);
  for (int i = 0; i < 100; i++) {
    snprintf(name, sizeof name, "w%03d", i);
    ck_name(all[i], name);
    instance_unref(all[i]);
  }
  free(all);
  registry_free(r);
}
END_TEST

START_TEST(empty_registry) {
  registry *r = registry_new(1, 1);
  ck_counts(r, 0, 0);
  instance **all;
  ck_assert_uint_eq(registry_list(r, &all), 0);
  free(all);
  ck_get(r, "a", NULL);
  ck_assert_ptr_null(registry_remove(r, "a"));
  registry_free(r);
  registry_free(NULL);
}
END_TEST

START_TEST(existing_name_refused_unchanged) {
  registry *r = registry_new(10, 1000);
  derr e = {0};
  instance *a = mk("a", 10, MODE_ASYNC), *a2 = mk("a", 20, MODE_ASYNC);
  ck_assert_int_eq(registry_add(r, a, &e), 0);
  ck_assert_int_eq(registry_add(r, a2, &e), -E_EXISTS);
  ck_assert_int_eq(e.code, E_EXISTS);
  ck_assert_str_eq(e.msg, "an instance named 'a' exists");
  ck_counts(r, 1, 10);
  ck_get(r, "a", a);
  instance_unref(a), instance_unref(a2);
  registry_free(r);
}
END_TEST

START_TEST(instance_quota) {
  registry *r = registry_new(2, 1000);
  derr e = {0};
  instance *a = mk("a", 1, MODE_ASYNC), *b = mk("b", 1, MODE_ASYNC), *c = mk("c", 1, MODE_ASYNC);
  ck_assert_int_eq(registry_add(r, a, &e), 0);
  ck_assert_int_eq(registry_add(r, b, &e), 0);
  ck_assert_int_eq(registry_add(r, c, &e), -E_QUOTA);
  ck_assert_int_eq(e.code, E_QUOTA);
  ck_assert_str_eq(e.msg, "the daemon holds its maximum of 2 instances (--max-instances)");
  ck_counts(r, 2, 2);
  ck_get(r, "c", NULL);
  /* replacing a held name adds no instance: allowed at the limit */
  instance *old = NULL;
  instance *a2 = mk("a", 3, MODE_ASYNC);
  ck_assert_int_eq(registry_replace(r, a2, &old, &e), 0);
  ck_assert_ptr_eq(old, a);
  instance_close(old, E_CONFLICT, "replaced");
  instance_unref(old);
  ck_counts(r, 2, 4);
  /* a replace under a new name is an add */
  ck_assert_int_eq(registry_replace(r, c, &old, &e), -E_QUOTA);
  ck_assert_ptr_null(old);
  ck_assert_str_eq(e.msg, "the daemon holds its maximum of 2 instances (--max-instances)");
  ck_counts(r, 2, 4);
  /* after a remove there is room again */
  instance *gone = registry_remove(r, "b");
  ck_assert_ptr_eq(gone, b);
  instance_unref(gone);
  ck_counts(r, 1, 3);
  ck_assert_int_eq(registry_add(r, c, &e), 0);
  ck_counts(r, 2, 4);
  instance_unref(a), instance_unref(b), instance_unref(c), instance_unref(a2);
  registry_free(r);
}
END_TEST

START_TEST(float_quota_counts_parameters_and_state) {
  registry *r = registry_new(100, 500);
  derr e = {0};
  instance *x[3];
  char name[24];
  for (int i = 0; i < 3; i++) {
    snprintf(name, sizeof name, "x%d", i);
    x[i] = mk(name, 150, MODE_ASYNC);
    ck_assert_int_eq(registry_add(r, x[i], &e), 0);
    instance_unref(x[i]);
  }
  ck_counts(r, 3, 450);
  instance *big = mk("big", 150, MODE_ASYNC), *s = mk("s", 26, MODE_SYNC), *fit = mk("fit", 50, MODE_ASYNC);
  ck_assert_int_eq(registry_add(r, big, &e), -E_QUOTA);
  ck_assert_str_eq(e.msg, "this instance needs 150 floats (parameters and state) but only 50 of the 500 "
                          "allowed are free (--max-params)");
  ck_assert_int_eq(registry_add(r, s, &e), -E_QUOTA); /* 26 parameters + 26 to combine a round */
  ck_assert_str_eq(e.msg, "this instance needs 52 floats (parameters and state) but only 50 of the 500 "
                          "allowed are free (--max-params)");
  ck_counts(r, 3, 450);
  ck_assert_int_eq(registry_add(r, fit, &e), 0); /* exactly to the limit */
  ck_counts(r, 4, 500);
  instance *one = mk("one", 1, MODE_ASYNC);
  ck_assert_int_eq(registry_add(r, one, &e), -E_QUOTA);
  ck_assert_str_eq(e.msg, "this instance needs 1 floats (parameters and state) but only 0 of the 500 "
                          "allowed are free (--max-params)");
  ck_counts(r, 4, 500);
  instance_unref(big), instance_unref(s), instance_unref(fit), instance_unref(one);
  registry_free(r);
}
END_TEST

START_TEST(check_quota_with_replacing) {
  registry *r = registry_new(1, 500);
  derr e = {0};
  instance *a = mk("a", 150, MODE_ASYNC);
  ck_assert_int_eq(registry_add(r, a, &e), 0);
  instance_state s;
  fix_state(&s, &(fix_spec){.name = "a", .n = 500});
  ck_assert_int_eq(registry_check_quota(r, &s.cfg, 150, &e), 0); /* 150 - 150 + 500: exactly full */
  instance_state_free(&s);
  fix_state(&s, &(fix_spec){.name = "a", .n = 501});
  ck_assert_int_eq(registry_check_quota(r, &s.cfg, 150, &e), -E_QUOTA);
  ck_assert_str_eq(e.msg, "this instance needs 501 floats (parameters and state) but only 500 of the 500 "
                          "allowed are free (--max-params)");
  instance_state_free(&s);
  fix_state(&s, &(fix_spec){.name = "b", .n = 1});
  ck_assert_int_eq(registry_check_quota(r, &s.cfg, 0, &e), -E_QUOTA); /* an add: the instance limit */
  ck_assert_str_eq(e.msg, "the daemon holds its maximum of 1 instances (--max-instances)");
  instance_state_free(&s);
  fix_state(&s, &(fix_spec){.name = "a", .n = 4, .momentum = 0.9});
  ck_assert_int_eq(registry_check_quota(r, &s.cfg, 150, &e), 0);
  instance_state_free(&s);
  ck_counts(r, 1, 150); /* checks change nothing */
  instance_unref(a);
  registry_free(r);
}
END_TEST

START_TEST(replace_returns_the_old_instance) {
  registry *r = registry_new(10, 1000);
  derr e = {0};
  instance *a = mk("a", 150, MODE_ASYNC), *b = mk("b", 100, MODE_ASYNC);
  ck_assert_int_eq(registry_add(r, a, &e), 0);
  ck_assert_int_eq(registry_add(r, b, &e), 0);
  fix_spec sp = {.name = "a", .n = 300, .momentum = 0.9}; /* 300 + a momentum buffer */
  instance *a2 = fix_instance(&F, &sp);
  instance *old = (instance *)1;
  ck_assert_int_eq(registry_replace(r, a2, &old, &e), 0);
  ck_assert_ptr_eq(old, a);
  ck_counts(r, 2, 100 + 600);
  ck_get(r, "a", a2);
  instance_close(old, E_CONFLICT, "replaced");
  instance_unref(old);
  /* over the limit: refused, the current one stays */
  instance *a3 = mk("a", 901, MODE_ASYNC);
  old = (instance *)1;
  ck_assert_int_eq(registry_replace(r, a3, &old, &e), -E_QUOTA);
  ck_assert_ptr_null(old);
  ck_assert_str_eq(e.msg, "this instance needs 901 floats (parameters and state) but only 900 of the 1000 "
                          "allowed are free (--max-params)");
  ck_counts(r, 2, 700);
  ck_get(r, "a", a2);
  /* a new name: added */
  instance *c = mk("c", 5, MODE_ASYNC);
  ck_assert_int_eq(registry_replace(r, c, &old, &e), 0);
  ck_assert_ptr_null(old);
  ck_counts(r, 3, 705);
  ck_get(r, "c", c);
  instance_unref(a), instance_unref(b), instance_unref(a2), instance_unref(a3), instance_unref(c);
  registry_free(r);
}
END_TEST

START_TEST(remove_then_reuse_the_name) {
  registry *r = registry_new(10, 1000);
  derr e = {0};
  instance *a = mk("a", 10, MODE_ASYNC), *b = mk("b", 20, MODE_SYNC);
  ck_assert_int_eq(registry_add(r, a, &e), 0);
  ck_assert_int_eq(registry_add(r, b, &e), 0);
  ck_counts(r, 2, 50);
  instance *got = registry_remove(r, "b");
  ck_assert_ptr_eq(got, b);
  instance_unref(got);
  ck_counts(r, 1, 10);
  ck_get(r, "b", NULL);
  ck_assert_ptr_null(registry_remove(r, "b"));
  ck_counts(r, 1, 10);
  instance *b2 = mk("b", 7, MODE_ASYNC);
  ck_assert_int_eq(registry_add(r, b2, &e), 0);
  ck_counts(r, 2, 17);
  ck_get(r, "b", b2);
  instance **all;
  ck_assert_uint_eq(registry_list(r, &all), 2);
  ck_assert_ptr_eq(all[0], a);
  ck_assert_ptr_eq(all[1], b2);
  instance_unref(all[0]), instance_unref(all[1]);
  free(all);
  instance_unref(a), instance_unref(b), instance_unref(b2);
  registry_free(r);
}
END_TEST

Suite *suite_registry(void) {
  Suite *s = suite_create("registry");
  TCase *tc = tcase_create("table");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, add_get_list_in_name_order);
  tcase_add_test(tc, list_of_many_is_sorted);
  tcase_add_test(tc, empty_registry);
  tcase_add_test(tc, existing_name_refused_unchanged);
  tcase_add_test(tc, remove_then_reuse_the_name);
  suite_add_tcase(s, tc);
  tc = tcase_create("quota");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, instance_quota);
  tcase_add_test(tc, float_quota_counts_parameters_and_state);
  tcase_add_test(tc, check_quota_with_replacing);
  tcase_add_test(tc, replace_returns_the_old_instance);
  suite_add_tcase(s, tc);
  return s;
}
#endif
