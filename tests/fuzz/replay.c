/* replay: runs a fuzz target's LLVMFuzzerTestOneInput over files, without
 * libFuzzer: the corpus replay of `make test` (built with the ordinary
 * compiler under ASan+UBSan), and a way to debug one crashing input.
 *
 *     replay FILE_OR_DIR...      every regular file, directories in name order
 *
 * Exits 0 when every input ran (a failed invariant or a sanitizer report
 * aborts the process), 2 when an argument cannot be read.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "replay: cannot open %s\n", path);
    return -1;
  }
  size_t cap = 4096, len = 0;
  uint8_t *buf = malloc(cap);
  size_t got;
  while (buf && (got = fread(buf + len, 1, cap - len, f)) > 0) {
    len += got;
    if (len == cap) {
      uint8_t *nb = realloc(buf, cap *= 2);
      if (!nb) free(buf);
      buf = nb;
    }
  }
  fclose(f);
  if (!buf) {
    fprintf(stderr, "replay: out of memory reading %s\n", path);
    return -1;
  }
  /* an exact-size copy, so that ASan sees any read past the input */
  uint8_t *exact = malloc(len ? len : 1);
  if (!exact) abort();
  memcpy(exact, buf, len);
  free(buf);
  LLVMFuzzerTestOneInput(exact, len);
  free(exact);
  return 0;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int run_path(const char *path, size_t *count) {
  struct stat st;
  if (stat(path, &st) < 0) {
    fprintf(stderr, "replay: cannot read %s\n", path);
    return -1;
  }
  if (!S_ISDIR(st.st_mode)) {
    if (run_file(path) < 0) return -1;
    (*count)++;
    return 0;
  }
  DIR *d = opendir(path);
  if (!d) return -1;
  char **names = NULL;
  size_t n = 0, cap = 0;
  struct dirent *de;
  while ((de = readdir(d))) {
    if (de->d_name[0] == '.') continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 64;
      char **nn = realloc(names, cap * sizeof *names);
      if (!nn) abort();
      names = nn;
    }
    size_t l = strlen(path) + strlen(de->d_name) + 2;
    names[n] = malloc(l);
    if (!names[n]) abort();
    snprintf(names[n++], l, "%s/%s", path, de->d_name);
  }
  closedir(d);
  qsort(names, n, sizeof *names, by_name);
  int rc = 0;
  for (size_t i = 0; i < n; i++) {
    if (rc == 0 && run_path(names[i], count) < 0) rc = -1;
    free(names[i]);
  }
  free(names);
  return rc;
}

int main(int argc, char **argv) {
  size_t count = 0;
  for (int i = 1; i < argc; i++)
    if (run_path(argv[i], &count) < 0) return 2;
  const char *slash = strrchr(argv[0], '/');
  printf("replay %-10s %zu inputs ok\n", slash ? slash + 1 : argv[0], count);
  return 0;
}
