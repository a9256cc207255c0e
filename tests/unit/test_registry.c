/* test_registry: the registry (registry_check_new, registry_charge and
 * uncharge, the catalog lock, registry_replace returning the old instance).
 *
 * The table (add, get, exists, replace, remove, list order by name, counts)
 * and the quota (exact messages; a refused charge charges nothing; the
 * floats are instance_floats, what the instances hold).  Public API only. */
#include "instance.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "registry.h"
#include "statefix.h"
#include "suites.h"

static fix F;
static void setup(void) { fix_init(&F); }
static void teardown(void) { fix_cleanup(&F); }

static instance *mk(const char *name, size_t n, int mode) {
  fix_spec sp = {.name = name, .n = n, .mode = mode, .workers = mode == MODE_SYNC ? 2 : 0};
  return fix_instance(&F, &sp);
}

static void ck_get(registry *r, const char *name, instance *want) {
  instance *got = registry_get(r, name);
  ck_assert_ptr_eq(got, want);
  instance_unref(got);
}

static void ck_counts(registry *r, size_t count, uint64_t floats) {
  ck_assert_uint_eq(registry_count(r), count);
  ck_assert_uint_eq(registry_floats(r), floats);
}

/* As create does it: check the name, charge, add (under the catalog lock). */
static int create(registry *r, instance *in, derr *e) {
  registry_change_lock(r);
  int rc = registry_check_new(r, instance_name(in), e);
  if (rc == 0) rc = registry_charge(r, instance_floats(in), e);
  if (rc == 0 && (rc = registry_add(r, in, e)) < 0) registry_uncharge(r, instance_floats(in));
  registry_change_unlock(r);
  return rc;
}

START_TEST(floats_are_what_instances_hold) {
  instance *a = mk("a", 150, MODE_ASYNC), *s = mk("s", 150, MODE_SYNC);
  instance *m = fix_instance(&F, &(fix_spec){.name = "m", .n = 150, .momentum = 0.9});
  instance *ad = fix_instance(&F, &(fix_spec){.name = "ad", .alg = "adam", .n = 10});
  ck_assert_uint_eq(instance_floats(a), 150);
  ck_assert_uint_eq(instance_floats(s), 300); /* the round's combine scratch */
  ck_assert_uint_eq(instance_floats(m), 300); /* the momentum buffer */
  ck_assert_uint_eq(instance_floats(ad), 30);
  instance_unref(a), instance_unref(s), instance_unref(m), instance_unref(ad);
}
END_TEST

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
    ck_assert_int_eq(create(r, in[i], &e), 0);
    floats += mode == MODE_SYNC ? 2 * n : n;
    ck_counts(r, (size_t)i + 1, floats);
  }
  ck_assert_uint_eq(floats, 320);
  instance **all;
  ck_assert_uint_eq(registry_list(r, &all), 7);
  for (int i = 0; i < 7; i++) {
    ck_assert_str_eq(instance_name(all[i]), sorted[i]);
    instance_unref(all[i]);
  }
  free(all);
  ck_get(r, "a", in[2]);
  ck_get(r, "A", NULL);
  ck_get(r, "", NULL);
  for (int i = 0; i < 7; i++) instance_unref(in[i]); /* the registry keeps its own references */
  instance *c = registry_get(r, "c");
  ck_assert_ptr_nonnull(c);
  ck_assert_str_eq(instance_name(c), "c");
  instance_unref(c);
  registry_free(r);
  registry_free(NULL);
}
END_TEST

START_TEST(existing_name_and_instance_limit) {
  registry *r = registry_new(2, 1000);
  derr e = {0};
  instance *a = mk("a", 10, MODE_ASYNC), *a2 = mk("a", 20, MODE_ASYNC), *b = mk("b", 1, MODE_ASYNC);
  instance *c = mk("c", 1, MODE_ASYNC);
  ck_assert_int_eq(create(r, a, &e), 0);
  ck_assert_int_eq(registry_check_new(r, "a", &e), -E_EXISTS);
  ck_assert_str_eq(e.msg, "an instance named 'a' exists");
  ck_assert_int_eq(registry_add(r, a2, &e), -E_EXISTS); /* add itself refuses a taken name too */
  ck_assert_str_eq(e.msg, "an instance named 'a' exists");
  ck_counts(r, 1, 10);
  ck_get(r, "a", a);
  ck_assert_int_eq(create(r, b, &e), 0);
  ck_assert_int_eq(create(r, c, &e), -E_QUOTA);
  ck_assert_str_eq(e.msg, "the daemon holds its maximum of 2 instances (--max-instances)");
  ck_counts(r, 2, 11); /* nothing charged for c */
  ck_get(r, "c", NULL);
  instance_unref(a), instance_unref(a2), instance_unref(b), instance_unref(c);
  registry_free(r);
}
END_TEST

START_TEST(charge_is_all_or_nothing) {
  registry *r = registry_new(10, 500);
  derr e = {0};
  ck_assert_int_eq(registry_charge(r, 450, &e), 0);
  ck_assert_int_eq(registry_check_quota(r, 51, &e), -E_QUOTA);
  ck_assert_str_eq(e.msg, "this needs 51 floats (parameters and state) but only 50 of the 500 allowed are free "
                          "(--max-params)");
  ck_assert_int_eq(registry_charge(r, 150, &e), -E_QUOTA);
  ck_assert_str_eq(e.msg, "this needs 150 floats (parameters and state) but only 50 of the 500 allowed are free "
                          "(--max-params)");
  ck_assert_uint_eq(registry_floats(r), 450); /* a refused charge charges nothing */
  ck_assert_int_eq(registry_check_quota(r, 50, &e), 0);
  ck_assert_uint_eq(registry_floats(r), 450); /* a check charges nothing */
  ck_assert_int_eq(registry_charge(r, 50, &e), 0); /* exactly to the limit */
  ck_assert_uint_eq(registry_floats(r), 500);
  ck_assert_int_eq(registry_charge(r, 1, &e), -E_QUOTA);
  ck_assert_str_eq(e.msg, "this needs 1 floats (parameters and state) but only 0 of the 500 allowed are free "
                          "(--max-params)");
  ck_assert_int_eq(registry_charge(r, 0, &e), 0);
  registry_uncharge(r, 200);
  ck_assert_uint_eq(registry_floats(r), 300);
  ck_assert_int_eq(registry_charge(r, UINT64_MAX, &e), -E_QUOTA); /* no wrap-around */
  ck_assert_uint_eq(registry_floats(r), 300);
  registry_uncharge(r, 301); /* more than held: none left, not a wrap */
  ck_assert_uint_eq(registry_floats(r), 0);
  registry_free(r);
}
END_TEST

START_TEST(replace_and_remove) {
  registry *r = registry_new(10, 1000);
  derr e = {0};
  instance *a = mk("a", 150, MODE_ASYNC), *b = mk("b", 100, MODE_ASYNC);
  ck_assert_int_eq(create(r, a, &e), 0);
  ck_assert_int_eq(create(r, b, &e), 0);
  ck_counts(r, 2, 250);
  instance *a2 = fix_instance(&F, &(fix_spec){.name = "a", .n = 300, .momentum = 0.9});
  registry_change_lock(r);
  instance *old = registry_replace(r, a2);
  registry_change_unlock(r);
  ck_assert_ptr_eq(old, a);
  ck_assert_uint_eq(registry_count(r), 2);
  ck_get(r, "a", a2);
  instance_close(old, E_CONFLICT, "replaced");
  instance_unref(old);
  instance *c = mk("c", 5, MODE_ASYNC);
  registry_change_lock(r);
  ck_assert_ptr_null(registry_replace(r, c)); /* a new name: added */
  registry_change_unlock(r);
  ck_assert_uint_eq(registry_count(r), 3);
  ck_get(r, "c", c);
  registry_change_lock(r);
  instance *gone = registry_remove(r, "b");
  ck_assert_ptr_null(registry_remove(r, "b"));
  registry_change_unlock(r);
  ck_assert_ptr_eq(gone, b);
  instance_unref(gone);
  ck_assert_uint_eq(registry_count(r), 2);
  ck_get(r, "b", NULL);
  instance *b2 = mk("b", 7, MODE_ASYNC);
  ck_assert_int_eq(create(r, b2, &e), 0); /* the name is free again */
  instance **all;
  ck_assert_uint_eq(registry_list(r, &all), 3);
  ck_assert_ptr_eq(all[0], a2);
  ck_assert_ptr_eq(all[1], b2);
  ck_assert_ptr_eq(all[2], c);
  for (int i = 0; i < 3; i++) instance_unref(all[i]);
  free(all);
  instance_unref(a), instance_unref(b), instance_unref(a2), instance_unref(b2), instance_unref(c);
  registry_free(r);
}
END_TEST

START_TEST(list_of_many_is_sorted) {
  registry *r = registry_new(2000, 1u << 30);
  derr e = {0};
  char name[24];
  for (int i = 99; i >= 0; i--) {
    snprintf(name, sizeof name, "w%03d", (i * 37) % 100);
    instance *in = mk(name, 1, MODE_ASYNC);
    ck_assert_int_eq(create(r, in, &e), 0);
    instance_unref(in);
  }
  ck_counts(r, 100, 100);
  instance **all;
  ck_assert_uint_eq(registry_list(r, &all), 100);
  for (int i = 0; i < 100; i++) {
    snprintf(name, sizeof name, "w%03d", i);
    ck_assert_str_eq(instance_name(all[i]), name);
    instance_unref(all[i]);
  }
  free(all);
  registry_free(r);
}
END_TEST

Suite *suite_registry(void) {
  Suite *s = suite_create("registry");
  TCase *tc = tcase_create("table");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, floats_are_what_instances_hold);
  tcase_add_test(tc, add_get_list_in_name_order);
  tcase_add_test(tc, existing_name_and_instance_limit);
  tcase_add_test(tc, replace_and_remove);
  tcase_add_test(tc, list_of_many_is_sorted);
  suite_add_tcase(s, tc);
  tc = tcase_create("quota");
  tcase_add_test(tc, charge_is_all_or_nothing);
  suite_add_tcase(s, tc);
  return s;
}
