/* rows: the held rows of one sparse tensor ([V, D], V up to 2^62): an
 * open-addressing hash from row id to its block, and the blocks themselves
 * in chunks that are allocated once and never move (a block pointer stays
 * valid for the table's life).  A block is D parameters then D floats for
 * each buffer of the algorithm (optim_sparse.h's layout, fixed at creation).
 * Rows are never freed except with the table.
 *
 * A row never touched has the value of its seeded init (tensor_init): local
 * row r, column c of a tensor whose first logical row is R takes the
 * generator's value at (seed, stream R + r, index c) (proto/init.md), so it
 * depends on neither D nor the order rows are touched in.
 *
 * Growth is split from insertion so a push can be all or nothing:
 * rows_reserve makes room (hash and blocks) for `more` new rows and may fail;
 * rows_get after a successful reserve never fails and never allocates.
 * Lookups (rows_find, rows_read, rows_count_new) never allocate.
 *
 * Memory beyond the blocks themselves (what rows_bytes counts): the hash,
 * 16 bytes a slot at a load kept between 3/8 and 3/4 (21 to 43 bytes a row),
 * and the unused part of the last chunk (chunks double from 64 rows to
 * about 4 MiB, so at most 4 MiB, or half the blocks of a small table).  A
 * table of 10^6 rows of D = 16 under adagrad: 128 MB of blocks, 32 MiB of
 * hash (1.25x); under sparse_adam 192 MB and the same hash (1.17x).
 *
 * No locking: the state layer calls every function under the instance lock
 * (or before the instance is published).  No I/O.
 */
#ifndef DESCENT_ROWS_H
#define DESCENT_ROWS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "instance.h"
#include "optim.h"

typedef struct rows_slot {
  uint64_t key; /* row id + 1; 0: empty */
  float *blk;
} rows_slot;

typedef struct rows_chunk {
  float *mem;
  size_t nrows; /* blocks it holds */
} rows_chunk;

typedef struct rows {
  size_t D, blk;    /* floats per row and per block */
  uint64_t V, origin;
  tensor_init init;
  unsigned bufs;    /* the buffers in a block (mask of 1u << enum optim_buf) */
  long off[OPTIM_NBUF]; /* where each starts in a block, -1: absent */
  float initial[OPTIM_NBUF];
  rows_slot *slots; /* cap slots, a power of two */
  size_t cap, count;
  rows_chunk *chunks;
  size_t nchunks, chunks_cap;
  size_t cur, used; /* the chunk blocks are taken from, and how many of it are */
  size_t spare;     /* blocks free in chunks cur.. (reserved room) */
} rows;

/* An empty table for sparse tensor tn of an instance running alg with h. */
void rows_init(rows *t, const tensor *tn, optim_alg alg, const optim_hyper *h);
void rows_free(rows *t);

/* The block of row id, or NULL if it is not held. */
float *rows_find(const rows *t, uint64_t id);

/* How many of ids[0..k) are not held (ids distinct). */
size_t rows_count_new(const rows *t, const uint64_t *ids, size_t k);

/* Room for `more` new rows: 0, or -E_QUOTA (the system refused; nothing a
 * caller can see changed). */
int rows_reserve(rows *t, size_t more);

/* The block of row id, created at its initial values if not held (then
 * *created is set when created is not NULL).  Needs room (rows_reserve). */
float *rows_get(rows *t, uint64_t id, bool *created);

/* The same for a row known not to be held (no lookup first). */
float *rows_add(rows *t, uint64_t id);

/* The D parameters a never-touched row id has. */
void rows_init_params(const rows *t, uint64_t id, float *out);

/* The D parameters of row id: held, or its init.  No allocation. */
void rows_read(const rows *t, uint64_t id, float *out);

/* The held rows in ascending id order: ids[m] and blks[m] (caller's arrays of
 * at least t->count entries; tmp of 2 * t->count, for the sort).  Returns
 * m = t->count. */
size_t rows_sorted(const rows *t, uint64_t *ids, float **blks, rows_slot *tmp);

/* Floats held in blocks (what --max-params counts), and bytes of memory
 * taken (blocks, chunk slack and the hash). */
uint64_t rows_floats(const rows *t);
size_t rows_bytes(const rows *t);

#endif
