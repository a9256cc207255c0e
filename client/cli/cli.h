/* cli: what the files of the `descent` command share: the parsed command
 * line, the command table's entry type, the exit codes, and the input and
 * output helpers.  Single-threaded; one process per command.
 */
#ifndef DESCENT_CLI_H
#define DESCENT_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "descent.h"

/* Exit codes (also in `descent --help`). */
enum {
  EXIT_OK = 0,
  EXIT_USAGE = 1,       /* bad arguments or local input (a file, a number) */
  EXIT_REFUSED = 2,     /* the daemon refused the request (4xx), or the library did before sending */
  EXIT_UNREACHABLE = 3, /* no answer: connection, timeout, 5xx, unreadable reply */
  EXIT_SHARDS = 4,      /* the shards of a sharded instance disagree (step or layout) */
  EXIT_WAIT_TIMEOUT = 5 /* pull --wait-for-step: the step was not reached within --timeout-ms */
};

/* Everything the command line said. */
typedef struct cli {
  const char *prog;
  const char *url, *token;
  bool json;       /* machine output */
  bool binary;     /* float32 input/output instead of text numbers */
  bool params;     /* push: print the new parameters */
  descent_dtype dtype; /* push/pull: the wire precision (--dtype) */
  const char *output;
  const char *worker, *key, *patch;
  int64_t step, seq, wait_for_step;
  long timeout_ms;
  double loss;
  const char *cmd; /* the command's name */
  char **args;     /* positional arguments */
  int nargs;
  descent *d;      /* opened by main before the command runs */
} cli;

typedef struct cli_cmd {
  const char *name;
  int (*run)(cli *c);
  const char *args;    /* "NAME [FILE|-]" */
  const char *summary; /* one line */
  const char *help;    /* the details, options included */
  const char *opts;    /* letters of the command's own options, see descent.c's table */
  int min_args, max_args;
} cli_cmd;

extern const cli_cmd cli_commands[];

/* Reports a library error on stderr (JSON with --json) and returns the exit code. */
int cli_fail(const cli *c, int rc, const descent_error *err);

/* Reports a usage or input problem (exit 1). */
int cli_usage(const cli *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- input and output (io.c) ------------------------------------------------------ */

/* Reads a whole file ("-" or NULL: stdin) into *buf (new, NUL-terminated). */
int io_read_all(const char *path, char **buf, size_t *len);

/* Parses text numbers (separated by white space or commas; brackets are
 * ignored, so a JSON array works too) into *out (new).  On a bad token:
 * -1 with *bad_line and *bad_text set. */
int io_parse_floats(const char *text, float **out, size_t *n, size_t *bad_line, char *bad_text, size_t bad_cap);

/* Little-endian float32 bytes into *out (new); -1 if len is not a multiple of 4. */
int io_binary_floats(const char *buf, size_t len, float **out, size_t *n);

/* The shortest decimal that reads back as the same float (double). */
void io_float(char *buf, size_t cap, float x);
void io_double(char *buf, size_t cap, double x);

/* Opens the output (NULL or "-": stdout). */
FILE *io_open_out(const char *path, bool binary);
int io_close_out(FILE *f);

/* Writes n floats as little-endian float32. */
int io_write_binary(FILE *f, const float *v, size_t n);

/* Writes "[a,b,...]". */
void io_write_array(FILE *f, const float *v, size_t n);

#endif
