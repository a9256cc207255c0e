"""test_replicas_big: big entries on three replicas (2*10^6-float Adam pushes,
8 MB entries, with a 400 ms election timeout: a 25 MiB entry limit, the same
ratio as 40 MB pushes to the default 1000 ms one's 64 MiB).

- four writers push two 2*10^6-float binary gradients each, at once, to the
  leader: every push answers 200, the term does not change (no election:
  the meter hands raft one such entry at a time, so no member's loop
  stalls past the election timeout), every member holds the same state
  bytes (sha256 of GET .../state), and the parameters equal a standalone daemon's fed the same
  gradients in the order the group applied them (the steps of the replies);
- a body above the group's entry limit (64 KiB per ms of the election
  timeout) is refused 413 body_too_large on the leader and on a follower
  (no redirect), and nothing changes: the same state bytes, the same commit
  index.
"""
import array
import hashlib
import http.client
import threading
import unittest

from harness import Daemon
from replicas import Group

N = 2 * 10 ** 6
ELECTION_MS = 400
PUSHES = 2
LIMIT = ELECTION_MS * 64 * 1024 - 64 * 1024  # the largest body (replica.h, http_cluster.c)
SPEC = {"name": "m", "algorithm": "adam", "hyper": {"lr": 0.01},
        "tensors": [{"name": "w", "shape": [N], "init": "zeros"}]}
BIN = {"Content-Type": "application/octet-stream"}


def gradient(k):
    """Writer k's gradient: a 1000-float pattern of its own, tiled."""
    pat = array.array("f", [((i * 37 + k * 11) % 97 - 48) * 1e-3 * (k + 1) for i in range(1000)])
    return (pat * (N // 1000)).tobytes()


class BigReplicaTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.g = Group(3, election_ms=ELECTION_MS)

    @classmethod
    def tearDownClass(cls):
        cls.g.stop()

    def states(self):
        """sha256 of each member's state (a plain connection: the bodies are
        not recorded for the openapi check)."""
        out = []
        for d in self.g.live():
            c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=60)
            c.request("GET", "/v1/optimizers/m/state")
            r = c.getresponse()
            self.assertEqual(r.status, 200)
            out.append(hashlib.sha256(r.read()).hexdigest())
            c.close()
        return out

    def test_1_big_pushes(self):
        lead = self.g.wait_leader()
        st, b, _, _ = self.g.write("POST", "/v1/optimizers", SPEC)
        self.assertEqual(st, 201, b)
        term = self.g.cluster_of(lead)["term"]
        grads = [gradient(k) for k in range(4 * PUSHES)]
        replies = [None] * len(grads)

        def push(w):
            c = http.client.HTTPConnection("127.0.0.1", lead.port, timeout=60)
            for k in range(w, len(grads), 4):
                c.request("POST", "/v1/optimizers/m/step?params=none&worker=w%d" % w, body=grads[k],
                          headers=dict(BIN, **{"Idempotency-Key": "big%d" % k}))
                r = c.getresponse()
                replies[k] = (r.status, r.read())
            c.close()

        ts = [threading.Thread(target=push, args=(w,)) for w in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        steps = {}
        for k, (st, body) in enumerate(replies):
            self.assertEqual(st, 200, body)
            steps[int(body.decode().split(":")[1].strip(" }\n"))] = k
        self.assertEqual(sorted(steps), list(range(1, len(grads) + 1)))
        self.g.wait_applied()
        views = [self.g.cluster_of(d) for d in self.g.live()]
        self.assertEqual({v["term"] for v in views}, {term}, "a leader change during the pushes")
        self.assertEqual({v["leader"] for v in views}, {self.g.id_of(lead)})
        raw = self.states()
        self.assertEqual(len(set(raw)), 1, "members differ")
        alone = Daemon()
        try:
            self.assertEqual(alone.req("POST", "/v1/optimizers", SPEC)[0], 201)
            for s in sorted(steps):
                st, body, _ = alone.req("POST", "/v1/optimizers/m/step?params=none", grads[steps[s]], BIN)
                self.assertEqual(st, 200, body)
            want = alone.req("GET", "/v1/optimizers/m/params", headers={"Accept": "application/octet-stream"})[1]
        finally:
            alone.stop()
            alone.cleanup()
        for d in self.g.live():
            got = d.req("GET", "/v1/optimizers/m/params", headers={"Accept": "application/octet-stream"})[1]
            self.assertEqual(len(got), 4 * N)
            self.assertTrue(got == want, "parameters differ from a standalone daemon's")

    def test_2_over_the_limit_refused(self):
        lead = self.g.wait_leader()
        fol = [d for d in self.g.live() if d is not lead][0]
        before, commit = self.states(), self.g.cluster_of(lead)["commit_index"]
        body = bytes(LIMIT + 4)
        for d in (lead, fol):
            st, b, _ = d.req("POST", "/v1/optimizers/m/step?params=none", body, BIN)
            self.assertEqual(st, 413, b)
            self.assertEqual(b["error"]["code"], "body_too_large")
            self.assertIn("%d bytes" % LIMIT, b["error"]["message"])
        self.assertEqual(self.g.cluster_of(lead)["commit_index"], commit)
        self.assertEqual(self.states(), before)


if __name__ == "__main__":
    unittest.main()
