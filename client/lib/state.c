/* state: exporting and importing an instance's whole state (GET and PUT
 * .../state, the daemon's "descent-state/1" documents).
 *
 * One daemon: its document as it is.  Several: the shards' documents are
 * gathered into the one document a single daemon would write (the logical
 * tensors, every array concatenated over the shards), and a document is
 * split back into one per shard by the split rule.  Both are done on the
 * text (jscan): arrays are cut and spliced, never parsed number by number,
 * and every float keeps its exact decimal form.  A sharded export is refused
 * unless every shard is at one step; that is what makes it a checkpoint that
 * can bring disagreeing shards back in line.  Runs on the handle's thread.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---- a growing text buffer ----------------------------------------------------------- */

typedef struct sbuf {
  char *p;
  size_t len, cap;
  bool oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
  if (b->oom) return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
      b->oom = true;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = 0;
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
  char tmp[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= sizeof tmp) b->oom = true;
  else sb_put(b, tmp, (size_t)n);
}

/* ---- the members of an object ----------------------------------------------------------- */

typedef struct member {
  size_t kb, ke, vb, ve; /* key (with quotes) and value, offsets from base */
} member;

typedef struct members {
  const char *base;
  member *m;
  size_t n, cap;
  bool oom;
} members;

static int collect(size_t kb, size_t ke, size_t vb, size_t ve, void *arg) {
  members *ms = arg;
  if (ms->n == ms->cap) {
    size_t cap = ms->cap ? ms->cap * 2 : 16;
    member *m = realloc(ms->m, cap * sizeof *m);
    if (!m) {
      ms->oom = true;
      return -1;
    }
    ms->m = m;
    ms->cap = cap;
  }
  ms->m[ms->n++] = (member){kb, ke, vb, ve};
  return 0;
}

/* The members of the object at base[b..e); offsets are made relative to base. */
static int members_of(members *ms, const char *base, size_t b, size_t e) {
  ms->base = base;
  ms->n = 0;
  size_t from = ms->n;
  if (descent__jscan_object(base + b, e - b, collect, ms) < 0) return -1;
  for (size_t i = from; i < ms->n; i++) {
    ms->m[i].kb += b;
    ms->m[i].ke += b;
    ms->m[i].vb += b;
    ms->m[i].ve += b;
  }
  return 0;
}

static void members_free(members *ms) {
  free(ms->m);
  ms->m = NULL;
  ms->n = ms->cap = 0;
}

static bool key_is(const members *ms, const member *m, const char *key) {
  size_t kl = strlen(key);
  return m->ke - m->kb == kl + 2 && !memcmp(ms->base + m->kb + 1, key, kl);
}

static const member *find(const members *ms, const char *key) {
  for (size_t i = 0; i < ms->n; i++)
    if (key_is(ms, &ms->m[i], key)) return &ms->m[i];
  return NULL;
}

/* A small member's value parsed (new reference), NULL when absent or bad. */
static json_t *small(const members *ms, const char *key) {
  const member *m = find(ms, key);
  return m ? json_loadb(ms->base + m->vb, m->ve - m->vb, JSON_DECODE_ANY, NULL) : NULL;
}

static int64_t step_of(const members *ms) {
  json_t *v = small(ms, "step");
  int64_t s = json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;
  json_decref(v);
  return s;
}

/* ---- export: gathering the shards' documents ------------------------------------------- */

/* The inside of the array at s[b..e) ("1,2,3" of "[1,2,3]"). */
static void inner(const char *s, size_t *b, size_t *e) {
  while (*b < *e && s[*b] != '[') (*b)++;
  (*b)++;
  while (*e > *b && s[*e - 1] != ']') (*e)--;
  (*e)--;
}

/* {"T":[...],...} for one section (params, or one buffer) of every shard:
 * sec[k] holds the members of shard k's section object. */
static int gather_section(sbuf *o, const descent *d, const descent__layout *l, const members *sec, const char *what,
                          descent_error *err) {
  sb_str(o, "{");
  for (size_t t = 0; t < l->ntensors; t++) {
    const descent_tensor *x = &l->tensors[t];
    sb_printf(o, "%s\"%s\":[", t ? "," : "", x->name);
    bool first = true;
    for (size_t k = 0; k < d->nshards; k++) {
      if (l->lo[k + 1] <= x->offset || l->lo[k] >= x->offset + x->count) continue;
      const member *m = find(&sec[k], x->name);
      if (!m) {
        descent__fail(err, DESCENT_EPROTO, "shard %zu's state has no %s.%s", k, what, x->name);
        return DESCENT_EPROTO;
      }
      size_t b = m->vb, e = m->ve;
      inner(sec[k].base, &b, &e);
      if (e <= b) continue;
      if (!first) sb_str(o, ",");
      sb_put(o, sec[k].base + b, e - b);
      first = false;
    }
    sb_str(o, "]");
  }
  sb_str(o, "}");
  return 0;
}

/* The "tensors" value of the gathered document, as the daemon writes it. */
static int tensors_json(sbuf *o, const descent__layout *l) {
  json_t *ts = descent__layout_tensors_json(l);
  char *s = json_dumps(ts, JSON_COMPACT);
  json_decref(ts);
  if (!s) return -1;
  sb_str(o, s);
  free(s);
  return 0;
}

static int export_sharded(descent *d, const char *name, descent__req *r, char **json, size_t *len,
                          descent_error *err) {
  size_t s = d->nshards;
  int rc = 0;
  int64_t steps[DESCENT__MAX_SHARDS];
  json_t *descs[DESCENT__MAX_SHARDS] = {0};
  members *top = calloc(s, sizeof *top), *sec = calloc(s, sizeof *sec), bufs0 = {0};
  sbuf o = {0};
  if (!top || !sec) {
    rc = descent__fail(err, DESCENT_ENOMEM, NULL);
    goto out;
  }
  for (size_t k = 0; k < s; k++) {
    if (!r[k].text || members_of(&top[k], r[k].text, 0, r[k].text_len) < 0) {
      rc = descent__fail(err, DESCENT_EPROTO, "shard %zu's state is not a JSON object", k);
      goto out;
    }
    steps[k] = step_of(&top[k]);
    descs[k] = json_object();
    static const char *const keys[] = {"size", "tensors", "algorithm", "mode", "clip_grad_norm", "workers",
                                       "min_workers"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
      json_t *v = small(&top[k], keys[i]);
      if (v) json_object_set_new(descs[k], keys[i], v);
    }
  }
  for (size_t k = 1; k < s; k++)
    if (steps[k] != steps[0]) {
      rc = descent__mismatch(d, name, steps, err);
      goto out;
    }
  const descent__layout *l;
  if ((rc = descent__layout_build(d, name, descs, &l, err)) < 0) goto out;
  if (l->nsparse) {
    rc = descent__fail(err, DESCENT_ENOTSUP, "'%s' has sparse tensors: libdescent does not gather their rows from "
                       "the shards yet (the Python client's export_state does)", name);
    goto out;
  }
  const member *pb = find(&top[0], "buffers");
  if (pb && members_of(&bufs0, top[0].base, pb->vb, pb->ve) < 0) {
    rc = descent__fail(err, DESCENT_EPROTO, "shard 0's state: buffers is not an object");
    goto out;
  }
  sb_str(&o, "{");
  for (size_t i = 0; i < top[0].n; i++) {
    const member *m = &top[0].m[i];
    if (i) sb_str(&o, ",");
    sb_put(&o, top[0].base + m->kb, m->ke - m->kb);
    sb_str(&o, ":");
    if (key_is(&top[0], m, "tensors")) {
      if (tensors_json(&o, l) < 0) o.oom = true;
    } else if (key_is(&top[0], m, "size")) {
      sb_printf(&o, "%zu", l->n);
    } else if (key_is(&top[0], m, "params") || key_is(&top[0], m, "buffers")) {
      bool params = key_is(&top[0], m, "params");
      size_t nsec = params ? 1 : bufs0.n;
      if (!params) sb_str(&o, "{");
      for (size_t b = 0; b < nsec; b++) {
        char what[80];
        if (params) {
          snprintf(what, sizeof what, "params");
        } else {
          const member *bm = &bufs0.m[b];
          snprintf(what, sizeof what, "buffers.%.*s", (int)(bm->ke - bm->kb - 2), top[0].base + bm->kb + 1);
          sb_str(&o, b ? "," : "");
          sb_put(&o, top[0].base + bm->kb, bm->ke - bm->kb);
          sb_str(&o, ":");
        }
        for (size_t k = 0; k < s; k++) {
          const member *x = find(&top[k], params ? "params" : "buffers");
          members tmp = {0};
          const member *y = NULL;
          if (x && !params && members_of(&tmp, top[k].base, x->vb, x->ve) == 0)
            y = find(&tmp, what + strlen("buffers."));
          const member *z = params ? x : y;
          int bad = !z || members_of(&sec[k], top[k].base, z->vb, z->ve) < 0;
          members_free(&tmp);
          if (bad) {
            rc = descent__fail(err, DESCENT_EPROTO, "shard %zu's state has no %s object", k, what);
            goto out;
          }
        }
        if ((rc = gather_section(&o, d, l, sec, what, err)) < 0) goto out;
      }
      if (!params) sb_str(&o, "}");
    } else {
      sb_put(&o, top[0].base + m->vb, m->ve - m->vb);
    }
  }
  sb_str(&o, "}\n");
  if (o.oom) {
    rc = descent__fail(err, DESCENT_ENOMEM, NULL);
    goto out;
  }
  *json = o.p;
  if (len) *len = o.len;
  o.p = NULL;
out:
  free(o.p);
  if (top)
    for (size_t k = 0; k < s; k++) members_free(&top[k]);
  if (sec)
    for (size_t k = 0; k < s; k++) members_free(&sec[k]);
  members_free(&bufs0);
  free(top);
  free(sec);
  for (size_t k = 0; k < s; k++) json_decref(descs[k]);
  return rc;
}

int descent_state_export(descent *d, const char *name, char **json, size_t *len, descent_error *err) {
  if (!d || !json) return descent__fail(err, DESCENT_EINVAL, "export: NULL handle or output");
  *json = NULL;
  if (len) *len = 0;
  int rc = descent__check_name(name, err);
  if (rc < 0) return rc;
  size_t s = d->nshards;
  descent__req *r = descent__reqs_new(s);
  if (!r) return descent__fail(err, DESCENT_ENOMEM, NULL);
  for (size_t k = 0; k < s; k++) {
    descent__req_init(&r[k], k, "GET");
    snprintf(r[k].path, sizeof r[k].path, "/v1/optimizers/%s/state", name);
  }
  if ((rc = descent__perform(d, r, s, err)) < 0) goto out;
  for (size_t k = 0; k < s && rc == 0; k++) rc = descent__req_result(d, &r[k], err, NULL);
  if (rc < 0) goto out;
  if (s > 1) {
    rc = export_sharded(d, name, r, json, len, err);
  } else if (!r[0].text) {
    rc = descent__fail(err, DESCENT_EPROTO, "the state reply is empty");
  } else {
    *json = r[0].text;
    if (len) *len = r[0].text_len;
    r[0].text = NULL;
  }
out:
  descent__reqs_free(r, s);
  return rc;
}

/* ---- import: splitting one document over the shards --------------------------------------- */

struct leaf_emit {
  sbuf *o;
  size_t a, b; /* the leaves to copy */
  const char *base;
};

static void emit_leaf(size_t b, size_t e, size_t idx, void *arg) {
  struct leaf_emit *le = arg;
  if (idx < le->a || idx >= le->b) return;
  if (idx > le->a) sb_str(le->o, ",");
  sb_put(le->o, le->base + b, e - b);
}

/* "T":[leaves a..b) of the array at base[vb..ve)], checking its count. */
static int emit_slice(sbuf *o, const char *base, const member *m, const char *tname, size_t count, size_t a, size_t b,
                      const char *what, descent_error *err) {
  sb_printf(o, "\"%s\":[", tname);
  struct leaf_emit le = {o, a, b, base + m->vb};
  long n = descent__jscan_leaves(base + m->vb, m->ve - m->vb, emit_leaf, &le);
  sb_str(o, "]");
  if (n < 0 || (size_t)n != count) {
    descent__fail(err, DESCENT_EINVAL, "%s.%s: %ld values, the tensor has %zu", what, tname, n, count);
    descent__set_code(err, "bad_length");
    return DESCENT_EINVAL;
  }
  return 0;
}

typedef struct ltensor {
  char name[DESCENT__NAME_MAX + 1];
  char *shape; /* its shape's JSON text (new) */
  size_t count;
  uint64_t origin;
} ltensor;

static int import_split(descent *d, const char *name, const char *doc, size_t len, char **bodies,
                        descent_error *err) {
  size_t s = d->nshards, nt = 0;
  int rc = 0;
  members top = {0}, params = {0}, bufs = {0}, *per = NULL;
  ltensor *lt = NULL;
  json_t *cfg = json_object(), *ts = NULL;
  if (members_of(&top, doc, 0, len) < 0) {
    rc = descent__fail(err, DESCENT_EINVAL, "import: the document is not a JSON object");
    goto out;
  }
  static const char *const keys[] = {"name", "algorithm", "mode", "clip_grad_norm", "workers", "min_workers",
                                     "format"};
  for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
    json_t *v = small(&top, keys[i]);
    if (v) json_object_set_new(cfg, keys[i], v);
  }
  const char *fmt = json_string_value(json_object_get(cfg, "format"));
  if (fmt && strcmp(fmt, "descent-state/1")) {
    rc = descent__fail(err, DESCENT_EINVAL, "import: format \"%.60s\": expected \"descent-state/1\"", fmt);
    goto out;
  }
  /* imported under `name` whatever the document's own "name" says: it is left out of every part */
  if ((rc = descent__check_shardable(cfg, err)) < 0) goto out;
  ts = small(&top, "tensors");
  size_t ti;
  json_t *tv;
  json_array_foreach(ts, ti, tv) if (json_is_true(json_object_get(tv, "sparse"))) {
    rc = descent__fail(err, DESCENT_ENOTSUP, "import: tensor %zu is sparse: libdescent does not split rows over "
                       "shards yet (the Python client's import_state does)", ti);
    goto out;
  }
  nt = json_array_size(ts);
  const member *pm = find(&top, "params"), *bm = find(&top, "buffers");
  if (!nt || !pm || members_of(&params, doc, pm->vb, pm->ve) < 0 || (bm && members_of(&bufs, doc, bm->vb, bm->ve) < 0)) {
    rc = descent__fail(err, DESCENT_EINVAL, "import: a state document needs tensors, params (and buffers) objects");
    goto out;
  }
  lt = calloc(nt, sizeof *lt);
  per = calloc(bufs.n + 1, sizeof *per);
  if (!lt || !per) {
    rc = descent__fail(err, DESCENT_ENOMEM, NULL);
    goto out;
  }
  uint64_t total = 0;
  for (size_t i = 0; i < nt; i++) {
    json_t *t = json_array_get(ts, i), *shape = json_object_get(t, "shape"), *x;
    const char *tn = json_string_value(json_object_get(t, "name"));
    uint64_t c = 1;
    size_t j;
    if (!descent__name_ok(tn) || !json_is_array(shape) || json_array_size(shape) > 8) {
      rc = descent__fail(err, DESCENT_EINVAL, "import: tensors[%zu]: expected {\"name\", \"shape\"}", i);
      goto out;
    }
    json_array_foreach(shape, j, x) {
      if (!json_is_integer(x) || json_integer_value(x) < 1 || (uint64_t)json_integer_value(x) > (1ull << 40) ||
          c > (1ull << 40) / (uint64_t)json_integer_value(x)) {
        rc = descent__fail(err, DESCENT_EINVAL, "import: tensors[%zu].shape[%zu]: must be a positive integer", i, j);
        goto out;
      }
      c *= (uint64_t)json_integer_value(x);
    }
    snprintf(lt[i].name, sizeof lt[i].name, "%s", tn);
    lt[i].count = (size_t)c;
    json_t *org = json_object_get(t, "origin");
    lt[i].origin = json_is_integer(org) && json_integer_value(org) > 0 ? (uint64_t)json_integer_value(org) : 0;
    if (!(lt[i].shape = json_dumps(shape, JSON_COMPACT))) {
      rc = descent__fail(err, DESCENT_ENOMEM, NULL);
      goto out;
    }
    total += c;
    if (total > (1ull << 40)) {
      rc = descent__fail(err, DESCENT_EINVAL, "import: too many elements");
      goto out;
    }
  }
  if (total < s) {
    rc = descent__fail(err, DESCENT_EINVAL, "import: %" PRIu64 " parameters cannot be spread over %zu daemons", total,
                       s);
    goto out;
  }
  for (size_t b = 0; b < bufs.n; b++)
    if (members_of(&per[b], doc, bufs.m[b].vb, bufs.m[b].ve) < 0) {
      rc = descent__fail(err, DESCENT_EINVAL, "import: buffers: expected an object by state name of objects by tensor");
      goto out;
    }
  for (size_t k = 0; k < s; k++) {
    size_t lo = descent__split((size_t)total, s, k), hi = descent__split((size_t)total, s, k + 1);
    sbuf o = {0};
    sb_str(&o, "{");
    for (size_t i = 0; i < top.n; i++) { /* the configuration, step, ... as they are */
      const member *m = &top.m[i];
      if (key_is(&top, m, "name") || key_is(&top, m, "tensors") || key_is(&top, m, "size") ||
          key_is(&top, m, "params") || key_is(&top, m, "buffers"))
        continue;
      sb_put(&o, doc + m->kb, m->ve - m->kb);
      sb_str(&o, ",");
    }
    /* the pieces: tensors, then params and every buffer sliced the same way */
    for (int pass = 0; pass < 2 + (int)bufs.n && rc == 0; pass++) {
      const members *sec = pass == 1 ? &params : pass >= 2 ? &per[pass - 2] : NULL;
      char what[80];
      if (pass == 0) {
        sb_str(&o, "\"tensors\":[");
      } else if (pass == 1) {
        snprintf(what, sizeof what, "params");
        sb_str(&o, "],\"params\":{");
      } else {
        const member *bm2 = &bufs.m[pass - 2];
        snprintf(what, sizeof what, "buffers.%.*s", (int)(bm2->ke - bm2->kb - 2), doc + bm2->kb + 1);
        sb_str(&o, pass == 2 ? "},\"buffers\":{" : "},");
        sb_put(&o, doc + bm2->kb, bm2->ke - bm2->kb);
        sb_str(&o, ":{");
      }
      size_t off = 0;
      bool first = true;
      for (size_t i = 0; i < nt && rc == 0; off += lt[i].count, i++) {
        if (off + lt[i].count <= lo || off >= hi) continue;
        size_t a = (lo > off ? lo : off) - off, b = (hi < off + lt[i].count ? hi : off + lt[i].count) - off;
        if (!first) sb_str(&o, ",");
        first = false;
        if (pass == 0) {
          bool whole = a == 0 && b == lt[i].count;
          sb_printf(&o, "{\"name\":\"%s\",\"shape\":", lt[i].name);
          if (whole) sb_str(&o, lt[i].shape);
          else sb_printf(&o, "[%zu]", b - a);
          if (lt[i].origin + a) sb_printf(&o, ",\"origin\":%" PRIu64, lt[i].origin + a);
          sb_str(&o, "}");
        } else {
          const member *m = find(sec, lt[i].name);
          if (!m) {
            rc = descent__fail(err, DESCENT_EINVAL, "import: %s.%s: missing", what, lt[i].name);
            descent__set_code(err, "bad_length");
          } else {
            rc = emit_slice(&o, doc, m, lt[i].name, lt[i].count, a, b, what, err);
          }
        }
      }
    }
    sb_str(&o, bufs.n ? "}}}" : "}}");
    if (rc == 0 && o.oom) rc = descent__fail(err, DESCENT_ENOMEM, NULL);
    if (rc < 0) {
      free(o.p);
      goto out;
    }
    bodies[k] = o.p;
  }
out:
  json_decref(cfg);
  json_decref(ts);
  if (lt)
    for (size_t i = 0; i < nt; i++) free(lt[i].shape);
  free(lt);
  if (per)
    for (size_t b = 0; b < bufs.n; b++) members_free(&per[b]);
  free(per);
  members_free(&top);
  members_free(&params);
  members_free(&bufs);
  return rc;
}

/* One daemon: a document whose top-level "name" is not `name` is copied
 * with that member's value replaced (*out new; NULL when it already matches
 * or has none), so that it is imported under `name`, as Redis RESTORE key
 * does.  The rest of the text is copied byte for byte, never parsed. */
static int rename_doc(const char *name, const char *doc, size_t len, char **out, descent_error *err) {
  size_t vb, ve, nl = strlen(name);
  *out = NULL;
  if (descent__jscan_member(doc, len, "name", &vb, &ve) < 0) return 0;
  if (ve - vb == nl + 2 && doc[vb] == '"' && !memcmp(doc + vb + 1, name, nl)) return 0;
  char *o = malloc(len - (ve - vb) + nl + 3);
  if (!o) return descent__fail(err, DESCENT_ENOMEM, NULL);
  memcpy(o, doc, vb);
  o[vb] = '"';
  memcpy(o + vb + 1, name, nl); /* a checked name: nothing to escape */
  o[vb + 1 + nl] = '"';
  memcpy(o + vb + nl + 2, doc + ve, len - ve);
  o[len - (ve - vb) + nl + 2] = 0;
  *out = o;
  return 0;
}

int descent_state_import(descent *d, const char *name, const char *json, size_t len, descent_error *err) {
  if (!d || !json) return descent__fail(err, DESCENT_EINVAL, "import: NULL handle or document");
  int rc = descent__check_name(name, err);
  if (rc < 0) return rc;
  size_t s = d->nshards;
  char **bodies = calloc(s, sizeof *bodies);
  descent__req *r = descent__reqs_new(s);
  if (!bodies || !r) {
    rc = descent__fail(err, DESCENT_ENOMEM, NULL);
    goto out;
  }
  if (s > 1 && (rc = import_split(d, name, json, len, bodies, err)) < 0) goto out;
  if (s == 1 && (rc = rename_doc(name, json, len, &bodies[0], err)) < 0) goto out;
  descent__layout_forget(d, name);
  for (size_t k = 0; k < s; k++) {
    descent__req_init(&r[k], k, "PUT");
    snprintf(r[k].path, sizeof r[k].path, "/v1/optimizers/%s/state", name);
    r[k].body = bodies[k] ? bodies[k] : json;
    r[k].body_len = bodies[k] ? strlen(bodies[k]) : len;
    r[k].content_type = "application/json";
    r[k].sink = true;
  }
  if ((rc = descent__perform(d, r, s, err)) == 0)
    for (size_t k = 0; k < s && rc == 0; k++) rc = descent__req_result(d, &r[k], err, NULL);
out:
  descent__reqs_free(r, s);
  if (bodies)
    for (size_t k = 0; k < s; k++) free(bodies[k]);
  free(bodies);
  return rc;
}
