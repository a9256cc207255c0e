"""test_replicas_sync: sync rounds on a three-member Raft group.

- 3 workers x 5 rounds (dense + sparse rows, Idempotency-Keys) on the group
  equal one standalone daemon fed the same pushes bit for bit; every member
  exports the same bytes; each round is ONE Raft entry (the applied index
  moves by exactly the number of rounds); a long-poll on a follower wakes
  when it applies the round's step;
- a round closed at its deadline with min_workers: one entry, on every member;
- a leader that loses its leadership (SIGSTOP until the others elect, then
  SIGCONT) fails its open round 503 leadership_lost; the workers retry with
  their keys on the new leader, where the round applies once;
- kill -9 of the leader: a retried push of a committed round is replayed (the
  round applied once), and a round open at the kill is lost; its workers
  retry with their keys on the new leader and it applies once.
"""
import http.client
import json
import os
import signal
import threading
import time
import unittest

from harness import Daemon, request
from replicas import Client, Group

V = 50
SPEC = {"name": "s", "algorithm": "adagrad", "mode": "sync", "workers": 3, "hyper": {"lr": 0.01},
        "tensors": [{"name": "w", "shape": [4], "init": {"normal": {"std": 1, "seed": 5}}},
                    {"name": "e", "shape": [V, 2], "sparse": True, "init": {"normal": {"std": 1, "seed": 6}}}]}
ROUNDS = 5


def body(k, w):
    g = [((k * 7 + w * 5 + i * 3) % 11 - 5) / 4.0 for i in range(4)]
    rows = [(k * 3 + w) % V, (k + 2 * w + 7) % V]
    vals = [[(r % 5 - 2) / 3.0, (w - 1) / 2.0] for r in rows]
    return {"grads": {"w": g, "e": {"rows": rows, "values": vals}}}


def run_round(call, k, workers=(0, 1, 2), keyed=True):
    """One round: each worker pushes from its own thread; the replies."""
    out = {}

    def one(w):
        h = {"Idempotency-Key": "r%d-w%d" % (k, w)} if keyed else {}
        out[w] = call(w, "POST", "/v1/optimizers/s/step?worker=w%d&step=%d&loss=%d" % (w, k, k + w), body(k, w), h)

    ts = [threading.Thread(target=one, args=(w,)) for w in workers]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    return out


def fresh(d):
    """A call on its own connection to daemon d (one per thread)."""
    def call(w, m, p, b, h=None):
        c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=30)
        try:
            return request(c, m, p, b, h)
        finally:
            c.close()
    return call


def pushes(d, name="s"):
    """Each worker's push count on daemon d (a sync push counts when it joins)."""
    st, b, _ = d.req("GET", "/v1/optimizers/%s/workers" % name)
    assert st == 200, (st, b)
    return {w["name"]: w["pushes"] for w in b["workers"]}


def wait_joined(d, before, names, timeout=20):
    """Until each of names has one push more on d than in before."""
    deadline = time.monotonic() + timeout
    while True:
        now = pushes(d)
        if all(now.get(n, 0) > before.get(n, 0) for n in names):
            return
        assert time.monotonic() < deadline, (before, now)
        time.sleep(0.02)


def observed(d, name="s"):
    """(dense params raw bytes, rows pulled) of instance name on daemon d."""
    st, raw, h = d.req("GET", "/v1/optimizers/%s/params" % name, headers={"Accept": "application/octet-stream"},
                       raw=True)
    assert st == 200, (st, raw)
    st, rows, _ = d.req("POST", "/v1/optimizers/%s/rows" % name, {"tensor": "e", "rows": list(range(V))})
    assert st == 200, (st, rows)
    return raw, json.dumps(rows["values"]), int(h["descent-step"])


class SyncRounds(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.g = Group(3)
        cls.g.wait_leader()

    @classmethod
    def tearDownClass(cls):
        # the survivors exit cleanly (under ASan: no report, no leak)
        codes = [d.stop(expect_clean=False) for d in cls.g.live()]
        cls.g.stop()
        assert codes == [0] * len(codes), codes

    def clients(self):
        cs = [Client(self.g) for _ in range(3)]
        self.addCleanup(lambda: [c.close() for c in cs])
        return lambda w, m, p, b, h: cs[w].call(m, p, b, h)

    def applied(self, d):
        return self.g.cluster_of(d)["applied_index"]

    def exports(self, name):
        self.g.wait_applied()
        raw = [d.req("GET", "/v1/optimizers/%s/state" % name, raw=True)[1] for d in self.g.live()]
        for x in raw[1:]:
            self.assertEqual(x, raw[0])
        return raw[0]

    def test_1_rounds_equal_standalone_one_entry_each(self):
        g = self.g
        st, b, _, _ = g.write("POST", "/v1/optimizers", SPEC)
        self.assertEqual(st, 201, b)
        g.wait_applied()
        lead = g.wait_leader()
        follower = [d for d in g.live() if d is not lead][0]
        before = self.applied(lead)
        call = self.clients()
        # a long-poll on a follower for step 1 wakes when it applies round 0
        poll = {}
        pt = threading.Thread(target=lambda: poll.update(
            r=follower.req("GET", "/v1/optimizers/s/params?wait_for_step=1&timeout_ms=20000")))
        pt.start()
        time.sleep(0.2)
        for k in range(ROUNDS):
            out = run_round(call, k)
            for w in range(3):
                st, rep, _ = out[w]
                self.assertEqual(st, 200, rep)
                self.assertEqual(rep["step"], k + 1)
        pt.join(20)
        self.assertEqual(poll["r"][0], 200, poll)
        self.assertGreaterEqual(poll["r"][1]["step"], 1)
        g.wait_applied()
        # one Raft entry per round, on every member
        for d in g.live():
            self.assertEqual(self.applied(d) - before, ROUNDS)
        self.exports("s")
        # the same pushes on one standalone daemon
        sd = Daemon()
        self.addCleanup(sd.stop)
        self.assertEqual(sd.req("POST", "/v1/optimizers", SPEC)[0], 201)
        for k in range(ROUNDS):
            out = run_round(fresh(sd), k)
            self.assertEqual([out[w][0] for w in range(3)], [200] * 3)
        want = observed(sd)
        self.assertEqual(want[2], ROUNDS)
        for d in g.live():
            self.assertEqual(observed(d), want)

    def test_2_deadline_closed_round(self):
        g = self.g
        spec = dict(SPEC, name="dl", workers=3, min_workers=2, round_timeout_ms=300)
        self.assertEqual(g.write("POST", "/v1/optimizers", spec)[0], 201)
        g.wait_applied()
        lead = g.wait_leader()
        before = self.applied(lead)
        call = self.clients()
        out = {}

        def one(w):
            out[w] = call(w, "POST", "/v1/optimizers/dl/step?worker=w%d&step=0" % w, body(0, w), {})

        ts = [threading.Thread(target=one, args=(w,)) for w in (0, 1)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(20)
        self.assertEqual([out[w][0] for w in (0, 1)], [200, 200], out)
        self.assertEqual([out[w][1]["step"] for w in (0, 1)], [1, 1])
        g.wait_applied()
        for d in g.live():
            self.assertEqual(self.applied(d) - before, 1)
            st, p, _ = d.req("GET", "/v1/optimizers/dl/params")
            self.assertEqual(p["step"], 1)
        self.exports("dl")
        # the same two pushes, sum-combined by a standalone daemon at its deadline
        sd = Daemon()
        self.addCleanup(sd.stop)
        self.assertEqual(sd.req("POST", "/v1/optimizers", spec)[0], 201)
        res, sc = {}, fresh(sd)
        ts = [threading.Thread(target=lambda w=w: res.update({w: sc(
            w, "POST", "/v1/optimizers/dl/step?worker=w%d&step=0" % w, body(0, w))})) for w in (0, 1)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(20)
        self.assertEqual(observed(sd, "dl"), observed(lead, "dl"))

    def test_3_leadership_lost_fails_open_round(self):
        g = self.g
        old = g.wait_leader()
        st0 = observed(old)[2]
        joined = pushes(old)
        call = self.clients()
        got = {}
        raw = fresh(old)
        ts = [threading.Thread(target=lambda: got.update(raw=raw(
                  0, "POST", "/v1/optimizers/s/step?worker=w0&step=%d" % st0, body(st0, 0),
                  {"Idempotency-Key": "lost-w0"}))),
              threading.Thread(target=lambda: got.update(w1=call(
                  1, "POST", "/v1/optimizers/s/step?worker=w1&step=%d" % st0, body(st0, 1),
                  {"Idempotency-Key": "lost-w1"})))]
        for t in ts:
            t.start()
        wait_joined(old, joined, ["w0", "w1"])
        os.kill(old.proc.pid, signal.SIGSTOP)
        try:
            g.dead.add(g.id_of(old))
            new = g.wait_leader()
        finally:
            os.kill(old.proc.pid, signal.SIGCONT)
            g.dead.discard(g.id_of(old))
        ts[0].join(20)
        st, rep, _ = got["raw"]
        self.assertEqual((st, rep["error"]["code"]), (503, "leadership_lost"), rep)
        # the workers retry on the new leader: the round applies once
        res = {}
        t2 = threading.Thread(target=lambda: res.update(w2=call(
            2, "POST", "/v1/optimizers/s/step?worker=w2&step=%d" % st0, body(st0, 2), {"Idempotency-Key": "lost-w2"})))
        t0 = threading.Thread(target=lambda: res.update(w0=call(
            0, "POST", "/v1/optimizers/s/step?worker=w0&step=%d" % st0, body(st0, 0), {"Idempotency-Key": "lost-w0"})))
        t2.start(), t0.start()
        t2.join(30), t0.join(30)
        ts[1].join(30)
        for r in (res["w0"], res["w2"], got["w1"]):
            self.assertEqual((r[0], r[1]["step"]), (200, st0 + 1), r)
        g.wait_applied()
        self.assertEqual(observed(new)[2], st0 + 1)
        self.exports("s")

    def test_4_leader_kill_round_applies_once(self):
        g = self.g
        lead = g.wait_leader()
        call = self.clients()
        st0 = observed(lead)[2]
        # a committed round, then the leader dies: a retry is replayed, not applied again
        out = run_round(call, st0)
        self.assertEqual([out[w][1]["step"] for w in range(3)], [st0 + 1] * 3)
        g.wait_applied()
        # an open round: two workers wait on the leader when it is killed
        call2 = self.clients()
        joined = pushes(lead)
        opened = {}
        ts = [threading.Thread(target=lambda w=w: opened.update({w: call2(
            w, "POST", "/v1/optimizers/s/step?worker=w%d&step=%d" % (w, st0 + 1), body(st0 + 1, w),
            {"Idempotency-Key": "open-w%d" % w})})) for w in (0, 1)]
        for t in ts:
            t.start()
        wait_joined(lead, joined, ["w0", "w1"])
        g.kill9(lead)
        new = g.wait_leader()
        self.assertIsNot(new, lead)
        st, rep, _ = call(0, "POST", "/v1/optimizers/s/step?worker=w0&step=%d" % st0, body(st0, 0),
                          {"Idempotency-Key": "r%d-w0" % st0})
        self.assertEqual((st, rep["step"]), (200, st0 + 1), rep)
        self.assertEqual(observed(new)[2], st0 + 1)
        # the open round's workers retried on the new leader; the third completes it
        st, rep, _ = call(2, "POST", "/v1/optimizers/s/step?worker=w2&step=%d" % (st0 + 1), body(st0 + 1, 2),
                          {"Idempotency-Key": "open-w2"})
        self.assertEqual((st, rep["step"]), (200, st0 + 2), rep)
        for t in ts:
            t.join(30)
        self.assertEqual([opened[w][1]["step"] for w in (0, 1)], [st0 + 2] * 2, opened)
        # retries of the open round's keys: replayed
        st, rep, _ = call(0, "POST", "/v1/optimizers/s/step?worker=w0&step=%d" % (st0 + 1), body(st0 + 1, 0),
                          {"Idempotency-Key": "open-w0"})
        self.assertEqual((st, rep["step"]), (200, st0 + 2), rep)
        g.wait_applied()
        for d in g.live():
            self.assertEqual(observed(d)[2], st0 + 2)
        self.exports("s")


if __name__ == "__main__":
    unittest.main()
