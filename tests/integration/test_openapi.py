"""test_openapi: the replies of every operation, the refusals included, are
what proto/openapi.yaml describes.

Each request goes through harness.py (so run.py's recording checks it again
with the rest of the suite), and each reply is also checked here at once with
openapi_check.Checker: status documented for the operation, content type,
headers, body against the schema (JSON Schema 2020-12), error code among the
response's codes.  Each also asserts the status and error code the daemon
must give, so this module cannot pass on a document that merely allows
everything.  It sends through d.req() the API-level refusals that other
modules send on raw sockets (test_hostile: bad bodies, wrong types, sizes),
which the recording does not see: 405 on every path of --print-routes, 413,
415, bad JSON, bad names, unknown paths, HEAD; plus 504, 507, 401 with
WWW-Authenticate, 403, and 503 `shutting_down` to a waiting push.
"""
import struct
import subprocess
import threading
import time
import unittest

from harness import DESCENTD, Daemon, floats_to_bytes, reply_record
from openapi_check import Checker, load_doc

MAX_BODY = 4096
J = {"Content-Type": "application/json"}
BIN = {"Content-Type": "application/octet-stream"}
ACCEPT_BIN = {"Accept": "application/octet-stream"}
OTHER_METHOD = ("DELETE", "PUT", "PATCH", "POST", "GET")


class Base(unittest.TestCase):
    daemon_args = ()

    @classmethod
    def setUpClass(cls):
        cls.checker = Checker(load_doc())
        cls.d = Daemon(*cls.daemon_args)

    @classmethod
    def tearDownClass(cls):
        try:
            cls.d.stop()
        finally:
            cls.d.cleanup()

    def call(self, method, path, body=None, headers=None, status=200, code=None, d=None):
        """One request; asserts the status (and error code), and that the reply
        matches the document.  Returns (parsed body or bytes, headers)."""
        d = d or self.d
        hdrs = dict(headers or {})
        if body is not None and not isinstance(body, (bytes, str)):
            import json
            body = json.dumps(body)
            hdrs.setdefault("Content-Type", "application/json")
        st, data, h = d.req(method, path, body, hdrs, raw=True)
        rec = reply_record(method, path, st, h, data, hdrs)
        where = "%s %s -> %d %s" % (method, path, st, data[:300])
        self.assertEqual(st, status, where)
        self.assertEqual(self.checker.check(rec), [], where)
        parsed = data
        if h.get("content-type", "").startswith("application/json") and data:
            import json
            parsed = json.loads(data)
        if code is not None:
            self.assertEqual(parsed["error"]["code"], code, where)
        return parsed, h


class Replies(Base):
    daemon_args = ("--max-body", str(MAX_BODY), "--max-instances", "8")

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        st, body, _ = cls.d.req("POST", "/v1/optimizers", {"name": "m", "algorithm": "sgd", "hyper": {"lr": 0.5},
                                                            "tensors": [{"name": "w", "shape": [4]}]})
        assert st == 201, body
        st, body, _ = cls.d.req("POST", "/v1/optimizers", {"name": "rs", "algorithm": "random_search",
                                                            "hyper": {"seed": 3}, "tensors": [{"name": "x", "shape": [2]}]})
        assert st == 201, body

    def test_service(self):
        self.assertEqual(self.call("GET", "/healthz")[0], {"status": "ok"})
        self.assertEqual(self.call("HEAD", "/healthz")[0], b"")
        text, h = self.call("GET", "/metrics")
        self.assertIn(b'descent_step{instance="m"}', text)
        page, h = self.call("GET", "/")
        self.assertTrue(page.lstrip().lower().startswith(b"<!doctype html"))

    def test_405_on_every_path(self):
        routes = {}
        for line in subprocess.run([DESCENTD, "--print-routes"], capture_output=True, text=True,
                                   check=True).stdout.split("\n"):
            if line.strip():
                m, p = line.split()
                routes.setdefault(p, set()).add(m)
        self.assertGreater(len(routes), 10)
        for path, methods in routes.items():
            other = next(m for m in OTHER_METHOD if m not in methods)
            concrete = path.replace("{name}", "m")
            _, h = self.call(other, concrete, status=405, code="method_not_allowed")
            self.assertEqual(sorted(x.strip() for x in h["allow"].split(",")), sorted(methods))

    def test_unknown_paths_and_names(self):
        self.call("GET", "/v2/optimizers", status=404, code="not_found")
        self.call("GET", "/v1/optimizers/m/nope", status=404, code="not_found")
        self.call("GET", "/v1/optimizers/-bad", status=400, code="bad_name")
        self.call("GET", "/v1/optimizers/%s/params" % ("a" * 65), status=400, code="bad_name")
        self.call("GET", "/v1/optimizers/nope", status=404, code="unknown_instance")
        self.call("POST", "/v1/optimizers/nope/step", {"grads": [1]}, status=404, code="unknown_instance")

    def test_create_and_its_refusals(self):
        spec = {"name": "c1", "algorithm": "adam", "tensors": [{"name": "w", "shape": [2, 2]}]}
        desc, _ = self.call("POST", "/v1/optimizers", spec, status=201)
        self.assertEqual((desc["name"], desc["size"], desc["step"]), ("c1", 4, 0))
        self.call("POST", "/v1/optimizers", spec, status=409, code="already_exists")
        import json
        for i, ct in enumerate(("text/json", "application/x-www-form-urlencoded")):  # what curl -d sends
            s = dict(spec, name="ct%d" % i)
            self.call("POST", "/v1/optimizers", json.dumps(s), {"Content-Type": ct}, status=201)
        self.call("POST", "/v1/optimizers", json.dumps(dict(spec, name="c2")), {"Content-Type": "text/plain"},
                  status=415, code="unsupported_media_type")
        self.call("POST", "/v1/optimizers", b"{\"name\": ", J, status=400, code="bad_json")
        self.call("POST", "/v1/optimizers", dict(spec, name="c2", colour="red"), status=400, code="bad_request")
        self.call("POST", "/v1/optimizers", dict(spec, name="c2", algorithm="adom"), status=422,
                  code="unknown_algorithm")
        self.call("POST", "/v1/optimizers", dict(spec, name="c2", hyper={"lr": -1}), status=422,
                  code="invalid_value")
        self.call("POST", "/v1/optimizers", dict(spec, name="c2", tensors=[{"name": "w", "shape": [2000]}],
                                                 pad="x" * MAX_BODY), status=413, code="body_too_large")
        desc, _ = self.call("PUT", "/v1/optimizers/p1", {"algorithm": "sgd", "tensors": [{"name": "w", "shape": [1]}]},
                            status=201)
        self.assertEqual(desc["name"], "p1")
        self.call("PUT", "/v1/optimizers/p1", {"algorithm": "sgd", "tensors": [{"name": "w", "shape": [1]}]},
                  status=409, code="already_exists")
        self.call("GET", "/v1/optimizers")
        # --max-instances 8: m, rs, c1, ct0, ct1, p1 and what other tests left; fill up to the quota
        n = 0
        while True:
            st, body, _ = self.d.req("POST", "/v1/optimizers", dict(spec, name="fill%d" % n))
            if st != 201:
                break
            n += 1
            self.assertLess(n, 8)
        self.call("POST", "/v1/optimizers", dict(spec, name="fill%d" % n), status=507, code="quota_exceeded")
        for name in ["fill%d" % k for k in range(n)] + ["c1", "ct0", "ct1", "p1"]:
            self.call("DELETE", "/v1/optimizers/" + name)

    def test_describe_patch_delete(self):
        self.call("POST", "/v1/optimizers", {"name": "pd", "algorithm": "sgd", "tensors": [{"name": "w", "shape": [2]}]},
                  status=201)
        self.call("GET", "/v1/optimizers/pd")
        self.assertEqual(self.call("HEAD", "/v1/optimizers/pd")[0], b"")
        desc, _ = self.call("PATCH", "/v1/optimizers/pd", {"hyper": {"lr": 0.25}})
        self.assertEqual(desc["hyper"]["lr"], 0.25)
        self.call("PATCH", "/v1/optimizers/pd", {"mode": "sync"}, status=422, code="invalid_value")
        self.call("PATCH", "/v1/optimizers/nope", {"hyper": {"lr": 0.25}}, status=404, code="unknown_instance")
        self.call("DELETE", "/v1/optimizers/pd", b"{}", J, status=400, code="bad_request")  # takes no body
        self.assertEqual(self.call("DELETE", "/v1/optimizers/pd")[0]["deleted"], True)
        self.call("DELETE", "/v1/optimizers/pd", status=404, code="unknown_instance")

    def test_step_and_params(self):
        self.call("POST", "/v1/optimizers", {"name": "s", "algorithm": "sgd", "hyper": {"lr": 1},
                                             "tensors": [{"name": "w", "shape": [2]}]}, status=201)
        body, _ = self.call("POST", "/v1/optimizers/s/step", {"step": 0, "grads": {"w": [1, 2]}})
        self.assertEqual(body, {"step": 1, "params": {"w": [-1, -2]}})
        body, _ = self.call("POST", "/v1/optimizers/s/step?params=none", {"grads": [1, 1]})
        self.assertEqual(body, {"step": 2})
        data, h = self.call("POST", "/v1/optimizers/s/step", floats_to_bytes([1, 0]), dict(BIN, **ACCEPT_BIN))
        self.assertEqual((struct.unpack("<2f", data), h["descent-step"]), ((-3.0, -3.0), "3"))
        data, h = self.call("POST", "/v1/optimizers/s/step?params=none&worker=w1&step=3", floats_to_bytes([0, 0]),
                            dict(BIN, **ACCEPT_BIN))
        self.assertEqual((data, h["descent-step"]), (b"", "4"))
        self.call("POST", "/v1/optimizers/s/step", floats_to_bytes([1]), BIN, status=400, code="bad_length")
        self.call("POST", "/v1/optimizers/s/step", floats_to_bytes([float("nan"), 0]), BIN, status=422,
                  code="not_finite")
        body, _ = self.call("POST", "/v1/optimizers/s/step", {"step": 9, "grads": [1, 1]}, status=409,
                            code="step_ahead")
        self.assertEqual(body["error"]["step"], 4)
        self.call("POST", "/v1/optimizers/s/step", {"grads": {"v": [1, 1]}}, status=400, code="unknown_tensor")
        self.call("POST", "/v1/optimizers/s/step?step=x", {"grads": [1, 1]}, status=400, code="bad_query")
        self.call("POST", "/v1/optimizers/s/step", b"", J, status=400, code="bad_request")
        self.call("POST", "/v1/optimizers/s/step", b"1,1", {"Content-Type": "text/csv"}, status=415,
                  code="unsupported_media_type")
        self.call("POST", "/v1/optimizers/s/step", floats_to_bytes([0] * 2000), BIN, status=413,
                  code="body_too_large")
        self.call("POST", "/v1/optimizers/rs/step", {"grads": [1, 1]}, status=409, code="wrong_algorithm")
        body, _ = self.call("GET", "/v1/optimizers/s/params")
        self.assertEqual(body, {"step": 4, "params": {"w": [-3, -3]}})
        data, h = self.call("GET", "/v1/optimizers/s/params", headers=ACCEPT_BIN)
        self.assertEqual((struct.unpack("<2f", data), h["descent-step"]), ((-3.0, -3.0), "4"))
        body, _ = self.call("GET", "/v1/optimizers/s/params?wait_for_step=100&timeout_ms=20")
        self.assertEqual(body["step"], 4)  # a poll that times out answers 200 with the older step
        self.call("GET", "/v1/optimizers/s/params?timeout_ms=-1", status=400, code="bad_query")
        self.assertEqual(self.call("HEAD", "/v1/optimizers/s/params")[0], b"")
        body, _ = self.call("GET", "/v1/optimizers/s/workers")
        self.assertEqual([w["name"] for w in body["workers"]], ["w1"])
        body, _ = self.call("GET", "/v1/optimizers/s/history")
        self.assertEqual([e["step"] for e in body["history"]], [1, 2, 3, 4])

    def test_sync_refusals(self):
        self.call("POST", "/v1/optimizers", {"name": "sy", "algorithm": "sgd", "mode": "sync", "workers": 2,
                                             "round_timeout_ms": 50, "tensors": [{"name": "w", "shape": [1]}]},
                  status=201)
        self.call("POST", "/v1/optimizers/sy/step", {"grads": [1]}, status=400, code="missing_worker")
        body, _ = self.call("POST", "/v1/optimizers/sy/step", {"worker": "a", "grads": [1]}, status=504,
                            code="round_timeout")
        self.assertEqual(body["error"]["step"], 0)

    def test_state(self):
        self.call("POST", "/v1/optimizers", {"name": "st", "algorithm": "adam", "tensors": [{"name": "w", "shape": [3]}]},
                  status=201)
        self.call("POST", "/v1/optimizers/st/step", {"grads": [1, 2, 3]})
        doc, _ = self.call("GET", "/v1/optimizers/st/state")
        self.assertEqual((doc["format"], doc["step"]), ("descent-state/1", 1))
        desc, _ = self.call("PUT", "/v1/optimizers/st2/state", doc, status=400, code="bad_request")  # name differs
        doc2 = {k: v for k, v in doc.items() if k not in ("name", "format", "size", "created")}
        desc, _ = self.call("PUT", "/v1/optimizers/st2/state", doc2, status=201)
        self.assertEqual((desc["name"], desc["step"]), ("st2", 1))
        desc, _ = self.call("PUT", "/v1/optimizers/st2/state", doc2, status=200)
        self.call("PUT", "/v1/optimizers/st2/state", dict(doc2, extra=1), status=400, code="bad_request")
        self.call("PUT", "/v1/optimizers/st2/state", {k: v for k, v in doc2.items() if k != "params"}, status=400,
                  code="bad_request")
        self.call("GET", "/v1/optimizers/nope/state", status=404, code="unknown_instance")
        self.call("DELETE", "/v1/optimizers/st2")

    def test_random_search(self):
        cand, _ = self.call("POST", "/v1/optimizers/rs/ask")
        self.assertEqual(sorted(cand), ["candidate", "params"])
        data, h = self.call("POST", "/v1/optimizers/rs/ask", {}, ACCEPT_BIN)
        self.assertEqual((len(data), int(h["descent-candidate"])), (8, cand["candidate"] + 1))
        self.call("POST", "/v1/optimizers/rs/ask", {"n": 1}, status=400, code="bad_request")
        self.call("POST", "/v1/optimizers/m/ask", status=409, code="wrong_algorithm")
        body, _ = self.call("POST", "/v1/optimizers/rs/tell", {"candidate": cand["candidate"], "loss": 2.5})
        self.assertEqual((body["improved"], body["best_loss"]), (True, 2.5))
        self.call("POST", "/v1/optimizers/rs/tell", {"candidate": cand["candidate"], "loss": 1}, status=409,
                  code="conflict")
        self.call("POST", "/v1/optimizers/m/tell", {"candidate": 1, "loss": 1}, status=409, code="wrong_algorithm")
        self.call("GET", "/v1/optimizers/rs")

    def test_playground(self):
        body, _ = self.call("POST", "/v1/playground", {"objective": "ravine", "algorithm": "sgd", "hyper": {"lr": 0.1},
                                                       "start": [1, 1], "steps": 3})
        self.assertEqual((len(body["trajectory"]), len(body["losses"])), (4, 4))
        self.call("POST", "/v1/playground", {"objective": "ravine", "algorithm": "sgd", "start": [1, 1], "steps": 3,
                                             "hyper": {"lr": -1}}, status=422, code="invalid_value")


class Tokens(Base):
    @classmethod
    def setUpClass(cls):
        import os
        import tempfile
        cls.dir = tempfile.mkdtemp(prefix="descent-openapi-")
        path = os.path.join(cls.dir, "tokens")
        with open(path, "w") as f:
            f.write("rw-token-1\nro:ro-token-1\n")
        cls.daemon_args = ("--token-file", path)
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        import shutil
        shutil.rmtree(cls.dir, ignore_errors=True)

    def test_401_403(self):
        _, h = self.call("GET", "/v1/optimizers", status=401, code="unauthorized")
        self.assertEqual(h["www-authenticate"], 'Bearer realm="descent"')
        self.call("GET", "/metrics", status=401, code="unauthorized")
        self.call("GET", "/healthz")
        ro = {"Authorization": "Bearer ro-token-1"}
        self.call("GET", "/v1/optimizers", headers=ro)
        self.call("POST", "/v1/optimizers", {"name": "t", "algorithm": "sgd", "tensors": [{"name": "w", "shape": [1]}]},
                  ro, status=403, code="forbidden")
        self.call("POST", "/v1/playground", {"objective": "ravine", "algorithm": "sgd", "start": [1, 1], "steps": 1},
                  ro, status=403, code="forbidden")


class ShuttingDown(Base):
    def test_waiting_push_gets_503(self):
        self.call("POST", "/v1/optimizers", {"name": "w", "algorithm": "sgd", "mode": "sync", "workers": 2,
                                             "tensors": [{"name": "w", "shape": [1]}]}, status=201)
        out = {}
        c = self.d.new_conn()

        def push():
            from harness import request
            out["reply"] = request(c, "POST", "/v1/optimizers/w/step", {"worker": "a", "grads": [1]}, raw=True)

        t = threading.Thread(target=push)
        t.start()
        deadline = time.monotonic() + 30
        while self.d.req("GET", "/v1/optimizers/w")[1]["waiting"] != 1:
            self.assertLess(time.monotonic(), deadline, "the push never waited")
            time.sleep(0.01)
        self.d.stop()
        t.join(60)
        c.close()
        st, data, h = out["reply"]
        rec = reply_record("POST", "/v1/optimizers/w/step", st, h, data)
        self.assertEqual(st, 503, data)
        self.assertIn(b'"shutting_down"', data)
        self.assertEqual(self.checker.check(rec), [])


if __name__ == "__main__":
    unittest.main()
