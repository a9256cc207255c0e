/* replica: the Raft member (see replica.h).  Owns struct raft and its libuv
 * I/O, the queue of proposals from HTTP threads, the proposals in flight,
 * the FSM and the announce table (member id -> HTTP URL, part of the
 * replicated state and of Raft's snapshots).  Must never call raft off the
 * loop thread nor hold qlock or slock while calling out.  The loop thread
 * runs everything but replica_propose*, replica_status_get and
 * replica_applied (any thread).
 *
 * Entry bytes: u8 kind (1 a change, 2 an announce), 3 zero bytes, u32 the
 * entry's length before padding, then
 *   change:   u64 nonce, u64 seq (who proposed it), the change's bytes
 *   announce: u64 member id, u16 length, the member's HTTP URL
 * and zeros to a multiple of 8 bytes: libraft's uv backend writes (and
 * checksums) an entry's buffer rounded up to 8 bytes, so the padding must be
 * ours, allocated and zeroed, never bytes past the allocation.
 */
#include "replica.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <raft.h>
#include <raft/uv.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "mem.h"
#include "persist.h"

#define POLL_MS 10
#define HEAD 24 /* kind + pad + nonce + seq */
#define KIND_CHANGE 1
#define KIND_ANNOUNCE 2
#define SNAP_MAGIC 0x4e535244u /* "DRSN" */

typedef struct prop {
  struct raft_apply req;
  struct prop *next;
  void *origin; /* NULL once applied (or an announce) */
  uint64_t seq;
  struct raft_buffer buf;
  bool pending; /* on the in-flight list */
  size_t cost; /* counted in rp->inflight (0: not counted): the entry's bytes */
} prop;

typedef struct job { /* a membership change (or a read barrier) on its way to the loop */
  struct raft_change req;
  struct raft_barrier breq; /* barrier: replica_read_barrier */
  struct job *next;
  replica *rp;
  bool barrier;
  bool add;
  uint64_t id;
  char address[64];
  replica_change_fn done;
  void *ctx;
} job;

typedef struct announced {
  uint64_t id;
  char url[128];
} announced;

struct replica {
  uv_loop_t *loop;
  struct raft raft;
  struct raft_io io;
  struct raft_uv_transport tr;
  struct raft_uv_transport inner; /* libraft's TCP transport, wrapped by tr (TCP_NODELAY) */
  raft_uv_accept_cb accept_cb;     /* libraft's, given to tr.listen */
  raft_uv_transport_close_cb tr_close_cb; /* libraft's, given to tr.close */
  struct raft_fsm fsm;
  replica_opts o;
  char dir[PATH_MAX];
  char addr[64];
  char http_url[128];
  uv_async_t async;
  uv_timer_t poll;
  bool started, closing;
  bool failed;           /* loop thread: raft went unavailable (a storage error), logged */
  bool qclosed;          /* under qlock: replica_close ran */
  pthread_mutex_t qlock; /* the queue from other threads */
  prop *qhead, *qtail;
  job *jobs;             /* under qlock */
  prop *flight;          /* loop thread: proposals raft holds */
  prop *held, *held_tail; /* loop thread: proposals waiting for room in the meter (FIFO) */
  size_t inflight;       /* loop thread: bytes handed to raft, not yet applied or failed */
  size_t budget;         /* the meter: replica_max_entry's bytes */
  uint64_t pace_until;   /* loop thread: uv_now before which no held proposal goes (0: none) */
  unsigned heartbeat_ms;
  uint64_t last_poll, stall_logged; /* loop thread: ms (stall_check) */
  uint64_t nonce, next_seq;
  uint64_t announced_term;
  bool led; /* on_poll: led at the last poll (a fall calls o.lost) */
  uint64_t term_index;   /* loop thread: the index of our announce of announced_term */
  announced ann[REPLICA_MAX_MEMBERS];
  size_t nann;
  pthread_mutex_t slock; /* st */
  replica_status st;
  atomic_uint_fast64_t applied;
  atomic_bool leader;
  atomic_bool reads_ready; /* leader, and it applied its own term's announce */
};

/* ---- little-endian helpers --------------------------------------------------- */

static void put64(unsigned char *b, uint64_t v) {
  for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
}
static uint64_t get64(const unsigned char *b) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v |= (uint64_t)b[i] << (8 * i);
  return v;
}

/* ---- --cluster ------------------------------------------------------------------ */

int replica_parse_cluster(const char *spec, uint64_t *ids, char (*addrs)[64], size_t max, size_t *n, derr *e) {
  *n = 0;
  if (!spec || !*spec) return derr_set(e, E_BAD_REQUEST, "--cluster: expected ID=HOST:PORT,...");
  const char *p = spec;
  while (*p) {
    const char *end = strchr(p, ',');
    size_t l = end ? (size_t)(end - p) : strlen(p);
    char item[96];
    if (l == 0 || l >= sizeof item) return derr_set(e, E_BAD_REQUEST, "--cluster: bad member '%.*s'", (int)l, p);
    memcpy(item, p, l);
    item[l] = 0;
    char *eq = strchr(item, '='), *colon = eq ? strrchr(eq, ':') : NULL, *stop;
    unsigned long long id = eq ? strtoull(item, &stop, 10) : 0;
    if (!eq || stop != eq || id == 0 || !colon || colon == eq + 1 || !colon[1] || strlen(eq + 1) >= 64)
      return derr_set(e, E_BAD_REQUEST, "--cluster: '%s' is not ID=HOST:PORT (ID a positive integer)", item);
    if (*n == max) return derr_set(e, E_BAD_REQUEST, "--cluster: more than %zu members", max);
    for (size_t i = 0; i < *n; i++)
      if (ids[i] == id) return derr_set(e, E_BAD_REQUEST, "--cluster: member %llu is given twice", id);
    ids[*n] = id;
    snprintf(addrs[*n], 64, "%s", eq + 1);
    (*n)++;
    p += l;
    if (*p == ',') p++;
  }
  return 0;
}

/* ---- the announce table ------------------------------------------------------------ */

static void announce_set(replica *rp, uint64_t id, const char *url, size_t len) {
  size_t i = 0;
  while (i < rp->nann && rp->ann[i].id != id) i++;
  if (i == rp->nann) {
    if (rp->nann == REPLICA_MAX_MEMBERS) return;
    rp->nann++;
  }
  rp->ann[i].id = id;
  snprintf(rp->ann[i].url, sizeof rp->ann[i].url, "%.*s", (int)len, url);
}

static const char *announce_get(const replica *rp, uint64_t id) {
  for (size_t i = 0; i < rp->nann; i++)
    if (rp->ann[i].id == id) return rp->ann[i].url;
  return "";
}

/* ---- status ------------------------------------------------------------------------- */

static int role_of(int state) {
  switch (state) {
  case RAFT_LEADER: return REPLICA_LEADER;
  case RAFT_CANDIDATE: return REPLICA_CANDIDATE;
  case RAFT_FOLLOWER: return REPLICA_FOLLOWER;
  default: return REPLICA_UNAVAILABLE;
  }
}

/* Loop thread: a leader serves reads only once it has applied an entry of
 * its own term (its announce): before, its state may lack entries its
 * predecessor acknowledged (committed, not yet applied here). */
static void reads_check(replica *rp, uint64_t applied) {
  bool ready = raft_state(&rp->raft) == RAFT_LEADER && rp->announced_term == rp->raft.current_term &&
               applied >= rp->term_index;
  atomic_store(&rp->reads_ready, ready);
}

/* Loop thread: copies raft's figures into st. */
static void refresh(replica *rp) {
  struct raft *r = &rp->raft;
  replica_status s = {0};
  s.id = rp->o.id;
  s.role = role_of(raft_state(r));
  s.term = r->current_term;
  const char *laddr = NULL;
  raft_id lid = 0;
  raft_leader(r, &lid, &laddr);
  if (lid == rp->o.id && s.role != REPLICA_LEADER) lid = 0; /* a leader that stepped down names itself */
  s.leader_id = lid;
  snprintf(s.leader_http, sizeof s.leader_http, "%s", lid ? announce_get(rp, lid) : "");
  s.commit_index = r->commit_index;
  s.applied_index = raft_last_applied(r);
  s.last_index = raft_last_index(r);
  for (unsigned i = 0; i < r->configuration.n && s.nmembers < REPLICA_MAX_MEMBERS; i++) {
    const struct raft_server *sv = &r->configuration.servers[i];
    replica_member *m = &s.members[s.nmembers++];
    m->id = sv->id;
    snprintf(m->address, sizeof m->address, "%s", sv->address);
    snprintf(m->http, sizeof m->http, "%s", announce_get(rp, sv->id));
    m->voter = sv->role == RAFT_VOTER;
    m->applied = -1;
    if (sv->id == rp->o.id) m->applied = (int64_t)s.applied_index;
    else if (s.role == REPLICA_LEADER && r->leader_state.progress)
      m->applied = (int64_t)r->leader_state.progress[i].match_index;
  }
  pthread_mutex_lock(&rp->slock);
  rp->st = s;
  pthread_mutex_unlock(&rp->slock);
  atomic_store(&rp->applied, s.applied_index);
  atomic_store(&rp->leader, s.role == REPLICA_LEADER);
  reads_check(rp, s.applied_index);
}

void replica_status_get(replica *rp, replica_status *out) {
  pthread_mutex_lock(&rp->slock);
  *out = rp->st;
  pthread_mutex_unlock(&rp->slock);
}

static _Thread_local uint64_t applying; /* the loop thread, inside an apply: its index */

uint64_t replica_applied(replica *rp) { return applying ? applying : atomic_load(&rp->applied); }

/* Loop thread, after an entry was applied: the figures readers see move
 * with it (GET /v1/cluster, Descent-Applied-Index). */
static void applied_now(replica *rp, uint64_t index) {
  pthread_mutex_lock(&rp->slock);
  rp->st.applied_index = index;
  if (rp->st.commit_index < rp->raft.commit_index) rp->st.commit_index = rp->raft.commit_index;
  for (size_t i = 0; i < rp->st.nmembers; i++)
    if (rp->st.members[i].id == rp->o.id) rp->st.members[i].applied = (int64_t)index;
  pthread_mutex_unlock(&rp->slock);
  atomic_store(&rp->applied, index);
  reads_check(rp, index);
}
size_t replica_max_entry(const replica *rp) { return rp->budget; }
bool replica_is_leader(replica *rp) { return atomic_load(&rp->leader); }
bool replica_reads_ready(replica *rp) { return atomic_load(&rp->reads_ready); }

/* ---- proposals ------------------------------------------------------------------------ */

static void flight_remove(replica *rp, prop *p) {
  for (prop **pp = &rp->flight; *pp; pp = &(*pp)->next)
    if (*pp == p) {
      *pp = p->next;
      p->pending = false;
      return;
    }
}


static prop *prop_new(size_t len) {
  prop *p = mem_xcalloc(1, sizeof *p);
  size_t padded = (len + 7) & ~(size_t)7;
  if (len > UINT32_MAX) abort(); /* bodies are bounded by --max-body */
  p->buf.len = padded;
  p->buf.base = raft_malloc(padded);
  if (!p->buf.base) abort();
  unsigned char *b = p->buf.base;
  memset(b, 0, 8);
  memset(b + padded - 8, 0, 8);
  for (int i = 0; i < 4; i++) b[4 + i] = (unsigned char)(len >> (8 * i));
  return p;
}

/* The entry's length before padding (0: malformed). */
static size_t entry_len(const struct raft_buffer *buf) {
  const unsigned char *b = buf->base;
  if (buf->len < 8) return 0;
  size_t len = (size_t)b[4] | (size_t)b[5] << 8 | (size_t)b[6] << 16 | (size_t)b[7] << 24;
  return len <= buf->len ? len : 0;
}

/* raft's answer for one of ours (req is the prop's first member): applied
 * (the FSM took origin already), or not (leadership lost, shutdown): then
 * origin fails here.  The entry itself belongs to raft from the submit on. */
static void submit_cb(struct raft_apply *req, int status, void *result) {
  (void)result;
  (void)status;
  prop *p = (prop *)req;
  replica *rp = req->data;
  if (p->pending) flight_remove(rp, p);
  if (status != 0 && !rp->closing) {
    log_warn("replica: write not committed here", "status=\"%s\" index=%llu", raft_strerror(status),
             (unsigned long long)req->index);
    refresh(rp); /* leadership lost: the 503 and /v1/cluster agree */
  }
  if (p->origin) rp->o.fail(rp->o.ctx, p->origin, rp->closing ? E_SHUTTING_DOWN : E_LEADERSHIP_LOST);
  rp->inflight -= p->cost;
  /* after a big entry, the next waits one heartbeat (on_poll hands it): the
   * followers learn this one's commit from it and apply it in a run of
   * their own, not in the same run as the next entry's checksum and append */
  if (p->cost >= rp->budget / 8 && !rp->closing) rp->pace_until = uv_now(rp->loop) + rp->heartbeat_ms + POLL_MS;
  else if (p->cost && rp->held && !rp->closing) uv_async_send(&rp->async); /* on_async hands the next one */
  free(p);
}

/* Loop thread: hands p to raft, or fails it. */
static void submit_now(replica *rp, prop *p) {
  p->req.data = rp;
  int rc = -1;
  if (!rp->closing) {
    p->next = rp->flight;
    rp->flight = p;
    p->pending = true;
    p->cost = p->buf.len;
    rp->inflight += p->cost;
    rc = raft_apply(&rp->raft, &p->req, &p->buf, 1, submit_cb);
  }
  if (rc != 0) {
    if (p->pending) flight_remove(rp, p);
    rp->inflight -= p->cost;
    raft_free(p->buf.base);
    if (p->origin) rp->o.fail(rp->o.ctx, p->origin, rp->closing ? E_SHUTTING_DOWN : E_NO_LEADER);
    free(p);
  }
}

/* The meter: raft appends, checksums, sends and applies what it holds in
 * runs on the loop thread, without a timer tick between the entries of one
 * run; so at most budget bytes are in raft's hands at a time (one entry
 * always), the rest waits here, in order (fail paths included). */
static void drain(replica *rp) {
  if (rp->pace_until && !rp->closing && uv_now(rp->loop) < rp->pace_until) return;
  rp->pace_until = 0;
  while (rp->held && (rp->closing || !rp->inflight || rp->inflight + rp->held->buf.len <= rp->budget)) {
    prop *p = rp->held;
    rp->held = p->next;
    if (!rp->held) rp->held_tail = NULL;
    p->next = NULL;
    submit_now(rp, p);
  }
}

static void submit(replica *rp, prop *p) {
  if (rp->held_tail) rp->held_tail->next = p;
  else rp->held = p;
  rp->held_tail = p;
  drain(rp);
}

static int change_code(int rv) {
  switch (rv) {
  case RAFT_NOTLEADER: case RAFT_LEADERSHIPLOST: return E_NO_LEADER;
  case RAFT_DUPLICATEID: case RAFT_DUPLICATEADDRESS: case RAFT_BADID: case RAFT_CANTCHANGE: return E_CONFLICT;
  case RAFT_BADROLE: return E_CONFLICT;
  case RAFT_SHUTDOWN: return E_SHUTTING_DOWN;
  default: return E_INTERNAL;
  }
}

static void job_end(job *j, int rv) {
  const char *msg = rv ? raft_strerror(rv) : "";
  if (rv == 0) log_info("replica: membership changed", "%s=%" PRIu64, j->add ? "added" : "removed", j->id);
  if (!j->rp->closing) refresh(j->rp); /* the reply shows the new configuration */
  j->done(j->ctx, rv ? change_code(rv) : 0, msg);
  free(j);
}

static void promoted_cb(struct raft_change *req, int status) { job_end(req->data, status); }

static void added_cb(struct raft_change *req, int status) {
  job *j = req->data;
  if (status != 0 || j->rp->closing) {
    job_end(j, status ? status : RAFT_SHUTDOWN);
    return;
  }
  int rv = raft_assign(&j->rp->raft, &j->req, j->id, RAFT_VOTER, promoted_cb); /* after it caught up */
  if (rv != 0) job_end(j, rv);
}

static void removed_cb(struct raft_change *req, int status) { job_end(req->data, status); }

/* A read barrier's end: its entry of this term committed and applied here
 * (0), or leadership gone. */
static void barrier_cb(struct raft_barrier *req, int status) {
  job *j = req->data;
  int code = status == 0 ? 0 : j->rp->closing ? E_SHUTTING_DOWN : E_LEADERSHIP_LOST;
  if (status != 0 && !j->rp->closing) refresh(j->rp);
  j->done(j->ctx, code, status ? raft_strerror(status) : "");
  free(j);
}

static void run_barrier(replica *rp, job *j) {
  j->breq.data = j;
  int rv = rp->closing ? RAFT_SHUTDOWN : raft_barrier(&rp->raft, &j->breq, barrier_cb);
  if (rv != 0) {
    j->done(j->ctx, change_code(rv), raft_strerror(rv));
    free(j);
  }
}

static void run_job(replica *rp, job *j) {
  if (j->barrier) {
    run_barrier(rp, j);
    return;
  }
  j->req.data = j;
  int rv = rp->closing ? RAFT_SHUTDOWN
           : j->add    ? raft_add(&rp->raft, &j->req, j->id, j->address, added_cb)
                       : raft_remove(&rp->raft, &j->req, j->id, removed_cb);
  if (rv != 0) job_end(j, rv);
}

/* Any thread: hands j to the loop (on_async runs it), or ends it with
 * E_SHUTTING_DOWN once the member stopped taking work. */
static void queue_job(replica *rp, job *j) {
  pthread_mutex_lock(&rp->qlock);
  if (rp->qclosed) {
    pthread_mutex_unlock(&rp->qlock);
    j->done(j->ctx, E_SHUTTING_DOWN, "the member is not running");
    free(j);
    return;
  }
  j->next = rp->jobs;
  rp->jobs = j;
  pthread_mutex_unlock(&rp->qlock);
  uv_async_send(&rp->async);
}

void replica_change(replica *rp, bool add, uint64_t id, const char *address, replica_change_fn done, void *ctx) {
  job *j = mem_xcalloc(1, sizeof *j);
  *j = (job){.rp = rp, .add = add, .id = id, .done = done, .ctx = ctx};
  snprintf(j->address, sizeof j->address, "%s", address ? address : "");
  if (id == 0 || (add && (!address || !strchr(address, ':') || strlen(address) >= sizeof j->address))) {
    free(j);
    done(ctx, E_BAD_VALUE, "a member needs an id >= 1 and a Raft address HOST:PORT");
    return;
  }
  queue_job(rp, j);
}

void replica_read_barrier(replica *rp, replica_change_fn done, void *ctx) {
  job *j = mem_xcalloc(1, sizeof *j);
  *j = (job){.rp = rp, .barrier = true, .done = done, .ctx = ctx};
  queue_job(rp, j);
}

static void on_async(uv_async_t *h) {
  replica *rp = h->data;
  pthread_mutex_lock(&rp->qlock);
  prop *p = rp->qhead;
  rp->qhead = rp->qtail = NULL;
  job *jobs = rp->jobs;
  rp->jobs = NULL;
  pthread_mutex_unlock(&rp->qlock);
  while (jobs) {
    job *nx = jobs->next;
    run_job(rp, jobs);
    jobs = nx;
  }
  while (p) {
    prop *nx = p->next;
    p->next = NULL;
    submit(rp, p);
    p = nx;
  }
  drain(rp); /* room made by entries applied since */
}

void replica_propose2(replica *rp, const void *head, size_t hlen, const void *body, size_t blen, void *origin) {
  prop *p = prop_new(HEAD + hlen + blen);
  unsigned char *b = p->buf.base;
  b[0] = KIND_CHANGE;
  put64(b + 8, rp->nonce);
  if (hlen) memcpy(b + HEAD, head, hlen);
  if (blen) memcpy(b + HEAD + hlen, body, blen);
  p->origin = origin;
  pthread_mutex_lock(&rp->qlock);
  if (rp->qclosed) { /* the loop no longer takes proposals */
    pthread_mutex_unlock(&rp->qlock);
    raft_free(p->buf.base);
    free(p);
    if (origin) rp->o.fail(rp->o.ctx, origin, E_SHUTTING_DOWN);
    return;
  }
  p->seq = ++rp->next_seq;
  put64(b + 16, p->seq);
  if (rp->qtail) rp->qtail->next = p;
  else rp->qhead = p;
  rp->qtail = p;
  pthread_mutex_unlock(&rp->qlock);
  uv_async_send(&rp->async);
}

void replica_propose(replica *rp, const void *data, size_t len, void *origin) {
  replica_propose2(rp, data, len, NULL, 0, origin);
}

/* Loop thread: a new leader tells the group its HTTP URL (which also
 * commits an entry of its term before it answers a write). */
static void announce(replica *rp) {
  size_t ul = strlen(rp->http_url);
  prop *p = prop_new(18 + ul);
  unsigned char *b = p->buf.base;
  b[0] = KIND_ANNOUNCE;
  put64(b + 8, rp->o.id);
  b[16] = (unsigned char)(ul & 0xff);
  b[17] = (unsigned char)(ul >> 8);
  memcpy(b + 18, rp->http_url, ul);
  submit_now(rp, p); /* past the meter: term_index is where raft appends it now */
}

/* Loop thread, each poll: a loop held past half the election timeout (big
 * entries, a starved CPU) is logged, at most every 10 s: past the whole
 * timeout the group elects another leader. */
static void stall_check(replica *rp) {
  uint64_t now = uv_hrtime() / 1000000, gap = rp->last_poll ? now - rp->last_poll : 0;
  rp->last_poll = now;
  if (gap * 2 > (uint64_t)rp->heartbeat_ms * 10 && now - rp->stall_logged >= 10000) {
    rp->stall_logged = now;
    log_warn("replica: the loop thread was busy past half the election timeout", "ms=%" PRIu64 " election_timeout_ms=%u",
             gap, rp->heartbeat_ms * 10);
  }
}

static void on_poll(uv_timer_t *t) {
  replica *rp = t->data;
  stall_check(rp);
  if (rp->closing) return;
  if (raft_state(&rp->raft) == RAFT_LEADER && rp->announced_term != rp->raft.current_term) {
    rp->announced_term = rp->raft.current_term;
    rp->term_index = raft_last_index(&rp->raft) + 1; /* raft_apply appends there */
    log_info("replica: leading", "node=%" PRIu64 " term=%" PRIu64, rp->o.id, (uint64_t)rp->raft.current_term);
    announce(rp);
  }
  drain(rp); /* a paced proposal's turn */
  bool leads = raft_state(&rp->raft) == RAFT_LEADER;
  if (rp->led && !leads && rp->o.lost) rp->o.lost(rp->o.ctx); /* open sync rounds are lost */
  rp->led = leads;
  if (raft_state(&rp->raft) == RAFT_UNAVAILABLE && rp->started && !rp->failed) {
    rp->failed = true; /* libraft stops for good after a failed write of its log (ENOSPC, EIO) */
    log_error("replica: Raft stopped on a storage error: this member applies nothing more and serves "
              "old state; fix the disk, then restart it (it catches up from the others)",
              "node=%" PRIu64 " applied=%" PRIu64 " error=\"%s\" dir=%s", rp->o.id,
              (uint64_t)raft_last_applied(&rp->raft), raft_errmsg(&rp->raft), rp->dir);
  }
  refresh(rp);
}

/* ---- the FSM ---------------------------------------------------------------------- */

static void apply_change(replica *rp, const unsigned char *b, size_t len, uint64_t index) {
  uint64_t nonce = get64(b + 8), seq = get64(b + 16);
  void *origin = NULL;
  if (nonce == rp->nonce)
    for (prop *p = rp->flight; p; p = p->next)
      if (p->seq == seq) {
        origin = p->origin;
        p->origin = NULL;
        flight_remove(rp, p);
        break;
      }
  rp->o.apply(rp->o.ctx, b + HEAD, len - HEAD, origin, index);
}

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result) {
  replica *rp = fsm->data;
  const unsigned char *b = buf->base;
  uint64_t index = raft_last_applied(&rp->raft) + 1;
  size_t len = entry_len(buf);
  *result = NULL;
  applying = index;
  if (len >= HEAD && b[0] == KIND_CHANGE) {
    apply_change(rp, b, len, index);
  } else if (len >= 18 && b[0] == KIND_ANNOUNCE) {
    size_t ul = (size_t)b[16] | (size_t)b[17] << 8;
    if (18 + ul <= len) announce_set(rp, get64(b + 8), (const char *)b + 18, ul);
  } else {
    log_error("replica: unknown entry skipped", "index=%" PRIu64 " bytes=%zu", index, buf->len);
  }
  applying = 0;
  applied_now(rp, index);
  return 0;
}

/* Snapshot bytes: u32 magic, u32 announces, each (u64 id, u16 n, url),
 * u32 instances, each (u64 n, the instance's snapshot file bytes). */
typedef struct enc {
  unsigned char *b;
  size_t n;
} enc;

static size_t encode_instances(replica *rp, enc **out) {
  instance **all;
  size_t n = registry_list(rp->o.reg, &all), k = 0;
  *out = mem_xcalloc(n ? n : 1, sizeof **out);
  for (size_t i = 0; i < n; i++) {
    instance_state s;
    if (instance_export(all[i], &s) == 0) {
      persist_encode(&s, &(*out)[k].b, &(*out)[k].n);
      instance_state_free(&s);
      k++;
    } else {
      log_error("replica: snapshot without an instance (no memory)", "instance=%s", instance_name(all[i]));
    }
    instance_unref(all[i]);
  }
  free(all);
  return k;
}

static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs) {
  replica *rp = fsm->data;
  enc *e;
  size_t k = encode_instances(rp, &e), total = 12;
  for (size_t i = 0; i < rp->nann; i++) total += 10 + strlen(rp->ann[i].url);
  for (size_t i = 0; i < k; i++) total += 8 + e[i].n;
  unsigned char *b = raft_calloc(1, (total + 7) & ~(size_t)7), *w = b; /* zeroed padding: see the top */
  *bufs = raft_malloc(sizeof **bufs);
  if (!b || !*bufs) abort();
  put64(w, SNAP_MAGIC | (uint64_t)rp->nann << 32);
  w += 8;
  for (size_t i = 0; i < rp->nann; i++) {
    size_t ul = strlen(rp->ann[i].url);
    put64(w, rp->ann[i].id);
    w[8] = (unsigned char)(ul & 0xff);
    w[9] = (unsigned char)(ul >> 8);
    memcpy(w + 10, rp->ann[i].url, ul);
    w += 10 + ul;
  }
  for (int i = 0; i < 4; i++) w[i] = (unsigned char)(k >> (8 * i));
  w += 4;
  for (size_t i = 0; i < k; i++) {
    put64(w, e[i].n);
    memcpy(w + 8, e[i].b, e[i].n);
    w += 8 + e[i].n;
    free(e[i].b);
  }
  free(e);
  (*bufs)[0].base = b;
  (*bufs)[0].len = total;
  *n_bufs = 1;
  log_info("replica: snapshot taken", "instances=%zu bytes=%zu", k, total);
  return 0;
}

/* Drops every instance (a restore replaces them all). */
static void drop_all(registry *reg) {
  instance **all;
  size_t n = registry_list(reg, &all);
  for (size_t i = 0; i < n; i++) {
    instance *gone = registry_remove(reg, instance_name(all[i]));
    if (gone) {
      instance_close(gone, E_NO_INSTANCE, "the instance was replaced by a replica snapshot");
      registry_uncharge(reg, instance_floats(gone));
      instance_unref(gone);
    }
    instance_unref(all[i]);
  }
  free(all);
}

static int restore_one(replica *rp, const unsigned char *b, size_t n) {
  instance_state s;
  derr e = {0};
  if (persist_decode(b, n, &s, &e) < 0) {
    log_error("replica: snapshot instance refused", "reason=\"%s\"", e.msg);
    return RAFT_CORRUPT;
  }
  instance *in = instance_from_state(&s, rp->o.env);
  instance_state_free(&s);
  if (!in) return RAFT_NOMEM;
  uint64_t floats = instance_floats(in);
  int rc = registry_charge(rp->o.reg, floats, &e);
  if (rc == 0 && (rc = registry_add(rp->o.reg, in, &e)) < 0) registry_uncharge(rp->o.reg, floats);
  if (rc < 0) log_error("replica: snapshot instance not restored", "reason=\"%s\"", e.msg);
  instance_unref(in);
  return rc < 0 ? RAFT_NOMEM : 0;
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf) {
  replica *rp = fsm->data;
  const unsigned char *b = buf->base, *end = b + buf->len;
  if (buf->len < 12 || (get64(b) & 0xffffffffu) != SNAP_MAGIC) return RAFT_CORRUPT;
  size_t nann = (size_t)(get64(b) >> 32);
  b += 8;
  rp->nann = 0;
  for (size_t i = 0; i < nann; i++) {
    if (end - b < 10) return RAFT_CORRUPT;
    size_t ul = (size_t)b[8] | (size_t)b[9] << 8;
    if ((size_t)(end - b) < 10 + ul) return RAFT_CORRUPT;
    announce_set(rp, get64(b), (const char *)b + 10, ul);
    b += 10 + ul;
  }
  if (end - b < 4) return RAFT_CORRUPT;
  size_t k = (size_t)b[0] | (size_t)b[1] << 8 | (size_t)b[2] << 16 | (size_t)b[3] << 24;
  b += 4;
  registry_change_lock(rp->o.reg);
  drop_all(rp->o.reg);
  int rc = 0;
  for (size_t i = 0; i < k && rc == 0; i++) {
    uint64_t n = (size_t)(end - b) >= 8 ? get64(b) : UINT64_MAX;
    if (n > (uint64_t)(end - b) - 8) rc = RAFT_CORRUPT;
    else rc = restore_one(rp, b + 8, (size_t)n);
    b += 8 + (rc ? 0 : n);
  }
  registry_change_unlock(rp->o.reg);
  if (rc == 0) raft_free(buf->base);
  log_info("replica: snapshot restored", "instances=%zu rc=%d", k, rc);
  return rc;
}

/* ---- start / stop -------------------------------------------------------------------- */

static int make_dir(replica *rp, const char *data_dir, derr *e) {
  if (!data_dir) return derr_set(e, E_BAD_REQUEST, "--cluster needs --data-dir (the Raft log lives there)");
  int w = snprintf(rp->dir, sizeof rp->dir, "%s/raft", data_dir);
  if (w < 0 || (size_t)w >= sizeof rp->dir) return derr_set(e, E_BAD_REQUEST, "--data-dir: path too long");
  mkdir(data_dir, 0700);
  if (mkdir(rp->dir, 0700) < 0 && errno != EEXIST)
    return derr_set(e, E_IO, "cannot create %s: %s", rp->dir, strerror(errno));
  return 0;
}

/* The group's first configuration, from --cluster (a member that already
 * has a log ignores it). */
static int bootstrap(replica *rp, const uint64_t *ids, char (*addrs)[64], size_t n, derr *e) {
  struct raft_configuration conf;
  raft_configuration_init(&conf);
  for (size_t i = 0; i < n; i++) raft_configuration_add(&conf, ids[i], addrs[i], RAFT_VOTER);
  int rv = raft_bootstrap(&rp->raft, &conf);
  raft_configuration_close(&conf);
  if (rv != 0 && rv != RAFT_CANTBOOTSTRAP)
    return derr_set(e, E_IO, "raft bootstrap in %s: %s", rp->dir, raft_errmsg(&rp->raft));
  if (rv == 0) log_info("replica: group bootstrapped", "members=%zu dir=%s", n, rp->dir);
  return 0;
}

static uint64_t random_nonce(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ ((uint64_t)getpid() << 48);
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return x | 1;
}

/* ---- TCP_NODELAY on Raft's connections ------------------------------------------------
 * libraft 0.15 leaves Nagle on.  Results and heartbeats are ~50-byte
 * messages and an AppendEntries ends in a partial segment: with Nagle each
 * may wait for the peer's delayed ACK (up to 40 ms on Linux) on the commit
 * path.  tr wraps libraft's TCP transport (inner) and switches Nagle off on
 * every stream it hands over, accepted or connected. */

static replica *of_transport(struct raft_uv_transport *t) {
  return (replica *)((char *)t - offsetof(replica, tr));
}

static void nodelay(struct uv_stream_s *stream) {
  if (stream && stream->type == UV_TCP) uv_tcp_nodelay((uv_tcp_t *)stream, 1);
}

static void nd_accept(struct raft_uv_transport *t, raft_id id, const char *address, struct uv_stream_s *stream) {
  replica *rp = t->data; /* inner->data: set to rp by nd_listen */
  nodelay(stream);
  rp->accept_cb(&rp->tr, id, address, stream);
}

/* libraft passes one connect callback (uv_send's) for every request, whose
 * req->data is its own: the wrapper keeps that function here (loop thread). */
static raft_uv_connect_cb lib_connect_cb;

static void nd_connected(struct raft_uv_connect *req, struct uv_stream_s *stream, int status) {
  if (status == 0) nodelay(stream);
  lib_connect_cb(req, stream, status);
}

static int nd_connect(struct raft_uv_transport *t, struct raft_uv_connect *req, raft_id id, const char *address,
                      raft_uv_connect_cb cb) {
  replica *rp = of_transport(t);
  if (!lib_connect_cb) lib_connect_cb = cb;
  int rv = rp->inner.connect(&rp->inner, req, id, address, cb == lib_connect_cb ? nd_connected : cb);
  if (rv != 0) memcpy(t->errmsg, rp->inner.errmsg, sizeof t->errmsg);
  return rv;
}

static void nd_closed(struct raft_uv_transport *inner) {
  replica *rp = inner->data;
  if (rp->tr_close_cb) rp->tr_close_cb(&rp->tr);
}

static void nd_close(struct raft_uv_transport *t, raft_uv_transport_close_cb cb) {
  replica *rp = of_transport(t);
  rp->tr_close_cb = cb;
  rp->inner.data = rp;
  rp->inner.close(&rp->inner, nd_closed);
}

static int nd_init(struct raft_uv_transport *t, raft_id id, const char *address) {
  replica *rp = of_transport(t);
  int rv = rp->inner.init(&rp->inner, id, address);
  if (rv != 0) memcpy(t->errmsg, rp->inner.errmsg, sizeof t->errmsg);
  return rv;
}

static int nd_listen(struct raft_uv_transport *t, raft_uv_accept_cb cb) {
  replica *rp = of_transport(t);
  rp->accept_cb = cb;
  rp->inner.data = rp;
  return rp->inner.listen(&rp->inner, nd_accept);
}

static int setup_raft(replica *rp, const replica_opts *o, derr *e) {
  uint64_t ids[REPLICA_MAX_MEMBERS];
  char addrs[REPLICA_MAX_MEMBERS][64];
  size_t n, me = SIZE_MAX;
  if (replica_parse_cluster(o->cluster, ids, addrs, REPLICA_MAX_MEMBERS, &n, e) < 0) return -e->code;
  for (size_t i = 0; i < n; i++)
    if (ids[i] == o->id) me = i;
  if (me == SIZE_MAX) return derr_set(e, E_BAD_REQUEST, "--node-id %" PRIu64 " is not in --cluster", o->id);
  snprintf(rp->addr, sizeof rp->addr, "%s", addrs[me]);
  if (make_dir(rp, o->data_dir, e) < 0) return -e->code;
  if (raft_uv_tcp_init(&rp->inner, rp->loop) != 0) return derr_set(e, E_IO, "raft: cannot start its TCP transport");
  rp->tr = (struct raft_uv_transport){.impl = rp->inner.impl, .init = nd_init, .listen = nd_listen,
                                      .connect = nd_connect, .close = nd_close};
  if (raft_uv_init(&rp->io, rp->loop, rp->dir, &rp->tr) != 0)
    return derr_set(e, E_IO, "raft: cannot open %s: %s", rp->dir, rp->io.errmsg);
  rp->fsm = (struct raft_fsm){.version = 1, .data = rp, .apply = fsm_apply, .snapshot = fsm_snapshot,
                              .restore = fsm_restore};
  if (raft_init(&rp->raft, &rp->io, &rp->fsm, o->id, rp->addr) != 0)
    return derr_set(e, E_IO, "raft: %s", raft_errmsg(&rp->raft));
  rp->raft.data = rp;
  if (!o->join && bootstrap(rp, ids, addrs, n, e) < 0) return -e->code;
  unsigned et = o->election_timeout_ms ? o->election_timeout_ms : 1000;
  raft_set_election_timeout(&rp->raft, et);
  rp->heartbeat_ms = et / 10 ? et / 10 : 1;
  raft_set_heartbeat_timeout(&rp->raft, rp->heartbeat_ms);
  unsigned se = o->snapshot_entries ? o->snapshot_entries : 512;
  raft_set_snapshot_threshold(&rp->raft, se);
  raft_set_snapshot_trailing(&rp->raft, se / 4 ? se / 4 : 1);
  raft_set_pre_vote(&rp->raft, true);
  if (raft_start(&rp->raft) != 0) return derr_set(e, E_IO, "raft start: %s", raft_errmsg(&rp->raft));
  return 0;
}

replica *replica_new(const replica_opts *o) {
  replica *rp = mem_xcalloc(1, sizeof *rp);
  rp->o = *o;
  rp->nonce = random_nonce();
  unsigned et = o->election_timeout_ms ? o->election_timeout_ms : 1000;
  rp->budget = (size_t)et * REPLICA_ENTRY_BYTES_PER_MS;
  pthread_mutex_init(&rp->qlock, NULL);
  pthread_mutex_init(&rp->slock, NULL);
  atomic_init(&rp->applied, 0);
  atomic_init(&rp->reads_ready, false);
  atomic_init(&rp->leader, false);
  rp->st.id = o->id;
  rp->st.role = REPLICA_UNAVAILABLE;
  rp->qclosed = true; /* until replica_start */
  return rp;
}

int replica_start(replica *rp, uv_loop_t *loop, const char *http_url, derr *e) {
  rp->loop = loop;
  snprintf(rp->http_url, sizeof rp->http_url, "%s", http_url ? http_url : "");
  if (setup_raft(rp, &rp->o, e) < 0) return -e->code; /* raft handles may be half open: the daemon exits */
  rp->started = true;
  uv_async_init(loop, &rp->async, on_async);
  rp->async.data = rp;
  uv_timer_init(loop, &rp->poll);
  rp->poll.data = rp;
  uv_timer_start(&rp->poll, on_poll, POLL_MS, POLL_MS);
  pthread_mutex_lock(&rp->qlock);
  rp->qclosed = false;
  pthread_mutex_unlock(&rp->qlock);
  log_info("replica: started", "node=%" PRIu64 " raft=%s dir=%s", rp->o.id, rp->addr, rp->dir);
  return 0;
}

static void on_raft_closed(struct raft *r) {
  replica *rp = r->data;
  raft_uv_close(&rp->io);
  raft_uv_tcp_close(&rp->inner);
}

void replica_close(replica *rp) {
  if (!rp || rp->closing || !rp->started) return;
  rp->closing = true;
  pthread_mutex_lock(&rp->qlock);
  rp->qclosed = true;
  pthread_mutex_unlock(&rp->qlock);
  uv_timer_stop(&rp->poll);
  uv_close((uv_handle_t *)&rp->poll, NULL);
  on_async(&rp->async); /* queued proposals fail: closing */
  uv_close((uv_handle_t *)&rp->async, NULL);
  raft_close(&rp->raft, on_raft_closed);
}

void replica_free(replica *rp) {
  if (!rp) return;
  pthread_mutex_destroy(&rp->qlock);
  pthread_mutex_destroy(&rp->slock);
  free(rp);
}
