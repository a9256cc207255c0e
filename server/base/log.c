/* log: logfmt lines on stderr.  Owns the one process-wide setting, the
 * level (an atomic: set at start-up from --log-level, read by every
 * thread).  Never allocates, takes a lock or logs a line in pieces.  Any
 * thread. */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int level = LOG_INFO;
static const char *const names[] = {"debug", "info", "warn", "error"};

void log_set_level(int l) { atomic_store(&level, l); }
int log_get_level(void) { return atomic_load(&level); }

int log_level_parse(const char *s) {
  for (int i = 0; i < 4; i++)
    if (strcmp(s, names[i]) == 0) return i;
  return -1;
}

void log_write(int l, const char *msg, const char *fmt, ...) {
  if (l < atomic_load(&level)) return;
  char line[1024];
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  int n = snprintf(line, sizeof line, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s msg=\"%s\"",
                   tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                   ts.tv_nsec / 1000000, names[l & 3], msg);
  if (n < 0) return;
  if (fmt && *fmt && (size_t)n < sizeof line - 2) {
    line[n++] = ' ';
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    if (m > 0) n += m;
    else n--; /* nothing followed: drop the space */
  }
  if ((size_t)n > sizeof line - 2) n = (int)sizeof line - 2;
  line[n++] = '\n';
  ssize_t w = write(STDERR_FILENO, line, (size_t)n);
  (void)w;
}
