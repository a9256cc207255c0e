/* registry: the named instances of one daemon, and the limits on them.
 *
 * A hash table from name to instance under a rwlock: lookups (every request)
 * take the read side; add, replace and remove the write side.  Every
 * instance handed out carries a reference the caller drops with
 * instance_unref.
 *
 * Two more things live here:
 *   - the catalog lock (registry_change_lock), which serializes the changes
 *     of which instances exist (create, import, delete), so that a change can
 *     write its file first and only then become visible, with no other
 *     change of the same name in between;
 *   - the memory quota (--max-params): every path that allocates parameters
 *     or buffers charges the floats first (registry_charge) and uncharges
 *     what it frees, so registry_floats() is what the instances hold.
 * Thread-safe.  Lock order: the catalog lock, then instance locks, then the
 * table's rwlock (a leaf: nothing is called while it is held).
 */
#ifndef DESCENT_REGISTRY_H
#define DESCENT_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "errors.h"
#include "instance.h"

typedef struct registry registry;

registry *registry_new(size_t max_instances, uint64_t max_floats);
void registry_free(registry *r); /* drops every instance; NULL is ignored */

/* A referenced instance, or NULL.  Any thread. */
instance *registry_get(registry *r, const char *name);

/* The catalog lock: held by create, import and delete from their first
 * check to their last change. */
void registry_change_lock(registry *r);
void registry_change_unlock(registry *r);

/* Whether a new instance named `name` may be added now: -E_EXISTS if the
 * name is taken, -E_QUOTA if --max-instances is reached, else 0.  Stays
 * true while the catalog lock is held. */
int registry_check_new(registry *r, const char *name, derr *e);

/* Charges `floats` against --max-params: 0, or -E_QUOTA (nothing charged)
 * with a message saying how many are free.  Uncharge gives them back. */
int registry_charge(registry *r, uint64_t floats, derr *e);
void registry_uncharge(registry *r, uint64_t floats);

/* Whether `floats` more would fit now (a check before allocating; the
 * charge itself comes after, for the exact amount). */
int registry_check_quota(registry *r, uint64_t floats, derr *e);

/* Adds in (the registry takes its own reference); its floats must have been
 * charged.  -E_EXISTS if the name is taken; nothing changes on failure.
 * Hold the catalog lock. */
int registry_add(registry *r, instance *in, derr *e);

/* Puts in under its name, returning the instance it replaced (a reference
 * the caller closes, uncharges and drops) or NULL.  Hold the catalog lock. */
instance *registry_replace(registry *r, instance *in);

/* Removes name; returns its instance (a reference; the caller uncharges
 * its floats) or NULL if absent.  Hold the catalog lock. */
instance *registry_remove(registry *r, const char *name);

/* References to every instance, sorted by name (caller unrefs each and frees
 * the array). */
size_t registry_list(registry *r, instance ***out);

size_t registry_count(registry *r);
uint64_t registry_floats(registry *r); /* charged: what the instances hold */

#endif
