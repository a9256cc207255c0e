/* auth: the token list and the constant-time comparison. */
#include "auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mem.h"

#define TOKEN_MAX 256

typedef struct token {
  char value[TOKEN_MAX];
  size_t len;
  int level;
} token;

struct auth {
  token *t;
  size_t n;
};

static char *trim(char *s) {
  while (*s == ' ' || *s == '\t') s++;
  size_t n = strlen(s);
  while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n')) s[--n] = 0;
  return s;
}

auth *auth_load(const char *path, derr *e) {
  FILE *f = fopen(path, "r");
  if (!f) {
    derr_set(e, E_IO, "cannot read the token file %s", path);
    return NULL;
  }
  auth *a = mem_xcalloc(1, sizeof *a);
  char line[1024];
  size_t cap = 0, lineno = 0;
  while (fgets(line, sizeof line, f)) {
    lineno++;
    char *hash = strchr(line, '#');
    if (hash) *hash = 0;
    char *s = trim(line);
    if (!*s) continue;
    int level = AUTH_WRITE;
    if (!strncmp(s, "ro:", 3)) {
      level = AUTH_READ;
      s = trim(s + 3);
    } else if (!strncmp(s, "rw:", 3)) {
      s = trim(s + 3);
    }
    size_t len = strlen(s);
    if (!len || len >= TOKEN_MAX || strpbrk(s, " \t")) {
      derr_set(e, E_BAD_REQUEST, "token file %s line %zu: a token is 1-255 characters without spaces",
               path, lineno);
      fclose(f);
      auth_free(a);
      return NULL;
    }
    if (a->n == cap) {
      cap = cap ? cap * 2 : 8;
      a->t = mem_xrealloc(a->t, cap * sizeof *a->t);
    }
    token *t = &a->t[a->n++];
    memset(t, 0, sizeof *t);
    memcpy(t->value, s, len);
    t->len = len;
    t->level = level;
  }
  fclose(f);
  if (!a->n) {
    derr_set(e, E_BAD_REQUEST, "token file %s holds no token", path);
    auth_free(a);
    return NULL;
  }
  return a;
}

void auth_free(auth *a) {
  if (!a) return;
  if (a->t) memset(a->t, 0, a->n * sizeof *a->t);
  free(a->t);
  free(a);
}

size_t auth_count(const auth *a) { return a ? a->n : 0; }

/* Compares the whole fixed-size buffers, so the time depends on neither the
 * position of the first difference nor the candidate's length. */
static int equal_ct(const token *t, const char *cand, size_t clen) {
  unsigned char diff = (unsigned char)(t->len != clen);
  for (size_t i = 0; i < TOKEN_MAX; i++) {
    unsigned char c = i < clen ? (unsigned char)cand[i] : 0;
    diff |= (unsigned char)(t->value[i] ^ c);
  }
  return diff == 0;
}

int auth_check(const auth *a, const char *h) {
  if (!a) return AUTH_WRITE;
  if (!h || strncasecmp(h, "Bearer ", 7) != 0) return AUTH_NONE;
  h += 7;
  while (*h == ' ') h++;
  size_t len = strlen(h);
  while (len && (h[len - 1] == ' ' || h[len - 1] == '\t')) len--;
  if (len >= TOKEN_MAX) return AUTH_NONE;
  int level = AUTH_NONE;
  for (size_t i = 0; i < a->n; i++) {
    int eq = equal_ct(&a->t[i], h, len);
    int l = a->t[i].level;
    level = eq && l > level ? l : level;
  }
  return level;
}
