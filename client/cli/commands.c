/* commands: what each `descent` command does, and the table that names
 * them (descent.c parses the command line and runs one).  Human output on
 * stdout by default; --json prints the daemon's JSON (or a small object);
 * values go to --output when given.  Every failure returns an exit code
 * from cli.h.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* ---- helpers ------------------------------------------------------------------------ */

static json_t *parse(const char *text) { return text ? json_loads(text, 0, NULL) : NULL; }

static void print_json_text(const char *text) {
  fputs(text, stdout);
  size_t n = strlen(text);
  if (!n || text[n - 1] != '\n') fputc('\n', stdout);
}

static void shape_str(char *b, size_t cap, const descent_tensor *t) {
  size_t o = 0;
  o += (size_t)snprintf(b + o, cap - o, "[");
  for (int j = 0; j < t->ndim && o < cap; j++)
    o += (size_t)snprintf(b + o, cap - o, "%s%llu", j ? "," : "", (unsigned long long)t->shape[j]);
  if (o < cap) snprintf(b + o, cap - o, "]");
}

/* Parameters to `f`: --binary float32; with --output text one number a
 * line; --json {"step", "params": {tensor: [...]}}; else step and a line
 * per tensor. */
static int write_params(const cli *c, const descent_info *info, const float *v, uint64_t step, bool json_ok) {
  FILE *f = io_open_out(c->output, c->binary);
  if (!f) return cli_usage(c, "%s: cannot write", c->output);
  char b[32];
  if (c->binary) {
    io_write_binary(f, v, info->size);
  } else if (c->json && json_ok) {
    fprintf(f, "{\"step\":%llu,\"params\":{", (unsigned long long)step);
    for (size_t i = 0, m = 0; i < info->ntensors; i++) {
      if (info->tensors[i].sparse) continue; /* by row: descent rows */
      fprintf(f, "%s\"%s\":", m++ ? "," : "", info->tensors[i].name);
      io_write_array(f, v + info->tensors[i].offset, info->tensors[i].count);
    }
    fprintf(f, "}}\n");
  } else if (c->output) {
    for (size_t i = 0; i < info->size; i++) {
      io_float(b, sizeof b, v[i]);
      fprintf(f, "%s\n", b);
    }
  } else {
    fprintf(f, "step %llu\n", (unsigned long long)step);
    for (size_t i = 0; i < info->ntensors; i++) {
      char sh[96];
      if (info->tensors[i].sparse) continue; /* by row: descent rows */
      shape_str(sh, sizeof sh, &info->tensors[i]);
      fprintf(f, "%s %s:", info->tensors[i].name, sh);
      for (size_t k = 0; k < info->tensors[i].count; k++) {
        io_float(b, sizeof b, v[info->tensors[i].offset + k]);
        fprintf(f, " %s", b);
      }
      fputc('\n', f);
    }
  }
  if (io_close_out(f) < 0) return cli_usage(c, "%s: write failed", c->output ? c->output : "stdout");
  return EXIT_OK;
}

/* Reads numbers (text or --binary) from a file or stdin. */
static int read_floats(const cli *c, const char *path, float **v, size_t *n) {
  char *buf;
  size_t len;
  if (io_read_all(path, &buf, &len) < 0) return cli_usage(c, "%s: cannot read", path ? path : "stdin");
  int rc = EXIT_OK;
  if (c->binary) {
    if (io_binary_floats(buf, len, v, n) < 0)
      rc = cli_usage(c, "%s: %zu bytes is not a whole number of float32 values", path ? path : "stdin", len);
  } else {
    size_t line;
    char bad[48];
    if (io_parse_floats(buf, v, n, &line, bad, sizeof bad) < 0)
      rc = cli_usage(c, "%s:%zu: '%s' is not a finite number", path ? path : "stdin", line, bad);
  }
  free(buf);
  return rc;
}

/* A gradient of the wrong length, told in values (exit 2, as the daemon's
 * refusal): err keeps the daemon's status when it answered. */
static int bad_length(const cli *c, const char *name, size_t want, size_t got, descent_error *err) {
  int status = !strcmp(err->code, "bad_length") ? err->status : 0;
  *err = (descent_error){.status = status};
  snprintf(err->code, sizeof err->code, "bad_length");
  snprintf(err->message, sizeof err->message,
           "expected %zu values, got %zu (a gradient of '%s' has every tensor's values in creation order)", want, got,
           name);
  return cli_fail(c, DESCENT_EREFUSED, err);
}

/* ---- create, list, show, delete ------------------------------------------------------ */

static void print_created(json_t *o) {
  json_t *ts = json_object_get(o, "tensors");
  printf("created %s: %s, %s, %lld floats in %zu tensor%s\n", json_string_value(json_object_get(o, "name")),
         json_string_value(json_object_get(o, "algorithm")), json_string_value(json_object_get(o, "mode")),
         (long long)json_integer_value(json_object_get(o, "size")), json_array_size(ts),
         json_array_size(ts) == 1 ? "" : "s");
}

static int cmd_create(cli *c) {
  const char *arg = c->args[0];
  char *spec = NULL, *desc = NULL;
  size_t len;
  if (arg[0] == '{') {
    spec = strdup(arg);
  } else if (io_read_all(arg, &spec, &len) < 0) {
    return cli_usage(c, "%s: cannot read", arg);
  }
  descent_error err = {0};
  int rc = descent_create(c->d, spec, &desc, &err);
  free(spec);
  if (rc < 0) return cli_fail(c, rc, &err);
  if (c->json) {
    print_json_text(desc);
  } else {
    json_t *o = parse(desc);
    print_created(o);
    json_decref(o);
  }
  descent_free(desc);
  return EXIT_OK;
}

static int cmd_list(cli *c) {
  char *text = NULL;
  descent_error err = {0};
  int rc = descent_list(c->d, &text, &err);
  if (rc < 0) return cli_fail(c, rc, &err);
  if (c->json) {
    print_json_text(text);
    descent_free(text);
    return EXIT_OK;
  }
  json_t *o = parse(text), *arr = json_object_get(o, "optimizers"), *e;
  size_t i;
  if (!json_array_size(arr)) printf("no instances\n");
  else printf("%-24s %-14s %-6s %10s %12s %8s\n", "NAME", "ALGORITHM", "MODE", "STEP", "SIZE", "WORKERS");
  json_array_foreach(arr, i, e) {
    char step[64];
    json_t *ok = json_object_get(e, "consistent");
    if (json_is_false(ok)) {
      char *steps = json_dumps(json_object_get(e, "steps"), JSON_COMPACT);
      snprintf(step, sizeof step, "out of step %s", steps ? steps : "");
      free(steps);
    } else {
      snprintf(step, sizeof step, "%lld", (long long)json_integer_value(json_object_get(e, "step")));
    }
    printf("%-24s %-14s %-6s %10s %12lld %8lld\n", json_string_value(json_object_get(e, "name")),
           json_string_value(json_object_get(e, "algorithm")), json_string_value(json_object_get(e, "mode")), step,
           (long long)json_integer_value(json_object_get(e, "size")),
           (long long)json_integer_value(json_object_get(e, "workers_seen")));
  }
  json_decref(o);
  descent_free(text);
  return EXIT_OK;
}

static void print_value(const char *key, json_t *v) {
  char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(12));
  printf(" %s=%s", key, s ? s : "?");
  free(s);
}

static int cmd_show(cli *c) {
  char *text = NULL;
  descent_error err = {0};
  int rc = descent_describe(c->d, c->args[0], &text, &err);
  if (rc < 0) return cli_fail(c, rc, &err);
  if (c->json) {
    print_json_text(text);
    descent_free(text);
    return EXIT_OK;
  }
  json_t *o = parse(text), *v;
  const char *k;
  printf("%s: %s, %s, step %lld\n", json_string_value(json_object_get(o, "name")),
         json_string_value(json_object_get(o, "algorithm")), json_string_value(json_object_get(o, "mode")),
         (long long)json_integer_value(json_object_get(o, "step")));
  printf("  hyper:");
  json_object_foreach(json_object_get(o, "hyper"), k, v) print_value(k, v);
  printf("\n  settings:");
  static const char *const settings[] = {"workers", "min_workers", "round_timeout_ms", "aggregate", "max_staleness",
                                         "worker_lease_ms", "clip_grad_norm", "schedule", "lr"};
  for (size_t i = 0; i < sizeof settings / sizeof *settings; i++)
    if ((v = json_object_get(o, settings[i]))) print_value(settings[i], v);
  json_t *ts = json_object_get(o, "tensors"), *t;
  size_t i;
  printf("\n  tensors (%lld floats):\n", (long long)json_integer_value(json_object_get(o, "size")));
  json_array_foreach(ts, i, t) {
    char *shape = json_dumps(json_object_get(t, "shape"), JSON_COMPACT);
    json_t *held = json_object_get(t, "rows_held");
    if (json_is_true(json_object_get(t, "sparse"))) {
      printf("    %-20s %-16s sparse (by row)", json_string_value(json_object_get(t, "name")), shape ? shape : "?");
      if (json_is_integer(held)) printf(", %lld rows held", (long long)json_integer_value(held));
      printf("\n");
      free(shape);
      continue;
    }
    printf("    %-20s %-16s offset %-10lld count %lld\n", json_string_value(json_object_get(t, "name")),
           shape ? shape : "?", (long long)json_integer_value(json_object_get(t, "offset")),
           (long long)json_integer_value(json_object_get(t, "count")));
    free(shape);
  }
  printf("  workers seen: %lld\n", (long long)json_integer_value(json_object_get(o, "workers_seen")));
  json_t *sh = json_object_get(o, "shards");
  if (json_array_size(sh)) {
    printf("  shards:\n");
    json_array_foreach(sh, i, t)
      printf("    %zu %-32s offset %-10lld size %-10lld step %lld\n", i, json_string_value(json_object_get(t, "url")),
             (long long)json_integer_value(json_object_get(t, "offset")),
             (long long)json_integer_value(json_object_get(t, "size")),
             (long long)json_integer_value(json_object_get(t, "step")));
  }
  json_decref(o);
  descent_free(text);
  return EXIT_OK;
}

static int cmd_delete(cli *c) {
  descent_error err = {0};
  int rc = descent_delete(c->d, c->args[0], &err);
  if (rc < 0) return cli_fail(c, rc, &err);
  if (c->json) printf("{\"name\":\"%s\",\"deleted\":true}\n", c->args[0]);
  else printf("deleted %s\n", c->args[0]);
  return EXIT_OK;
}

/* ---- push, pull ----------------------------------------------------------------------- */

/* descent_push in the --dtype wire precision: the values rounded to it on
 * the way out, the parameters widened from it on the way back. */
static int push_as(cli *c, const char *name, float *g, size_t n, const descent_push_opts *o, float *p,
                   uint64_t *step, descent_error *err) {
  if (c->dtype == DESCENT_FLOAT32) return descent_push(c->d, name, g, n, o, p, step, err);
  uint16_t *h = malloc(n * 2 + 1), *hp = p ? malloc(n * 2 + 1) : NULL;
  int rc;
  if (!h || (p && !hp)) {
    snprintf(err->code, sizeof err->code, "out_of_memory");
    snprintf(err->message, sizeof err->message, "no memory for %zu values", n);
    rc = DESCENT_ENOMEM;
  } else {
    descent_to_dtype(c->dtype, g, h, n);
    rc = descent_push_dtype(c->d, name, h, n, c->dtype, o, hp, step, err);
    if (rc == 0 && p) descent_from_dtype(c->dtype, hp, p, n);
  }
  free(h);
  free(hp);
  return rc;
}

static int cmd_push(cli *c) {
  const char *name = c->args[0];
  float *g = NULL, *p = NULL;
  size_t n = 0;
  int rc = read_floats(c, c->nargs > 1 ? c->args[1] : NULL, &g, &n);
  if (rc) return rc;
  if (n == 0) {
    free(g);
    return cli_usage(c, "%s: no numbers (a gradient has every tensor's values)", c->nargs > 1 ? c->args[1] : "stdin");
  }
  descent_error err = {0};
  descent_info info = {0};
  bool want = c->params || c->output;
  if (want) {
    if ((rc = descent_info_get(c->d, name, &info, &err)) < 0) goto fail;
    if (info.size != n) {
      rc = bad_length(c, name, info.size, n, &err);
      goto out;
    }
    if (!(p = malloc(n * sizeof *p + 1))) {
      rc = cli_usage(c, "out of memory");
      goto out;
    }
  }
  descent_push_opts o = DESCENT_PUSH_OPTS_INIT;
  o.worker = c->worker;
  o.step = c->step;
  o.loss = c->loss;
  o.idempotency_key = c->key;
  o.seq = c->seq;
  uint64_t step = 0;
  if ((rc = push_as(c, name, g, n, &o, p, &step, &err)) < 0) {
    /* the daemon counts bytes of float32; the user typed values */
    descent_info_free(&info);
    if (!strcmp(err.code, "bad_length") && descent_info_get(c->d, name, &info, &(descent_error){0}) == 0 &&
        info.size != n) {
      rc = bad_length(c, name, info.size, n, &err);
      goto out;
    }
    goto fail;
  }
  if (want) {
    if (!c->output && !c->binary && !c->json) printf("%s: ", name);
    rc = write_params(c, &info, p, step, true);
  } else if (c->json) {
    printf("{\"step\":%llu}\n", (unsigned long long)step);
  } else {
    printf("%s: step %llu\n", name, (unsigned long long)step);
  }
  goto out;
fail:
  rc = cli_fail(c, rc, &err);
out:
  descent_info_free(&info);
  free(g);
  free(p);
  return rc;
}

static int cmd_pull(cli *c) {
  const char *name = c->args[0];
  descent_error err = {0};
  descent_info info;
  float *p = NULL;
  int rc = descent_info_get(c->d, name, &info, &err);
  if (rc < 0) {
    descent_info_free(&info);
    return cli_fail(c, rc, &err);
  }
  uint64_t step = 0;
  if (!(p = malloc(info.size * sizeof *p + 1))) {
    rc = cli_usage(c, "out of memory");
  } else if ((rc = c->dtype == DESCENT_FLOAT32
                        ? descent_pull(c->d, name, p, info.size, c->wait_for_step, c->timeout_ms, &step, &err)
                        : descent_pull_dtype(c->d, name, p, info.size, c->dtype, c->wait_for_step, c->timeout_ms,
                                             &step, &err)) < 0) {
    rc = cli_fail(c, rc, &err);
  } else {
    descent_from_dtype(c->dtype, p, p, info.size); /* widened in place (float32: nothing to do) */
    rc = write_params(c, &info, p, step, true);
    if (rc == EXIT_OK && c->wait_for_step >= 0 && step < (uint64_t)c->wait_for_step) {
      /* the long-poll timed out: the parameters printed are older than asked for */
      descent_error e = {0};
      snprintf(e.code, sizeof e.code, "wait_timeout");
      snprintf(e.message, sizeof e.message, "'%s' is at step %llu, not yet %lld, after --timeout-ms %ld", name,
               (unsigned long long)step, (long long)c->wait_for_step, c->timeout_ms);
      cli_fail(c, 0, &e);
      rc = EXIT_WAIT_TIMEOUT;
    }
  }
  free(p);
  descent_info_free(&info);
  return rc;
}

/* ---- rows of sparse tensors ---------------------------------------------------------------- */

/* "3,17,42" into *rows (new); 0, or a usage error. */
static int parse_rows(const cli *c, const char *s, uint64_t **rows, size_t *k) {
  size_t cap = 1;
  for (const char *p = s; *p; p++) cap += *p == ',';
  *rows = malloc(cap * sizeof **rows);
  *k = 0;
  if (!*rows) return cli_usage(c, "out of memory");
  const char *p = s;
  while (*p) {
    char *end;
    if (*p < '0' || *p > '9') break;
    unsigned long long v = strtoull(p, &end, 10);
    (*rows)[(*k)++] = v;
    p = end;
    if (*p == ',') p++;
    else if (*p) break;
  }
  if (*p || !*k) {
    free(*rows);
    *rows = NULL;
    return cli_usage(c, "ROWS: expected row ids separated by commas (3,17,42), got '%.60s'", s);
  }
  return 0;
}

/* The sparse tensor `tensor` of info: its D, or 0 with a usage error printed. */
static size_t sparse_dim(const cli *c, const descent_info *info, const char *name, const char *tensor) {
  for (size_t i = 0; i < info->ntensors; i++)
    if (!strcmp(info->tensors[i].name, tensor) && info->tensors[i].sparse && info->tensors[i].ndim == 2)
      return (size_t)info->tensors[i].shape[1];
  cli_usage(c, "'%s' has no sparse tensor '%s'", name, tensor);
  return 0;
}

/* k rows of D values: --binary float32, --output one number a line, --json
 * {"step", "rows", "values"}, else the step and a line per row. */
static int write_rows(const cli *c, const uint64_t *rows, size_t k, size_t D, const float *v, uint64_t step) {
  FILE *f = io_open_out(c->output, c->binary);
  if (!f) return cli_usage(c, "%s: cannot write", c->output);
  char b[32];
  if (c->binary) {
    io_write_binary(f, v, k * D);
  } else if (c->json) {
    fprintf(f, "{\"step\":%llu,\"rows\":[", (unsigned long long)step);
    for (size_t i = 0; i < k; i++) fprintf(f, "%s%llu", i ? "," : "", (unsigned long long)rows[i]);
    fprintf(f, "],\"values\":[");
    for (size_t i = 0; i < k; i++) {
      if (i) fputc(',', f);
      io_write_array(f, v + i * D, D);
    }
    fprintf(f, "]}\n");
  } else if (c->output) {
    for (size_t i = 0; i < k * D; i++) {
      io_float(b, sizeof b, v[i]);
      fprintf(f, "%s\n", b);
    }
  } else {
    fprintf(f, "step %llu\n", (unsigned long long)step);
    for (size_t i = 0; i < k; i++) {
      fprintf(f, "%llu:", (unsigned long long)rows[i]);
      for (size_t j = 0; j < D; j++) {
        io_float(b, sizeof b, v[i * D + j]);
        fprintf(f, " %s", b);
      }
      fprintf(f, "\n");
    }
  }
  return io_close_out(f) ? cli_usage(c, "%s: write failed", c->output ? c->output : "stdout") : EXIT_OK;
}

static int cmd_rows(cli *c) {
  const char *name = c->args[0], *tensor = c->args[1];
  descent_error err = {0};
  descent_info info = {0};
  uint64_t *rows = NULL, step = 0;
  float *v = NULL;
  size_t k = 0, D;
  int rc = descent_info_get(c->d, name, &info, &err);
  if (rc < 0) {
    rc = cli_fail(c, rc, &err);
  } else if (!(D = sparse_dim(c, &info, name, tensor))) {
    rc = EXIT_USAGE;
  } else if (!(rc = parse_rows(c, c->args[2], &rows, &k))) {
    if (!(v = malloc(k * D * sizeof *v + 1))) rc = cli_usage(c, "out of memory");
    else if ((rc = descent_pull_rows(c->d, name, tensor, rows, k, v, &step, &err)) < 0) rc = cli_fail(c, rc, &err);
    else rc = write_rows(c, rows, k, D, v, step);
  }
  free(rows);
  free(v);
  descent_info_free(&info);
  return rc;
}

static int cmd_push_rows(cli *c) {
  const char *name = c->args[0], *tensor = c->args[1];
  descent_error err = {0};
  descent_info info = {0};
  uint64_t *rows = NULL, step = 0;
  float *g = NULL, *out = NULL;
  size_t k = 0, n = 0, D;
  int rc = descent_info_get(c->d, name, &info, &err);
  if (rc < 0) {
    rc = cli_fail(c, rc, &err);
    goto out;
  }
  if (!(D = sparse_dim(c, &info, name, tensor))) {
    rc = EXIT_USAGE;
    goto out;
  }
  if ((rc = parse_rows(c, c->args[2], &rows, &k)) || (rc = read_floats(c, c->nargs > 3 ? c->args[3] : NULL, &g, &n)))
    goto out;
  if (n != k * D + info.size) {
    rc = cli_usage(c, "%s: %zu numbers; expected %zu (%zu rows of %zu) followed by the %zu dense gradient values", name,
                   n, k * D + info.size, k, D, info.size);
    goto out;
  }
  bool want = c->params || c->output;
  if (want && !(out = malloc(k * D * sizeof *out + 1))) {
    rc = cli_usage(c, "out of memory");
    goto out;
  }
  descent_push_opts o = DESCENT_PUSH_OPTS_INIT;
  o.worker = c->worker;
  o.step = c->step;
  o.loss = c->loss;
  o.idempotency_key = c->key;
  o.seq = c->seq;
  descent_rows r = {tensor, k, rows, g, out};
  if ((rc = descent_push_rows(c->d, name, g + k * D, info.size, &r, 1, &o, NULL, &step, &err)) < 0) {
    rc = cli_fail(c, rc, &err);
  } else if (want) {
    rc = write_rows(c, rows, k, D, out, step);
  } else if (c->json) {
    printf("{\"step\":%llu}\n", (unsigned long long)step);
  } else {
    printf("%s: step %llu\n", name, (unsigned long long)step);
  }
out:
  free(rows);
  free(g);
  free(out);
  descent_info_free(&info);
  return rc;
}

/* ---- save ----------------------------------------------------------------------------- */

static int cmd_save(cli *c) {
  const char *name = c->args[0];
  descent_error err = {0};
  uint64_t step = 0;
  int rc = descent_snapshot(c->d, name, &step, &err);
  if (rc < 0) return cli_fail(c, rc, &err);
  if (c->json) printf("{\"name\":\"%s\",\"step\":%llu,\"durable\":true}\n", name, (unsigned long long)step);
  else printf("saved %s at step %llu\n", name, (unsigned long long)step);
  return EXIT_OK;
}

/* ---- set ------------------------------------------------------------------------------ */

/* Settings that live at the top of a PATCH body; everything else is a hyperparameter. */
static bool top_level(const char *k) {
  static const char *const keys[] = {"max_staleness", "workers",        "min_workers", "round_timeout_ms",
                                     "worker_lease_ms", "clip_grad_norm", "schedule"};
  for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
    if (!strcmp(k, keys[i])) return true;
  return false;
}

static int cmd_set(cli *c) {
  const char *name = c->args[0];
  json_t *patch = NULL;
  if (c->patch) {
    if (c->nargs > 1) return cli_usage(c, "give either --patch JSON or KEY=VALUE pairs");
    patch = json_loads(c->patch, 0, NULL);
    if (!json_is_object(patch)) {
      json_decref(patch);
      return cli_usage(c, "--patch: not a JSON object");
    }
  } else {
    if (c->nargs < 2) return cli_usage(c, "nothing to set: give KEY=VALUE pairs (lr=0.01) or --patch JSON");
    patch = json_object();
    json_t *hyper = json_object();
    for (int i = 1; i < c->nargs; i++) {
      char *eq = strchr(c->args[i], '=');
      if (!eq || eq == c->args[i]) {
        json_decref(hyper);
        json_decref(patch);
        return cli_usage(c, "'%s': expected KEY=VALUE", c->args[i]);
      }
      char key[96];
      snprintf(key, sizeof key, "%.*s", (int)(eq - c->args[i]), c->args[i]);
      json_t *v = json_loads(eq + 1, JSON_DECODE_ANY, NULL); /* 0.01, true, [0.9,0.99], null */
      if (!v) v = json_string(eq + 1);                        /* "best", a word */
      json_object_set_new(top_level(key) ? patch : hyper, key, v);
    }
    if (json_object_size(hyper)) json_object_set_new(patch, "hyper", hyper);
    else json_decref(hyper);
  }
  char *body = json_dumps(patch, JSON_COMPACT), *desc = NULL;
  descent_error err = {0};
  int rc = body ? descent_patch(c->d, name, body, &desc, &err) : DESCENT_ENOMEM;
  free(body);
  if (rc < 0) {
    json_decref(patch);
    return cli_fail(c, rc, &err);
  }
  if (c->json) {
    print_json_text(desc);
  } else {
    json_t *o = parse(desc), *v;
    const char *k;
    printf("%s:", name);
    json_object_foreach(patch, k, v) {
      if (strcmp(k, "hyper")) print_value(k, json_object_get(o, k));
    }
    json_object_foreach(json_object_get(patch, "hyper"), k, v) print_value(k, json_object_get(json_object_get(o, "hyper"), k));
    printf("\n");
    json_decref(o);
  }
  json_decref(patch);
  descent_free(desc);
  return EXIT_OK;
}

/* ---- export, import ------------------------------------------------------------------ */

static int cmd_export(cli *c) {
  char *doc = NULL;
  size_t len = 0;
  descent_error err = {0};
  int rc = descent_state_export(c->d, c->args[0], &doc, &len, &err);
  if (rc < 0) return cli_fail(c, rc, &err);
  FILE *f = io_open_out(c->output, false);
  if (!f) {
    descent_free(doc);
    return cli_usage(c, "%s: cannot write", c->output);
  }
  fwrite(doc, 1, len, f);
  if (len && doc[len - 1] != '\n') fputc('\n', f);
  descent_free(doc);
  if (io_close_out(f) < 0) return cli_usage(c, "%s: write failed", c->output ? c->output : "stdout");
  return EXIT_OK;
}

static int cmd_import(cli *c) {
  const char *name = c->args[0], *path = c->nargs > 1 ? c->args[1] : NULL;
  char *doc;
  size_t len;
  if (io_read_all(path, &doc, &len) < 0) return cli_usage(c, "%s: cannot read", path ? path : "stdin");
  descent_error err = {0};
  int rc = descent_state_import(c->d, name, doc, len, &err);
  free(doc);
  if (rc < 0) return cli_fail(c, rc, &err);
  char *desc = NULL;
  if ((rc = descent_describe(c->d, name, &desc, &err)) < 0) return cli_fail(c, rc, &err);
  if (c->json) {
    print_json_text(desc);
  } else {
    json_t *o = parse(desc);
    printf("imported %s: %s, step %lld, %lld floats\n", name, json_string_value(json_object_get(o, "algorithm")),
           (long long)json_integer_value(json_object_get(o, "step")),
           (long long)json_integer_value(json_object_get(o, "size")));
    json_decref(o);
  }
  descent_free(desc);
  return EXIT_OK;
}

/* ---- ask, tell ------------------------------------------------------------------------ */

static int cmd_ask(cli *c) {
  const char *name = c->args[0];
  descent_error err = {0};
  descent_info info;
  int rc = descent_info_get(c->d, name, &info, &err);
  float *x = NULL;
  uint64_t id = 0;
  if (rc < 0) {
    rc = cli_fail(c, rc, &err);
  } else if (!(x = malloc(info.size * sizeof *x + 1))) {
    rc = cli_usage(c, "out of memory");
  } else if ((rc = descent_ask(c->d, name, x, info.size, &id, &err)) < 0) {
    rc = cli_fail(c, rc, &err);
  } else if (c->binary || c->output) {
    fprintf(stderr, "candidate %llu\n", (unsigned long long)id);
    rc = write_params(c, &info, x, 0, false);
  } else if (c->json) {
    printf("{\"candidate\":%llu,\"params\":", (unsigned long long)id);
    io_write_array(stdout, x, info.size);
    printf("}\n");
  } else {
    char b[32];
    printf("candidate %llu:", (unsigned long long)id);
    for (size_t i = 0; i < info.size; i++) {
      io_float(b, sizeof b, x[i]);
      printf(" %s", b);
    }
    printf("\n");
  }
  free(x);
  descent_info_free(&info);
  return rc;
}

static int cmd_tell(cli *c) {
  char *end;
  unsigned long long id = strtoull(c->args[1], &end, 10);
  if (!*c->args[1] || *end || !id) return cli_usage(c, "'%s': expected a candidate id (1, 2, ...)", c->args[1]);
  double loss = strtod(c->args[2], &end);
  if (!*c->args[2] || *end || !isfinite(loss)) return cli_usage(c, "'%s': expected a finite loss", c->args[2]);
  descent_error err = {0};
  int improved = 0;
  double best = 0;
  int rc = descent_tell(c->d, c->args[0], id, loss, &improved, &best, &err);
  if (rc < 0) return cli_fail(c, rc, &err);
  char l[32], b[32];
  io_double(l, sizeof l, loss);
  if (isfinite(best)) io_double(b, sizeof b, best);
  else snprintf(b, sizeof b, "null");
  if (c->json)
    printf("{\"candidate\":%llu,\"loss\":%s,\"improved\":%s,\"best_loss\":%s}\n", id, l, improved ? "true" : "false", b);
  else
    printf("candidate %llu: loss %s, %s (best loss %s)\n", id, l, improved ? "improved" : "not improved", b);
  return EXIT_OK;
}

/* ---- replicas ---------------------------------------------------------------------- */

/* An integer of o as text into buf, or "-" (null, absent). */
static const char *int_or_dash(json_t *v, char *buf, size_t cap) {
  if (!json_is_integer(v)) return "-";
  snprintf(buf, cap, "%lld", (long long)json_integer_value(v));
  return buf;
}

/* One line per member: id, Raft address, role, leader mark, applied index. */
static int print_cluster(cli *c, char *text) {
  if (c->json) {
    print_json_text(text);
    descent_free(text);
    return EXIT_OK;
  }
  json_t *o = parse(text), *arr = json_object_get(o, "members"), *m;
  size_t i;
  char nb[32], ab[32];
  printf("node %s, %s, term %lld, applied %lld\n", int_or_dash(json_object_get(o, "node_id"), nb, sizeof nb),
         json_string_value(json_object_get(o, "role")), (long long)json_integer_value(json_object_get(o, "term")),
         (long long)json_integer_value(json_object_get(o, "applied_index")));
  printf("%-6s %-24s %-8s %-7s %s\n", "ID", "RAFT ADDRESS", "ROLE", "LEADER", "APPLIED");
  json_array_foreach(arr, i, m) {
    json_t *ap = json_object_get(m, "applied_index");
    printf("%-6lld %-24s %-8s %-7s %s\n", (long long)json_integer_value(json_object_get(m, "id")),
           json_string_value(json_object_get(m, "address")), json_string_value(json_object_get(m, "role")),
           json_is_true(json_object_get(m, "leader")) ? "yes" : "", int_or_dash(ap, ab, sizeof ab));
  }
  json_decref(o);
  descent_free(text);
  return EXIT_OK;
}

static int cmd_cluster(cli *c) {
  char *text = NULL;
  descent_error err = {0};
  int rc = descent_cluster(c->d, &text, &err);
  if (rc < 0) return cli_fail(c, rc, &err);
  return print_cluster(c, text);
}

static int member_id(cli *c, const char *s, uint64_t *id) {
  char *end;
  unsigned long long v = strtoull(s, &end, 10);
  if (*end || v == 0) {
    fprintf(stderr, "descent: member id '%s': expected a positive integer\n", s);
    return EXIT_USAGE;
  }
  (void)c;
  *id = v;
  return EXIT_OK;
}

static int cmd_member_add(cli *c) {
  uint64_t id;
  int rc = member_id(c, c->args[0], &id);
  if (rc != EXIT_OK) return rc;
  char *text = NULL;
  descent_error err = {0};
  if ((rc = descent_member_add(c->d, id, c->args[1], &text, &err)) < 0) return cli_fail(c, rc, &err);
  return print_cluster(c, text);
}

static int cmd_member_remove(cli *c) {
  uint64_t id;
  int rc = member_id(c, c->args[0], &id);
  if (rc != EXIT_OK) return rc;
  char *text = NULL;
  descent_error err = {0};
  if ((rc = descent_member_remove(c->d, id, &text, &err)) < 0) return cli_fail(c, rc, &err);
  return print_cluster(c, text);
}

/* ---- the table -------------------------------------------------------------------------- */

const cli_cmd cli_commands[] = {
    {"create", cmd_create, "SPEC|FILE|-", "create an instance from a JSON spec",
     "SPEC is the create body of the API (inline JSON starting with '{', a file, or - for stdin), e.g.\n"
     "  descent create '{\"name\":\"m\",\"algorithm\":\"adam\",\"hyper\":{\"lr\":0.001},\n"
     "                  \"tensors\":[{\"name\":\"W\",\"shape\":[10,785],\"init\":{\"normal\":{\"std\":0.01,\"seed\":1}}}]}'\n"
     "With several daemons in --url the instance is sharded over them (proto/sharding.md).",
     "", 1, 1},
    {"list", cmd_list, "", "list the instances",
     "One line per instance: algorithm, mode, step, size and workers seen.  Sharded: the size of the\n"
     "whole instance, and the shards' steps when they differ.",
     "", 0, 0},
    {"show", cmd_show, "NAME", "show an instance's configuration and status",
     "Hyperparameters, run-time settings, tensors (shape, offset, count), workers seen and, when\n"
     "sharded, each shard's range and step.",
     "", 1, 1},
    {"push", cmd_push, "NAME [FILE|-]", "push a gradient (every tensor in creation order)",
     "The gradient is read from FILE or stdin: text numbers separated by white space or commas (a\n"
     "JSON array works too), or float32 bytes with --binary.  Prints the new step; with --params\n"
     "(or --output) also the new parameters, in the format pull uses.  --dtype bfloat16 (or float16)\n"
     "sends the values rounded to that type, half the bytes, and receives the parameters in it.",
     "bwslkqPod", 1, 2},
    {"pull", cmd_pull, "NAME", "print the parameters",
     "Prints the step and each tensor's values; --json prints {\"step\", \"params\": {tensor: [...]}};\n"
     "--output FILE writes the values alone (text: one number a line, readable by push; or float32\n"
     "with --binary).  --wait-for-step N long-polls until the instance reaches step N or --timeout-ms\n"
     "passes (then the current, older parameters are still printed, and the exit code is 5).\n"
     "--dtype bfloat16 (or float16) receives them rounded to that type (half the bytes).",
     "bWTod", 1, 1},
    {"rows", cmd_rows, "NAME TENSOR ROWS", "print rows of a sparse tensor",
     "ROWS are row ids separated by commas: `descent rows m E 3,17,42` prints the step and a line per\n"
     "row (rows never touched show their initial values); --json prints {\"step\", \"rows\", \"values\"};\n"
     "--output FILE writes the values alone (one number a line; float32 with --binary).",
     "bo", 3, 3},
    {"push-rows", cmd_push_rows, "NAME TENSOR ROWS [FILE|-]", "push a gradient by rows of a sparse tensor",
     "FILE (or stdin) holds the k x D gradient values of the k ROWS (ids separated by commas; repeats\n"
     "are applied as torch applies a sparse gradient), then, if the instance has dense tensors,\n"
     "their gradient (every dense tensor in creation order).  Other sparse tensors get no rows.\n"
     "Prints the new step; with --params (or --output) the rows' new values, as rows prints them.",
     "bwslkqPo", 3, 4},
    {"set", cmd_set, "NAME KEY=VALUE...", "change hyperparameters or run-time settings",
     "e.g. `descent set m lr=0.0005 betas=[0.9,0.99]` or `descent set m clip_grad_norm=1`.  VALUE is\n"
     "JSON (a number, true/false, an array) or else a string.  max_staleness, workers, min_workers,\n"
     "round_timeout_ms, worker_lease_ms, clip_grad_norm and schedule are settings; any other KEY is\n"
     "a hyperparameter.  --patch JSON sends a whole PATCH body instead.",
     "p", 1, 64},
    {"export", cmd_export, "NAME", "write the whole state (parameters, buffers, step) as JSON",
     "The document of GET /v1/optimizers/NAME/state, to stdout or --output.  Sharded: gathered into\n"
     "the one document a single daemon would write; refused (exit 4) unless every shard is at one step.",
     "o", 1, 1},
    {"import", cmd_import, "NAME [FILE|-]", "create or replace instance NAME from an exported state",
     "Reads a state document (from export) from FILE or stdin and PUTs it as NAME, whatever instance it\n"
     "was exported from (as Redis RESTORE key): `descent export m | descent import m-copy` copies m.\n"
     "An instance NAME that exists is replaced.  Sharded: the document is\n"
     "split over the shards, which all take its step: this is how shards that disagree are brought\n"
     "back in line (proto/sharding.md).",
     "", 1, 2},
    {"save", cmd_save, "NAME", "snapshot an instance now, durably",
     "Asks the daemon for a snapshot of NAME (POST /v1/optimizers/NAME/snapshot) and returns once it is\n"
     "written and fsynced: after a crash or kill -9 the daemon restarts from it (or a later one).  Prints\n"
     "the step it holds.  Refused (exit 2, no_data_dir) by a daemon started without --data-dir.",
     "", 1, 1},
    {"delete", cmd_delete, "NAME", "delete an instance and its snapshot", "Deletes it on every daemon in --url.",
     "", 1, 1},
    {"ask", cmd_ask, "NAME", "random search: ask for a candidate",
     "Prints the candidate's id and values (--binary or --output: the values alone, the id on stderr).", "bo", 1, 1},
    {"tell", cmd_tell, "NAME CANDIDATE LOSS", "random search: tell a candidate's loss",
     "Reports whether the candidate became the best, and the best loss so far.", "", 3, 3},
    {"cluster", cmd_cluster, "", "show the replica group (descentd --cluster)",
     "One line per member: id, Raft address, role, whether it leads, applied index (GET /v1/cluster of\n"
     "the first --url).", "", 0, 0},
    {"member-add", cmd_member_add, "ID ADDRESS", "add a member to the replica group",
     "ADDRESS is its Raft HOST:PORT; start it first with descentd --join --node-id ID.  Returns once it\n"
     "has caught up and votes (the leader does it; a follower's 307 is followed).", "", 2, 2},
    {"member-remove", cmd_member_remove, "ID", "remove a member from the replica group",
     "Returns once the leader has committed the change.", "", 1, 1},
    {NULL, NULL, NULL, NULL, NULL, NULL, 0, 0},
};
