"""test_replicas_partition: cut the leader of three replicas away from the
other two (each daemon on a simulated host of its own, network namespaces:
bench/cluster/netns.sh; the cut is a pair of blackhole routes between the
daemon hosts, the client's host still reaches all three).

- the minority (the old leader) never acknowledges a write: 503
  no_leader or leadership_lost, and once it has stepped down it says so in
  GET /v1/cluster and still serves reads;
- the majority elects a leader and acknowledges pushes;
- healing converges: every member exports the same bytes, and the state is
  exactly the acknowledged pushes (SGD, lr 1, one coordinate: -count), none
  lost, none from the minority.

Skipped, saying why, where network namespaces cannot be made.
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

sys.path.insert(0, os.path.join(harness.ROOT, "bench", "cluster"))
import cluster  # noqa: E402

RAFT_PORT = 7100
PUSH = json.dumps({"grads": {"w": [1, 0]}}).encode()
JSON = ("Content-Type: application/json",)


class Partition(unittest.TestCase):
    def setUp(self):
        try:
            cluster.check()
        except cluster.Unavailable as e:
            self.skipTest(str(e))
        self.c = cluster.Cluster("dscraft", 3, 1)
        self.addCleanup(self.c.close)
        members = ",".join("%d=%s:%d" % (k + 1, cluster.daemon_ip(k), RAFT_PORT) for k in range(3))
        self.dirs = [tempfile.mkdtemp(prefix="descent-part-") for _ in range(3)]
        for d in self.dirs:
            self.addCleanup(shutil.rmtree, d, True)
        self.urls = [self.c.start_daemon(k, harness.DESCENTD, ["--data-dir", self.dirs[k], "--node-id", str(k + 1),
                                                               "--cluster", members, "--election-timeout", "400"])
                     for k in range(3)]

    def http(self, k, method, path, body=None, headers=()):
        st, data = self.c.http(0, method, self.urls[k] + path, body, headers, timeout=30)
        return st, (json.loads(data) if data.startswith(b"{") else data)

    def view(self, k):
        st, v = self.http(k, "GET", "/v1/cluster")
        self.assertEqual(st, 200, v)
        return v

    def leader_among(self, ks, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            views = [self.view(k) for k in ks]
            ids = {v["leader"] for v in views}
            if len(ids) == 1 and None not in ids and ids <= {k + 1 for k in ks} and all(v["leader_http"] for v in views):
                return ids.pop() - 1
            self.assertLess(time.monotonic(), deadline, views)
            time.sleep(0.1)

    def push(self, k, key):
        return self.http(k, "POST", "/v1/optimizers/p/step?params=none", PUSH, JSON + ("Idempotency-Key: " + key,))

    def cut(self, lead, add):
        verb = "add" if add else "del"
        for k in range(3):
            if k == lead:
                continue
            for a, b in ((lead, k), (k, lead)):
                subprocess.run(["ip", "netns", "exec", self.c.ns("d", a), "ip", "route", verb, "blackhole",
                                cluster.daemon_ip(b) + "/32"], check=True)

    def test_partition_heals(self):
        lead = self.leader_among([0, 1, 2])
        spec = {"name": "p", "algorithm": "sgd", "hyper": {"lr": 1}, "tensors": [{"name": "w", "shape": [2]}]}
        st, body = self.http(lead, "POST", "/v1/optimizers", json.dumps(spec).encode(), JSON)
        self.assertEqual(st, 201, body)
        acked = 0
        for i in range(5):
            st, body = self.push(lead, "a%d" % i)
            self.assertEqual(st, 200, body)
            acked += 1
        self.cut(lead, True)
        rest = [k for k in range(3) if k != lead]
        # the minority: never a 200, and it steps down
        deadline = time.monotonic() + 30
        i = 0
        while True:
            st, body = self.push(lead, "m%d" % i)
            i += 1
            self.assertNotEqual(st, 200, body)
            self.assertEqual(st, 503, body)
            self.assertIn(body["error"]["code"], ("no_leader", "leadership_lost"))
            if self.view(lead)["role"] != "leader":
                break
            self.assertLess(time.monotonic(), deadline)
        self.assertIsNone(self.view(lead)["leader"])
        st, body = self.http(lead, "GET", "/v1/optimizers/p/params")
        self.assertEqual((st, body["params"]["w"]), (200, [-float(acked), 0.0]))  # reads go on
        # the majority elects a leader and serves
        new = self.leader_among(rest)
        for j in range(5):
            st, body = self.push(new, "b%d" % j)
            self.assertEqual(st, 200, body)
            acked += 1
        st, body = self.push(lead, "m-late")
        self.assertEqual((st, body["error"]["code"]), (503, "no_leader"))
        # heal: one group again, identical, exactly the acknowledged pushes
        self.cut(lead, False)
        deadline = time.monotonic() + 30
        while True:
            views = [self.view(k) for k in range(3)]
            if len({v["leader"] for v in views}) == 1 and len({v["applied_index"] for v in views}) == 1 \
                    and views[0]["leader"] is not None:
                states = [self.http(k, "GET", "/v1/optimizers/p/state")[1] for k in range(3)]
                if states[0] == states[1] == states[2]:
                    break
            self.assertLess(time.monotonic(), deadline, views)
            time.sleep(0.1)
        self.assertEqual(states[0]["params"]["w"], [-float(acked), 0.0])
        self.assertEqual(states[0]["step"], acked)
        print("\n  partition: %d minority writes refused, %d acknowledged in all, healed" % (i + 1, acked))


if __name__ == "__main__":
    unittest.main()
