"""test_sync: synchronous rounds.

8 workers for 200 rounds make exactly 200 steps whose parameters equal a
serial replay of the mean gradients (exact in Python for SGD with integer
gradients; bit for bit against torch's vectors for Adam; bit for bit against
an async twin fed the float32 mean for random gradients).  Also: sum
aggregation, a second push in one round (409 already_pushed), a straggler
for a closed round (409 stale_gradient with the current step), a late round
closed with min_workers, a round that cannot close in time (504, nothing
applied), 1000 workers waiting in one round while another instance keeps
answering, a dead worker's lease, and GET .../workers.
"""
import random
import selectors
import socket
import struct
import threading
import time
import unittest

from harness import (DaemonTest, bytes_to_floats, f32, floats_to_bytes, json_body, load_case, parse_response, quick,
                     raise_fd_limit, raw_request, request)

BIN = {"Content-Type": "application/octet-stream", "Accept": "application/octet-stream"}


def bits(values):
    return list(struct.unpack("<%dI" % len(values), floats_to_bytes(values)))


class Push(threading.Thread):
    """One sync push on its own connection (JSON), answered when its round closes."""

    def __init__(self, d, name, worker, grads, step=None, headers=None, extra=None):
        super().__init__(daemon=True)
        self.d, self.name = d, name
        self.body = {"worker": worker, "grads": grads}
        if step is not None:
            self.body["step"] = step
        self.body.update(extra or {})
        self.headers = headers
        self.result, self.error = None, None
        self.start()

    def run(self):
        c = self.d.new_conn(timeout=60)
        t0 = time.monotonic()
        try:
            self.result = request(c, "POST", "/v1/optimizers/%s/step" % self.name, self.body, self.headers)
        except Exception as e:
            self.error = e
        finally:
            self.elapsed = time.monotonic() - t0
            c.close()

    def get(self, timeout=30):
        self.join(timeout)
        if self.is_alive():
            raise AssertionError("push of %s not answered" % self.body["worker"])
        if self.error:
            raise self.error
        return self.result


class SyncTest(DaemonTest):
    def waiting(self, name):
        return self.d.req("GET", "/v1/optimizers/%s" % name)[1]["waiting"]

    def wait_waiting(self, name, k, timeout=20):
        deadline = time.monotonic() + timeout
        while True:
            w = self.waiting(name)
            if w >= k:
                return
            if time.monotonic() > deadline:
                self.fail("%d of %d pushes waiting in %s" % (w, k, name))
            time.sleep(0.01)

    def state(self, name):
        return self.d.req("GET", "/v1/optimizers/%s/state" % name, raw=True)[1]

    def run_rounds(self, name, workers, rounds, grads_of, binary=True, on_round=None):
        """workers threads, each pushing grads_of(w, r) for r in range(rounds):
        returns replies[w][r] = (step, params)."""
        replies = [[None] * rounds for _ in range(workers)]
        errors = []

        def work(w):
            c = self.d.new_conn(timeout=60)
            try:
                for r in range(rounds):
                    g = grads_of(w, r)
                    if binary:
                        st, data, h = request(c, "POST", "/v1/optimizers/%s/step?worker=w%d&step=%d" % (name, w, r),
                                              floats_to_bytes(g), BIN)
                        if st != 200:
                            raise AssertionError("w%d round %d: %d %r" % (w, r, st, data))
                        replies[w][r] = (int(h["descent-step"]), bytes_to_floats(data))
                    else:
                        st, body, _ = request(c, "POST", "/v1/optimizers/%s/step" % name,
                                              {"worker": "w%d" % w, "step": r, "grads": g})
                        if st != 200:
                            raise AssertionError("w%d round %d: %d %r" % (w, r, st, body))
                        replies[w][r] = (body["step"], [x for t in body["params"].values() for x in t])
            except Exception as e:
                errors.append(e)
            finally:
                c.close()

        ts = [threading.Thread(target=work, args=(w,), daemon=True) for w in range(workers)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(300)
        self.assertFalse(any(t.is_alive() for t in ts), "a worker hung")
        self.assertEqual(errors, [])
        return replies


class Rounds(SyncTest):
    def test_8_workers_200_rounds_sgd_exact(self):
        workers, rounds, n = 8, quick(200, 40), 4
        init = [100.0, -50.0, 0.0, 3.0]
        self.create("s", "sgd", hyper={"lr": 1.0}, mode="sync", workers=workers,
                    tensors=[{"name": "w", "shape": [n], "values": init}])
        rnd = random.Random(5)
        G = [[[rnd.randint(-100, 100) for _ in range(n)] for _ in range(rounds)] for _ in range(workers)]
        t0 = time.monotonic()
        replies = self.run_rounds("s", workers, rounds, lambda w, r: G[w][r])
        elapsed = time.monotonic() - t0
        # serial replay: integer sums are exact, /8 is exact, p - mean is exact
        p = list(init)
        for r in range(rounds):
            mean = [sum(G[w][r][i] for w in range(workers)) / workers for i in range(n)]
            p = [p[i] - mean[i] for i in range(n)]
            for w in range(workers):
                self.assertEqual(replies[w][r], (r + 1, p), "worker %d round %d" % (w, r))
        st, body, _ = self.d.req("GET", "/v1/optimizers/s/params")
        self.assertEqual(body, {"step": rounds, "params": {"w": p}})
        st, body, _ = self.d.req("GET", "/v1/optimizers/s/workers")
        self.assertEqual(body["step"], rounds)
        for w in body["workers"]:
            self.assertEqual((w["pushes"], w["rejected"], w["last_push_step"], w["staleness"], w["lease"]),
                             (rounds, 0, rounds - 1, 0, "live"), w)
        st, body, _ = self.d.req("GET", "/v1/optimizers/s/history")
        self.assertEqual([h["step"] for h in body["history"]], list(range(1, rounds + 1)))
        print("\n  %d sync rounds of %d workers in %.1fs" % (rounds, workers, elapsed))

    def test_torch_vector_through_sync_rounds(self):
        # each round, one worker (a different one every round) pushes 8*g and
        # the others zeros: the float32 mean is exactly torch's g, so the
        # rounds must reproduce torch's Adam (amsgrad) bit for bit
        case = load_case("adam_amsgrad")
        workers = 8
        self.create("t", "adam", hyper=case["hyper"], mode="sync", workers=workers,
                    tensors=[{"name": "w", "shape": [case["n"]], "values": case["init"]}])
        zero = [0.0] * case["n"]

        def grads_of(w, r):
            return [8 * x for x in case["grads"][r]] if w == r % workers else zero

        replies = self.run_rounds("t", workers, case["steps"], grads_of, binary=(True))
        for r in range(case["steps"]):
            for w in range(workers):
                self.assertEqual(replies[w][r][0], r + 1)
                self.assertEqual(bits(replies[w][r][1]), bits(case["expected"][r]), "round %d" % r)
        st = self.d.export("t")
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            self.assertEqual(bits(st["buffers"][key]["w"]), bits(case["final_state"][key]), key)

    def test_mean_of_random_floats_equals_async_twin(self):
        # the round's mean in float32 (sum in worker-name order, then / k), pushed
        # to an async twin, gives the same bits as the sync instance
        workers, rounds, n = 5, quick(30, 10), 7
        hyper = {"lr": 0.01, "amsgrad": True, "weight_decay": 0.01}
        init = [0.5, -1.25, 3.0, 0.0, 100.0, -7.5, 1e-3]
        self.create("sy", "adamw", hyper=hyper, mode="sync", workers=workers,
                    tensors=[{"name": "a", "shape": [3], "values": init[:3]}, {"name": "b", "shape": [4], "values": init[3:]}])
        self.create("tw", "adamw", hyper=hyper, tensors=[{"name": "a", "shape": [3], "values": init[:3]},
                                                          {"name": "b", "shape": [4], "values": init[3:]}])
        rnd = random.Random(9)
        G = [[[f32(rnd.gauss(0, 1) * 10 ** rnd.randint(-3, 3)) for _ in range(n)] for _ in range(rounds)]
             for _ in range(workers)]
        replies = self.run_rounds("sy", workers, rounds, lambda w, r: G[w][r], binary=False)
        for r in range(rounds):
            s = list(G[0][r])  # worker names w0 < w1 < ... sort like their numbers here
            for w in range(1, workers):
                s = [f32(s[i] + G[w][r][i]) for i in range(n)]
            mean = [f32(x / workers) for x in s]
            st, body, _ = self.d.req("POST", "/v1/optimizers/tw/step", {"grads": mean})
            twin = body["params"]["a"] + body["params"]["b"]
            for w in range(workers):
                self.assertEqual(replies[w][r][0], r + 1)
                self.assertEqual(bits(replies[w][r][1]), bits(twin), "round %d worker %d" % (r, w))
        a, b = self.d.export("sy"), self.d.export("tw")
        self.assertEqual((a["step"], a["params"], a["buffers"]), (b["step"], b["params"], b["buffers"]))

    def test_aggregate_sum(self):
        self.create("sum", "sgd", hyper={"lr": 0.5}, mode="sync", workers=3, aggregate="sum",
                    tensors=[{"name": "w", "shape": [2], "values": [10, 20]}])
        ps = [Push(self.d, "sum", "w%d" % i, [i + 1, 2 * (i + 1)], step=0) for i in range(3)]
        for p in ps:
            st, body, _ = p.get()
            self.assertEqual((st, body), (200, {"step": 1, "params": {"w": [7, 14]}}))  # 10 - 0.5*6, 20 - 0.5*12

    def test_missing_worker(self):
        self.create("mw", "sgd", mode="sync", workers=2, n=2)
        before = self.state("mw")
        self.assertError(self.d.req("POST", "/v1/optimizers/mw/step", {"grads": [1, 1]}), 400, "missing_worker")
        self.assertError(self.d.req("POST", "/v1/optimizers/mw/step", floats_to_bytes([1, 1]),
                                    {"Content-Type": "application/octet-stream"}), 400, "missing_worker")
        self.assertEqual(self.state("mw"), before)
        self.assertEqual(self.waiting("mw"), 0)


class Refusals(SyncTest):
    def test_already_pushed(self):
        self.create("ap", "sgd", hyper={"lr": 1.0}, mode="sync", workers=2,
                    tensors=[{"name": "w", "shape": [2], "values": [0, 0]}])
        first = Push(self.d, "ap", "w1", [2, 4], step=0)
        self.wait_waiting("ap", 1)
        before = self.state("ap")
        st, body, _ = self.d.req("POST", "/v1/optimizers/ap/step", {"worker": "w1", "step": 0, "grads": [100, 100]})
        self.assertEqual(st, 409, body)
        self.assertEqual((body["error"]["code"], body["error"]["step"]), ("already_pushed", 0))
        st, body, _ = self.d.req("POST", "/v1/optimizers/ap/step?worker=w1", floats_to_bytes([100, 100]),
                                 {"Content-Type": "application/octet-stream"})
        self.assertEqual((st, body["error"]["code"]), (409, "already_pushed"))
        self.assertEqual(self.state("ap"), before)
        self.assertEqual(self.waiting("ap"), 1)
        second = Push(self.d, "ap", "w2", [4, 8], step=0)
        for p in (first, second):
            st, body, _ = p.get()
            self.assertEqual((st, body), (200, {"step": 1, "params": {"w": [-3, -6]}}))  # the refused push left no trace
        st, body, _ = self.d.req("GET", "/v1/optimizers/ap/workers")
        w1 = [w for w in body["workers"] if w["name"] == "w1"][0]
        self.assertEqual((w1["pushes"], w1["rejected"]), (1, 2))

    def test_step_ahead(self):
        self.create("sa", "sgd", mode="sync", workers=2, n=2)
        before = self.state("sa")
        st, body, _ = self.d.req("POST", "/v1/optimizers/sa/step", {"worker": "w1", "step": 1, "grads": [1, 1]})
        self.assertEqual((st, body["error"]["code"], body["error"]["step"]), (409, "step_ahead", 0))
        self.assertEqual(self.state("sa"), before)
        self.assertEqual(self.waiting("sa"), 0)

    def test_straggler_and_min_workers(self):
        # 3 workers, a round may close with 2 after 800 ms
        self.create("st", "sgd", hyper={"lr": 1.0}, mode="sync", workers=3, min_workers=2, round_timeout_ms=800,
                    tensors=[{"name": "w", "shape": [2], "values": [0, 0]}])
        t0 = time.monotonic()
        a = Push(self.d, "st", "a", [1, 2], step=0)
        b = Push(self.d, "st", "b", [3, 6], step=0)
        for p in (a, b):
            st, body, _ = p.get()
            # the late round closed with its 2 pushes: their mean
            self.assertEqual((st, body), (200, {"step": 1, "params": {"w": [-2, -4]}}))
        self.assertGreaterEqual(time.monotonic() - t0, 0.75)
        before = self.state("st")
        # the straggler's gradient for the closed round is stale; the error carries the step to resync to
        st, body, _ = self.d.req("POST", "/v1/optimizers/st/step", {"worker": "c", "step": 0, "grads": [50, 50]})
        self.assertEqual(st, 409, body)
        self.assertEqual((body["error"]["code"], body["error"]["step"]), ("stale_gradient", 1))
        st, body, _ = self.d.req("POST", "/v1/optimizers/st/step?worker=c&step=0", floats_to_bytes([50, 50]),
                                 {"Content-Type": "application/octet-stream"})
        self.assertEqual((st, body["error"]["code"], body["error"]["step"]), (409, "stale_gradient", 1))
        self.assertEqual(self.state("st"), before)
        self.assertEqual(self.waiting("st"), 0)
        # after resyncing it takes part in the next round, which closes with all 3 at once
        ps = [Push(self.d, "st", w, [3, 3], step=1) for w in ("a", "b", "c")]
        for p in ps:
            st, body, _ = p.get()
            self.assertEqual((st, body), (200, {"step": 2, "params": {"w": [-5, -7]}}))
            self.assertLess(p.elapsed, 0.7, "a full round waited for its deadline")

    def test_round_that_cannot_close_answers_504(self):
        self.create("to", "adam", hyper={"lr": 0.1}, mode="sync", workers=3, min_workers=2, round_timeout_ms=300,
                    tensors=[{"name": "w", "shape": [2], "values": [1, 1]}])
        before = self.state("to")
        t0 = time.monotonic()
        p = Push(self.d, "to", "a", [1, 1], step=0)
        st, body, _ = p.get()
        self.assertEqual(st, 504, body)
        self.assertEqual((body["error"]["code"], body["error"]["step"]), ("round_timeout", 0))
        self.assertGreaterEqual(time.monotonic() - t0, 0.25)
        self.assertEqual(self.state("to"), before, "a timed-out round applied something")
        self.assertEqual(self.waiting("to"), 0)
        # the next round starts clean: the timed-out push is not counted in it
        ps = [Push(self.d, "to", w, [1, 1], step=0) for w in ("a", "b", "c")]
        for q in ps:
            st, body, _ = q.get()
            self.assertEqual((st, body["step"]), (200, 1), body)

    def test_timeout_without_min_workers(self):
        self.create("tn", "sgd", hyper={"lr": 1.0}, mode="sync", workers=3, round_timeout_ms=300,
                    tensors=[{"name": "w", "shape": [1], "values": [0]}])
        before = self.state("tn")
        ps = [Push(self.d, "tn", w, [5], step=0) for w in ("a", "b")]
        for p in ps:
            st, body, _ = p.get()
            self.assertEqual((st, body["error"]["code"]), (504, "round_timeout"))
        self.assertEqual(self.state("tn"), before)

    def test_open_round_answered_when_deleted_or_replaced(self):
        for how in ("delete", "replace"):
            with self.subTest(how=how):
                self.create("gone", "sgd", mode="sync", workers=3, tensors=[{"name": "w", "shape": [1], "values": [5]}])
                ps = [Push(self.d, "gone", w, [1], step=0) for w in ("a", "b")]
                self.wait_waiting("gone", 2)
                if how == "delete":
                    st, body, _ = self.d.req("DELETE", "/v1/optimizers/gone")
                    want = (404, "unknown_instance")
                else:
                    st, body, _ = self.d.req("PUT", "/v1/optimizers/gone/state",
                                             {"algorithm": "sgd", "step": 7, "mode": "sync", "workers": 3,
                                              "tensors": [{"name": "w", "shape": [1]}], "params": {"w": [9]}})
                    want = (409, "conflict")
                self.assertEqual(st, 200, body)
                for p in ps:
                    st, body, _ = p.get()
                    self.assertEqual((st, body["error"]["code"]), want, body)
                if how == "replace":
                    # the new instance starts with an empty round at its own step
                    self.assertEqual(self.d.export("gone")["params"], {"w": [9]})
                    self.assertEqual(self.waiting("gone"), 0)
                    self.d.req("DELETE", "/v1/optimizers/gone")


class Crowd(SyncTest):
    def test_1000_workers_in_one_round(self):
        n = 1000
        self.assertGreaterEqual(raise_fd_limit(n + 200), n + 100)
        self.create("big", "sgd", hyper={"lr": 1.0}, mode="sync", workers=n,
                    tensors=[{"name": "w", "shape": [1], "values": [0]}])
        self.create("other", "sgd", hyper={"lr": 1.0}, tensors=[{"name": "w", "shape": [1], "values": [0]}])
        socks = []
        sel = selectors.DefaultSelector()
        try:
            for i in range(n - 1):
                s = socket.create_connection(("127.0.0.1", self.d.port), timeout=30)
                s.sendall(raw_request("POST", "/v1/optimizers/big/step?worker=w%04d&step=0" % i,
                                      floats_to_bytes([i]), {"Content-Type": "application/octet-stream"}))
                s.setblocking(False)
                socks.append(s)
                sel.register(s, selectors.EVENT_READ, i)
            self.wait_waiting("big", n - 1, timeout=60)
            # nobody was answered early
            self.assertEqual(sel.select(timeout=0.1), [])
            # another instance keeps answering during the wait
            for k in range(20):
                t0 = time.monotonic()
                st, body, _ = self.d.req("POST", "/v1/optimizers/other/step", {"grads": [1]})
                self.assertEqual((st, body["step"]), (200, k + 1))
                self.assertLess(time.monotonic() - t0, 2)
            self.assertEqual(self.d.req("GET", "/healthz")[0], 200)
            # the last worker closes the round: mean of 0..999 = 499.5
            st, body, _ = self.d.req("POST", "/v1/optimizers/big/step",
                                     {"worker": "w%04d" % (n - 1), "step": 0, "grads": [n - 1]})
            self.assertEqual((st, body), (200, {"step": 1, "params": {"w": [-499.5]}}))
            bufs = {i: b"" for i in range(n - 1)}
            answers = {}
            deadline = time.monotonic() + 60
            while len(answers) < n - 1 and time.monotonic() < deadline:
                for key, _ in sel.select(timeout=1):
                    i = key.data
                    try:
                        chunk = key.fileobj.recv(65536)
                    except BlockingIOError:
                        continue
                    bufs[i] += chunk
                    r = parse_response(bufs[i])
                    if r or not chunk:
                        answers[i] = r
                        sel.unregister(key.fileobj)
            self.assertEqual(len(answers), n - 1, "not every waiting worker was answered")
            for i, r in answers.items():
                self.assertIsNotNone(r, "worker %d: connection closed without a reply" % i)
                self.assertEqual((r[0], json_body(r)), (200, {"step": 1, "params": {"w": [-499.5]}}))
        finally:
            for s in socks:
                s.close()
            sel.close()
        st, body, _ = self.d.req("GET", "/v1/optimizers/big/workers")
        self.assertEqual(len(body["workers"]), n)
        self.assertTrue(all(w["pushes"] == 1 for w in body["workers"]))


class Leases(SyncTest):
    def test_dead_worker_stops_blocking_after_its_lease(self):
        lease = 1000
        self.create("ls", "sgd", hyper={"lr": 1.0}, mode="sync", workers=3, worker_lease_ms=lease,
                    tensors=[{"name": "w", "shape": [1], "values": [0]}])
        # round 1: all three are members
        ps = [Push(self.d, "ls", w, [3], step=0) for w in ("a", "b", "c")]
        for p in ps:
            self.assertEqual(p.get()[1]["step"], 1)
        t_c = time.monotonic()  # c's last sign of life
        # c dies; a and b push round 2, which must close once c's lease runs out
        ps = [Push(self.d, "ls", w, [1], step=1) for w in ("a", "b")]
        for p in ps:
            st, body, _ = p.get(timeout=lease / 1000 * 10 + 10)
            self.assertEqual((st, body), (200, {"step": 2, "params": {"w": [-4]}}))
        waited = time.monotonic() - t_c
        self.assertGreaterEqual(waited, lease / 1000 * 0.9)
        self.assertLess(waited, lease / 1000 + 5)
        st, body, _ = self.d.req("GET", "/v1/optimizers/ls/workers")
        lease_of = {w["name"]: w["lease"] for w in body["workers"]}
        self.assertEqual(lease_of, {"a": "live", "b": "live", "c": "expired"})
        # the others carry on without waiting
        for r in range(2, 5):
            ps = [Push(self.d, "ls", w, [2], step=r) for w in ("a", "b")]
            for p in ps:
                st, body, _ = p.get()
                self.assertEqual((st, body["step"]), (200, r + 1))
                self.assertLess(p.elapsed, lease / 1000 * 0.8)
        # c comes back, resyncs and is a member again: the round needs all three
        st, body, _ = self.d.req("GET", "/v1/optimizers/ls/params")
        step, w_now = body["step"], body["params"]["w"][0]
        ps = [Push(self.d, "ls", w, [6], step=step) for w in ("c", "a")]
        self.wait_waiting("ls", 2)
        time.sleep(0.2)
        self.assertEqual(self.waiting("ls"), 2, "the round closed without b")
        ps.append(Push(self.d, "ls", "b", [6], step=step))
        for p in ps:
            self.assertEqual(p.get()[1], {"step": step + 1, "params": {"w": [w_now - 6]}})
        st, body, _ = self.d.req("GET", "/v1/optimizers/ls/workers")
        self.assertEqual({w["name"]: w["lease"] for w in body["workers"]}, {"a": "live", "b": "live", "c": "live"})

    def test_polling_renews_the_lease(self):
        # a worker that keeps pulling (?worker=) is alive even if it has not pushed this round
        lease = 800
        self.create("lp", "sgd", hyper={"lr": 1.0}, mode="sync", workers=2, worker_lease_ms=lease,
                    tensors=[{"name": "w", "shape": [1], "values": [0]}])
        ps = [Push(self.d, "lp", w, [1], step=0) for w in ("a", "b")]
        for p in ps:
            p.get()
        a = Push(self.d, "lp", "a", [1], step=1)
        for _ in range(int(lease * 2 / 100)):
            time.sleep(0.1)
            st, body, _ = self.d.req("GET", "/v1/optimizers/lp/params?worker=b")
            self.assertEqual(st, 200)
        self.assertTrue(a.is_alive(), "the round closed without b although b is alive")
        b = Push(self.d, "lp", "b", [3], step=1)
        for p in (a, b):
            self.assertEqual(p.get()[1], {"step": 2, "params": {"w": [-3]}})


if __name__ == "__main__":
    unittest.main()
