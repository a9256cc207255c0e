"""test_quota: --max-params counts the floats every instance actually holds,
on every path that allocates them (create, PATCH, import, delete), and a
request over the limit is refused whole with `quota_exceeded`.

Before the fix, a PATCH that allocated a momentum buffer was not counted:
two 150-float sgd instances PATCHed to momentum 0.9 under --max-params 500
both answered 200, the daemon held 600 floats and /metrics said 300.
"""
import unittest

from harness import DaemonTest


def metric(d, name):
    st, body, _ = d.req("GET", "/metrics", raw=True)
    assert st == 200, st
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError("%s not in /metrics" % name)


class Quota(DaemonTest):
    daemon_args = ("--max-params", "500")

    def floats(self):
        return metric(self.d, "descent_memory_floats")

    def test_patch_that_allocates_is_counted_and_refused_over_the_limit(self):
        self.create("a", "sgd", n=150)
        self.create("b", "sgd", n=150)
        self.assertEqual(self.floats(), 300)
        st, body, _ = self.d.req("PATCH", "/v1/optimizers/a", {"hyper": {"momentum": 0.9}})
        self.assertEqual(st, 200, body)
        self.assertEqual(self.floats(), 450)  # params + momentum buffer of a
        before = self.d.req("GET", "/v1/optimizers/b")[1]
        self.assertError(self.d.req("PATCH", "/v1/optimizers/b", {"hyper": {"momentum": 0.9}}), 507, "quota_exceeded")
        self.assertEqual(self.d.req("GET", "/v1/optimizers/b")[1]["hyper"], before["hyper"])  # nothing changed
        self.assertEqual(self.floats(), 450)
        # a PATCH that needs no new buffer (a's momentum is held) is fine at the limit
        st, body, _ = self.d.req("PATCH", "/v1/optimizers/a", {"hyper": {"momentum": 0.5}})
        self.assertEqual(st, 200, body)
        self.assertEqual(self.floats(), 450)

    def test_create_import_delete_keep_the_count_exact(self):
        self.create("a", "adam", n=100)  # params + exp_avg + exp_avg_sq
        self.assertEqual(self.floats(), 300)
        self.assertError(self.d.req("POST", "/v1/optimizers", {
            "name": "big", "algorithm": "adam", "tensors": [{"name": "w", "shape": [100]}]}), 507, "quota_exceeded")
        self.assertEqual(self.d.req("GET", "/v1/optimizers/big")[0], 404)
        self.assertEqual(self.floats(), 300)
        state = self.d.export("a")
        # replacing a with its own state needs no more room than it holds
        st, body, _ = self.d.req("PUT", "/v1/optimizers/a/state", state)
        self.assertEqual(st, 200, body)
        self.assertEqual(self.floats(), 300)
        # importing it as a second instance would need 300 more
        state["name"] = "c"
        self.assertError(self.d.req("PUT", "/v1/optimizers/c/state", state), 507, "quota_exceeded")
        self.assertEqual(self.d.req("GET", "/v1/optimizers/c")[0], 404)
        self.assertEqual(self.floats(), 300)
        self.assertEqual(self.d.req("DELETE", "/v1/optimizers/a")[0], 200)
        self.assertEqual(self.floats(), 0)
        st, body, _ = self.d.req("PUT", "/v1/optimizers/c/state", state)
        self.assertEqual(st, 201, body)
        self.assertEqual(self.floats(), 300)

    def test_sync_scratch_is_counted(self):
        self.create("s", "sgd", n=100, mode="sync", workers=2)
        self.assertEqual(self.floats(), 200)  # params + the round's combine buffer


class SnapshotEndpoint(DaemonTest):
    daemon_args = ("--snapshot-interval", "0")

    def test_snapshot_is_durable_and_survives_kill9(self):
        self.create("m", "sgd", n=2, hyper={"lr": 1.0})
        for _ in range(3):
            self.assertEqual(self.d.req("POST", "/v1/optimizers/m/step", {"grads": [1, 2]})[0], 200)
        st, body, _ = self.d.req("POST", "/v1/optimizers/m/snapshot")
        self.assertEqual((st, body), (200, {"name": "m", "step": 3, "durable": True}))
        self.assertEqual(self.d.req("POST", "/v1/optimizers/m/step", {"grads": [1, 2]})[0], 200)  # step 4: not saved
        self.d.kill9()
        self.d.restart()
        st, body, _ = self.d.req("GET", "/v1/optimizers/m/params")
        self.assertEqual((st, body), (200, {"step": 3, "params": {"w": [-3.0, -6.0]}}))

    def test_snapshot_refusals(self):
        self.assertError(self.d.req("POST", "/v1/optimizers/none/snapshot"), 404, "unknown_instance")
        self.create("m")
        self.assertError(self.d.req("POST", "/v1/optimizers/m/snapshot", {"x": 1}), 400, "bad_request")
        self.assertError(self.d.req("GET", "/v1/optimizers/m/snapshot"), 405, "method_not_allowed")


class NoDataDir(unittest.TestCase):
    def test_snapshot_without_data_dir_is_409(self):
        from harness import Daemon
        d = Daemon()
        try:
            # the harness always passes --data-dir; a second daemon without one
            import subprocess, harness
            p = subprocess.Popen([harness.DESCENTD, "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True)
            try:
                url = p.stdout.readline().split()[-1]
                import http.client, json
                c = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=30)
                c.request("POST", "/v1/optimizers", json.dumps({"name": "m", "algorithm": "sgd",
                                                                 "tensors": [{"name": "w", "shape": [1]}]}),
                          {"Content-Type": "application/json"})
                self.assertEqual(c.getresponse().read() and 201, 201)
                c.request("POST", "/v1/optimizers/m/snapshot")
                r = c.getresponse()
                body = json.loads(r.read())
                self.assertEqual((r.status, body["error"]["code"]), (409, "no_data_dir"))
                c.close()
            finally:
                p.terminate()
                p.wait()
                p.stdout.close()
        finally:
            d.stop()
            d.cleanup()


class Names(DaemonTest):
    def test_algorithm_names_ignore_case_and_typos_get_a_hint(self):
        st, body, _ = self.d.req("POST", "/v1/optimizers", {"name": "a", "algorithm": "Adam",
                                                            "tensors": [{"name": "w", "shape": [1]}]})
        self.assertEqual((st, body["algorithm"]), (201, "adam"))
        st, body, _ = self.d.req("POST", "/v1/optimizers", {"name": "b", "algorithm": "adamm",
                                                            "tensors": [{"name": "w", "shape": [1]}]})
        self.assertEqual((st, body["error"]["code"]), (422, "unknown_algorithm"))
        self.assertIn("did you mean 'adam'", body["error"]["message"])
        self.assertEqual(self.d.req("GET", "/v1/optimizers/b")[0], 404)

    def test_sync_rounds_have_a_default_deadline(self):
        body = self.create("s", "sgd", n=1, mode="sync", workers=2)
        self.assertEqual(body["round_timeout_ms"], 300000)
        self.assertError(self.d.req("POST", "/v1/optimizers", {
            "name": "z", "algorithm": "sgd", "mode": "sync", "workers": 2, "round_timeout_ms": 0,
            "tensors": [{"name": "w", "shape": [1]}]}), 422, "invalid_value")


if __name__ == "__main__":
    unittest.main()
