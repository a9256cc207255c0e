/* codec_push: the JSON body of a push (POST .../step) decoded into a `push`.
 *
 * {"worker", "step", "grads", "loss", "seq", "grad_norm"}: grads by tensor
 * name (each flat or nested to its shape) or one flat array of every tensor
 * in creation order.  Values are not checked for finiteness here (the
 * instance does that, and names the tensor).  No locks, no I/O; any thread.
 */
#ifndef DESCENT_CODEC_PUSH_H
#define DESCENT_CODEC_PUSH_H

#include <stddef.h>
#include <stdint.h>

#include "bufpool.h"
#include "codec_json.h"
#include "errors.h"
#include "instance.h"

/* Decodes d (a parsed body) for an instance configured as c.  Fields the
 * body gives override those already in *p and *seq (the query string's).
 * On success returns 0 and *grad is a buffer from `pool` (*grad_cap bytes,
 * the caller puts it back) holding c->n floats; p->worker, if set by the
 * body, is borrowed from d.  On failure returns -E_BAD_REQUEST,
 * -E_BAD_NAME, -E_BAD_LENGTH, -E_UNKNOWN_TENSOR or -E_QUOTA with e saying
 * which field is wrong; then *p, *seq, *grad and *grad_cap are unchanged
 * and nothing is left allocated. */
int codec_push_json(const jdoc *d, const instance_layout *c, bufpool *pool, push *p, int64_t *seq,
                    float **grad, size_t *grad_cap, derr *e);

#endif
