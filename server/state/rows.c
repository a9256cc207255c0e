/* rows: one sparse tensor's held rows (rows.h): a linear-probing hash of
 * (id + 1, block pointer) with a splitmix finaliser over the id, and blocks
 * bump-allocated from chunks that double from 64 rows up to about 4 MiB and
 * are never moved or freed before the table.  Owns the hash and the chunks.
 * Never allocates in rows_get, rows_find, rows_read or rows_count_new (only
 * rows_reserve and rows_sorted's caller do).  Called under the instance lock
 * (HTTP threads, the loop thread when a round closes) or before publication.
 */
#include "rows.h"

#include <stdlib.h>
#include <string.h>

#include "errors.h"
#include "mem.h"
#include "optim_sparse.h"
#include "rng.h"

#define FIRST_CHUNK_ROWS 64
#define MAX_CHUNK_BYTES ((size_t)4 << 20)
#define MIN_CAP 16

static uint64_t hash_id(uint64_t x) {
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

void rows_init(rows *t, const tensor *tn, optim_alg alg, const optim_hyper *h) {
  memset(t, 0, sizeof *t);
  t->D = tn->dim;
  t->V = tn->vrows;
  t->origin = tn->origin;
  t->init = tn->init;
  t->blk = optim_sparse_row_floats(alg, h, t->D);
  t->bufs = optim_buffers(alg, h);
  for (int b = 0; b < OPTIM_NBUF; b++) {
    t->off[b] = optim_sparse_buf_offset(alg, h, t->D, b);
    t->initial[b] = t->off[b] >= 0 ? optim_buf_initial(alg, h, b) : 0;
  }
}

void rows_free(rows *t) {
  if (!t) return;
  for (size_t i = 0; i < t->nchunks; i++) mem_free_floats(t->chunks[i].mem, t->chunks[i].nrows * t->blk);
  free(t->chunks);
  if (t->slots) mem_free_big(t->slots, t->cap * sizeof *t->slots);
  memset(t, 0, sizeof *t);
}

/* ---- the hash ------------------------------------------------------------------ */

float *rows_find(const rows *t, uint64_t id) {
  if (!t->count) return NULL;
  size_t mask = t->cap - 1, i = (size_t)hash_id(id) & mask;
  uint64_t key = id + 1;
  for (;; i = (i + 1) & mask) {
    uint64_t k = t->slots[i].key;
    if (k == key) return t->slots[i].blk;
    if (!k) return NULL;
  }
}

size_t rows_count_new(const rows *t, const uint64_t *ids, size_t k) {
  size_t n = 0;
  for (size_t i = 0; i < k; i++) n += rows_find(t, ids[i]) == NULL;
  return n;
}

/* Puts (key, blk) in slots (a free place exists; key absent). */
static void put_slot(rows_slot *slots, size_t cap, uint64_t key, float *blk) {
  size_t mask = cap - 1, i = (size_t)hash_id(key - 1) & mask;
  while (slots[i].key) i = (i + 1) & mask;
  slots[i].key = key;
  slots[i].blk = blk;
}

/* The hash at a load of at most 3/4 with `want` entries. */
static int grow_hash(rows *t, size_t want) {
  size_t cap = t->cap ? t->cap : MIN_CAP;
  while (want > cap / 4 * 3) cap *= 2;
  if (cap == t->cap) return 0;
  rows_slot *s = mem_alloc_big(cap * sizeof *s); /* zeroed: every key 0 */
  if (!s) return -E_QUOTA;
  for (size_t i = 0; i < t->cap; i++)
    if (t->slots[i].key) put_slot(s, cap, t->slots[i].key, t->slots[i].blk);
  if (t->slots) mem_free_big(t->slots, t->cap * sizeof *t->slots);
  t->slots = s;
  t->cap = cap;
  return 0;
}

/* ---- blocks ---------------------------------------------------------------------- */

static size_t next_chunk_rows(const rows *t) {
  size_t max = MAX_CHUNK_BYTES / (t->blk * sizeof(float));
  if (max < 1) max = 1;
  size_t n = t->nchunks ? t->chunks[t->nchunks - 1].nrows * 2 : FIRST_CHUNK_ROWS;
  return n < max ? n : max;
}

static int add_chunk(rows *t) {
  size_t n = next_chunk_rows(t);
  float *m = mem_alloc_floats(n * t->blk);
  if (!m) return -E_QUOTA;
  if (t->nchunks == t->chunks_cap) {
    t->chunks_cap = t->chunks_cap ? t->chunks_cap * 2 : 8;
    t->chunks = mem_xrealloc(t->chunks, t->chunks_cap * sizeof *t->chunks);
  }
  t->chunks[t->nchunks++] = (rows_chunk){m, n};
  t->spare += n;
  return 0;
}

int rows_reserve(rows *t, size_t more) {
  if (!more) return 0;
  if (more > SIZE_MAX / 2 - t->count || grow_hash(t, t->count + more) < 0) return -E_QUOTA;
  while (t->spare < more)
    if (add_chunk(t) < 0) return -E_QUOTA; /* chunks added so far stay as room: invisible */
  return 0;
}

static float *take_block(rows *t) {
  while (t->used == t->chunks[t->cur].nrows) {
    t->cur++;
    t->used = 0;
  }
  t->spare--;
  return t->chunks[t->cur].mem + t->used++ * t->blk;
}

void rows_init_params(const rows *t, uint64_t id, float *out) {
  const tensor_init *in = &t->init;
  uint64_t stream = t->origin + id;
  switch (in->kind) {
  case TENSOR_INIT_NORMAL: rng_fill_normal(out, t->D, 0, in->seed, stream, in->a, in->b); break;
  case TENSOR_INIT_UNIFORM: rng_fill_uniform(out, t->D, 0, in->seed, stream, in->a, in->b); break;
  case TENSOR_INIT_CONSTANT:
    for (size_t c = 0; c < t->D; c++) out[c] = (float)in->a;
    break;
  default: memset(out, 0, t->D * sizeof(float));
  }
}

float *rows_get(rows *t, uint64_t id, bool *created) {
  float *b = rows_find(t, id);
  if (created) *created = b == NULL;
  return b ? b : rows_add(t, id);
}

float *rows_add(rows *t, uint64_t id) {
  float *b = take_block(t);
  rows_init_params(t, id, b);
  for (int k = 0; k < OPTIM_NBUF; k++) {
    if (t->off[k] < 0) continue;
    float v = t->initial[k], *p = b + t->off[k];
    for (size_t c = 0; c < t->D; c++) p[c] = v;
  }
  put_slot(t->slots, t->cap, id + 1, b);
  t->count++;
  return b;
}

void rows_read(const rows *t, uint64_t id, float *out) {
  const float *b = rows_find(t, id);
  if (b) memcpy(out, b, t->D * sizeof(float));
  else rows_init_params(t, id, out);
}

/* ---- ordered iteration ------------------------------------------------------------ */

/* LSD radix sort of s[0..m) by key, 8 bits a pass, skipping the bytes every
 * key shares; the result ends in s (tmp is the other buffer). */
static void radix_sort(rows_slot *s, rows_slot *tmp, size_t m) {
  static const int B = 8;
  size_t cnt[8][256];
  memset(cnt, 0, sizeof cnt);
  for (size_t i = 0; i < m; i++)
    for (int p = 0; p < B; p++) cnt[p][(s[i].key >> (8 * p)) & 255]++;
  rows_slot *a = s, *b = tmp;
  for (int p = 0; p < B; p++) {
    if (cnt[p][(a[0].key >> (8 * p)) & 255] == m) continue; /* one value: order unchanged */
    size_t pos = 0;
    for (int v = 0; v < 256; v++) {
      size_t c = cnt[p][v];
      cnt[p][v] = pos;
      pos += c;
    }
    for (size_t i = 0; i < m; i++) b[cnt[p][(a[i].key >> (8 * p)) & 255]++] = a[i];
    rows_slot *x = a;
    a = b;
    b = x;
  }
  if (a != s) memcpy(s, a, m * sizeof *s);
}

size_t rows_sorted(const rows *t, uint64_t *ids, float **blks, rows_slot *tmp) {
  size_t m = 0;
  rows_slot *s = tmp; /* the first t->count entries of tmp, then its second half */
  for (size_t i = 0; i < t->cap; i++)
    if (t->slots[i].key) s[m++] = t->slots[i];
  if (m > 1) radix_sort(s, s + m, m);
  for (size_t i = 0; i < m; i++) {
    ids[i] = s[i].key - 1;
    blks[i] = s[i].blk;
  }
  return m;
}

uint64_t rows_floats(const rows *t) { return (uint64_t)t->count * t->blk; }

size_t rows_bytes(const rows *t) {
  size_t b = t->cap * sizeof(rows_slot) + t->chunks_cap * sizeof(rows_chunk);
  for (size_t i = 0; i < t->nchunks; i++) b += t->chunks[i].nrows * t->blk * sizeof(float);
  return b;
}
