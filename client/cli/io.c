/* io: the `descent` command's input and output: reading files or stdin,
 * text numbers and float32 bytes, and printing floats in their shortest
 * exact form.  No network, no library calls. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int io_read_all(const char *path, char **buf, size_t *len) {
  FILE *f = (!path || !strcmp(path, "-")) ? stdin : fopen(path, "rb");
  if (!f) return -1;
  size_t cap = 1 << 16, n = 0;
  char *b = malloc(cap);
  int rc = 0;
  while (b) {
    if (n + 1 >= cap) {
      char *nb = realloc(b, cap * 2);
      if (!nb) break;
      b = nb;
      cap *= 2;
    }
    size_t got = fread(b + n, 1, cap - n - 1, f);
    n += got;
    if (got == 0) break;
  }
  if (!b || ferror(f)) rc = -1;
  if (f != stdin) fclose(f);
  if (rc < 0) {
    free(b);
    return -1;
  }
  b[n] = 0;
  *buf = b;
  *len = n;
  return 0;
}

int io_parse_floats(const char *text, float **out, size_t *n, size_t *bad_line, char *bad_text, size_t bad_cap) {
  size_t cap = 1024, k = 0, line = 1;
  float *v = malloc(cap * sizeof *v);
  if (!v) return -1;
  const char *p = text;
  for (;;) {
    while (*p && strchr(" \t\r\n,[]", *p)) {
      if (*p == '\n') line++;
      p++;
    }
    if (!*p) break;
    char *end;
    errno = 0;
    float x = strtof(p, &end);
    size_t tok = strcspn(p, " \t\r\n,[]");
    if (end == p || (size_t)(end - p) != tok || !isfinite(x)) {
      *bad_line = line;
      snprintf(bad_text, bad_cap, "%.*s", (int)(tok > 40 ? 40 : tok), p);
      free(v);
      return -1;
    }
    if (k == cap) {
      float *nv = realloc(v, 2 * cap * sizeof *v);
      if (!nv) {
        free(v);
        return -1;
      }
      v = nv;
      cap *= 2;
    }
    v[k++] = x;
    p = end;
  }
  *out = v;
  *n = k;
  return 0;
}

int io_binary_floats(const char *buf, size_t len, float **out, size_t *n) {
  if (len % 4) return -1;
  float *v = malloc(len ? len : 1);
  if (!v) return -1;
  memcpy(v, buf, len);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  for (size_t i = 0; i < len / 4; i++) {
    uint32_t u;
    memcpy(&u, &v[i], 4);
    u = __builtin_bswap32(u);
    memcpy(&v[i], &u, 4);
  }
#endif
  *out = v;
  *n = len / 4;
  return 0;
}

void io_float(char *buf, size_t cap, float x) {
  for (int prec = 1; prec <= 9; prec++) {
    snprintf(buf, cap, "%.*g", prec, (double)x);
    if (strtof(buf, NULL) == x) return;
  }
}

void io_double(char *buf, size_t cap, double x) {
  for (int prec = 1; prec <= 17; prec++) {
    snprintf(buf, cap, "%.*g", prec, x);
    if (strtod(buf, NULL) == x) return;
  }
}

FILE *io_open_out(const char *path, bool binary) {
  (void)binary;
  if (!path || !strcmp(path, "-")) return stdout;
  return fopen(path, "wb");
}

int io_close_out(FILE *f) {
  if (f == stdout) return fflush(f) == 0 && !ferror(f) ? 0 : -1;
  int bad = ferror(f);
  return (fclose(f) == 0 && !bad) ? 0 : -1;
}

int io_write_binary(FILE *f, const float *v, size_t n) {
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  for (size_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, &v[i], 4);
    u = __builtin_bswap32(u);
    if (fwrite(&u, 4, 1, f) != 1) return -1;
  }
  return 0;
#else
  return fwrite(v, sizeof *v, n, f) == n ? 0 : -1;
#endif
}

void io_write_array(FILE *f, const float *v, size_t n) {
  char b[32];
  fputc('[', f);
  for (size_t i = 0; i < n; i++) {
    io_float(b, sizeof b, v[i]);
    if (i) fputc(',', f);
    fputs(b, f);
  }
  fputc(']', f);
}
