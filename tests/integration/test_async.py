"""test_async: async mode under concurrency, bounded staleness, step ahead.

The contract's test: 16 concurrent workers each push 2000 integer-valued
gradients to SGD with lr 1; the final parameters equal the initial ones
minus the exact sum of every gradient sent (integers are exact in float32),
the instance made exactly one step per push, and the replies, ordered by
step, show each push applied on top of the one before (no lost update).
"""
import random
import struct
import threading
import time
import unittest

from harness import DaemonTest, bytes_to_floats, floats_to_bytes, quick, request

N = 4  # floats per gradient: small tensors keep the wire cost down


class Worker(threading.Thread):
    def __init__(self, d, name, pushes, seed):
        super().__init__(daemon=True)
        self.d, self.name, self.pushes = d, name, pushes
        rnd = random.Random(seed)
        self.grads = [[rnd.randint(-100, 100) for _ in range(N)] for _ in range(pushes)]
        self.replies = []  # (step, params)
        self.error = None

    def run(self):
        c = self.d.new_conn(timeout=60)
        hdrs = {"Content-Type": "application/octet-stream", "Accept": "application/octet-stream"}
        path = "/v1/optimizers/a/step?worker=%s" % self.name
        try:
            for g in self.grads:
                st, data, h = request(c, "POST", path, floats_to_bytes(g), hdrs)
                if st != 200:
                    raise AssertionError("push answered %d: %r" % (st, data))
                self.replies.append((int(h["descent-step"]), bytes_to_floats(data)))
        except Exception as e:
            self.error = e
        finally:
            c.close()


class AsyncSum(DaemonTest):
    def test_16_workers_nothing_lost(self):
        workers, pushes = 16, quick(2000, 200)
        init = [1000.0, -1000.0, 0.0, 12345.0]
        self.create("a", "sgd", hyper={"lr": 1.0}, tensors=[{"name": "w", "shape": [N], "values": init}])
        ws = [Worker(self.d, "w%02d" % i, pushes, seed=i) for i in range(workers)]
        t0 = time.monotonic()
        for w in ws:
            w.start()
        for w in ws:
            w.join(300)
        elapsed = time.monotonic() - t0
        for w in ws:
            self.assertFalse(w.is_alive(), "worker %s hung" % w.name)
            self.assertIsNone(w.error, "worker %s: %s" % (w.name, w.error))
        total = workers * pushes
        sums = [sum(w.grads[k][i] for w in ws for k in range(pushes)) for i in range(N)]
        st, body, _ = self.d.req("GET", "/v1/optimizers/a/params")
        self.assertEqual(body["step"], total)
        self.assertEqual(body["params"]["w"], [init[i] - sums[i] for i in range(N)])
        # every step number answered exactly once; reply s = reply s-1 minus the push of step s
        by_step = {}
        for w in ws:
            for k, (s, p) in enumerate(w.replies):
                self.assertNotIn(s, by_step)
                by_step[s] = (w.grads[k], p)
        self.assertEqual(sorted(by_step), list(range(1, total + 1)))
        prev = init
        for s in range(1, total + 1):
            g, p = by_step[s]
            self.assertEqual(p, [prev[i] - g[i] for i in range(N)], "step %d" % s)
            prev = p
        st, body, _ = self.d.req("GET", "/v1/optimizers/a/workers")
        self.assertEqual(sorted((x["name"], x["pushes"], x["rejected"]) for x in body["workers"]),
                         [("w%02d" % i, pushes, 0) for i in range(workers)])
        print("\n  %d pushes from %d workers in %.1fs (%.0f/s)" % (total, workers, elapsed, total / elapsed))

    def test_json_workers_nothing_lost(self):
        # the same with JSON bodies and a second instance pushed in parallel
        workers, pushes = 4, quick(300, 50)
        for name in ("j1", "j2"):
            self.create(name, "sgd", hyper={"lr": 1.0}, tensors=[{"name": "w", "shape": [2]}])
        errors = []
        sent = {"j1": [0, 0], "j2": [0, 0]}
        lock = threading.Lock()

        def run(i):
            c = self.d.new_conn()
            rnd = random.Random(100 + i)
            try:
                for k in range(pushes):
                    name = "j1" if (i + k) % 2 else "j2"
                    g = [rnd.randint(-9, 9), rnd.randint(-9, 9)]
                    st, body, _ = request(c, "POST", "/v1/optimizers/%s/step" % name, {"grads": {"w": g}})
                    if st != 200:
                        raise AssertionError(body)
                    with lock:
                        sent[name][0] += g[0]
                        sent[name][1] += g[1]
            except Exception as e:
                errors.append(e)
            finally:
                c.close()

        ts = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        self.assertEqual(errors, [])
        steps = 0
        for name in ("j1", "j2"):
            st, body, _ = self.d.req("GET", "/v1/optimizers/%s/params" % name)
            self.assertEqual(body["params"]["w"], [-sent[name][0], -sent[name][1]])
            steps += body["step"]
        self.assertEqual(steps, workers * pushes)


class Staleness(DaemonTest):
    def setUp(self):
        super().setUp()
        self.create("s", "sgd", hyper={"lr": 1.0}, max_staleness=2,
                    tensors=[{"name": "w", "shape": [2], "values": [0, 0]}])

    def push(self, step, g=(1, 1), worker="w1", binary=False):
        if binary:
            return self.d.req("POST", "/v1/optimizers/s/step?worker=%s&step=%d" % (worker, step),
                              floats_to_bytes(list(g)), {"Content-Type": "application/octet-stream"})
        return self.d.req("POST", "/v1/optimizers/s/step", {"worker": worker, "step": step, "grads": list(g)})

    def state(self):
        return self.d.req("GET", "/v1/optimizers/s/state", raw=True)[1]

    def test_max_staleness(self):
        for s in range(3):  # steps 0, 1, 2 -> instance at step 3
            st, body, _ = self.push(s)
            self.assertEqual((st, body["step"]), (200, s + 1))
        # computed at step 1, the instance is at 3: 2 steps old, allowed
        st, body, _ = self.push(1, (2, 0))
        self.assertEqual((st, body["step"], body["params"]["w"]), (200, 4, [-5, -3]))
        before = self.state()
        for binary in (False, True):
            # computed at step 1, the instance is at 4: 3 steps old, refused with the current step
            st, body, _ = self.push(1, (100, 100), worker="slow", binary=binary)
            self.assertEqual(st, 409, body)
            self.assertEqual(body["error"]["code"], "stale_gradient")
            self.assertEqual(body["error"]["step"], 4)
            self.assertIn("step 4", body["error"]["message"])
            self.assertEqual(self.state(), before)
        st, body, _ = self.push(0, (100, 100), worker="slow")
        self.assertEqual((st, body["error"]["step"]), (409, 4))
        self.assertEqual(self.state(), before)
        # resync: a gradient on the current parameters is accepted
        st, body, _ = self.push(4, (1, 1), worker="slow")
        self.assertEqual((st, body["step"], body["params"]["w"]), (200, 5, [-6, -4]))
        # no step given: never stale
        st, body, _ = self.d.req("POST", "/v1/optimizers/s/step", {"grads": [1, 1]})
        self.assertEqual((st, body["step"]), (200, 6))
        st, body, _ = self.d.req("GET", "/v1/optimizers/s/workers")
        slow = [w for w in body["workers"] if w["name"] == "slow"][0]
        self.assertEqual((slow["pushes"], slow["rejected"], slow["last_push_step"], slow["staleness"]), (1, 3, 4, 0))
        w1 = [w for w in body["workers"] if w["name"] == "w1"][0]
        self.assertEqual((w1["pushes"], w1["rejected"], w1["last_push_step"], w1["staleness"]), (4, 0, 1, 2))

    def test_step_ahead(self):
        self.push(0)
        before = self.state()
        for binary in (False, True):
            st, body, _ = self.push(5, (100, 100), binary=binary)
            self.assertEqual(st, 409, body)
            self.assertEqual(body["error"]["code"], "step_ahead")
            self.assertEqual(body["error"]["step"], 1)
            self.assertEqual(self.state(), before)
        st, body, _ = self.push(2)
        self.assertEqual((st, body["error"]["code"]), (409, "step_ahead"))
        st, body, _ = self.push(1)
        self.assertEqual((st, body["step"]), (200, 2))

    def test_patch_max_staleness(self):
        for s in range(3):
            self.push(s)
        st, body, _ = self.d.req("PATCH", "/v1/optimizers/s", {"max_staleness": 0})
        self.assertEqual((st, body["max_staleness"]), (200, 0))
        st, body, _ = self.push(2)
        self.assertEqual((st, body["error"]["code"], body["error"]["step"]), (409, "stale_gradient", 3))
        st, body, _ = self.d.req("PATCH", "/v1/optimizers/s", {"max_staleness": None})
        self.assertEqual((st, body["max_staleness"]), (200, None))
        st, body, _ = self.push(0)
        self.assertEqual((st, body["step"]), (200, 4))

    def test_bad_step_values(self):
        before = self.state()
        for body in ({"step": -1, "grads": [1, 1]}, {"step": "3", "grads": [1, 1]}, {"step": 1.5, "grads": [1, 1]}):
            with self.subTest(body=body):
                self.assertError(self.d.req("POST", "/v1/optimizers/s/step", body), 400, "bad_request")
        for q in ("step=-1", "step=abc", "step=", "step=99999999999999999999999"):
            with self.subTest(q=q):
                self.assertError(self.d.req("POST", "/v1/optimizers/s/step?" + q, floats_to_bytes([1, 1]),
                                            {"Content-Type": "application/octet-stream"}), 400, "bad_query")
        self.assertEqual(self.state(), before)


if __name__ == "__main__":
    unittest.main()
