/* daemon: real descentd processes for the client tests (see daemon.h).
 * Runs on the test's main thread. */
#include "daemon.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *descentd_path(void) {
  const char *p = getenv("DESCENTD");
  return p && *p ? p : "build/bin/descentd";
}

static void print_log(const test_daemon *t) {
  char path[320], buf[4096];
  snprintf(path, sizeof path, "%s/daemon.log", t->root);
  FILE *f = fopen(path, "r");
  if (!f) return;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  buf[n] = 0;
  fclose(f);
  fprintf(stderr, "--- %s ---\n%s\n", path, buf);
}

/* Reads the first line of the daemon's stdout (10 s at most). */
static int read_line(int fd, char *line, size_t cap) {
  size_t n = 0;
  while (n + 1 < cap) {
    struct pollfd p = {fd, POLLIN, 0};
    int r = poll(&p, 1, 10000);
    if (r <= 0) return -1;
    ssize_t got = read(fd, line + n, 1);
    if (got <= 0) return -1;
    if (line[n] == '\n') break;
    n++;
  }
  line[n] = 0;
  return 0;
}

static void spawn(test_daemon *t, const char *const *extra) {
  const char *argv[64];
  size_t a = 0;
  argv[a++] = descentd_path();
  argv[a++] = "--listen";
  argv[a++] = "127.0.0.1:0";
  argv[a++] = "--data-dir";
  argv[a++] = t->data;
  for (size_t i = 0; extra && extra[i] && a < 62; i++) argv[a++] = extra[i];
  argv[a] = NULL;
  char logpath[320];
  snprintf(logpath, sizeof logpath, "%.256s/daemon.log", t->root);
  int fds[2];
  ck_assert_int_eq(pipe(fds), 0);
  pid_t parent = getpid();
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    int log = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (log < 0 || dup2(fds[1], 1) < 0 || dup2(log, 2) < 0) _exit(127);
    close(fds[0]);
    close(fds[1]);
    close(log);
    execv(argv[0], (char *const *)argv);
    _exit(127);
  }
  close(fds[1]);
  t->pid = pid;
  t->out_fd = fds[0];
  char line[256];
  if (read_line(t->out_fd, line, sizeof line) < 0 || strncmp(line, "listening on http://", 20)) {
    print_log(t);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    t->pid = 0;
    ck_abort_msg("descentd (%s) did not start", argv[0]);
  }
  snprintf(t->url, sizeof t->url, "%.60s", line + 13);
}

void test_daemon_start(test_daemon *t, const char *const *extra) {
  memset(t, 0, sizeof *t);
  t->out_fd = -1;
  const char *parent = getenv("DESCENT_TEST_TMP");
  snprintf(t->root, sizeof t->root, "%.200s/daemon-XXXXXX", parent && *parent ? parent : "/tmp");
  ck_assert_ptr_nonnull(mkdtemp(t->root));
  snprintf(t->data, sizeof t->data, "%s/data", t->root);
  ck_assert_int_eq(mkdir(t->data, 0755), 0);
  spawn(t, extra);
}

void test_daemon_restart(test_daemon *t, const char *const *extra) {
  ck_assert_int_eq(t->pid, 0);
  spawn(t, extra);
}

static int reap(test_daemon *t) {
  int status = 0;
  while (waitpid(t->pid, &status, 0) < 0 && errno == EINTR) {
  }
  t->pid = 0;
  if (t->out_fd >= 0) close(t->out_fd);
  t->out_fd = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int test_daemon_stop(test_daemon *t) {
  if (t->pid <= 0) return -1;
  kill(t->pid, SIGTERM);
  int rc = reap(t);
  if (rc != 0) print_log(t);
  return rc;
}

void test_daemon_kill(test_daemon *t) {
  if (t->pid <= 0) return;
  kill(t->pid, SIGKILL);
  reap(t);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  remove(path);
  return 0;
}

void test_tmp_remove(const char *dir) {
  if (dir && *dir) nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

void test_daemon_cleanup(test_daemon *t) {
  test_daemon_kill(t);
  if (t->root[0]) nftw(t->root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  t->root[0] = 0;
}
