/* codec_json: the number-array pre-pass, placeholders, and the JSON writer.
 *
 * Placeholders are strings "\u0000A<k>": user strings may not contain NUL
 * (the pre-pass refuses \u0000), so they cannot collide.  The pre-pass never
 * moves backwards: an array that turns out not to be numeric is copied up to
 * the first offending byte and ordinary scanning resumes there, so the whole
 * document is read once.
 *
 * Owns a jdoc's root, float store and array table, and a jbuf's text (from
 * the bufpool when one is given); each belongs to one caller, on one thread
 * at a time.  Never checks meaning (fields, shapes, finiteness): spec.c and
 * codec_push.c do.  HTTP threads, and persist (jbuf for snapshot headers).
 */
#include "codec_json.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_float.h"
#include "mem.h"

/* ---- reading -------------------------------------------------------------- */

typedef struct span {
  size_t in_start, in_len, out_start, out_len;
} span;

typedef struct pre {
  const char *t;
  size_t len;
  char *out;
  size_t o;
  jdoc *d;
  span *spans;
  size_t nspans, spans_cap;
} pre;

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static int store_push(jdoc *d, float f) {
  if (d->store_len == d->store_cap) {
    size_t ncap = d->store_cap ? d->store_cap * 2 : 4096;
    size_t cap_bytes;
    float *n = bufpool_get(d->pool, ncap * sizeof(float), &cap_bytes);
    if (!n) return -E_QUOTA;
    if (d->store_len) memcpy(n, d->store, d->store_len * sizeof(float));
    bufpool_put(d->pool, d->store, d->store_cap * sizeof(float));
    d->store = n;
    d->store_cap = cap_bytes / sizeof(float);
  }
  d->store[d->store_len++] = f;
  return 0;
}

/* Tries to read a rectangular numeric array at t[i] == '['.  Returns 1 with
 * *end past its ']' (values appended to the store, shape in *a), or 0 with
 * *stop at the first byte that is not part of one (store unchanged).
 * Returns -1 if memory ran out. */
static int numeric(pre *P, size_t i, size_t *end, size_t *stop, jdoc_array *a) {
  const char *t = P->t;
  size_t len = P->len, pos = i, start = P->d->store_len;
  size_t count[JDOC_MAXDIM] = {0}, dims[JDOC_MAXDIM] = {0};
  int depth = 0, leaf = -1;
  for (;;) {
    /* at '[' */
    if (depth == JDOC_MAXDIM) goto abort;
    count[depth++] = 0;
    pos++;
  value:
    while (pos < len && is_ws(t[pos])) pos++;
    if (pos >= len) goto abort;
    if (t[pos] == '[') {
      if (leaf >= 0 && depth - 1 >= leaf) goto abort;
      continue;
    }
    if (t[pos] == ']' || !(t[pos] == '-' || (t[pos] >= '0' && t[pos] <= '9'))) goto abort;
    {
      float f;
      size_t l = codec_float_parse(t + pos, t + len, &f);
      if (!l) goto abort;
      if (leaf < 0) leaf = depth - 1;
      if (leaf != depth - 1) goto abort;
      if (store_push(P->d, f) < 0) return -1;
      count[depth - 1]++;
      pos += l;
    }
  after:
    while (pos < len && is_ws(t[pos])) pos++;
    if (pos >= len) goto abort;
    if (t[pos] == ',') {
      pos++;
      goto value;
    }
    if (t[pos] != ']') goto abort;
    {
      int lv = depth - 1;
      if (dims[lv] == 0) dims[lv] = count[lv];
      else if (dims[lv] != count[lv]) goto abort; /* ragged */
      pos++;
      depth--;
      if (depth == 0) break;
      count[depth - 1]++;
      goto after;
    }
  }
  *end = pos;
  a->first = start;
  a->n = P->d->store_len - start;
  a->ndim = leaf + 1;
  for (int k = 0; k < a->ndim; k++) a->dims[k] = dims[k];
  return 1;
abort:
  P->d->store_len = start;
  *stop = pos;
  return 0;
}

static void emit(pre *P, const char *s, size_t n) {
  memcpy(P->out + P->o, s, n);
  P->o += n;
}

static int add_array(pre *P, const jdoc_array *a, size_t in_start, size_t in_len) {
  jdoc *d = P->d;
  if (d->narrays == d->arrays_cap) {
    d->arrays_cap = d->arrays_cap ? d->arrays_cap * 2 : 16;
    d->arrays = mem_xrealloc(d->arrays, d->arrays_cap * sizeof *d->arrays);
  }
  size_t k = d->narrays++;
  d->arrays[k] = *a;
  d->arrays[k].text_at = in_start;
  d->arrays[k].text_len = in_len;
  char ph[40];
  int n = snprintf(ph, sizeof ph, "\"\\u0000A%zu\"", k);
  if (P->nspans == P->spans_cap) {
    P->spans_cap = P->spans_cap ? P->spans_cap * 2 : 16;
    P->spans = mem_xrealloc(P->spans, P->spans_cap * sizeof *P->spans);
  }
  P->spans[P->nspans++] = (span){in_start, in_len, P->o, (size_t)n};
  emit(P, ph, (size_t)n);
  return 0;
}

/* Maps an offset in the rewritten text back to the original. */
static size_t map_back(const pre *P, size_t out_pos) {
  long delta = 0;
  for (size_t k = 0; k < P->nspans; k++) {
    const span *s = &P->spans[k];
    if (out_pos < s->out_start) break;
    if (out_pos < s->out_start + s->out_len) return s->in_start;
    delta += (long)s->in_len - (long)s->out_len;
  }
  return (size_t)((long)out_pos + delta);
}

static int syntax_error(const pre *P, size_t at, const char *what, derr *e) {
  size_t line = 1, col = 1;
  for (size_t k = 0; k < at && k < P->len; k++) {
    if (P->t[k] == '\n') {
      line++;
      col = 1;
    } else {
      col++;
    }
  }
  return derr_set(e, E_BAD_JSON, "%s at line %zu, column %zu (byte %zu)", what, line, col, at);
}

int jdoc_parse(jdoc *d, bufpool *pool, const char *text, size_t len, derr *e) {
  memset(d, 0, sizeof *d);
  d->pool = pool;
  d->text = text;
  d->text_len = len;
  pre P = {.t = text, .len = len, .d = d};
  P.out = mem_xmalloc(len + 1);
  size_t i = 0;
  int rc = 0;
  /* jansson skips a NUL byte after a number ("[1\0,2]" reads as [1,2]) */
  const char *nul = memchr(text, 0, len);
  if (nul) {
    rc = syntax_error(&P, (size_t)(nul - text), "a NUL byte is not JSON", e);
    goto out;
  }
  while (i < len) {
    char c = text[i];
    if (c == '"') {
      size_t j = i + 1;
      while (j < len && text[j] != '"') {
        if (text[j] == '\\') {
          if (j + 5 < len && text[j + 1] == 'u' && memcmp(text + j + 2, "0000", 4) == 0) {
            rc = syntax_error(&P, j, "strings may not contain \\u0000", e);
            goto out;
          }
          j += 2;
        } else {
          j++;
        }
      }
      if (j < len) j++; /* the closing quote */
      if (j > len) j = len;
      emit(&P, text + i, j - i);
      i = j;
    } else if (c == '[') {
      size_t end = 0, stop = 0;
      jdoc_array a;
      int r = numeric(&P, i, &end, &stop, &a);
      if (r < 0) {
        rc = derr_set(e, E_QUOTA, "out of memory decoding the body");
        goto out;
      }
      if (r == 1 && a.n >= JDOC_MIN_ARRAY) {
        add_array(&P, &a, i, end - i);
        i = end;
      } else {
        if (r == 1) d->store_len = a.first; /* short: leave it to jansson */
        size_t upto = r == 1 ? end : stop;
        if (upto == i) upto = i + 1;
        emit(&P, text + i, upto - i);
        i = upto;
      }
    } else {
      P.out[P.o++] = c;
      i++;
    }
  }
  {
    json_error_t je;
    d->root = json_loadb(P.out, P.o, JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!d->root) {
      size_t at = je.position > 0 ? map_back(&P, (size_t)je.position - 1) : 0;
      rc = syntax_error(&P, at, je.text, e);
    }
  }
out:
  free(P.out);
  free(P.spans);
  if (rc) {
    jdoc_free(d);
    d->pool = pool;
  }
  return rc;
}

void jdoc_free(jdoc *d) {
  if (!d) return;
  json_decref(d->root);
  bufpool_put(d->pool, d->store, d->store_cap * sizeof(float));
  free(d->arrays);
  memset(d, 0, sizeof *d);
}

static const jdoc_array *placeholder_of(const jdoc *d, json_t *v) {
  if (!json_is_string(v) || json_string_length(v) < 3) return NULL;
  const char *s = json_string_value(v);
  if (s[0] != 0 || s[1] != 'A') return NULL;
  size_t k = strtoul(s + 2, NULL, 10);
  return k < d->narrays ? &d->arrays[k] : NULL;
}

/* Flattens a jansson array of numbers (nested) into out, recording its shape.
 * Returns the count, or -1 if it is not a rectangular numeric array. */
static long flatten(json_t *v, float *out, size_t cap, int depth, size_t *dims, int *ndim) {
  if (depth >= JDOC_MAXDIM) return -1;
  size_t n = json_array_size(v);
  if (dims[depth] == 0) dims[depth] = n;
  else if (dims[depth] != n) return -1;
  if (n == 0) {
    if (*ndim < 0) *ndim = depth + 1;
    return *ndim == depth + 1 ? 0 : -1;
  }
  long total = 0;
  for (size_t k = 0; k < n; k++) {
    json_t *x = json_array_get(v, k);
    if (json_is_array(x)) {
      if (*ndim >= 0 && *ndim <= depth + 1) return -1;
      long r = flatten(x, out ? out + total : NULL, cap > (size_t)total ? cap - (size_t)total : 0,
                       depth + 1, dims, ndim);
      if (r < 0) return -1;
      total += r;
    } else if (json_is_number(x)) {
      if (*ndim < 0) *ndim = depth + 1;
      if (*ndim != depth + 1) return -1;
      if (out && (size_t)total < cap) out[total] = (float)json_number_value(x);
      total++;
    } else {
      return -1;
    }
  }
  return total;
}

/* One id at s (digits only, no sign, fraction or exponent); bytes consumed, or 0. */
static size_t parse_u64(const char *s, const char *end, uint64_t *out) {
  const char *p = s;
  uint64_t x = 0;
  while (p < end && *p >= '0' && *p <= '9') {
    unsigned dg = (unsigned)(*p - '0');
    if (x > (UINT64_MAX - dg) / 10) return 0;
    x = x * 10 + dg;
    p++;
  }
  if (p == s || (p - s > 1 && *s == '0')) return 0;
  if (p < end && (*p == '.' || *p == 'e' || *p == 'E')) return 0;
  *out = x;
  return (size_t)(p - s);
}

static int bad_id(uint64_t x, uint64_t limit, size_t i, const char *what, derr *e) {
  return derr_set(e, E_BAD_VALUE, "%s[%zu]: row %llu is out of range (the tensor has %llu rows)", what, i,
                  (unsigned long long)x, (unsigned long long)limit);
}

/* A placeholder's ids, read again from the text between its brackets. */
static int u64s_text(const jdoc *d, const jdoc_array *a, uint64_t *out, uint64_t limit, const char *what,
                     derr *e) {
  if (a->ndim != 1 || !d->text || a->text_at + a->text_len > d->text_len)
    return derr_set(e, E_BAD_REQUEST, "%s: expected a flat array of row ids", what);
  const char *p = d->text + a->text_at + 1, *end = d->text + a->text_at + a->text_len - 1;
  for (size_t i = 0; i < a->n; i++) {
    while (p < end && (is_ws(*p) || *p == ',')) p++;
    uint64_t x;
    size_t l = parse_u64(p, end, &x);
    if (!l) return derr_set(e, E_BAD_REQUEST, "%s[%zu]: expected a non-negative integer", what, i);
    if (x >= limit) return bad_id(x, limit, i, what, e);
    out[i] = x;
    p += l;
  }
  return 0;
}

int jdoc_u64s(const jdoc *d, json_t *v, uint64_t *out, size_t n, uint64_t limit, const char *what, derr *e) {
  const jdoc_array *a = placeholder_of(d, v);
  if (a) {
    if (a->n != n) return derr_set(e, E_BAD_LENGTH, "%s: expected %zu row ids, got %zu", what, n, a->n);
    return u64s_text(d, a, out, limit, what, e);
  }
  if (!json_is_array(v)) return derr_set(e, E_BAD_REQUEST, "%s: expected an array of row ids", what);
  if (json_array_size(v) != n)
    return derr_set(e, E_BAD_LENGTH, "%s: expected %zu row ids, got %zu", what, n, json_array_size(v));
  for (size_t i = 0; i < n; i++) {
    json_t *x = json_array_get(v, i);
    if (!json_is_integer(x) || json_integer_value(x) < 0)
      return derr_set(e, E_BAD_REQUEST, "%s[%zu]: expected a non-negative integer", what, i);
    uint64_t u = (uint64_t)json_integer_value(x);
    if (u >= limit) return bad_id(u, limit, i, what, e);
    out[i] = u;
  }
  return 0;
}

long jdoc_count(const jdoc *d, json_t *v) {
  const jdoc_array *a = placeholder_of(d, v);
  if (a) return (long)a->n;
  if (!json_is_array(v)) return -1;
  size_t dims[JDOC_MAXDIM] = {0};
  int ndim = -1;
  return flatten(v, NULL, 0, 0, dims, &ndim);
}

static int shape_ok(const size_t *dims, int ndim, const size_t *shape, int sdim) {
  if (!shape || ndim == 1) return 1;
  if (ndim != sdim) return 0;
  for (int k = 0; k < ndim; k++)
    if (dims[k] != shape[k]) return 0;
  return 1;
}

int jdoc_floats(const jdoc *d, json_t *v, float *out, size_t n, const size_t *shape, int ndim,
                const char *what, derr *e) {
  const jdoc_array *a = placeholder_of(d, v);
  if (a) {
    if (a->n != n)
      return derr_set(e, E_BAD_LENGTH, "%s: expected %zu values, got %zu", what, n, a->n);
    if (!shape_ok(a->dims, a->ndim, shape, ndim))
      return derr_set(e, E_BAD_LENGTH, "%s: nested shape does not match the tensor's", what);
    memcpy(out, d->store + a->first, n * sizeof(float));
    return 0;
  }
  if (!json_is_array(v))
    return derr_set(e, E_BAD_REQUEST, "%s: expected an array of numbers", what);
  size_t dims[JDOC_MAXDIM] = {0};
  int nd = -1;
  long got = flatten(v, NULL, 0, 0, dims, &nd);
  if (got < 0)
    return derr_set(e, E_BAD_REQUEST, "%s: expected an array of numbers (flat or nested, rectangular)",
                    what);
  if ((size_t)got != n)
    return derr_set(e, E_BAD_LENGTH, "%s: expected %zu values, got %ld", what, n, got);
  if (got > 0 && !shape_ok(dims, nd, shape, ndim))
    return derr_set(e, E_BAD_LENGTH, "%s: nested shape does not match the tensor's", what);
  size_t dims2[JDOC_MAXDIM] = {0};
  nd = -1;
  flatten(v, out, n, 0, dims2, &nd);
  return 0;
}

/* ---- writing -------------------------------------------------------------- */

void jbuf_init(jbuf *b, bufpool *pool, size_t hint) {
  memset(b, 0, sizeof *b);
  b->pool = pool;
  if (hint < 256) hint = 256;
  b->p = bufpool_get(pool, hint, &b->cap);
  if (!b->p) {
    b->failed = true;
    b->cap = 0;
  }
}

void jbuf_release(jbuf *b) {
  if (!b) return;
  bufpool_put(b->pool, b->p, b->cap);
  b->p = NULL;
  b->len = b->cap = 0;
}

static int reserve(jbuf *b, size_t more) {
  if (b->failed) return -E_QUOTA;
  if (b->len + more <= b->cap) return 0;
  size_t want = b->cap * 2;
  if (want < b->len + more) want = b->len + more;
  size_t ncap;
  char *n = bufpool_get(b->pool, want, &ncap);
  if (!n) {
    b->failed = true;
    return -E_QUOTA;
  }
  memcpy(n, b->p, b->len);
  bufpool_put(b->pool, b->p, b->cap);
  b->p = n;
  b->cap = ncap;
  return 0;
}

void jbuf_put(jbuf *b, const char *s, size_t n) {
  if (reserve(b, n) < 0) return;
  memcpy(b->p + b->len, s, n);
  b->len += n;
}

void jbuf_puts(jbuf *b, const char *s) { jbuf_put(b, s, strlen(s)); }

void jbuf_printf(jbuf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char tmp[512];
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n < sizeof tmp) {
    jbuf_put(b, tmp, (size_t)n);
    return;
  }
  if (reserve(b, (size_t)n + 1) < 0) return;
  va_start(ap, fmt);
  vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

void jbuf_string(jbuf *b, const char *s) {
  json_t *str = json_string(s);
  if (!str) { /* not UTF-8: never happens with validated names */
    jbuf_puts(b, "\"\"");
    return;
  }
  size_t n = json_dumpb(str, NULL, 0, JSON_ENCODE_ANY);
  if (reserve(b, n) == 0) b->len += json_dumpb(str, b->p + b->len, n, JSON_ENCODE_ANY);
  json_decref(str);
}

void jbuf_float_rows(jbuf *b, const float *v, size_t n, size_t dim) {
  jbuf_put(b, "[", 1);
  for (size_t i = 0; i < n / dim; i++) {
    if (i) jbuf_put(b, ",", 1);
    jbuf_floats(b, v + i * dim, dim);
  }
  jbuf_put(b, "]", 1);
}

void jbuf_u64s(jbuf *b, const uint64_t *v, size_t n) {
  jbuf_put(b, "[", 1);
  char tmp[24];
  for (size_t i = 0; i < n; i++) {
    char *p = tmp + sizeof tmp;
    uint64_t x = v[i];
    do {
      *--p = (char)('0' + x % 10);
      x /= 10;
    } while (x);
    if (i) jbuf_put(b, ",", 1);
    jbuf_put(b, p, (size_t)(tmp + sizeof tmp - p));
  }
  jbuf_put(b, "]", 1);
}

void jbuf_floats(jbuf *b, const float *v, size_t n) {
  if (reserve(b, n * (CODEC_FLOAT_MAX + 1) + 2) < 0) return;
  char *p = b->p + b->len;
  *p++ = '[';
  for (size_t i = 0; i < n; i++) {
    if (i) *p++ = ',';
    p += codec_float_print(v[i], p);
  }
  *p++ = ']';
  b->len = (size_t)(p - b->p);
}

char *jbuf_take(jbuf *b, size_t *len, size_t *cap) {
  char *p = b->p;
  *len = b->len;
  *cap = b->cap;
  b->p = NULL;
  b->len = b->cap = 0;
  return p;
}

json_t *jbuf_placeholder(size_t k) {
  char s[32];
  int n = snprintf(s, sizeof s, "%cA%zu", 0, k);
  return json_stringn(s, (size_t)n);
}

json_t *jbuf_real(double d) {
  if (!isfinite(d)) return json_null();
  char s[CODEC_FLOAT_MAX + 16];
  s[0] = 0;
  s[1] = 'R';
  size_t n = codec_double_print(d, s + 2);
  return json_stringn(s, n + 2);
}

void jbuf_json_splice(jbuf *b, json_t *root, const jbuf_array *arrays, size_t narrays) {
  size_t n = json_dumpb(root, NULL, 0, JSON_COMPACT | JSON_ENCODE_ANY);
  char *tmp = mem_xmalloc(n + 1);
  n = json_dumpb(root, tmp, n, JSON_COMPACT | JSON_ENCODE_ANY);
  static const char mark[] = "\"\\u0000";
  size_t i = 0;
  while (i < n) {
    char *hit = memmem(tmp + i, n - i, mark, sizeof mark - 1);
    if (!hit) {
      jbuf_put(b, tmp + i, n - i);
      break;
    }
    jbuf_put(b, tmp + i, (size_t)(hit - (tmp + i)));
    char *q = hit + sizeof mark - 1;
    if (*q == 'A') {
      size_t k = strtoul(q + 1, &q, 10);
      if (k < narrays && arrays[k].ids) jbuf_u64s(b, arrays[k].ids, arrays[k].n);
      else if (k < narrays && arrays[k].dim) jbuf_float_rows(b, arrays[k].v, arrays[k].n, arrays[k].dim);
      else if (k < narrays) jbuf_floats(b, arrays[k].v, arrays[k].n);
      else jbuf_puts(b, "null");
    } else { /* 'R': the number's text follows */
      char *end = strchr(q, '"');
      if (!end) end = tmp + n;
      jbuf_put(b, q + 1, (size_t)(end - q - 1));
      q = end;
    }
    if (q < tmp + n && *q == '"') q++;
    i = (size_t)(q - tmp);
  }
  free(tmp);
}
