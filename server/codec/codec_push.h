/* codec_push: push bodies (POST .../step) decoded into a `push`, and the
 * binary step reply.
 *
 * JSON: {"worker", "step", "grads", "loss", "seq", "grad_norm"}: grads by
 * tensor name (each flat or nested to its shape; a sparse tensor's as
 * {"rows": [...], "values": [[D floats], ...] or k*D flat}) or one flat
 * array of every tensor in creation order (dense-only instances).
 * Binary (proto/binary.md): tensors in creation order, a dense one as its
 * values, a sparse one as u64 k, k x u64 row, k*D values, little-endian;
 * float32 bodies are used in place (views, no per-row allocation).  Dense
 * values are not checked for finiteness here (the instance does that, and
 * names the tensor).  No locks, no I/O; any thread.
 */
#ifndef DESCENT_CODEC_PUSH_H
#define DESCENT_CODEC_PUSH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bufpool.h"
#include "codec_json.h"
#include "errors.h"
#include "instance.h"

/* What a decoded push holds besides the body: the dense gradient (n floats;
 * may be the body itself, then grad_in_body) and one pooled buffer for the
 * sparse part (p->rows: the push_rows array, and the row ids and values
 * that could not be used in place).  Each non-NULL buffer goes back to the
 * pool with its cap (codec_push_bufs_release). */
typedef struct codec_push_bufs {
  float *grad;
  size_t grad_cap;
  bool grad_in_body; /* grad is the body buffer given to codec_push_binary */
  void *rows;
  size_t rows_cap;
} codec_push_bufs;

void codec_push_bufs_release(codec_push_bufs *b, bufpool *pool);

/* The number of sparse tensors in c. */
size_t codec_push_nsparse(const instance_layout *c);

/* Decodes d (a parsed body) for an instance laid out as c.  Fields the body
 * gives override those already in *p and *seq (the query string's).  On
 * success returns 0: out->grad (pooled, c->n floats) and, when c has sparse
 * tensors, out->rows with p->rows pointing into it; p->worker, if set by the
 * body, is borrowed from d.  On failure returns -E_BAD_REQUEST, -E_BAD_NAME,
 * -E_BAD_LENGTH, -E_BAD_VALUE (a row id >= V), -E_NOT_FINITE (a row value),
 * -E_UNKNOWN_TENSOR or -E_QUOTA with e saying which field is wrong; then
 * *p, *seq and *out are unchanged and nothing is left allocated. */
int codec_push_json(const jdoc *d, const instance_layout *c, bufpool *pool, push *p, int64_t *seq,
                    codec_push_bufs *out, derr *e);

/* Decodes a binary push body[0..len) in dtype (enum wire_dtype) for layout c
 * into p->grad and p->rows.  Works on a plain buffer (the request's body or
 * a log entry being replayed): float32 values are used in place (the body
 * must be 4-aligned and writable: a step with emit writes the new values
 * back into it), row ids in place when 8-aligned, and everything else
 * (half-precision values, dense parts split by sparse sections, unaligned
 * ids) goes into pooled buffers.  pool may be NULL (plain malloc).  On
 * failure returns -E_BAD_LENGTH (the body does not match the layout: k too
 * large for the body or above SPEC_MAX_ROWS, missing or trailing bytes) or
 * -E_BAD_VALUE (a row id >= V), with the byte offset in e, or -E_QUOTA;
 * then *p and *out are unchanged and nothing is left allocated. */
int codec_push_binary(const instance_layout *c, bufpool *pool, int dtype, char *body, size_t len, push *p,
                      codec_push_bufs *out, derr *e);

/* The binary step reply (proto/binary.md: the push layout, values being the
 * parameters after the step): size in dtype of the reply for grad (the n
 * new dense parameters) and rows (the pushed rows, vals holding their new
 * values), and writing it into out (that many bytes, any alignment). */
size_t codec_push_reply_size(const instance_layout *c, const push_rows *rows, int dtype);
void codec_push_reply_write(const instance_layout *c, const float *grad, const push_rows *rows, int dtype, char *out);

#endif
