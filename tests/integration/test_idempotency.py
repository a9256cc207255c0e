"""test_idempotency: a push retried with the same Idempotency-Key (or the
same worker + seq) is applied once and gets the first reply; in sync mode a
retry while the round is open waits with the round and gets its reply; a
refused push is not remembered (its retry is judged afresh)."""
import threading
import time
import unittest

from harness import DaemonTest, bytes_to_floats, floats_to_bytes, request


class Idempotency(DaemonTest):
    def setUp(self):
        super().setUp()
        self.create("a", "sgd", hyper={"lr": 1.0}, tensors=[{"name": "w", "shape": [2], "values": [0, 0]}])

    def push(self, g, key=None, name="a", **fields):
        hdrs = {"Idempotency-Key": key} if key else {}
        body = {"grads": g}
        body.update(fields)
        return self.d.req("POST", "/v1/optimizers/%s/step" % name, body, hdrs)

    def params(self, name="a"):
        return self.d.req("GET", "/v1/optimizers/%s/params" % name)[1]

    def test_key_applied_once_first_reply(self):
        st, first, h1 = self.push([1, 2], key="k-1")
        self.assertEqual((st, first), (200, {"step": 1, "params": {"w": [-1, -2]}}))
        self.push([10, 10])  # an unkeyed push moves the instance on
        for g in ([1, 2], [5, 5]):  # the retry's body does not matter: the key names the push
            st, again, _ = self.push(g, key="k-1")
            self.assertEqual((st, again), (200, first))
        self.assertEqual(self.params(), {"step": 2, "params": {"w": [-11, -12]}})
        # a new key is a new push
        st, body, _ = self.push([1, 1], key="k-2")
        self.assertEqual(body, {"step": 3, "params": {"w": [-12, -13]}})

    def test_key_binary_reply_replayed(self):
        hdr = {"Content-Type": "application/octet-stream", "Accept": "application/octet-stream",
               "Idempotency-Key": "bin-1"}
        st, d1, h1 = self.d.req("POST", "/v1/optimizers/a/step", floats_to_bytes([0.5, 0.25]), hdr)
        self.assertEqual((st, h1["descent-step"], bytes_to_floats(d1)), (200, "1", [-0.5, -0.25]))
        self.push([1, 1])
        st, d2, h2 = self.d.req("POST", "/v1/optimizers/a/step", floats_to_bytes([0.5, 0.25]), hdr)
        self.assertEqual((st, h2["descent-step"], d2), (200, "1", d1))
        self.assertEqual(self.params()["step"], 2)

    def test_worker_seq(self):
        st, first, _ = self.push([1, 1], worker="w1", seq=7)
        self.assertEqual(first["step"], 1)
        st, again, _ = self.push([1, 1], worker="w1", seq=7)
        self.assertEqual((st, again), (200, first))
        # the same seq from another worker is another push
        st, other, _ = self.push([1, 1], worker="w2", seq=7)
        self.assertEqual(other["step"], 2)
        # binary: seq as a query parameter
        path = "/v1/optimizers/a/step?worker=w1&seq=8"
        hdr = {"Content-Type": "application/octet-stream"}
        st, b1, _ = self.d.req("POST", path, floats_to_bytes([2, 2]), hdr)
        st, b2, _ = self.d.req("POST", path, floats_to_bytes([2, 2]), hdr)
        self.assertEqual((b1["step"], b2), (3, b1))
        self.assertEqual(self.params(), {"step": 3, "params": {"w": [-4, -4]}})
        st, body, _ = self.d.req("GET", "/v1/optimizers/a/workers")
        self.assertEqual({w["name"]: w["pushes"] for w in body["workers"]}, {"w1": 2, "w2": 1})
        # seq without a worker is refused
        self.assertError(self.push([1, 1], seq=9), 400, "bad_request")
        self.assertEqual(self.params()["step"], 3)

    def test_refused_push_is_not_remembered(self):
        st, body, _ = self.push([1], key="k-bad")
        self.assertEqual((st, body["error"]["code"]), (400, "bad_length"))
        st, body, _ = self.push([1, 1], key="k-bad")
        self.assertEqual((st, body["step"]), (200, 1))

    def test_stale_refusal_replayed_or_judged_again(self):
        self.create("s", "sgd", hyper={"lr": 1.0}, max_staleness=0, tensors=[{"name": "w", "shape": [1]}])
        self.push([1], name="s")
        st, body, _ = self.push([1], key="k-s", name="s", step=0)
        self.assertEqual((st, body["error"]["code"]), (409, "stale_gradient"))
        st, body, _ = self.push([1], key="k-s", name="s", step=0)
        self.assertEqual((st, body["error"]["code"]), (409, "stale_gradient"))
        self.assertEqual(self.params("s")["step"], 1)

    def test_applied_push_replayed_even_when_now_stale(self):
        # the retry of an applied push is its first outcome, not a new judgement
        self.create("z", "sgd", hyper={"lr": 1.0}, max_staleness=0, tensors=[{"name": "w", "shape": [1]}])
        st, first, _ = self.push([1], key="z-1", name="z", step=0)
        self.assertEqual((st, first), (200, {"step": 1, "params": {"w": [-1]}}))
        self.push([1], name="z", step=1)
        st, again, _ = self.push([1], key="z-1", name="z", step=0)
        self.assertEqual((st, again), (200, first))
        self.assertEqual(self.params("z")["step"], 2)

    def test_bad_keys(self):
        self.assertError(self.push([1, 1], key="x" * 101), 400, "bad_request")
        self.assertEqual(self.params()["step"], 0)

    def test_concurrent_retries_apply_once(self):
        # the same keyed push sent on 8 connections at once: applied exactly once
        results = []

        def send():
            c = self.d.new_conn()
            results.append(request(c, "POST", "/v1/optimizers/a/step", {"grads": [3, 4]}, {"Idempotency-Key": "race"}))
            c.close()

        ts = [threading.Thread(target=send) for _ in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
        self.assertEqual(len(results), 8)
        for st, body, _ in results:
            self.assertEqual((st, body), (200, {"step": 1, "params": {"w": [-3, -4]}}))
        self.assertEqual(self.params(), {"step": 1, "params": {"w": [-3, -4]}})

    def test_keys_remembered_for_1024_pushes(self):
        self.create("r", "sgd", hyper={"lr": 1.0}, tensors=[{"name": "w", "shape": [1]}])
        c = self.d.new_conn()
        first = request(c, "POST", "/v1/optimizers/r/step", {"grads": [1]}, {"Idempotency-Key": "k0"})[1]
        for i in range(1, 1024):
            st, _, _ = request(c, "POST", "/v1/optimizers/r/step", {"grads": [1]}, {"Idempotency-Key": "k%d" % i})
            self.assertEqual(st, 200)
        st, again, _ = request(c, "POST", "/v1/optimizers/r/step", {"grads": [1]}, {"Idempotency-Key": "k0"})
        c.close()
        self.assertEqual(again, first)
        self.assertEqual(self.params("r")["step"], 1024)

    def test_replay_beyond_the_kept_parameters_is_consistent(self):
        # the parameters of first replies are kept within a memory budget (64
        # MiB per instance); past it a retry is still applied once, and its
        # reply must not label newer parameters with the old step
        n = 1 << 20  # 4 MiB of parameters: 17 keyed pushes overflow the budget
        self.create("big", "sgd", hyper={"lr": 1.0}, tensors=[{"name": "w", "shape": [n]}])
        hdr = {"Content-Type": "application/octet-stream", "Accept": "application/octet-stream"}
        one = floats_to_bytes([1.0]) * n
        st, first, h = self.d.req("POST", "/v1/optimizers/big/step", one, dict(hdr, **{"Idempotency-Key": "b0"}))
        self.assertEqual((st, h["descent-step"]), (200, "1"))
        for i in range(1, 20):
            st, _, _ = self.d.req("POST", "/v1/optimizers/big/step?params=none", one, dict(hdr, **{"Idempotency-Key": "b%d" % i}))
            self.assertEqual(st, 200)
        st, again, h = self.d.req("POST", "/v1/optimizers/big/step", one, dict(hdr, **{"Idempotency-Key": "b0"}))
        self.assertEqual(st, 200)
        self.assertEqual(self.params("big")["step"], 20, "the retry was applied again")
        values = set(bytes_to_floats(again))
        self.assertEqual(len(values), 1)
        # either the first reply itself, or the current parameters with their own step
        self.assertIn((h["descent-step"], values.pop()), {("1", -1.0), ("20", -20.0)})


class SyncIdempotency(DaemonTest):
    def setUp(self):
        super().setUp()
        self.create("s", "sgd", hyper={"lr": 1.0}, mode="sync", workers=2,
                    tensors=[{"name": "w", "shape": [2], "values": [0, 0]}])

    def bg(self, body, key):
        out = {}

        def run():
            c = self.d.new_conn()
            out["r"] = request(c, "POST", "/v1/optimizers/s/step", body, {"Idempotency-Key": key} if key else {})
            c.close()

        t = threading.Thread(target=run)
        t.start()
        return t, out

    def waiting(self):
        return self.d.req("GET", "/v1/optimizers/s")[1]["waiting"]

    def test_retry_while_round_is_open_gets_the_rounds_reply(self):
        t1, o1 = self.bg({"worker": "w1", "step": 0, "grads": [2, 2]}, "a-1")
        for _ in range(500):
            if self.waiting() == 1:
                break
            time.sleep(0.01)
        # the client gave up and retried: the retry waits with the round, no 409
        t2, o2 = self.bg({"worker": "w1", "step": 0, "grads": [2, 2]}, "a-1")
        time.sleep(0.3)
        self.assertTrue(t2.is_alive(), "the retry was answered before the round closed: %r" % o2)
        st, body, _ = self.d.req("POST", "/v1/optimizers/s/step", {"worker": "w2", "step": 0, "grads": [4, 4]})
        self.assertEqual((st, body), (200, {"step": 1, "params": {"w": [-3, -3]}}))
        for t, o in ((t1, o1), (t2, o2)):
            t.join(10)
            self.assertEqual(o["r"][:2], (200, {"step": 1, "params": {"w": [-3, -3]}}))
        # a retry after the round closed gets the same reply and is not applied again
        st, body, _ = self.d.req("POST", "/v1/optimizers/s/step", {"worker": "w1", "step": 0, "grads": [2, 2]},
                                 {"Idempotency-Key": "a-1"})
        self.assertEqual((st, body), (200, {"step": 1, "params": {"w": [-3, -3]}}))
        self.assertEqual(self.waiting(), 0)
        st, body, _ = self.d.req("GET", "/v1/optimizers/s/workers")
        self.assertEqual({w["name"]: w["pushes"] for w in body["workers"]}, {"w1": 1, "w2": 1})

    def test_seq_retry_in_sync(self):
        t1, o1 = self.bg({"worker": "w1", "step": 0, "seq": 1, "grads": [2, 2]}, None)
        for _ in range(500):
            if self.waiting() == 1:
                break
            time.sleep(0.01)
        t2, o2 = self.bg({"worker": "w1", "step": 0, "seq": 1, "grads": [2, 2]}, None)
        time.sleep(0.2)
        st, body, _ = self.d.req("POST", "/v1/optimizers/s/step", {"worker": "w2", "step": 0, "grads": [0, 0]})
        self.assertEqual(body["step"], 1)
        for t, o in ((t1, o1), (t2, o2)):
            t.join(10)
            self.assertEqual(o["r"][:2], (200, {"step": 1, "params": {"w": [-1, -1]}}))

    def test_retry_of_a_timed_out_round(self):
        self.create("t", "sgd", hyper={"lr": 1.0}, mode="sync", workers=2, round_timeout_ms=200,
                    tensors=[{"name": "w", "shape": [1]}])
        st, body, _ = self.d.req("POST", "/v1/optimizers/t/step", {"worker": "w1", "step": 0, "grads": [1]},
                                 {"Idempotency-Key": "t-1"})
        self.assertEqual((st, body["error"]["code"]), (504, "round_timeout"))
        # nothing was applied, so the retry is a new push (it joins a new round)
        t1, o1 = None, {}

        def run():
            c = self.d.new_conn()
            o1["r"] = request(c, "POST", "/v1/optimizers/t/step", {"worker": "w1", "step": 0, "grads": [1]},
                              {"Idempotency-Key": "t-1"})
            c.close()

        t1 = threading.Thread(target=run)
        t1.start()
        time.sleep(0.05)
        st, body, _ = self.d.req("POST", "/v1/optimizers/t/step", {"worker": "w2", "step": 0, "grads": [3]})
        self.assertEqual((st, body), (200, {"step": 1, "params": {"w": [-2]}}))
        t1.join(10)
        self.assertEqual(o1["r"][:2], (200, {"step": 1, "params": {"w": [-2]}}))


if __name__ == "__main__":
    unittest.main()


class KeysTravelWithTheState(DaemonTest):
    """The idempotency window is part of the state: exported by GET .../state,
    restored by PUT .../state (a migration), so a retry there is replayed."""

    def test_retry_after_export_and_import_is_replayed(self):
        self.create("m", "sgd", n=2, hyper={"lr": 1.0})
        h = {"Idempotency-Key": "move-1"}
        st, body, _ = self.d.req("POST", "/v1/optimizers/m/step", {"grads": [1, 2]}, headers=h)
        self.assertEqual((st, body["step"]), (200, 1), body)
        st, body, _ = self.d.req("POST", "/v1/optimizers/m/step?worker=w&seq=3", {"grads": [1, 1]})
        self.assertEqual(st, 200, body)
        state = self.d.export("m")
        self.assertEqual(state["idempotency"], [{"key": "k:move-1", "step": 1}, {"key": "s:w:3", "step": 2}])
        self.assertEqual(self.d.req("DELETE", "/v1/optimizers/m")[0], 200)
        st, body, _ = self.d.req("PUT", "/v1/optimizers/m/state", state)
        self.assertEqual(st, 201, body)
        # replayed, not applied: the first reply's parameters were not kept across the
        # import, so the replay shows the current ones under their own step
        st, body, _ = self.d.req("POST", "/v1/optimizers/m/step", {"grads": [1, 2]}, headers=h)
        self.assertEqual((st, body), (200, {"step": 2, "params": {"w": [-2.0, -3.0]}}), body)
        st, body, _ = self.d.req("POST", "/v1/optimizers/m/step?worker=w&seq=3&params=none", {"grads": [1, 1]})
        self.assertEqual((st, body), (200, {"step": 2}), body)
        self.assertEqual(self.d.req("GET", "/v1/optimizers/m/params")[1], {"step": 2, "params": {"w": [-2.0, -3.0]}})
        bad = dict(state, idempotency=[{"key": "", "step": 1}])
        self.assertError(self.d.req("PUT", "/v1/optimizers/m/state", bad), 400, "bad_request")
        self.assertEqual(self.d.req("GET", "/v1/optimizers/m")[1]["step"], 2)  # nothing changed
