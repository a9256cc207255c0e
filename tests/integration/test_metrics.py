"""test_metrics: /metrics parses with a strict Prometheus text parser, its
counters move exactly as known pushes say, and the logs are logfmt without
tokens or gradients."""
import math
import os
import re
import tempfile
import unittest

import promtext
from harness import Daemon, DaemonTest, floats_to_bytes


class Metrics(DaemonTest):
    def scrape(self):
        st, body, h = self.d.req("GET", "/metrics", raw=True)
        self.assertEqual(st, 200)
        self.assertTrue(h["content-type"].startswith("text/plain; version=0.0.4"))
        return promtext.parse(body.decode())

    def test_counters_follow_known_pushes(self):
        self.create("m", "sgd", hyper={"lr": 0.1}, tensors=[{"name": "w", "shape": [3]}])
        fams = self.scrape()
        self.assertEqual(promtext.value(fams, "descent_steps_total", instance="m"), 0)
        self.assertTrue(math.isnan(promtext.value(fams, "descent_loss", instance="m")))
        for i in range(5):
            st, _, _ = self.d.req("POST", "/v1/optimizers/m/step?worker=w%d" % (i % 2), {"grads": [3, 0, 4], "loss": 2.0 - i})
            self.assertEqual(st, 200)
        self.d.req("POST", "/v1/optimizers/m/step", {"grads": [1, 2]})                       # bad_length: not a push
        self.d.req("POST", "/v1/optimizers/m/step", floats_to_bytes([1, float("inf"), 0]),
                   {"Content-Type": "application/octet-stream"})                           # not_finite
        self.d.req("POST", "/v1/optimizers/m/step?step=99", {"grads": [1, 1, 1]})             # step_ahead
        fams = self.scrape()
        v = lambda fam, **kw: promtext.value(fams, fam, **kw)
        self.assertEqual(v("descent_steps_total", instance="m"), 5)
        self.assertEqual(v("descent_step", instance="m"), 5)
        self.assertEqual(v("descent_pushes_total", instance="m"), 7)
        self.assertEqual(v("descent_pushes_rejected_total", instance="m", reason="not_finite"), 1)
        self.assertEqual(v("descent_pushes_rejected_total", instance="m", reason="step_ahead"), 1)
        self.assertEqual(v("descent_loss", instance="m"), -2.0)
        self.assertEqual(v("descent_grad_norm", instance="m"), 5.0)
        self.assertEqual(v("descent_learning_rate", instance="m"), 0.1)
        self.assertEqual(v("descent_parameters", instance="m"), 3)
        self.assertEqual(v("descent_worker_pushes_total", instance="m", worker="w0"), 3)
        self.assertEqual(v("descent_worker_pushes_total", instance="m", worker="w1"), 2)
        self.assertEqual(v("descent_worker_staleness_steps", instance="m", worker="w0"), 0)
        self.assertGreater(v("descent_worker_last_push_timestamp_seconds", instance="m", worker="w1"), 1.7e9)
        self.assertEqual(v("descent_workers", instance="m", lease="live"), 2)
        self.assertEqual(promtext.value(fams, "descent_step_apply_seconds", "descent_step_apply_seconds_count", instance="m"), 5)
        self.assertEqual(promtext.value(fams, "descent_step_apply_seconds", "descent_step_apply_seconds_bucket",
                                        instance="m", le="+Inf"), 5)
        for phase in ("decode", "apply", "encode"):
            self.assertGreater(v("descent_step_phase_seconds_total", instance="m", phase=phase), 0)
        self.assertEqual(v("descent_http_requests_total", method="POST", route="/v1/optimizers/{name}/step", code="200"), 5)
        self.assertEqual(v("descent_http_requests_total", method="POST", route="/v1/optimizers/{name}/step", code="400"), 1)
        self.assertEqual(v("descent_instances"), 1)
        self.assertGreaterEqual(v("descent_http_connections"), 1)
        self.assertGreater(v("descent_uptime_seconds"), 0)

    def test_snapshot_figures(self):
        self.create("s", "adam", tensors=[{"name": "w", "shape": [2]}])   # config changes are saved at once
        fams = self.scrape()
        self.assertGreaterEqual(promtext.value(fams, "descent_snapshots_total"), 1)
        self.assertGreaterEqual(promtext.value(fams, "descent_snapshot_age_seconds"), 0)

    def test_parser_is_strict(self):
        for bad in ["x 1", "# TYPE x counter\nx 1\n", "# TYPE x_total counter\nx_total{a=\"1} 1\n",
                    "# TYPE x gauge\nx 1\nx 1\n", "# TYPE x gauge\nx one\n"]:
            with self.assertRaises(ValueError, msg=bad):
                promtext.parse(bad if bad.endswith("\n") else bad)


class Logs(unittest.TestCase):
    def test_logfmt_without_tokens_or_gradients(self):
        tok = tempfile.NamedTemporaryFile("w", delete=False)
        tok.write("s3cret-token-XYZ\n")
        tok.close()
        d = Daemon("--token-file", tok.name, "--log-level", "debug")
        try:
            auth = {"Authorization": "Bearer s3cret-token-XYZ"}
            d.req("POST", "/v1/optimizers", {"name": "m", "algorithm": "sgd", "tensors": [{"name": "w", "shape": [2]}]},
                  headers=auth)
            d.req("POST", "/v1/optimizers/m/step", {"grads": [12345.678, 98765.4321]}, headers=auth)
            d.req("GET", "/v1/optimizers/m", headers={"Authorization": "Bearer wrong-token-ABC"})
            d.stop()
            logs = d.logs()
        finally:
            d.cleanup()
            os.unlink(tok.name)
        self.assertNotIn("s3cret-token-XYZ", logs)
        self.assertNotIn("wrong-token-ABC", logs)
        self.assertNotIn("12345.678", logs)
        self.assertNotIn("98765.4321", logs)
        lines = [l for l in logs.splitlines() if l]
        self.assertTrue(any('msg="request"' in l and "route=/v1/optimizers/{name}/step" in l for l in lines))
        pair = r'[a-z_]+=("[^"]*"|\S+)'
        for l in lines:
            self.assertRegex(l, r"^ts=\S+ level=(debug|info|warn|error) msg=\"[^\"]*\"( %s)*$" % pair)


if __name__ == "__main__":
    unittest.main()
