"""test_replicas_disk: one follower of three replicas runs out of disk.

Member 3's data dir is a tmpfs of its own (mounted here, unmounted at the
end), started after members 1 and 2 elected a leader, so it is a follower.
Once it holds the instance, a filler file takes every free byte of its
disk; then keyed pushes go on through the group: each is acknowledged (the
leader and the healthy follower are a majority), the two export the same
bytes holding exactly the acknowledged pushes (SGD lr 1, distinct powers of
two: none lost, none doubled).  The full member's libraft stops for good on
the failed write (role unavailable; the daemon logs it); the disk is freed,
the member restarted: it catches up and exports the same bytes again.
Skipped, saying why, where a tmpfs cannot be mounted.
"""
import os
import subprocess
import tempfile
import time
import unittest

import history_check as hc
from harness import Daemon
from replicas import ELECTION_MS, Client, Group, free_ports

N = 65536  # 256 KiB a push: the follower needs new log segments soon
PUSHES = 120
SPEC = {"name": "d", "algorithm": "sgd", "hyper": {"lr": 1.0}, "tensors": [{"name": "w", "shape": [N]}]}


class TwoThenOne(Group):
    """Group(3) whose members 1 and 2 elect a leader before member 3 starts
    (on data dir dir3)."""

    def __init__(self, dir3):
        self.ids = [1, 2, 3]
        self.raft_ports = free_ports(3)
        self.cluster = ",".join("%d=127.0.0.1:%d" % (i, p) for i, p in zip(self.ids, self.raft_ports))
        self.election_ms = ELECTION_MS
        self.extra = []
        self.members = {}
        self.dead = set()
        args = ("--cluster", self.cluster, "--election-timeout", str(ELECTION_MS), "--snapshot-interval", "0")
        for i in (1, 2):
            self.members[i] = Daemon("--node-id", str(i), *args)
        self.wait_leader()
        self.members[3] = Daemon("--node-id", "3", *args, data_dir=dir3)


def fill(path):
    """Writes a filler file until the disk is full; returns its size."""
    f = os.path.join(path, "filler")
    n = 0
    with open(f, "wb", buffering=0) as out:
        block = b"\xff" * 65536
        while True:
            try:
                n += out.write(block)
            except OSError:
                break
        while True:
            try:
                n += out.write(b"\xff" * 512)
            except OSError:
                break
    return n


class FullDisk(unittest.TestCase):
    def setUp(self):
        self.mnt = tempfile.mkdtemp(prefix="descent-fulldisk-")
        self.addCleanup(os.rmdir, self.mnt)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", self.mnt], capture_output=True, text=True)
        if r.returncode != 0:
            self.skipTest("cannot mount a tmpfs: %s" % r.stderr.strip())
        self.addCleanup(subprocess.run, ["umount", "-l", self.mnt], check=False)

    def export(self, d):
        st, data, _ = d.req("GET", "/v1/optimizers/d/state", raw=True)
        self.assertEqual(st, 200, data)
        return data

    def test_full_follower_disk(self):
        g = TwoThenOne(self.mnt)
        self.addCleanup(g.stop)
        full = g.members[3]
        c = Client(g)
        self.addCleanup(c.close)
        st, body, _ = c.call("POST", "/v1/optimizers", SPEC)
        self.assertEqual(st, 201, body)
        key = {"Content-Type": "application/octet-stream"}
        for i in range(10):
            st, body, _ = c.call("POST", "/v1/optimizers/d/step?params=none", hc.gradient_bytes(i, N),
                                 dict(key, **{"Idempotency-Key": "d%d" % i}))
            self.assertEqual(st, 200, body)
        g.wait_applied()
        self.assertEqual(g.cluster_of(full)["role"], "follower")
        filled = fill(self.mnt)
        t0 = time.monotonic()
        for i in range(10, PUSHES):
            st, body, _ = c.call("POST", "/v1/optimizers/d/step?params=none", hc.gradient_bytes(i, N),
                                 dict(key, **{"Idempotency-Key": "d%d" % i}))
            self.assertEqual(st, 200, body)
        took = time.monotonic() - t0
        healthy = [g.members[1], g.members[2]]
        lead = g.wait_leader()
        self.assertIn(lead, healthy)
        target = g.cluster_of(lead)["commit_index"]
        deadline = time.monotonic() + 30
        while min(g.cluster_of(d)["applied_index"] for d in healthy) < target:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.05)
        states = [self.export(d) for d in healthy]
        self.assertEqual(states[0], states[1])
        st, body, _ = lead.req("GET", "/v1/optimizers/d/params")
        self.assertEqual(body["params"]["w"], hc.values_of(range(PUSHES), N))
        self.assertEqual(body["step"], PUSHES)
        alive = full.proc.poll() is None
        seen = g.cluster_of(full)["applied_index"] if alive else None
        # the disk comes back: the member catches up
        os.unlink(os.path.join(self.mnt, "filler"))
        how = "by itself"
        try:
            if not alive:
                raise AssertionError("exited")
            g.wait_applied(timeout=5)
        except AssertionError:
            # libraft stops for good after a failed write of its log: the member says so, and
            # catches up once restarted
            how = "after a restart"
            if alive:
                view = g.cluster_of(full)
                if view["role"] == "unavailable":  # else libraft still retries (and fails) as a follower
                    log = full.wait_log("replica: Raft stopped on a storage error")
                    self.assertIn("replica: Raft stopped on a storage error", log)
                    self.errlog = [l for l in log.splitlines() if "storage error" in l][0]
                how = "after a restart (stuck as %s at %s before)" % (view["role"], view["applied_index"])
                g.kill9(full)
            g.dead.add(3)
            g.restart(full)
            g.wait_applied()
        self.assertEqual(self.export(full), states[0])
        print("\n  full disk: %d pushes acknowledged in %.2f s with member 3's disk full (%d filler bytes); "
              "member 3 %s at index %s of %d then; caught up %s"
              % (PUSHES - 10, took, filled, "alive" if alive else "exited", seen, target, how))
        if getattr(self, "errlog", None):
            print("  member 3's log: " + self.errlog)


if __name__ == "__main__":
    unittest.main()
