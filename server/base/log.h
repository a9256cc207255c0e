/* log: one logfmt line per event on stderr.
 *
 * `log_info("snapshot written", "instance=%s bytes=%zu", name, n)` prints
 * `ts=2026-11-24T22:52:29.123Z level=info msg="snapshot written" instance=svm bytes=42`.
 * Never pass a token or a gradient.  Any thread: a line (at most 1 KiB, cut
 * beyond) is formatted on the stack and written with one write(2), so lines
 * of different threads never interleave.  The level is set once by main
 * (tests change it); lines below it cost one atomic load.
 */
#ifndef DESCENT_LOG_H
#define DESCENT_LOG_H

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

void log_set_level(int level);
int log_get_level(void);
int log_level_parse(const char *s); /* -1 if unknown */

void log_write(int level, const char *msg, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define log_debug(msg, ...) log_write(LOG_DEBUG, msg, __VA_ARGS__)
#define log_info(msg, ...) log_write(LOG_INFO, msg, __VA_ARGS__)
#define log_warn(msg, ...) log_write(LOG_WARN, msg, __VA_ARGS__)
#define log_error(msg, ...) log_write(LOG_ERROR, msg, __VA_ARGS__)

#endif
