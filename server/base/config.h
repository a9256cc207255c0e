/* config: descentd's options, declared once in a table that feeds
 * getopt_long, the DESCENT_<NAME> environment variables, --help and
 * docs/operations.md (descentd --help-markdown prints the table).
 * Loaded once in main before any thread starts; read-only afterwards, so
 * every thread reads it without a lock.  The strings belong to the config
 * (config_free releases them).
 */
#ifndef DESCENT_CONFIG_H
#define DESCENT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "errors.h"

typedef struct config {
  char *listen;             /* HOST:PORT */
  char *data_dir;           /* NULL: nothing is persisted */
  double snapshot_interval; /* seconds */
  double final_snapshot_timeout; /* seconds a clean stop retries its last snapshots */
  char *durability;         /* "snapshot" or "log" */
  char *token_file, *tls_cert, *tls_key;
  long threads;             /* HTTP worker threads */
  long max_body;            /* bytes */
  long max_body_memory;     /* bytes all request bodies in flight may hold together */
  char *log_level;
  long max_connections;
  long max_instances;
  long max_params;          /* floats over all instances: parameters + state */
  long connection_timeout;  /* seconds a connection may stay idle */
  long node_id;             /* replicas: this member's id (0: not a replica) */
  char *cluster;            /* replicas: ID=HOST:PORT,... (the members' Raft addresses) */
  long election_timeout;    /* replicas: Raft's election timeout, ms */
  long raft_snapshot_entries; /* replicas: entries between Raft snapshots */
  bool join;                /* replicas: join a running group (never bootstrap) */
  bool version, help, help_markdown, print_routes;
} config;

/* X(long name, kind, field, default, meta, help)
 * kinds: STR, NUM (double), INT (long, K/M/G suffixes), FLAG */
#define CONFIG_TABLE(X)                                                                        \
  X("listen", STR, listen, "127.0.0.1:8080", "HOST:PORT",                                      \
    "address to listen on; port 0 picks a free port (printed on stdout)")                      \
  X("data-dir", STR, data_dir, NULL, "DIR", "directory for snapshots; none: nothing persists") \
  X("snapshot-interval", NUM, snapshot_interval, "30", "SECONDS",                               \
    "how often changed instances are snapshotted; 0: no periodic snapshots (configuration "   \
    "changes, POST .../snapshot and a clean stop still write one)")                           \
  X("final-snapshot-timeout", NUM, final_snapshot_timeout, "10", "SECONDS",                    \
    "how long a clean stop retries snapshots it cannot write before exiting 74")               \
  X("durability", STR, durability, "snapshot", "MODE",                                         \
    "snapshot: changes since the last snapshot are lost to a crash; log: every acknowledged "  \
    "change is in an fsynced log first (needs --data-dir)")                                    \
  X("token-file", STR, token_file, NULL, "FILE",                                               \
    "bearer tokens, one per line (ro:TOKEN = read-only); none: no auth")                      \
  X("tls-cert", STR, tls_cert, NULL, "FILE", "PEM certificate: serve HTTPS")                   \
  X("tls-key", STR, tls_key, NULL, "FILE", "PEM private key for --tls-cert")                   \
  X("threads", INT, threads, "0", "N", "HTTP worker threads (0: one per CPU)")                 \
  X("max-body", INT, max_body, "512M", "BYTES", "largest request body (413 above)")           \
  X("max-body-memory", INT, max_body_memory, "0", "BYTES",                                     \
    "memory the bodies of all requests in flight may hold together; a body that would pass it is refused with 503 busy (0: the smaller of 4 x --max-body and a quarter of the physical memory)") \
  X("log-level", STR, log_level, "info", "LEVEL", "debug, info, warn or error")                \
  X("max-connections", INT, max_connections, "4096", "N", "simultaneous connections")          \
  X("max-instances", INT, max_instances, "1024", "N", "optimizer instances")                   \
  X("max-params", INT, max_params, "0", "N",                                                   \
    "floats held over all instances, parameters plus optimizer state (memory quota; 0: as many as fill half the physical memory)") \
  X("connection-timeout", INT, connection_timeout, "60", "SECONDS",                            \
    "idle connections are closed after this long")                                             \
  X("node-id", INT, node_id, "0", "ID",                                                     \
    "replicas: this member's id in --cluster (a positive integer; 0: not a replica)")        \
  X("cluster", STR, cluster, NULL, "ID=HOST:PORT,...",                                         \
    "replicas: every member's id and Raft address (needs --node-id and --data-dir)")         \
  X("election-timeout", INT, election_timeout, "1000", "MS",                                   \
    "replicas: Raft's election timeout (heartbeats every tenth of it)")                      \
  X("join", FLAG, join, NULL, NULL,                                                            \
    "replicas: join a running group (added with POST /v1/cluster/members) instead of bootstrapping --cluster") \
  X("raft-snapshot-entries", INT, raft_snapshot_entries, "512", "N",                           \
    "replicas: a Raft snapshot (every instance's state) after this many log entries; the log keeps a quarter of them behind it") \
  X("print-routes", FLAG, print_routes, NULL, NULL, "print the route table and exit")          \
  X("help-markdown", FLAG, help_markdown, NULL, NULL, "print the options as a Markdown table")  \
  X("version", FLAG, version, NULL, NULL, "print the version and exit")                        \
  X("help", FLAG, help, NULL, NULL, "print this help and exit")

/* Fills cfg from defaults, then DESCENT_* variables, then argv.  Returns 0,
 * or -E_BAD_REQUEST with a message naming the option. */
int config_load(config *cfg, int argc, char **argv, derr *e);
void config_free(config *cfg);
void config_usage(FILE *out);
void config_markdown(FILE *out);

#define DESCENT_VERSION "0.1.0"

#endif
