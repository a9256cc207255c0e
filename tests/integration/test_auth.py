"""test_auth: --token-file with a read-write and a read-only (ro:) token.

Every route answers 401 without a token and with a wrong one (except
/healthz and the dashboard page), the read-only token may GET but gets 403
on every write, the read-write token may do everything, a refused request
changes nothing, and no token ever appears in the daemon's log (even at
--log-level debug)."""
import json
import os
import subprocess
import tempfile
import unittest

from harness import DESCENTD, Daemon, floats_to_bytes, request

RW = "rw-7f3a9c2e5b1d4e6f8a0b2c4d6e8f0a1b"
RO = "ro-1c3e5a7b9d2f4a6c8e0b1d3f5a7c9e2d"
RW2 = "second.rw_token-XYZ"
WRONG = [
    RW + "x",            # longer
    RW[:-1],             # a prefix
    RO.upper(),          # case matters
    "ro:" + RO,          # the file's syntax is not the token
    "nope",
]

# (method, path, body, is_write)
ROUTES = [
    ("GET", "/metrics", None, False),
    ("GET", "/v1/optimizers", None, False),
    ("GET", "/v1/optimizers/m", None, False),
    ("GET", "/v1/optimizers/m/params", None, False),
    ("GET", "/v1/optimizers/m/params?wait_for_step=0&timeout_ms=10", None, False),
    ("GET", "/v1/optimizers/m/state", None, False),
    ("GET", "/v1/optimizers/m/workers", None, False),
    ("GET", "/v1/optimizers/m/history", None, False),
    ("GET", "/v1/optimizers/rs", None, False),
    ("POST", "/v1/optimizers", {"name": "new", "algorithm": "sgd", "tensors": [{"name": "w", "shape": [1]}]}, True),
    ("PUT", "/v1/optimizers/new2", {"algorithm": "sgd", "tensors": [{"name": "w", "shape": [1]}]}, True),
    ("PATCH", "/v1/optimizers/m", {"hyper": {"lr": 0.5}}, True),
    ("POST", "/v1/optimizers/m/step", {"grads": [1, 2]}, True),
    ("POST", "/v1/optimizers/m/step?worker=w", floats_to_bytes([1, 2]), True),
    ("PUT", "/v1/optimizers/m2/state", {"algorithm": "sgd", "step": 0, "tensors": [{"name": "w", "shape": [1]}],
                                        "params": {"w": [1]}}, True),
    ("POST", "/v1/optimizers/rs/ask", {}, True),
    ("POST", "/v1/optimizers/rs/tell", {"candidate": 1, "loss": 1.0}, True),
    ("POST", "/v1/playground", {"objective": "ravine", "algorithm": "sgd", "hyper": {"lr": 0.1}, "start": [1, 1],
                                "steps": 3}, True),
    ("DELETE", "/v1/optimizers/m", None, True),
]


def send(d, method, path, body, token=None, scheme="Bearer"):
    hdrs = {}
    if token is not None:
        hdrs["Authorization"] = "%s %s" % (scheme, token)
    if isinstance(body, bytes):
        hdrs["Content-Type"] = "application/octet-stream"
    c = d.new_conn()
    try:
        return request(c, method, path, body, hdrs)
    finally:
        c.close()


class Auth(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="descent-auth-")
        cls.tokens = os.path.join(cls.dir, "tokens")
        with open(cls.tokens, "w") as f:
            f.write("# descent tokens\n\n%s   # the trainer\nro:%s\r\n  rw:%s  \n" % (RW, RO, RW2))
        cls.d = Daemon("--token-file", cls.tokens, "--log-level", "debug")

    @classmethod
    def tearDownClass(cls):
        try:
            cls.d.stop()
        finally:
            cls.d.cleanup()
            import shutil
            shutil.rmtree(cls.dir, ignore_errors=True)

    def setUp(self):
        # a fresh, known state for every test: m (sgd) and rs (random search)
        for name in ("m", "m2", "new", "new2", "rs"):
            send(self.d, "DELETE", "/v1/optimizers/" + name, None, RW)
        for spec in ({"name": "m", "algorithm": "sgd", "hyper": {"lr": 1.0},
                      "tensors": [{"name": "w", "shape": [2], "values": [1, 2]}]},
                     {"name": "rs", "algorithm": "random_search", "tensors": [{"name": "x", "shape": [1]}]}):
            st, body, _ = send(self.d, "POST", "/v1/optimizers", spec, RW)
            self.assertEqual(st, 201, body)

    def snapshot(self):
        """Everything a refused request must leave alone."""
        st, lst, _ = send(self.d, "GET", "/v1/optimizers", None, RW)
        names = [o["name"] for o in lst["optimizers"]]
        return names, {n: send(self.d, "GET", "/v1/optimizers/%s/state" % n, None, RW)[1] for n in names}

    def test_public_routes(self):
        for token in (None, "nope", RO, RW):
            st, body, _ = send(self.d, "GET", "/healthz", None, token)
            self.assertEqual((st, body), (200, {"status": "ok"}))
            st, body, h = send(self.d, "GET", "/", None, token)
            self.assertEqual(st, 200)
            self.assertTrue(h["content-type"].startswith("text/html"))

    def test_no_token_and_wrong_tokens(self):
        before = self.snapshot()
        for method, path, body, _ in ROUTES:
            for token, scheme in [(None, None)] + [(t, "Bearer") for t in WRONG] + [(RW, "Basic"), (RW, "Token"),
                                                                                     ("", "Bearer")]:
                with self.subTest(route="%s %s" % (method, path), token=token, scheme=scheme):
                    st, rep, h = send(self.d, method, path, body, token, scheme or "Bearer")
                    self.assertEqual(st, 401, rep)
                    self.assertEqual(rep["error"]["code"], "unauthorized")
                    self.assertIn("Bearer", h.get("www-authenticate", ""))
        # a token in the query string is not a token
        st, rep, _ = send(self.d, "GET", "/v1/optimizers?access_token=" + RW, None)
        self.assertEqual(st, 401)
        self.assertEqual(self.snapshot(), before)

    def test_read_only_token(self):
        before = self.snapshot()
        for method, path, body, write in ROUTES:
            with self.subTest(route="%s %s" % (method, path)):
                st, rep, _ = send(self.d, method, path, body, RO)
                if write:
                    self.assertEqual(st, 403, rep)
                    self.assertEqual(rep["error"]["code"], "forbidden")
                else:
                    self.assertEqual(st, 200, rep)
        # HEAD is a read
        c = self.d.new_conn()
        c.request("HEAD", "/v1/optimizers/m", headers={"Authorization": "Bearer " + RO})
        r = c.getresponse()
        r.read()
        c.close()
        self.assertEqual(r.status, 200)
        self.assertEqual(self.snapshot(), before)

    def test_read_write_tokens(self):
        expect = {"POST /v1/optimizers": 201, "PUT /v1/optimizers/new2": 201, "PUT /v1/optimizers/m2/state": 201}
        for token in (RW, RW2):
            self.setUp()
            for method, path, body, _ in ROUTES:
                with self.subTest(route="%s %s" % (method, path), token=token[:3]):
                    st, rep, _ = send(self.d, method, path, body, token)
                    self.assertEqual(st, expect.get("%s %s" % (method, path), 200), rep)
        # lower-case scheme and extra spaces are still a bearer token
        st, rep, _ = send(self.d, "GET", "/v1/optimizers", None, "  " + RW, "bearer")
        self.assertEqual(st, 200, rep)

    def test_tokens_never_logged(self):
        # make sure there is something in the log, then look for every token
        for t in [RW, RO, RW2] + WRONG:
            send(self.d, "GET", "/v1/optimizers/m", None, t)
            send(self.d, "POST", "/v1/optimizers/m/step", {"grads": [1]}, t)
        # broken requests carrying a token (libmicrohttpd logs its own complaints at debug)
        from test_hostile import exchange
        from harness import raw_request
        for t in (RW, RO):
            exchange(self.d.port, raw_request("GET", "/v1/optimizers", b"", {"Authorization": "Bearer " + t,
                                                                             "X-Big": "a" * 300000}))
            exchange(self.d.port, b"GET /v1/optimizers HTTP/1.1\r\nAuthorization: Bearer " + t.encode() +
                     b"\r\nBad\0Header\r\nContent-Length: x\r\n\r\n")
            exchange(self.d.port, raw_request("POST", "/v1/optimizers/m/step?token=" + t, b"{}",
                                              {"Authorization": "Bearer " + t, "Content-Type": "application/json",
                                               "Content-Length": "-1"}))
        log = self.d.wait_log("instance created")
        self.assertIn("instance created", log)
        for t in [RW, RO, RW2] + WRONG:
            self.assertNotIn(t, log)
        for part in (RW[3:20], RO[3:20]):
            self.assertNotIn(part, log)


class TokenFileErrors(unittest.TestCase):
    def run_daemon(self, content):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "tokens")
            if content is not None:
                with open(path, "w") as f:
                    f.write(content)
            p = subprocess.run([DESCENTD, "--listen", "127.0.0.1:0", "--token-file", path], capture_output=True,
                               text=True, timeout=30)
            return p, path

    def test_bad_token_files_refuse_to_start(self):
        for content in (None, "", "# only a comment\n\n", "ro:\n", "two words\n", "x" * 300 + "\n"):
            with self.subTest(content=content if content is None else content[:20]):
                p, path = self.run_daemon(content)
                self.assertNotEqual(p.returncode, 0)
                self.assertNotIn("listening", p.stdout)
                self.assertIn("token", p.stderr)
        p, _ = self.run_daemon("secret-one\ntwo words\n")
        self.assertNotIn("secret-one", p.stderr + p.stdout)


if __name__ == "__main__":
    unittest.main()
