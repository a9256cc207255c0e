"""test_replicas_failover: kill -9 the leader of three replicas under four
async writers and a reader.

Each writer pushes a one-hot gradient (SGD, lr 1: its own coordinate goes
down by exactly 1 per applied push), each push with its own Idempotency-Key,
retried with that key (following 307, across no_leader and the dead member)
until acknowledged.  So the state must be exactly -(acknowledged pushes) per
coordinate: a lost push or a doubled one shows.  A reader reads through the
leader (Descent-Read: leader); the history of acknowledgements and reads is
checked (replicas.check_counters), and the checker is shown to reject a
history with a lost update.  Then: survivors bit-identical, the dead member
restarted catches up and is bit-identical too.
"""
import threading
import time
import unittest

from harness import quick
from replicas import Client, Group, check_counters

WRITERS = 4
PUSHES = quick(30, 12)


class Failover(unittest.TestCase):
    def test_checker_rejects_lost_update(self):
        ok = [("push", 0, 0.0, 1.0), ("read", 1.5, 2.0, [1])]
        self.assertEqual(check_counters(ok, 1), [])
        lost = [("push", 0, 0.0, 1.0), ("read", 1.5, 2.0, [0])]  # acknowledged, then not there
        self.assertEqual(len(check_counters(lost, 1)), 1)
        doubled = [("push", 0, 0.0, 1.0), ("read", 1.5, 2.0, [2])]
        self.assertEqual(len(check_counters(doubled, 1)), 1)

    def test_kill_leader_under_writers(self):
        g = Group(3)
        try:
            self.run_failover(g)
        finally:
            g.stop()

    def run_failover(self, g):
        c = Client(g)
        spec = {"name": "f", "algorithm": "sgd", "hyper": {"lr": 1},
                "tensors": [{"name": "w", "shape": [WRITERS]}]}
        st, body, _ = c.call("POST", "/v1/optimizers", spec)
        self.assertEqual(st, 201, body)
        history, lock = [], threading.Lock()
        acked = [0] * WRITERS
        errors = []
        stop_reading = threading.Event()

        def writer(i):
            cl = Client(g)
            try:
                for k in range(PUSHES):
                    grad = [1.0 if j == i else 0.0 for j in range(WRITERS)]
                    t0 = time.monotonic()
                    st, body, _ = cl.call("POST", "/v1/optimizers/f/step?worker=w%d" % i, {"grads": {"w": grad}},
                                          {"Idempotency-Key": "w%d-%d" % (i, k)})
                    t1 = time.monotonic()
                    if st != 200:
                        errors.append((i, k, st, body))
                        return
                    with lock:
                        history.append(("push", i, t0, t1))
                        acked[i] += 1
            finally:
                cl.close()

        def reader():
            cl = Client(g)
            while not stop_reading.is_set():
                t0 = time.monotonic()
                st, body, _ = cl.call("GET", "/v1/optimizers/f/params", headers={"Descent-Read": "leader"})
                t1 = time.monotonic()
                if st == 200:
                    with lock:
                        history.append(("read", t0, t1, [int(round(-x)) for x in body["params"]["w"]]))
                time.sleep(0.01)
            cl.close()

        old = g.wait_leader()
        threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
        rt = threading.Thread(target=reader)
        for t in threads + [rt]:
            t.start()
        while sum(acked) < WRITERS * PUSHES // 4 and any(t.is_alive() for t in threads):
            time.sleep(0.002)
        killed_at = time.monotonic()
        before = sum(acked)
        g.kill9(old)
        for t in threads:
            t.join(120)
        stop_reading.set()
        rt.join(30)
        self.assertEqual(errors, [])
        self.assertEqual(acked, [PUSHES] * WRITERS)
        after = sorted(e[3] for e in history if e[0] == "push" and e[2] > killed_at)  # sent after the kill
        self.assertTrue(after, "no push sent after the kill was acknowledged")
        print("\n  failover: %d pushes acknowledged before the kill; the first sent after it acknowledged "
              "%.2f s after it (election timeout %d ms)" % (before, after[0] - killed_at, g.election_ms))
        self.assertEqual(check_counters(history, WRITERS), [])
        g.wait_applied()
        states = [d.req("GET", "/v1/optimizers/f/state", raw=True)[1] for d in g.live()]
        self.assertEqual(states[0], states[1])
        st, body, _ = c.call("GET", "/v1/optimizers/f/params", headers={"Descent-Read": "leader"})
        self.assertEqual(body["params"]["w"], [-float(PUSHES)] * WRITERS)  # none lost, none doubled
        self.assertEqual(body["step"], PUSHES * WRITERS)
        g.restart(old)
        g.wait_applied()
        self.assertEqual(old.req("GET", "/v1/optimizers/f/state", raw=True)[1], states[0])
        c.close()


if __name__ == "__main__":
    unittest.main()
