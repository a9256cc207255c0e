/* optim_sparse: torch.optim 1.13's rules for sparse (row) gradients: the
 * refusals (optim_sparse_check), the coalesce (a radix sort on row ids, and
 * libstdc++'s std::sort replayed where torch's summation order matters) and the row kernels of sgd, adagrad and
 * sparse_adam, each loop over a row's D floats vectorised (GCC target_clones,
 * like optim_kernels.c; -ffp-contract=off, fmaf() only where torch fuses).
 * Never does I/O, JSON or allocation; writes only the arrays it is given.
 * Any thread; the caller serializes steps on the same rows.
 */
#include "optim_sparse.h"

#include <math.h>
#include <string.h>

#include "optim_internal.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(DESCENT_NO_CLONES)
#define KCLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define KCLONES
#endif
#define KBODY static inline __attribute__((always_inline))

/* The radix sort's second buffer lives in urows (k u64 = 2k u32). */
typedef uint32_t __attribute__((may_alias)) u32a;

size_t optim_sparse_row_floats(optim_alg alg, const optim_hyper *h, size_t D) {
  return (1 + (size_t)__builtin_popcount(optim_buffers(alg, h))) * D;
}

long optim_sparse_buf_offset(optim_alg alg, const optim_hyper *h, size_t D, int buf) {
  unsigned mask = optim_buffers(alg, h);
  if (buf < 0 || buf >= OPTIM_NBUF || !(mask & (1u << buf))) return -1;
  return (long)((1 + (size_t)__builtin_popcount(mask & ((1u << buf) - 1))) * D);
}

int optim_sparse_check(optim_alg alg, const optim_hyper *h, derr *e) {
  switch (alg) {
  case OPTIM_SGD:
    if (h->weight_decay != 0)
      return derr_set(e, E_BAD_VALUE, "hyper.weight_decay: sgd cannot decay a sparse tensor (torch: add(sparse, "
                      "dense) is not supported. Use add(dense, sparse) instead.)");
    if (h->momentum != 0)
      return derr_set(e, E_BAD_VALUE, "hyper.momentum: sgd momentum is refused for a sparse tensor: torch keeps "
                      "the buffer as an ever-growing uncoalesced sparse tensor and re-applies every row ever "
                      "pushed at every step, which is not a per-row update (see docs/optimizers.md)");
    return 0;
  case OPTIM_ADAGRAD:
    if (h->weight_decay != 0)
      return derr_set(e, E_BAD_VALUE, "hyper.weight_decay: adagrad with a sparse tensor (torch: weight_decay "
                      "option is not compatible with sparse gradients)");
    return 0;
  case OPTIM_SPARSE_ADAM: return 0;
  case OPTIM_ADAM:
    return derr_set(e, E_BAD_VALUE, "algorithm: adam with a sparse tensor (torch: Adam does not support sparse "
                    "gradients, please consider SparseAdam instead)");
  case OPTIM_ADAMW:
    return derr_set(e, E_BAD_VALUE, "algorithm: adamw with a sparse tensor (torch: AdamW does not support sparse "
                    "gradients; use sparse_adam)");
  case OPTIM_RMSPROP:
    return derr_set(e, E_BAD_VALUE, "algorithm: rmsprop with a sparse tensor (torch: RMSprop does not support "
                    "sparse gradients)");
  case OPTIM_RANDOM_SEARCH:
    return derr_set(e, E_BAD_VALUE, "algorithm: random_search takes no gradients, so no sparse tensors");
  default: return derr_set(e, E_UNKNOWN_ALGORITHM, NULL);
  }
}

int optim_sparse_check_dense(optim_alg alg, derr *e) {
  if (alg == OPTIM_SPARSE_ADAM)
    return derr_set(e, E_BAD_VALUE, "algorithm: sparse_adam needs every tensor sparse (torch: SparseAdam does "
                    "not support dense gradients, please consider Adam instead)");
  return 0;
}

int optim_sparse_check_clip(double max_norm, derr *e) {
  if (!(max_norm > 0)) return 0;
  return derr_set(e, E_BAD_VALUE, "clip_grad_norm: not with sparse tensors (torch 1.13's clip_grad_norm_ counts "
                  "a sparse gradient in the norm but leaves it unscaled; see docs/optimizers.md)");
}

bool optim_sparse_coalesces(optim_alg alg) { return alg == OPTIM_ADAGRAD || alg == OPTIM_SPARSE_ADAM; }

/* ---- coalesce ------------------------------------------------------------ */

/* Stable insertion sort of the indices 0..k-1 by rows[] (small k). */
static void sort_small(const uint64_t *rows, size_t k, uint32_t *order) {
  for (size_t i = 0; i < k; i++) {
    uint32_t v = (uint32_t)i;
    size_t j = i;
    while (j > 0 && rows[order[j - 1]] > rows[v]) {
      order[j] = order[j - 1];
      j--;
    }
    order[j] = v;
  }
}

enum { RADIX_BITS = 11, RADIX = 1 << RADIX_BITS };

typedef uint64_t __attribute__((may_alias, aligned(4))) u64a;

/* Stable LSD radix sort of 0..k-1 by rows[], over the bits in which the ids
 * differ; ping-pongs between order and tmp, leaves the result in order.
 * Reads rows[] at random: the form for D < 3, where ug has no room for
 * the keys (below). */
static void sort_radix(const uint64_t *rows, size_t k, uint32_t *order, u32a *tmp) {
  uint64_t vary = 0;
  for (size_t i = 1; i < k; i++) vary |= rows[i] ^ rows[0];
  int bits = vary ? 64 - __builtin_clzll(vary) : 0;
  uint32_t cnt[RADIX];
  u32a *src = NULL, *dst = order;
  for (int shift = 0; shift < bits; shift += RADIX_BITS) {
    memset(cnt, 0, sizeof cnt);
    for (size_t i = 0; i < k; i++) cnt[(rows[src ? src[i] : i] >> shift) & (RADIX - 1)]++;
    uint32_t sum = 0;
    for (int b = 0; b < RADIX; b++) {
      uint32_t c = cnt[b];
      cnt[b] = sum;
      sum += c;
    }
    for (size_t i = 0; i < k; i++) {
      uint32_t v = src ? src[i] : (uint32_t)i;
      dst[cnt[(rows[v] >> shift) & (RADIX - 1)]++] = v;
    }
    src = dst;
    dst = dst == order ? tmp : order;
  }
  if (!src)
    for (size_t i = 0; i < k; i++) order[i] = (uint32_t)i;
  else if (src != order)
    memcpy(order, (const void *)src, k * sizeof *order);
}

/* One pass of the pair sort: (sk, si) (NULL: rows[] and 0..k-1) to
 * (dk, di) by the digit at shift, stably. */
static void pairs_pass(const uint64_t *rows, const u64a *sk, const u32a *si, u64a *dk, u32a *di, size_t k,
                       int shift) {
  uint32_t cnt[RADIX];
  memset(cnt, 0, sizeof cnt);
  const u64a *keys = sk ? sk : (const u64a *)rows;
  for (size_t i = 0; i < k; i++) cnt[(keys[i] >> shift) & (RADIX - 1)]++;
  uint32_t sum = 0;
  for (int b = 0; b < RADIX; b++) {
    uint32_t c = cnt[b];
    cnt[b] = sum;
    sum += c;
  }
  for (size_t i = 0; i < k; i++) {
    uint64_t key = keys[i];
    uint32_t at = cnt[(key >> shift) & (RADIX - 1)]++;
    dk[at] = key;
    di[at] = si ? si[i] : (uint32_t)i;
  }
}

/* Stable LSD radix sort of the pairs (rows[i], i), keys carried along (no
 * random reads), only over the digits in which the ids differ: the sorted
 * keys end in keys (urows), the indices in order.  The other buffer of the
 * ping-pong is ug's memory (12 bytes per entry: D >= 3). */
static void sort_pairs(const uint64_t *rows, size_t k, uint64_t *keys, uint32_t *order, float *ug) {
  uint64_t vary = 0;
  for (size_t i = 1; i < k; i++) vary |= rows[i] ^ rows[0];
  int shifts[64 / RADIX_BITS + 1], p = 0;
  for (int sh = 0; sh < 64; sh += RADIX_BITS)
    if ((vary >> sh) & (RADIX - 1)) shifts[p++] = sh;
  u64a *ak = (u64a *)ug, *bk = (u64a *)keys;
  u32a *ai = (u32a *)((char *)ug + k * sizeof(uint64_t)), *bi = order;
  if (p == 0) {
    for (size_t i = 0; i < k; i++) bk[i] = rows[i], bi[i] = (uint32_t)i;
    return;
  }
  const u64a *sk = NULL;
  const u32a *si = NULL;
  for (int j = 0; j < p; j++) {
    bool to_b = (p - 1 - j) % 2 == 0; /* the last pass lands in (keys, order) */
    u64a *dk = to_b ? bk : ak;
    u32a *di = to_b ? bi : ai;
    pairs_pass(rows, sk, si, dk, di, k, shifts[j]);
    sk = dk, si = di;
  }
}

/* ---- torch's order: libstdc++'s std::sort, step for step ------------------
 * torch 1.13 coalesces by sorting the flattened ids with std::sort (not
 * stable) on (id, position) pairs compared by id, and sums each run in the
 * resulting order.  For three or more copies of a row that order decides
 * the bits, so it is reproduced here exactly: introsort with libstdc++'s
 * median-of-three (first + 1, middle, last - 1), unguarded partition,
 * recursion on the right part, heapsort past depth 2 floor(log2 n), and the
 * final insertion sort with threshold 16 (GCC's libstdc++, which Debian's
 * torch is built with; checked against torch in test_optim_sparse).  Pairs
 * are (K[i], P[i]); only K is compared. */
enum { TS_THRESHOLD = 16 };

typedef struct tsort {
  uint64_t *K;
  uint32_t *P;
} tsort;

static inline void ts_swap(tsort *t, size_t a, size_t b) {
  uint64_t k = t->K[a];
  uint32_t p = t->P[a];
  t->K[a] = t->K[b], t->P[a] = t->P[b];
  t->K[b] = k, t->P[b] = p;
}

static inline void ts_move(tsort *t, size_t to, size_t from) { t->K[to] = t->K[from], t->P[to] = t->P[from]; }

static void ts_move_median_to_first(tsort *t, size_t r, size_t a, size_t b, size_t c) {
  const uint64_t *K = t->K;
  if (K[a] < K[b]) {
    if (K[b] < K[c]) ts_swap(t, r, b);
    else if (K[a] < K[c]) ts_swap(t, r, c);
    else ts_swap(t, r, a);
  } else if (K[a] < K[c]) ts_swap(t, r, a);
  else if (K[b] < K[c]) ts_swap(t, r, c);
  else ts_swap(t, r, b);
}

static size_t ts_unguarded_partition(tsort *t, size_t first, size_t last, size_t pivot) {
  const uint64_t *K = t->K;
  for (;;) {
    while (K[first] < K[pivot]) first++;
    last--;
    while (K[pivot] < K[last]) last--;
    if (!(first < last)) return first;
    ts_swap(t, first, last);
    first++;
  }
}

/* __adjust_heap over [base, base + len) with the hole at hole and (vk, vp). */
static void ts_adjust_heap(tsort *t, size_t base, size_t hole, size_t len, uint64_t vk, uint32_t vp) {
  const uint64_t *K = t->K;
  size_t top = hole, child = hole;
  while (len > 0 && child < (len - 1) / 2) {
    child = 2 * (child + 1);
    if (K[base + child] < K[base + child - 1]) child--;
    ts_move(t, base + hole, base + child);
    hole = child;
  }
  if ((len & 1) == 0 && child == (len - 2) / 2) {
    child = 2 * (child + 1);
    ts_move(t, base + hole, base + child - 1);
    hole = child - 1;
  }
  size_t parent = hole ? (hole - 1) / 2 : 0;
  while (hole > top && K[base + parent] < vk) {
    ts_move(t, base + hole, base + parent);
    hole = parent;
    parent = hole ? (hole - 1) / 2 : 0;
  }
  t->K[base + hole] = vk, t->P[base + hole] = vp;
}

/* std::__partial_sort(first, last, last): make_heap, then sort_heap. */
static void ts_heapsort(tsort *t, size_t first, size_t last) {
  size_t len = last - first;
  if (len >= 2)
    for (size_t parent = (len - 2) / 2;; parent--) {
      ts_adjust_heap(t, first, parent, len, t->K[first + parent], t->P[first + parent]);
      if (parent == 0) break;
    }
  while (last - first > 1) {
    last--;
    uint64_t vk = t->K[last];
    uint32_t vp = t->P[last];
    ts_move(t, last, first);
    ts_adjust_heap(t, first, 0, last - first, vk, vp);
  }
}

static void ts_introsort_loop(tsort *t, size_t first, size_t last, size_t depth) {
  while (last - first > TS_THRESHOLD) {
    if (depth == 0) {
      ts_heapsort(t, first, last);
      return;
    }
    depth--;
    size_t mid = first + (last - first) / 2;
    ts_move_median_to_first(t, first, first + 1, mid, last - 1);
    size_t cut = ts_unguarded_partition(t, first + 1, last, first);
    ts_introsort_loop(t, cut, last, depth);
    last = cut;
  }
}

/* __unguarded_linear_insert of element i; guarded when `guard` (it may
 * reach first), as __insertion_sort's two branches do. */
static void ts_linear_insert(tsort *t, size_t first, size_t i, bool guard) {
  uint64_t vk = t->K[i];
  uint32_t vp = t->P[i];
  if (guard && vk < t->K[first]) { /* move_backward(first, i, i + 1) */
    memmove(t->K + first + 1, t->K + first, (i - first) * sizeof *t->K);
    memmove(t->P + first + 1, t->P + first, (i - first) * sizeof *t->P);
    t->K[first] = vk, t->P[first] = vp;
    return;
  }
  size_t last = i;
  while (vk < t->K[last - 1]) {
    ts_move(t, last, last - 1);
    last--;
  }
  t->K[last] = vk, t->P[last] = vp;
}

static void torch_sort(uint64_t *K, uint32_t *P, size_t n) {
  tsort t = {K, P};
  if (n < 2) return;
  ts_introsort_loop(&t, 0, n, 2 * (size_t)(63 - __builtin_clzll((unsigned long long)n)));
  size_t head = n > TS_THRESHOLD ? TS_THRESHOLD : n;
  for (size_t i = 1; i < head; i++) ts_linear_insert(&t, 0, i, true);
  for (size_t i = head; i < n; i++) ts_linear_insert(&t, 0, i, false);
}

/* Sums the sorted entries' rows into (urows, ug): keys are the sorted ids
 * (urows itself, compacted in place) or NULL (then rows[order[i]]). */
KCLONES static void rows_gather(const float *g, const uint64_t *rows, const uint32_t *order, size_t k,
                                size_t D, uint64_t *urows, float *ug, bool keyed, size_t *m_out) {
  size_t m = 0;
  for (size_t i = 0; i < k; i++) {
    if (i + 8 < k) /* the entries come in sorted order: g is read at random */
      for (size_t o = 0; o < D; o += 16) __builtin_prefetch(g + (size_t)order[i + 8] * D + o, 0, 3);
    uint32_t v = order[i];
    uint64_t key = keyed ? urows[i] : rows[v];
    const float *src = g + (size_t)v * D;
    if (m > 0 && urows[m - 1] == key) {
      float *restrict dst = ug + (m - 1) * D;
      for (size_t j = 0; j < D; j++) dst[j] += src[j];
    } else {
      urows[m] = key;
      float *restrict dst = ug + m * D;
      for (size_t j = 0; j < D; j++) dst[j] = src[j]; /* inline: D is small, a libc call per row is not */
      m++;
    }
  }
  *m_out = m;
}

size_t optim_sparse_coalesce(const uint64_t *rows, const float *g, size_t k, size_t D, uint64_t *urows,
                             float *ug, uint32_t *order) {
  size_t i = 1;
  while (i < k && rows[i] > rows[i - 1]) i++;
  if (i >= k) { /* already distinct and ascending: a copy */
    if (k) memmove(urows, rows, k * sizeof *urows);
    if (k && ug != g) memmove(ug, g, k * D * sizeof *ug);
    return k;
  }
  bool keyed = false;
  if (k <= TS_THRESHOLD) {
    sort_small(rows, k, order); /* stable: what std::sort's insertion sort gives */
  } else {
    /* A radix sort first (linear); its stable order is torch's wherever no
     * row has three or more copies (two copies sum alike in either order). */
    keyed = D >= 3;
    if (keyed) sort_pairs(rows, k, urows, order, ug);
    else sort_radix(rows, k, order, (u32a *)urows);
    bool triple = false;
    for (size_t j = 2; j < k && !triple; j++)
      triple = keyed ? urows[j] == urows[j - 2] : rows[order[j]] == rows[order[j - 2]];
    if (triple) { /* then only torch's own order gives torch's bits */
      for (size_t j = 0; j < k; j++) urows[j] = rows[j], order[j] = (uint32_t)j;
      torch_sort(urows, order, k);
      keyed = true;
    }
  }
  size_t m;
  rows_gather(g, rows, order, k, D, urows, ug, keyed, &m);
  return m;
}

/* ---- the row kernels ------------------------------------------------------ */

/* torch: param.add_(grad, alpha=-lr) on an uncoalesced gradient: one
 * fma(g, -lr, p) per entry, in order. */
KBODY void sgd_row(float *restrict p, const float *g, size_t D, float gs, float nlr, const bool SCALE) {
  for (size_t j = 0; j < D; j++) {
    float d = g[j];
    if (SCALE) d *= gs;
    p[j] = fmaf(d, nlr, p[j]);
  }
}

/* torch: state_sum.add_(g^2) (no fusion), std = sqrt(sum) + eps,
 * param.add_(g / std, alpha=-clr) (fused). */
KBODY void adagrad_row(float *restrict p, float *restrict sum, const float *g, float *out, size_t D,
                       float gs, float nclr, float eps, const bool SCALE, const bool EMIT) {
  for (size_t j = 0; j < D; j++) {
    float d = g[j];
    if (SCALE) d *= gs;
    float sq = d * d;
    float s = sum[j] + sq;
    sum[j] = s;
    float std = sqrtf(s) + eps;
    float np = fmaf(d / std, nclr, p[j]);
    p[j] = np;
    if (EMIT) out[j] = np;
  }
}

/* F.sparse_adam: m += (g - m) * (1 - b1); v += (g^2 - v) * (1 - b2);
 * p += -step_size * (m / (sqrt(v) + eps)); nothing fused. */
KBODY void sadam_row(float *restrict p, float *restrict m, float *restrict v, const float *g, float *out,
                     size_t D, const float *s, float gs, const bool SCALE, const bool EMIT) {
  const float b1c = s[SPADAM_B1C], b2c = s[SPADAM_B2C], eps = s[SPADAM_EPS], nstep = s[SPADAM_NSTEP];
  for (size_t j = 0; j < D; j++) {
    float d = g[j];
    if (SCALE) d *= gs;
    float om = m[j], ov = v[j];
    float um = (d - om) * b1c;
    float sq = d * d;
    float uv = (sq - ov) * b2c;
    float nm = um + om, nv = uv + ov;
    m[j] = nm;
    v[j] = nv;
    float denom = sqrtf(nv) + eps;
    float np = p[j] + nstep * (nm / denom);
    p[j] = np;
    if (EMIT) out[j] = np;
  }
}

/* Rows are scattered over the table: each is a cache miss the hardware
 * cannot foresee, so the blocks of the rows PF entries ahead are asked for
 * while this one is computed (for small D the step is miss-bound). */
enum { PF = 4 };

static inline void prefetch_block(const float *b, size_t floats) {
  for (size_t o = 0; o < floats; o += 16) __builtin_prefetch(b + o, 1, 3);
}

KCLONES static void k_sgd_rows(const optim_plan *pl, float *const *blk, const float *g, size_t k, size_t D,
                               bool scale) {
  const float gs = pl->gscale, nlr = pl->s[SGD_NLR];
  for (size_t i = 0; i < k; i++) {
    if (i + PF < k) prefetch_block(blk[i + PF], D);
    if (scale) sgd_row(blk[i], g + i * D, D, gs, nlr, true);
    else sgd_row(blk[i], g + i * D, D, gs, nlr, false);
  }
}

KCLONES static void k_adagrad_rows(const optim_plan *pl, float *const *blk, const float *g, size_t k, size_t D,
                                   float *out, bool scale) {
  const float gs = pl->gscale, nclr = pl->s[ADAGRAD_NCLR], eps = pl->s[ADAGRAD_EPS];
  for (size_t i = 0; i < k; i++) {
    float *b = blk[i];
    const float *gi = g + i * D;
    float *oi = out ? out + i * D : NULL;
    if (i + PF < k) prefetch_block(blk[i + PF], 2 * D);
    switch ((scale ? 2 : 0) | (out ? 1 : 0)) {
    case 0: adagrad_row(b, b + D, gi, oi, D, gs, nclr, eps, false, false); break;
    case 1: adagrad_row(b, b + D, gi, oi, D, gs, nclr, eps, false, true); break;
    case 2: adagrad_row(b, b + D, gi, oi, D, gs, nclr, eps, true, false); break;
    default: adagrad_row(b, b + D, gi, oi, D, gs, nclr, eps, true, true); break;
    }
  }
}

KCLONES static void k_sadam_rows(const optim_plan *pl, float *const *blk, const float *g, size_t k, size_t D,
                                 float *out, bool scale) {
  const float gs = pl->gscale;
  for (size_t i = 0; i < k; i++) {
    float *b = blk[i];
    const float *gi = g + i * D;
    float *oi = out ? out + i * D : NULL;
    if (i + PF < k) prefetch_block(blk[i + PF], 3 * D);
    switch ((scale ? 2 : 0) | (out ? 1 : 0)) {
    case 0: sadam_row(b, b + D, b + 2 * D, gi, oi, D, pl->s, gs, false, false); break;
    case 1: sadam_row(b, b + D, b + 2 * D, gi, oi, D, pl->s, gs, false, true); break;
    case 2: sadam_row(b, b + D, b + 2 * D, gi, oi, D, pl->s, gs, true, false); break;
    default: sadam_row(b, b + D, b + 2 * D, gi, oi, D, pl->s, gs, true, true); break;
    }
  }
}

void optim_sparse_apply(const optim_plan *pl, float *const *blk, const float *g, size_t k, size_t D,
                        float *out) {
  const bool scale = pl->flags & OPTIM_F_SCALE;
  switch (pl->alg) {
  case OPTIM_SGD:
    k_sgd_rows(pl, blk, g, k, D, scale);
    /* a repeated row's entries all report its value after the whole step */
    if (out)
      for (size_t i = 0; i < k; i++) memcpy(out + i * D, blk[i], D * sizeof(float));
    break;
  case OPTIM_ADAGRAD: k_adagrad_rows(pl, blk, g, k, D, out, scale); break;
  case OPTIM_SPARSE_ADAM: k_sadam_rows(pl, blk, g, k, D, out, scale); break;
  default: break; /* refused by optim_sparse_check */
  }
}
