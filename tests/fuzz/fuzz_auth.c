/* fuzz_auth: the Authorization header (auth_check) and the token file
 * (auth_load).
 *
 * Input: one byte picking the mode, then the bytes.
 *   even: the bytes are an Authorization header value, checked against a
 *         fixed token file;
 *   odd:  the bytes are a token file (loaded through a memfd).
 * Invariants:
 *   - auth_check grants exactly what a reference parser of the header
 *     ("Bearer" case-insensitively, then the token, trailing blanks
 *     ignored) and of the file (comments, ro:/rw:, trimming, the best level
 *     of equal tokens) says, and AUTH_WRITE when there is no token file;
 *   - auth_load accepts a file iff every non-blank line holds one token of
 *     1-255 bytes without blanks and there is at least one; auth_count is
 *     their number; a refused file leaves nothing allocated.
 */
#include <stdbool.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

#include "auth.h"
#include "fuzz.h"

#define MAXTOK 4096

typedef struct ref_tokens {
  char *tok[MAXTOK];
  int level[MAXTOK];
  size_t n;
  bool bad;
  bool overflow; /* more tokens than the reference holds: no verdict */
} ref_tokens;

static char *trim(char *s) {
  while (*s == ' ' || *s == '\t') s++;
  size_t n = strlen(s);
  while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n')) s[--n] = 0;
  return s;
}

/* The reference reading of a token file: text holds no NUL, lines < 1000. */
static void ref_parse(const char *text, ref_tokens *rt) {
  memset(rt, 0, sizeof *rt);
  char *copy = strdup(text), *save = NULL;
  for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
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
    if (rt->n == MAXTOK) {
      rt->overflow = true;
      break;
    }
    if (!len || len >= 256 || strpbrk(s, " \t")) {
      rt->bad = true;
      continue;
    }
    rt->tok[rt->n] = strdup(s);
    rt->level[rt->n++] = level;
  }
  free(copy);
}

static void ref_free(ref_tokens *rt) {
  for (size_t i = 0; i < rt->n; i++) free(rt->tok[i]);
}

static int ref_check(const ref_tokens *rt, const char *h) {
  if (strncasecmp(h, "Bearer ", 7) != 0) return AUTH_NONE;
  h += 7;
  while (*h == ' ') h++;
  size_t len = strlen(h);
  while (len && (h[len - 1] == ' ' || h[len - 1] == '\t')) len--;
  int level = AUTH_NONE;
  for (size_t i = 0; i < rt->n; i++)
    if (strlen(rt->tok[i]) == len && !memcmp(rt->tok[i], h, len) && rt->level[i] > level) level = rt->level[i];
  return level;
}

/* Loads text through a memfd, so no file is left behind. */
static auth *load_text(const char *text, size_t n, derr *e) {
  int fd = memfd_create("tokens", MFD_CLOEXEC);
  FUZZ_CHECK(fd >= 0);
  FUZZ_CHECK(write(fd, text, n) == (ssize_t)n);
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  auth *a = auth_load(path, e);
  close(fd);
  return a;
}

static const char fixed_file[] =
    "# a token file as operators write it\n"
    "rw-token-0123456789\n"
    "ro:read-only-token\n"
    "rw:  spaced-write\t\n"
    "ro:dup\n"
    "dup   # the best level wins\n"
    "\n"
    "  x  \r\n";

static void check_header(const auth *a, const ref_tokens *rt, const char *h) {
  int got = auth_check(a, h);
  int want = ref_check(rt, h);
  FUZZ_CHECK(got == want, "header '%s': level %d, want %d", h, got, want);
  FUZZ_CHECK(auth_check(NULL, h) == AUTH_WRITE);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static auth *fixed;
  static ref_tokens fixed_ref;
  if (!fixed) {
    derr e = {0};
    fixed = load_text(fixed_file, sizeof fixed_file - 1, &e);
    FUZZ_CHECK(fixed != NULL, "the fixed token file: %s", e.msg);
    ref_parse(fixed_file, &fixed_ref);
    FUZZ_CHECK(auth_count(fixed) == fixed_ref.n && !fixed_ref.bad);
  }
  if (size == 0) return 0;
  char *text = fuzz_strndup(data + 1, size - 1);
  if (!(data[0] & 1)) {
    check_header(fixed, &fixed_ref, text);
    FUZZ_CHECK(auth_check(fixed, NULL) == AUTH_NONE);
    free(text);
    return 0;
  }
  derr e = {0};
  auth *a = load_text(text, size - 1, &e);
  /* the reference reads lines as fgets does only without NULs and long lines */
  bool simple = strlen(text) == size - 1;
  for (const char *p = text; simple && *p;) {
    size_t l = strcspn(p, "\n");
    simple = l < 1000;
    p += l + (p[l] == '\n');
  }
  ref_tokens rt = {0};
  if (simple) ref_parse(text, &rt);
  if (simple && !rt.overflow) {
    bool want_ok = !rt.bad && rt.n > 0;
    FUZZ_CHECK((a != NULL) == want_ok, "loaded: %d, want %d (%s)", a != NULL, want_ok, e.msg);
    if (a) {
      FUZZ_CHECK(auth_count(a) == rt.n);
      char h[600];
      for (size_t i = 0; i < rt.n; i++) {
        snprintf(h, sizeof h, "Bearer %s", rt.tok[i]);
        check_header(a, &rt, h);
        snprintf(h, sizeof h, "bEARER   %s \t", rt.tok[i]);
        check_header(a, &rt, h);
        snprintf(h, sizeof h, "Bearer %sx", rt.tok[i]);
        check_header(a, &rt, h);
      }
    } else {
      FUZZ_CHECK(e.code != 0 && e.msg[0], "refused without a message");
    }
  }
  ref_free(&rt);
  auth_free(a);
  free(text);
  return 0;
}
