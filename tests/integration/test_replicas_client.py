"""test_replicas_client: the Python package on three replicas.

descent.Client("http://a,http://b,http://c") is one shard served by a Raft
group: it creates through a follower (307 followed), four threads push
one-hot gradients without any key of their own while the leader is killed
-9, and the result is exact: every push applied once (the Group makes up an
Idempotency-Key and retries across the failover).  Reads go through the
leader (Descent-Read: leader), so a thread sees its own pushes.
"""
import os
import sys
import threading
import time
import unittest

from harness import ROOT, quick
from replicas import Group

sys.path.insert(0, os.path.join(ROOT, "client", "python"))
import descent  # noqa: E402

WRITERS = 4
PUSHES = quick(20, 8)


class PythonClient(unittest.TestCase):
    def test_failover(self):
        g = Group(3)
        try:
            lead = g.wait_leader()
            fol = [d for d in g.live() if d is not lead]
            urls = ",".join(d.url for d in fol + [lead])  # a follower first: the client finds the leader
            c = descent.Client(urls)
            c.create({"name": "f", "algorithm": "sgd", "hyper": {"lr": 1}, "tensors": [{"name": "w", "shape": [WRITERS]}]})
            done = [0] * WRITERS
            errors = []

            def writer(i):
                try:
                    for k in range(PUSHES):
                        p = c.push("f", [1.0 if j == i else 0.0 for j in range(WRITERS)], worker="w%d" % i)
                        done[i] += 1
                        self.assertLessEqual(p["w"][i], -done[i])  # its own pushes are in
                except Exception as e:  # noqa: BLE001 - reported below
                    errors.append(repr(e))

            threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
            for t in threads:
                t.start()
            while sum(done) < WRITERS * PUSHES // 3 and any(t.is_alive() for t in threads):
                time.sleep(0.01)
            g.kill9(lead)
            for t in threads:
                t.join(120)
            self.assertEqual(errors, [])
            p = c.pull("f")
            self.assertEqual(p["w"], [-float(PUSHES)] * WRITERS)  # none lost, none doubled
            self.assertEqual(p.step, WRITERS * PUSHES)
            c.close()
        finally:
            g.stop()


if __name__ == "__main__":
    unittest.main()
