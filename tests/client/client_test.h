/* client_test: the Check suites of libdescent, run against real daemons
 * (tests/client/daemon.h).  The list of suites lives here, in one place.
 * DESCENT_QUICK=1 shortens the big runs (sanitizer builds). */
#ifndef DESCENT_CLIENT_TEST_H
#define DESCENT_CLIENT_TEST_H

#include <check.h>
#include <stdbool.h>

#include "descent.h"

#define CLIENT_SUITES(X) \
  X(client)              \
  X(tools)               \
  X(sharding)            \
  X(rows)                \
  X(replicas)

#define CLIENT_SUITE_DECL(name) Suite *suite_##name(void);
CLIENT_SUITES(CLIENT_SUITE_DECL)
#undef CLIENT_SUITE_DECL

/* Asserts a call returned 0, showing the error otherwise. */
#define OK(call, errp)                                                                                   \
  do {                                                                                                   \
    int ok_rc_ = (call);                                                                                 \
    ck_assert_msg(ok_rc_ == 0, "%s -> %d (%s) status %d %s: %s", #call, ok_rc_, descent_strerror(ok_rc_), \
                  (errp)->status, (errp)->code, (errp)->message);                                        \
  } while (0)

/* An assertion for hot loops (ck_assert records a checkpoint every pass). */
#define CHECK(cond, ...)                    \
  do {                                      \
    if (!(cond)) ck_abort_msg(__VA_ARGS__); \
  } while (0)

bool client_test_quick(void);

#endif
