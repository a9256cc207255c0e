"""test_replicas_history: histories of invocations and completions against
three replicas, checked for linearizability by history_check.

- Kill9: 4 writers (distinct powers of two, keyed retries) and 2 readers
  (Descent-Read: leader) across a kill -9 of the leader: every read holds
  every push acknowledged before it began, nothing twice, one chain; at the
  end every acknowledged push is in the state exactly once, the survivors and
  the restarted member export the same bytes.
- Partition: the same workload run from a client host of its own while the
  leader is cut away from the other two (network namespaces, blackhole routes
  between the daemon hosts) and then healed.  Skipped where network
  namespaces cannot be made.
- CheckerOnReplicaHistories: made-up histories of a failover that the
  checker must reject: a lost update, a doubled push, a stale read from a
  deposed leader (and a valid one it must accept).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

import harness
import history_check as hc
from replica_history import Workload, from_json, to_json
from replicas import Group

sys.path.insert(0, os.path.join(harness.ROOT, "bench", "cluster"))
import cluster  # noqa: E402

N = 128  # 1536 distinct pushes
SPEC = {"name": "h", "algorithm": "sgd", "hyper": {"lr": 1.0}, "tensors": [{"name": "w", "shape": [N]}]}


def f32s(values):
    return hc.struct.pack("<%df" % len(values), *values)


def push(i, t0, t1, ids, retry=False):
    return {"op": "push", "gen": 0, "id": i, "start": t0, "end": t1, "ok": True, "retry": retry,
            "step": len(ids), "values": f32s(hc.values_of(ids, N))}


def read(t0, t1, ids=None, values=None):
    v = values if values is not None else hc.values_of(ids, N)
    return {"op": "read", "gen": 0, "start": t0, "end": t1, "step": None, "values": f32s(v)}


class CheckerOnReplicaHistories(unittest.TestCase):
    # leader A acknowledges 0 and 1, is killed at 2.0; B takes over, 2 is retried on B
    def test_valid_failover(self):
        h = [push(0, 0.0, 0.5, [0]), push(1, 0.1, 0.6, [0, 1]), read(0.7, 0.8, [0, 1]),
             push(2, 1.9, 3.0, [0, 1, 2], retry=True), read(3.1, 3.2, [0, 1, 2])]
        self.assertEqual(hc.check(h), [])

    def test_rejects_lost_update_across_failover(self):
        # B was elected without push 1, which A had acknowledged
        h = [push(0, 0.0, 0.5, [0]), push(1, 0.1, 0.6, [0, 1]),
             push(2, 1.9, 3.0, [0, 2], retry=True), read(3.1, 3.2, [0, 2])]
        v = hc.check(h)
        self.assertTrue(any("lost update" in x and "[1]" in x for x in v), v)

    def test_rejects_doubled_push(self):
        # the retry of 2 was applied again on B (no idempotency window replay)
        doubled = hc.values_of([0, 1, 2], N)
        doubled[0] += 16.0  # push 2 is 4^2 in slot 0
        h = [push(0, 0.0, 0.5, [0]), push(1, 0.1, 0.6, [0, 1]), read(3.1, 3.2, values=doubled)]
        v = hc.check(h)
        self.assertTrue(any("applied twice" in x for x in v), v)

    def test_rejects_stale_read_of_deposed_leader(self):
        # B acknowledged 2 and a read saw it; A, cut off but not yet stepped down, serves an older state
        h = [push(0, 0.0, 0.5, [0]), push(2, 1.0, 1.5, [0, 2]), read(1.6, 1.7, [0, 2]), read(1.8, 1.9, [0])]
        v = hc.check(h)
        self.assertTrue(any("stale read" in x for x in v), v)
        self.assertTrue(any("lost update" in x for x in v), v)


def final_check(test, events, errors, states):
    """The workload's history is valid, every acknowledged push is in the
    final state exactly once, and every member exported the same bytes."""
    test.assertEqual(errors, [])
    problems = hc.check(events)
    if problems:
        dump = os.path.join(tempfile.gettempdir(), "replica-history-%d.json" % os.getpid())
        with open(dump, "w") as f:
            f.write(to_json(events))
        problems.append("the history: %s" % dump)
    test.assertEqual(problems, [])
    ids = sorted(e["id"] for e in events if e["op"] == "push")
    test.assertEqual(len(ids), len(set(ids)))
    test.assertEqual(len(set(states)), 1, "members exported different states")
    doc = json.loads(states[0])
    test.assertEqual(doc["step"], len(ids))  # none applied twice or from nowhere
    test.assertEqual(hc.mask_of(ids), hc.decode(doc["params"]["w"])[0])  # exactly the acknowledged ones
    reads = sum(1 for e in events if e["op"] == "read")
    test.assertGreater(reads, 20)
    return len(ids), reads, sum(1 for e in events if e.get("retry"))


class Kill9(unittest.TestCase):
    def test_history_across_leader_kill9(self):
        g = Group(3)
        self.addCleanup(g.stop)
        st, body, _, _ = g.write("POST", "/v1/optimizers", SPEC)
        self.assertEqual(st, 201, body)
        old = g.wait_leader()
        w = Workload([("127.0.0.1", d.port) for d in g.live()], N)
        w.start()
        try:
            deadline = time.monotonic() + 30
            while w.acked() < 40 and time.monotonic() < deadline:
                time.sleep(0.01)
            t_kill = time.monotonic()
            g.kill9(old)
            while time.monotonic() < deadline:
                after = [e for e in list(w.events) if e["op"] == "push" and e["start"] > t_kill]
                if len(after) >= 40:
                    break
                time.sleep(0.01)
        finally:
            events = w.stop()
        first = min((e["end"] for e in events if e["op"] == "push" and e["start"] > t_kill), default=None)
        self.assertIsNotNone(first, "nothing acknowledged after the kill")
        g.wait_applied()
        states = [d.req("GET", "/v1/optimizers/h/state", raw=True)[1] for d in g.live()]
        g.restart(old)
        g.wait_applied()
        states.append(old.req("GET", "/v1/optimizers/h/state", raw=True)[1])
        pushes, reads, retries = final_check(self, events, w.errors, states)
        print("\n  kill -9: %d pushes (%d retried), %d reads checked; first push sent after the kill acked "
              "%.2f s after it" % (pushes, retries, reads, first - t_kill))


RAFT_PORT = 7100


class Partition(unittest.TestCase):
    def setUp(self):
        try:
            cluster.check()
        except cluster.Unavailable as e:
            self.skipTest(str(e))
        self.c = cluster.Cluster("dschist", 3, 1)
        self.addCleanup(self.c.close)
        members = ",".join("%d=%s:%d" % (k + 1, cluster.daemon_ip(k), RAFT_PORT) for k in range(3))
        dirs = [tempfile.mkdtemp(prefix="descent-hist-") for _ in range(3)]
        for d in dirs:
            self.addCleanup(shutil.rmtree, d, True)
        self.urls = [self.c.start_daemon(k, harness.DESCENTD, ["--data-dir", dirs[k], "--node-id", str(k + 1),
                                                               "--cluster", members, "--election-timeout", "400"])
                     for k in range(3)]

    def http(self, k, method, path, body=None, headers=()):
        st, data = self.c.http(0, method, self.urls[k] + path, body, headers, timeout=30)
        return st, data

    def view(self, k):
        st, v = self.http(k, "GET", "/v1/cluster")
        self.assertEqual(st, 200, v)
        return json.loads(v)

    def leader_among(self, ks, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            views = [self.view(k) for k in ks]
            ids = {v["leader"] for v in views}
            if len(ids) == 1 and None not in ids and ids <= {k + 1 for k in ks} and all(v["leader_http"] for v in views):
                return ids.pop() - 1
            self.assertLess(time.monotonic(), deadline, views)
            time.sleep(0.1)

    def cut(self, lead, add):
        verb = "add" if add else "del"
        for k in range(3):
            if k != lead:
                for a, b in ((lead, k), (k, lead)):
                    subprocess.run(["ip", "netns", "exec", self.c.ns("d", a), "ip", "route", verb, "blackhole",
                                    cluster.daemon_ip(b) + "/32"], check=True)

    def test_history_across_partition(self):
        lead = self.leader_among([0, 1, 2])
        st, body = self.http(lead, "POST", "/v1/optimizers", json.dumps(SPEC).encode(),
                             ("Content-Type: application/json",))
        self.assertEqual(st, 201, body)
        addrs = ",".join("%s:%d" % (cluster.daemon_ip(k), cluster.PORT) for k in range(3))
        p = self.c.worker(0, [sys.executable, os.path.join(harness.ROOT, "tests", "integration", "replica_history.py"),
                              str(N), addrs])
        self.assertEqual(p.stdout.readline().strip(), "ready")
        time.sleep(1.0)
        self.cut(lead, True)
        rest = [k for k in range(3) if k != lead]
        new = self.leader_among(rest)
        time.sleep(1.5)  # the majority serves
        self.cut(lead, False)
        deadline = time.monotonic() + 30
        while True:
            views = [self.view(k) for k in range(3)]
            if len({v["leader"] for v in views}) == 1 and views[0]["leader"] is not None:
                break
            self.assertLess(time.monotonic(), deadline, views)
            time.sleep(0.1)
        time.sleep(1.0)  # the healed group serves
        out, err = p.communicate("stop\n", timeout=120)
        lines = out.strip().splitlines()
        errors = json.loads(lines[-2])["errors"]
        events = from_json(lines[-1])
        deadline = time.monotonic() + 30
        while True:
            views = [self.view(k) for k in range(3)]
            if len({v["applied_index"] for v in views}) == 1:
                states = [self.http(k, "GET", "/v1/optimizers/h/state")[1] for k in range(3)]
                if len(set(states)) == 1:
                    break
            self.assertLess(time.monotonic(), deadline, views)
            time.sleep(0.1)
        pushes, reads, retries = final_check(self, events, errors, states)
        print("\n  partition: leader %d cut off, %d elected; %d pushes (%d retried), %d reads checked"
              % (lead + 1, new + 1, pushes, retries, reads))


if __name__ == "__main__":
    unittest.main()
