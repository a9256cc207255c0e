"""test_body_memory: a declared body costs nothing until its bytes arrive, and
the bodies in flight share one bounded budget (--max-body-memory, 503 busy).

  - connections that send ~130 bytes of headers declaring Content-Length:
    536870000 and then nothing leave the daemon's resident memory (VmRSS)
    where it was, take nothing from the budget, and /healthz answers
    meanwhile; an honest 40 MB binary push still works beside them (twice:
    the second takes the first's pooled buffer whole);
  - a request refused by its token, route or query is answered from its
    headers alone (401, 403, 400, 404, 405), before any of its body;
  - with a small --max-body-memory: a declared body larger than the budget is
    refused when its headers arrive, a chunked one that outgrows it at its
    end, and a body that does not fit beside one in flight when its headers
    arrive; each with 503 `busy`, the instance unchanged, and bodies that
    fit still answered.
"""
import os
import socket
import struct
import time
import unittest

from harness import Daemon, parse_response, raw_request, request

SILENT = 4
DECLARED = 536870000  # 512 MiB - 912: under the default --max-body
MIB = 1 << 20


def rss_bytes(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for pid %d" % pid)


def metric(d, name):
    st, body, _ = d.req("GET", "/metrics")
    assert st == 200, (st, body)
    for line in body.decode().split("\n"):
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError("no %s in /metrics" % name)


def pattern(n, scale):
    """n float32 values (a repeated pattern), scaled exactly by scale (a small
    integer); 0.0 + ... keeps zeros positive, as 0 - lr * 0 is in the daemon."""
    base = [((i * 37) % 1000 - 500) / 1024.0 for i in range(1000)]
    one = struct.pack("<1000f", *[0.0 + v * scale for v in base])
    return one * (n // 1000) + one[:4 * (n % 1000)]


def read_response(s, timeout=30):
    s.settimeout(timeout)
    buf = b""
    while True:
        r = parse_response(buf)
        if r:
            return r
        chunk = s.recv(1 << 16)
        if not chunk:
            return parse_response(buf)
        buf += chunk


def error_code(resp):
    import json
    return json.loads(resp[2])["error"]["code"]


def silent_headers(path):
    """About 130 bytes: a push that declares half a gigabyte and sends none of it."""
    return ("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            "Content-Length: %d\r\n\r\n" % (path, DECLARED)).encode()


class SilentBodies(unittest.TestCase):
    def setUp(self):
        self.d = Daemon()
        self.socks = []

    def tearDown(self):
        for s in self.socks:
            s.close()
        try:
            self.d.stop()
        finally:
            self.d.cleanup()

    def test_declared_bodies_take_nothing_until_they_arrive(self):
        d = self.d
        n = 10 ** 7  # 40 MB of float32
        st, body, _ = d.req("POST", "/v1/optimizers", {"name": "big", "algorithm": "sgd", "hyper": {"lr": 1.0},
                                                       "tensors": [{"name": "w", "shape": [n], "init": "zeros"}]})
        self.assertEqual(st, 201, body)
        pid = d.proc.pid
        before = rss_bytes(pid)
        head = silent_headers("/v1/optimizers/big/step")
        self.assertLess(len(head), 160)
        for _ in range(SILENT):
            s = socket.create_connection(("127.0.0.1", d.port), timeout=30)
            s.sendall(head)
            self.socks.append(s)
        # the daemon has them all (and is reading their bodies) once it counts them
        deadline = time.monotonic() + 10
        while metric(d, "descent_http_connections") < SILENT + 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertGreaterEqual(metric(d, "descent_http_connections"), SILENT + 1)
        peak = 0
        for _ in range(30):  # a while, sampled: memory taken at the declared size would show
            c = d.new_conn(timeout=30)
            st, body, _ = request(c, "GET", "/healthz")
            c.close()
            self.assertEqual((st, body), (200, {"status": "ok"}))
            peak = max(peak, rss_bytes(pid))
            time.sleep(0.05)
        self.assertLess(peak - before, 64 * MIB,
                        "%d silent bodies of %d bytes took %d MiB" % (SILENT, DECLARED, (peak - before) // MIB))
        self.assertEqual(metric(d, "descent_http_body_bytes"), 0)
        # beside them, an honest 40 MB push works, twice (the second in the first's buffer)
        hdrs = {"Content-Type": "application/octet-stream", "Accept": "application/octet-stream"}
        for k in (1, 2):
            st, body, h = d.req("POST", "/v1/optimizers/big/step", pattern(n, 1.0), hdrs, raw=True)
            self.assertEqual(st, 200, body[:200])
            self.assertEqual(h["descent-step"], str(k))
            self.assertEqual(len(body), 4 * n)
            self.assertTrue(body == pattern(n, -float(k)), "params after %d pushes of g are not -%d g" % (k, k))
        self.assertEqual(metric(d, "descent_http_body_bytes"), 0)
        for s in self.socks:  # still waiting for their bodies: nothing was answered
            s.setblocking(False)
            try:
                self.assertEqual(s.recv(1), b"")
                self.fail("a silent connection was answered or closed")
            except BlockingIOError:
                pass


class CheckedFirst(unittest.TestCase):
    """The token, the route and the query are checked from the headers alone:
    a refused request never gets to send (or make the daemon hold) its body."""

    def setUp(self):
        import tempfile
        self.dir = tempfile.mkdtemp(prefix="descent-tokens-")
        self.tokens = os.path.join(self.dir, "tokens")
        with open(self.tokens, "w") as f:
            f.write("rw-token-123\nro:ro-token-456\n")
        self.d = Daemon("--token-file", self.tokens)

    def tearDown(self):
        try:
            self.d.stop()
        finally:
            self.d.cleanup()
            import shutil
            shutil.rmtree(self.dir, ignore_errors=True)

    def headers_only(self, path, extra=""):
        s = socket.create_connection(("127.0.0.1", self.d.port), timeout=30)
        try:
            s.sendall(("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n%s"
                       "Content-Length: %d\r\n\r\n" % (path, extra, DECLARED)).encode())
            return read_response(s)
        finally:
            s.close()

    def test_refused_before_the_body(self):
        r = self.headers_only("/v1/optimizers/m/step")
        self.assertEqual((r[0], error_code(r)), (401, "unauthorized"))
        r = self.headers_only("/v1/optimizers/m/step", "Authorization: Bearer ro-token-456\r\n")
        self.assertEqual((r[0], error_code(r)), (403, "forbidden"))
        r = self.headers_only("/v1/optimizers/m/step?stpe=1", "Authorization: Bearer rw-token-123\r\n")
        self.assertEqual((r[0], error_code(r)), (400, "bad_request"))
        r = self.headers_only("/v1/optimizers/m/steps", "Authorization: Bearer rw-token-123\r\n")
        self.assertEqual((r[0], error_code(r)), (404, "not_found"))
        r = self.headers_only("/v1/optimizers/m/params", "Authorization: Bearer rw-token-123\r\n")
        self.assertEqual((r[0], error_code(r)), (405, "method_not_allowed"))
        self.assertEqual(r[1]["allow"], "GET")


class Budget(unittest.TestCase):
    """--max-body-memory 8M: every refusal is 503 busy and changes nothing."""

    @classmethod
    def setUpClass(cls):
        cls.d = Daemon("--max-body-memory", "8M")
        for name, n in (("big", 10 * MIB // 4), ("c", 6 * MIB // 4), ("s", 1000)):
            st, body, _ = cls.d.req("POST", "/v1/optimizers", {
                "name": name, "algorithm": "sgd", "hyper": {"lr": 1.0},
                "tensors": [{"name": "w", "shape": [n], "init": "zeros"}]})
            assert st == 201, body

    @classmethod
    def tearDownClass(cls):
        try:
            cls.d.stop()
        finally:
            cls.d.cleanup()

    def assertUnchanged(self, name, step, n, scale):
        st, body, h = self.d.req("GET", "/v1/optimizers/%s/params" % name,
                                 headers={"Accept": "application/octet-stream"}, raw=True)
        self.assertEqual(st, 200)
        self.assertEqual(h["descent-step"], str(step))
        self.assertTrue(body == (pattern(n, scale) if scale else bytes(4 * n)), "%s's parameters changed" % name)

    def push_raw(self, name, data):
        s = socket.create_connection(("127.0.0.1", self.d.port), timeout=30)
        try:
            s.sendall(raw_request("POST", "/v1/optimizers/%s/step" % name, data,
                                  {"Content-Type": "application/octet-stream"}))
            return read_response(s)
        finally:
            s.close()

    def refused_at_headers(self, name, length):
        """Sends only the headers of a push declaring length bytes: the answer
        must come without any of the body."""
        s = socket.create_connection(("127.0.0.1", self.d.port), timeout=30)
        try:
            s.sendall(("POST /v1/optimizers/%s/step HTTP/1.1\r\nHost: x\r\n"
                       "Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n"
                       % (name, length)).encode())
            return read_response(s)
        finally:
            s.close()

    def test_limit_in_metrics(self):
        self.assertEqual(metric(self.d, "descent_http_body_bytes_limit"), 8 * MIB)

    def test_declared_over_the_budget_refused_at_the_headers(self):
        n = 10 * MIB // 4
        r = self.refused_at_headers("big", 4 * n)
        self.assertEqual(r[0], 503, r)
        self.assertEqual(error_code(r), "busy")
        self.assertIn("--max-body-memory", r[2].decode())
        self.assertUnchanged("big", 0, n, 0)

    def test_chunked_body_outgrowing_the_budget_refused_at_its_end(self):
        n = 10 * MIB // 4
        data = pattern(n, 1.0)
        s = socket.create_connection(("127.0.0.1", self.d.port), timeout=30)
        try:
            s.sendall(b"POST /v1/optimizers/big/step HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            step = 1 << 16
            for i in range(0, len(data), step):  # all of it is read, and dropped
                piece = data[i:i + step]
                s.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
            s.sendall(b"0\r\n\r\n")
            r = read_response(s)
        finally:
            s.close()
        self.assertEqual(r[0], 503, r)
        self.assertEqual(error_code(r), "busy")
        self.assertUnchanged("big", 0, n, 0)
        self.assertEqual(metric(self.d, "descent_http_body_bytes"), 0)

    def test_body_that_does_not_fit_beside_one_in_flight(self):
        n = 6 * MIB // 4
        data = pattern(n, 1.0)
        a = socket.create_connection(("127.0.0.1", self.d.port), timeout=30)
        try:
            a.sendall(raw_request("POST", "/v1/optimizers/c/step", b"",
                                  {"Content-Type": "application/octet-stream",
                                   "Content-Length": str(len(data))}))
            a.sendall(data[:5 * MIB])
            deadline = time.monotonic() + 10
            while metric(self.d, "descent_http_body_bytes") < 5 * MIB and time.monotonic() < deadline:
                time.sleep(0.02)
            held = metric(self.d, "descent_http_body_bytes")
            self.assertGreaterEqual(held, 5 * MIB)
            self.assertLessEqual(held, 8 * MIB)
            r = self.refused_at_headers("c", len(data))  # 6 MB more would pass 8 MB
            self.assertEqual(r[0], 503, r)
            self.assertEqual(error_code(r), "busy")
            self.assertUnchanged("c", 0, n, 0)
            r = self.push_raw("s", pattern(1000, 1.0))  # a small one still fits
            self.assertEqual(r[0], 200, r)
            a.sendall(data[5 * MIB:])  # the first one completes
            r = read_response(a)
            self.assertEqual(r[0], 200, r)
        finally:
            a.close()
        self.assertUnchanged("c", 1, n, -1.0)
        r = self.push_raw("c", data)  # and now there is room (the pool's buffer, taken whole)
        self.assertEqual(r[0], 200, r)
        self.assertUnchanged("c", 2, n, -2.0)
        self.assertEqual(metric(self.d, "descent_http_body_bytes"), 0)


if __name__ == "__main__":
    unittest.main()
