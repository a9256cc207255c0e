/* optim_sparse: torch.optim 1.13's update rules for sparse gradients
 * (torch.sparse_coo rows of an [V, D] table): sgd and adagrad as torch.optim
 * applies them to a sparse gradient, and sparse_adam as torch.optim.SparseAdam
 * (lazy moments, torch's bias correction); torch's refusals for sparse
 * gradients; the coalescing torch does first (sum repeated rows).
 *
 * A held row is one block of floats: D parameters, then D floats for each
 * buffer of optim_buffers(alg, h), in enum optim_buf order (so a row's whole
 * state is one contiguous run).  The caller (server/state/rows.c) owns the
 * blocks, allocates new rows at their initial values and finds each row's
 * block; this module only updates blocks.
 *
 * Never does I/O, JSON or allocation; every function writes only the arrays
 * it is given.  Any thread; the caller serializes steps on the same rows.
 */
#ifndef DESCENT_OPTIM_SPARSE_H
#define DESCENT_OPTIM_SPARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "errors.h"
#include "optim.h"

/* Floats in one row's block: (1 + number of buffers) * D. */
size_t optim_sparse_row_floats(optim_alg alg, const optim_hyper *h, size_t D);

/* Where buffer `buf` starts inside a row block, in floats (-1 if alg does
 * not use it). */
long optim_sparse_buf_offset(optim_alg alg, const optim_hyper *h, size_t D, int buf);

/* Whether alg with h accepts sparse gradients as torch does (sgd, adagrad,
 * sparse_adam with the options torch allows).  0, or -E_BAD_VALUE (422) with
 * a message quoting torch's refusal, e.g. "algorithm: adam with a sparse
 * tensor (torch: Adam does not support sparse gradients, please consider
 * SparseAdam instead)".  Refused: adam, adamw, rmsprop, random_search; sgd
 * and adagrad with weight_decay (torch raises at the step); sgd with momentum
 * (torch accepts it, but its buffer is an ever-growing uncoalesced sparse
 * tensor re-applied to every row ever pushed at every step: not per-row, see
 * docs/optimizers.md).  Call after optim_hyper_check; the caller may prefix
 * the tensor's name (derr_prefix). */
int optim_sparse_check(optim_alg alg, const optim_hyper *h, derr *e);

/* Whether server-side clipping (clip_grad_norm = max_norm, <= 0 is off)
 * may be used with sparse tensors: 0 when off, else -E_BAD_VALUE.  torch
 * 1.13's clip_grad_norm_ counts a sparse gradient in the norm (of its
 * coalesced values) but does not scale it (detach().mul_() on a sparse
 * tensor does not write through), so neither clipping as torch does nor
 * as one would expect would match torch; descent refuses it. */
int optim_sparse_check_clip(double max_norm, derr *e);

/* Whether alg accepts a dense tensor: 0, or -E_BAD_VALUE for sparse_adam
 * (torch: "SparseAdam does not support dense gradients"). */
int optim_sparse_check_dense(optim_alg alg, derr *e);

/* Whether alg sums repeated rows before updating (torch coalesces the sparse
 * gradient first: adagrad, sparse_adam) rather than applying entries one at a
 * time in the order given (sgd adds an uncoalesced gradient). */
bool optim_sparse_coalesces(optim_alg alg);

/* torch's coalesce: the k (row, D values) entries as m <= k distinct rows in
 * ascending order, values of repeated rows summed in torch 1.13's order, so
 * the sums are bit-identical to torch's for any number of copies: torch
 * sorts (id, position) pairs with libstdc++'s std::sort (not stable) and
 * sums each run in that order; for k <= 16, or no row with 3+ copies, that
 * is the order given.  urows (k) and ug (k*D) receive the result
 * and must not overlap rows or g; order (k uint32, k < 2^32) is scratch,
 * and so are urows and ug until the result is written.  A stable LSD radix
 * sort (11-bit digits) over only the digits in which the ids differ, the
 * keys carried along (ug's room is the second buffer when D >= 3); an
 * insertion sort for k <= 32; a copy when the rows are already distinct and
 * ascending; then, only if some row has three or more copies, std::sort's
 * exact steps on (urows, order) to get torch's order (O(k log k)).
 * Returns m.  No allocation.  maximize's sign is applied later, to the sums (exact). */
size_t optim_sparse_coalesce(const uint64_t *rows, const float *g, size_t k, size_t D, uint64_t *urows,
                             float *ug, uint32_t *order);

/* One sparse step (plan from optim_plan_init with the instance's step, lr,
 * and gscale; `fresh` is not used for rows).  blk[i] is the block of the row
 * of entry i; g holds k*D gradient values (coalesced first by the caller when
 * optim_sparse_coalesces(alg)); blk[i] may repeat only when not coalesced,
 * and then entries are applied in order.  When out is not NULL, out[i*D..]
 * receives entry i's parameters after the whole step (out may be g). */
void optim_sparse_apply(const optim_plan *pl, float *const *blk, const float *g, size_t k, size_t D,
                        float *out);

#endif
