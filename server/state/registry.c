/* registry: FNV-1a hashed chains of instances under a rwlock, the catalog
 * mutex, and the float quota (an atomic-free counter under its own mutex).
 * See registry.h.  Any thread. */
#include "registry.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"

#define NBUCKETS 1024

typedef struct entry {
  struct entry *next;
  instance *in;
} entry;

struct registry {
  pthread_rwlock_t lock;      /* the table */
  pthread_mutex_t catalog;    /* registry_change_lock */
  pthread_mutex_t quota_lock; /* floats */
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
  pthread_mutex_init(&r->catalog, NULL);
  pthread_mutex_init(&r->quota_lock, NULL);
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
  pthread_mutex_destroy(&r->catalog);
  pthread_mutex_destroy(&r->quota_lock);
  free(r);
}

static entry **find(registry *r, const char *name) {
  entry **p = &r->bucket[hash(name)];
  while (*p && strcmp(instance_name((*p)->in), name) != 0) p = &(*p)->next;
  return p;
}

instance *registry_get(registry *r, const char *name) {
  pthread_rwlock_rdlock(&r->lock);
  entry *e = *find(r, name);
  instance *in = e ? instance_ref(e->in) : NULL;
  pthread_rwlock_unlock(&r->lock);
  return in;
}

void registry_change_lock(registry *r) { pthread_mutex_lock(&r->catalog); }
void registry_change_unlock(registry *r) { pthread_mutex_unlock(&r->catalog); }

int registry_check_new(registry *r, const char *name, derr *e) {
  pthread_rwlock_rdlock(&r->lock);
  int rc = 0;
  if (*find(r, name)) rc = derr_set(e, E_EXISTS, "an instance named '%s' exists", name);
  else if (r->count >= r->max_instances)
    rc = derr_set(e, E_QUOTA, "the daemon holds its maximum of %zu instances (--max-instances)", r->max_instances);
  pthread_rwlock_unlock(&r->lock);
  return rc;
}

/* Under quota_lock. */
static int over(registry *r, uint64_t floats, derr *e) {
  if (floats <= r->max_floats && r->floats <= r->max_floats - floats) return 0;
  return derr_set(e, E_QUOTA,
                  "this needs %llu floats (parameters and state) but only %llu of the %llu allowed are "
                  "free (--max-params)",
                  (unsigned long long)floats,
                  (unsigned long long)(r->floats < r->max_floats ? r->max_floats - r->floats : 0),
                  (unsigned long long)r->max_floats);
}

int registry_check_quota(registry *r, uint64_t floats, derr *e) {
  pthread_mutex_lock(&r->quota_lock);
  int rc = over(r, floats, e);
  pthread_mutex_unlock(&r->quota_lock);
  return rc;
}

int registry_charge(registry *r, uint64_t floats, derr *e) {
  pthread_mutex_lock(&r->quota_lock);
  int rc = over(r, floats, e);
  if (rc == 0) r->floats += floats;
  pthread_mutex_unlock(&r->quota_lock);
  return rc;
}

void registry_uncharge(registry *r, uint64_t floats) {
  pthread_mutex_lock(&r->quota_lock);
  r->floats = floats <= r->floats ? r->floats - floats : 0;
  pthread_mutex_unlock(&r->quota_lock);
}

int registry_add(registry *r, instance *in, derr *e) {
  pthread_rwlock_wrlock(&r->lock);
  entry **p = find(r, instance_name(in));
  int rc = 0;
  if (*p) {
    rc = derr_set(e, E_EXISTS, "an instance named '%s' exists", instance_name(in));
  } else {
    entry *n = mem_xcalloc(1, sizeof *n);
    n->in = instance_ref(in);
    *p = n;
    r->count++;
  }
  pthread_rwlock_unlock(&r->lock);
  return rc;
}

instance *registry_replace(registry *r, instance *in) {
  instance *old = NULL;
  pthread_rwlock_wrlock(&r->lock);
  entry **p = find(r, instance_name(in));
  if (*p) {
    old = (*p)->in;
    (*p)->in = instance_ref(in);
  } else {
    entry *n = mem_xcalloc(1, sizeof *n);
    n->in = instance_ref(in);
    *p = n;
    r->count++;
  }
  pthread_rwlock_unlock(&r->lock);
  return old;
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
    free(e);
  }
  pthread_rwlock_unlock(&r->lock);
  return in;
}

static int by_name(const void *a, const void *b) {
  return strcmp(instance_name(*(instance *const *)a), instance_name(*(instance *const *)b));
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
  pthread_mutex_lock(&r->quota_lock);
  uint64_t n = r->floats;
  pthread_mutex_unlock(&r->quota_lock);
  return n;
}
