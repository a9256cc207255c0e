"""test_hostile: a battery of hostile requests, each sent on its own raw
socket.  Each must get its 4xx with the right error code (JSON errors must
be valid JSON), or, where HTTP itself is broken, an HTTP-level 4xx or a
closed connection; after each one the state of every instance (its export)
is byte-identical to before, no instance appeared or vanished, and the
daemon goes on answering /healthz and real pushes."""
import json
import socket
import struct
import time
import unittest

from harness import Daemon, floats_to_bytes, parse_response, raw_request

MAX_BODY = 1000000
J = {"Content-Type": "application/json"}
B = {"Content-Type": "application/octet-stream"}
CLOSED = "closed"


def req(method, path, body=b"", headers=None):
    return raw_request(method, path, body, headers)


def jreq(method, path, text):
    """A request whose JSON body is given as text (or bytes: may be invalid UTF-8)."""
    return raw_request(method, path, text if isinstance(text, bytes) else text.encode(), J)


def step(text, name="m"):
    return jreq("POST", "/v1/optimizers/%s/step" % name, text)


def create(text):
    return jreq("POST", "/v1/optimizers", text)


def nested(depth, open_="[", close="]", inner=""):
    return open_ * depth + inner + close * depth


GOOD4 = "[1, 2, 3, 4]"
LONG = ", ".join(["1"] * 19)  # 19 more values for the 20-float instance "v" (the numeric pre-pass path)
BIG_INT = "9" * 300


def battery():
    """(label, request bytes, allowed statuses, error code or None, closed connection allowed)"""
    http_broken = ({400, 413, 414, 431, 501, 505}, None, True)
    T = []

    def add(label, raw, statuses, code=None, closed=False):
        T.append((label, raw, set(statuses) if not isinstance(statuses, int) else {statuses}, code, closed))

    # ---- malformed JSON ----
    add("truncated", step('{"grads": [1, 2,'), 400, "bad_json")
    add("missing brace", step('{"grads": [1, 2, 3, 4]'), 400, "bad_json")
    add("unquoted key", step("{grads: %s}" % GOOD4), 400, "bad_json")
    add("trailing garbage", step('{"grads": %s} x' % GOOD4), 400, "bad_json")
    add("two documents", step('{"grads": %s}{"grads": %s}' % (GOOD4, GOOD4)), 400, "bad_json")
    add("trailing comma", step('{"grads": [1, 2, 3, 4,]}'), 400, "bad_json")
    add("single quotes", step("{'grads': %s}" % GOOD4), 400, "bad_json")
    add("comment", step('{"grads": %s /* hi */}' % GOOD4), 400, "bad_json")
    add("duplicate keys", step('{"grads": %s, "grads": [9, 9, 9, 9]}' % GOOD4), 400, "bad_json")
    add("empty object", step("{}"), 400, "bad_request")
    add("null document", step("null"), 400, "bad_request")
    add("array document", step(GOOD4), 400, "bad_request")
    add("string document", step('"grads"'), 400, "bad_request")
    add("whitespace body", step("   \n "), 400, "bad_json")
    add("empty JSON body", req("POST", "/v1/optimizers/m/step", b"", dict(J, **{"Content-Length": "0"})), 400,
        "bad_request")
    add("lone surrogate escape", step('{"worker": "\\ud800", "grads": %s}' % GOOD4), 400, "bad_json")
    add("NUL escape in a string", step('{"worker": "w\\u0000x", "grads": %s}' % GOOD4), 400, "bad_json")
    # ---- deep nesting ----
    add("100000 nested arrays", step('{"grads": %s}' % nested(100000)), 400, "bad_json")
    add("100000 unclosed arrays", step('{"grads": ' + "[" * 100000), 400, "bad_json")
    add("50000 nested objects", step(nested(50000, '{"a":', "}", "1")), 400, "bad_json")
    add("deep nesting in a create", create('{"name": "x", "algorithm": "sgd", "tensors": %s}' % nested(60000)), 400,
        "bad_json")
    add("deep numeric nesting (9 dims)", step('{"grads": {"w": %s}}' % nested(9, inner="1, 2, 3, 4, " + LONG), "v"),
        400, None)
    # ---- huge numbers, NaN, infinities ----
    add("1e400", step('{"grads": [1e400, 2, 3, 4]}'), 400, "bad_json")
    add("1e400 in a long array", step('{"grads": [1e400, %s]}' % LONG, "v"), 422, "not_finite")
    add("-1e400 in a long array", step('{"grads": [-1e400, %s]}' % LONG, "v"), 422, "not_finite")
    add("300-digit integer", step('{"grads": [%s, 2, 3, 4]}' % BIG_INT), 400, "bad_json")
    add("300-digit integer in a long array", step('{"grads": [%s, %s]}' % (BIG_INT, LONG), "v"), 422, "not_finite")
    add("1e39 (infinite in float32)", step('{"grads": [1, 1e39, 3, 4]}'), 422, "not_finite")
    add("3.5e38 in a long array", step('{"grads": [%s, 3.5e38]}' % LONG, "v"), 422, "not_finite")
    add("NaN literal", step('{"grads": [NaN, 2, 3, 4]}'), 400, "bad_json")
    add("Infinity literal", step('{"grads": [Infinity, 2, 3, 4]}'), 400, "bad_json")
    add("-Infinity in a long array", step('{"grads": [-Infinity, %s]}' % LONG, "v"), 400, "bad_json")
    add("NaN binary", req("POST", "/v1/optimizers/m/step", floats_to_bytes([1, float("nan"), 3, 4]), B), 422,
        "not_finite")
    add("Inf binary", req("POST", "/v1/optimizers/m/step", floats_to_bytes([1, 2, 3, float("-inf")]), B), 422,
        "not_finite")
    add("NaN lr", jreq("PATCH", "/v1/optimizers/m", '{"hyper": {"lr": NaN}}'), 400, "bad_json")
    add("1e400 lr", jreq("PATCH", "/v1/optimizers/m", '{"hyper": {"lr": 1e400}}'), 400, "bad_json")
    add("300-digit step", step('{"step": %s, "grads": %s}' % (BIG_INT, GOOD4)), 400, "bad_json")
    add("NaN loss", jreq("POST", "/v1/optimizers/rs/tell", '{"candidate": 1, "loss": NaN}'), 400, "bad_json")
    add("1e400 loss", jreq("POST", "/v1/optimizers/rs/tell", '{"candidate": 1, "loss": -1e400}'), 400, "bad_json")
    add("hex number", step('{"grads": [0x10, 2, 3, 4]}'), 400, "bad_json")
    add("leading zero in a long array", step('{"grads": [01, %s]}' % LONG, "v"), 400, "bad_json")
    # ---- wrong lengths and types ----
    add("3 values", step('{"grads": [1, 2, 3]}'), 400, "bad_length")
    add("5 values", step('{"grads": [1, 2, 3, 4, 5]}'), 400, "bad_length")
    add("21 values", step('{"grads": [1, %s, 1]}' % LONG, "v"), 400, "bad_length")
    add("empty grads object", step('{"grads": {}}'), 400, "bad_length")
    add("wrong nested shape", step('{"grads": {"w": [[1, 2], [3, 4]]}}'), 400, "bad_length")
    add("ragged", step('{"grads": {"w": [[1, 2], [3]]}}'), 400, "bad_request")
    add("strings as numbers", step('{"grads": ["1", "2", "3", "4"]}'), 400, "bad_request")
    add("nulls as numbers", step('{"grads": [null, 2, 3, 4]}'), 400, "bad_request")
    add("a bool as grads", step('{"grads": true}'), 400, "bad_request")
    add("unknown tensor", step('{"grads": {"w": %s, "q": [1]}}' % GOOD4), 400, "unknown_tensor")
    add("unknown field", step('{"grads": %s, "lr": 100}' % GOOD4), 400, "bad_request")
    add("step as a string", step('{"step": "0", "grads": %s}' % GOOD4), 400, "bad_request")
    add("negative step", step('{"step": -1, "grads": %s}' % GOOD4), 400, "bad_request")
    add("worker as a number", step('{"worker": 7, "grads": %s}' % GOOD4), 400, "bad_name")
    add("binary, 15 bytes", req("POST", "/v1/optimizers/m/step", b"\0" * 15, B), 400, "bad_length")
    add("binary, 20 bytes", req("POST", "/v1/optimizers/m/step", b"\0" * 20, B), 400, "bad_length")
    add("binary, empty", req("POST", "/v1/optimizers/m/step", b"", dict(B, **{"Content-Length": "0"})), 400,
        "bad_request")
    add("binary state import", req("PUT", "/v1/optimizers/m/state", b"\0" * 16, B), 415, "unsupported_media_type")
    # ---- names and paths ----
    add("../x", req("GET", "/v1/optimizers/../x"), 400, "bad_name")
    add("%2e%2e", req("GET", "/v1/optimizers/%2e%2e"), 400, "bad_name")
    add("..%2Fx", req("GET", "/v1/optimizers/..%2Fx/state"), 400, "bad_name")
    add("%2e%2e%2fetc%2fpasswd import", jreq("PUT", "/v1/optimizers/%2e%2e%2fetc%2fpasswd/state",
                                            '{"algorithm": "sgd", "step": 0, "tensors": [{"name": "w", "shape": [1]}],'
                                            ' "params": {"w": [1]}}'), 400, "bad_name")
    add("NUL in a name (delete)", req("DELETE", "/v1/optimizers/m%00x"), 400, "bad_name")
    add("NUL in a name (push)", req("POST", "/v1/optimizers/m%00/step", floats_to_bytes([1, 1, 1, 1]), B), 400,
        "bad_name")
    add("dot name", req("DELETE", "/v1/optimizers/.m"), 400, "bad_name")
    add("65-char name", req("GET", "/v1/optimizers/" + "a" * 65), 400, "bad_name")
    add("100000-char name", req("DELETE", "/v1/optimizers/" + "m" * 100000), 400, "bad_name")
    add("unicode name", req("GET", "/v1/optimizers/m%C3%A9"), 400, "bad_name")
    add("raw unicode name", raw_request("GET", "/v1/optimizers/m\u00e9".encode().decode("latin-1")), 400, "bad_name")
    add("invalid UTF-8 name", req("DELETE", "/v1/optimizers/m%ff%fe"), 400, "bad_name")
    add("create ../x", create('{"name": "../x", "algorithm": "sgd", "tensors": [{"name": "w", "shape": [1]}]}'), 400,
        "bad_name")
    add("create a/b", create('{"name": "a/b", "algorithm": "sgd", "tensors": [{"name": "w", "shape": [1]}]}'), 400,
        "bad_name")
    add("create a 65-char name", create('{"name": "%s", "algorithm": "sgd", "tensors": [{"name": "w", "shape": [1]}]}'
                                        % ("n" * 65)), 400, "bad_name")
    add("create a unicode name", create('{"name": "caf\u00e9", "algorithm": "sgd", "tensors": [{"name": "w", "shape": [1]}]}'),
        400, "bad_name")
    add("tensor ../w", create('{"name": "x", "algorithm": "sgd", "tensors": [{"name": "../w", "shape": [1]}]}'), 400,
        "bad_name")
    add("worker ../w", req("POST", "/v1/optimizers/m/step?worker=../w", floats_to_bytes([1, 1, 1, 1]), B), 400,
        "bad_name")
    add("worker with NUL", req("POST", "/v1/optimizers/m/step?worker=w%00x", floats_to_bytes([1, 1, 1, 1]), B), 400,
        "bad_name")
    add("worker invalid UTF-8", req("POST", "/v1/optimizers/m/step?worker=%ff", floats_to_bytes([1, 1, 1, 1]), B), 400,
        "bad_name")
    add("step with NUL", req("POST", "/v1/optimizers/m/step?step=0%00", floats_to_bytes([1, 1, 1, 1]), B), 400,
        "bad_query")
    # ---- bad UTF-8 in bodies ----
    add("invalid UTF-8 name in a create",
        create(b'{"name": "\xff\xfe", "algorithm": "sgd", "tensors": [{"name": "w", "shape": [1]}]}'), 400, "bad_json")
    add("truncated UTF-8 worker", step(b'{"worker": "w\xc3", "grads": [1, 2, 3, 4]}'), 400, "bad_json")
    add("overlong UTF-8", step(b'{"worker": "\xc0\xaf", "grads": [1, 2, 3, 4]}'), 400, "bad_json")
    add("invalid UTF-8 key", step(b'{"gr\xe9ds": [1, 2, 3, 4]}'), 400, "bad_json")
    add("invalid UTF-8 hyperparameter", jreq("PATCH", "/v1/optimizers/rs", b'{"hyper": {"center": "best\xff"}}'), 400,
        "bad_json")
    # ---- bodies over the limit ----
    add("declared 2 MB", raw_request("POST", "/v1/optimizers/m/step", b"", dict(J, **{"Content-Length": str(2 * MAX_BODY)}))
        + b"[" * 1000, 413, "body_too_large")
    add("sent 1.2 MB", step('{"grads": [%s]}' % ("1," * 600000)), 413, "body_too_large")
    add("chunked 1.2 MB", raw_request("POST", "/v1/optimizers/m/step", b"", dict(J, **{"Transfer-Encoding": "chunked"}))
        + (b"%x\r\n" % 100000 + b" " * 100000 + b"\r\n") * 12 + b"0\r\n\r\n", 413, "body_too_large", True)
    add("declared 2^64-1", raw_request("POST", "/v1/optimizers/m/step", b"", dict(J, **{"Content-Length": str(2 ** 64 - 1)})),
        413, None)
    add("declared 10^23", raw_request("POST", "/v1/optimizers/m/step", b"", dict(J, **{"Content-Length": "9" * 23})),
        413, None, True)
    # ---- wrong methods and content types ----
    add("POST on an instance", req("POST", "/v1/optimizers/m", b'{"hyper": {}}', J), 405, "method_not_allowed")
    add("DELETE the collection", req("DELETE", "/v1/optimizers"), 405, "method_not_allowed")
    add("GET a step", req("GET", "/v1/optimizers/m/step"), 405, "method_not_allowed")
    add("POST healthz", req("POST", "/healthz", b"{}", J), 405, "method_not_allowed")
    add("PATCH state", req("PATCH", "/v1/optimizers/m/state", b"{}", J), 405, "method_not_allowed")
    add("BREW", req("BREW", "/v1/optimizers"), 405, "method_not_allowed")
    add("TRACE", req("TRACE", "/v1/optimizers/m"), 405, "method_not_allowed")
    add("text/plain push", req("POST", "/v1/optimizers/m/step", b'{"grads": [1, 2, 3, 4]}', {"Content-Type": "text/plain"}),
        415, "unsupported_media_type")
    add("multipart create", req("POST", "/v1/optimizers", b"--x\r\n\r\n--x--", {"Content-Type": "multipart/form-data; boundary=x"}),
        415, "unsupported_media_type")
    add("binary create", req("POST", "/v1/optimizers", b"\0" * 8, B), 415, "unsupported_media_type")
    add("a body on a GET", req("GET", "/v1/optimizers/m/state", b"{}", J), 400, "bad_request")
    # ---- header abuse ----
    add("duplicated Content-Type", raw_request("POST", "/v1/optimizers/m/step", floats_to_bytes([1, 1, 1, 1]),
                                               {"Content-Type": "application/octet-stream",
                                                "content-type": "application/json"}), 400, "bad_request")
    add("two Content-Lengths", raw_request("POST", "/v1/optimizers/m/step", floats_to_bytes([1, 1, 1, 1]),
                                           {"Content-Type": "application/octet-stream", "Content-Length": "16",
                                            "content-length": "20"}), {400}, None, True)
    add("Content-Length abc", raw_request("POST", "/v1/optimizers/m/step", b"{}", dict(J, **{"Content-Length": "abc"})),
        *http_broken)
    add("Content-Length -1", raw_request("POST", "/v1/optimizers/m/step", b"{}", dict(J, **{"Content-Length": "-1"})),
        *http_broken)
    add("300 KB header", raw_request("GET", "/v1/optimizers/m/state", b"", {"X-Big": "a" * 300000}), *http_broken)
    add("20000 headers", raw_request("GET", "/v1/optimizers/m/state", b"", {"X-H%d" % i: "v" for i in range(20000)}),
        *http_broken)
    add("bad chunk size", raw_request("POST", "/v1/optimizers/m/step", b"", dict(B, **{"Transfer-Encoding": "chunked"}))
        + b"zz\r\n" + b"\0" * 16 + b"\r\n0\r\n\r\n", *http_broken)
    add("chunk longer than said", raw_request("POST", "/v1/optimizers/m/step", b"", dict(B, **{"Transfer-Encoding": "chunked"}))
        + b"4\r\n" + b"\0" * 16 + b"\r\n0\r\n\r\n", *http_broken)
    add("Idempotency-Key of 200 chars", raw_request("POST", "/v1/optimizers/m/step", floats_to_bytes([1, 1, 1, 1]),
                                                    dict(B, **{"Idempotency-Key": "k" * 200})), 400, "bad_request")
    # ---- raw garbage ----
    add("binary garbage", bytes(range(256)) * 8, *http_broken)
    # (a ClientHello alone has no line end: the daemon would wait for one until
    # its idle timeout, as for any silent client; the line end gets an answer)
    add("TLS hello on the plain port", bytes.fromhex("16030100a5010000a10303") + b"\0" * 160 + b"\r\n\r\n",
        *http_broken)
    add("HTTP/9.9", b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n", *http_broken)
    add("request line of 300 KB", b"GET /" + b"a" * 300000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", *http_broken)
    add("no HTTP version", b"GET /v1/optimizers/m/state\r\n\r\n", *http_broken)
    # ---- query strings ----
    add("?params=maybe", req("POST", "/v1/optimizers/m/step?params=maybe", floats_to_bytes([1, 1, 1, 1]), B), 400, "bad_query")
    add("?loss=nan", req("POST", "/v1/optimizers/m/step?loss=nan", floats_to_bytes([1, 1, 1, 1]), B), 400, "bad_query")
    add("?loss=1e400", req("POST", "/v1/optimizers/m/step?loss=1e400", floats_to_bytes([1, 1, 1, 1]), B), 400, "bad_query")
    add("?grad_norm=-1", req("POST", "/v1/optimizers/m/step?grad_norm=-1", floats_to_bytes([1, 1, 1, 1]), B), 400,
        "bad_query")
    add("?step=1e3", req("POST", "/v1/optimizers/m/step?step=1e3", floats_to_bytes([1, 1, 1, 1]), B), 400, "bad_query")
    add("?wait_for_step=x", req("GET", "/v1/optimizers/m/params?wait_for_step=x"), 400, "bad_query")
    add("?timeout_ms=-1", req("GET", "/v1/optimizers/m/params?wait_for_step=9&timeout_ms=-1"), 400, "bad_query")
    # ---- configurations that are not allowed ----
    add("9 dimensions", create('{"name": "x", "algorithm": "sgd", "tensors": [{"name": "w", "shape": [1,1,1,1,1,1,1,1,1]}]}'),
        400, "bad_request")
    add("2^60 parameters", create('{"name": "x", "algorithm": "sgd", "tensors": [{"name": "w", "shape": [1073741824, 1073741824]}]}'),
        507, "quota_exceeded")
    add("4097 tensors", create('{"name": "x", "algorithm": "sgd", "tensors": [%s]}'
                               % ", ".join('{"name": "t%d", "shape": [1]}' % i for i in range(4097))), 400, "bad_request")
    add("negative std", create('{"name": "x", "algorithm": "sgd", "tensors": [{"name": "w", "shape": [2], '
                               '"init": {"normal": {"std": -1}}}]}'), 422, "invalid_value")
    add("infinite initial value", create('{"name": "x", "algorithm": "sgd", "tensors": [{"name": "w", "shape": [2], '
                                         '"values": [1, 1e39]}]}'), 422, "not_finite")
    add("unknown schedule", create('{"name": "x", "algorithm": "sgd", "schedule": {"type": "magic"}, '
                                   '"tensors": [{"name": "w", "shape": [1]}]}'), 422, "invalid_value")
    add("sync with 0 workers", create('{"name": "x", "algorithm": "sgd", "mode": "sync", "workers": 0, '
                                      '"tensors": [{"name": "w", "shape": [1]}]}'), 422, "invalid_value")
    add("create an existing name", create('{"name": "m", "algorithm": "sgd", "tensors": [{"name": "w", "shape": [1]}]}'),
        409, "already_exists")
    add("PATCH the algorithm", jreq("PATCH", "/v1/optimizers/m", '{"algorithm": "sgd"}'), 422, "invalid_value")
    add("negative lr", jreq("PATCH", "/v1/optimizers/m", '{"hyper": {"lr": -1}}'), 422, "invalid_value")
    # ---- random search, sync, playground ----
    add("tell an unknown candidate", jreq("POST", "/v1/optimizers/rs/tell", '{"candidate": 999, "loss": 1}'), 409, "conflict")
    add("tell with extra fields", jreq("POST", "/v1/optimizers/rs/tell", '{"candidate": 1, "loss": 1, "x": 2}'), 400,
        "bad_request")
    add("ask with a body", jreq("POST", "/v1/optimizers/rs/ask", "[]"), 400, "bad_request")
    add("gradients to random search", step('{"grads": [1]}', "rs"), 409, "wrong_algorithm")
    add("ask an adam instance", jreq("POST", "/v1/optimizers/m/ask", "{}"), 409, "wrong_algorithm")
    add("sync push without a worker", step('{"grads": [1, 2]}', "s"), 400, "missing_worker")
    add("sync push ahead", step('{"worker": "w", "step": 5, "grads": [1, 2]}', "s"), 409, "step_ahead")
    add("playground 10^12 steps", jreq("POST", "/v1/playground", '{"objective": "ravine", "algorithm": "sgd", '
                                                                  '"start": [1, 1], "steps": 1000000000000}'), 422, None)
    add("playground unknown objective", jreq("POST", "/v1/playground", '{"objective": "moon", "algorithm": "sgd", '
                                                                        '"start": [1, 1], "steps": 3}'), {400, 422}, None)
    return T


def exchange(port, data, timeout=10):
    """Sends data on a new connection; returns the parsed response, or CLOSED."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    buf = b""
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass  # the daemon answered (or gave up) before reading everything
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = parse_response(buf)
            if r:
                return r
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            buf += chunk
        return parse_response(buf) or CLOSED
    finally:
        s.close()


class Hostile(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Daemon("--max-body", str(MAX_BODY), "--log-level", "debug")
        d = cls.d
        specs = [
            {"name": "m", "algorithm": "adam", "hyper": {"amsgrad": True},
             "tensors": [{"name": "w", "shape": [4], "values": [1, 2, 3, 4]}]},
            {"name": "v", "algorithm": "sgd", "hyper": {"momentum": 0.9, "lr": 0.1},
             "tensors": [{"name": "w", "shape": [20], "init": {"uniform": {"low": -1, "high": 1, "seed": 2}}}]},
            {"name": "s", "algorithm": "rmsprop", "mode": "sync", "workers": 2,
             "tensors": [{"name": "w", "shape": [2]}]},
            {"name": "rs", "algorithm": "random_search", "hyper": {"seed": 1},
             "tensors": [{"name": "x", "shape": [1]}]},
        ]
        for spec in specs:
            st, body, _ = d.req("POST", "/v1/optimizers", spec)
            assert st == 201, body
        for _ in range(3):
            d.req("POST", "/v1/optimizers/m/step", {"grads": [0.5, -1, 2, 0]})
            d.req("POST", "/v1/optimizers/v/step", {"grads": [0.25] * 20})
        cand = d.req("POST", "/v1/optimizers/rs/ask", {})[1]["candidate"]
        d.req("POST", "/v1/optimizers/rs/tell", {"candidate": cand, "loss": 2.0})

    @classmethod
    def tearDownClass(cls):
        try:
            cls.d.stop()
        finally:
            cls.d.cleanup()

    def everything(self):
        st, lst, _ = self.d.req("GET", "/v1/optimizers")
        names = [o["name"] for o in lst["optimizers"]]
        return names, {n: self.d.req("GET", "/v1/optimizers/%s/state" % n, raw=True)[1] for n in names}

    def test_battery(self):
        cases = battery()
        self.assertGreaterEqual(len(cases), 50)
        before = self.everything()
        self.assertEqual(before[0], ["m", "rs", "s", "v"])
        seen = []
        for label, raw, statuses, code, closed_ok in cases:
            with self.subTest(label):
                r = exchange(self.d.port, raw)
                if r == CLOSED:
                    seen.append((label, CLOSED))
                    self.assertTrue(closed_ok, "%s: connection closed without an answer" % label)
                else:
                    status, h, body, _ = r
                    seen.append((label, status))
                    self.assertIn(status, statuses, "%s: %d %r" % (label, status, body[:300]))
                    if h.get("content-type", "").startswith("application/json"):
                        doc = json.loads(body)  # errors are always valid JSON
                        self.assertTrue(doc["error"]["message"], label)
                        if code:
                            self.assertEqual(doc["error"]["code"], code, "%s: %r" % (label, doc))
                    else:
                        self.assertIsNone(code, "%s: expected a JSON error, got %r" % (label, body[:200]))
                    if status == 405:
                        self.assertTrue(h.get("allow"), label)
                self.assertEqual(self.everything(), before, "%s changed the state" % label)
        # the log stayed one logfmt record per line: hostile bytes never
        # reached it raw (no injected lines, no control characters)
        for line in self.d.logs().splitlines():
            self.assertTrue(line.startswith("ts=") and " level=" in line, "not a log record: %r" % line[:200])
            self.assertFalse(any(ord(ch) < 32 for ch in line), "control character in %r" % line[:200])
        # still serving, and still right
        self.assertEqual(self.d.req("GET", "/healthz")[:2], (200, {"status": "ok"}))
        st, body, _ = self.d.req("POST", "/v1/optimizers/v/step", {"grads": [0.0] * 20})
        self.assertEqual((st, body["step"]), (200, 4))
        st, body, _ = self.d.req("POST", "/v1/optimizers/m/step", {"grads": [0, 0, 0, 0]})
        self.assertEqual((st, body["step"]), (200, 4))

    def test_sync_overflowing_round_applies_nothing(self):
        # each gradient is finite, their sum is not: the round fails with 422 for both
        import threading
        from harness import request
        before = self.d.req("GET", "/v1/optimizers/s/state", raw=True)[1]
        out = {}

        def push(w):
            c = self.d.new_conn()
            out[w] = request(c, "POST", "/v1/optimizers/s/step", {"worker": w, "step": 0, "grads": [3e38, 1]})
            c.close()

        ts = [threading.Thread(target=push, args=(w,)) for w in ("a", "b")]
        for t in ts:
            t.start()
        for t in ts:
            t.join(20)
        for w in ("a", "b"):
            st, body, _ = out[w]
            self.assertEqual((st, body["error"]["code"]), (422, "not_finite"), body)
        self.assertEqual(self.d.req("GET", "/v1/optimizers/s/state", raw=True)[1], before)
        self.assertEqual(self.d.req("GET", "/v1/optimizers/s")[1]["waiting"], 0)


if __name__ == "__main__":
    unittest.main()
