"""test_replicas_shards: range sharding over Raft groups (proto/sharding.md,
"Shards that are replica groups").

Two groups of three members each hold one instance sharded over them, by
the Python client's spelling "a1|a2|a3,b1|b2|b3" (libdescent's and the
CLI's too): one dense tensor and one sparse table, adagrad.  The same
pushes go to one plain daemon.  Half-way, the leader of the first group is
killed -9; the client follows the new leader and retries with the keys it
sends.  At the end, the sharded instance's parameters and rows equal the
plain daemon's bit for bit (none lost, none doubled), and the surviving
members of each group export the same bytes.
"""
import os
import random
import struct
import sys
import unittest

from harness import ROOT, Daemon, quick
from replicas import Group

sys.path.insert(0, os.path.join(ROOT, "client", "python"))
import descent  # noqa: E402

PUSHES = quick(24, 12)
V, D, N = 64, 3, 7
SPEC = {"name": "m", "algorithm": "adagrad", "hyper": {"lr": 0.1},
        "tensors": [{"name": "w", "shape": [N], "init": {"normal": {"mean": 0, "std": 1, "seed": 5}}},
                    {"name": "e", "shape": [V, D], "sparse": True,
                     "init": {"normal": {"mean": 0, "std": 0.5, "seed": 9}}}]}


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def gradients():
    rnd = random.Random(42)
    for _ in range(PUSHES):
        rows = [rnd.randrange(V) for _ in range(5)]
        yield {"w": [f32(rnd.uniform(-1, 1)) for _ in range(N)],
               "e": descent.Rows(rows, [[f32(rnd.uniform(-1, 1)) for _ in range(D)] for _ in rows])}


def as_list(x):
    return [float(v) for v in (x.tolist() if hasattr(x, "tolist") else x)]


class ShardsOfGroups(unittest.TestCase):
    def test_sharded_over_two_groups_equals_one_daemon_across_a_failover(self):
        groups = [Group(3), Group(3)]
        plain = Daemon()
        try:
            leaders = [g.wait_leader() for g in groups]
            urls = ",".join("|".join(d.url for d in g.live()) for g in groups)
            sharded, one = descent.Client(urls), descent.Client(plain.url)
            for c in (sharded, one):
                c.create(SPEC)
            for k, g in enumerate(gradients()):
                if k == PUSHES // 2:
                    groups[0].kill9(leaders[0])
                for c in (sharded, one):
                    c.push("m", g, worker="w", seq=k)
            a, b = sharded.pull("m"), one.pull("m")
            self.assertEqual((a.step, b.step), (PUSHES, PUSHES))
            self.assertEqual(as_list(a["w"]), as_list(b["w"]))
            ids = list(range(V))
            (sa, ra), (sb, rb) = sharded.pull_rows("m", "e", ids), one.pull_rows("m", "e", ids)
            self.assertEqual(sa, sb)
            self.assertEqual([as_list(r) for r in ra], [as_list(r) for r in rb])
            for g in groups:  # every live member of a group holds the same bytes
                g.wait_applied()
                docs = set()
                for d in g.live():
                    st, body, _ = d.req("GET", "/v1/optimizers/m/state", raw=True)
                    self.assertEqual(st, 200)
                    docs.add(body)
                self.assertEqual(len(docs), 1, "members of one group differ")
            sharded.close()
            one.close()
        finally:
            for g in groups:
                g.stop()
            plain.stop()
            plain.cleanup()


if __name__ == "__main__":
    unittest.main()
