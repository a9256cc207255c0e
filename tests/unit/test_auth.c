/* test_auth: the token file (rw and ro lines, comments, blank lines,
 * refusals with their line) and what an Authorization value grants. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "suites.h"

/* Writes text to a fresh temporary file; returns its path (static buffer). */
static const char *token_file(const char *text) {
  static char path[64];
  snprintf(path, sizeof path, "/tmp/descent-auth-XXXXXX");
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  size_t n = strlen(text);
  ck_assert_int_eq(write(fd, text, n), (ssize_t)n);
  close(fd);
  return path;
}

static auth *load(const char *text, derr *e) {
  const char *p = token_file(text);
  auth *a = auth_load(p, e);
  unlink(p);
  return a;
}

START_TEST(levels_comments_and_blank_lines) {
  derr e = {0};
  auth *a = load("# the team's tokens\n"
                 "\n"
                 "writer-1\n"
                 "ro:reader-1   # dashboards\n"
                 "   rw:writer-2\t\n"
                 "ro: reader-2\r\n"
                 "shared\n"
                 "ro:shared\n",
                 &e);
  ck_assert_msg(a != NULL, "%s", e.msg);
  ck_assert_uint_eq(auth_count(a), 6);
  static const struct {
    const char *header;
    int level;
  } cases[] = {
      {"Bearer writer-1", AUTH_WRITE},
      {"Bearer reader-1", AUTH_READ},
      {"Bearer writer-2", AUTH_WRITE},
      {"Bearer reader-2", AUTH_READ},
      {"bearer writer-1", AUTH_WRITE},    /* the scheme is case-insensitive */
      {"Bearer   writer-1  ", AUTH_WRITE}, /* spaces around the token */
      {"Bearer shared", AUTH_WRITE},      /* listed twice: the higher level */
      {"Bearer writer-", AUTH_NONE},      /* a prefix */
      {"Bearer writer-11", AUTH_NONE},    /* one character more */
      {"Bearer Writer-1", AUTH_NONE},     /* tokens are case-sensitive */
      {"Bearer ro:reader-1", AUTH_NONE},  /* the prefix is not part of the token */
      {"Bearer dashboards", AUTH_NONE},   /* a comment is not a token */
      {"Basic writer-1", AUTH_NONE},
      {"writer-1", AUTH_NONE},
      {"Bearer ", AUTH_NONE},
      {"", AUTH_NONE},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
    ck_assert_msg(auth_check(a, cases[i].header) == cases[i].level, "'%s': %d, expected %d", cases[i].header,
                  auth_check(a, cases[i].header), cases[i].level);
  ck_assert_int_eq(auth_check(a, NULL), AUTH_NONE);
  char longer[400];
  memset(longer, 'x', sizeof longer - 1);
  longer[sizeof longer - 1] = 0;
  memcpy(longer, "Bearer ", 7);
  ck_assert_int_eq(auth_check(a, longer), AUTH_NONE);
  auth_free(a);
}
END_TEST

START_TEST(no_token_file_grants_write) {
  ck_assert_int_eq(auth_check(NULL, NULL), AUTH_WRITE);
  ck_assert_int_eq(auth_check(NULL, "Bearer anything"), AUTH_WRITE);
  ck_assert_uint_eq(auth_count(NULL), 0);
  auth_free(NULL);
}
END_TEST

START_TEST(bad_files_are_refused_with_their_line) {
  derr e = {0};
  ck_assert_ptr_null(load("good\n\nbad token\n", &e));
  ck_assert_int_eq(e.code, E_BAD_REQUEST);
  ck_assert_msg(strstr(e.msg, "line 3") != NULL, "%s", e.msg);
  memset(&e, 0, sizeof e);
  ck_assert_ptr_null(load("# only a comment\n\n   \n", &e));
  ck_assert_int_eq(e.code, E_BAD_REQUEST);
  ck_assert_msg(strstr(e.msg, "holds no token") != NULL, "%s", e.msg);
  memset(&e, 0, sizeof e);
  ck_assert_ptr_null(load("ro:\n", &e)); /* a prefix with no token */
  ck_assert_msg(strstr(e.msg, "line 1") != NULL, "%s", e.msg);
  char big[300 + 2];
  memset(big, 'y', 300);
  big[300] = '\n';
  big[301] = 0;
  memset(&e, 0, sizeof e);
  ck_assert_ptr_null(load(big, &e)); /* 300 characters: over 255 */
  ck_assert_msg(strstr(e.msg, "1-255") != NULL, "%s", e.msg);
  memset(&e, 0, sizeof e);
  ck_assert_ptr_null(auth_load("/nonexistent/descent-tokens", &e));
  ck_assert_int_eq(e.code, E_IO);
}
END_TEST

START_TEST(longest_token_accepted) {
  char text[256 + 8], header[256 + 16];
  memset(text, 'z', 255);
  text[255] = '\n';
  text[256] = 0;
  derr e = {0};
  auth *a = load(text, &e);
  ck_assert_msg(a != NULL, "%s", e.msg);
  snprintf(header, sizeof header, "Bearer %.255s", text);
  ck_assert_int_eq(auth_check(a, header), AUTH_WRITE);
  header[strlen(header) - 1] = 0; /* 254 characters */
  ck_assert_int_eq(auth_check(a, header), AUTH_NONE);
  auth_free(a);
}
END_TEST

Suite *suite_auth(void) {
  Suite *s = suite_create("auth");
  TCase *tc = tcase_create("auth");
  tcase_add_test(tc, levels_comments_and_blank_lines);
  tcase_add_test(tc, no_token_file_grants_write);
  tcase_add_test(tc, bad_files_are_refused_with_their_line);
  tcase_add_test(tc, longest_token_accepted);
  suite_add_tcase(s, tc);
  return s;
}
