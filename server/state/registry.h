/* registry: the named instances of one daemon, and the limits on them.
 *
 * A hash table from name to instance under a rwlock: lookups (every request)
 * take the read side; create, replace and delete the write side.  Every
 * instance handed out carries a reference the caller drops with
 * instance_unref.  Quotas (instances, floats held) are checked under the
 * write lock before an instance is added.  Thread-safe.
 */
#ifndef DESCENT_REGISTRY_H
#define DESCENT_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "errors.h"
#include "instance.h"

typedef struct registry registry;

registry *registry_new(size_t max_instances, uint64_t max_floats);
void registry_free(registry *r); /* drops every instance */

/* A referenced instance, or NULL. */
instance *registry_get(registry *r, const char *name);

/* Checks the quotas for adding cfg (replacing `replacing` floats).
 * Returns 0 or -E_QUOTA with a message. */
int registry_check_quota(registry *r, const instance_cfg *cfg, uint64_t replacing, derr *e);

/* Adds in (the registry takes its own reference).  -E_EXISTS if the name is
 * taken, -E_QUOTA over a limit; nothing changes on failure. */
int registry_add(registry *r, instance *in, derr *e);

/* Puts in under its name, returning the instance it replaced (a reference
 * the caller must close and drop) or NULL.  -E_QUOTA leaves all unchanged. */
int registry_replace(registry *r, instance *in, instance **old, derr *e);

/* Removes name; returns its instance (a reference) or NULL if absent. */
instance *registry_remove(registry *r, const char *name);

/* References to every instance, sorted by name (caller unrefs each and frees
 * the array). */
size_t registry_list(registry *r, instance ***out);

size_t registry_count(registry *r);
uint64_t registry_floats(registry *r);

#endif
