"""test_longpoll: GET .../params?wait_for_step=N&timeout_ms=T holds the
request (no thread) until the instance reaches step N, answers 200 with the
older step when it times out, serves many pollers at once, and answers a
poll of a deleted instance with 404."""
import threading
import time
import unittest

from harness import DaemonTest, floats_to_bytes, quick, request


class Poller(threading.Thread):
    """One long-poll on its own connection; result in .result, timing in .elapsed."""

    def __init__(self, d, path, headers=None):
        super().__init__(daemon=True)
        self.d, self.path, self.headers = d, path, headers
        self.result = None
        self.error = None

    def run(self):
        c = self.d.new_conn(timeout=30)
        t0 = time.monotonic()
        try:
            self.result = request(c, "GET", self.path, headers=self.headers)
        except Exception as e:  # reported by the test
            self.error = e
        finally:
            self.elapsed = time.monotonic() - t0
            c.close()


class LongPoll(DaemonTest):
    def setUp(self):
        super().setUp()
        self.create("m", "sgd", hyper={"lr": 1.0}, tensors=[{"name": "w", "shape": [3], "values": [10, 20, 30]}])

    def push(self, g):
        st, body, _ = self.d.req("POST", "/v1/optimizers/m/step", {"grads": g})
        self.assertEqual(st, 200, body)
        return body

    def waiting(self, name="m"):
        return self.d.req("GET", "/v1/optimizers/%s" % name)[1]["waiting"]

    def wait_until_waiting(self, k, name="m", timeout=10):
        deadline = time.monotonic() + timeout
        while self.waiting(name) < k:
            if time.monotonic() > deadline:
                self.fail("only %d of %d pollers are waiting" % (self.waiting(name), k))
            time.sleep(0.01)

    def test_already_reached_answers_at_once(self):
        self.push([1, 1, 1])
        t0 = time.monotonic()
        st, body, _ = self.d.req("GET", "/v1/optimizers/m/params?wait_for_step=1&timeout_ms=5000")
        self.assertLess(time.monotonic() - t0, 2)
        self.assertEqual((st, body), (200, {"step": 1, "params": {"w": [9, 19, 29]}}))

    def test_wakes_on_the_step(self):
        p = Poller(self.d, "/v1/optimizers/m/params?wait_for_step=2&timeout_ms=20000")
        p.start()
        self.wait_until_waiting(1)
        self.push([1, 2, 3])  # step 1: not yet
        time.sleep(0.2)
        self.assertTrue(p.is_alive(), "woke before step 2")
        t0 = time.monotonic()
        self.push([1, 1, 1])  # step 2
        p.join(10)
        self.assertFalse(p.is_alive())
        self.assertIsNone(p.error)
        self.assertLess(time.monotonic() - t0, 2, "not woken promptly")
        st, body, _ = p.result
        self.assertEqual((st, body), (200, {"step": 2, "params": {"w": [8, 17, 26]}}))
        self.assertEqual(self.waiting(), 0)

    def test_binary_poll(self):
        p = Poller(self.d, "/v1/optimizers/m/params?wait_for_step=1&timeout_ms=20000",
                   {"Accept": "application/octet-stream"})
        p.start()
        self.wait_until_waiting(1)
        self.push([0.5, 0.25, 2])
        p.join(10)
        st, data, h = p.result
        self.assertEqual((st, h["descent-step"]), (200, "1"))
        self.assertEqual(data, floats_to_bytes([9.5, 19.75, 28]))

    def test_timeout_answers_200_with_older_step(self):
        self.push([1, 1, 1])
        t0 = time.monotonic()
        st, body, _ = self.d.req("GET", "/v1/optimizers/m/params?wait_for_step=5&timeout_ms=300")
        dt = time.monotonic() - t0
        self.assertEqual((st, body), (200, {"step": 1, "params": {"w": [9, 19, 29]}}))
        self.assertGreaterEqual(dt, 0.29)
        self.assertLess(dt, 5)
        self.assertEqual(self.waiting(), 0, "the timed-out poller is still listed")
        # timeout_ms=0: an immediate answer
        st, body, _ = self.d.req("GET", "/v1/optimizers/m/params?wait_for_step=5&timeout_ms=0")
        self.assertEqual(body["step"], 1)

    def test_many_pollers(self):
        k = quick(50, 20)
        pollers = [Poller(self.d, "/v1/optimizers/m/params?wait_for_step=%d&timeout_ms=20000" % (1 + i % 3))
                   for i in range(k)]
        late = Poller(self.d, "/v1/optimizers/m/params?wait_for_step=9&timeout_ms=500")
        for p in pollers + [late]:
            p.start()
        self.wait_until_waiting(k + 1)
        # the daemon keeps answering other requests while they wait
        st, body, _ = self.d.req("GET", "/v1/optimizers/m/params")
        self.assertEqual(body["step"], 0)
        expect = {1: [9, 19, 29], 2: [8, 18, 28], 3: [7, 17, 27]}
        for s in (1, 2, 3):
            self.push([1, 1, 1])
            for i, p in enumerate(pollers):
                if 1 + i % 3 == s:
                    p.join(10)
                    self.assertIsNone(p.error)
                    st, body, _ = p.result
                    self.assertEqual(st, 200)
                    # woken at step s (or later if the next push came first)
                    self.assertGreaterEqual(body["step"], s)
                    self.assertEqual(body["params"]["w"], expect[body["step"]])
        late.join(10)
        self.assertEqual(late.result[0], 200)
        self.assertEqual(late.result[1]["step"], 3)
        self.assertEqual(self.waiting(), 0)

    def test_poll_of_deleted_instance(self):
        p = Poller(self.d, "/v1/optimizers/m/params?wait_for_step=3&timeout_ms=20000")
        p.start()
        self.wait_until_waiting(1)
        st, body, _ = self.d.req("DELETE", "/v1/optimizers/m")
        self.assertEqual(st, 200, body)
        p.join(10)
        self.assertFalse(p.is_alive(), "a poller of a deleted instance was not answered")
        st, body, _ = p.result
        self.assertEqual(st, 404, body)
        self.assertEqual(body["error"]["code"], "unknown_instance")
        # and a new poll of the deleted name is a plain 404
        self.assertError(self.d.req("GET", "/v1/optimizers/m/params?wait_for_step=3&timeout_ms=1000"),
                         404, "unknown_instance")

    def test_poll_answered_at_shutdown(self):
        p = Poller(self.d, "/v1/optimizers/m/params?wait_for_step=3&timeout_ms=60000")
        p.start()
        self.wait_until_waiting(1)
        self.d.stop()  # asserts exit 0
        p.join(10)
        self.assertFalse(p.is_alive())
        self.assertIsNone(p.error, "the poller was not answered before the daemon went away")
        self.assertEqual(p.result[0], 503, p.result)
        self.assertEqual(p.result[1]["error"]["code"], "shutting_down")

    def test_wakes_on_a_sync_round_and_on_a_tell(self):
        self.create("s", "sgd", hyper={"lr": 1.0}, mode="sync", workers=2,
                    tensors=[{"name": "w", "shape": [1], "values": [0]}])
        self.create("rs", "random_search", hyper={"seed": 5}, tensors=[{"name": "x", "shape": [2]}])
        ps = Poller(self.d, "/v1/optimizers/s/params?wait_for_step=1&timeout_ms=20000")
        pr = Poller(self.d, "/v1/optimizers/rs/params?wait_for_step=2&timeout_ms=20000")
        for p in (ps, pr):
            p.start()
        self.wait_until_waiting(1, "s")
        self.wait_until_waiting(1, "rs")
        w1 = Poller(self.d, "/v1/optimizers/s/params")  # a plain read is not held up
        w1.start()
        w1.join(5)
        self.assertEqual(w1.result[1]["step"], 0)
        # a round with one push does not wake it; the closed round does
        import threading
        out = {}

        def push():
            c = self.d.new_conn()
            out["a"] = request(c, "POST", "/v1/optimizers/s/step", {"worker": "a", "grads": [2]})
            c.close()

        t = threading.Thread(target=push)
        t.start()
        self.wait_until_waiting(2, "s")  # the poller and the push
        self.assertTrue(ps.is_alive())
        st, body, _ = self.d.req("POST", "/v1/optimizers/s/step", {"worker": "b", "grads": [4]})
        self.assertEqual(body, {"step": 1, "params": {"w": [-3]}})
        ps.join(10)
        t.join(10)
        self.assertEqual(ps.result[:2], (200, {"step": 1, "params": {"w": [-3]}}))
        # random search: each tell is a step
        cands = []
        for loss in (3.0, 1.0):
            st, a, _ = self.d.req("POST", "/v1/optimizers/rs/ask", {})
            cands.append(a)
            self.d.req("POST", "/v1/optimizers/rs/tell", {"candidate": a["candidate"], "loss": loss})
        pr.join(10)
        self.assertEqual(pr.result[0], 200)
        self.assertEqual(pr.result[1], {"step": 2, "params": cands[1]["params"]})

    def test_bad_queries(self):
        for q in ("wait_for_step=-1", "wait_for_step=x", "timeout_ms=-5&wait_for_step=1",
                  "timeout_ms=99999999999&wait_for_step=1", "wait_for_step="):
            with self.subTest(q=q):
                self.assertError(self.d.req("GET", "/v1/optimizers/m/params?" + q), 400, "bad_query")
        self.assertError(self.d.req("GET", "/v1/optimizers/zz/params?wait_for_step=1"), 404, "unknown_instance")


if __name__ == "__main__":
    unittest.main()
