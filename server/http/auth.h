/* auth: bearer tokens from --token-file.
 *
 * One token per line; `ro:TOKEN` grants read-only access (GET), any other
 * line read-write; `#` starts a comment; blank lines are ignored.  Tokens
 * are compared in constant time (every token is checked, whatever matches)
 * and never logged.  Loaded once at start; read-only afterwards: any thread.
 */
#ifndef DESCENT_AUTH_H
#define DESCENT_AUTH_H

#include "errors.h"

enum auth_level { AUTH_NONE = 0, AUTH_READ = 1, AUTH_WRITE = 2 };

typedef struct auth auth;

/* Loads path; returns NULL with e set if it cannot be read or holds no token. */
auth *auth_load(const char *path, derr *e);
void auth_free(auth *a);

/* The level an Authorization header value grants (AUTH_NONE if missing/wrong).
 * a == NULL (no token file) grants AUTH_WRITE to everyone. */
int auth_check(const auth *a, const char *authorization);

size_t auth_count(const auth *a);

#endif
