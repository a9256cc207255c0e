"""harness: start the real descentd on port 0 with a temporary data dir and
talk HTTP to it.  Shared by every integration test (standard library only).

    d = Daemon()                 # started; d.url, d.port, d.data_dir
    st, body, hdrs = d.req("GET", "/healthz")
    d.stop()                     # SIGTERM; asserts a clean exit (0)

DESCENT_BUILD selects the build directory (build/ by default; build/asan for
the sanitizer run).  Each daemon is stopped by its pid.  DESCENT_QUICK=1
(run.py --quick, the sanitizer run) asks tests to shorten their long loops:
use quick(full, short), never skip an assertion.

DESCENT_WRAPPER, if set, prefixes the daemon's command line (make
check-valgrind sets it to a valgrind command).

More helpers: d.token (sent as a bearer token when set), d.new_conn() (a
fresh keep-alive connection), request(conn, ...) (one request on any
connection), d.export(name), d.restart(), d.wait_log(text).

DESCENT_OPENAPI_RECORD, if set (run.py sets it), is a directory: every reply
that d.req() and request() receive is appended there as one JSON line
(method, path, status, headers, body) to MODULE-PID.jsonl, and after every
module has run, openapi_check.py validates each line against
proto/openapi.yaml.  Not recorded, knowingly: the raw-socket exchanges
(raw_request/parse_response in test_hostile, test_connections, test_auth,
test_sync's fan-in), which send malformed HTTP on purpose and may be answered
by libmicrohttpd itself, and the other clients (the CLI, the Python client,
curl in test_docs/test_readme/test_tls, Chromium, nginx in test_nginx, and
test_tls's and test_auth's own http.client calls); test_openapi.py sends the
error cases those cover through d.req() instead.
"""
import atexit
import http.client
import json
import os
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("DESCENT_BUILD", "build")
DESCENTD = os.path.join(ROOT, BUILD, "bin", "descentd")
DATA = os.path.join(ROOT, "tests", "data")
SANITIZED = "asan" in BUILD
QUICK = os.environ.get("DESCENT_QUICK") == "1"
WRAPPER = shlex.split(os.environ.get("DESCENT_WRAPPER", ""))


RECORD_DIR = os.environ.get("DESCENT_OPENAPI_RECORD")
RECORD_HEADERS = ("content-type", "allow", "www-authenticate", "descent-step", "descent-candidate", "server-timing",
                  "content-length")
_record_lock = threading.Lock()
_record_file = None


def reply_record(method, path, status, headers, data, req_headers=None):
    """The record of one reply that openapi_check.py checks: headers are the
    reply's, lower-cased; binary bodies are kept as their length."""
    rec = {"method": method, "path": path, "status": status,
           "headers": {k: v for k, v in headers.items() if k in RECORD_HEADERS},
           "accept": next((v for k, v in (req_headers or {}).items() if k.lower() == "accept"), None),
           "body_len": len(data)}
    if not headers.get("content-type", "").startswith("application/octet-stream"):
        try:
            rec["body"] = data.decode("utf-8")
        except UnicodeDecodeError:
            rec["body_latin1"] = data.decode("latin-1")
    return rec


def record_reply(method, path, status, headers, data, req_headers=None):
    """Appends one reply to DESCENT_OPENAPI_RECORD/MODULE-PID.jsonl (no-op when unset)."""
    global _record_file
    if not RECORD_DIR:
        return
    line = json.dumps(reply_record(method, path, status, headers, data, req_headers)) + "\n"
    with _record_lock:
        if _record_file is None:
            os.makedirs(RECORD_DIR, exist_ok=True)
            mod = os.path.basename(sys.argv[-1]) if len(sys.argv) > 1 else "main"
            mod = "".join(ch for ch in mod if ch.isalnum() or ch in "_.-")[:60] or "main"
            _record_file = open(os.path.join(RECORD_DIR, "%s-%d.jsonl" % (mod, os.getpid())), "a")
            atexit.register(_record_file.close)
        _record_file.write(line)
        _record_file.flush()


def quick(full, short):
    """full normally, short under DESCENT_QUICK=1 (the sanitizer run)."""
    return short if QUICK else full


def request(conn, method, path, body=None, headers=None, raw=False):
    """One request on conn: (status, parsed body, lower-cased headers).
    JSON-encodes a body that is not bytes or str; parses JSON replies."""
    hdrs = dict(headers or {})
    if body is not None and not isinstance(body, (bytes, bytearray, str)):
        body = json.dumps(body)
        hdrs.setdefault("Content-Type", "application/json")
    conn.request(method, path, body=body, headers=hdrs)
    resp = conn.getresponse()
    data = resp.read()
    h = {k.lower(): v for k, v in resp.getheaders()}
    record_reply(method, path, resp.status, h, data, hdrs)
    if h.get("connection", "").lower() == "close":
        conn.close()
    if raw or not data:
        return resp.status, data, h
    if h.get("content-type", "").startswith("application/json"):
        return resp.status, json.loads(data), h
    return resp.status, data, h


class Daemon:
    def __init__(self, *args, data_dir=None, env=None, keep_dir=False, tls=False):
        self.own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="descent-test-")
        self.keep_dir = keep_dir
        self.args = list(args)
        self.env = env
        self.tls = tls
        self.token = None
        self.log_paths = []
        self.start()

    def start(self):
        cmd = WRAPPER + [DESCENTD, "--listen", "127.0.0.1:0", "--data-dir", self.data_dir] + self.args
        env = dict(os.environ)
        env.update(self.env or {})
        self.log_path = os.path.join(tempfile.gettempdir(), "descentd-%d-%d.log" % (os.getpid(), time.monotonic_ns()))
        self.log = open(self.log_path, "w+")
        self.log_paths.append(self.log_path)
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

    def new_conn(self, timeout=60):
        """A fresh keep-alive connection to the daemon (the caller closes it)."""
        if self.tls:
            import ssl
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, context=ctx)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def connection(self):
        if self.conn is None:
            self.conn = self.new_conn()
        return self.conn

    def wait_log(self, text, timeout=10):
        """Waits until the daemon's log contains text; returns the log."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.logs()
            if text in log or time.monotonic() > deadline:
                return log
            time.sleep(0.02)

    def export(self, name):
        """GET .../state of name, which must answer 200: the parsed document."""
        st, body, _ = self.req("GET", "/v1/optimizers/%s/state" % name)
        if st != 200:
            raise AssertionError("export of %s: %s %s" % (name, st, body))
        return body

    def restart(self):
        """Starts the daemon again on the same data dir (after stop or kill9)."""
        if self.proc.poll() is None:
            raise AssertionError("restart: the daemon is still running")
        self.start()

    def req(self, method, path, body=None, headers=None, raw=False):
        """One request on the keep-alive connection: (status, parsed body, headers)."""
        hdrs = dict(headers or {})
        if self.token and not any(k.lower() == "authorization" for k in hdrs):
            hdrs["Authorization"] = "Bearer " + self.token
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
        record_reply(method, path, resp.status, h, data, hdrs)
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
        for p in self.log_paths:
            try:
                os.unlink(p)
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


# ---- raw HTTP, for many connections at once and for broken requests ----------

def raw_request(method, path, body=b"", headers=None, host="127.0.0.1"):
    """The bytes of one HTTP/1.1 request (Content-Length added for a body)."""
    if isinstance(body, str):
        body = body.encode()
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: %s" % host]
    for k, v in (headers or {}).items():
        lines.append("%s: %s" % (k, v))
    if body and not any(k.lower() in ("content-length", "transfer-encoding") for k in (headers or {})):
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def parse_response(buf):
    """(status, lower-cased headers, body, bytes used) of the first complete
    response in buf (Content-Length or chunked), or None if incomplete."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buf[:end].decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    h = {}
    for line in head[1:]:
        k, _, v = line.partition(":")
        h[k.strip().lower()] = v.strip()
    pos = end + 4
    if h.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            nl = buf.find(b"\r\n", pos)
            if nl < 0:
                return None
            size = int(buf[pos:nl].split(b";")[0], 16)
            if len(buf) < nl + 2 + size + 2:
                return None
            body += buf[nl + 2:nl + 2 + size]
            pos = nl + 2 + size + 2
            if size == 0:
                return status, h, body, pos
    n = int(h.get("content-length", "0"))
    if len(buf) < pos + n:
        return None
    return status, h, buf[pos:pos + n], pos + n


def raise_fd_limit(want):
    """Raises this process's open-file limit to at least want (if allowed)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard) if hard != resource.RLIM_INFINITY else want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def json_body(resp):
    """The parsed JSON body of a parse_response tuple."""
    return json.loads(resp[2]) if resp[2] else None
