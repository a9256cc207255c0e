/* log: one logfmt line per event on stderr.
 *
 * `log_info("snapshot written", "instance=%s bytes=%zu", name, n)` prints
 * `ts=2026-11-24T22:52:29.123Z level=info msg="snapshot written" instance=svm bytes=42`.
 * Never pass a token or a gradient.  Thread-safe (one write(2) per line).
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
