/* registry: FNV-1a hashed chains of instances under a rwlock. */
#include "registry.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"

#define NBUCKETS 1024

typedef struct entry {
  struct entry *next;
  instance *in;
  uint64_t floats;
} entry;

struct registry {
  pthread_rwlock_t lock;
  entry *bucket[NBUCKETS];
  size_t count, max_instances;
  uint64_t floats, max_floats;
};

static unsigned hash(const char *s) {
  uint32_t h = 2166136261u;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
  return h % NBUCKETS;
}

registry *registry_new(size_t max_instances, uint64_t max_floats) {
  registry *r = mem_xcalloc(1, sizeof *r);
  pthread_rwlock_init(&r->lock, NULL);
  r->max_instances = max_instances;
  r->max_floats = max_floats;
  return r;
}

void registry_free(registry *r) {
  if (!r) return;
  for (int b = 0; b < NBUCKETS; b++)
    for (entry *e = r->bucket[b]; e;) {
      entry *next = e->next;
      instance_unref(e->in);
      free(e);
      e = next;
    }
  pthread_rwlock_destroy(&r->lock);
  free(r);
}

static entry **find(registry *r, const char *name) {
  entry **p = &r->bucket[hash(name)];
  while (*p && strcmp((*p)->in->cfg.name, name) != 0) p = &(*p)->next;
  return p;
}

instance *registry_get(registry *r, const char *name) {
  pthread_rwlock_rdlock(&r->lock);
  entry *e = *find(r, name);
  instance *in = e ? instance_ref(e->in) : NULL;
  pthread_rwlock_unlock(&r->lock);
  return in;
}

static int quota(registry *r, uint64_t need, uint64_t replacing, bool adding, derr *e) {
  if (adding && r->count >= r->max_instances)
    return derr_set(e, E_QUOTA, "the daemon holds its maximum of %zu instances (--max-instances)",
                    r->max_instances);
  if (r->floats - replacing + need > r->max_floats)
    return derr_set(e, E_QUOTA,
                    "this instance needs %llu floats (parameters and state) but only %llu of the "
                    "%llu allowed are free (--max-params)",
                    (unsigned long long)need,
                    (unsigned long long)(r->max_floats - (r->floats - replacing)),
                    (unsigned long long)r->max_floats);
  return 0;
}

int registry_check_quota(registry *r, const instance_cfg *cfg, uint64_t replacing, derr *e) {
  pthread_rwlock_rdlock(&r->lock);
  int rc = quota(r, instance_cfg_footprint(cfg), replacing, replacing == 0, e);
  pthread_rwlock_unlock(&r->lock);
  return rc;
}

int registry_add(registry *r, instance *in, derr *e) {
  pthread_rwlock_wrlock(&r->lock);
  entry **p = find(r, in->cfg.name);
  int rc = 0;
  uint64_t need = instance_cfg_footprint(&in->cfg);
  if (*p) rc = derr_set(e, E_EXISTS, "an instance named '%s' exists", in->cfg.name);
  else rc = quota(r, need, 0, true, e);
  if (rc == 0) {
    entry *n = mem_xcalloc(1, sizeof *n);
    n->in = instance_ref(in);
    n->floats = need;
    *p = n;
    r->count++;
    r->floats += need;
  }
  pthread_rwlock_unlock(&r->lock);
  return rc;
}

int registry_replace(registry *r, instance *in, instance **old, derr *e) {
  *old = NULL;
  pthread_rwlock_wrlock(&r->lock);
  entry **p = find(r, in->cfg.name);
  uint64_t need = instance_cfg_footprint(&in->cfg);
  int rc = quota(r, need, *p ? (*p)->floats : 0, *p == NULL, e);
  if (rc == 0) {
    if (*p) {
      *old = (*p)->in;
      r->floats -= (*p)->floats;
      (*p)->in = instance_ref(in);
      (*p)->floats = need;
    } else {
      entry *n = mem_xcalloc(1, sizeof *n);
      n->in = instance_ref(in);
      n->floats = need;
      *p = n;
      r->count++;
    }
    r->floats += need;
  }
  pthread_rwlock_unlock(&r->lock);
  return rc;
}

instance *registry_remove(registry *r, const char *name) {
  pthread_rwlock_wrlock(&r->lock);
  entry **p = find(r, name);
  instance *in = NULL;
  if (*p) {
    entry *e = *p;
    *p = e->next;
    in = e->in;
    r->count--;
    r->floats -= e->floats;
    free(e);
  }
  pthread_rwlock_unlock(&r->lock);
  return in;
}

static int by_name(const void *a, const void *b) {
  const instance *x = *(instance *const *)a, *y = *(instance *const *)b;
  return strcmp(x->cfg.name, y->cfg.name);
}

size_t registry_list(registry *r, instance ***out) {
  pthread_rwlock_rdlock(&r->lock);
  size_t n = 0;
  *out = mem_xmalloc((r->count ? r->count : 1) * sizeof **out);
  for (int b = 0; b < NBUCKETS; b++)
    for (entry *e = r->bucket[b]; e; e = e->next) (*out)[n++] = instance_ref(e->in);
  pthread_rwlock_unlock(&r->lock);
  qsort(*out, n, sizeof **out, by_name);
  return n;
}

size_t registry_count(registry *r) {
  pthread_rwlock_rdlock(&r->lock);
  size_t n = r->count;
  pthread_rwlock_unlock(&r->lock);
  return n;
}

uint64_t registry_floats(registry *r) {
  pthread_rwlock_rdlock(&r->lock);
  uint64_t n = r->floats;
  pthread_rwlock_unlock(&r->lock);
  return n;
}
