/* bench/daemon: a real descentd for the wire and service benchmarks.
 *
 * bench_daemon_start forks and execs the daemon on 127.0.0.1, port 0, with
 * no data dir, and reads the port it prints; bench_daemon_stop sends SIGTERM
 * to that pid (SIGKILL after 5 s) and reaps it, so no process outlives the
 * benchmark.  Also: a blocking loopback connection with exact send/recv
 * loops and a minimal HTTP/1.1 exchange (used where a client library's own
 * copies would blur what is measured), /proc/<pid>/status fields, and a
 * raw TCP echo peer in its own process (the loopback baseline).
 * Header-only, for the single-file programs; the calling thread only.
 */
#ifndef DESCENT_BENCH_DAEMON_H
#define DESCENT_BENCH_DAEMON_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct bench_daemon {
  pid_t pid;
  int port;
  char base[64]; /* http://127.0.0.1:PORT */
} bench_daemon;

/* Starts `bin` with extra arguments (NULL-terminated, may be NULL).
 * Returns 0, or -1 with nothing left running. */
static inline int bench_daemon_start(bench_daemon *d, const char *bin, const char *const *extra) {
  int fds[2];
  memset(d, 0, sizeof *d);
  if (pipe(fds) < 0) return -1;
  const char *argv[32];
  int k = 0;
  argv[k++] = bin;
  argv[k++] = "--listen";
  argv[k++] = "127.0.0.1:0";
  argv[k++] = "--log-level";
  argv[k++] = "error";
  for (int i = 0; extra && extra[i] && k < 30; i++) argv[k++] = extra[i];
  argv[k] = NULL;
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    dup2(fds[1], 1);
    close(fds[0]);
    close(fds[1]);
    execv(bin, (char *const *)argv);
    _exit(127);
  }
  close(fds[1]);
  FILE *f = fdopen(fds[0], "r");
  char line[256];
  d->pid = pid;
  while (f && fgets(line, sizeof line, f)) {
    char *colon = strrchr(line, ':');
    if (strstr(line, "listening on") && colon) {
      d->port = atoi(colon + 1);
      break;
    }
  }
  if (f) fclose(f); /* the daemon's later stdout goes to a closed pipe: it prints nothing more */
  if (d->port <= 0) {
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    d->pid = 0;
    return -1;
  }
  snprintf(d->base, sizeof d->base, "http://127.0.0.1:%d", d->port);
  return 0;
}

static inline void bench_daemon_stop(bench_daemon *d) {
  if (d->pid <= 0) return;
  kill(d->pid, SIGTERM);
  for (int i = 0; i < 500; i++) {
    if (waitpid(d->pid, NULL, WNOHANG) == d->pid) {
      d->pid = 0;
      return;
    }
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  kill(d->pid, SIGKILL);
  waitpid(d->pid, NULL, 0);
  d->pid = 0;
}

/* A /proc/<pid>/status field in kB (VmRSS, VmHWM), or -1. */
static inline long bench_proc_kb(pid_t pid, const char *field) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "r");
  long v = -1;
  size_t fl = strlen(field);
  while (f && fgets(line, sizeof line, f))
    if (!strncmp(line, field, fl) && line[fl] == ':') v = atol(line + fl + 1);
  if (f) fclose(f);
  return v;
}

/* Resets VmHWM to the current RSS (Linux >= 4.0).  Returns 0 or -1. */
static inline int bench_reset_hwm(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/clear_refs", (int)pid);
  FILE *f = fopen(path, "w");
  if (!f) return -1;
  int rc = fputs("5", f) < 0 ? -1 : 0;
  if (fclose(f) != 0) rc = -1;
  return rc;
}

/* ---- plain loopback sockets ------------------------------------------------ */

static inline int bench_connect(int port) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  if (s < 0) return -1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) {
    close(s);
    return -1;
  }
  int one = 1;
  setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return s;
}

static inline int bench_send_all(int s, const void *buf, size_t n) {
  const char *p = buf;
  while (n) {
    ssize_t k = send(s, p, n, MSG_NOSIGNAL);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return -1;
    p += k;
    n -= (size_t)k;
  }
  return 0;
}

static inline int bench_recv_all(int s, void *buf, size_t n) {
  char *p = buf;
  while (n) {
    ssize_t k = recv(s, p, n, 0);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return -1;
    p += k;
    n -= (size_t)k;
  }
  return 0;
}

/* One HTTP/1.1 request on a kept-alive connection: sends head (the request
 * line and headers, without Content-Length) and body, reads the status and
 * a Content-Length body into out (at most cap bytes; the rest is read and
 * dropped).  Returns the status, or -1; *got = the body's length; the
 * reply's header block is copied to rhead (rcap bytes) when not NULL. */
static inline int bench_http_h(int s, const char *head, const void *body, size_t len, void *out, size_t cap, size_t *got,
                        char *rhead, size_t rcap) {
  char h[1024];
  int hl = snprintf(h, sizeof h, "%sContent-Length: %zu\r\n\r\n", head, len);
  if (hl <= 0 || (size_t)hl >= sizeof h) return -1;
  if (bench_send_all(s, h, (size_t)hl) < 0 || (len && bench_send_all(s, body, len) < 0)) return -1;
  char r[8192];
  size_t have = 0;
  char *end = NULL;
  while (!end) {
    if (have == sizeof r - 1) return -1;
    ssize_t k = recv(s, r + have, sizeof r - 1 - have, 0);
    if (k <= 0) return -1;
    have += (size_t)k;
    r[have] = 0;
    end = strstr(r, "\r\n\r\n");
  }
  int status = atoi(r + 9);
  if (rhead && rcap) snprintf(rhead, rcap, "%.*s", (int)(end - r), r);
  size_t clen = 0;
  for (char *p = r; p < end; p++)
    if ((*p == '\n') && !strncasecmp(p + 1, "Content-Length:", 15)) clen = strtoull(p + 16, NULL, 10);
  size_t over = have - (size_t)(end + 4 - r); /* body bytes already read */
  size_t first = over < cap ? over : cap;
  if (out) memcpy(out, end + 4, first);
  size_t done = over;
  if (done < clen && out && first == over) {
    size_t want = (clen < cap ? clen : cap) - done;
    if (bench_recv_all(s, (char *)out + done, want) < 0) return -1;
    done += want;
  }
  while (done < clen) { /* beyond cap: drop */
    char sink[65536];
    size_t want = clen - done < sizeof sink ? clen - done : sizeof sink;
    if (bench_recv_all(s, sink, want) < 0) return -1;
    done += want;
  }
  if (got) *got = clen;
  return status;
}

static inline int bench_http(int s, const char *head, const void *body, size_t len, void *out, size_t cap, size_t *got) {
  return bench_http_h(s, head, body, len, out, cap, got, NULL, 0);
}

/* The dur= of `name` in a reply's Server-Timing header, or -1. */
static inline double bench_server_timing(const char *rhead, const char *name) {
  const char *st = strcasestr(rhead, "\nServer-Timing:");
  if (!st) return -1;
  char key[64];
  snprintf(key, sizeof key, "%s;dur=", name);
  const char *k = strstr(st, key);
  const char *eol = strchr(st + 1, '\n');
  if (!k || (eol && k > eol)) return -1;
  return atof(k + strlen(key));
}

/* ---- the raw TCP peer (the baseline of bench_wire and bench_sparse) ---- */

/* The TCP peer: for each message, an 8-byte length, then that many bytes
 * read and dropped, then as many bytes sent back, both through one 256 KiB
 * buffer that stays in cache: pure transfer, no memory traffic of its own,
 * so the baseline is as fast as loopback TCP goes.  Runs in its own
 * process, like the daemon. */
#define PEER_CHUNK (256u << 10)

static inline void bench_echo_serve(int ls) {
  char *buf = malloc(PEER_CHUNK);
  int s = accept(ls, NULL, NULL);
  if (s < 0 || !buf) _exit(1);
  int one = 1;
  setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  for (;;) {
    uint64_t len;
    if (bench_recv_all(s, &len, sizeof len) < 0) break;
    for (uint64_t left = len; left;) {
      ssize_t k = recv(s, buf, left < PEER_CHUNK ? left : PEER_CHUNK, 0);
      if (k <= 0) _exit(0);
      left -= (uint64_t)k;
    }
    for (uint64_t left = len; left;) {
      size_t k = left < PEER_CHUNK ? left : PEER_CHUNK;
      if (bench_send_all(s, buf, k) < 0) _exit(0);
      left -= k;
    }
  }
  _exit(0);
}

/* One raw round trip: len, then the bytes out and as many back. */
static inline int bench_tcp_round(int es, const void *out, void *in, size_t bytes) {
  uint64_t len = bytes;
  if (bench_send_all(es, &len, sizeof len) < 0 || bench_send_all(es, out, bytes) < 0 ||
      bench_recv_all(es, in, bytes) < 0)
    return -1;
  return 0;
}

/* Forks the peer on a loopback port (*port).  Returns its pid or -1; the
 * caller kills and reaps it. */
static inline pid_t bench_echo_start(int *port) {
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t al = sizeof a;
  if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 4) < 0 ||
      getsockname(ls, (struct sockaddr *)&a, &al) < 0)
    return -1;
  *port = ntohs(a.sin_port);
  pid_t pid = fork();
  if (pid == 0) bench_echo_serve(ls);
  close(ls);
  return pid;
}

#endif
