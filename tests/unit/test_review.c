/* test_review: defects found by the review of the state layer and persist
 * (issue 12, task B), each as a test that fails until it is fixed.
 *
 *   - persist_remove marks the name deleted before it unlinks anything, so a
 *     remove that fails leaves the instance alive (DELETE answered an error)
 *     but every later save of it skipped, while reporting success;
 *   - persist_remove unlinks NAME.snap before NAME.snap.prev, so a failure on
 *     the second leaves the instance without its snapshot, although persist.h
 *     promises "On failure the files are as they were";
 *   - instance_reconfigure keeps the buffers it allocated before one failed,
 *     although instance.h promises "-E_QUOTA with nothing changed" (and PATCH
 *     uncharges the whole cost, so the quota then counts less than is held);
 *   - random search's candidate slots (kernel/rsearch.c, up to RSEARCH_SLOTS
 *     arrays of n floats, allocated by instance_ask) are not in
 *     instance_floats, so the quota never counts them.
 * Public API only (persist.h, instance.h, statefix.h). */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "instance.h"
#include "log.h"
#include "mem.h"
#include "persist.h"
#include "statefix.h"
#include "suites.h"

static fix F;
static char dir[64];

static void setup(void) {
  fix_init(&F);
  log_set_level(LOG_ERROR);
  snprintf(dir, sizeof dir, "/tmp/descent-review-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void) {
  const char *names[] = {"m.snap", "m.snap.prev", "m.snap.tmp"};
  char path[512];
  for (size_t i = 0; i < 3; i++) {
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    if (unlink(path) < 0) rmdir(path);
  }
  rmdir(dir);
  log_set_level(LOG_INFO);
  fix_cleanup(&F);
}

static void path_of(char *out, size_t cap, const char *name) { snprintf(out, cap, "%s/%s", dir, name); }

static bool is_file(const char *name) {
  char path[512];
  struct stat st;
  path_of(path, sizeof path, name);
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Replaces the file `name` by an empty directory: unlinkat(name, 0) then
 * fails with EISDIR, even for root (a permission trick would not). */
static void make_unremovable(const char *name) {
  char path[512];
  path_of(path, sizeof path, name);
  ck_assert_int_eq(unlink(path), 0);
  ck_assert_int_eq(mkdir(path, 0700), 0);
}

static void make_removable(const char *name) {
  char path[512];
  path_of(path, sizeof path, name);
  ck_assert_int_eq(rmdir(path), 0);
}

/* The step held by the snapshot file `name`. */
static uint64_t file_step(const char *name) {
  char path[512];
  path_of(path, sizeof path, name);
  FILE *f = fopen(path, "rb");
  ck_assert_msg(f != NULL, "%s missing", name);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *b = mem_xmalloc(n > 0 ? (size_t)n : 1);
  size_t len = fread(b, 1, (size_t)n, f);
  fclose(f);
  instance_state s;
  derr e = {0};
  ck_assert_msg(persist_decode(b, len, &s, &e) == 0, "%s: %s", name, e.msg);
  free(b);
  uint64_t step = s.step;
  instance_state_free(&s);
  return step;
}

/* persist.c persist_remove: `w->deleted = true` comes before the unlinks and
 * stays when they fail.  The handler (h_delete) then keeps the instance, so
 * it goes on acknowledging steps and PATCHes "durable", yet no file is ever
 * written for it again. */
START_TEST(failed_remove_does_not_stop_later_saves) {
  derr e = {0};
  persist *p = persist_open(dir, &e);
  ck_assert_ptr_nonnull(p);
  instance_state s;
  fix_state(&s, &(fix_spec){.name = "m", .n = 2, .step = 1});
  s.incarnation = 5, s.version = 1;
  ck_assert_int_eq(persist_save_state(p, &s, &e), 0);
  make_unremovable("m.snap");
  ck_assert_int_eq(persist_remove(p, "m", &e), -E_IO); /* DELETE answers 500: the instance stays */
  make_removable("m.snap");
  s.step = 2, s.version = 2; /* a later change of the same, still live, instance */
  ck_assert_int_eq(persist_save_state(p, &s, &e), 0);
  ck_assert_msg(is_file("m.snap"), "the save after a failed remove was skipped, yet returned 0");
  ck_assert_uint_eq(file_step("m.snap"), 2);
  instance_state_free(&s);
  persist_close(p);
}
END_TEST

/* persist.c persist_remove: NAME.snap is unlinked first; if NAME.snap.prev
 * then cannot be, the call fails (the instance stays) but its snapshot is
 * gone: after a restart the instance is lost. */
START_TEST(failed_remove_leaves_the_files_as_they_were) {
  derr e = {0};
  persist *p = persist_open(dir, &e);
  ck_assert_ptr_nonnull(p);
  instance_state s;
  fix_state(&s, &(fix_spec){.name = "m", .n = 2, .step = 1});
  s.incarnation = 5, s.version = 1;
  ck_assert_int_eq(persist_save_state(p, &s, &e), 0);
  s.step = 2, s.version = 2;
  ck_assert_int_eq(persist_save_state(p, &s, &e), 0);
  ck_assert_uint_eq(file_step("m.snap.prev"), 1);
  make_unremovable("m.snap.prev");
  ck_assert_int_eq(persist_remove(p, "m", &e), -E_IO);
  ck_assert_msg(is_file("m.snap"), "a failed remove deleted m.snap");
  ck_assert_uint_eq(file_step("m.snap"), 2);
  instance_state_free(&s);
  persist_close(p);
}
END_TEST

/* Virtual memory size of this process, bytes (from /proc/self/status). */
static uint64_t vm_size(void) {
  FILE *f = fopen("/proc/self/status", "r");
  ck_assert_ptr_nonnull(f);
  char line[256];
  unsigned long long kb = 0;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmSize: %llu kB", &kb) == 1) break;
  fclose(f);
  ck_assert_uint_gt(kb, 0);
  return (uint64_t)kb * 1024;
}

/* transfer.c instance_reconfigure -> instance.c instance__alloc_buffers:
 * of two new buffers, the first is allocated and kept when the second
 * fails.  The address-space limit makes exactly the second mmap fail. */
START_TEST(failed_reconfigure_holds_no_new_buffer) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return; /* the sanitizers' own mappings make an address-space limit meaningless */
#endif
  const size_t n = (size_t)4 << 20; /* 16 MiB a buffer: mmapped (mem.c, 2 MiB and up) */
  instance *in = fix_instance(&F, &(fix_spec){.name = "m", .alg = "rmsprop", .lr = 0.01, .n = n});
  uint64_t before = instance_floats(in);
  ck_assert_uint_eq(before, 2 * (uint64_t)n); /* params + square_avg */
  instance_cfg c;
  instance_cfg_get(in, &c);
  c.hyper.momentum = 0.9; /* + momentum_buffer */
  c.hyper.centered = true; /* + grad_avg */
  derr e = {0};
  struct rlimit old;
  ck_assert_int_eq(getrlimit(RLIMIT_AS, &old), 0);
  uint64_t room = vm_size() + (uint64_t)n * sizeof(float) * 3 / 2; /* one buffer fits, two do not */
  struct rlimit lim = {.rlim_cur = (rlim_t)room, .rlim_max = old.rlim_max};
  ck_assert_int_eq(setrlimit(RLIMIT_AS, &lim), 0);
  int rc = fix_reconfigure(in, &c, &e);
  ck_assert_int_eq(setrlimit(RLIMIT_AS, &old), 0);
  ck_assert_int_eq(rc, -E_QUOTA);
  ck_assert_msg(instance_floats(in) == before, "a refused reconfigure holds %llu floats, was %llu",
                (unsigned long long)instance_floats(in), (unsigned long long)before);
  instance_cfg_free(&c);
  instance_unref(in);
}
END_TEST

/* search.c instance_ask -> rsearch.c rsearch_ask allocates a slot of n
 * floats per new candidate (up to RSEARCH_SLOTS); transfer.c
 * instance__held_floats counts params + buffers + scratch only.  Whatever
 * the fix (charge per slot, or count every slot from creation), what the
 * instance reports must cover what it holds. */
START_TEST(asked_candidates_are_counted) {
  const size_t n = 1000;
  instance *in = fix_instance(&F, &(fix_spec){.name = "m", .alg = "random_search", .n = n});
  float *x = mem_xmalloc(n * sizeof(float));
  derr e = {0};
  uint64_t id = 0;
  for (int k = 0; k < 3; k++) ck_assert_int_eq(instance_ask(in, &id, x, &e), 0);
  ck_assert_uint_eq(id, 3);
  uint64_t held = (1 + 3) * (uint64_t)n; /* params + three candidate slots */
  ck_assert_msg(instance_floats(in) >= held, "instance_floats %llu, but %llu floats are held",
                (unsigned long long)instance_floats(in), (unsigned long long)held);
  free(x);
  instance_unref(in);
}
END_TEST

Suite *suite_review(void) {
  Suite *s = suite_create("review");
  TCase *tc = tcase_create("defects");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, failed_remove_does_not_stop_later_saves);
  tcase_add_test(tc, failed_remove_leaves_the_files_as_they_were);
  tcase_add_test(tc, failed_reconfigure_holds_no_new_buffer);
  tcase_add_test(tc, asked_candidates_are_counted);
  suite_add_tcase(s, tc);
  return s;
}
