/* descent: the command-line client of descentd, on top of libdescent.
 *
 * This file owns the command line: the options table (one table feeds
 * getopt_long and every --help), finding the command, opening the handle,
 * and turning library errors into messages and exit codes.  The commands
 * themselves are in commands.c, input and output in io.c.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* ---- the options ------------------------------------------------------------------ */

enum { O_URL = 256, O_TOKEN, O_JSON, O_HELP, O_VERSION };

typedef struct cli_opt {
  struct option lo;
  char letter;      /* the key in a command's `opts` (0: common to every command) */
  const char *arg;  /* name of its value, NULL for a flag */
  const char *help;
} cli_opt;

static const cli_opt options[] = {
    {{"url", required_argument, NULL, O_URL}, 0, "URL[,URL...]",
     "the daemon (default $DESCENT_URL, else http://127.0.0.1:8080); several: the instance is sharded over "
     "them, or, when they are the members of one replica group, that group (failover); URL|URL|...: one "
     "group's members"},
    {{"token", required_argument, NULL, O_TOKEN}, 0, "TOKEN", "bearer token (default $DESCENT_TOKEN)"},
    {{"json", no_argument, NULL, O_JSON}, 0, NULL, "machine-readable output (JSON on stdout, errors as JSON on stderr)"},
    {{"help", no_argument, NULL, O_HELP}, 0, NULL, "this help"},
    {{"binary", no_argument, NULL, 'b'}, 'b', NULL, "values as little-endian float32 bytes instead of text numbers"},
    {{"output", required_argument, NULL, 'o'}, 'o', "FILE", "write the values (or document) to FILE instead of stdout"},
    {{"worker", required_argument, NULL, 'w'}, 'w', "NAME", "the worker's name (required in sync mode)"},
    {{"step", required_argument, NULL, 's'}, 's', "N", "the step of the parameters the gradient was computed on"},
    {{"loss", required_argument, NULL, 'l'}, 'l', "X", "the loss, for the history and dashboard"},
    {{"key", required_argument, NULL, 'k'}, 'k', "KEY", "idempotency key: a retry with the same key is applied once"},
    {{"seq", required_argument, NULL, 'q'}, 'q', "N", "per-worker sequence number (with --worker, a key too)"},
    {{"params", no_argument, NULL, 'P'}, 'P', NULL, "also print the new parameters"},
    {{"wait-for-step", required_argument, NULL, 'W'}, 'W', "N", "long-poll until the instance reaches step N"},
    {{"timeout-ms", required_argument, NULL, 'T'}, 'T', "MS", "how long --wait-for-step waits (default 30000)"},
    {{"patch", required_argument, NULL, 'p'}, 'p', "JSON", "a whole PATCH body, e.g. '{\"hyper\":{\"lr\":0.01}}'"},
    {{"dtype", required_argument, NULL, 'd'}, 'd', "TYPE",
     "wire precision: float32 (default), bfloat16 or float16 (values rounded to nearest even; half the bytes)"},
};
#define NOPTIONS (sizeof options / sizeof *options)

static void print_options(FILE *f, const char *letters, bool common) {
  for (size_t i = 0; i < NOPTIONS; i++) {
    const cli_opt *o = &options[i];
    if (common ? o->letter != 0 : (!o->letter || !strchr(letters, o->letter))) continue;
    char left[64];
    char s[8] = "";
    if (o->letter == 'b' || o->letter == 'o') snprintf(s, sizeof s, "-%c, ", o->letter);
    snprintf(left, sizeof left, "%s--%s%s%s", s, o->lo.name, o->arg ? " " : "", o->arg ? o->arg : "");
    fprintf(f, "  %-26s %s\n", left, o->help);
  }
}

static const cli_cmd *find_cmd(const char *name) {
  for (const cli_cmd *c = cli_commands; c->name; c++)
    if (!strcmp(c->name, name)) return c;
  return NULL;
}

static void main_help(FILE *f, const char *prog) {
  fprintf(f,
          "usage: %s [--url URL] [--token TOKEN] [--json] COMMAND [ARGS] [OPTIONS]\n"
          "\n"
          "The command-line client of descentd, the optimizer daemon.\n"
          "\n"
          "commands:\n",
          prog);
  for (const cli_cmd *c = cli_commands; c->name; c++) {
    char left[64];
    snprintf(left, sizeof left, "%s %s", c->name, c->args);
    fprintf(f, "  %-26s %s\n", left, c->summary);
  }
  fprintf(f, "\noptions of every command:\n");
  print_options(f, "", true);
  fprintf(f,
          "\n`%s COMMAND --help` shows a command's own options.\n"
          "\n"
          "environment:\n"
          "  DESCENT_URL                the default --url\n"
          "  DESCENT_TOKEN              the default --token\n"
          "  DESCENT_CA_FILE            a PEM file of CA certificates to verify https:// daemons with, instead\n"
          "                             of the system's (e.g. the self-signed certificate of your own daemon)\n"
          "\n"
          "exit codes:\n"
          "  0  done\n"
          "  1  usage: bad arguments, or a local file or number that cannot be read\n"
          "  2  refused: the daemon answered 4xx (unknown instance, bad length, conflict, ...),\n"
          "     or the client refused the same kind of request before sending it\n"
          "  3  unreachable: no connection, a timeout, a 5xx answer, or a reply that cannot be read\n"
          "  4  the shards of a sharded instance disagree (different steps or layouts)\n"
          "  5  pull --wait-for-step: the step was not reached within --timeout-ms (the current,\n"
          "     older parameters are still printed)\n"
          "\n"
          "Errors go to stderr as `descent: COMMAND: CODE (STATUS): MESSAGE`, or with --json as\n"
          "{\"error\": {\"status\", \"code\", \"message\"}}.\n",
          prog);
}

static void cmd_help(FILE *f, const char *prog, const cli_cmd *c) {
  fprintf(f, "usage: %s %s %s [OPTIONS]\n\n%s\n\n%s\n", prog, c->name, c->args, c->summary, c->help);
  if (*c->opts) {
    fprintf(f, "\noptions:\n");
    print_options(f, c->opts, false);
  }
  fprintf(f, "\noptions of every command:\n");
  print_options(f, "", true);
  fprintf(f, "\nexit codes: 0 done, 1 usage, 2 refused, 3 unreachable, 4 shards disagree, 5 wait timed out (see %s --help)\n", prog);
}

/* ---- errors ----------------------------------------------------------------------- */

int cli_usage(const cli *c, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (c->json) {
    fprintf(stderr, "{\"error\":{\"status\":0,\"code\":\"usage\",\"message\":\"");
    for (const char *p = msg; *p; p++) {
      if (*p == '"' || *p == '\\') fputc('\\', stderr);
      if ((unsigned char)*p >= 0x20) fputc(*p, stderr);
    }
    fprintf(stderr, "\"}}\n");
  } else {
    fprintf(stderr, "%s: %s%s%s\n", c->prog, c->cmd ? c->cmd : "", c->cmd ? ": " : "", msg);
  }
  return EXIT_USAGE;
}

int cli_fail(const cli *c, int rc, const descent_error *err) {
  int code;
  switch (rc) {
  case DESCENT_EREFUSED:
  case DESCENT_ENOTSUP: code = EXIT_REFUSED; break;
  case DESCENT_EINVAL:
    code = (!strcmp(err->code, "bad_length") || !strcmp(err->code, "bad_name")) ? EXIT_REFUSED : EXIT_USAGE;
    break;
  case DESCENT_ESHARDS: code = EXIT_SHARDS; break;
  default: code = EXIT_UNREACHABLE; break;
  }
  if (c->json) {
    fprintf(stderr, "{\"error\":{\"status\":%d,\"code\":\"%s\",\"message\":\"", err->status, err->code);
    for (const char *p = err->message; *p; p++) {
      if (*p == '"' || *p == '\\') fputc('\\', stderr);
      if ((unsigned char)*p >= 0x20) fputc(*p, stderr);
    }
    fprintf(stderr, "\"}}\n");
  } else if (err->status) {
    fprintf(stderr, "%s: %s: %s (%d): %s\n", c->prog, c->cmd, err->code, err->status, err->message);
  } else {
    fprintf(stderr, "%s: %s: %s: %s\n", c->prog, c->cmd, err->code, err->message);
  }
  return code;
}

/* ---- main ----------------------------------------------------------------------- */

static int parse_int(const char *s, int64_t lo, int64_t *out) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (!*s || *end || errno || v < lo) return -1;
  *out = v;
  return 0;
}

/* Is argv[i] the value of an option that takes one (so not the command)? */
static bool takes_value(const char *a) {
  if (strncmp(a, "--", 2) || strchr(a, '=')) return false;
  for (size_t i = 0; i < NOPTIONS; i++)
    if (!strcmp(a + 2, options[i].lo.name)) return options[i].lo.has_arg == required_argument;
  return false;
}

int main(int argc, char **argv) {
  cli c = {.prog = "descent", .step = -1, .seq = -1, .wait_for_step = -1, .timeout_ms = 30000, .loss = NAN};
  c.url = getenv("DESCENT_URL");
  if (!c.url || !*c.url) c.url = "http://127.0.0.1:8080";
  c.token = getenv("DESCENT_TOKEN");
  /* the command is the first word that is neither an option nor an option's value */
  int at = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--")) break;
    if (argv[i][0] == '-') {
      if (takes_value(argv[i])) i++;
      continue;
    }
    at = i;
    break;
  }
  bool help = false, version = false;
  const cli_cmd *cmd = at ? find_cmd(argv[at]) : NULL;
  if (at && !cmd) {
    fprintf(stderr, "%s: unknown command '%s' (try %s --help)\n", c.prog, argv[at], c.prog);
    return EXIT_USAGE;
  }
  c.cmd = cmd ? cmd->name : NULL;
  /* getopt over everything but the command word */
  char **av = malloc(sizeof *av * (size_t)(argc + 1));
  struct option lo[NOPTIONS + 2];
  if (!av) return EXIT_UNREACHABLE;
  int ac = 0;
  for (int i = 0; i < argc; i++)
    if (i == 0 || i != at) av[ac++] = argv[i];
  av[ac] = NULL;
  size_t nlo = 0;
  for (size_t i = 0; i < NOPTIONS; i++)
    if (!options[i].letter || (cmd && strchr(cmd->opts, options[i].letter))) lo[nlo++] = options[i].lo;
  lo[nlo++] = (struct option){"version", no_argument, NULL, O_VERSION};
  lo[nlo] = (struct option){0, 0, 0, 0};
  /* -b and -o are short for --binary and --output where the command has them */
  char shorts[8] = "";
  if (cmd && strchr(cmd->opts, 'b')) strcat(shorts, "b");
  if (cmd && strchr(cmd->opts, 'o')) strcat(shorts, "o:");
  opterr = 0;
  int o, rc = EXIT_OK;
  while ((o = getopt_long(ac, av, shorts, lo, NULL)) != -1) {
    int64_t v;
    switch (o) {
    case O_URL: c.url = optarg; break;
    case O_TOKEN: c.token = optarg; break;
    case O_JSON: c.json = true; break;
    case O_HELP: help = true; break;
    case O_VERSION: version = true; break;
    case 'b': c.binary = true; break;
    case 'o': c.output = optarg; break;
    case 'w': c.worker = optarg; break;
    case 'k': c.key = optarg; break;
    case 'p': c.patch = optarg; break;
    case 'P': c.params = true; break;
    case 'd':
      if (!strcmp(optarg, "float32")) c.dtype = DESCENT_FLOAT32;
      else if (!strcmp(optarg, "bfloat16") || !strcmp(optarg, "bf16")) c.dtype = DESCENT_BFLOAT16;
      else if (!strcmp(optarg, "float16") || !strcmp(optarg, "fp16")) c.dtype = DESCENT_FLOAT16;
      else {
        rc = cli_usage(&c, "--dtype: expected float32, bfloat16 or float16, got '%s'", optarg);
        goto out;
      }
      break;
    case 's':
    case 'q':
    case 'W':
    case 'T':
      if (parse_int(optarg, 0, &v) < 0) {
        rc = cli_usage(&c, "--%s: expected a non-negative integer, got '%s'",
                       o == 's' ? "step" : o == 'q' ? "seq" : o == 'W' ? "wait-for-step" : "timeout-ms", optarg);
        goto out;
      }
      if (o == 's') c.step = v;
      else if (o == 'q') c.seq = v;
      else if (o == 'W') c.wait_for_step = v;
      else c.timeout_ms = (long)v;
      break;
    case 'l': {
      char *end;
      c.loss = strtod(optarg, &end);
      if (!*optarg || *end || !isfinite(c.loss)) {
        rc = cli_usage(&c, "--loss: expected a finite number, got '%s'", optarg);
        goto out;
      }
      break;
    }
    default:
      rc = cli_usage(&c, "unknown or incomplete option '%s' (try %s%s%s --help)", av[optind - 1], c.prog,
                     cmd ? " " : "", cmd ? cmd->name : "");
      goto out;
    }
  }
  if (version) {
    printf("descent %s\n", DESCENT_VERSION);
    goto out;
  }
  if (help || !cmd) {
    if (cmd) cmd_help(stdout, c.prog, cmd);
    else main_help(help ? stdout : stderr, c.prog);
    rc = help ? EXIT_OK : EXIT_USAGE;
    goto out;
  }
  c.args = av + optind;
  c.nargs = ac - optind;
  if (c.nargs < cmd->min_args || c.nargs > cmd->max_args) {
    rc = cli_usage(&c, "usage: %s %s %s (try %s %s --help)", c.prog, cmd->name, cmd->args, c.prog, cmd->name);
    goto out;
  }
  descent_error err = {0};
  if (!(c.d = descent_open(c.url, c.token, &err))) {
    /* open reports no code of its own: classify by what it said */
    int orc = err.status >= 500                          ? DESCENT_ESERVER
              : err.status >= 400                        ? DESCENT_EREFUSED
              : !strcmp(err.code, "invalid_argument")    ? DESCENT_EINVAL
              : !strcmp(err.code, "timeout")             ? DESCENT_ETIMEOUT
                                                         : DESCENT_ECONNECT;
    rc = cli_fail(&c, orc, &err);
    goto out;
  }
  rc = cmd->run(&c);
  descent_close(c.d);
out:
  free(av);
  return rc;
}
