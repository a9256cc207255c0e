/* wal: the journal's local backend: per-instance log segments in the data
 * dir (DIR/NAME.log.N, format in proto/log.md), one writer thread doing
 * group commit (every change queued while the last batch was written goes
 * in the next: writev from the requests' own buffers, one fdatasync per
 * instance file), replay at start-up (torn tails dropped, corruption
 * refused), cuts after snapshots.  Never calls done or journal_apply with a
 * lock held; never takes an instance lock itself.  Threads: any (submit,
 * under an instance lock: the queue mutex is a leaf), the writer, snapshot
 * threads (cut, forget, under persist's lock: the file mutex comes after
 * it), main (open, replay, stop). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "instance.h"
#include "journal.h"
#include "log.h"
#include "mem.h"

#define SEG_MAGIC "DESCENTL"
#define SEG_HDR 16
#define FRAME 8
#define ENTRY_MIN 72
#define MAX_ENTRY ((size_t)1 << 40)

typedef struct segment {
  uint64_t num, last_seq; /* last_seq: of its last entry (0: none) */
} segment;

typedef struct stream {
  char name[NAME_MAX_LEN + 1];
  int fd; /* the current segment (the last in segs), -1: the next write opens one */
  off_t size, batch_start;
  bool in_batch;
  segment *segs;
  size_t nsegs, capsegs;
} stream;

typedef struct wal {
  char *dir;
  int dirfd;
  pthread_mutex_t qlock;
  pthread_cond_t qcond;
  change *head, *tail;
  size_t qn; /* changes queued */
  bool stopping, started, joined;
  pthread_t thread;
  pthread_mutex_t flock; /* streams and files */
  stream *streams;
  size_t nstreams, capstreams;
  uint64_t next_seg;
  struct iovec *iov;
  size_t capiov;
  unsigned char *frames;
  size_t capframes;
  _Atomic uint64_t entries, batches, fsyncs, bytes, failed, dropped;
} wal;

static int errno_code(int err) {
  if (err == ENOSPC || err == EDQUOT || err == EFBIG) return E_DISK_FULL;
  if (err == EROFS || err == EACCES || err == EPERM) return E_READ_ONLY;
  return E_IO;
}

static stream *stream_get(wal *w, const char *name, bool create) {
  for (size_t i = 0; i < w->nstreams; i++)
    if (!strcmp(w->streams[i].name, name)) return &w->streams[i];
  if (!create) return NULL;
  if (w->nstreams == w->capstreams) {
    w->capstreams = w->capstreams ? w->capstreams * 2 : 16;
    w->streams = mem_xrealloc(w->streams, w->capstreams * sizeof *w->streams);
  }
  stream *s = &w->streams[w->nstreams++];
  memset(s, 0, sizeof *s);
  snprintf(s->name, sizeof s->name, "%s", name);
  s->fd = -1;
  return s;
}

static void seg_path(char *out, size_t cap, const char *name, uint64_t num) {
  snprintf(out, cap, "%s.log.%016llx", name, (unsigned long long)num);
}

static segment *seg_add(stream *s, uint64_t num) {
  if (s->nsegs == s->capsegs) {
    s->capsegs = s->capsegs ? s->capsegs * 2 : 4;
    s->segs = mem_xrealloc(s->segs, s->capsegs * sizeof *s->segs);
  }
  segment *g = &s->segs[s->nsegs++];
  *g = (segment){num, 0};
  return g;
}

/* Under flock: a new current segment for s (header written, directory
 * synced, so the file survives a power cut).  0 or an errno. */
static int seg_open(wal *w, stream *s) {
  char path[NAME_MAX_LEN + 32];
  uint64_t num = w->next_seg++;
  seg_path(path, sizeof path, s->name, num);
  /* O_APPEND: after a batch is cut back, the next one goes at the new end */
  int fd = openat(w->dirfd, path, O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return errno;
  unsigned char hdr[SEG_HDR] = {0};
  memcpy(hdr, SEG_MAGIC, 8);
  hdr[8] = 1;
  int err = 0;
  if (write(fd, hdr, SEG_HDR) != SEG_HDR) err = errno ? errno : EIO;
  if (!err && fsync(w->dirfd) < 0) err = errno;
  if (err) {
    close(fd);
    unlinkat(w->dirfd, path, 0);
    return err;
  }
  s->fd = fd;
  s->size = SEG_HDR;
  seg_add(s, num);
  return 0;
}

/* Writes all of iov[0..n) at fd's end; 0 or an errno. */
static int write_all(int fd, struct iovec *iov, int n) {
  while (n > 0) {
    ssize_t r = writev(fd, iov, n > IOV_MAX ? IOV_MAX : n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return errno;
    size_t left = (size_t)r;
    while (n > 0 && left >= iov->iov_len) {
      left -= iov->iov_len;
      iov++, n--;
    }
    if (n > 0) {
      iov->iov_base = (char *)iov->iov_base + left;
      iov->iov_len -= left;
    }
  }
  return 0;
}

static uint32_t change_crc(const change *c) {
  uLong crc = crc32(0, NULL, 0);
  for (int i = 0; i < c->iovcnt; i++) {
    const unsigned char *p = c->iov[i].iov_base;
    for (size_t off = 0, n = c->iov[i].iov_len; off < n;) {
      size_t chunk = n - off > (1u << 30) ? (1u << 30) : n - off;
      crc = crc32(crc, p + off, (uInt)chunk);
      off += chunk;
    }
  }
  return (uint32_t)crc;
}

/* Under flock: the frames of the changes from c on that belong to s (up to
 * the first of another instance) as one writev.  *next: the first not
 * written.  0 or an errno. */
static int write_run(wal *w, stream *s, change *c, change **next) {
  size_t nio = 0, nf = 0, niov = 0, nframes = 0;
  for (change *x = c; x && !strcmp(x->instance, s->name); x = x->next) niov += 1 + (size_t)x->iovcnt, nframes++;
  if (niov > w->capiov) w->iov = mem_xrealloc(w->iov, (w->capiov = niov * 2) * sizeof *w->iov);
  if (nframes * FRAME > w->capframes) w->frames = mem_xrealloc(w->frames, w->capframes = nframes * FRAME * 2);
  change *x = c;
  size_t bytes = 0;
  for (; x && !strcmp(x->instance, s->name); x = x->next) {
    unsigned char *f = w->frames + FRAME * nf++;
    uint32_t len = (uint32_t)x->len, crc = change_crc(x);
    memcpy(f, &len, 4);
    memcpy(f + 4, &crc, 4);
    w->iov[nio++] = (struct iovec){f, FRAME};
    for (int i = 0; i < x->iovcnt; i++) w->iov[nio++] = x->iov[i];
    bytes += FRAME + x->len;
  }
  *next = x;
  int err = write_all(s->fd, w->iov, (int)nio);
  if (err) return err;
  s->size += (off_t)bytes;
  atomic_fetch_add(&w->bytes, bytes);
  return 0;
}

/* Under flock: cuts every stream of the batch back to its length before it. */
static void undo_batch(wal *w) {
  for (size_t i = 0; i < w->nstreams; i++) {
    stream *s = &w->streams[i];
    if (!s->in_batch) continue;
    s->in_batch = false;
    if (s->fd < 0) continue;
    if (ftruncate(s->fd, s->batch_start) == 0) fdatasync(s->fd);
    s->size = s->batch_start;
  }
}

/* Writes and syncs the batch; 0, or an errno (the files cut back). */
static int write_batch(wal *w, change *batch) {
  int err = 0;
  pthread_mutex_lock(&w->flock);
  for (change *c = batch; c && !err;) {
    stream *s = stream_get(w, c->instance, true);
    if (s->fd < 0 && (err = seg_open(w, s))) break;
    if (!s->in_batch) {
      s->in_batch = true;
      s->batch_start = s->size;
    }
    change *next;
    err = write_run(w, s, c, &next);
    for (; !err && c != next; c = c->next) s->segs[s->nsegs - 1].last_seq = c->seq;
  }
  for (size_t i = 0; i < w->nstreams && !err; i++) {
    stream *s = &w->streams[i];
    if (!s->in_batch) continue;
    if (fdatasync(s->fd) < 0) err = errno;
    atomic_fetch_add(&w->fsyncs, 1);
  }
  if (err) undo_batch(w);
  for (size_t i = 0; i < w->nstreams; i++) w->streams[i].in_batch = false;
  pthread_mutex_unlock(&w->flock);
  return err;
}

static change *take_queue(wal *w) {
  pthread_mutex_lock(&w->qlock);
  change *b = w->head;
  w->head = w->tail = NULL;
  w->qn = 0;
  pthread_mutex_unlock(&w->qlock);
  return b;
}

static void finish_list(wal *w, change *c, int code, const derr *e) {
  for (change *next; c; c = next) {
    next = c->next;
    atomic_fetch_add(code ? &w->failed : &w->entries, 1);
    c->done(c, code, e);
  }
}

/* A batch that could not be made durable: it and everything queued behind
 * it (validated against a state that will not be) are refused. */
static void fail_batch(wal *w, change *batch, int err) {
  derr e = {0};
  int code = errno_code(err);
  derr_set(&e, code, "the change could not be logged in %s: %s", w->dir, strerror(err));
  log_error("log write failed: changes refused", "dir=%s error=\"%s\"", w->dir, strerror(err));
  finish_list(w, batch, code, &e);
  finish_list(w, take_queue(w), code, &e);
}

static uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Under qlock: the next batch.  Group commit's gather: when fewer changes
 * wait than the last batch and those queued since held (the writers just
 * answered are about to push again), wait a little for them, at most a
 * quarter of the last sync's time and 2 ms, so one sync carries them all
 * instead of the writers splitting into two groups that alternate.  One
 * writer (target 1) never waits. */
static change *next_batch(wal *w, size_t target, uint64_t sync_ns) {
  while (!w->head && !w->stopping) pthread_cond_wait(&w->qcond, &w->qlock);
  if (w->qn < target && !w->stopping) {
    uint64_t wait = sync_ns / 4 < 2000000 ? sync_ns / 4 : 2000000;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    uint64_t ns = (uint64_t)until.tv_nsec + wait;
    until.tv_sec += (time_t)(ns / 1000000000u);
    until.tv_nsec = (long)(ns % 1000000000u);
    while (w->qn < target && !w->stopping)
      if (pthread_cond_timedwait(&w->qcond, &w->qlock, &until) != 0) break;
  }
  change *batch = w->head;
  w->head = w->tail = NULL;
  w->qn = 0;
  return batch;
}

static void *writer_main(void *arg) {
  wal *w = arg;
  size_t target = 1;
  uint64_t sync_ns = 0;
  for (;;) {
    pthread_mutex_lock(&w->qlock);
    change *batch = next_batch(w, target, sync_ns);
    pthread_mutex_unlock(&w->qlock);
    if (!batch) break; /* stopping, and nothing left */
    size_t n = 0;
    for (change *c = batch; c; c = c->next) n++;
    uint64_t t0 = mono_ns();
    int err = write_batch(w, batch);
    sync_ns = mono_ns() - t0;
    atomic_fetch_add(&w->batches, 1);
    pthread_mutex_lock(&w->qlock);
    target = n + w->qn; /* those in this batch will push again; those queued meanwhile wait */
    pthread_mutex_unlock(&w->qlock);
    if (err) fail_batch(w, batch, err);
    else finish_list(w, batch, 0, NULL);
  }
  return NULL;
}

static void wal_submit(void *self, change *c) {
  wal *w = self;
  c->next = NULL;
  pthread_mutex_lock(&w->qlock);
  if (w->tail) w->tail->next = c;
  else w->head = c;
  w->tail = c;
  w->qn++;
  pthread_cond_signal(&w->qcond);
  pthread_mutex_unlock(&w->qlock);
}

/* Under flock: removes segment k of s (file and entry). */
static void seg_remove(wal *w, stream *s, size_t k) {
  char path[NAME_MAX_LEN + 32];
  seg_path(path, sizeof path, s->name, s->segs[k].num);
  unlinkat(w->dirfd, path, 0);
  memmove(&s->segs[k], &s->segs[k + 1], (s->nsegs - k - 1) * sizeof *s->segs);
  s->nsegs--;
}

static void wal_cut(void *self, const char *name, uint64_t seq) {
  wal *w = self;
  pthread_mutex_lock(&w->flock);
  stream *s = stream_get(w, name, false);
  if (s) {
    if (s->fd >= 0) { /* rotate: the next change starts a new segment */
      close(s->fd);
      s->fd = -1;
    }
    bool removed = false;
    for (size_t k = 0; k < s->nsegs;) {
      if (s->segs[k].last_seq <= seq) seg_remove(w, s, k), removed = true;
      else k++;
    }
    if (removed) fsync(w->dirfd);
  }
  pthread_mutex_unlock(&w->flock);
}

static void wal_forget(void *self, const char *name) {
  wal *w = self;
  pthread_mutex_lock(&w->flock);
  stream *s = stream_get(w, name, false);
  if (s) {
    if (s->fd >= 0) close(s->fd);
    s->fd = -1;
    while (s->nsegs) seg_remove(w, s, 0);
    fsync(w->dirfd);
  }
  pthread_mutex_unlock(&w->flock);
}

static void wal_stop(void *self) {
  wal *w = self;
  pthread_mutex_lock(&w->qlock);
  w->stopping = true;
  pthread_cond_broadcast(&w->qcond);
  pthread_mutex_unlock(&w->qlock);
  if (w->started && !w->joined) {
    pthread_join(w->thread, NULL);
    w->joined = true;
  }
}

static void wal_free(void *self) {
  wal *w = self;
  for (size_t i = 0; i < w->nstreams; i++) {
    if (w->streams[i].fd >= 0) close(w->streams[i].fd);
    free(w->streams[i].segs);
  }
  free(w->streams);
  free(w->iov);
  free(w->frames);
  if (w->dirfd >= 0) close(w->dirfd);
  pthread_mutex_destroy(&w->qlock);
  pthread_mutex_destroy(&w->flock);
  pthread_cond_destroy(&w->qcond);
  free(w->dir);
  free(w);
}

static void wal_stats(void *self, journal_stats *out) {
  wal *w = self;
  out->entries = atomic_load(&w->entries);
  out->batches = atomic_load(&w->batches);
  out->fsyncs = atomic_load(&w->fsyncs);
  out->bytes = atomic_load(&w->bytes);
  out->failed = atomic_load(&w->failed);
  out->dropped = atomic_load(&w->dropped);
}

static int replay_all(wal *w, journal *j, derr *e);

static int wal_replay(void *self, journal *j, derr *e) {
  wal *w = self;
  int rc = replay_all(w, j, e);
  if (rc == 0 && !w->started) {
    if (pthread_create(&w->thread, NULL, writer_main, w) != 0)
      return derr_set(e, E_INTERNAL, "cannot start the log writer thread");
    w->started = true;
  }
  return rc;
}

static const journal_backend wal_backend = {
    .name = "log",
    .submit = wal_submit,
    .replay = wal_replay,
    .cut = wal_cut,
    .forget = wal_forget,
    .stop = wal_stop,
    .free = wal_free,
    .stats = wal_stats,
};

void *wal_open(const char *dir, const journal_backend **be, derr *e) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    derr_set(e, E_IO, "cannot open the data dir %s: %s", dir, strerror(errno));
    return NULL;
  }
  wal *w = mem_xcalloc(1, sizeof *w);
  w->dir = mem_xstrdup(dir);
  w->dirfd = fd;
  w->next_seg = 1;
  pthread_mutex_init(&w->qlock, NULL);
  pthread_mutex_init(&w->flock, NULL);
  pthread_cond_init(&w->qcond, NULL);
  *be = &wal_backend;
  return w;
}

/* ---- replay ------------------------------------------------------------------ */

typedef struct segfile {
  char name[NAME_MAX_LEN + 1];
  uint64_t num;
} segfile;

static int cmp_segfile(const void *a, const void *b) {
  const segfile *x = a, *y = b;
  int c = strcmp(x->name, y->name);
  return c ? c : (x->num > y->num) - (x->num < y->num);
}

/* NAME.log.N (N: 16 hex digits) into f; false for other files. */
static bool parse_segname(const char *fn, segfile *f) {
  const char *dot = strstr(fn, ".log.");
  if (!dot || dot == fn || (size_t)(dot - fn) > NAME_MAX_LEN || strlen(dot + 5) != 16) return false;
  char *end;
  f->num = strtoull(dot + 5, &end, 16);
  if (*end) return false;
  memcpy(f->name, fn, (size_t)(dot - fn));
  f->name[dot - fn] = 0;
  return true;
}

/* Every segment file of the data dir, sorted by instance then number. */
static size_t list_segments(wal *w, segfile **out) {
  int fd = dup(w->dirfd);
  DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
  size_t n = 0, cap = 0;
  *out = NULL;
  if (!d) {
    if (fd >= 0) close(fd);
    return 0;
  }
  rewinddir(d);
  for (struct dirent *de; (de = readdir(d));) {
    segfile f;
    if (!parse_segname(de->d_name, &f)) continue;
    if (n == cap) *out = mem_xrealloc(*out, (cap = cap ? cap * 2 : 16) * sizeof **out);
    (*out)[n++] = f;
  }
  closedir(d);
  if (n) qsort(*out, n, sizeof **out, cmp_segfile);
  return n;
}

static int read_at(int fd, void *buf, size_t n, off_t off) {
  for (size_t got = 0; got < n;) {
    ssize_t r = pread(fd, (char *)buf + got, n - got, off + (off_t)got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    got += (size_t)r;
  }
  return 0;
}

/* Whether a whole, valid frame starts anywhere in (from, size). */
static bool valid_frame_after(int fd, off_t from, off_t size) {
  size_t n = (size_t)(size - from);
  unsigned char *b = mem_alloc_big(n ? n : 1);
  bool found = false;
  if (b && read_at(fd, b, n, from) == 0) {
    for (size_t y = 1; y + FRAME + ENTRY_MIN <= n && !found; y++) {
      if (memcmp(b + y + FRAME, "DLE1", 4)) continue;
      uint32_t len, crc;
      memcpy(&len, b + y, 4);
      memcpy(&crc, b + y + 4, 4);
      if (len < ENTRY_MIN || len > n - y - FRAME) continue;
      found = (uint32_t)crc32(crc32(0, NULL, 0), b + y + FRAME, len) == crc;
    }
  }
  if (b) mem_free_big(b, n ? n : 1);
  return found;
}

typedef struct seg_reader {
  wal *w;
  journal *j;
  const char *path;
  int fd;
  off_t size;
  unsigned char *buf;
  size_t cap;
  bool gone; /* the file was removed */
} seg_reader;

/* The frame at off: its entry into r->buf; its length, or 0 if it is not
 * a whole valid frame. */
static size_t read_frame(seg_reader *r, off_t off) {
  unsigned char f[FRAME];
  if (r->size - off < FRAME || read_at(r->fd, f, FRAME, off) < 0) return 0;
  uint32_t len, crc;
  memcpy(&len, f, 4);
  memcpy(&crc, f + 4, 4);
  if (len < ENTRY_MIN || (off_t)len > r->size - off - FRAME) return 0;
  if (len > r->cap) r->buf = mem_xrealloc(r->buf, r->cap = len);
  if (read_at(r->fd, r->buf, len, off + FRAME) < 0) return 0;
  uLong c = crc32(0, NULL, 0);
  for (size_t o = 0; o < len;) {
    size_t chunk = len - o > (1u << 30) ? (1u << 30) : len - o;
    c = crc32(c, r->buf + o, (uInt)chunk);
    o += chunk;
  }
  return (uint32_t)c == crc ? len : 0;
}

/* The bad frame at off: a torn tail (the last segment, nothing valid after
 * it) is cut off; anything else refuses the start. */
static int bad_frame(seg_reader *r, off_t off, bool last, derr *e) {
  if (last && off < SEG_HDR && r->size < SEG_HDR + FRAME + ENTRY_MIN) { /* its creation was cut short */
    log_warn("log: removed a segment cut short at its creation", "file=%s/%s", r->w->dir, r->path);
    unlinkat(r->w->dirfd, r->path, 0);
    r->gone = true;
    return 0;
  }
  if (!last || valid_frame_after(r->fd, off, r->size))
    return derr_set(e, E_IO,
                    "log: %s/%s: corrupt entry at offset %lld with valid entries after it: refusing to start "
                    "(move the file away to start without its changes, or restore it)",
                    r->w->dir, r->path, (long long)off);
  if (ftruncate(r->fd, off) < 0 || fdatasync(r->fd) < 0)
    return derr_set(e, E_IO, "log: %s/%s: cannot cut the torn tail: %s", r->w->dir, r->path, strerror(errno));
  log_warn("log: dropped a torn tail (never acknowledged)", "file=%s/%s offset=%lld bytes=%lld", r->w->dir,
           r->path, (long long)off, (long long)(r->size - off));
  atomic_fetch_add(&r->w->dropped, 1);
  return 0;
}

/* Applies the entries of one open segment; *last_seq: its last entry's seq. */
static int replay_frames(seg_reader *r, bool last, uint64_t *last_seq, derr *e) {
  unsigned char hdr[SEG_HDR];
  if (r->size < SEG_HDR || read_at(r->fd, hdr, SEG_HDR, 0) < 0 || memcmp(hdr, SEG_MAGIC, 8) || hdr[8] != 1)
    return bad_frame(r, 0, last, e);
  for (off_t off = SEG_HDR; off < r->size;) {
    size_t len = read_frame(r, off);
    if (!len) return bad_frame(r, off, last, e);
    derr ae = {0};
    int rc = journal_apply(r->j, r->buf, len, &ae);
    if (rc < 0)
      return derr_set(e, E_IO, "log: %s/%s: entry at offset %lld cannot be applied: %s", r->w->dir, r->path,
                      (long long)off, ae.msg);
    if (rc == 2)
      log_warn("log: an entry refused when it was logged is refused again", "file=%s/%s offset=%lld reason=\"%s\"",
               r->w->dir, r->path, (long long)off, ae.msg);
    memcpy(last_seq, r->buf + 16, 8);
    off += (off_t)(FRAME + len);
  }
  return 0;
}

static int replay_segment(wal *w, journal *j, stream *s, const segfile *f, bool last, derr *e) {
  char path[NAME_MAX_LEN + 32];
  seg_path(path, sizeof path, f->name, f->num);
  seg_reader r = {.w = w, .j = j, .path = path};
  if ((r.fd = openat(w->dirfd, path, O_RDWR | O_CLOEXEC)) < 0)
    return derr_set(e, E_IO, "log: cannot open %s/%s: %s", w->dir, path, strerror(errno));
  struct stat st;
  int rc = fstat(r.fd, &st) < 0 ? derr_set(e, E_IO, "log: cannot stat %s", path) : 0;
  r.size = st.st_size;
  segment *g = seg_add(s, f->num);
  if (rc == 0) rc = replay_frames(&r, last, &g->last_seq, e);
  if (r.gone) s->nsegs--;
  close(r.fd);
  free(r.buf);
  return rc;
}

/* Segments of an instance that is not loaded: deleted just before a crash
 * (removed), or its snapshot was refused (kept, for whoever repairs it). */
static void orphan(wal *w, const segfile *f, size_t n) {
  char bad[NAME_MAX_LEN + 16];
  snprintf(bad, sizeof bad, "%s.snap.bad", f->name);
  bool keep = faccessat(w->dirfd, bad, F_OK, 0) == 0;
  log_warn(keep ? "log: segments of an instance not loaded, kept" : "log: segments of a deleted instance, removed",
           "instance=%s segments=%zu", f->name, n);
  for (size_t i = 0; i < n && !keep; i++) {
    char path[NAME_MAX_LEN + 32];
    seg_path(path, sizeof path, f[i].name, f[i].num);
    unlinkat(w->dirfd, path, 0);
  }
}

static int replay_all(wal *w, journal *j, derr *e) {
  segfile *f;
  size_t n = list_segments(w, &f);
  int rc = 0;
  for (size_t i = 0; i < n; i++)
    if (f[i].num >= w->next_seg) w->next_seg = f[i].num + 1;
  for (size_t i = 0, k; i < n && rc == 0; i = k) {
    for (k = i; k < n && !strcmp(f[k].name, f[i].name);) k++;
    if (!journal_knows(j, f[i].name)) {
      orphan(w, &f[i], k - i);
      continue;
    }
    stream *s = stream_get(w, f[i].name, true);
    for (size_t m = i; m < k && rc == 0; m++) rc = replay_segment(w, j, s, &f[m], m == k - 1, e);
  }
  free(f);
  return rc;
}
