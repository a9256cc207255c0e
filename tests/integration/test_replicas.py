"""test_replicas: three descentd members of one Raft group on loopback.

- the group forms: every member names the same leader and term in
  GET /v1/cluster, lists the three members, and the leader sees each
  follower's log; replies carry Descent-Applied-Index;
- a write on a follower answers 307 with Location on the leader (path and
  query kept) and changes nothing; the same request there succeeds;
- create, PATCH, pushes (JSON, binary, a replayed Idempotency-Key), a
  second instance created and deleted: every member exports the same bytes,
  and the parameters equal a standalone daemon's fed the same requests;
- a long-poll on a follower wakes when it applies the step;
- without a quorum the survivor refuses writes (503 no_leader) and still
  serves reads; the members that come back catch up, identical again, and a
  retried push (same Idempotency-Key) is applied exactly once;
- kill -9 of every member: each rebuilds the same bytes from its own log.
"""
import json
import os
import shutil
import subprocess
import struct
import threading
import time
import unittest

from harness import BUILD, ROOT, Daemon, bytes_to_floats, floats_to_bytes
from replicas import Group, free_ports

CLI = os.path.join(ROOT, BUILD, "bin", "descent")
SPEC = {"name": "m", "algorithm": "adam", "hyper": {"lr": 0.01, "weight_decay": 0.1},
        "tensors": [{"name": "w", "shape": [5], "init": {"normal": {"std": 1, "seed": 3}}},
                    {"name": "b", "shape": [2]}]}


def grad(k):
    return [((k * 7 + i * 3) % 11 - 5) / 4.0 for i in range(7)]


def ops():
    """The writes both the group and the standalone daemon receive."""
    out = [("POST", "/v1/optimizers", SPEC, None)]
    for k in range(12):
        g = grad(k)
        out.append(("POST", "/v1/optimizers/m/step?worker=w%d&loss=%d" % (k % 3, k),
                    {"grads": {"w": g[:5], "b": g[5:]}}, None))
    out.append(("PATCH", "/v1/optimizers/m", {"hyper": {"lr": 0.003}}, None))
    for k in range(12, 20):
        out.append(("POST", "/v1/optimizers/m/step?worker=bin", floats_to_bytes(grad(k)),
                    {"Content-Type": "application/octet-stream", "Accept": "application/octet-stream",
                     "Idempotency-Key": "p%d" % k}))
    # a retried push: replayed, not applied twice
    out.append(("POST", "/v1/optimizers/m/step?worker=bin", floats_to_bytes(grad(19)),
                {"Content-Type": "application/octet-stream", "Idempotency-Key": "p19"}))
    out.append(("POST", "/v1/optimizers", dict(SPEC, name="gone"), None))
    out.append(("DELETE", "/v1/optimizers/gone", None, None))
    return out


class ReplicaTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.g = Group(3)

    @classmethod
    def tearDownClass(cls):
        cls.g.stop()

    def followers(self):
        lead = self.g.wait_leader()
        return lead, [d for d in self.g.live() if d is not lead]

    def test_1_group_forms(self):
        lead, fol = self.followers()
        views = [self.g.cluster_of(d) for d in self.g.live()]
        self.assertEqual({v["leader"] for v in views}, {self.g.id_of(lead)})
        self.assertEqual(len({v["term"] for v in views}), 1, views)
        for v in views:
            self.assertEqual([m["id"] for m in v["members"]], [1, 2, 3])
            self.assertEqual([m["leader"] for m in v["members"]], [m["id"] == self.g.id_of(lead) for m in v["members"]])
            self.assertEqual(v["leader_http"], lead.url)
        lv = self.g.cluster_of(lead)
        self.assertEqual(lv["role"], "leader")
        self.assertTrue(all(m["applied_index"] is not None and m["applied_index"] >= 1 for m in lv["members"]), lv)
        for d in fol:
            self.assertEqual(self.g.cluster_of(d)["role"], "follower")
        st, _, h = fol[0].req("GET", "/v1/optimizers")
        self.assertEqual(st, 200)
        self.assertGreaterEqual(int(h["descent-applied-index"]), 1)

    def test_2_follower_redirects(self):
        lead, fol = self.followers()
        before = [d.req("GET", "/v1/optimizers")[1] for d in self.g.live()]
        st, body, h = fol[0].req("POST", "/v1/optimizers/x/step?worker=a%20b&loss=1", {"grads": {"w": [1]}})
        self.assertEqual(st, 307, body)
        self.assertEqual(h["location"], lead.url + "/v1/optimizers/x/step?worker=a%20b&loss=1")
        self.assertEqual(h["descent-leader"], str(self.g.id_of(lead)))
        st, body, h = fol[1].req("POST", "/v1/optimizers", dict(SPEC, name="r"))
        self.assertEqual((st, h["location"]), (307, lead.url + "/v1/optimizers"))
        for d, b in zip(self.g.live(), before):
            self.assertEqual(d.req("GET", "/v1/optimizers")[1], b)  # nothing changed
        st, body, _, redirects = self.g.write("POST", "/v1/optimizers", dict(SPEC, name="r"))
        self.assertEqual(st, 201, body)
        st, body, _, _ = self.g.write("DELETE", "/v1/optimizers/r")
        self.assertEqual(st, 200, body)
        # a sync instance is served (its rounds: test_replicas_sync)
        st, body, _, _ = self.g.write("POST", "/v1/optimizers", dict(SPEC, name="s", mode="sync", workers=2))
        self.assertEqual(st, 201, body)
        st, body, _, _ = self.g.write("DELETE", "/v1/optimizers/s")
        self.assertEqual(st, 200, body)

    def test_3_identical(self):
        solo = Daemon()
        try:
            for method, path, body, headers in ops():
                st, b, h, _ = self.g.write(method, path, body, headers)
                st2, b2, h2 = solo.req(method, path, body, headers)
                self.assertEqual(st, st2, (path, b, b2))
                if isinstance(b, dict) and "params" in b:
                    self.assertEqual(b["params"], b2["params"])
                elif isinstance(b, bytes) and b:
                    self.assertEqual(b, b2)
                self.assertIn("descent-applied-index", h)
            self.g.wait_applied()
            raw = []
            for d in self.g.live():
                st, data, _ = d.req("GET", "/v1/optimizers/m/state", raw=True)
                self.assertEqual(st, 200)
                raw.append(data)
            self.assertEqual(raw[0], raw[1])
            self.assertEqual(raw[0], raw[2])
            mine, theirs = json.loads(raw[0]), solo.export("m")
            self.assertEqual(mine["step"], 20)  # 12 + 8 pushes: the retry was replayed
            for k in ("params", "buffers", "hyper"):
                self.assertEqual(mine[k], theirs[k], k)
            for d in self.g.live():
                self.assertEqual(d.req("GET", "/v1/optimizers/gone")[0], 404)
        finally:
            solo.stop()
            solo.cleanup()

    def test_4_longpoll_on_follower(self):
        lead, fol = self.followers()
        st, body, _, _ = self.g.write("POST", "/v1/optimizers", dict(SPEC, name="lp"))
        self.assertEqual(st, 201, body)
        self.g.wait_applied()  # a follower answers 404 for an instance it has not applied yet
        got = {}

        def poll():
            c = fol[0].new_conn()
            c.request("GET", "/v1/optimizers/lp/params?wait_for_step=2&timeout_ms=20000")
            r = c.getresponse()
            got["status"], got["body"] = r.status, json.loads(r.read())
            c.close()

        t = threading.Thread(target=poll)
        t.start()
        time.sleep(0.2)
        self.assertNotIn("status", got)  # waiting
        for k in range(2):
            self.g.write("POST", "/v1/optimizers/lp/step", {"grads": {"w": [1] * 5, "b": [1, 1]}})
        t.join(20)
        self.assertEqual(got["status"], 200)
        self.assertEqual(got["body"]["step"], 2)
        self.assertEqual(got["body"]["params"], lead.req("GET", "/v1/optimizers/lp/params")[1]["params"])

    def test_5_no_quorum(self):
        lead, fol = self.followers()
        st, body, _, _ = self.g.write("POST", "/v1/optimizers", dict(SPEC, name="q"))
        self.assertEqual(st, 201, body)
        self.g.wait_applied()
        before = lead.export("q")
        for d in fol:
            self.g.kill9(d)
        # the leader steps down once it hears from no majority; a write is never acknowledged
        push = {"grads": {"w": [1] * 5, "b": [1, 1]}}
        key = {"Idempotency-Key": "q1"}
        deadline = time.monotonic() + 20
        while True:
            st, body, _ = lead.req("POST", "/v1/optimizers/q/step", push, key)
            self.assertNotEqual(st, 200, body)
            if st == 503:
                self.assertIn(body["error"]["code"], ("no_leader", "leadership_lost"))
                break
            self.assertLess(time.monotonic(), deadline, (st, body))
        while self.g.cluster_of(lead)["leader"] is not None:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.05)
        self.assertEqual(self.g.cluster_of(lead)["role"], "follower")
        st, body, _ = lead.req("POST", "/v1/optimizers/q/step", push, key)
        self.assertEqual((st, body["error"]["code"]), (503, "no_leader"))
        self.assertEqual(lead.export("q"), before)  # reads go on, nothing changed
        for d in fol:
            self.g.restart(d)
        # the retry with the same key: applied once, whether or not the
        # first attempt (still in the old leader's log) committed after all
        st, body, _, _ = self.g.write("POST", "/v1/optimizers/q/step", push, key)
        self.assertEqual(st, 200, body)
        self.assertEqual(body["step"], 1, body)
        st, body, _, _ = self.g.write("POST", "/v1/optimizers/q/step", push, {"Idempotency-Key": "q2"})
        self.assertEqual((st, body["step"]), (200, 2), body)
        self.g.wait_applied()
        raw = [d.req("GET", "/v1/optimizers/q/state", raw=True)[1] for d in self.g.live()]
        self.assertEqual(raw[0], raw[1])
        self.assertEqual(raw[0], raw[2])
        self.assertEqual(json.loads(raw[0])["step"], 2)

    def test_6_all_killed(self):
        """kill -9 every member: each rebuilds the same state from its own log."""
        st, body, _, _ = self.g.write("POST", "/v1/optimizers", dict(SPEC, name="k"))
        self.assertEqual(st, 201, body)
        for k in range(5):
            st, body, _, _ = self.g.write("POST", "/v1/optimizers/k/step", floats_to_bytes(grad(k)),
                                          {"Content-Type": "application/octet-stream"})
            self.assertEqual(st, 200, body)
        self.g.wait_applied()
        before = self.g.live()[0].req("GET", "/v1/optimizers/k/state", raw=True)[1]
        members = self.g.live()
        for d in members:
            self.g.kill9(d)
        for d in members:
            self.g.restart(d)
        self.g.wait_applied()
        for d in self.g.live():
            self.assertEqual(d.req("GET", "/v1/optimizers/k/state", raw=True)[1], before)


class Snapshots(unittest.TestCase):
    def test_replace_a_dead_member(self):
        """Raft snapshots every 8 entries: a member whose disk is lost comes
        back empty (same id and address), catches up from a snapshot plus the
        log, and is bit-identical; and every member restarts from its own
        snapshot and log."""
        g = Group(3, extra=("--raft-snapshot-entries", "8"))
        try:
            st, body, _, _ = g.write("POST", "/v1/optimizers", dict(SPEC, name="s"))
            self.assertEqual(st, 201, body)
            lead = g.wait_leader()
            dead = next(d for d in g.live() if d is not lead)
            for k in range(30):
                st, body, _, _ = g.write("POST", "/v1/optimizers/s/step", floats_to_bytes(grad(k)),
                                         {"Content-Type": "application/octet-stream"})
                self.assertEqual(st, 200, body)
            g.kill9(dead)
            shutil.rmtree(dead.data_dir)
            for k in range(30, 40):
                g.write("POST", "/v1/optimizers/s/step", floats_to_bytes(grad(k)),
                        {"Content-Type": "application/octet-stream"})
            g.restart(dead)
            g.wait_applied()
            raw = [d.req("GET", "/v1/optimizers/s/state", raw=True)[1] for d in g.live()]
            self.assertEqual(json.loads(raw[0])["step"], 40)
            self.assertEqual(raw[0], raw[1])
            self.assertEqual(raw[0], raw[2])
            self.assertIn("replica: snapshot restored", dead.logs())
            members = g.live()
            for d in members:
                g.kill9(d)
            for d in members:
                g.restart(d)
            g.wait_applied()
            for d in g.live():
                self.assertEqual(d.req("GET", "/v1/optimizers/s/state", raw=True)[1], raw[0])
        finally:
            g.stop()


class Membership(unittest.TestCase):
    def test_add_and_remove(self):
        """A fourth member started with --join is added through a follower
        (307 to the leader), catches up and votes; then member 1 is removed."""
        g = Group(3)
        new = None
        try:
            st, body, _, _ = g.write("POST", "/v1/optimizers", dict(SPEC, name="j"))
            self.assertEqual(st, 201, body)
            for k in range(10):
                g.write("POST", "/v1/optimizers/j/step", floats_to_bytes(grad(k)),
                        {"Content-Type": "application/octet-stream", "Idempotency-Key": "j%d" % k})
            port = free_ports(1)[0]
            new = Daemon("--node-id", "4", "--cluster", "4=127.0.0.1:%d" % port, "--join",
                         "--election-timeout", str(g.election_ms))
            self.assertEqual(g.cluster_of(new)["members"], [])  # not bootstrapped: waits to be added
            lead = g.wait_leader()
            fol = next(d for d in g.live() if d is not lead)
            st, body, h = fol.req("POST", "/v1/cluster/members", {"id": 4, "address": "127.0.0.1:%d" % port})
            self.assertEqual(st, 307, body)
            st, body, _, _ = g.write("POST", "/v1/cluster/members", {"id": 4, "address": "127.0.0.1:%d" % port})
            self.assertEqual(st, 200, body)
            self.assertEqual([(m["id"], m["role"]) for m in body["members"]],
                             [(1, "voter"), (2, "voter"), (3, "voter"), (4, "voter")])
            st, body, _, _ = g.write("POST", "/v1/cluster/members", {"id": 4, "address": "127.0.0.1:1"})
            self.assertEqual((st, body["error"]["code"]), (409, "conflict"))
            g.members[4] = new
            g.wait_applied()
            want = lead.req("GET", "/v1/optimizers/j/state", raw=True)[1]
            self.assertEqual(new.req("GET", "/v1/optimizers/j/state", raw=True)[1], want)
            # the CLI, pointed at a follower: member-remove follows the 307 to the leader
            r = subprocess.run([CLI, "--url", fol.url, "--json", "member-remove", "1"], capture_output=True,
                               text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual([m["id"] for m in json.loads(r.stdout)["members"]], [2, 3, 4])
            g.members[1].stop(expect_clean=False)  # out of the group: stopped
            g.dead.add(1)
            r = subprocess.run([CLI, "--url", g.wait_leader().url, "cluster"], capture_output=True, text=True,
                               timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual([l.split()[0] for l in r.stdout.splitlines()[2:]], ["2", "3", "4"])
            st, body, _, _ = g.write("POST", "/v1/optimizers/j/step", floats_to_bytes(grad(10)),
                                     {"Content-Type": "application/octet-stream"})
            self.assertEqual(st, 200, body)
        finally:
            g.stop()
            if new is not None and 4 not in g.members:
                new.stop(expect_clean=False)
                new.cleanup()


if __name__ == "__main__":
    unittest.main()
