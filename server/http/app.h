/* app: the daemon's shared context, built by daemon.c at start and passed
 * to every handler through the request.  Read-only after start except the
 * atomics; each member is thread-safe on its own. */
#ifndef DESCENT_APP_H
#define DESCENT_APP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <uv.h>

#include "auth.h"
#include "bufpool.h"
#include "config.h"
#include "instance.h"
#include "kpool.h"
#include "registry.h"
#include "timers.h"

typedef struct persist persist;
typedef struct journal journal;
typedef struct http_server http_server;
typedef struct metrics metrics;
typedef struct replica replica;

typedef struct app {
  const config *cfg;
  uv_loop_t *loop;
  registry *reg;
  bufpool *pool;
  timers *tm;
  kpool *kp;
  instance_env env;
  persist *ps;   /* NULL without --data-dir */
  journal *jr;   /* --durability log: the change log; NULL in snapshot mode */
  auth *au;      /* NULL without --token-file */
  http_server *http;
  metrics *mx;
  replica *rp;   /* NULL unless --cluster: writes go through the Raft log */
  change_sink round_sink; /* --cluster: sync rounds' entries (env.round_changes) */
  atomic_bool stopping;
  double started; /* unix seconds */
} app;

#endif
