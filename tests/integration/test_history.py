"""test_history: GET /v1/optimizers/{name}/history through HTTP: the recent
ring as before, and with ?range=all the whole run downsampled into buckets
(exact means, minima and maxima, contiguous spans, the span doubling past
1024 buckets), steps without a loss left out of the means, and refusals
that change nothing."""
import unittest

from harness import DaemonTest, quick


class History(DaemonTest):
    def push(self, k, loss=True):
        body = {"grads": [float(k)]}
        if loss:
            body["loss"] = k * 0.5
        st, out, _ = self.d.req("POST", "/v1/optimizers/run/step?params=none", body)
        self.assertEqual(st, 200, out)
        self.assertEqual(out["step"], k)

    def history(self, query=""):
        st, body, h = self.d.req("GET", "/v1/optimizers/run/history" + query)
        self.assertEqual(st, 200, body)
        self.assertTrue(h["content-type"].startswith("application/json"))
        return body

    def test_whole_run_in_buckets(self):
        self.create("run", "sgd", hyper={"lr": 0.25}, tensors=[{"name": "w", "shape": [1]}])
        # no steps yet: empty, span 1
        self.assertEqual(self.history(), {"history": []})
        self.assertEqual(self.history("?range=all"), {"history": [], "whole": {"span": 1, "steps": 0, "buckets": []}})

        n = quick(2500, 1100)   # past 1024 buckets: span 4 (2048 < 2500 <= 4096), or 2 (quick)
        span = 4 if n > 2048 else 2
        for k in range(1, n + 1):
            self.push(k, loss=not (1001 <= k <= 1000 + 2 * span))   # two whole buckets without a loss

        recent = self.history()
        self.assertEqual(list(recent), ["history"])   # the default reply is unchanged: no "whole"
        self.assertEqual([e["step"] for e in recent["history"]], list(range(n - 1023, n + 1)))
        self.assertEqual(set(recent["history"][0]), {"step", "time", "loss", "grad_norm", "lr"})
        self.assertEqual(self.history("?range=recent"), recent)

        both = self.history("?range=all")
        self.assertEqual(list(both), ["history", "whole"])
        self.assertEqual(both["history"], recent["history"])
        whole = both["whole"]
        self.assertEqual(whole["span"], span)
        self.assertEqual(whole["steps"], n)
        buckets = whole["buckets"]
        self.assertEqual(len(buckets), -(-n // span))
        times = {e["step"]: e["time"] for e in recent["history"]}
        for i, b in enumerate(buckets):
            first, last = i * span + 1, min((i + 1) * span, n)
            self.assertEqual((b["first_step"], b["last_step"], b["steps"]), (first, last, last - first + 1), b)
            self.assertEqual(b["grad_norm"], (first + last) / 2, b)   # |g| = k: the mean of first..last
            self.assertEqual(b["lr"], 0.25)
            if i:
                self.assertGreaterEqual(b["time"], buckets[i - 1]["time"])
            if last in times:
                self.assertEqual(b["time"], times[last])
            if 1001 <= first <= 1000 + 2 * span:
                self.assertEqual((b["loss"], b["loss_min"], b["loss_max"]), (None, None, None), b)
            else:
                self.assertEqual(b["loss"], (first + last) / 4, b)   # loss = k / 2
                self.assertEqual((b["loss_min"], b["loss_max"]), (first / 2, last / 2), b)
        self.assertEqual(buckets[-1]["time"], recent["history"][-1]["time"])
        self.assertEqual(set(buckets[0]), {"first_step", "last_step", "steps", "time", "loss", "loss_min", "loss_max",
                                           "grad_norm", "lr"})

    def test_refusals(self):
        self.create("run", "sgd", tensors=[{"name": "w", "shape": [1]}])
        self.push(1)
        before = self.history("?range=all")
        for q in ("?range=everything", "?range=", "?range=ALL"):
            st, body, _ = self.d.req("GET", "/v1/optimizers/run/history" + q)
            self.assertEqual(st, 400, (q, body))
            self.assertEqual(body["error"]["code"], "bad_query")
            self.assertIn("range", body["error"]["message"])
        st, body, _ = self.d.req("GET", "/v1/optimizers/nope/history?range=all")
        self.assertEqual(st, 404, body)
        self.assertEqual(body["error"]["code"], "unknown_instance")
        self.assertEqual(self.history("?range=all"), before)


if __name__ == "__main__":
    unittest.main()
