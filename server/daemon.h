/* daemon: descentd's life: start-up, the libuv loop, signals, periodic
 * snapshots and the graceful shutdown.
 *
 * Shutdown (SIGINT/SIGTERM): stop accepting; new requests get 503; every
 * waiting request is answered 503; in-flight requests finish (up to 10 s);
 * the HTTP server stops; every changed instance is snapshotted; exit 0.
 * A snapshot that cannot be written is retried for --final-snapshot-timeout
 * seconds; if some still fail, each is named in the log and the exit
 * status is DAEMON_EXIT_SNAPSHOT, so a supervisor can tell the stop lost
 * acknowledged steps.
 * Runs on the main thread, which is the loop thread.
 */
#ifndef DESCENT_DAEMON_H
#define DESCENT_DAEMON_H

#include "config.h"

#define DAEMON_EXIT_SNAPSHOT 74 /* EX_IOERR: a clean stop could not write every snapshot */

/* Runs until a signal stops it.  Returns the process exit code. */
int daemon_run(const config *cfg);

#endif
