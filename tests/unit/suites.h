/* suites: the list of every unit-test suite, in one place (libuv's test-list
 * habit).  Each suite is one module's behaviour; main.c runs them all. */
#ifndef DESCENT_TEST_SUITES_H
#define DESCENT_TEST_SUITES_H

#include <check.h>

#define TEST_SUITES(X) \
  X(optim)             \
  X(optim_sparse)      \
  X(rng)               \
  X(rsearch)          \
  X(codec_float)      \
  X(codec_json)       \
  X(kpool)            \
  X(bufpool)          \
  X(codec_half)       \
  X(state_push)       \
  X(state_rounds)     \
  X(state_waiters)    \
  X(registry)         \
  X(persist)          \
  X(spec)             \
  X(codec_push)       \
  X(review)           \
  X(timers)           \
  X(auth)             \
  X(routes)           \
  X(history)           \
  X(rows)              \
  X(journal)

#define TEST_SUITE_DECL(name) Suite *suite_##name(void);
TEST_SUITES(TEST_SUITE_DECL)
#undef TEST_SUITE_DECL

#endif
