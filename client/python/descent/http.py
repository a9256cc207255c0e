"""descent.http: HTTP/1.1 to one daemon, with a pool of keep-alive connections.

What it owns: connections (TCP_NODELAY, keep-alive, idle ones older than 20 s
dropped before the daemon's 60 s idle limit closes them), bodies sent as
memoryviews (no copy of a big gradient), binary replies read straight into
the caller's buffers (readinto), and the translation of error replies into
DescentError.  It never retries a request that may have reached the daemon:
only one whose pooled connection turns out to have been closed before any
answer (the request never got there).

Threads: an Endpoint may be used by any number of threads at once; each
request takes a connection of its own from the pool.
"""
import http.client
import json
import socket
import ssl
import threading
import time
import urllib.parse
import uuid
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .errors import DescentError

__all__ = ["Endpoint", "Group", "endpoint", "BINARY", "quote", "query"]

BINARY = "application/octet-stream"
IDLE_MAX_S = 20.0           # drop pooled connections idle longer than this
SMALL_BODY = 1 << 16        # bodies below this are joined to the headers (one send)


class _Conn(http.client.HTTPConnection):
    def connect(self):
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _TLSConn(http.client.HTTPSConnection):
    def connect(self):
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def quote(name: Any) -> str:
    return urllib.parse.quote(str(name), safe="")


def query(**kw: Any) -> str:
    items = [(k, v) for k, v in kw.items() if v is not None]
    return ("?" + urllib.parse.urlencode(items)) if items else ""


def error_from(status: int, headers: Dict[str, str], data: bytes, url: str) -> DescentError:
    code, message, step = "http_%d" % status, "", None
    try:
        doc = json.loads(data)
        err = doc["error"]
        code = err.get("code", code)
        message = err.get("message", "")
        step = err.get("step")
    except (ValueError, KeyError, TypeError, AttributeError):
        message = data[:300].decode("utf-8", "replace")
    return DescentError(status, code, message, step=step, url=url)


def _readinto_all(resp: http.client.HTTPResponse, views: Sequence[memoryview]) -> None:
    for v in views:
        got = 0
        n = v.nbytes
        while got < n:
            k = resp.readinto(v[got:])
            if not k:
                raise http.client.IncompleteRead(b"", n - got)
            got += k


class Endpoint:
    """One daemon: a pool of keep-alive connections (thread-safe)."""

    def __init__(self, url: str, token: Optional[str], timeout: Optional[float],
                 ssl_context: Optional[ssl.SSLContext]) -> None:
        u = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError("not an http(s) URL: %r" % url)
        self.url = "%s://%s" % (u.scheme, u.netloc)
        self.https = u.scheme == "https"
        self.host = u.hostname
        self.port = u.port or (443 if self.https else 80)
        self.prefix = u.path.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.ssl_context = ssl_context
        self.lock = threading.Lock()
        self.idle: List[Tuple[http.client.HTTPConnection, float]] = []

    def _get(self) -> Tuple[http.client.HTTPConnection, bool]:
        now = time.monotonic()
        with self.lock:
            while self.idle:
                conn, since = self.idle.pop()
                if now - since < IDLE_MAX_S:
                    return conn, True
                conn.close()
        if self.https:
            ctx = self.ssl_context or ssl.create_default_context()
            return _TLSConn(self.host, self.port, timeout=self.timeout, context=ctx), False
        return _Conn(self.host, self.port, timeout=self.timeout), False

    def _put(self, conn: http.client.HTTPConnection) -> None:
        with self.lock:
            self.idle.append((conn, time.monotonic()))

    def close(self) -> None:
        with self.lock:
            idle, self.idle = self.idle, []
        for conn, _ in idle:
            conn.close()

    def request(self, method: str, path: str, body: Any = None, headers: Optional[Dict[str, str]] = None,
                timeout: Optional[float] = -1, into: Optional[Sequence[memoryview]] = None
                ) -> Tuple[int, Dict[str, str], Optional[bytes]]:
        """(status, {lower-case header: value}, body bytes); raises DescentError
        for error statuses.  body: bytes, str, a memoryview or a list of
        memoryviews (sent one after the other, no copy).  into: writable
        memoryviews that a binary 2xx reply of exactly their total size is
        read straight into (the returned body is then None).  timeout:
        seconds, None for no limit, -1 the endpoint's default."""
        hdrs = {"Accept": "application/json"}
        if self.token:
            hdrs["Authorization"] = "Bearer " + self.token
        if headers:
            hdrs.update(headers)
        if body is not None and "Content-Type" not in hdrs:
            hdrs["Content-Type"] = "application/json"
        if isinstance(body, str):
            body = body.encode()
        elif isinstance(body, list):
            total = sum(c.nbytes for c in body)
            if total < SMALL_BODY or len(body) == 1:
                body = b"".join(body) if total < SMALL_BODY else body[0]
            else:
                hdrs["Content-Length"] = str(total)
        if isinstance(body, memoryview) and body.nbytes < SMALL_BODY:
            body = body.tobytes()
        t = self.timeout if timeout == -1 else timeout
        data: Optional[bytes] = None
        for attempt in (0, 1):
            if attempt:
                self.close()  # the other pooled connections are likely stale too
            conn, reused = self._get()
            conn.timeout = t
            try:
                if conn.sock is not None:
                    conn.sock.settimeout(t)
                conn.request(method, self.prefix + path, body=body, headers=hdrs)
                resp = conn.getresponse()
                if (into is not None and resp.status < 300
                        and (resp.getheader("Content-Type") or "").startswith(BINARY)
                        and resp.length == sum(v.nbytes for v in into)):
                    _readinto_all(resp, into)
                    data = None
                else:
                    data = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                conn.close()
                if reused and attempt == 0:
                    continue  # a pooled connection the daemon had closed: the request never got there
                raise DescentError(None, "unreachable", "%s %s%s: %s" % (method, self.url, path, e),
                                   url=self.url) from None
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                if isinstance(e, (socket.timeout, TimeoutError)):
                    raise DescentError(None, "timeout", "%s %s%s: no answer within %s s" % (method, self.url, path, t),
                                       url=self.url) from None
                raise DescentError(None, "unreachable", "%s %s%s: %s" % (method, self.url, path, e),
                                   url=self.url) from None
            break
        if resp.will_close:
            conn.close()
        else:
            self._put(conn)
        h = {k.lower(): v for k, v in resp.getheaders()}
        if resp.status >= 400:
            raise error_from(resp.status, h, data or b"", self.url)
        return resp.status, h, data

    def json(self, method: str, path: str, body: Any = None, timeout: Optional[float] = -1) -> Any:
        if body is not None and not isinstance(body, (bytes, str)):
            try:
                body = json.dumps(body, allow_nan=False)
            except ValueError:
                raise DescentError(422, "not_finite", "the request holds a NaN or infinite number, which JSON "
                                   "cannot carry") from None
        _, _, data = self.request(method, path, body, timeout=timeout)
        return json.loads(data) if data else None


def _json_request(ep: Any, method: str, path: str, body: Any, timeout: Optional[float]) -> Any:
    if body is not None and not isinstance(body, (bytes, str)):
        try:
            body = json.dumps(body, allow_nan=False)
        except ValueError:
            raise DescentError(422, "not_finite", "the request holds a NaN or infinite number, which JSON "
                               "cannot carry") from None
    _, _, data = ep.request(method, path, body, timeout=timeout)
    return json.loads(data) if data else None


FAILOVER_S = 30.0  # how long a Group keeps trying to reach a leader


class Group:
    """The members of one replica group (descentd --cluster), given as one
    comma-separated string "http://a:8080,http://b:8080,http://c:8080".

    Behaves as one Endpoint: a write goes to the member believed to lead and
    follows 307 to the leader; 503 no_leader (nothing was done), a member
    that cannot be reached, and 503 leadership_lost are retried on the
    members in turn for up to FAILOVER_S seconds, with the same headers.  A
    retry that could apply a change twice is never made: only reads, requests
    the daemon was never handed (no_leader, a refused connection) and pushes
    with an Idempotency-Key or a worker+seq are retried after an ambiguous
    failure; a push sent without either gets a random Idempotency-Key here,
    so that a failover applies it exactly once.  Reads go to the leader too
    (Descent-Read: leader): a client reads its own writes.  Thread-safe."""

    def __init__(self, urls: Sequence[str], token: Optional[str], timeout: Optional[float],
                 ssl_context: Optional[ssl.SSLContext], failover: float = FAILOVER_S) -> None:
        self.members = [Endpoint(u, token, timeout, ssl_context) for u in urls]
        self.args = (token, timeout, ssl_context)
        self.failover = failover
        self.lock = threading.Lock()
        self.leader = 0
        self.url = ",".join(m.url for m in self.members)

    def close(self) -> None:
        for m in list(self.members):
            m.close()

    def _member(self, location: str) -> int:
        u = urllib.parse.urlsplit(location)
        base = "%s://%s" % (u.scheme, u.netloc)
        with self.lock:
            for i, m in enumerate(self.members):
                if m.url == base:
                    return i
            self.members.append(Endpoint(base, *self.args))  # a member added since
            return len(self.members) - 1

    def request(self, method: str, path: str, body: Any = None, headers: Optional[Dict[str, str]] = None,
                timeout: Optional[float] = -1, into: Optional[Sequence[memoryview]] = None
                ) -> Tuple[int, Dict[str, str], Optional[bytes]]:
        hdrs = dict(headers or {})
        keyed = "Idempotency-Key" in hdrs or ("seq=" in path and "worker=" in path)
        if method == "POST" and path.split("?")[0].endswith("/step") and not keyed:
            hdrs["Idempotency-Key"] = "g-" + uuid.uuid4().hex
            keyed = True
        safe = method in ("GET", "HEAD") or keyed
        if method in ("GET", "HEAD"):
            hdrs.setdefault("Descent-Read", "leader")
        deadline = time.monotonic() + self.failover
        i, tries = self.leader, 0
        while True:
            m = self.members[i % len(self.members)]
            try:
                st, h, data = m.request(method, path, body, hdrs, timeout, into)
            except DescentError as e:
                never_got_there = e.code in ("no_leader", "shutting_down") or (
                    e.code == "unreachable" and "refused" in e.message.lower())
                ambiguous = e.code in ("leadership_lost", "unreachable", "timeout")
                if not (never_got_there or (ambiguous and safe)) or time.monotonic() > deadline:
                    raise
                tries += 1
                i += 1
                time.sleep(min(0.02 * tries, 0.3))
                continue
            if st == 307 and "location" in h:
                i = self._member(h["location"])
                continue
            self.leader = i % len(self.members)
            return st, h, data

    def json(self, method: str, path: str, body: Any = None, timeout: Optional[float] = -1) -> Any:
        return _json_request(self, method, path, body, timeout)


def endpoint(url: str, token: Optional[str], timeout: Optional[float], ssl_context: Optional[ssl.SSLContext]) -> Any:
    """An Endpoint for one daemon's URL, a Group for "url,url,..." or "url|url|..." (the members of one replica group)."""
    if "," in url or "|" in url:
        return Group([u.strip() for u in url.replace("|", ",").split(",") if u.strip()], token, timeout, ssl_context)
    return Endpoint(url, token, timeout, ssl_context)
