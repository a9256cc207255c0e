/* errors: the client's error table (DESCENT_ERRORS in descent.h), filling
 * descent_error, and instance-name checks done before any request.
 * No state, no I/O; any thread. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static const char *table_code(int rc) {
  switch (rc) {
#define DESCENT_ERR_CODE(name, value, code, msg) \
  case value: return code;
    DESCENT_ERRORS(DESCENT_ERR_CODE)
#undef DESCENT_ERR_CODE
  default: return "unknown_error";
  }
}

const char *descent_strerror(int rc) {
  switch (rc) {
  case DESCENT_OK: return "ok";
#define DESCENT_ERR_MSG(name, value, code, msg) \
  case value: return msg;
    DESCENT_ERRORS(DESCENT_ERR_MSG)
#undef DESCENT_ERR_MSG
  default: return "unknown error";
  }
}

void descent_free(void *p) { free(p); }

int descent__fail(descent_error *err, int rc, const char *fmt, ...) {
  if (!err) return rc;
  err->status = 0;
  snprintf(err->code, sizeof err->code, "%s", table_code(rc));
  if (!fmt) {
    snprintf(err->message, sizeof err->message, "%s", descent_strerror(rc));
    return rc;
  }
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err->message, sizeof err->message, fmt, ap);
  va_end(ap);
  return rc;
}

void descent__set_code(descent_error *err, const char *code) {
  if (err) snprintf(err->code, sizeof err->code, "%s", code);
}

void descent__prefix_shard(descent_error *err, const descent *d, size_t k) {
  if (!err || d->nshards < 2) return;
  char msg[sizeof err->message];
  int n = snprintf(msg, sizeof msg, "shard %zu (%.200s): %s", k, d->shard[k].base, err->message);
  if (n > 0) memcpy(err->message, msg, sizeof msg); /* truncated if it must be */
}

bool descent__name_ok(const char *s) {
  if (!s) return false;
  size_t n = strlen(s);
  if (n < 1 || n > DESCENT__NAME_MAX) return false;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (!alnum && (i == 0 || !(c == '.' || c == '_' || c == '-'))) return false;
  }
  return true;
}

int descent__check_name(const char *name, descent_error *err) {
  if (descent__name_ok(name)) return 0;
  descent__fail(err, DESCENT_EINVAL, "'%.80s' is not an instance name ([A-Za-z0-9][A-Za-z0-9._-]{0,63})",
                name ? name : "(null)");
  descent__set_code(err, "bad_name");
  return DESCENT_EINVAL;
}
