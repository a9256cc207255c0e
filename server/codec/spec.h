/* spec: the JSON forms of an instance: create bodies, PATCH bodies,
 * descriptions and state documents, to and from instance_cfg/instance_state.
 *
 * Every decoder validates completely before it returns, names the field
 * that is wrong ("tensors[1].shape[0]: must be a positive integer"), and
 * leaves its outputs empty on failure.  No locks, no I/O; any thread.
 */
#ifndef DESCENT_SPEC_H
#define DESCENT_SPEC_H

#include <jansson.h>
#include <stdbool.h>

/* A sync round's deadline when the create gives none (5 minutes), and the
 * largest one may ask for (a day): no request waits without a bound. */
#define SPEC_ROUND_TIMEOUT_DEFAULT_MS 300000
#define SPEC_ROUND_TIMEOUT_MAX_MS 86400000

#include "codec_json.h"
#include "errors.h"
#include "instance.h"

/* A worker's lease when the instance does not set worker_lease_ms. */
#define SPEC_DEFAULT_LEASE_MS 30000

/* [A-Za-z0-9][A-Za-z0-9._-]{0,63} */
bool spec_name_ok(const char *s);

/* A create body (POST /v1/optimizers): configuration in cfg, initial
 * parameter values in *params (n floats, caller frees with mem_free_floats).
 * A configuration needing more than max_floats floats (parameters and
 * state, as instance_cfg_footprint counts them: pass --max-params) is
 * refused with E_QUOTA before anything of that size is allocated; the
 * registry's quota is the caller's to check.  Returns 0 or a negative error
 * (then *params is NULL and cfg holds nothing to free). */
int spec_parse_create(const jdoc *d, uint64_t max_floats, instance_cfg *cfg, float **params, derr *e);

/* Sparse tensors: V (rows) up to 2^62, D (row length) up to SPEC_SPARSE_MAX_D,
 * and at most SPEC_MAX_ROWS rows in one list (a push's tensor, a pull, an
 * explicit init). */
#define SPEC_SPARSE_MAX_V (1ull << 62)
#define SPEC_SPARSE_MAX_D 65536
#define SPEC_MAX_ROWS (1 << 24)

/* A sparse tensor's explicit initial rows (create's
 * "init": {"rows": [...], "values": [[...], ...]}): k distinct ids and k*D
 * floats (both malloc'd). */
typedef struct spec_rows {
  size_t k;
  uint64_t *rows;
  float *vals;
} spec_rows;
void spec_rows_free(spec_rows *r, size_t ntensors); /* NULL is fine */

/* As spec_parse_create, also giving the explicit rows: *rows is NULL, or one
 * entry per tensor (k = 0 where none), for instance_init_rows.  The rows'
 * floats (whole blocks: parameters and state) count against max_floats. */
int spec_parse_create_rows(const jdoc *d, uint64_t max_floats, instance_cfg *cfg, float **params, spec_rows **rows,
                           derr *e);

/* Reads {"rows": [ids < V], "values": [[D floats], ...] or k*D flat} for
 * sparse tensor t into ids[0..k) and vals[0..k*D) (room for rows_count
 * entries: the caller sized them from the array's length, at most
 * SPEC_MAX_ROWS), *k the count.  ascending: ids must also be strictly
 * ascending (state documents).  Values must be finite.  0 or an error
 * naming what. */
int spec_rows_read(const jdoc *d, json_t *obj, const tensor *t, bool ascending, uint64_t *ids, float *vals, size_t *k,
                   const char *what, derr *e);

/* How many rows {"rows": [...], ...} lists (0 if none; -1: more than SPEC_MAX_ROWS). */
long spec_rows_count(const jdoc *d, json_t *obj);

/* Whether c has a sparse tensor. */
bool spec_cfg_has_sparse(const instance_cfg *c);

/* Applies a PATCH body to a copy of the current configuration: *out is the
 * validated new configuration (caller frees).  Only run-time settings may
 * change (hyper, clip_grad_norm, schedule, max_staleness, workers,
 * min_workers, round_timeout_ms, worker_lease_ms). */
int spec_parse_patch(const jdoc *d, const instance_cfg *cur, instance_cfg *out, derr *e);

/* The configuration as JSON (name, algorithm, hyper, mode, ..., tensors). */
json_t *spec_cfg_json(const instance_cfg *c);

/* Applies a "hyper" object to h (torch's checks included): 0 or an error. */
int spec_parse_hyper(optim_alg alg, json_t *obj, optim_hyper *h, derr *e);

/* The hyperparameters of c's algorithm as a JSON object. */
json_t *spec_hyper_json(optim_alg alg, const optim_hyper *h);

/* GET .../state: the whole state as a JSON document, written into b. */
void spec_state_write(jbuf *b, const instance_state *s);

/* The configuration inside a snapshot header (the same fields as a state
 * document, without arrays).  Returns 0 or an error; cfg is empty on failure. */
int spec_parse_cfg_json(json_t *root, instance_cfg *cfg, derr *e);

/* PUT .../state: a state document for instance `name` (the document's own
 * name, if any, must match).  Fills *s completely; returns 0 or an error
 * (then *s is empty).  max_floats: as for spec_parse_create. */
int spec_parse_state(const jdoc *d, const char *name, uint64_t max_floats, instance_state *s, derr *e);

/* The idempotency window of a state (s->idem, oldest first) as a JSON list
 * [{"key", "step"[, "error", "message"]}] (new reference), and back into s
 * (keys may be NULL: none).  Snapshot headers and state documents carry it,
 * so a retry after a restart or a migration replays its first outcome.
 * parse: 0, or -E_BAD_REQUEST naming the entry. */
json_t *spec_idem_json(const instance_state *s);
int spec_parse_idem(json_t *keys, instance_state *s, derr *e);

#endif
