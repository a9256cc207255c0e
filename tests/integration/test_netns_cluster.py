"""test_netns_cluster: a sharded, sync run on simulated hosts is bit-identical
to one daemon on loopback (issue 17, part 4).

Two daemons and two workers, each in a network namespace of its own, joined
by shaped links (bench/cluster/netns.sh, bench/cluster/cluster.py); one
10^5-parameter Adam instance (amsgrad, weight decay, seeded inits, two
tensors, one split over the shards) range-sharded over the two daemons by
libdescent; 2 workers in sync mode for a few rounds, each gradient computed
from the parameters it received (bench/cluster/cluster_worker.c, --grad
dynamic), so any difference would grow.  The same run against one daemon on
127.0.0.1 must give the same parameters and the same gathered state
document (every optimizer buffer), byte for byte, and the bytes must really
have crossed the simulated links.

Skipped, saying why, where network namespaces cannot be made (not root, no
iproute2, a container without CAP_NET_ADMIN).  Everything is removed by pid
and by namespace name, also when an assertion fails.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import harness

sys.path.insert(0, os.path.join(harness.ROOT, "bench", "cluster"))
import cluster  # noqa: E402

N = 100000
ROUNDS = harness.quick(6, 4)
WORKERS = 2
SPEC = {"name": "nc", "algorithm": "adam", "hyper": {"lr": 0.001, "weight_decay": 0.01, "amsgrad": True},
        "mode": "sync", "workers": WORKERS,
        "tensors": [{"name": "W", "shape": [N - 1000], "init": {"normal": {"std": 0.1, "seed": 7}}},
                    {"name": "b", "shape": [1000], "init": {"uniform": {"low": -0.1, "high": 0.1, "seed": 3}}}]}


def worker_binary():
    for b in (harness.BUILD, "build"):
        p = os.path.join(harness.ROOT, b, "bench", "cluster_worker")
        if os.access(p, os.X_OK):
            return p
    return None


class NetnsClusterTest(unittest.TestCase):
    def setUp(self):
        self.worker = worker_binary()
        if not self.worker:
            self.skipTest("build/bench/cluster_worker is not built (make build/bench/cluster_worker)")
        try:
            cluster.check()
        except cluster.Unavailable as e:
            self.skipTest("network namespaces unavailable: %s" % e)
        self.tmp = tempfile.mkdtemp(prefix="descent-netns-")
        self.procs = []
        self.c = None
        self.d = None

    def tearDown(self):
        try:
            for p in self.procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            if self.d:
                self.d.stop()
        finally:
            if self.d:
                self.d.cleanup()
            if self.c:
                prefix = self.c.prefix
                self.c.close()
                left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
                self.assertNotIn(prefix + "-", left, "namespaces left behind")
            shutil.rmtree(self.tmp, ignore_errors=True)

    def train(self, start, urls, tag):
        """Runs WORKERS sync workers (start(j, argv) starts worker j) through
        ROUNDS rounds; returns each worker's final parameters (bytes)."""
        procs = []
        for j in range(WORKERS):
            argv = [self.worker, "run", "--urls", urls, "--name", "nc", "--n", str(N), "--worker", str(j),
                    "--mode", "sync", "--grad", "dynamic", "--steps", str(ROUNDS),
                    "--params-out", os.path.join(self.tmp, "%s-%d.bin" % (tag, j))]
            procs.append(start(j, argv))
        self.procs += procs
        cluster.wait_ready(procs, timeout=60)
        res = cluster.go_and_collect(procs, timeout=120)
        for r in res:
            self.assertEqual(r["step"], ROUNDS, r)
            self.assertEqual(r["pushes"], ROUNDS, r)
        out = []
        for j in range(WORKERS):
            with open(os.path.join(self.tmp, "%s-%d.bin" % (tag, j)), "rb") as f:
                out.append(f.read())
        return out

    def test_sharded_sync_on_simulated_hosts_equals_one_daemon(self):
        spec = json.dumps(SPEC)
        # one daemon on loopback, its workers in this namespace
        self.d = harness.Daemon()
        root = lambda j, argv: subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,  # noqa: E731
                                                stderr=subprocess.PIPE, text=True)
        subprocess.run([self.worker, "create", "--urls", self.d.url, "--spec", spec], check=True)
        one = self.train(root, self.d.url, "one")
        one_state = os.path.join(self.tmp, "one.json")
        subprocess.run([self.worker, "export", "--urls", self.d.url, "--name", "nc", "--out", one_state], check=True)

        # two daemon hosts, two worker hosts
        self.c = cluster.Cluster("dsct", 2, WORKERS, rate="1gbit", delay="0.2ms")
        urls = ",".join(self.c.start_daemon(k, harness.DESCENTD, ["--log-level", "error"]) for k in range(2))
        self.c.run(0, [self.worker, "create", "--urls", urls, "--spec", spec])
        sharded = self.train(self.c.worker, urls, "ns")
        ns_state = os.path.join(self.tmp, "ns.json")
        self.c.run(0, [self.worker, "export", "--urls", urls, "--name", "nc", "--out", ns_state])

        self.assertEqual(len(one[0]), 4 * N)
        self.assertEqual(one[1], one[0], "the loopback workers received different parameters")
        self.assertEqual(sharded[1], sharded[0], "the sharded workers received different parameters")
        self.assertTrue(sharded[0] == one[0], "sharded parameters on simulated hosts differ from one daemon's")
        with open(one_state, "rb") as f:
            a = f.read()
        with open(ns_state, "rb") as f:
            b = f.read()
        self.assertIn(b'"step":%d,' % ROUNDS, a)
        for buf in (b"exp_avg", b"exp_avg_sq", b"max_exp_avg_sq"):
            self.assertIn(b'"' + buf + b'":{"W":[', a, "no %s in the state" % buf)
        self.assertEqual(len(a), len(b))
        self.assertTrue(a == b, "the gathered sharded state differs from one daemon's")

        # each daemon holds only its range: [0, N/2) and [N/2, N)
        for k, u in enumerate(urls.split(",")):
            st, body = self.c.http(1, "GET", u + "/v1/optimizers/nc")
            self.assertEqual(st, 200, body)
            desc = json.loads(body)
            self.assertEqual(desc["size"], N // 2, desc)
            self.assertEqual(desc["step"], ROUNDS, desc)
        # training moved the parameters (not a comparison of two untouched inits)
        fresh = {k: v for k, v in SPEC.items() if k not in ("mode", "workers")}
        fresh["name"] = "fresh"
        u0 = urls.split(",")[0]
        st, body = self.c.http(0, "POST", u0 + "/v1/optimizers", json.dumps(fresh).encode(),
                               ["Content-Type: application/json"])
        self.assertEqual(st, 201, body)
        st, init = self.c.http(0, "GET", u0 + "/v1/optimizers/fresh/params", headers=["Accept: application/octet-stream"])
        self.assertEqual((st, len(init)), (200, 4 * N))
        self.assertNotEqual(init, sharded[0], "the parameters did not move")

        # and the bytes went over the simulated links: every round sent each
        # worker's half-gradient to daemon 1 and its half of the parameters
        # back, through the switch's port towards d1 and out of d1's eth0
        port = subprocess.run(["ip", "netns", "exec", self.c.prefix + "-sw", "tc", "-s", "qdisc", "show", "dev", "d1"],
                              capture_output=True, text=True).stdout
        sent = int(port.split("Sent ")[1].split()[0])
        self.assertGreater(sent, ROUNDS * WORKERS * 4 * N // 2, port)


if __name__ == "__main__":
    unittest.main()
