"""harness: start the real descentd on port 0 with a temporary data dir and
talk HTTP to it.  Shared by every integration test (standard library only).

    d = Daemon()                 # started; d.url, d.port, d.data_dir
    st, body, hdrs = d.req("GET", "/healthz")
    d.stop()                     # SIGTERM; asserts a clean exit (0)

DESCENT_BUILD selects the build directory (build/ by default; build/asan for
the sanitizer run).  Each daemon is stopped by its pid.
"""
import http.client
import json
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("DESCENT_BUILD", "build")
DESCENTD = os.path.join(ROOT, BUILD, "bin", "descentd")
DATA = os.path.join(ROOT, "tests", "data")
SANITIZED = "asan" in BUILD


class Daemon:
    def __init__(self, *args, data_dir=None, env=None, keep_dir=False, tls=False):
        self.own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="descent-test-")
        self.keep_dir = keep_dir
        self.args = list(args)
        self.env = env
        self.tls = tls
        self.start()

    def start(self):
        cmd = [DESCENTD, "--listen", "127.0.0.1:0", "--data-dir", self.data_dir] + self.args
        env = dict(os.environ)
        env.update(self.env or {})
        self.log_path = os.path.join(tempfile.gettempdir(), "descentd-%d-%d.log" % (os.getpid(), time.monotonic_ns()))
        self.log = open(self.log_path, "w+")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, env=env, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError("descentd did not start: %r\n%s" % (line, self.logs()))
        self.url = line.split()[-1]
        self.port = int(self.url.rsplit(":", 1)[1])
        self.conn = None

    def logs(self):
        if not self.log.closed:
            self.log.flush()
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""

    def connection(self):
        if self.conn is None:
            if self.tls:
                import ssl
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                self.conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=60, context=ctx)
            else:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        return self.conn

    def req(self, method, path, body=None, headers=None, raw=False):
        """One request on the keep-alive connection: (status, parsed body, headers)."""
        hdrs = dict(headers or {})
        if body is not None and not isinstance(body, (bytes, bytearray, str)):
            body = json.dumps(body)
            hdrs.setdefault("Content-Type", "application/json")
        for attempt in range(2):
            c = self.connection()
            try:
                c.request(method, path, body=body, headers=hdrs)
                resp = c.getresponse()
                data = resp.read()
                break
            except (http.client.HTTPException, ConnectionError, OSError):
                self.conn = None
                if attempt:
                    raise
        if resp.getheader("Connection", "").lower() == "close":
            self.conn.close()
            self.conn = None
        h = {k.lower(): v for k, v in resp.getheaders()}
        if raw or not data:
            return resp.status, data, h
        if h.get("content-type", "").startswith("application/json"):
            return resp.status, json.loads(data), h
        return resp.status, data, h

    def stop(self, sig=signal.SIGTERM, expect_clean=True):
        if self.conn:
            self.conn.close()
            self.conn = None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                code = self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait()
                raise AssertionError("descentd did not stop on %s" % sig)
        else:
            code = self.proc.returncode
        self.proc.stdout.close()
        if expect_clean and code != 0:
            raise AssertionError("descentd exited with %s\n%s" % (code, self.logs()[-4000:]))
        self.log.close()
        return code

    def kill9(self):
        if self.conn:
            self.conn.close()
            self.conn = None
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.log.close()

    def cleanup(self):
        if self.proc.poll() is None:
            self.stop(expect_clean=False)
        if self.own_dir and not self.keep_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        try:
            os.unlink(self.log_path)
        except OSError:
            pass


def floats_to_bytes(values):
    return struct.pack("<%df" % len(values), *values)


def bytes_to_floats(data):
    return list(struct.unpack("<%df" % (len(data) // 4), data))


def f32(x):
    """x rounded to float32, as a Python float."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def load_case(name):
    with open(os.path.join(DATA, "optim", name + ".json")) as f:
        return json.load(f)


TORCH_CASES = sorted(n[:-5] for n in os.listdir(os.path.join(DATA, "optim")) if n.endswith(".json"))


class DaemonTest(unittest.TestCase):
    """A test case with one fresh daemon per test (self.d)."""

    daemon_args = ()

    def setUp(self):
        self.d = Daemon(*self.daemon_args)

    def tearDown(self):
        try:
            self.d.stop()
        finally:
            self.d.cleanup()

    def assertError(self, resp, status, code):
        st, body, _ = resp
        self.assertEqual(st, status, body)
        self.assertIsInstance(body, dict, body)
        self.assertEqual(body["error"]["code"], code, body)
        self.assertTrue(body["error"]["message"], body)

    def create(self, name="m", algorithm="sgd", n=4, hyper=None, **kw):
        spec = {"name": name, "algorithm": algorithm, "hyper": hyper or {},
                "tensors": kw.pop("tensors", [{"name": "w", "shape": [n]}])}
        spec.update(kw)
        st, body, _ = self.d.req("POST", "/v1/optimizers", spec)
        self.assertEqual(st, 201, body)
        return body
