/* spec: decoding and encoding instance configurations and state documents
 * (spec.h).  Owns nothing past a call: decoded configurations, parameters
 * and states are the caller's.  Never touches an instance, a lock or the
 * registry: JSON in, instance_cfg/instance_state out, and back.  HTTP
 * threads (create, PATCH, import, describe, export) and persist (snapshot
 * headers, on whichever thread saves or loads). */
#include "spec.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "optim_sparse.h"
#include "rng.h"

bool spec_name_ok(const char *s) {
  if (!s) return false;
  size_t n = strlen(s);
  if (n < 1 || n > NAME_MAX_LEN) return false;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (!alnum && (i == 0 || !(c == '.' || c == '_' || c == '-'))) return false;
  }
  return true;
}

/* ---- small typed getters ------------------------------------------------------ */

static int only_keys(json_t *obj, const char *const *allowed, const char *path, int code, derr *e) {
  const char *k;
  json_t *v;
  json_object_foreach(obj, k, v) {
    bool ok = false;
    for (const char *const *a = allowed; *a && !ok; a++) ok = strcmp(*a, k) == 0;
    if (!ok) return derr_set(e, code, "%s%s%.64s: unknown field", path, *path ? "." : "", k);
  }
  return 0;
}

static int get_double(json_t *obj, const char *key, double *out, const char *path, derr *e) {
  json_t *v = json_object_get(obj, key);
  if (!v || json_is_null(v)) return 0;
  if (!json_is_number(v)) return derr_set(e, E_BAD_REQUEST, "%s%s: expected a number", path, key);
  *out = json_number_value(v);
  return 1;
}

/* An integer in [lo, hi] (integral reals such as 1e3 are accepted). */
static int get_int(json_t *obj, const char *key, int64_t lo, int64_t hi, int64_t *out,
                   const char *path, derr *e) {
  json_t *v = json_object_get(obj, key);
  if (!v || json_is_null(v)) return 0;
  double d;
  if (json_is_integer(v)) d = (double)json_integer_value(v);
  else if (json_is_real(v)) d = json_real_value(v);
  else return derr_set(e, E_BAD_REQUEST, "%s%s: expected an integer", path, key);
  if (d != floor(d)) return derr_set(e, E_BAD_REQUEST, "%s%s: expected an integer", path, key);
  /* integers compare exactly; a real must also fit int64_t ((double)INT64_MAX is 2^63) */
  if (json_is_integer(v) ? json_integer_value(v) < lo || json_integer_value(v) > hi
                         : d < (double)lo || d > (double)hi || d >= 0x1p63)
    return derr_set(e, E_BAD_VALUE, "%s%s: must be between %lld and %lld", path, key, (long long)lo,
                    (long long)hi);
  *out = json_is_integer(v) ? json_integer_value(v) : (int64_t)d;
  return 1;
}

static int get_string(json_t *obj, const char *key, const char **out, const char *path, derr *e) {
  json_t *v = json_object_get(obj, key);
  if (!v || json_is_null(v)) return 0;
  if (!json_is_string(v)) return derr_set(e, E_BAD_REQUEST, "%s%s: expected a string", path, key);
  *out = json_string_value(v);
  return 1;
}

/* ---- hyperparameters ----------------------------------------------------------- */

static int apply_hyper(optim_alg alg, json_t *obj, optim_hyper *h, derr *e) {
  if (!obj || json_is_null(obj)) return 0;
  if (!json_is_object(obj)) return derr_set(e, E_BAD_REQUEST, "hyper: expected an object");
  const char *k;
  json_t *v;
  json_object_foreach(obj, k, v) {
    const optim_hyper_field *f = optim_hyper_fields;
    while (f->name && strcmp(f->name, k) != 0) f++;
    if (!f->name || !(f->algs & OPTIM_A(alg)))
      return derr_set(e, E_UNKNOWN_HYPER, "hyper.%.64s: %s has no hyperparameter of that name", k,
                      optim_alg_name(alg));
    char *base = (char *)h + f->offset;
    switch (f->kind) {
    case OPTIM_HK_NUM:
      if (!json_is_number(v)) return derr_set(e, E_BAD_REQUEST, "hyper.%s: expected a number", k);
      *(double *)base = json_number_value(v);
      break;
    case OPTIM_HK_BOOL:
      if (!json_is_boolean(v)) return derr_set(e, E_BAD_REQUEST, "hyper.%s: expected true or false", k);
      *(bool *)base = json_is_true(v);
      break;
    case OPTIM_HK_PAIR:
      if (!json_is_array(v) || json_array_size(v) != 2 || !json_is_number(json_array_get(v, 0)) ||
          !json_is_number(json_array_get(v, 1)))
        return derr_set(e, E_BAD_REQUEST, "hyper.%s: expected two numbers", k);
      ((double *)base)[0] = json_number_value(json_array_get(v, 0));
      ((double *)base)[1] = json_number_value(json_array_get(v, 1));
      break;
    case OPTIM_HK_CENTER: {
      const char *s = json_string_value(v);
      if (!s || (strcmp(s, "zero") && strcmp(s, "best")))
        return derr_set(e, E_BAD_VALUE, "hyper.%s: expected \"zero\" or \"best\"", k);
      *(int *)base = strcmp(s, "best") == 0 ? OPTIM_CENTER_BEST : OPTIM_CENTER_ZERO;
      break;
    }
    default: { /* SEED */
      if (!json_is_integer(v) || json_integer_value(v) < 0)
        return derr_set(e, E_BAD_VALUE, "hyper.%s: expected a non-negative integer", k);
      *(uint64_t *)base = (uint64_t)json_integer_value(v);
      break;
    }
    }
  }
  return optim_hyper_check(alg, h, e);
}

int spec_parse_hyper(optim_alg alg, json_t *obj, optim_hyper *h, derr *e) { return apply_hyper(alg, obj, h, e); }

json_t *spec_hyper_json(optim_alg alg, const optim_hyper *h) {
  json_t *o = json_object();
  for (const optim_hyper_field *f = optim_hyper_fields; f->name; f++) {
    if (!(f->algs & OPTIM_A(alg))) continue;
    const char *base = (const char *)h + f->offset;
    json_t *v;
    switch (f->kind) {
    case OPTIM_HK_NUM: v = jbuf_real(*(const double *)base); break;
    case OPTIM_HK_BOOL: v = json_boolean(*(const bool *)base); break;
    case OPTIM_HK_PAIR:
      v = json_pack("[oo]", jbuf_real(((const double *)base)[0]), jbuf_real(((const double *)base)[1]));
      break;
    case OPTIM_HK_CENTER: v = json_string(*(const int *)base == OPTIM_CENTER_BEST ? "best" : "zero"); break;
    default: v = json_integer((json_int_t) * (const uint64_t *)base); break;
    }
    json_object_set_new(o, f->name, v);
  }
  return o;
}

/* ---- schedule -------------------------------------------------------------------- */

/* step_size, T_max and total_iters are kept as doubles: beyond 2^53 they
 * would not read back as the integers they were (nor fit json_int_t). */
#define SCHED_MAX_ITERS (1ll << 53)

static int parse_schedule(json_t *v, schedule *s, derr *e) {
  memset(s, 0, sizeof *s);
  if (!v || json_is_null(v)) return 0;
  if (!json_is_object(v)) return derr_set(e, E_BAD_REQUEST, "schedule: expected an object");
  const char *type = NULL;
  int rc;
  if ((rc = get_string(v, "type", &type, "schedule.", e)) < 0) return rc;
  if (!type) return derr_set(e, E_BAD_REQUEST, "schedule.type: required (step, exponential, cosine, linear_warmup)");
  int kind = schedule_kind_from_name(type);
  if (kind < 0)
    return derr_set(e, E_BAD_VALUE, "schedule.type: unknown schedule '%.32s' (step, exponential, cosine, linear_warmup)", type);
  s->kind = kind;
  s->gamma = 0.1;
  s->start_factor = 1.0 / 3;
  s->end_factor = 1.0;
  s->total_iters = 5;
  static const char *const k_step[] = {"type", "step_size", "gamma", NULL};
  static const char *const k_exp[] = {"type", "gamma", NULL};
  static const char *const k_cos[] = {"type", "T_max", "eta_min", NULL};
  static const char *const k_lin[] = {"type", "start_factor", "end_factor", "total_iters", NULL};
  const char *const *allowed = kind == SCHED_STEP ? k_step : kind == SCHED_EXPONENTIAL ? k_exp
                               : kind == SCHED_COSINE ? k_cos : k_lin;
  if ((rc = only_keys(v, allowed, "schedule", E_BAD_VALUE, e)) < 0) return rc;
  int64_t iv;
  switch (kind) {
  case SCHED_STEP:
    if ((rc = get_int(v, "step_size", 1, SCHED_MAX_ITERS, &iv, "schedule.", e)) < 0) return rc;
    if (rc == 0) return derr_set(e, E_BAD_REQUEST, "schedule.step_size: required");
    s->step_size = (double)iv;
    if ((rc = get_double(v, "gamma", &s->gamma, "schedule.", e)) < 0) return rc;
    break;
  case SCHED_EXPONENTIAL:
    if ((rc = get_double(v, "gamma", &s->gamma, "schedule.", e)) < 0) return rc;
    if (rc == 0) return derr_set(e, E_BAD_REQUEST, "schedule.gamma: required");
    break;
  case SCHED_COSINE:
    if ((rc = get_int(v, "T_max", 1, SCHED_MAX_ITERS, &iv, "schedule.", e)) < 0) return rc;
    if (rc == 0) return derr_set(e, E_BAD_REQUEST, "schedule.T_max: required");
    s->t_max = (double)iv;
    if ((rc = get_double(v, "eta_min", &s->eta_min, "schedule.", e)) < 0) return rc;
    break;
  default:
    if ((rc = get_double(v, "start_factor", &s->start_factor, "schedule.", e)) < 0) return rc;
    if ((rc = get_double(v, "end_factor", &s->end_factor, "schedule.", e)) < 0) return rc;
    if ((rc = get_int(v, "total_iters", 1, SCHED_MAX_ITERS, &iv, "schedule.", e)) < 0) return rc;
    if (rc) s->total_iters = (double)iv;
    if (!(s->start_factor > 0 && s->start_factor <= 1 && s->end_factor >= 0 && s->end_factor <= 1))
      return derr_set(e, E_BAD_VALUE, "schedule: start_factor must be in (0, 1] and end_factor in [0, 1]");
    break;
  }
  if (!isfinite(s->gamma) || s->gamma <= 0 || !isfinite(s->eta_min) || s->eta_min < 0)
    return derr_set(e, E_BAD_VALUE, "schedule: gamma must be positive and eta_min non-negative");
  return 0;
}

static json_t *schedule_json(const schedule *s) {
  switch (s->kind) {
  case SCHED_STEP: return json_pack("{s:s,s:I,s:o}", "type", "step", "step_size", (json_int_t)s->step_size, "gamma", jbuf_real(s->gamma));
  case SCHED_EXPONENTIAL: return json_pack("{s:s,s:o}", "type", "exponential", "gamma", jbuf_real(s->gamma));
  case SCHED_COSINE: return json_pack("{s:s,s:I,s:o}", "type", "cosine", "T_max", (json_int_t)s->t_max, "eta_min", jbuf_real(s->eta_min));
  case SCHED_LINEAR_WARMUP:
    return json_pack("{s:s,s:o,s:o,s:I}", "type", "linear_warmup", "start_factor", jbuf_real(s->start_factor),
                     "end_factor", jbuf_real(s->end_factor), "total_iters", (json_int_t)s->total_iters);
  default: return json_null();
  }
}

/* ---- run-time settings (create and PATCH share them) ------------------------------ */

static int parse_runtime(json_t *root, instance_cfg *c, derr *e) {
  int rc;
  int64_t iv;
  if ((rc = get_int(root, "max_staleness", 0, INT64_MAX / 2, &iv, "", e)) < 0) return rc;
  if (rc) c->max_staleness = iv;
  if (json_is_null(json_object_get(root, "max_staleness"))) c->max_staleness = -1;
  if ((rc = get_int(root, "workers", 1, 100000, &iv, "", e)) < 0) return rc;
  if (rc) c->workers = (uint32_t)iv;
  if ((rc = get_int(root, "min_workers", 1, 100000, &iv, "", e)) < 0) return rc;
  if (rc) c->min_workers = (uint32_t)iv;
  if ((rc = get_int(root, "round_timeout_ms", 1, SPEC_ROUND_TIMEOUT_MAX_MS, &iv, "", e)) < 0) return rc;
  if (rc) c->round_timeout_ms = (uint64_t)iv;
  /* no sync push waits without a bound: a round has a deadline even when
   * none was asked for (older snapshots said null) */
  if (c->mode == MODE_SYNC && (!c->round_timeout_ms || json_is_null(json_object_get(root, "round_timeout_ms"))))
    c->round_timeout_ms = SPEC_ROUND_TIMEOUT_DEFAULT_MS;
  if ((rc = get_int(root, "worker_lease_ms", 0, INT64_MAX / 2, &iv, "", e)) < 0) return rc;
  if (rc) c->worker_lease_ms = (uint64_t)iv;
  double clip = c->clip_grad_norm;
  if ((rc = get_double(root, "clip_grad_norm", &clip, "", e)) < 0) return rc;
  if (!(isfinite(clip) && clip >= 0))
    return derr_set(e, E_BAD_VALUE, "clip_grad_norm: must be a positive number (or 0/null: off)");
  c->clip_grad_norm = clip;
  if (json_is_null(json_object_get(root, "clip_grad_norm"))) c->clip_grad_norm = 0;
  json_t *sv = json_object_get(root, "schedule");
  if (sv && (rc = parse_schedule(sv, &c->sched, e)) < 0) return rc;
  if (c->mode == MODE_SYNC) {
    if (c->workers < 1) return derr_set(e, E_BAD_REQUEST, "workers: sync mode needs \"workers\": N");
    if (c->min_workers > c->workers)
      return derr_set(e, E_BAD_VALUE, "min_workers: must be at most workers (%u)", c->workers);
  } else {
    static const char *const sync_only[] = {"workers", "min_workers", "round_timeout_ms", "aggregate"};
    for (size_t i = 0; i < 4; i++)
      if (json_object_get(root, sync_only[i]))
        return derr_set(e, E_BAD_VALUE, "%s: only for \"mode\": \"sync\"", sync_only[i]);
  }
  if (c->mode == MODE_SYNC && json_object_get(root, "max_staleness") &&
      !json_is_null(json_object_get(root, "max_staleness")))
    return derr_set(e, E_BAD_VALUE, "max_staleness: only for \"mode\": \"async\" (sync rounds refuse any stale gradient)");
  return 0;
}

/* ---- tensors and inits ------------------------------------------------------------- */

static int parse_shape(json_t *v, tensor *t, const char *path, derr *e) {
  if (!json_is_array(v)) return derr_set(e, E_BAD_REQUEST, "%s.shape: expected an array of sizes", path);
  size_t nd = json_array_size(v);
  if (nd > TENSOR_MAXDIM)
    return derr_set(e, E_BAD_REQUEST, "%s.shape: at most %d dimensions", path, TENSOR_MAXDIM);
  uint64_t count = 1;
  for (size_t k = 0; k < nd; k++) {
    json_t *x = json_array_get(v, k);
    if (!json_is_integer(x) || json_integer_value(x) < 1)
      return derr_set(e, E_BAD_REQUEST, "%s.shape[%zu]: must be a positive integer", path, k);
    uint64_t d = (uint64_t)json_integer_value(x);
    if (d > (1ull << 40) || count > (1ull << 40) / d)
      return derr_set(e, E_QUOTA, "%s.shape: too many elements", path);
    t->shape[k] = d;
    count *= d;
  }
  t->ndim = (int)nd;
  t->count = (size_t)count;
  return 0;
}

/* Fills out[0..t->count) from a tensor's init. */
static int fill_init(const jdoc *d, json_t *tv, const tensor *t, float *out, const char *path, derr *e) {
  json_t *values = json_object_get(tv, "values");
  json_t *init = json_object_get(tv, "init");
  if (values && init) return derr_set(e, E_BAD_REQUEST, "%s: give \"values\" or \"init\", not both", path);
  if (!values && json_is_object(init) && json_object_size(init) == 1 && json_object_get(init, "values"))
    values = json_object_get(init, "values");
  size_t shape[TENSOR_MAXDIM];
  for (int k = 0; k < t->ndim; k++) shape[k] = (size_t)t->shape[k];
  char what[160];
  snprintf(what, sizeof what, "%s.values", path);
  if (values) {
    int rc = jdoc_floats(d, values, out, t->count, shape, t->ndim, what, e);
    if (rc < 0) return rc;
    size_t where;
    if (!optim_all_finite(out, t->count, &where))
      return derr_set(e, E_NOT_FINITE, "%s[%zu]: NaN or infinite", what, where);
    return 0;
  }
  if (!init || json_is_null(init) || (json_is_string(init) && !strcmp(json_string_value(init), "zeros"))) {
    memset(out, 0, t->count * sizeof(float));
    return 0;
  }
  if (!json_is_object(init) || json_object_size(init) != 1)
    return derr_set(e, E_BAD_REQUEST,
                    "%s.init: expected \"zeros\", {\"values\": [...]}, {\"constant\": c}, "
                    "{\"normal\": {...}} or {\"uniform\": {...}}", path);
  const char *kind = json_object_iter_key(json_object_iter(init));
  json_t *arg = json_object_iter_value(json_object_iter(init));
  char p2[160];
  snprintf(p2, sizeof p2, "%s.init.%s.", path, kind);
  int rc;
  if (!strcmp(kind, "constant")) {
    if (!json_is_number(arg)) return derr_set(e, E_BAD_REQUEST, "%s.init.constant: expected a number", path);
    float c = (float)json_number_value(arg);
    if (!isfinite(c)) return derr_set(e, E_NOT_FINITE, "%s.init.constant: not finite in float32", path);
    for (size_t i = 0; i < t->count; i++) out[i] = c;
    return 0;
  }
  if (!strcmp(kind, "normal") || !strcmp(kind, "uniform")) {
    bool normal = kind[0] == 'n';
    if (!json_is_object(arg)) return derr_set(e, E_BAD_REQUEST, "%s.init.%s: expected an object", path, kind);
    static const char *const k_normal[] = {"mean", "std", "seed", NULL};
    static const char *const k_uniform[] = {"low", "high", "seed", NULL};
    char p3[160];
    snprintf(p3, sizeof p3, "%s.init.%s", path, kind);
    if ((rc = only_keys(arg, normal ? k_normal : k_uniform, p3, E_BAD_REQUEST, e)) < 0) return rc;
    double a = 0, b = 1;
    int64_t seed = 0;
    if ((rc = get_double(arg, normal ? "mean" : "low", &a, p2, e)) < 0) return rc;
    if ((rc = get_double(arg, normal ? "std" : "high", &b, p2, e)) < 0) return rc;
    if ((rc = get_int(arg, "seed", 0, INT64_MAX, &seed, p2, e)) < 0) return rc;
    if (!isfinite(a) || !isfinite(b) || (normal && b < 0) || (!normal && b < a))
      return derr_set(e, E_BAD_VALUE, "%s.init.%s: %s", path, kind,
                      normal ? "std must be non-negative" : "high must be at least low");
    if (normal) rng_fill_normal(out, t->count, t->origin, (uint64_t)seed, 0, a, b);
    else rng_fill_uniform(out, t->count, t->origin, (uint64_t)seed, 0, a, b);
    return 0;
  }
  return derr_set(e, E_BAD_REQUEST, "%s.init: unknown init '%.32s' (zeros, values, constant, normal, uniform)",
                  path, kind);
}

/* ---- sparse tensors ------------------------------------------------------------------ */

/* "shape": [V, D] of a sparse tensor: V up to 2^62 rows, D up to SPEC_SPARSE_MAX_D. */
static int parse_sparse_shape(json_t *v, tensor *t, const char *path, derr *e) {
  if (!json_is_array(v) || json_array_size(v) != 2)
    return derr_set(e, E_BAD_REQUEST, "%s.shape: a sparse tensor is [V, D] (rows, row length)", path);
  json_t *V = json_array_get(v, 0), *D = json_array_get(v, 1);
  if (!json_is_integer(V) || json_integer_value(V) < 1 || (uint64_t)json_integer_value(V) > SPEC_SPARSE_MAX_V)
    return derr_set(e, E_BAD_VALUE, "%s.shape[0]: V must be an integer in [1, 2^62]", path);
  if (!json_is_integer(D) || json_integer_value(D) < 1 || json_integer_value(D) > SPEC_SPARSE_MAX_D)
    return derr_set(e, E_BAD_VALUE, "%s.shape[1]: D must be an integer in [1, %d]", path, SPEC_SPARSE_MAX_D);
  t->ndim = 2;
  t->shape[0] = t->vrows = (uint64_t)json_integer_value(V);
  t->shape[1] = (uint64_t)json_integer_value(D);
  t->dim = (size_t)t->shape[1];
  t->count = 0; /* no room in the flat arrays */
  t->sparse = true;
  return 0;
}

/* A sparse tensor's seeded init (zeros, constant, normal, uniform) into
 * t->init.  {"rows", "values"} (create only) leaves zeros: the rows are read
 * by sparse_rows_init. */
static int parse_sparse_init(json_t *init, tensor *t, bool state_doc, const char *path, derr *e) {
  t->init = (tensor_init){.kind = TENSOR_INIT_ZEROS};
  if (!init || json_is_null(init) || (json_is_string(init) && !strcmp(json_string_value(init), "zeros"))) return 0;
  if (!state_doc && json_is_object(init) && json_object_get(init, "rows")) return 0;
  if (!json_is_object(init) || json_object_size(init) != 1)
    return derr_set(e, E_BAD_REQUEST,
                    "%s.init: a sparse tensor takes \"zeros\", {\"constant\": c}, {\"normal\": {...}}, "
                    "{\"uniform\": {...}} or {\"rows\": [...], \"values\": [...]}", path);
  const char *kind = json_object_iter_key(json_object_iter(init));
  json_t *arg = json_object_iter_value(json_object_iter(init));
  if (!strcmp(kind, "constant")) {
    if (!json_is_number(arg) || !isfinite((float)json_number_value(arg)))
      return derr_set(e, E_BAD_VALUE, "%s.init.constant: expected a number finite in float32", path);
    t->init = (tensor_init){.kind = TENSOR_INIT_CONSTANT, .a = (double)(float)json_number_value(arg)};
    return 0;
  }
  if (strcmp(kind, "normal") && strcmp(kind, "uniform"))
    return derr_set(e, E_BAD_REQUEST, "%s.init: unknown init '%.32s' for a sparse tensor", path, kind);
  bool normal = kind[0] == 'n';
  char p2[160], p3[160];
  snprintf(p2, sizeof p2, "%s.init.%s.", path, kind);
  snprintf(p3, sizeof p3, "%s.init.%s", path, kind);
  if (!json_is_object(arg)) return derr_set(e, E_BAD_REQUEST, "%s: expected an object", p3);
  static const char *const k_normal[] = {"mean", "std", "seed", NULL};
  static const char *const k_uniform[] = {"low", "high", "seed", NULL};
  int rc;
  if ((rc = only_keys(arg, normal ? k_normal : k_uniform, p3, E_BAD_REQUEST, e)) < 0) return rc;
  double a = 0, b = 1;
  int64_t seed = 0;
  if ((rc = get_double(arg, normal ? "mean" : "low", &a, p2, e)) < 0 ||
      (rc = get_double(arg, normal ? "std" : "high", &b, p2, e)) < 0 ||
      (rc = get_int(arg, "seed", 0, INT64_MAX, &seed, p2, e)) < 0)
    return rc;
  if (!isfinite(a) || !isfinite(b) || (normal && b < 0) || (!normal && b < a))
    return derr_set(e, E_BAD_VALUE, "%s: %s", p3, normal ? "std must be non-negative" : "high must be at least low");
  t->init = (tensor_init){.kind = normal ? TENSOR_INIT_NORMAL : TENSOR_INIT_UNIFORM, .a = a, .b = b,
                          .seed = (uint64_t)seed};
  return 0;
}

static json_t *sparse_init_json(const tensor_init *in) {
  switch (in->kind) {
  case TENSOR_INIT_CONSTANT: return json_pack("{s:o}", "constant", jbuf_real(in->a));
  case TENSOR_INIT_NORMAL:
    return json_pack("{s:{s:o,s:o,s:I}}", "normal", "mean", jbuf_real(in->a), "std", jbuf_real(in->b), "seed",
                     (json_int_t)in->seed);
  case TENSOR_INIT_UNIFORM:
    return json_pack("{s:{s:o,s:o,s:I}}", "uniform", "low", jbuf_real(in->a), "high", jbuf_real(in->b), "seed",
                     (json_int_t)in->seed);
  default: return json_string("zeros");
  }
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

long spec_rows_count(const jdoc *d, json_t *obj) {
  json_t *rows = json_is_object(obj) ? json_object_get(obj, "rows") : NULL;
  if (!rows) return 0;
  long k = jdoc_count(d, rows);
  if (k < 0 && json_is_array(rows)) k = (long)json_array_size(rows); /* not numbers: jdoc_u64s says so */
  return k > SPEC_MAX_ROWS ? -1 : k;
}

int spec_rows_read(const jdoc *d, json_t *obj, const tensor *t, bool ascending, uint64_t *ids, float *vals,
                   size_t *k, const char *what, derr *e) {
  if (!json_is_object(obj) || !json_object_get(obj, "rows") || !json_object_get(obj, "values") ||
      json_object_size(obj) != 2)
    return derr_set(e, E_BAD_REQUEST, "%s: a sparse tensor's rows are {\"rows\": [ids], \"values\": [[%zu floats], ...]}",
                    what, t->dim);
  long kk = spec_rows_count(d, obj);
  if (kk < 0) return derr_set(e, E_BAD_LENGTH, "%s.rows: expected an array of at most %d row ids", what, SPEC_MAX_ROWS);
  char p[200];
  snprintf(p, sizeof p, "%s.rows", what);
  int rc = jdoc_u64s(d, json_object_get(obj, "rows"), ids, (size_t)kk, t->vrows, p, e);
  if (rc < 0) return rc;
  snprintf(p, sizeof p, "%s.values", what);
  size_t shape[2] = {(size_t)kk, t->dim};
  if ((rc = jdoc_floats(d, json_object_get(obj, "values"), vals, (size_t)kk * t->dim, shape, 2, p, e)) < 0) return rc;
  size_t where;
  if (!optim_all_finite(vals, (size_t)kk * t->dim, &where))
    return derr_set(e, E_NOT_FINITE, "%s[%zu][%zu]: NaN or infinite", p, where / t->dim, where % t->dim);
  for (size_t i = 1; ascending && i < (size_t)kk; i++)
    if (ids[i] <= ids[i - 1])
      return derr_set(e, E_BAD_VALUE, "%s.rows[%zu]: ids must be ascending and distinct", what, i);
  *k = (size_t)kk;
  return 0;
}

void spec_rows_free(spec_rows *r, size_t ntensors) {
  if (!r) return;
  for (size_t i = 0; i < ntensors; i++) {
    free(r[i].rows);
    free(r[i].vals);
  }
  free(r);
}

/* Create's explicit rows of sparse tensor t (tensors[i].init = {"rows", "values"}):
 * distinct ids < V, D finite floats each. */
static int sparse_rows_init(const jdoc *d, json_t *init, const tensor *t, spec_rows *out, const char *path, derr *e) {
  char what[160];
  snprintf(what, sizeof what, "%s.init", path);
  long k = spec_rows_count(d, init);
  if (k < 0) return derr_set(e, E_BAD_LENGTH, "%s.rows: expected an array of at most %d row ids", what, SPEC_MAX_ROWS);
  out->rows = mem_xmalloc(((size_t)k + 1) * sizeof(uint64_t));
  out->vals = mem_xmalloc(((size_t)k * t->dim + 1) * sizeof(float));
  int rc = spec_rows_read(d, init, t, false, out->rows, out->vals, &out->k, what, e);
  if (rc < 0) return rc;
  uint64_t *sorted = mem_xmalloc((out->k + 1) * sizeof(uint64_t));
  memcpy(sorted, out->rows, out->k * sizeof(uint64_t));
  qsort(sorted, out->k, sizeof(uint64_t), cmp_u64);
  for (size_t i = 1; i < out->k; i++)
    if (sorted[i] == sorted[i - 1]) {
      rc = derr_set(e, E_BAD_VALUE, "%s.rows: row %llu appears twice", what, (unsigned long long)sorted[i]);
      break;
    }
  free(sorted);
  return rc;
}

/* Floats the explicit rows of a create body will hold (k rows of whole blocks). */
static uint64_t explicit_rows_floats(const jdoc *d, json_t *arr, const instance_cfg *c) {
  uint64_t total = 0;
  for (size_t i = 0; i < c->ntensors; i++) {
    const tensor *t = &c->tensors[i];
    json_t *init = json_object_get(json_array_get(arr, i), "init");
    if (!t->sparse || !json_is_object(init) || !json_object_get(init, "rows")) continue;
    long k = spec_rows_count(d, init);
    if (k > 0) total += (uint64_t)k * optim_sparse_row_floats(c->alg, &c->hyper, t->dim);
  }
  return total;
}

/* The algorithm against the sparse tensors, as torch refuses: sparse_adam
 * takes only sparse tensors; sgd and adagrad take them with the options
 * torch allows for sparse gradients (optim_sparse_check); others not at all. */
static int check_sparse(const instance_cfg *c, derr *e) {
  bool any = false, dense = false;
  for (size_t i = 0; i < c->ntensors; i++) {
    if (c->tensors[i].sparse) any = true;
    else dense = true;
  }
  derr e2 = {0};
  if (dense && optim_sparse_check_dense(c->alg, &e2) < 0)
    return derr_set(e, E_BAD_VALUE, "tensors: %s (every tensor of a sparse_adam instance is sparse)", e2.msg);
  if (!any) return 0;
  if (optim_sparse_check(c->alg, &c->hyper, &e2) < 0 || /* always a 422: torch refuses the combination */
      optim_sparse_check_clip(c->clip_grad_norm, &e2) < 0)
    return derr_set(e, E_BAD_VALUE, "%s", e2.msg);
  return 0;
}

bool spec_cfg_has_sparse(const instance_cfg *c) {
  for (size_t i = 0; i < c->ntensors; i++)
    if (c->tensors[i].sparse) return true;
  return false;
}

/* Every tensor's initial values: dense ones into params, explicit rows of
 * sparse ones into *rows (allocated when the first is met; NULL if none). */
static int fill_inits(const jdoc *d, json_t *arr, const instance_cfg *c, float *params, spec_rows **rows, derr *e) {
  int rc;
  for (size_t i = 0; i < c->ntensors; i++) {
    char path[64];
    snprintf(path, sizeof path, "tensors[%zu]", i);
    const tensor *t = &c->tensors[i];
    json_t *tv = json_array_get(arr, i), *init = json_object_get(tv, "init");
    if (!t->sparse) {
      if ((rc = fill_init(d, tv, t, params + t->offset, path, e)) < 0) return rc;
      continue;
    }
    if (!json_is_object(init) || !json_object_get(init, "rows")) continue;
    if (!*rows) *rows = mem_xcalloc(c->ntensors, sizeof **rows);
    if ((rc = sparse_rows_init(d, init, t, &(*rows)[i], path, e)) < 0) return rc;
  }
  return 0;
}

/* tensors: [{name, shape, ...}] into c; with inits when params != NULL
 * (and sparse explicit rows into *rows). */
static int parse_tensors(const jdoc *d, json_t *arr, instance_cfg *c, float **params, spec_rows **rows,
                         bool state_doc, uint64_t max_floats, derr *e) {
  if (!json_is_array(arr) || json_array_size(arr) == 0)
    return derr_set(e, E_BAD_REQUEST, "tensors: expected a non-empty array of {\"name\", \"shape\"}");
  size_t nt = json_array_size(arr);
  if (nt > 4096) return derr_set(e, E_BAD_REQUEST, "tensors: at most 4096 tensors");
  c->tensors = mem_xcalloc(nt, sizeof(tensor));
  c->ntensors = nt;
  uint64_t total = 0;
  int rc;
  for (size_t i = 0; i < nt; i++) {
    json_t *tv = json_array_get(arr, i);
    char path[64];
    snprintf(path, sizeof path, "tensors[%zu]", i);
    if (!json_is_object(tv)) return derr_set(e, E_BAD_REQUEST, "%s: expected an object", path);
    static const char *const k_create[] = {"name", "shape", "init", "values", "offset", "origin", "sparse", NULL};
    static const char *const k_state[] = {"name", "shape", "offset", "count", "origin", "sparse", "init", NULL};
    if ((rc = only_keys(tv, state_doc ? k_state : k_create, path, E_BAD_REQUEST, e)) < 0) return rc;
    tensor *t = &c->tensors[i];
    const char *name = NULL;
    if ((rc = get_string(tv, "name", &name, "tensors[].", e)) < 0) return rc;
    if (!spec_name_ok(name))
      return derr_set(e, E_BAD_NAME, "%s.name: tensor names match [A-Za-z0-9][A-Za-z0-9._-]{0,63}", path);
    snprintf(t->name, sizeof t->name, "%s", name);
    for (size_t k = 0; k < i; k++)
      if (!strcmp(c->tensors[k].name, name))
        return derr_set(e, E_BAD_REQUEST, "%s.name: '%s' appears twice", path, name);
    json_t *shape = json_object_get(tv, "shape"), *sp = json_object_get(tv, "sparse");
    if (!shape) return derr_set(e, E_BAD_REQUEST, "%s.shape: required", path);
    if (sp && !json_is_boolean(sp)) return derr_set(e, E_BAD_REQUEST, "%s.sparse: expected true or false", path);
    if ((rc = json_is_true(sp) ? parse_sparse_shape(shape, t, path, e) : parse_shape(shape, t, path, e)) < 0) return rc;
    if (!t->sparse && state_doc && json_object_get(tv, "init"))
      return derr_set(e, E_BAD_REQUEST, "%s.init: only a sparse tensor keeps its init", path);
    if (t->sparse && json_object_get(tv, "values"))
      return derr_set(e, E_BAD_REQUEST, "%s.values: a sparse tensor takes \"init\": {\"rows\", \"values\"}", path);
    if (t->sparse && (rc = parse_sparse_init(json_object_get(tv, "init"), t, state_doc, path, e)) < 0) return rc;
    int64_t origin = 0;
    char p2[80];
    snprintf(p2, sizeof p2, "%s.", path);
    if ((rc = get_int(tv, state_doc ? "origin" : "offset", 0, INT64_MAX / 2, &origin, p2, e)) < 0) return rc;
    if (!state_doc && (rc = get_int(tv, "origin", 0, INT64_MAX / 2, &origin, p2, e)) < 0) return rc;
    if (t->sparse && (uint64_t)origin > SPEC_SPARSE_MAX_V)
      return derr_set(e, E_BAD_VALUE, "%s.offset: a sparse tensor's first row is at most 2^62", path);
    t->origin = (uint64_t)origin;
    t->offset = (size_t)total;
    total += t->count;
    if (total > (1ull << 40)) return derr_set(e, E_QUOTA, "tensors: too many elements");
  }
  c->n = (size_t)total;
  if ((rc = check_sparse(c, e)) < 0) return rc;
  uint64_t need = instance_cfg_footprint(c) + (params ? explicit_rows_floats(d, arr, c) : 0);
  if (need > max_floats) /* refused before anything that size is allocated */
    return derr_set(e, E_QUOTA, "this instance needs %llu floats (parameters and state); the limit is %llu (--max-params)",
                    (unsigned long long)need, (unsigned long long)max_floats);
  if (params) {
    *params = mem_alloc_floats(c->n);
    if (!*params) return derr_set(e, E_QUOTA, "not enough memory for %zu parameters", c->n);
    if ((rc = fill_inits(d, arr, c, *params, rows, e)) < 0) return rc;
  }
  return 0;
}

/* The configuration part shared by create bodies and state documents. */
static int parse_cfg(const jdoc *d, json_t *root, instance_cfg *c, float **params, spec_rows **rows,
                     bool state_doc, uint64_t max_floats, derr *e) {
  memset(c, 0, sizeof *c);
  c->max_staleness = -1;
  c->worker_lease_ms = SPEC_DEFAULT_LEASE_MS;
  int rc;
  const char *name = NULL, *alg = NULL, *mode = NULL, *agg = NULL;
  if ((rc = get_string(root, "name", &name, "", e)) < 0) return rc;
  if (name) {
    if (!spec_name_ok(name))
      return derr_set(e, E_BAD_NAME, "name: '%.80s' does not match [A-Za-z0-9][A-Za-z0-9._-]{0,63}", name);
    snprintf(c->name, sizeof c->name, "%s", name);
  }
  if ((rc = get_string(root, "algorithm", &alg, "", e)) < 0) return rc;
  if (!alg) return derr_set(e, E_BAD_REQUEST, "algorithm: required (sgd, momentum, nesterov, adagrad, rmsprop, adam, adamw, random_search, sparse_adam)");
  if ((rc = optim_alg_parse(alg, &c->alg, &c->hyper, e)) < 0) return rc;
  if ((rc = apply_hyper(c->alg, json_object_get(root, "hyper"), &c->hyper, e)) < 0) return rc;
  if ((rc = get_string(root, "mode", &mode, "", e)) < 0) return rc;
  if (mode && strcmp(mode, "async") && strcmp(mode, "sync"))
    return derr_set(e, E_BAD_VALUE, "mode: expected \"async\" or \"sync\"");
  c->mode = mode && !strcmp(mode, "sync") ? MODE_SYNC : MODE_ASYNC;
  if (c->mode == MODE_SYNC && c->alg == OPTIM_RANDOM_SEARCH)
    return derr_set(e, E_BAD_VALUE, "mode: random_search instances are async (ask/tell)");
  if ((rc = get_string(root, "aggregate", &agg, "", e)) < 0) return rc;
  if (agg && strcmp(agg, "mean") && strcmp(agg, "sum"))
    return derr_set(e, E_BAD_VALUE, "aggregate: expected \"mean\" or \"sum\"");
  c->aggregate = agg && !strcmp(agg, "sum") ? AGG_SUM : AGG_MEAN;
  if ((rc = parse_runtime(root, c, e)) < 0) return rc;
  return parse_tensors(d, json_object_get(root, "tensors"), c, params, rows, state_doc, max_floats, e);
}

int spec_parse_cfg_json(json_t *root, instance_cfg *cfg, derr *e) {
  jdoc none = {0};
  int rc = json_is_object(root) ? parse_cfg(&none, root, cfg, NULL, NULL, true, UINT64_MAX, e)
                                : derr_set(e, E_BAD_REQUEST, "expected an object");
  if (rc < 0) instance_cfg_free(cfg);
  return rc;
}

static const char *const create_keys[] = {
    "name", "algorithm", "hyper", "tensors", "mode", "max_staleness", "workers", "min_workers",
    "round_timeout_ms", "aggregate", "worker_lease_ms", "clip_grad_norm", "schedule", NULL};

int spec_parse_create(const jdoc *d, uint64_t max_floats, instance_cfg *cfg, float **params, derr *e) {
  spec_rows *rows = NULL;
  int rc = spec_parse_create_rows(d, max_floats, cfg, params, &rows, e);
  spec_rows_free(rows, cfg->ntensors);
  return rc;
}

int spec_parse_create_rows(const jdoc *d, uint64_t max_floats, instance_cfg *cfg, float **params, spec_rows **rows,
                           derr *e) {
  *params = NULL;
  *rows = NULL;
  memset(cfg, 0, sizeof *cfg); /* every failure below frees it */
  json_t *root = d->root;
  int rc;
  if (!json_is_object(root)) return derr_set(e, E_BAD_REQUEST, "the body must be a JSON object");
  if ((rc = only_keys(root, create_keys, "", E_BAD_REQUEST, e)) < 0) return rc;
  if (!json_object_get(root, "name")) rc = derr_set(e, E_BAD_REQUEST, "name: required");
  else rc = parse_cfg(d, root, cfg, params, rows, false, max_floats, e);
  if (rc < 0) {
    mem_free_floats(*params, cfg->n);
    *params = NULL;
    spec_rows_free(*rows, cfg->ntensors);
    *rows = NULL;
    instance_cfg_free(cfg);
  }
  return rc;
}

int spec_parse_patch(const jdoc *d, const instance_cfg *cur, instance_cfg *out, derr *e) {
  json_t *root = d->root;
  if (!json_is_object(root)) return derr_set(e, E_BAD_REQUEST, "the body must be a JSON object");
  static const char *const fixed[] = {"name", "algorithm", "tensors", "mode", "aggregate"};
  for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++)
    if (json_object_get(root, fixed[i]))
      return derr_set(e, E_BAD_VALUE, "%s: cannot be changed at run time (export the state, edit it, and PUT it back)",
                      fixed[i]);
  static const char *const keys[] = {"hyper", "max_staleness", "workers", "min_workers", "round_timeout_ms",
                                     "worker_lease_ms", "clip_grad_norm", "schedule", NULL};
  int rc = only_keys(root, keys, "", E_BAD_REQUEST, e);
  if (rc < 0) return rc;
  instance_cfg_copy(out, cur);
  if ((rc = apply_hyper(out->alg, json_object_get(root, "hyper"), &out->hyper, e)) < 0 ||
      (rc = parse_runtime(root, out, e)) < 0 || (rc = check_sparse(out, e)) < 0) {
    instance_cfg_free(out);
    return rc;
  }
  return 0;
}

json_t *spec_cfg_json(const instance_cfg *c) {
  json_t *o = json_object();
  json_object_set_new(o, "name", json_string(c->name));
  json_object_set_new(o, "algorithm", json_string(optim_alg_name(c->alg)));
  json_object_set_new(o, "hyper", spec_hyper_json(c->alg, &c->hyper));
  json_object_set_new(o, "mode", json_string(c->mode == MODE_SYNC ? "sync" : "async"));
  if (c->mode == MODE_SYNC) {
    json_object_set_new(o, "workers", json_integer(c->workers));
    json_object_set_new(o, "min_workers", json_integer(c->min_workers ? c->min_workers : c->workers));
    json_object_set_new(o, "round_timeout_ms", c->round_timeout_ms ? json_integer((json_int_t)c->round_timeout_ms) : json_null());
    json_object_set_new(o, "aggregate", json_string(c->aggregate == AGG_SUM ? "sum" : "mean"));
  } else {
    json_object_set_new(o, "max_staleness", c->max_staleness >= 0 ? json_integer(c->max_staleness) : json_null());
  }
  json_object_set_new(o, "worker_lease_ms", json_integer((json_int_t)c->worker_lease_ms));
  json_object_set_new(o, "clip_grad_norm", c->clip_grad_norm > 0 ? jbuf_real(c->clip_grad_norm) : json_null());
  json_object_set_new(o, "schedule", schedule_json(&c->sched));
  json_t *ts = json_array();
  for (size_t i = 0; i < c->ntensors; i++) {
    const tensor *t = &c->tensors[i];
    json_t *shape = json_array();
    for (int k = 0; k < t->ndim; k++) json_array_append_new(shape, json_integer((json_int_t)t->shape[k]));
    json_t *tj = json_pack("{s:s,s:o,s:I,s:I}", "name", t->name, "shape", shape, "offset",
                           (json_int_t)t->offset, "count", (json_int_t)t->count);
    if (t->origin) json_object_set_new(tj, "origin", json_integer((json_int_t)t->origin));
    if (t->sparse) {
      json_object_set_new(tj, "sparse", json_true());
      json_object_set_new(tj, "init", sparse_init_json(&t->init));
    }
    json_array_append_new(ts, tj);
  }
  json_object_set_new(o, "tensors", ts);
  json_object_set_new(o, "size", json_integer((json_int_t)c->n));
  return o;
}

/* ---- state documents --------------------------------------------------------------- */

json_t *spec_idem_json(const instance_state *s) {
  json_t *keys = json_array();
  for (size_t i = 0; i < s->nidem; i++) {
    const idem_record *k = &s->idem[i];
    json_t *o = json_pack("{s:s,s:I}", "key", k->key, "step", (json_int_t)k->step);
    if (k->code) {
      json_object_set_new(o, "error", json_string(derr_name(k->code)));
      json_object_set_new(o, "message", json_string(k->err.msg));
    }
    json_array_append_new(keys, o);
  }
  return keys;
}

int spec_parse_idem(json_t *keys, instance_state *s, derr *e) {
  if (!keys) return 0;
  if (!json_is_array(keys) || json_array_size(keys) > IDEM_LEN)
    return derr_set(e, E_BAD_REQUEST, "idempotency: expected a list of at most %d keys", IDEM_LEN);
  s->idem = mem_xcalloc(json_array_size(keys) + 1, sizeof *s->idem);
  for (size_t i = 0; i < json_array_size(keys); i++) {
    json_t *o = json_array_get(keys, i), *key = json_object_get(o, "key"), *step = json_object_get(o, "step");
    json_t *err = json_object_get(o, "error"), *msg = json_object_get(o, "message");
    idem_record *k = &s->idem[s->nidem];
    if (!json_is_object(o) || json_object_size(o) != 2u + (err != NULL) + (msg != NULL) || !json_is_string(key) ||
        json_string_length(key) == 0 || json_string_length(key) > IDEM_KEY_MAX || !json_is_integer(step) ||
        json_integer_value(step) < 0 || (err && !json_is_string(err)) || (msg && !json_is_string(msg)))
      return derr_set(e, E_BAD_REQUEST, "idempotency[%zu]: expected {\"key\", \"step\"} (and \"error\", \"message\")", i);
    snprintf(k->key, sizeof k->key, "%s", json_string_value(key));
    k->step = (uint64_t)json_integer_value(step);
    if (err) {
      k->code = derr_from_name(json_string_value(err));
      if (!k->code) return derr_set(e, E_BAD_REQUEST, "idempotency[%zu].error: unknown error code", i);
      k->err.code = k->code;
      snprintf(k->err.msg, sizeof k->err.msg, "%s", msg ? json_string_value(msg) : "");
    }
    s->nidem++;
  }
  return 0;
}

/* {"rows": ids, "values": v} of a sparse tensor in a state document, its
 * two arrays appended to arrays[*na..]. */
static json_t *rows_placeholder(const state_rows *sr, const float *v, size_t D, jbuf_array *arrays, size_t *na) {
  arrays[*na] = (jbuf_array){.n = sr ? (size_t)sr->m : 0, .ids = sr && sr->ids ? sr->ids : (const uint64_t *)""};
  json_t *o = json_pack("{s:o}", "rows", jbuf_placeholder((*na)++));
  arrays[*na] = (jbuf_array){.v = v ? v : (const float *)"", .n = sr && v ? (size_t)sr->m * D : 0, .dim = D};
  json_object_set_new(o, "values", jbuf_placeholder((*na)++));
  return o;
}

/* Whether the state has rows for buffer b in some sparse tensor. */
static bool rows_have_buf(const instance_state *s, int b) {
  if (!s->rows) return false;
  size_t j = 0;
  for (size_t i = 0; i < s->cfg.ntensors; i++)
    if (s->cfg.tensors[i].sparse && s->rows[j++].buf[b]) return true;
  return false;
}

void spec_state_write(jbuf *b, const instance_state *s) {
  const instance_cfg *c = &s->cfg;
  json_t *o = spec_cfg_json(c);
  json_object_set_new(o, "format", json_string("descent-state/1"));
  json_object_set_new(o, "step", json_integer((json_int_t)s->step));
  if (s->created > 0) json_object_set_new(o, "created", jbuf_real(s->created));
  size_t nt = c->ntensors, na = 0;
  jbuf_array *arrays = mem_xmalloc((2 * nt * (OPTIM_NBUF + 1) + 1) * sizeof *arrays);
  json_t *params = json_object();
  for (size_t i = 0, j = 0; i < nt; i++) {
    const tensor *t = &c->tensors[i];
    json_t *v;
    if (t->sparse) {
      const state_rows *sr = s->rows ? &s->rows[j++] : NULL;
      v = rows_placeholder(sr, sr ? sr->params : NULL, t->dim, arrays, &na);
    } else {
      arrays[na] = (jbuf_array){s->params + t->offset, t->count, NULL, 0};
      v = jbuf_placeholder(na++);
    }
    json_object_set_new(params, t->name, v);
  }
  json_object_set_new(o, "params", params);
  json_t *bufs = json_object();
  for (int b2 = 0; b2 < OPTIM_NBUF; b2++) {
    bool dense = (s->have & (1u << b2)) && !(s->fresh & (1u << b2)) && c->n > 0;
    if (!dense && !rows_have_buf(s, b2)) continue;
    json_t *per = json_object();
    for (size_t i = 0, j = 0; i < nt; i++) {
      const tensor *t = &c->tensors[i];
      if (t->sparse) {
        const state_rows *sr = s->rows ? &s->rows[j++] : NULL;
        if (sr && sr->buf[b2]) json_object_set_new(per, t->name, rows_placeholder(sr, sr->buf[b2], t->dim, arrays, &na));
      } else if (dense) {
        arrays[na] = (jbuf_array){s->buf[b2] + t->offset, t->count, NULL, 0};
        json_object_set_new(per, t->name, jbuf_placeholder(na++));
      }
    }
    json_object_set_new(bufs, optim_buf_name(b2), per);
  }
  json_object_set_new(o, "buffers", bufs);
  if (s->nidem) json_object_set_new(o, "idempotency", spec_idem_json(s));
  if (c->alg == OPTIM_RANDOM_SEARCH)
    json_object_set_new(o, "random_search",
                        json_pack("{s:o,s:I,s:I,s:I}", "best_loss",
                                  jbuf_real(s->best_loss),
                                  "next_candidate", (json_int_t)s->next_id, "tells", (json_int_t)s->tells,
                                  "best_candidate", (json_int_t)s->best_id));
  jbuf_json_splice(b, o, arrays, na);
  free(arrays);
  json_decref(o);
}

/* A sparse tensor's rows in a state document's params (b < 0) or buffer b:
 * params allocate sr (ids ascending); a buffer must list the same ids. */
static int read_state_rows(const jdoc *d, json_t *x, const tensor *t, state_rows *sr, int b, const char *path,
                           derr *e) {
  long k = spec_rows_count(d, x);
  if (k < 0) return derr_set(e, E_BAD_LENGTH, "%s.rows: expected an array of at most %d row ids", path, SPEC_MAX_ROWS);
  if (b >= 0 && (uint64_t)k != sr->m)
    return derr_set(e, E_BAD_LENGTH, "%s.rows: expected the %llu rows of params", path, (unsigned long long)sr->m);
  uint64_t *ids = mem_xmalloc(((size_t)k + 1) * sizeof(uint64_t));
  float *v = mem_alloc_floats((size_t)k * t->dim);
  size_t got = 0;
  int rc = v ? spec_rows_read(d, x, t, true, ids, v, &got, path, e) : derr_set(e, E_QUOTA, "not enough memory");
  if (rc == 0 && b >= 0 && memcmp(ids, sr->ids, got * sizeof(uint64_t)))
    rc = derr_set(e, E_BAD_VALUE, "%s.rows: must be the same rows as params", path);
  if (rc < 0) {
    free(ids);
    mem_free_floats(v, (size_t)k * t->dim);
    return rc;
  }
  if (b < 0) {
    sr->m = got;
    sr->ids = ids;
    sr->params = v;
  } else {
    free(ids);
    sr->buf[b] = v;
  }
  return 0;
}

/* params (b < 0) or buffers.<b> by tensor name: dense tensors into out
 * (in a buffer, all of them or none: none leaves the dense array fresh, *dense
 * false), sparse ones into s->rows. */
static int read_per_tensor(const jdoc *d, json_t *obj, instance_state *s, int b, float *out, bool *dense,
                           const char *what, derr *e) {
  const instance_cfg *c = &s->cfg;
  if (!json_is_object(obj)) return derr_set(e, E_BAD_REQUEST, "%s: expected an object by tensor name", what);
  const char *k;
  json_t *v;
  size_t ndense = 0, given = 0;
  json_object_foreach(obj, k, v) {
    if (instance_cfg_tensor(c, k) < 0)
      return derr_set(e, E_UNKNOWN_TENSOR, "%s.%.64s: no tensor of that name", what, k);
  }
  for (size_t i = 0; i < c->ntensors; i++)
    if (!c->tensors[i].sparse) {
      ndense++;
      given += json_object_get(obj, c->tensors[i].name) != NULL;
    }
  /* a buffer whose dense part is still fresh may list only sparse tensors */
  bool skip_dense = b >= 0 && given == 0 && ndense < c->ntensors;
  if (dense) *dense = !skip_dense && ndense > 0;
  for (size_t i = 0, j = 0; i < c->ntensors; i++) {
    const tensor *t = &c->tensors[i];
    char path[160];
    snprintf(path, sizeof path, "%s.%s", what, t->name);
    json_t *x = json_object_get(obj, t->name);
    if (t->sparse) {
      state_rows *sr = &s->rows[j++];
      int rc;
      if (!x && (b < 0 || sr->m > 0)) return derr_set(e, E_BAD_LENGTH, "%s: missing (the rows held need it)", path);
      if (x && (rc = read_state_rows(d, x, t, sr, b, path, e)) < 0) return rc;
      continue;
    }
    if (skip_dense) continue;
    if (!x) return derr_set(e, E_BAD_LENGTH, "%s: missing", path);
    size_t shape[TENSOR_MAXDIM];
    for (int k2 = 0; k2 < t->ndim; k2++) shape[k2] = (size_t)t->shape[k2];
    int rc = jdoc_floats(d, x, out + t->offset, t->count, shape, t->ndim, path, e);
    if (rc < 0) return rc;
    size_t where;
    if (!optim_all_finite(out + t->offset, t->count, &where))
      return derr_set(e, E_NOT_FINITE, "%s[%zu]: NaN or infinite", path, where);
  }
  return 0;
}

/* Every buffer the held rows of a sparse tensor keep must be in the document. */
static int check_rows_buffers(const instance_state *s, unsigned need, derr *e) {
  for (size_t i = 0, j = 0; s->rows && i < s->cfg.ntensors; i++) {
    const tensor *t = &s->cfg.tensors[i];
    if (!t->sparse) continue;
    const state_rows *sr = &s->rows[j++];
    for (int b = 0; b < OPTIM_NBUF && sr->m; b++)
      if ((need & (1u << b)) && !sr->buf[b])
        return derr_set(e, E_BAD_REQUEST, "buffers.%s.%s: required (the rows held keep this state)", optim_buf_name(b),
                        t->name);
  }
  return 0;
}

/* The state document's "buffers": each must be state the algorithm keeps
 * with these hyperparameters; the ones torch would have by now must be
 * there. */
static int parse_state_buffers(const jdoc *d, json_t *root, instance_state *s, derr *e) {
  size_t n = s->cfg.n;
  unsigned need = optim_buffers(s->cfg.alg, &s->cfg.hyper);
  s->fresh = need;
  json_t *bufs = json_object_get(root, "buffers");
  if (bufs && !json_is_object(bufs)) return derr_set(e, E_BAD_REQUEST, "buffers: expected an object by state name");
  const char *k;
  json_t *v;
  json_object_foreach(bufs, k, v) {
    int b = optim_buf_from_name(k);
    bool known = b >= 0 && (need & (1u << b));
    /* an sgd/rmsprop momentum_buffer kept while momentum is 0 is still torch state */
    if (b == OPTIM_BUF_MOMENTUM && (s->cfg.alg == OPTIM_SGD || s->cfg.alg == OPTIM_RMSPROP)) known = true;
    if (!known)
      return derr_set(e, E_BAD_VALUE, "buffers.%.64s: %s with these hyperparameters has no such state", k,
                      optim_alg_name(s->cfg.alg));
    if (!(s->buf[b] = mem_alloc_floats(n))) return derr_set(e, E_QUOTA, "not enough memory");
    char what[80];
    snprintf(what, sizeof what, "buffers.%s", k);
    bool dense;
    int rc = read_per_tensor(d, v, s, b, s->buf[b], &dense, what, e);
    if (rc < 0) return rc;
    if (dense) {
      s->have |= 1u << b;
      s->fresh &= ~(1u << b);
    } else {
      mem_free_floats(s->buf[b], n);
      s->buf[b] = NULL;
    }
  }
  int rc = check_rows_buffers(s, need, e);
  if (rc < 0) return rc;
  /* state that torch would have created by now must be present, except the
   * buffers a hyperparameter switches on (momentum, centered, amsgrad): a
   * PATCH may do that at any step, and the export leaves them out until
   * their first step (sgd's first step even clones the gradient into it) */
  optim_hyper base = s->cfg.hyper;
  base.momentum = 0;
  base.centered = false;
  base.amsgrad = false;
  unsigned always = optim_buffers(s->cfg.alg, &base);
  if (s->step > 0 && n > 0 && !spec_cfg_has_sparse(&s->cfg))
    for (int b = 0; b < OPTIM_NBUF; b++)
      if ((need & always & (1u << b)) && !(s->have & (1u << b)))
        return derr_set(e, E_BAD_REQUEST, "buffers.%s: required at step %llu", optim_buf_name(b),
                        (unsigned long long)s->step);
  return 0;
}

/* The state document's "random_search" object. */
static int parse_state_search(json_t *root, instance_state *s, derr *e) {
  s->best_loss = INFINITY;
  s->next_id = 1;
  json_t *rs = json_object_get(root, "random_search");
  if (!rs) return 0;
  if (s->cfg.alg != OPTIM_RANDOM_SEARCH || !json_is_object(rs))
    return derr_set(e, E_BAD_VALUE, "random_search: only for random_search instances, as an object");
  double bl = INFINITY;
  int64_t nid = 1, tells = 0, bid = 0;
  int rc;
  if ((rc = get_double(rs, "best_loss", &bl, "random_search.", e)) < 0 ||
      (rc = get_int(rs, "next_candidate", 1, INT64_MAX / 2, &nid, "random_search.", e)) < 0 ||
      (rc = get_int(rs, "tells", 0, INT64_MAX / 2, &tells, "random_search.", e)) < 0 ||
      (rc = get_int(rs, "best_candidate", 0, INT64_MAX / 2, &bid, "random_search.", e)) < 0)
    return rc;
  s->best_loss = bl;
  s->next_id = (uint64_t)nid;
  s->tells = (uint64_t)tells;
  s->best_id = (uint64_t)bid;
  return 0;
}

/* The rows a state document holds count against max_floats (whole blocks),
 * before anything that size is allocated; s->rows gets one entry per
 * sparse tensor. */
static int state_rows_quota(const jdoc *d, json_t *params, instance_state *s, uint64_t max_floats, derr *e) {
  const instance_cfg *c = &s->cfg;
  size_t nsparse = 0;
  uint64_t need = instance_cfg_footprint(c);
  for (size_t i = 0; i < c->ntensors; i++) {
    const tensor *t = &c->tensors[i];
    if (!t->sparse) continue;
    nsparse++;
    long k = json_is_object(params) ? spec_rows_count(d, json_object_get(params, t->name)) : 0;
    if (k > 0) need += (uint64_t)k * optim_sparse_row_floats(c->alg, &c->hyper, t->dim);
  }
  if (need > max_floats)
    return derr_set(e, E_QUOTA, "this state holds %llu floats (parameters and state); the limit is %llu (--max-params)",
                    (unsigned long long)need, (unsigned long long)max_floats);
  if (nsparse) s->rows = mem_xcalloc(nsparse, sizeof *s->rows);
  return 0;
}

/* The state document's step, created time and params. */
static int parse_state_head(const jdoc *d, json_t *root, instance_state *s, uint64_t max_floats, derr *e) {
  int64_t step = -1;
  int rc;
  if ((rc = get_int(root, "step", 0, INT64_MAX / 2, &step, "", e)) < 0) return rc;
  if (step < 0) return derr_set(e, E_BAD_REQUEST, "step: required");
  s->step = (uint64_t)step;
  double created = 0;
  if ((rc = get_double(root, "created", &created, "", e)) < 0) return rc;
  if (!(isfinite(created) && created >= 0)) return derr_set(e, E_BAD_VALUE, "created: a non-negative unix time");
  s->created = created;
  if (!(s->params = mem_alloc_floats(s->cfg.n))) return derr_set(e, E_QUOTA, "not enough memory");
  json_t *params = json_object_get(root, "params");
  if (!params) return derr_set(e, E_BAD_REQUEST, "params: required");
  if ((rc = state_rows_quota(d, params, s, max_floats, e)) < 0) return rc;
  return read_per_tensor(d, params, s, -1, s->params, NULL, "params", e);
}

int spec_parse_state(const jdoc *d, const char *name, uint64_t max_floats, instance_state *s, derr *e) {
  memset(s, 0, sizeof *s);
  json_t *root = d->root;
  int rc;
  if (!json_is_object(root)) return derr_set(e, E_BAD_REQUEST, "the body must be a JSON object");
  static const char *const keys[] = {
      "name", "algorithm", "hyper", "tensors", "mode", "max_staleness", "workers", "min_workers",
      "round_timeout_ms", "aggregate", "worker_lease_ms", "clip_grad_norm", "schedule", "format",
      "step", "params", "buffers", "random_search", "size", "created", "idempotency", NULL};
  if ((rc = only_keys(root, keys, "", E_BAD_REQUEST, e)) < 0) return rc;
  json_t *fmt = json_object_get(root, "format");
  if (fmt && (!json_is_string(fmt) || strcmp(json_string_value(fmt), "descent-state/1")))
    return derr_set(e, E_BAD_VALUE, "format: expected \"descent-state/1\"");
  if ((rc = parse_cfg(d, root, &s->cfg, NULL, NULL, true, max_floats, e)) < 0) goto fail;
  if (s->cfg.name[0] && strcmp(s->cfg.name, name)) {
    rc = derr_set(e, E_BAD_REQUEST, "name: the document is for '%s', not '%s'", s->cfg.name, name);
    goto fail;
  }
  snprintf(s->cfg.name, sizeof s->cfg.name, "%s", name);
  if ((rc = parse_state_head(d, root, s, max_floats, e)) < 0 || (rc = parse_state_buffers(d, root, s, e)) < 0 ||
      (rc = parse_state_search(root, s, e)) < 0 || (rc = spec_parse_idem(json_object_get(root, "idempotency"), s, e)) < 0)
    goto fail;
  return 0;
fail:
  instance_state_free(s);
  return rc < 0 ? rc : -E_BAD_REQUEST;
}
