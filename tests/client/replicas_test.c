/* replicas_test: libdescent on a real three-member Raft group on loopback
 * (descentd --node-id --cluster): the comma list is recognised as one group
 * (and a list mixing two members with a plain daemon is refused, while
 * "m1|m2|m3,plain" shards over the group and the daemon), four threads
 * push one-hot gradients without keys of their own while the leader is
 * killed -9, and every push is applied exactly once (exact sums and step),
 * the survivors bit-identical.  Daemons are started from the test's main
 * thread (daemon.h); the pushing threads only use their own handles.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "client_test.h"
#include "daemon.h"

#define MEMBERS 3
#define WRITERS 4

static test_daemon dm[MEMBERS];

/* n free TCP ports on 127.0.0.1 (bound together, then released) */
static void free_ports(int *ports, int n) {
  int fds[MEMBERS];
  for (int i = 0; i < n; i++) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    fds[i] = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fds[i], 0);
    ck_assert_int_eq(bind(fds[i], (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(getsockname(fds[i], (struct sockaddr *)&a, &len), 0);
    ports[i] = ntohs(a.sin_port);
  }
  for (int i = 0; i < n; i++) close(fds[i]);
}

static void start_group(void) {
  int ports[MEMBERS];
  free_ports(ports, MEMBERS);
  char cluster[256], id[MEMBERS][16];
  size_t o = 0;
  for (int i = 0; i < MEMBERS; i++)
    o += (size_t)snprintf(cluster + o, sizeof cluster - o, "%s%d=127.0.0.1:%d", i ? "," : "", i + 1, ports[i]);
  for (int i = 0; i < MEMBERS; i++) {
    snprintf(id[i], sizeof id[i], "%d", i + 1);
    const char *extra[] = {"--node-id", id[i], "--cluster", cluster, "--election-timeout", "400",
                           "--snapshot-interval", "0", NULL};
    test_daemon_start(&dm[i], extra);
  }
}

static void members_url(char *out, size_t cap, char sep, int skip) {
  size_t o = 0;
  out[0] = 0;
  for (int i = 0; i < MEMBERS; i++)
    if (i != skip) o += (size_t)snprintf(out + o, cap - o, "%s%s", o ? (char[]){sep, 0} : "", dm[i].url);
}

/* The leader's node id, once the member the handle asks names one. */
static int leader_id(descent *d) {
  for (int tries = 0; tries < 300; tries++) {
    char *js = NULL;
    descent_error err = {0};
    int id = 0;
    if (descent_cluster(d, &js, &err) == 0) {
      json_t *root = json_loads(js, 0, NULL);
      id = (int)json_integer_value(json_object_get(root, "leader"));
      json_decref(root);
    }
    descent_free(js);
    if (id) return id;
    nanosleep(&(struct timespec){0, 50 * 1000000L}, NULL);
  }
  ck_abort_msg("the group elected no leader");
  return 0;
}

typedef struct writer {
  int i, pushes;
  const char *url;
  volatile int done;
  char error[700];
} writer;

static void *push_loop(void *arg) {
  writer *w = arg;
  descent_error err = {0};
  descent *d = descent_open(w->url, NULL, &err);
  if (!d) {
    snprintf(w->error, sizeof w->error, "open: %s: %s", err.code, err.message);
    return NULL;
  }
  float g[WRITERS] = {0}, p[WRITERS];
  g[w->i] = 1;
  for (int k = 0; k < w->pushes; k++) {
    int rc = descent_push(d, "f", g, WRITERS, NULL, p, NULL, &err);
    if (rc == 0 && p[w->i] > -(float)(k + 1)) rc = -100; /* its own pushes are in the reply */
    if (rc) {
      snprintf(w->error, sizeof w->error, "push %d: rc %d %s: %s", k, rc, err.code, err.message);
      break;
    }
    w->done = k + 1;
  }
  descent_close(d);
  return NULL;
}

START_TEST(test_failover_exactly_once) {
  start_group();
  char comma[256], bars[256];
  members_url(comma, sizeof comma, ',', -1);
  members_url(bars, sizeof bars, '|', -1);
  descent_error err = {0};
  descent *d = descent_open(comma, NULL, &err);
  ck_assert_msg(d, "open %s: %s", comma, err.message);
  ck_assert_uint_eq(descent_shards(d), 1); /* one group, not three shards */
  ck_assert_uint_eq(descent_shard_members(d, 0), MEMBERS);
  int lead = leader_id(d);
  OK(descent_create(d, "{\"name\": \"f\", \"algorithm\": \"sgd\", \"hyper\": {\"lr\": 1}, "
                       "\"tensors\": [{\"name\": \"w\", \"shape\": [4]}]}", NULL, &err), &err);
  int pushes = client_test_quick() ? 10 : 25;
  writer w[WRITERS];
  pthread_t th[WRITERS];
  for (int i = 0; i < WRITERS; i++) {
    w[i] = (writer){.i = i, .pushes = pushes, .url = bars};
    ck_assert_int_eq(pthread_create(&th[i], NULL, push_loop, &w[i]), 0);
  }
  for (int total = 0; total < WRITERS * pushes / 3;) {
    nanosleep(&(struct timespec){0, 5 * 1000000L}, NULL);
    total = 0;
    for (int i = 0; i < WRITERS; i++) total += w[i].done + (w[i].error[0] ? pushes : 0);
  }
  test_daemon_kill(&dm[lead - 1]); /* kill -9 the leader mid-push */
  for (int i = 0; i < WRITERS; i++) pthread_join(th[i], NULL);
  for (int i = 0; i < WRITERS; i++) ck_assert_msg(!w[i].error[0], "writer %d: %s", i, w[i].error);
  float p[WRITERS];
  uint64_t step = 0;
  OK(descent_pull(d, "f", p, WRITERS, -1, 0, &step, &err), &err); /* through the new leader */
  ck_assert_int_ne(leader_id(d), lead);
  for (int i = 0; i < WRITERS; i++) ck_assert_float_eq(p[i], -(float)pushes); /* none lost, none doubled */
  ck_assert_uint_eq(step, (uint64_t)(WRITERS * pushes));
  descent_close(d);
  /* the survivors hold the same state (each read locally, once it applied the last step) */
  for (int i = 0; i < MEMBERS; i++) {
    if (i == lead - 1) continue;
    descent *m = descent_open(dm[i].url, NULL, &err);
    ck_assert_ptr_nonnull(m);
    descent_set_option(m, DESCENT_OPT_READ_LEADER, 0);
    float q[WRITERS];
    OK(descent_pull(m, "f", q, WRITERS, (int64_t)step, 10000, &step, &err), &err);
    ck_assert_int_eq(memcmp(p, q, sizeof p), 0);
    descent_close(m);
  }
  /* a list that mixes two members of the group with a plain daemon is refused at open */
  test_daemon plain;
  test_daemon_start(&plain, NULL);
  char mixed[320];
  int a = lead == 1 ? 1 : 0, b = lead == 3 ? 1 : 2; /* two live members */
  snprintf(mixed, sizeof mixed, "%s,%s,%s", dm[a].url, dm[b].url, plain.url);
  ck_assert_ptr_null(descent_open(mixed, NULL, &err));
  ck_assert_str_eq(err.code, "invalid_argument");
  ck_assert_ptr_nonnull(strstr(err.message, "one replica group"));
  /* "m1|m2|m3,plain": two shards, the first the group (its dead member skipped) */
  char sharded[400];
  snprintf(sharded, sizeof sharded, "%s,%s", bars, plain.url);
  descent *s2 = descent_open(sharded, NULL, &err);
  ck_assert_msg(s2, "open %s: %s", sharded, err.message);
  ck_assert_uint_eq(descent_shards(s2), 2);
  ck_assert_uint_eq(descent_shard_members(s2, 0), MEMBERS);
  ck_assert_uint_eq(descent_shard_members(s2, 1), 1);
  OK(descent_create(s2, "{\"name\": \"s\", \"algorithm\": \"sgd\", \"hyper\": {\"lr\": 1}, "
                        "\"tensors\": [{\"name\": \"w\", \"shape\": [4]}]}", NULL, &err), &err);
  float g4[4] = {1, 2, 3, 4}, p4[4];
  OK(descent_push(s2, "s", g4, 4, NULL, p4, NULL, &err), &err);
  OK(descent_pull(s2, "s", p4, 4, -1, 0, NULL, &err), &err);
  for (int i = 0; i < 4; i++) ck_assert_float_eq(p4[i], -g4[i]);
  descent_close(s2);
  descent *pl = descent_open(plain.url, NULL, &err); /* the plain daemon holds the second half */
  ck_assert_ptr_nonnull(pl);
  float half[2];
  OK(descent_pull(pl, "s", half, 2, -1, 0, NULL, &err), &err);
  ck_assert_float_eq(half[0], -3);
  ck_assert_float_eq(half[1], -4);
  descent_close(pl);
  test_daemon_cleanup(&plain);
  for (int i = 0; i < MEMBERS; i++) test_daemon_cleanup(&dm[i]);
}
END_TEST

START_TEST(test_member_api_refusals) {
  descent_error err = {0};
  ck_assert_ptr_null(descent_open_members(NULL, 0, NULL, &err));
  const char *bad[] = {"http://a,http://b"};
  ck_assert_ptr_null(descent_open_members(bad, 1, NULL, &err));
  ck_assert_str_eq(err.code, "invalid_argument");
  const char *two[] = {"http://127.0.0.1:1", "http://127.0.0.1:2"};
  descent *d = descent_open_members(two, 2, NULL, &err);
  ck_assert_ptr_nonnull(d);
  ck_assert_uint_eq(descent_shards(d), 1);
  ck_assert_uint_eq(descent_shard_members(d, 0), 2);
  /* both members refuse connections: retried for the failover time, then reported */
  descent_set_option(d, DESCENT_OPT_FAILOVER_MS, 200);
  char *js = NULL;
  ck_assert_int_eq(descent_cluster(d, &js, &err), DESCENT_ECONNECT);
  descent_close(d);
}
END_TEST

Suite *suite_replicas(void) {
  Suite *s = suite_create("replicas");
  TCase *tc = tcase_create("replicas");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_failover_exactly_once);
  tcase_add_test(tc, test_member_api_refusals);
  suite_add_tcase(s, tc);
  return s;
}
