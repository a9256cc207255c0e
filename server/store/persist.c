/* persist: writing, loading and checking snapshot files.
 *
 * Layout (all integers little-endian; proto/snapshot.md is the reference):
 *   "DESCENTS"  8 bytes magic
 *   u32 version (1), u32 header length H
 *   H bytes of JSON: the configuration plus step, buffers, random search
 *   params: n float32; then each buffer listed in the header, n float32
 *   version 2 only (an instance with sparse tensors): per sparse tensor, its
 *   m held rows: m u64 ids ascending, m*D float32 params, then m*D float32
 *   per row buffer listed in the header's "rows"
 *   u32 CRC-32 (zlib's) of every byte before it
 *
 * Saves go through one mutex (so they are serialized) and a table of the
 * last version written per instance incarnation (so they never go back in
 * time, and a deleted instance is never resurrected by a late save).
 *
 * Owns the data dir's descriptor (flocked for the process's life) and that
 * table, both under p->lock.  Never takes an instance lock while holding
 * p->lock: the state is exported first.  Threads: HTTP threads (create,
 * PATCH, import, delete, POST .../snapshot), a libuv pool thread (periodic
 * snapshots), the loop thread (final snapshots) and main (loading).
 */
#include "persist.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "journal.h"
#include "log.h"
#include "mem.h"
#include "spec.h"

#define MAGIC "DESCENTS"
#define FORMAT_VERSION 1u
#define FORMAT_VERSION_ROWS 2u /* with sparse tensors: files without them stay version 1 */
#define MAX_HEADER (64u << 20)

typedef struct written {
  char name[NAME_MAX_LEN + 1];
  uint64_t incarnation, version;
  bool valid;   /* a file of this incarnation was written or loaded */
  bool deleted; /* this incarnation was deleted: never write it again */
} written;

struct persist {
  char *dir;
  int dirfd;
  pthread_mutex_t lock;
  written *w;
  size_t nw, capw;
  persist_stats stats;
  journal *jr; /* --durability log: cut after each snapshot, forget at delete */
};

static double wall(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static written *written_get(persist *p, const char *name) {
  for (size_t i = 0; i < p->nw; i++)
    if (!strcmp(p->w[i].name, name)) return &p->w[i];
  if (p->nw == p->capw) {
    p->capw = p->capw ? p->capw * 2 : 16;
    p->w = mem_xrealloc(p->w, p->capw * sizeof *p->w);
  }
  written *w = &p->w[p->nw++];
  memset(w, 0, sizeof *w);
  snprintf(w->name, sizeof w->name, "%s", name);
  return w;
}

/* ---- encoding ------------------------------------------------------------------- */

/* The "rows" header field: per sparse tensor {"tensor", "count", "buffers"}. */
static json_t *rows_json(const instance_state *s) {
  json_t *a = json_array();
  for (size_t t = 0, i = 0; t < s->cfg.ntensors; t++) {
    if (!s->cfg.tensors[t].sparse) continue;
    const state_rows *r = &s->rows[i++];
    json_t *bufs = json_array();
    for (int b = 0; b < OPTIM_NBUF; b++)
      if (r->buf[b]) json_array_append_new(bufs, json_string(optim_buf_name(b)));
    json_array_append_new(a, json_pack("{s:s,s:I,s:o}", "tensor", s->cfg.tensors[t].name, "count",
                                       (json_int_t)r->m, "buffers", bufs));
  }
  return a;
}

/* with_log: the log identity and seq (--durability log, proto/log.md). */
static json_t *header_json(const instance_state *s, bool with_log) {
  json_t *h = spec_cfg_json(&s->cfg);
  if (with_log) {
    char id[17];
    snprintf(id, sizeof id, "%016llx", (unsigned long long)s->log_id);
    json_object_set_new(h, "log_id", json_string(id));
    json_object_set_new(h, "log_seq", json_integer((json_int_t)s->log_seq));
  }
  json_object_set_new(h, "step", json_integer((json_int_t)s->step));
  json_object_set_new(h, "version", json_integer((json_int_t)s->version));
  json_object_set_new(h, "created", jbuf_real(s->created));
  json_t *bufs = json_array();
  for (int b = 0; b < OPTIM_NBUF; b++)
    if ((s->have & (1u << b)) && !(s->fresh & (1u << b))) json_array_append_new(bufs, json_string(optim_buf_name(b)));
  json_object_set_new(h, "buffers", bufs);
  if (s->nidem) json_object_set_new(h, "idempotency", spec_idem_json(s));
  if (s->rows) json_object_set_new(h, "rows", rows_json(s));
  if (s->cfg.alg == OPTIM_RANDOM_SEARCH)
    json_object_set_new(h, "random_search",
                        json_pack("{s:o,s:I,s:I,s:I}", "best_loss",
                                  jbuf_real(s->best_loss), "next_candidate",
                                  (json_int_t)s->next_id, "tells", (json_int_t)s->tells, "best_candidate",
                                  (json_int_t)s->best_id));
  return h;
}

/* A sink writes bytes either to a file or to memory, updating the CRC. */
typedef struct sink {
  int fd;
  unsigned char *mem;
  size_t len, cap;
  uLong crc;
  int err;
} sink;

static void put(sink *k, const void *data, size_t n) {
  if (k->err || n == 0) return; /* n == 0: data may be NULL (a sparse tensor holding no row) */
  const unsigned char *d = data;
  size_t done = 0;
  while (done < n) { /* zlib's crc32 takes uInt lengths */
    size_t chunk = n - done > (1u << 30) ? (1u << 30) : n - done;
    k->crc = crc32(k->crc, d + done, (uInt)chunk);
    done += chunk;
  }
  if (k->fd >= 0) {
    for (size_t off = 0; off < n;) {
      ssize_t w = write(k->fd, d + off, n - off);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        k->err = errno ? errno : EIO;
        return;
      }
      off += (size_t)w;
    }
  } else {
    if (k->len + n > k->cap) {
      k->cap = (k->len + n) * 2;
      k->mem = mem_xrealloc(k->mem, k->cap);
    }
    memcpy(k->mem + k->len, d, n);
    k->len += n;
  }
}

static void put_u32(sink *k, uint32_t v) {
  unsigned char b[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16), (unsigned char)(v >> 24)};
  put(k, b, 4);
}

static void put_floats(sink *k, const float *v, size_t n) {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  put(k, v, n * sizeof(float));
#else
  for (size_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, &v[i], 4);
    put_u32(k, u);
  }
#endif
}

static void put_u64s(sink *k, const uint64_t *v, size_t n) {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  put(k, v, n * sizeof(uint64_t));
#else
  for (size_t i = 0; i < n; i++) {
    put_u32(k, (uint32_t)v[i]);
    put_u32(k, (uint32_t)(v[i] >> 32));
  }
#endif
}

/* The sparse sections: per sparse tensor, ids, params, each held buffer. */
static void put_rows(sink *k, const instance_state *s) {
  for (size_t t = 0, i = 0; t < s->cfg.ntensors; t++) {
    if (!s->cfg.tensors[t].sparse) continue;
    const state_rows *r = &s->rows[i++];
    size_t n = (size_t)r->m * s->cfg.tensors[t].dim;
    put_u64s(k, r->ids, r->m);
    put_floats(k, r->params, n);
    for (int b = 0; b < OPTIM_NBUF; b++)
      if (r->buf[b]) put_floats(k, r->buf[b], n);
  }
}

static void encode(sink *k, const instance_state *s, bool with_log) {
  json_t *h = header_json(s, with_log);
  jbuf hb;
  jbuf_init(&hb, NULL, 4096);
  jbuf_json_splice(&hb, h, NULL, 0);
  json_decref(h);
  char *text = hb.p;
  size_t hl = hb.len;
  put(k, MAGIC, 8);
  put_u32(k, s->rows ? FORMAT_VERSION_ROWS : FORMAT_VERSION);
  put_u32(k, (uint32_t)hl);
  put(k, text, hl);
  jbuf_release(&hb);
  put_floats(k, s->params, s->cfg.n);
  for (int b = 0; b < OPTIM_NBUF; b++)
    if ((s->have & (1u << b)) && !(s->fresh & (1u << b))) put_floats(k, s->buf[b], s->cfg.n);
  if (s->rows) put_rows(k, s);
  uint32_t crc = (uint32_t)k->crc;
  put_u32(k, crc);
}

int persist_encode(const instance_state *s, unsigned char **out, size_t *len) {
  sink k = {.fd = -1, .crc = crc32(0, NULL, 0)};
  encode(&k, s, s->log_seq > 0);
  *out = k.mem;
  *len = k.len;
  return 0;
}

static uint32_t get_u32(const unsigned char *b) {
  return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static void get_floats(float *out, const unsigned char *b, size_t n) {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  memcpy(out, b, n * sizeof(float));
#else
  for (size_t i = 0; i < n; i++) {
    uint32_t u = get_u32(b + 4 * i);
    memcpy(&out[i], &u, 4);
  }
#endif
}

/* The header's optional log_id and log_seq (--durability log). */
static int decode_log_fields(json_t *h, instance_state *s, derr *e) {
  json_t *lid = json_object_get(h, "log_id"), *lseq = json_object_get(h, "log_seq");
  if (!lid && !lseq) return 0;
  char *end = NULL;
  const char *hex = json_string_value(lid);
  s->log_id = hex ? strtoull(hex, &end, 16) : 0;
  if (!hex || strlen(hex) != 16 || *end || !json_is_integer(lseq) || json_integer_value(lseq) < 0)
    return derr_set(e, E_BAD_REQUEST, "header: log_id (16 hex digits) and log_seq go together");
  s->log_seq = (uint64_t)json_integer_value(lseq);
  return 0;
}

static uint64_t get_u64(const unsigned char *b) { return (uint64_t)get_u32(b) | (uint64_t)get_u32(b + 4) << 32; }

/* What the header says of one sparse tensor's section. */
typedef struct rows_plan {
  uint64_t m;
  unsigned have; /* its buffers */
} rows_plan;

/* Entry i of the header's "rows", for sparse tensor t, into *rp; *bytes
 * grows by its section's size. */
static int rows_entry(json_t *r, const instance_cfg *c, const tensor *t, size_t i, rows_plan *rp, size_t *bytes,
                      derr *e) {
  json_t *name = json_object_get(r, "tensor"), *count = json_object_get(r, "count"),
         *bufs = json_object_get(r, "buffers");
  if (!json_is_string(name) || strcmp(json_string_value(name), t->name) != 0 || !json_is_integer(count) ||
      json_integer_value(count) < 0 || !json_is_array(bufs))
    return derr_set(e, E_BAD_REQUEST, "header: rows[%zu] is not {\"tensor\": \"%s\", \"count\", \"buffers\"}", i,
                    t->name);
  unsigned have = 0, allowed = instance_cfg_row_buffers(c);
  for (size_t j = 0; j < json_array_size(bufs); j++) {
    const char *bn = json_string_value(json_array_get(bufs, j));
    int b = optim_buf_from_name(bn ? bn : "");
    if (b < 0 || (have & (1u << b)) || !(allowed & (1u << b)))
      return derr_set(e, E_BAD_REQUEST, "header: rows[%zu].buffers: bad buffer list", i);
    have |= 1u << b;
  }
  uint64_t m = (uint64_t)json_integer_value(count), per;
  uint64_t row = (uint64_t)(1 + __builtin_popcount(have)) * sizeof(float);
  if (__builtin_mul_overflow(row, (uint64_t)t->dim, &row) || __builtin_mul_overflow(row + 8, m, &per) ||
      per > SIZE_MAX / 4 - *bytes)
    return derr_set(e, E_BAD_REQUEST, "size mismatch: the arrays do not match the header");
  *bytes += (size_t)per;
  *rp = (rows_plan){m, have};
  return 0;
}

/* The header's "rows": one entry per sparse tensor (version 2), absent in
 * version 1 (no sparse tensor).  *plan (caller frees) and *bytes, the size
 * of the sections; s->rows is allocated empty. */
static int rows_header(json_t *rows, uint32_t version, instance_state *s, rows_plan **plan, size_t *bytes, derr *e) {
  size_t ns = 0;
  for (size_t t = 0; t < s->cfg.ntensors; t++) ns += s->cfg.tensors[t].sparse;
  if (version == FORMAT_VERSION && !ns && !rows) return 0;
  if (version != FORMAT_VERSION_ROWS || !ns)
    return derr_set(e, E_BAD_REQUEST, "header: sparse tensors (and only they) need a version 2 file with \"rows\"");
  if (!json_is_array(rows) || json_array_size(rows) != ns)
    return derr_set(e, E_BAD_REQUEST, "header: rows: expected one entry per sparse tensor (%zu)", ns);
  s->rows = mem_xcalloc(ns, sizeof *s->rows);
  *plan = mem_xcalloc(ns, sizeof **plan);
  for (size_t t = 0, i = 0; t < s->cfg.ntensors; t++) {
    if (!s->cfg.tensors[t].sparse) continue;
    int rc = rows_entry(json_array_get(rows, i), &s->cfg, &s->cfg.tensors[t], i, &(*plan)[i], bytes, e);
    if (rc < 0) return rc;
    i++;
  }
  return 0;
}

/* Reads the sparse sections at *p (sizes checked against the file before):
 * ids strictly ascending and < V. */
static int get_rows(const unsigned char **p, instance_state *s, const rows_plan *plan, derr *e) {
  if (!s->rows) return 0;
  for (size_t t = 0, i = 0; t < s->cfg.ntensors; t++) {
    const tensor *tn = &s->cfg.tensors[t];
    if (!tn->sparse) continue;
    state_rows *r = &s->rows[i];
    uint64_t m = plan[i].m;
    if (state_rows_alloc(r, m, tn->dim, plan[i++].have) < 0) return derr_set(e, E_QUOTA, "out of memory");
    for (uint64_t j = 0; j < m; j++) {
      r->ids[j] = get_u64(*p + 8 * j);
      if (r->ids[j] >= tn->vrows || (j && r->ids[j] <= r->ids[j - 1]))
        return derr_set(e, E_BAD_REQUEST, "rows of %s: id %llu (entry %llu) out of range or out of order",
                        tn->name, (unsigned long long)r->ids[j], (unsigned long long)j);
    }
    *p += 8 * m;
    size_t n = (size_t)m * tn->dim;
    get_floats(r->params, *p, n);
    *p += n * sizeof(float);
    for (int b = 0; b < OPTIM_NBUF; b++)
      if (r->buf[b]) {
        get_floats(r->buf[b], *p, n);
        *p += n * sizeof(float);
      }
  }
  return 0;
}

/* The arrays after the header: params, the dense buffers in `have`, the
 * sparse sections (sizes checked before). */
static int get_arrays(const unsigned char *p, instance_state *s, unsigned have, const rows_plan *plan, derr *e) {
  size_t n = s->cfg.n;
  if (!(s->params = mem_alloc_floats(n))) return derr_set(e, E_QUOTA, "out of memory");
  get_floats(s->params, p, n);
  p += n * sizeof(float);
  for (int b = 0; b < OPTIM_NBUF; b++) {
    if (!(have & (1u << b))) continue;
    if (!(s->buf[b] = mem_alloc_floats(n))) return derr_set(e, E_QUOTA, "out of memory");
    get_floats(s->buf[b], p, n);
    p += n * sizeof(float);
  }
  return get_rows(&p, s, plan, e);
}

int persist_decode(const unsigned char *buf, size_t len, instance_state *s, derr *e) {
  memset(s, 0, sizeof *s);
  if (len < 20 || memcmp(buf, MAGIC, 8) != 0) return derr_set(e, E_BAD_REQUEST, "not a descent snapshot (bad magic)");
  uint32_t version = get_u32(buf + 8), hl = get_u32(buf + 12);
  if (version != FORMAT_VERSION && version != FORMAT_VERSION_ROWS)
    return derr_set(e, E_BAD_REQUEST, "unsupported snapshot version %u", version);
  uint32_t want = get_u32(buf + len - 4);
  uLong crc = crc32(0, NULL, 0);
  for (size_t off = 0; off < len - 4;) {
    size_t chunk = len - 4 - off > (1u << 30) ? (1u << 30) : len - 4 - off;
    crc = crc32(crc, buf + off, (uInt)chunk);
    off += chunk;
  }
  if ((uint32_t)crc != want) return derr_set(e, E_BAD_REQUEST, "checksum mismatch (damaged or cut short)");
  if (hl > MAX_HEADER || 16 + (size_t)hl + 4 > len) return derr_set(e, E_BAD_REQUEST, "header length out of range");
  json_error_t je;
  json_t *h = json_loadb((const char *)buf + 16, hl, JSON_REJECT_DUPLICATES, &je);
  if (!h) return derr_set(e, E_BAD_REQUEST, "header: %s", je.text);
  int rc = 0;
  rows_plan *plan = NULL;
  if ((rc = spec_parse_cfg_json(h, &s->cfg, e)) < 0) goto out;
  json_t *step = json_object_get(h, "step"), *ver = json_object_get(h, "version");
  if (!json_is_integer(step) || json_integer_value(step) < 0) {
    rc = derr_set(e, E_BAD_REQUEST, "header: step missing");
    goto out;
  }
  s->step = (uint64_t)json_integer_value(step);
  s->version = json_is_integer(ver) ? (uint64_t)json_integer_value(ver) : 0;
  if ((rc = decode_log_fields(h, s, e)) < 0) goto out;
  json_t *created = json_object_get(h, "created");
  s->created = json_is_number(created) && json_number_value(created) > 0 ? json_number_value(created) : 0;
  size_t n = s->cfg.n, nb = 0;
  unsigned have = 0;
  json_t *bufs = json_object_get(h, "buffers");
  for (size_t i = 0; i < json_array_size(bufs); i++) {
    int b = optim_buf_from_name(json_string_value(json_array_get(bufs, i)) ? json_string_value(json_array_get(bufs, i)) : "");
    if (b < 0 || (have & (1u << b))) {
      rc = derr_set(e, E_BAD_REQUEST, "header: bad buffer list");
      goto out;
    }
    have |= 1u << b;
    nb++;
  }
  size_t rows_bytes = 0;
  if ((rc = rows_header(json_object_get(h, "rows"), version, s, &plan, &rows_bytes, e)) < 0) goto out;
  size_t dense_bytes = (nb + 1) * n * sizeof(float);
  if (rows_bytes > len || dense_bytes > len || (size_t)16 + hl + dense_bytes + rows_bytes + 4 != len) {
    rc = derr_set(e, E_BAD_REQUEST, "size mismatch: the arrays do not match the header");
    goto out;
  }
  if ((rc = get_arrays(buf + 16 + hl, s, have, plan, e)) < 0) goto out;
  s->have = have;
  s->fresh = optim_buffers(s->cfg.alg, &s->cfg.hyper) & ~have;
  s->best_loss = INFINITY;
  s->next_id = 1;
  if ((rc = spec_parse_idem(json_object_get(h, "idempotency"), s, e)) < 0) goto out;
  json_t *rs = json_object_get(h, "random_search");
  if (rs) {
    json_t *bl = json_object_get(rs, "best_loss");
    s->best_loss = json_is_number(bl) ? json_number_value(bl) : INFINITY;
    s->next_id = (uint64_t)json_integer_value(json_object_get(rs, "next_candidate"));
    s->tells = (uint64_t)json_integer_value(json_object_get(rs, "tells"));
    s->best_id = (uint64_t)json_integer_value(json_object_get(rs, "best_candidate"));
    if (!s->next_id) s->next_id = 1;
  }
out:
  free(plan);
  json_decref(h);
  if (rc < 0) instance_state_free(s);
  return rc;
}

/* ---- files ---------------------------------------------------------------------- */

/* A directory stream over dirfd, read from the start.  A dup shares its file
 * offset with dirfd, which an earlier scan (the .tmp sweep at open) left at
 * the end: without the rewind a second scan would see no file at all. */
static DIR *scan_dir(int dirfd) {
  int fd = dup(dirfd);
  if (fd < 0) return NULL;
  DIR *d = fdopendir(fd);
  if (!d) {
    close(fd);
    return NULL;
  }
  rewinddir(d);
  return d;
}

persist *persist_open(const char *dir, derr *e) {
  if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
    derr_set(e, E_IO, "cannot create the data dir %s: %s", dir, strerror(errno));
    return NULL;
  }
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    derr_set(e, E_IO, "cannot open the data dir %s: %s", dir, strerror(errno));
    return NULL;
  }
  /* one daemon per data dir: two would overwrite each other's snapshots */
  if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
    derr_set(e, E_IO, "the data dir %s is in use by another descentd (%s)", dir, strerror(errno));
    close(fd);
    return NULL;
  }
  persist *p = mem_xcalloc(1, sizeof *p);
  p->dir = mem_xstrdup(dir);
  p->dirfd = fd;
  pthread_mutex_init(&p->lock, NULL);
  DIR *d = scan_dir(fd);
  if (d) {
    struct dirent *de;
    while ((de = readdir(d))) {
      /* only our own NAME.snap.tmp: an instance may be named "x.tmp" (x.tmp.snap) */
      size_t l = strlen(de->d_name);
      if (l > 9 && strcmp(de->d_name + l - 9, ".snap.tmp") == 0 && unlinkat(fd, de->d_name, 0) == 0)
        log_info("removed a temporary file", "file=%s", de->d_name);
    }
    closedir(d);
  }
  return p;
}

void persist_close(persist *p) {
  if (!p) return;
  close(p->dirfd);
  free(p->dir);
  free(p->w);
  pthread_mutex_destroy(&p->lock);
  free(p);
}

/* Under p->lock: writes s as NAME.snap via NAME.snap.tmp, keeping the file
 * it replaces as NAME.snap.prev (a hard link made before the rename, so at
 * every instant NAME.snap is a whole good file). */
static int write_file(persist *p, const instance_state *s, derr *e) {
  char tmp[NAME_MAX_LEN + 16], fin[NAME_MAX_LEN + 16], prev[NAME_MAX_LEN + 16];
  snprintf(tmp, sizeof tmp, "%s.snap.tmp", s->cfg.name);
  snprintf(fin, sizeof fin, "%s.snap", s->cfg.name);
  snprintf(prev, sizeof prev, "%s.snap.prev", s->cfg.name);
  int fd = openat(p->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return derr_set(e, E_IO, "cannot write %s/%s: %s", p->dir, tmp, strerror(errno));
  sink k = {.fd = fd, .crc = crc32(0, NULL, 0)};
  encode(&k, s, p->jr != NULL);
  if (!k.err && fsync(fd) < 0) k.err = errno;
  if (close(fd) < 0 && !k.err) k.err = errno;
  if (!k.err) {
    unlinkat(p->dirfd, prev, 0);
    if (linkat(p->dirfd, fin, p->dirfd, prev, 0) < 0 && errno != ENOENT) k.err = errno;
  }
  if (!k.err && renameat(p->dirfd, tmp, p->dirfd, fin) < 0) k.err = errno;
  if (!k.err && fsync(p->dirfd) < 0) k.err = errno;
  if (k.err) {
    unlinkat(p->dirfd, tmp, 0);
    return derr_set(e, E_IO, "cannot write the snapshot of %s: %s", s->cfg.name, strerror(k.err));
  }
  return 0;
}

int persist_save_state(persist *p, const instance_state *s, derr *e) {
  double t0 = wall();
  pthread_mutex_lock(&p->lock);
  written *w = written_get(p, s->cfg.name);
  int rc = 0;
  bool same = w->incarnation == s->incarnation;
  /* Incarnations only grow.  A periodic save that copied an instance just
   * before a PUT replaced it (or a DELETE and a create reused its name) may
   * reach this lock after the newer incarnation's file was written: it must
   * not put the old state back. */
  bool older = w->valid && s->incarnation < w->incarnation;
  bool skip = older || (same && (w->deleted || (w->valid && s->version <= w->version)));
  if (!skip) {
    rc = write_file(p, s, e);
    if (rc == 0) {
      w->incarnation = s->incarnation;
      w->version = s->version;
      w->valid = true;
      w->deleted = false;
      p->stats.written++;
      p->stats.last_time = wall();
      p->stats.last_duration = p->stats.last_time - t0;
      if (p->jr) journal_cut(p->jr, s->cfg.name, s->log_seq); /* the log up to it is no longer needed */
    } else {
      p->stats.failed++;
    }
  }
  pthread_mutex_unlock(&p->lock);
  return rc;
}

/* Exports in and writes it; *step (may be NULL) gets the step written. */
static int save(persist *p, instance *in, uint64_t *step, derr *e) {
  instance_state s;
  if (instance_export(in, &s) < 0) return derr_set(e, E_QUOTA, "out of memory copying the state");
  int rc = persist_save_state(p, &s, e);
  if (step) *step = s.step;
  instance_state_free(&s);
  return rc;
}

int persist_save(persist *p, instance *in, derr *e) { return save(p, in, NULL, e); }

int persist_remove(persist *p, const char *name, derr *e) {
  char fin[NAME_MAX_LEN + 16], prev[NAME_MAX_LEN + 16];
  snprintf(fin, sizeof fin, "%s.snap", name);
  snprintf(prev, sizeof prev, "%s.snap.prev", name);
  pthread_mutex_lock(&p->lock);
  written *w = written_get(p, name);
  int rc = 0;
  /* the older file first: if NAME.snap cannot go, the instance keeps its snapshot */
  if (unlinkat(p->dirfd, prev, 0) < 0 && errno != ENOENT)
    rc = derr_set(e, E_IO, "cannot remove %s: %s", prev, strerror(errno));
  else if (unlinkat(p->dirfd, fin, 0) < 0 && errno != ENOENT)
    rc = derr_set(e, E_IO, "cannot remove %s: %s", fin, strerror(errno));
  else if (fsync(p->dirfd) < 0)
    rc = derr_set(e, E_IO, "cannot sync the data dir: %s", strerror(errno));
  if (rc == 0) w->deleted = true; /* a refused delete keeps the instance, and its later saves */
  if (rc == 0 && p->jr) journal_forget(p->jr, name);
  pthread_mutex_unlock(&p->lock);
  return rc;
}

static int read_all(int dirfd, const char *name, unsigned char **out, size_t *len) {
  int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -E_IO;
  struct stat st;
  if (fstat(fd, &st) < 0 || st.st_size < 0) {
    close(fd);
    return -E_IO;
  }
  size_t n = (size_t)st.st_size;
  unsigned char *b = mem_alloc_big(n ? n : 1);
  if (!b) {
    close(fd);
    return -E_IO;
  }
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, b + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += (size_t)r;
  }
  close(fd);
  *out = b;
  *len = got;
  return 0;
}

/* Charges a loaded instance's floats and adds it. */
static int load_add(registry *r, instance *in, derr *e) {
  uint64_t floats = instance_floats(in);
  int rc = registry_check_new(r, instance_name(in), e);
  if (rc == 0) rc = registry_charge(r, floats, e);
  if (rc == 0 && (rc = registry_add(r, in, e)) < 0) registry_uncharge(r, floats);
  return rc;
}

int persist_load_all(persist *p, registry *r, const instance_env *env) {
  DIR *d = scan_dir(p->dirfd);
  if (!d) return 0;
  int loaded = 0;
  struct dirent *de;
  while ((de = readdir(d))) {
    size_t l = strlen(de->d_name);
    if (l < 6 || strcmp(de->d_name + l - 5, ".snap") != 0) continue;
    char name[NAME_MAX_LEN + 1];
    if (l - 5 > NAME_MAX_LEN) continue;
    memcpy(name, de->d_name, l - 5);
    name[l - 5] = 0;
    if (!spec_name_ok(name)) continue;
    unsigned char *buf;
    size_t len;
    if (read_all(p->dirfd, de->d_name, &buf, &len) < 0) {
      log_error("snapshot unreadable", "file=%s error=\"%s\"", de->d_name, strerror(errno));
      continue;
    }
    instance_state s;
    derr e = {0};
    int rc = persist_decode(buf, len, &s, &e);
    mem_free_big(buf, len ? len : 1);
    bool decoded = rc == 0;
    if (rc == 0 && strcmp(s.cfg.name, name) != 0)
      rc = derr_set(&e, E_BAD_REQUEST, "the file holds instance '%s'", s.cfg.name);
    if (rc < 0) {
      char bad[NAME_MAX_LEN + 16];
      snprintf(bad, sizeof bad, "%s.snap.bad", name);
      renameat(p->dirfd, de->d_name, p->dirfd, bad);
      log_error("snapshot refused, not loaded", "file=%s/%s reason=\"%s\" kept_as=%s previous=%s.snap.prev",
                p->dir, de->d_name, e.msg, bad, name);
      if (decoded) instance_state_free(&s);
      continue;
    }
    instance *in = instance_from_state(&s, env);
    uint64_t version = s.version, step = s.step;
    instance_state_free(&s);
    if (!in || load_add(r, in, &e) < 0) {
      log_error("snapshot not loaded", "file=%s reason=\"%s\"", de->d_name, in ? e.msg : "out of memory");
      instance_unref(in);
      continue;
    }
    pthread_mutex_lock(&p->lock);
    written *w = written_get(p, name);
    w->incarnation = instance_incarnation(in);
    w->version = version;
    w->valid = true;
    w->deleted = false;
    pthread_mutex_unlock(&p->lock);
    log_info("snapshot loaded", "instance=%s step=%llu", name, (unsigned long long)step);
    instance_unref(in);
    loaded++;
  }
  closedir(d);
  return loaded;
}

/* Whether in changed since the file last written for it. */
static bool changed(persist *p, instance *in) {
  pthread_mutex_lock(&p->lock);
  written *w = written_get(p, instance_name(in));
  bool same = w->incarnation == instance_incarnation(in) && w->valid;
  uint64_t last = w->version;
  pthread_mutex_unlock(&p->lock);
  bool deleted;
  uint64_t v = instance_version(in, &deleted);
  return !deleted && !(same && v == last);
}

int persist_save_now(persist *p, instance *in, uint64_t *step, derr *e) {
  instance_change_lock(in);
  int rc;
  if (changed(p, in)) {
    rc = save(p, in, step, e);
  } else {
    instance_info info; /* unchanged since its file: the file holds this step */
    instance_info_get(in, &info);
    *step = info.step;
    rc = 0;
  }
  instance_change_unlock(in);
  return rc;
}

int persist_snapshot_changed(persist *p, registry *r, const char *fail_msg, size_t *failed) {
  instance **all;
  size_t n = registry_list(r, &all), bad = 0;
  int count = 0;
  for (size_t i = 0; i < n; i++) {
    instance *in = all[i];
    derr e = {0};
    instance_change_lock(in);
    int rc = changed(p, in) ? persist_save(p, in, &e) : 1;
    instance_change_unlock(in);
    if (rc == 0) {
      count++;
    } else if (rc < 0) {
      bad++;
      log_error(fail_msg ? fail_msg : "snapshot failed", "instance=%s error=\"%s\"", instance_name(in), e.msg);
    }
    instance_unref(in);
  }
  free(all);
  if (failed) *failed = bad;
  return count;
}

void persist_set_journal(persist *p, journal *j) { p->jr = j; }

void persist_get_stats(persist *p, persist_stats *out) {
  pthread_mutex_lock(&p->lock);
  *out = p->stats;
  pthread_mutex_unlock(&p->lock);
}
