"""test_openapi_check: openapi_check.py, the checker that holds every recorded
reply against proto/openapi.yaml, can fail.  Fabricated records, right and
wrong, with no daemon: each wrong one must be refused for its own reason, and
the command must exit 1 on a directory holding one.  Also: the step reply of
the old document (`oneOf: [Params, StepOnly]` with StepOnly open) is refused,
as strict validators refused it."""
import copy
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest

from harness import reply_record
from openapi_check import Checker, load_doc

HERE = os.path.dirname(os.path.abspath(__file__))
JSON = {"content-type": "application/json"}


def rec(method, path, status, body=b"", headers=None):
    if not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    return reply_record(method, path, status, dict(headers if headers is not None else JSON), body)


def err(code, msg="m"):
    return {"error": {"code": code, "message": msg}}


DESC = {"name": "m", "algorithm": "sgd", "hyper": {"lr": 0.1}, "mode": "async", "max_staleness": None,
        "worker_lease_ms": 30000, "clip_grad_norm": None, "schedule": None,
        "tensors": [{"name": "w", "shape": [4], "offset": 0, "count": 4}], "size": 4,
        "step": 0, "lr": 0.1, "workers_seen": 0, "waiting": 0, "created": 1.5e9}


class Checks(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.doc = load_doc()

    def setUp(self):
        self.c = Checker(self.doc)

    def ok(self, r):
        self.assertEqual(self.c.check(r), [], r)

    def bad(self, r, *words):
        problems = self.c.check(r)
        self.assertTrue(problems, "accepted: %s" % r)
        text = " ".join(problems)
        for w in words:
            self.assertIn(w, text)

    def test_right_replies_pass(self):
        self.ok(rec("GET", "/healthz", 200, {"status": "ok"}))
        self.ok(rec("GET", "/v1/optimizers/m", 200, DESC))
        self.ok(rec("POST", "/v1/optimizers/m/step", 200, {"step": 1, "params": {"w": [1, 2, 3, 4]}}))
        self.ok(rec("POST", "/v1/optimizers/m/step?params=none", 200, {"step": 1}))
        self.ok(rec("POST", "/v1/optimizers/m/step", 200, struct.pack("<4f", 1, 2, 3, 4),
                    {"content-type": "application/octet-stream", "descent-step": "3"}))
        self.ok(rec("GET", "/metrics", 200, "descent_step 1\n", {"content-type": "text/plain; version=0.0.4; charset=utf-8"}))
        self.ok(rec("HEAD", "/v1/optimizers/m", 200, b""))
        self.ok(rec("DELETE", "/v1/optimizers/m/step", 405, err("method_not_allowed"),
                    dict(JSON, allow="POST")))
        self.ok(rec("GET", "/nope", 404, err("not_found")))
        self.ok(rec("GET", "/v1/optimizers/a%2Fb/step", 404, err("not_found")))  # decoded: not a route
        self.ok(rec("GET", "/v1/optimizers/m", 401, err("unauthorized"),
                    dict(JSON, **{"www-authenticate": 'Bearer realm="descent"'})))
        self.ok(rec("POST", "/v1/optimizers/m/step", 409, {"error": {"code": "stale_gradient", "message": "x", "step": 4}}))

    def test_undocumented_status(self):
        self.bad(rec("GET", "/healthz", 201, {"status": "ok"}), "status 201 is not documented")
        self.bad(rec("GET", "/v1/optimizers/m/params", 504, err("round_timeout")), "status 504")
        self.bad(rec("GET", "/nope", 200, {"status": "ok"}), "unknown path", "status 200")

    def test_undocumented_content_type(self):
        self.bad(rec("GET", "/healthz", 200, "ok", {"content-type": "text/plain"}), "Content-Type 'text/plain'")
        self.bad(rec("GET", "/v1/optimizers", 200, b"\0\0\0\0", {"content-type": "application/octet-stream"}),
                 "not documented")
        self.bad(rec("GET", "/healthz", 200, {"status": "ok"}, {}), "no Content-Type")
        self.bad(rec("GET", "/metrics", 200, "x", {"content-type": "text/plain; version=0.0.5; charset=utf-8"}),
                 "Content-Type")

    def test_body_that_does_not_match(self):
        self.bad(rec("GET", "/healthz", 200, {"status": "sick"}), "body at status")
        self.bad(rec("POST", "/v1/optimizers/m/step", 200, {"step": "1"}), "body")
        self.bad(rec("POST", "/v1/optimizers/m/step", 200, {"step": 1, "params": 5}), "body")
        self.bad(rec("POST", "/v1/optimizers/m/step", 200, {"step": 1, "params": {"w": ["a"]}}), "params/w/0")
        d = dict(DESC)
        del d["size"]
        self.bad(rec("GET", "/v1/optimizers/m", 200, d), "'size' is a required property")
        self.bad(rec("GET", "/healthz", 200, b"{not json"), "not JSON")
        self.bad(rec("POST", "/v1/optimizers/m/step", 200, b"\0" * 6, {"content-type": "application/octet-stream"}),
                 "a float32 body of 6 bytes")
        self.bad(rec("HEAD", "/v1/optimizers/m", 200, DESC), "HEAD reply with a")
        half = {"content-type": "application/octet-stream; dtype=bfloat16"}
        self.ok(rec("GET", "/v1/optimizers/m/params", 200, b"\0" * 6, half))
        self.bad(rec("GET", "/v1/optimizers/m/params", 200, b"\0" * 5, half), "a 16-bit body of 5 bytes")
        self.bad(rec("GET", "/v1/optimizers/m/params", 200, b"\0" * 6,
                     {"content-type": "application/octet-stream; dtype=float8"}), "not documented")

    def test_error_codes(self):
        self.bad(rec("GET", "/v1/optimizers/m", 404, err("bad_json")), "error code 'bad_json' is not one of")
        self.bad(rec("GET", "/v1/optimizers/m", 400, err("nonsense")), "error/code")
        self.bad(rec("GET", "/v1/optimizers/m", 404, {"error": {"code": "unknown_instance"}}), "'message' is a required")
        self.bad(rec("GET", "/v1/optimizers/m", 404, {"code": "unknown_instance", "message": "x"}), "'error' is a required")

    def test_headers(self):
        self.bad(rec("DELETE", "/v1/optimizers/m/step", 405, err("method_not_allowed"), dict(JSON, allow="GET")),
                 "Allow 'GET'")
        self.bad(rec("DELETE", "/v1/optimizers/m/step", 405, err("method_not_allowed")), "required header Allow")
        self.bad(rec("GET", "/v1/optimizers/m", 401, err("unauthorized")), "required header WWW-Authenticate")
        self.bad(rec("POST", "/v1/optimizers/m/step", 200, b"", {"content-type": "application/octet-stream",
                                                                  "descent-step": "-1"}), "header Descent-Step")
        self.bad(rec("POST", "/v1/optimizers/m/step", 200, b"", {"content-type": "application/octet-stream",
                                                                  "descent-step": "x"}), "not an integer")

    def test_the_old_step_reply_is_refused(self):
        old = copy.deepcopy(self.doc)
        old["components"]["schemas"]["StepOnly"] = {"type": "object", "required": ["step"],
                                                    "properties": {"step": {"type": "integer"}}}
        c = Checker(old)
        problems = c.check(rec("POST", "/v1/optimizers/m/step", 200, {"step": 1, "params": {"w": [1]}}))
        self.assertTrue(any("is valid under each of" in p for p in problems), problems)

    def test_the_command_fails_on_a_bad_record(self):
        d = tempfile.mkdtemp(prefix="descent-openapi-")
        try:
            cmd = [sys.executable, os.path.join(HERE, "openapi_check.py"), d]
            with open(os.path.join(d, "x-1.jsonl"), "w") as f:
                f.write(json.dumps(rec("GET", "/healthz", 200, {"status": "ok"})) + "\n")
            p = subprocess.run(cmd, capture_output=True, text=True)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            self.assertIn("1 replies checked", p.stdout)
            p = subprocess.run(cmd[:2] + ["--min-records", "2"] + cmd[2:], capture_output=True, text=True)
            self.assertEqual(p.returncode, 1, p.stdout)
            with open(os.path.join(d, "y-2.jsonl"), "w") as f:
                f.write(json.dumps(rec("GET", "/healthz", 418, {"status": "ok"})) + "\n")
            p = subprocess.run(cmd, capture_output=True, text=True)
            self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
            self.assertIn("status 418 is not documented", p.stdout)
            self.assertIn("y-2.jsonl:1", p.stdout)
        finally:
            shutil.rmtree(d)


if __name__ == "__main__":
    unittest.main()
