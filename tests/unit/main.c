/* main: runs every Check suite of tests/unit (list in suites.h).
 * Run from the tests/ directory (data paths are relative to it).
 * `unit SUITE...` runs only the named suites; CK_FORK=no to debug. */
#include <stdlib.h>
#include <string.h>

#include "suites.h"

int main(int argc, char **argv) {
  SRunner *sr = srunner_create(NULL);
  int added = 0;
#define TEST_SUITE_ADD(name)                                          \
  {                                                                   \
    int want = argc < 2;                                              \
    for (int i = 1; i < argc; i++) want |= strcmp(argv[i], #name) == 0; \
    if (want) {                                                       \
      srunner_add_suite(sr, suite_##name());                          \
      added++;                                                        \
    }                                                                 \
  }
  TEST_SUITES(TEST_SUITE_ADD)
#undef TEST_SUITE_ADD
  if (!added) return 2;
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
