/* config: the options table (config.h) applied in order: defaults, then the
 * DESCENT_<NAME> environment variables, then argv (getopt_long); then the
 * automatic --max-params (half the physical memory).  Owns the option
 * strings in a config until config_free.  Never prints or exits on an error:
 * it returns a derr for main to print (only config_usage/config_markdown
 * write, to the FILE given).  Main thread, before any other thread starts. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mem.h"

enum kind { K_STR, K_NUM, K_INT, K_FLAG };

typedef struct option_row {
  const char *name;
  int kind;
  size_t offset;
  const char *def, *meta, *help;
} option_row;

static const option_row rows[] = {
#define CONFIG_ROW(name, kind, field, def, meta, help) {name, K_##kind, offsetof(config, field), def, meta, help},
    CONFIG_TABLE(CONFIG_ROW)
#undef CONFIG_ROW
};
#define NROWS (sizeof rows / sizeof *rows)

static int parse_long(const char *s, long *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (end == s || errno) return -E_BAD_REQUEST;
  double mul = 1;
  if (*end) {
    switch (toupper((unsigned char)*end)) {
    case 'K': mul = 1024.0; break;
    case 'M': mul = 1024.0 * 1024; break;
    case 'G': mul = 1024.0 * 1024 * 1024; break;
    default: return -E_BAD_REQUEST;
    }
    end++;
    if (*end == 'i' || *end == 'B') end++;
    if (*end == 'B') end++;
    if (*end) return -E_BAD_REQUEST;
  }
  v *= mul;
  if (!(v >= 0 && v < 9.2e18) || v != floor(v)) return -E_BAD_REQUEST;
  *out = (long)v;
  return 0;
}

static int set(config *cfg, const option_row *r, const char *val, const char *src, derr *e) {
  char *base = (char *)cfg + r->offset;
  switch (r->kind) {
  case K_STR: {
    char **p = (char **)base;
    free(*p);
    *p = val ? mem_xstrdup(val) : NULL;
    return 0;
  }
  case K_NUM: {
    char *end;
    double v = strtod(val, &end);
    if (end == val || *end || !isfinite(v) || v < 0)
      return derr_set(e, E_BAD_REQUEST, "%s %s: not a non-negative number: '%s'", src, r->name, val);
    *(double *)base = v;
    return 0;
  }
  case K_INT:
    if (parse_long(val, (long *)base) < 0)
      return derr_set(e, E_BAD_REQUEST, "%s %s: not a non-negative integer: '%s'", src, r->name, val);
    return 0;
  default: { /* FLAG */
    bool on = !val || !strcmp(val, "1") || !strcmp(val, "true") || !strcmp(val, "yes");
    *(bool *)base = on;
    return 0;
  }
  }
}

int config_load(config *cfg, int argc, char **argv, derr *e) {
  memset(cfg, 0, sizeof *cfg);
  int rc;
  for (size_t i = 0; i < NROWS; i++)
    if (rows[i].def && (rc = set(cfg, &rows[i], rows[i].def, "default", e)) < 0) return rc;
  for (size_t i = 0; i < NROWS; i++) {
    if (rows[i].kind == K_FLAG) continue;
    char env[64] = "DESCENT_";
    size_t k = strlen(env);
    for (const char *p = rows[i].name; *p && k < sizeof env - 1; p++)
      env[k++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    env[k] = 0;
    const char *v = getenv(env);
    if (v && *v && (rc = set(cfg, &rows[i], v, env, e)) < 0) return rc;
  }
  struct option longopts[NROWS + 1];
  for (size_t i = 0; i < NROWS; i++)
    longopts[i] = (struct option){rows[i].name, rows[i].kind == K_FLAG ? no_argument : required_argument,
                                  NULL, (int)(i + 256)};
  longopts[NROWS] = (struct option){0};
  optind = 1;
  opterr = 0;
  int c;
  while ((c = getopt_long(argc, argv, "hV", longopts, NULL)) != -1) {
    if (c == 'h') cfg->help = true;
    else if (c == 'V') cfg->version = true;
    else if (c >= 256 && (size_t)(c - 256) < NROWS) {
      if ((rc = set(cfg, &rows[c - 256], optarg, "option", e)) < 0) return rc;
    } else {
      return derr_set(e, E_BAD_REQUEST, "unknown or incomplete option '%s' (see --help)",
                      argv[optind - 1]);
    }
  }
  if (optind < argc) return derr_set(e, E_BAD_REQUEST, "unexpected argument '%s'", argv[optind]);
  if (cfg->max_params == 0) { /* auto: half of the physical memory, in floats */
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    double half = pages > 0 && page > 0 ? (double)pages * (double)page / 2 : 8.0 * (1 << 30);
    cfg->max_params = (long)(half / sizeof(float));
  }
  if (cfg->max_body_memory == 0) { /* auto: 4 bodies of the largest size, at most 1/4 of the memory */
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    double quarter = pages > 0 && page > 0 ? (double)pages * (double)page / 4 : 2.0 * (1 << 30);
    double four = 4.0 * (double)cfg->max_body;
    cfg->max_body_memory = (long)(four < quarter ? four : quarter);
  }
  if (!!cfg->tls_cert != !!cfg->tls_key)
    return derr_set(e, E_BAD_REQUEST, "--tls-cert and --tls-key go together");
  return 0;
}

void config_free(config *cfg) {
  for (size_t i = 0; i < NROWS; i++)
    if (rows[i].kind == K_STR) {
      char **p = (char **)((char *)cfg + rows[i].offset);
      free(*p);
      *p = NULL;
    }
}

void config_usage(FILE *out) {
  fprintf(out, "usage: descentd [OPTIONS]\n\ndescent: optimizer instances (torch.optim) served over HTTP.\n\n");
  for (size_t i = 0; i < NROWS; i++) {
    char left[64];
    snprintf(left, sizeof left, "--%s%s%s", rows[i].name, rows[i].meta ? " " : "",
             rows[i].meta ? rows[i].meta : "");
    fprintf(out, "  %-30s %s", left, rows[i].help);
    if (rows[i].def) fprintf(out, " [%s]", rows[i].def);
    fputc('\n', out);
  }
  fprintf(out, "\nEvery option can also be set as DESCENT_<NAME> (e.g. DESCENT_DATA_DIR).\n");
}

void config_markdown(FILE *out) {
  fprintf(out, "| option | environment | default | meaning |\n| --- | --- | --- | --- |\n");
  for (size_t i = 0; i < NROWS; i++) {
    char env[64] = "DESCENT_";
    size_t k = strlen(env);
    for (const char *p = rows[i].name; *p && k < sizeof env - 1; p++)
      env[k++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    env[k] = 0;
    fprintf(out, "| `--%s%s%s` | %s%s%s | %s | %s |\n", rows[i].name, rows[i].meta ? " " : "",
            rows[i].meta ? rows[i].meta : "", rows[i].kind == K_FLAG ? "" : "`",
            rows[i].kind == K_FLAG ? "" : env, rows[i].kind == K_FLAG ? "" : "`",
            rows[i].def ? rows[i].def : "", rows[i].help);
  }
}
