/* daemon: starting and stopping a real descentd for the client tests.
 *
 * The daemon is build/bin/descentd (or $DESCENTD), started with
 * --listen 127.0.0.1:0 and a data dir; its "listening on http://HOST:PORT"
 * line is read from its stdout.  Its stderr goes to a log file next to the
 * data dir, printed when a start fails.  It is stopped by its pid only, and
 * dies with the test process (PR_SET_PDEATHSIG) when a failed assertion
 * skips the stop.  Its directory is made under $DESCENT_TEST_TMP (main()
 * creates one per run and removes it at the end, so nothing is left behind
 * by failed tests either).  Call from the test's main thread (the death
 * signal follows the thread that forked).
 */
#ifndef DESCENT_TEST_DAEMON_H
#define DESCENT_TEST_DAEMON_H

#include <stdbool.h>
#include <sys/types.h>

typedef struct test_daemon {
  pid_t pid;
  int out_fd;       /* the daemon's stdout, kept open while it runs */
  char url[64];     /* http://127.0.0.1:PORT */
  char root[256];   /* temporary directory: data/ and daemon.log */
  char data[300];   /* the data dir */
} test_daemon;

/* Starts a daemon in a new temporary directory.  extra: NULL-terminated
 * extra arguments (may be NULL).  Aborts the test on failure. */
void test_daemon_start(test_daemon *t, const char *const *extra);

/* Starts again on the same data dir (after a stop or a kill); a new port. */
void test_daemon_restart(test_daemon *t, const char *const *extra);

/* SIGTERM, wait; returns the exit status (0: clean) or -1 if it died by a signal. */
int test_daemon_stop(test_daemon *t);

/* SIGKILL, wait. */
void test_daemon_kill(test_daemon *t);

/* Stops it if running (SIGKILL) and removes its temporary directory. */
void test_daemon_cleanup(test_daemon *t);

/* Removes a directory tree (the run's $DESCENT_TEST_TMP). */
void test_tmp_remove(const char *dir);

#endif
