"""test_replicas_client: the Python package on three replicas.

descent.Client("http://a,http://b,http://c") is one shard served by a Raft
group: it creates through a follower (307 followed), four threads push
one-hot gradients without any key of their own while the leader is killed
-9, and the result is exact: every push applied once (the Group makes up an
Idempotency-Key and retries across the failover).  Reads go through the
leader (Descent-Read: leader), so a thread sees its own pushes.  And the
CLI (libdescent) pointed at a follower follows its 307s to the leader.
"""
import json
import os
import subprocess
import sys
import threading
import time
import unittest

from harness import BUILD, ROOT, quick
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

    def test_cli_follows_the_leader(self):
        """libdescent follows a follower's 307 to the leader (method, body and
        token kept): the CLI pointed at a follower creates, pushes and reads."""
        g = Group(3)
        try:
            lead = g.wait_leader()
            fol = next(d for d in g.live() if d is not lead)
            cli = os.path.join(ROOT, BUILD, "bin", "descent")

            def run(*args, stdin=None):
                r = subprocess.run([cli, "--url", fol.url] + list(args), input=stdin, capture_output=True,
                                   text=True, timeout=60)
                self.assertEqual(r.returncode, 0, r.stderr)
                return r.stdout

            run("create", json.dumps({"name": "c", "algorithm": "sgd", "hyper": {"lr": 1},
                                      "tensors": [{"name": "w", "shape": [2]}]}))
            run("push", "c", "-", stdin="1 2")
            run("push", "c", "-", stdin="0.5 0.5")
            g.wait_applied()
            st, body, _ = lead.req("GET", "/v1/optimizers/c/params")
            self.assertEqual((body["step"], body["params"]["w"]), (2, [-1.5, -2.5]))
        finally:
            g.stop()


if __name__ == "__main__":
    unittest.main()
