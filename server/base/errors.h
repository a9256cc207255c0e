/* errors: the one table of error codes descent answers with.
 *
 * A failing function returns 0 or a negative code from this table
 * (-E_BAD_JSON, ...), and may fill a derr with a message that says where the
 * input went wrong; an outcome kept for later (derr.code, waiter.code) holds
 * the positive code.  Handlers never choose an HTTP status by hand: they
 * reply from this table (http_reply_error).  No state, any thread.
 */
#ifndef DESCENT_ERRORS_H
#define DESCENT_ERRORS_H

#include <stddef.h>

/* X(name, http status, snake_case code, default message) */
#define DERR_TABLE(X)                                                                  \
  X(E_BAD_JSON, 400, "bad_json", "the body is not valid JSON")                         \
  X(E_BAD_REQUEST, 400, "bad_request", "the request is not well-formed")               \
  X(E_BAD_LENGTH, 400, "bad_length", "wrong number of values or wrong shape")          \
  X(E_BAD_NAME, 400, "bad_name", "names match [A-Za-z0-9][A-Za-z0-9._-]{0,63}")        \
  X(E_UNKNOWN_TENSOR, 400, "unknown_tensor", "no tensor of that name")                 \
  X(E_BAD_QUERY, 400, "bad_query", "a query parameter is not valid")                   \
  X(E_MISSING_WORKER, 400, "missing_worker", "sync mode needs a worker name")          \
  X(E_UNAUTHORIZED, 401, "unauthorized", "a valid bearer token is required")           \
  X(E_FORBIDDEN, 403, "forbidden", "this token may only read")                         \
  X(E_NOT_FOUND, 404, "not_found", "no such resource")                                 \
  X(E_NO_INSTANCE, 404, "unknown_instance", "no optimizer instance of that name")      \
  X(E_METHOD, 405, "method_not_allowed", "method not allowed on this resource")        \
  X(E_EXISTS, 409, "already_exists", "an instance of that name exists")                \
  X(E_STALE, 409, "stale_gradient", "the gradient was computed on parameters too old") \
  X(E_STEP_AHEAD, 409, "step_ahead", "the step is ahead of the instance")              \
  X(E_ALREADY_PUSHED, 409, "already_pushed", "this worker already pushed this round")  \
  X(E_WRONG_ALGORITHM, 409, "wrong_algorithm", "not supported by this algorithm")      \
  X(E_CONFLICT, 409, "conflict", "the request conflicts with the instance's state")    \
  X(E_NO_DATA_DIR, 409, "no_data_dir", "the daemon runs without --data-dir: nothing is persisted") \
  X(E_TOO_LARGE, 413, "body_too_large", "the body is larger than the limit")           \
  X(E_MEDIA_TYPE, 415, "unsupported_media_type", "unsupported content type")           \
  X(E_NOT_FINITE, 422, "not_finite", "NaN or infinite value")                          \
  X(E_BAD_VALUE, 422, "invalid_value", "a value is out of its allowed range")          \
  X(E_UNKNOWN_ALGORITHM, 422, "unknown_algorithm", "unknown algorithm")                \
  X(E_UNKNOWN_HYPER, 422, "unknown_hyperparameter", "unknown hyperparameter")          \
  X(E_INTERNAL, 500, "internal_error", "internal error")                               \
  X(E_IO, 500, "io_error", "could not write to the data dir")                          \
  X(E_SHUTTING_DOWN, 503, "shutting_down", "the daemon is shutting down")              \
  X(E_BUSY, 503, "busy", "no room for this request's body now; retry later")           \
  X(E_NO_LEADER, 503, "no_leader", "this replica group has no leader now; retry later") \
  X(E_LEADERSHIP_LOST, 503, "leadership_lost", "the leader lost its leadership before the write committed") \
  X(E_READ_ONLY, 503, "read_only", "the data dir is read-only: changes are refused, reads served") \
  X(E_TIMEOUT, 504, "round_timeout", "the sync round did not close in time")           \
  X(E_QUOTA, 507, "quota_exceeded", "a configured limit would be exceeded")           \
  X(E_DISK_FULL, 507, "disk_full", "the data dir is full: changes are refused, reads served")

enum derr_code {
  E_OK = 0,
#define DERR_ENUM(name, status, code, msg) name,
  DERR_TABLE(DERR_ENUM)
#undef DERR_ENUM
  E__COUNT
};

/* An error with a message for the person who sent the request. */
typedef struct derr {
  int code; /* positive enum derr_code, 0 when no error */
  char msg[256];
} derr;

/* Sets e (may be NULL) to code with a printf-style message (NULL fmt: the
 * table's default message) and returns -code, so callers write
 * `return derr_set(e, E_BAD_LENGTH, "grads.W: expected %zu values", n);`.
 * code may be given with either sign; one outside the table becomes
 * E_INTERNAL. */
int derr_set(derr *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes e->msg with "prefix: " (for nested decoders: "grads.W[3]"). */
void derr_prefix(derr *e, const char *prefix);

/* Rows of the table for a code of either sign; an unknown code reads
 * E_INTERNAL's row (500, "internal_error"). */
int derr_status(int code);            /* HTTP status */
const char *derr_name(int code);      /* snake_case code */
const char *derr_default(int code);   /* the table's message */
int derr_from_name(const char *name); /* inverse of derr_name; 0 if unknown */

#endif
