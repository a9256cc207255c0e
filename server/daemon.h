/* daemon: descentd's life: start-up, the libuv loop, signals, periodic
 * snapshots and the graceful shutdown.
 *
 * Shutdown (SIGINT/SIGTERM): stop accepting; new requests get 503; every
 * waiting request is answered 503; in-flight requests finish (up to 10 s);
 * the HTTP server stops; every changed instance is snapshotted; exit 0.
 * Runs on the main thread, which is the loop thread.
 */
#ifndef DESCENT_DAEMON_H
#define DESCENT_DAEMON_H

#include "config.h"

/* Runs until a signal stops it.  Returns the process exit code. */
int daemon_run(const config *cfg);

#endif
