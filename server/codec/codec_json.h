/* codec_json: JSON documents whose big number arrays skip jansson.
 *
 * Reading: a linear pre-pass finds every array of 16 or more numbers (flat
 * or nested to a rectangular shape), parses its numbers straight into one
 * float store with codec_float, and hands jansson the rest of the document
 * with each such array replaced by a placeholder string.  So a 10^7-float
 * gradient costs no heap object per number, while everything else (names,
 * hyperparameters, small arrays) is ordinary jansson.  Syntax errors are
 * reported with the byte offset, line and column of the original text.
 *
 * Writing: jbuf is a growable text buffer (pool-backed) with a fast float
 * array writer; jbuf_json_splice dumps a jansson tree whose placeholder
 * strings (made by jbuf_placeholder) are replaced by float arrays.
 *
 * A jdoc belongs to one request (one thread at a time).
 */
#ifndef DESCENT_CODEC_JSON_H
#define DESCENT_CODEC_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bufpool.h"
#include "errors.h"

#define JDOC_MAXDIM 8
#define JDOC_MIN_ARRAY 16 /* arrays shorter than this stay jansson arrays */

typedef struct jdoc_array {
  size_t first; /* index of its first value in the store */
  size_t n;     /* number of values */
  int ndim;
  size_t dims[JDOC_MAXDIM];
  size_t text_at, text_len; /* where it was in the parsed text (jdoc_u64s) */
} jdoc_array;

typedef struct jdoc {
  json_t *root; /* owned */
  bufpool *pool;
  const char *text; /* the parsed text (borrowed: must outlive d for jdoc_u64s) */
  size_t text_len;
  float *store; /* every extracted value, back to back */
  size_t store_len, store_cap;
  jdoc_array *arrays;
  size_t narrays, arrays_cap;
} jdoc;

/* Parses text[0..len).  On success d->root is the document (any JSON type).
 * Returns 0, or -E_BAD_JSON with where it went wrong (-E_QUOTA if the float
 * store cannot grow); d is then empty but must still be released with
 * jdoc_free, which gives back everything d owns. */
int jdoc_parse(jdoc *d, bufpool *pool, const char *text, size_t len, derr *e);
void jdoc_free(jdoc *d);

/* Reads a numeric array (placeholder, or a jansson array of numbers, flat or
 * nested) into out[0..n).  Its total count must be n and, when shape is not
 * NULL, its nesting must be either flat or exactly shape[0..ndim).  `what`
 * names the value for messages ("grads.W").  Returns 0 or -E_BAD_LENGTH /
 * -E_BAD_REQUEST.  Values are not checked for finiteness here. */
int jdoc_floats(const jdoc *d, json_t *v, float *out, size_t n, const size_t *shape, int ndim,
                const char *what, derr *e);

/* Reads a flat array of non-negative integers (row ids) exactly into
 * out[0..n): the pre-pass's float store cannot hold ids above 2^24, so long
 * arrays are read again from the original text (which must still be alive).
 * Every id must be < limit.  Returns 0 or -E_BAD_LENGTH (count),
 * -E_BAD_REQUEST (not integers), -E_BAD_VALUE (an id >= limit), naming
 * what[index]. */
int jdoc_u64s(const jdoc *d, json_t *v, uint64_t *out, size_t n, uint64_t limit, const char *what, derr *e);

/* The number of values in a numeric array v, or -1 if v is not one. */
long jdoc_count(const jdoc *d, json_t *v);

/* ---- writing ---- */
typedef struct jbuf {
  char *p;
  size_t len, cap;
  bufpool *pool;
  bool failed; /* an allocation failed: contents are incomplete */
} jbuf;

void jbuf_init(jbuf *b, bufpool *pool, size_t hint);
void jbuf_release(jbuf *b);                 /* frees the buffer */
void jbuf_put(jbuf *b, const char *s, size_t n);
void jbuf_puts(jbuf *b, const char *s);
void jbuf_printf(jbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void jbuf_string(jbuf *b, const char *s);   /* a JSON string literal, escaped */
void jbuf_floats(jbuf *b, const float *v, size_t n); /* [v0,v1,...] shortest round-trip */
void jbuf_u64s(jbuf *b, const uint64_t *v, size_t n); /* [3,17,42] */
void jbuf_float_rows(jbuf *b, const float *v, size_t n, size_t dim); /* [[v0..v(dim-1)],...]: n/dim rows */
/* Takes the text out of b (caller owns it, with its capacity for bufpool_put). */
char *jbuf_take(jbuf *b, size_t *len, size_t *cap);

/* A placeholder string for array k of `arrays` in jbuf_json_splice. */
json_t *jbuf_placeholder(size_t k);

/* A number that jbuf_json_splice writes in its shortest round-trip form
 * (jansson itself prints 17 digits: 0.1 as 0.10000000000000001).
 * Non-finite values become null. */
json_t *jbuf_real(double d);

typedef struct jbuf_array {
  const float *v;
  size_t n;
  const uint64_t *ids; /* when not NULL, n integers instead of v */
  size_t dim;          /* when not 0, v as nested rows of dim floats */
} jbuf_array;

/* Dumps root compactly into b, each placeholder k replaced by arrays[k] and
 * each jbuf_real by its number. */
void jbuf_json_splice(jbuf *b, json_t *root, const jbuf_array *arrays, size_t narrays);

#endif
