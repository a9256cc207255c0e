/* errors: lookups in the error table (status, snake_case name, default
 * message) and the derr message helpers.  Owns no state: the table is
 * const, built from DERR_TABLE, and any code outside it answers as
 * E_INTERNAL.  Never allocates or logs.  Any thread. */
#include "errors.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const struct {
  int status;
  const char *name;
  const char *msg;
} table[E__COUNT] = {
    [E_OK] = {200, "ok", "ok"},
#define DERR_ROW(id, status, code, msg) [id] = {status, code, msg},
    DERR_TABLE(DERR_ROW)
#undef DERR_ROW
};

int derr_set(derr *e, int code, const char *fmt, ...) {
  if (code < 0) code = -code;
  if (code <= 0 || code >= E__COUNT) code = E_INTERNAL;
  if (e) {
    e->code = code;
    if (fmt) {
      va_list ap;
      va_start(ap, fmt);
      vsnprintf(e->msg, sizeof e->msg, fmt, ap);
      va_end(ap);
    } else {
      snprintf(e->msg, sizeof e->msg, "%s", table[code].msg);
    }
  }
  return -code;
}

void derr_prefix(derr *e, const char *prefix) {
  if (!e || !prefix || !*prefix) return;
  char tmp[sizeof e->msg];
  size_t p = strlen(prefix), m = strlen(e->msg);
  if (p > sizeof tmp - 3) p = sizeof tmp - 3;
  memcpy(tmp, prefix, p);
  memcpy(tmp + p, ": ", 2);
  if (m > sizeof tmp - 3 - p) m = sizeof tmp - 3 - p;
  memcpy(tmp + p + 2, e->msg, m);
  tmp[p + 2 + m] = 0;
  memcpy(e->msg, tmp, sizeof tmp);
}

static int valid(int code) {
  if (code < 0) code = -code;
  return code > 0 && code < E__COUNT ? code : E_INTERNAL;
}

int derr_status(int code) { return table[valid(code)].status; }
const char *derr_name(int code) { return table[valid(code)].name; }
const char *derr_default(int code) { return table[valid(code)].msg; }

int derr_from_name(const char *name) {
  for (int i = 1; i < E__COUNT; i++)
    if (strcmp(table[i].name, name) == 0) return i;
  return 0;
}
