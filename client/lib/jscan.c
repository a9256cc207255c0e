/* jscan: finding members and elements in JSON text by scanning its bytes,
 * without building values.  State documents hold millions of numbers; the
 * library only needs to cut them apart and read a step, so they are never
 * parsed number by number.  Assumes well-formed input (the daemon wrote it;
 * the daemon validates whatever is sent back) and never reads past len.
 * No allocation, no state; any thread.
 */
#include <string.h>

#include "internal.h"

static size_t ws(const char *s, size_t i, size_t len) {
  while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) i++;
  return i;
}

/* The end of the string starting at s[i] == '"' (one past the closing quote). */
static size_t skip_string(const char *s, size_t i, size_t len) {
  for (i++; i < len; i++) {
    if (s[i] == '\\') i++;
    else if (s[i] == '"') return i + 1;
  }
  return len;
}

/* The end of the value starting at s[i]. */
static size_t skip_value(const char *s, size_t i, size_t len) {
  if (i >= len) return len;
  if (s[i] == '"') return skip_string(s, i, len);
  if (s[i] == '{' || s[i] == '[') {
    size_t depth = 0;
    for (; i < len; i++) {
      char c = s[i];
      if (c == '"') {
        i = skip_string(s, i, len) - 1;
      } else if (c == '{' || c == '[') {
        depth++;
      } else if (c == '}' || c == ']') {
        if (--depth == 0) return i + 1;
      }
    }
    return len;
  }
  /* number, true, false, null */
  while (i < len && s[i] != ',' && s[i] != '}' && s[i] != ']' && s[i] != ' ' && s[i] != '\n' && s[i] != '\t' &&
         s[i] != '\r')
    i++;
  return i;
}

int descent__jscan_member(const char *s, size_t len, const char *key, size_t *vb, size_t *ve) {
  size_t kl = strlen(key);
  size_t i = ws(s, 0, len);
  if (i >= len || s[i] != '{') return -1;
  i = ws(s, i + 1, len);
  while (i < len && s[i] == '"') {
    size_t kend = skip_string(s, i, len);
    bool match = kend - i == kl + 2 && !memcmp(s + i + 1, key, kl);
    i = ws(s, kend, len);
    if (i >= len || s[i] != ':') return -1;
    i = ws(s, i + 1, len);
    size_t end = skip_value(s, i, len);
    if (match) {
      *vb = i;
      *ve = end;
      return 0;
    }
    i = ws(s, end, len);
    if (i < len && s[i] == ',') i = ws(s, i + 1, len);
    else break;
  }
  return -1;
}

long descent__jscan_array(const char *s, size_t len, void (*fn)(size_t b, size_t e, void *arg), void *arg) {
  size_t i = ws(s, 0, len);
  if (i >= len || s[i] != '[') return -1;
  i = ws(s, i + 1, len);
  long n = 0;
  if (i < len && s[i] == ']') return 0;
  while (i < len) {
    size_t end = skip_value(s, i, len);
    if (fn) fn(i, end, arg);
    n++;
    i = ws(s, end, len);
    if (i < len && s[i] == ',') i = ws(s, i + 1, len);
    else break;
  }
  return i < len && s[i] == ']' ? n : -1;
}

int descent__jscan_object(const char *s, size_t len,
                          int (*fn)(size_t kb, size_t ke, size_t vb, size_t ve, void *arg), void *arg) {
  size_t i = ws(s, 0, len);
  if (i >= len || s[i] != '{') return -1;
  i = ws(s, i + 1, len);
  if (i < len && s[i] == '}') return 0;
  while (i < len && s[i] == '"') {
    size_t kend = skip_string(s, i, len);
    size_t j = ws(s, kend, len);
    if (j >= len || s[j] != ':') return -1;
    j = ws(s, j + 1, len);
    size_t end = skip_value(s, j, len);
    if (fn && fn(i, kend, j, end, arg) < 0) return -1;
    i = ws(s, end, len);
    if (i < len && s[i] == ',') i = ws(s, i + 1, len);
    else break;
  }
  return i < len && s[i] == '}' ? 0 : -1;
}

/* Walks the leaves of a (nested) array in row-major order. */
static long leaves(const char *s, size_t i, size_t len, size_t *end, long idx,
                   void (*fn)(size_t b, size_t e, size_t idx, void *arg), void *arg) {
  i = ws(s, i, len);
  if (i >= len || s[i] != '[') return -1;
  i = ws(s, i + 1, len);
  if (i < len && s[i] == ']') {
    *end = i + 1;
    return idx;
  }
  while (i < len) {
    if (s[i] == '[') {
      size_t e;
      if ((idx = leaves(s, i, len, &e, idx, fn, arg)) < 0) return -1;
      i = e;
    } else {
      size_t e = skip_value(s, i, len);
      if (fn) fn(i, e, (size_t)idx, arg);
      idx++;
      i = e;
    }
    i = ws(s, i, len);
    if (i < len && s[i] == ',') i = ws(s, i + 1, len);
    else break;
  }
  if (i >= len || s[i] != ']') return -1;
  *end = i + 1;
  return idx;
}

long descent__jscan_leaves(const char *s, size_t len, void (*fn)(size_t b, size_t e, size_t idx, void *arg),
                           void *arg) {
  size_t end;
  return leaves(s, 0, len, &end, 0, fn, arg);
}
