"""descent_client: the Python client of descent (torch.optim as an HTTP service).

One file, Python 3 standard library only.  Copy it next to your worker.

    from descent_client import Client, DescentError

    c = Client("http://127.0.0.1:8080", token=None)
    c.create(name="lr", algorithm="adam", hyper={"lr": 0.01},
             tensors=[{"name": "w", "shape": [8]}, {"name": "b", "shape": [1]}])
    p = c.pull("lr")                    # Params: {"w": [...], "b": [...]}, p.step == 0
    p = c.push("lr", {"w": gw, "b": gb}, worker="w1", step=p.step, loss=0.53)
    p.step                              # 1: the step of the returned parameters

What it owns: the HTTP conversation with one daemon, or with several over
which it shards every instance (below).  Threads: a Client may be shared by
threads; connections are pooled per daemon (keep-alive, idle ones older than
20 s are dropped before the daemon's 60 s idle limit closes them).

Wire formats.  push and pull use the binary format by default: the body is
every tensor in creation order as little-endian float32, with
`Content-Type`/`Accept: application/octet-stream`, the step in the reply's
`Descent-Step` header, and `worker`, `step`, `loss`, `seq` as query
parameters.  binary=False uses the JSON forms instead.  Either way gradients
are rounded to float32 in the client first, so both forms send the same bits,
and returned values are Python floats holding float32 values exactly.

Parameters come back as a Params: a dict of flat lists by tensor name, in
creation order, with `.step` (the step they belong to) and `.flat()`.

Errors.  Every refusal raises DescentError with `.status` (HTTP status),
`.code` (the server's snake_case code) and `.message`; `.step` is the
instance's step when the server sent one (stale gradients and the like).
Checks the client makes itself raise the code the daemon would use.  A
daemon that cannot be reached raises DescentError with status None and code
"unreachable".  A request is retried once only when a pooled keep-alive
connection turns out to have been closed by the daemon before it answered
(the request never reached it); to make any push safe to retry, give it
`seq=` (with `worker=`) or `idempotency_key=`: the daemon then applies it at
most once and answers a retry with the first outcome.

Sharding (several URLs).  `Client([url0, url1, ...])` spreads every instance
over the daemons exactly as libdescent does:

  * the tensors, in creation order, form one flat range of N floats; shard k
    of S holds [floor(k*N/S), floor((k+1)*N/S)) (integer arithmetic; every
    shard needs at least one float, so N >= S);
  * shard k is an ordinary instance of the same name on daemon k holding, in
    creation order, the tensors that intersect its range: a tensor wholly
    inside it as given, a part of one as a 1-D tensor of the same name,
    shape [length], created with `"offset": K` = the part's first index in
    the logical tensor (plus the tensor's own offset, if it had one), so
    seeded inits ("normal", "uniform") give the same values as one daemon,
    and inline values sliced; every other field (algorithm, hyper, mode,
    schedule, clipping...) is the same on every shard.  This is the rule
    libdescent implements (client/lib/layout.c, proto/sharding.md);
  * push and pull fan out to every shard at once (one thread per shard)
    and gather; everything elementwise is then bit-identical to one daemon;
  * global-norm clipping: the client computes the whole gradient's norm the
    way the daemon does (squares of the float32 values in double, summed in
    8 lanes by global flat index mod 8, each lane in index order, the lanes
    added left to right, then sqrt) and sends it to every shard as
    `?grad_norm=` (shortest round-trip decimal) with every async push, so
    each shard clips with the same coefficient and its history shows the
    same norm as one daemon's.  In sync mode the norm of the combined gradient is
    only known inside each daemon, so a sharded sync instance with
    clip_grad_norm is refused; so are sharded backup workers (min_workers <
    workers: a late round could close with different workers on different
    shards) and sharded random_search;
  * steps are checked across shards.  In sync mode every shard answers a
    round with the same step; in async mode pushes from concurrent workers
    may reach the shards in different orders, so a shard that is behind is
    given `settle_ms` to catch up (a long-poll) before it counts as out of
    step.  Out of step raises DescentStepMismatch (409, "step_mismatch") with
    each shard's step (`.steps`).  To bring shards back into line, import one
    state into all of them: `import_state(name, doc)` with a document that
    `export_state(name)` gathered at one step (or one from a single daemon).
    A sharded push that some shards applied and others refused raises the
    refusal with every shard's outcome in the message and `.shards`; pushes
    carrying `seq`/`idempotency_key` can simply be retried.
  * export_state gathers one document as one daemon would write it (the
    logical tensors; a tensor split over shards shows flat unless this
    Client created it); import_state splits any such document over the
    shards the same way.

Worker tools from the seed: numeric_gradient(f, x, h) (central differences)
and gradient_check(analytic, numeric) (the largest relative error).
"""

import http.client
import json
import math
import operator
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from array import array
from functools import reduce

__all__ = ["Client", "Params", "DescentError", "DescentStepMismatch", "shard_ranges", "shard_plan",
           "global_norm", "numeric_gradient", "gradient_check"]

BINARY = "application/octet-stream"
_IDLE_MAX_S = 20.0           # drop pooled connections idle longer than this
_BIG_ENDIAN = sys.byteorder == "big"


# ---- errors ------------------------------------------------------------------------------

class DescentError(Exception):
    """A refused or failed request: .status (HTTP status, None when the daemon
    could not be reached), .code (snake_case), .message, .step (or None)."""

    def __init__(self, status, code, message, step=None, url=None, shards=None):
        self.status = status
        self.code = code
        self.message = message
        self.step = step
        self.url = url
        self.shards = shards
        super().__init__("%s %s: %s" % (status if status is not None else "-", code, message))


class DescentStepMismatch(DescentError):
    """The shards of one instance are at different steps (.steps, one per shard)."""

    def __init__(self, name, urls, steps, what):
        self.steps = list(steps)
        self.urls = list(urls)
        where = ", ".join("shard %d (%s) at step %s" % (k, u, s) for k, (u, s) in enumerate(zip(urls, steps)))
        msg = ("the shards of '%s' are out of step after %s: %s; bring them back into line by importing one "
               "state into every shard (import_state with a document exported at one step)" % (name, what, where))
        super().__init__(409, "step_mismatch", msg)


# ---- float32 helpers ------------------------------------------------------------------------

def _f32(values, what):
    """values (a sequence of numbers, array, bytes of float32) as array('f')."""
    if isinstance(values, array):
        if values.typecode == "f":
            return values
        return array("f", values)
    if isinstance(values, (bytes, bytearray, memoryview)):
        b = bytes(values)
        if len(b) % 4:
            raise DescentError(400, "bad_length", "%s: %d bytes is not a whole number of float32" % (what, len(b)))
        a = array("f")
        a.frombytes(b)
        if _BIG_ENDIAN:
            a.byteswap()
        return a
    if hasattr(values, "tolist") and not isinstance(values, (list, tuple)):
        values = values.tolist()  # numpy and friends
    try:
        return array("f", values)
    except TypeError:
        for i, v in enumerate(values):
            if isinstance(v, (list, tuple)):
                raise DescentError(400, "bad_length", "%s[%d]: nested deeper than the tensor's shape" % (what, i))
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise DescentError(400, "bad_request", "%s[%d]: not a number" % (what, i))
        raise


def _to_wire(a):
    """array('f') as little-endian bytes."""
    if _BIG_ENDIAN:
        a = array("f", a)
        a.byteswap()
    return a.tobytes()


def _from_wire(data):
    a = array("f")
    a.frombytes(data)
    if _BIG_ENDIAN:
        a.byteswap()
    return a


def _flatten(x, shape, what):
    """A tensor's values, flat (row-major) or nested to shape, as array('f')."""
    count = 1
    for d in shape:
        count *= d
    if hasattr(x, "tolist") and not isinstance(x, (list, tuple, array)):
        x = x.tolist()  # numpy and friends, possibly nested
    if isinstance(x, (list, tuple)) and len(shape) > 1 and x and isinstance(x[0], (list, tuple)):
        out = array("f")

        def walk(v, dim, path):
            if not isinstance(v, (list, tuple)) or len(v) != shape[dim]:
                got = len(v) if isinstance(v, (list, tuple)) else "a number"
                raise DescentError(400, "bad_length", "%s: expected %d values for shape %s, got %s"
                                   % (path, shape[dim], list(shape), got))
            if dim == len(shape) - 1:
                out.extend(_f32(v, path))
            else:
                for i, y in enumerate(v):
                    walk(y, dim + 1, "%s[%d]" % (path, i))

        walk(x, 0, what)
        return out
    a = _f32(x, what)
    if len(a) != count:
        raise DescentError(400, "bad_length", "%s: expected %d values, got %d" % (what, count, len(a)))
    return a


def _finite_json(obj, what, flat):
    """json.dumps(obj) refusing NaN and infinities the way the daemon does (422)."""
    try:
        return json.dumps(obj, allow_nan=False, separators=(",", ":"))
    except ValueError:
        for name, a in flat:
            for i, v in enumerate(a):
                if not math.isfinite(v):
                    raise DescentError(422, "not_finite", "%s.%s[%d]: NaN or infinite" % (what, name, i))
        raise DescentError(422, "not_finite", "%s: NaN or infinite value" % what)


def _first_bad(g):
    """The index of the first NaN or infinity in g (-1 if none)."""
    for i, v in enumerate(g):
        if not math.isfinite(v):
            return i
    return -1


def _sumsq_lanes(g, base=0):
    """The daemon's optim_sumsq_acc: 8 double lanes by (base + index) mod 8."""
    acc = [0.0] * 8
    for j in range(8):
        first = (j - base) % 8
        lane = g[first::8]
        acc[j] = reduce(operator.add, map(operator.mul, lane, lane), 0.0)
    return acc


def global_norm(g):
    """The L2 norm of a flat float32 gradient exactly as the daemon computes it
    (optim_sumsq): every square in double, 8 lanes by index mod 8, each lane in
    index order, lanes added left to right, then sqrt."""
    g = _f32(g, "grads")
    total = 0.0
    for v in _sumsq_lanes(g):
        total += v
    return math.sqrt(total)


# ---- sharding ----------------------------------------------------------------------------------

def shard_ranges(n, nshards):
    """[(lo, hi)] of each shard: shard k holds [floor(k*n/S), floor((k+1)*n/S))."""
    if nshards < 1:
        raise ValueError("nshards must be at least 1")
    if n < nshards:
        raise DescentError(400, "bad_length", "%d parameters cannot be spread over %d shards (each needs one)"
                           % (n, nshards))
    return [(k * n // nshards, (k + 1) * n // nshards) for k in range(nshards)]


def shard_plan(counts, nshards):
    """For tensors of these element counts (creation order): per shard, the
    list of (tensor index, first index in the tensor, length) it holds."""
    n = sum(counts)
    plan = []
    for lo, hi in shard_ranges(n, nshards):
        pieces = []
        start = 0
        for t, c in enumerate(counts):
            a, b = max(start, lo), min(start + c, hi)
            if a < b:
                pieces.append((t, a - start, b - a))
            start += c
        plan.append(pieces)
    return plan


class _Layout:
    """What the client knows of an instance: tensors (names, shapes, counts,
    flat offsets), mode and clipping; for a sharded instance, each shard's range."""

    def __init__(self, desc, shapes=None):
        self.names = [t["name"] for t in desc["tensors"]]
        self.counts = [int(t["count"]) for t in desc["tensors"]]
        self.shapes = shapes or [list(t["shape"]) for t in desc["tensors"]]
        self.origins = [int(t.get("origin", 0)) for t in desc["tensors"]]
        self.offsets = []
        o = 0
        for c in self.counts:
            self.offsets.append(o)
            o += c
        self.n = o
        self.mode = desc.get("mode", "async")
        self.clip = desc.get("clip_grad_norm") or None
        self.round_timeout_ms = desc.get("round_timeout_ms")
        self.workers = desc.get("workers")
        self.algorithm = desc.get("algorithm")
        self.ranges = None

    def where(self, i):
        """A flat index as "grads.W[3]"."""
        for name, o, c in zip(self.names, self.offsets, self.counts):
            if o <= i < o + c:
                return "grads.%s[%d]" % (name, i - o)
        return "grads[%d]" % i

    def split(self, flat):
        """A flat array of n floats as {tensor: list}."""
        return {name: flat[o:o + c].tolist() for name, o, c in zip(self.names, self.offsets, self.counts)}

    def gather(self, grads, what="grads"):
        """grads (flat sequence, bytes, or dict by tensor, flat or nested) as one array('f') of n."""
        if isinstance(grads, dict):
            for k in grads:
                if k not in self.names:
                    raise DescentError(400, "unknown_tensor", "%s.%s: no tensor of that name" % (what, k))
            out = array("f")
            for name, shape in zip(self.names, self.shapes):
                if name not in grads:
                    raise DescentError(400, "bad_length", "%s.%s: missing (every tensor needs its gradient)"
                                       % (what, name))
                out.extend(_flatten(grads[name], shape, "%s.%s" % (what, name)))
            return out
        a = _f32(grads, what)
        if len(a) != self.n:
            raise DescentError(400, "bad_length", "%s: expected %d values (every tensor in creation order), got %d"
                               % (what, self.n, len(a)))
        return a


class Params(dict):
    """Parameters by tensor name (flat lists, creation order) at one step.
    .step is their step; for a sharded instance .steps holds each shard's."""

    def __init__(self, values=(), step=None, steps=None):
        super().__init__(values)
        self.step = step
        self.steps = steps

    def flat(self):
        """Every tensor concatenated in creation order."""
        out = []
        for v in self.values():
            out.extend(v)
        return out

    def __repr__(self):
        return "Params(step=%r, %s)" % (self.step, super().__repr__())


# ---- HTTP ---------------------------------------------------------------------------------------

class _Endpoint:
    """One daemon: a pool of keep-alive connections (thread-safe)."""

    def __init__(self, url, token, timeout, ssl_context):
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
        self.idle = []  # (connection, time it became idle)

    def _get(self):
        now = time.monotonic()
        with self.lock:
            while self.idle:
                conn, since = self.idle.pop()
                if now - since < _IDLE_MAX_S:
                    return conn, True
                conn.close()
        if self.https:
            ctx = self.ssl_context or ssl.create_default_context()
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=ctx)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return conn, False

    def _put(self, conn):
        with self.lock:
            self.idle.append((conn, time.monotonic()))

    def close(self):
        with self.lock:
            idle, self.idle = self.idle, []
        for conn, _ in idle:
            conn.close()

    def request(self, method, path, body=None, headers=None, timeout=-1):
        """(status, {lower-case header: value}, body bytes); raises DescentError
        for error statuses.  timeout: seconds, None for no limit, -1 the default."""
        hdrs = {"Accept": "application/json"}
        if self.token:
            hdrs["Authorization"] = "Bearer " + self.token
        if headers:
            hdrs.update(headers)
        if body is not None and "Content-Type" not in hdrs:
            hdrs["Content-Type"] = "application/json"
        if isinstance(body, str):
            body = body.encode()
        t = self.timeout if timeout == -1 else timeout
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
                data = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                conn.close()
                if reused and attempt == 0:
                    continue  # a pooled connection the daemon had closed: the request never got there
                raise DescentError(None, "unreachable", "%s %s%s: %s" % (method, self.url, path, e), url=self.url)
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                if isinstance(e, (socket.timeout, TimeoutError)):
                    raise DescentError(None, "timeout", "%s %s%s: no answer within %s s" % (method, self.url, path, t),
                                       url=self.url)
                raise DescentError(None, "unreachable", "%s %s%s: %s" % (method, self.url, path, e), url=self.url)
            break
        if resp.will_close:
            conn.close()
        else:
            self._put(conn)
        h = {k.lower(): v for k, v in resp.getheaders()}
        if resp.status >= 400:
            raise _error_from(resp.status, h, data, self.url)
        return resp.status, h, data

    def json(self, method, path, body=None, timeout=-1):
        if body is not None and not isinstance(body, (bytes, str)):
            try:
                body = json.dumps(body, allow_nan=False)
            except ValueError:
                raise DescentError(422, "not_finite", "the request holds a NaN or infinite number, which JSON "
                                   "cannot carry") from None
        _, _, data = self.request(method, path, body, timeout=timeout)
        return json.loads(data) if data else None


def _error_from(status, headers, data, url):
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


def _quote(name):
    return urllib.parse.quote(str(name), safe="")


def _query(**kw):
    items = [(k, v) for k, v in kw.items() if v is not None]
    return ("?" + urllib.parse.urlencode(items)) if items else ""


# ---- the client ---------------------------------------------------------------------------------

class Client:
    """A connection to one descent daemon, or to several that shard every instance.

    Client(url_or_list_of_urls, token=None, timeout=60.0, settle_ms=2000, ssl_context=None)
    timeout: seconds for an ordinary request (long-polls and sync pushes get
    what they need on top); settle_ms: how long a lagging shard may take to
    catch up before the shards count as out of step (async mode)."""

    def __init__(self, urls, token=None, timeout=60.0, settle_ms=2000, ssl_context=None):
        if isinstance(urls, str):
            urls = [urls]
        urls = list(urls)
        if not urls:
            raise ValueError("Client needs at least one URL")
        self.endpoints = [_Endpoint(u, token, timeout, ssl_context) for u in urls]
        self.urls = [e.url for e in self.endpoints]
        self.sharded = len(self.endpoints) > 1
        self.timeout = timeout
        self.settle_ms = settle_ms
        self._layouts = {}
        self._shapes = {}  # logical shapes of sharded instances this client created
        self._lock = threading.Lock()

    def close(self):
        for e in self.endpoints:
            e.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- fan-out -------------------------------------------------------------------

    def _each(self, fn, only=None):
        """[fn(k, endpoint)] over the shards (only: a list of shard indexes),
        concurrently; returns results and exceptions in shard order."""
        ks = list(range(len(self.endpoints))) if only is None else list(only)
        out = [None] * len(ks)

        def run(i):
            try:
                out[i] = fn(ks[i], self.endpoints[ks[i]])
            except BaseException as e:  # noqa: B902 - handed to the caller
                out[i] = e

        threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(1, len(ks))]
        for t in threads:
            t.start()
        if ks:
            run(0)
        for t in threads:
            t.join()
        return out

    def _all(self, fn, what, name=None):
        """_each, raising when any shard failed (with every shard's outcome)."""
        res = self._each(fn)
        errs = [(k, r) for k, r in enumerate(res) if isinstance(r, BaseException)]
        if not errs:
            return res
        for _, e in errs:
            if not isinstance(e, DescentError):
                raise e
        if name is not None and any(e.status == 404 for _, e in errs):
            self._forget(name)
        first = errs[0][1]
        if len(errs) == len(res) and len({(e.status, e.code) for _, e in errs}) == 1:
            raise first  # refused alike everywhere: nothing changed anywhere
        outcomes = []
        for k, r in enumerate(res):
            if isinstance(r, DescentError):
                outcomes.append("shard %d (%s): %s %s: %s" % (k, self.urls[k], r.status, r.code, r.message))
            else:
                outcomes.append("shard %d (%s): done" % (k, self.urls[k]))
        raise DescentError(first.status, first.code, "%s failed on %d of %d shards: %s" % (
            what, len(errs), len(res), "; ".join(outcomes)), step=first.step, url=first.url, shards=outcomes)

    # -- layouts ------------------------------------------------------------------

    def _forget(self, name):
        with self._lock:
            self._layouts.pop(name, None)

    def _layout(self, name, refresh=False):
        with self._lock:
            lay = self._layouts.get(name)
        if lay is not None and not refresh:
            return lay
        if not self.sharded:
            lay = _Layout(self.endpoints[0].json("GET", "/v1/optimizers/" + _quote(name)))
        else:
            descs = self._all(lambda k, e: e.json("GET", "/v1/optimizers/" + _quote(name)), "describe", name)
            lay = self._merge_layout(name, descs)
        with self._lock:
            self._layouts[name] = lay
        return lay

    def _merge_layout(self, name, descs):
        """The logical layout of a sharded instance from its shards' descriptions."""
        names, counts, origins, shapes = [], [], [], []
        sizes = []
        for k, d in enumerate(descs):
            sizes.append(int(d["size"]))
            for t in d["tensors"]:
                o = int(t.get("origin", 0))
                if names and names[-1] == t["name"] and origins[-1] + counts[-1] == o:
                    counts[-1] += int(t["count"])  # the next slice of the same tensor
                    shapes[-1] = None               # split: its shape shows flat
                else:
                    shapes.append(list(t["shape"]))
                    if t["name"] in names:
                        raise DescentError(409, "conflict", "'%s': the slices of tensor '%s' on the shards are not "
                                           "contiguous (not a sharded instance of this client?)" % (name, t["name"]))
                    names.append(t["name"])
                    counts.append(int(t["count"]))
                    origins.append(o)
        n = sum(sizes)
        want = [hi - lo for lo, hi in shard_ranges(n, len(descs))]
        if sizes != want:
            raise DescentError(409, "conflict", "'%s': shard sizes %s do not follow the sharding rule for %d floats "
                               "over %d shards (%s)" % (name, sizes, n, len(descs), want))
        known = self._shapes.get(name)
        if known and [math.prod(x) for x in known] == counts:
            shapes = known  # this client created it: the logical shapes
        else:
            shapes = [x if x is not None else [c] for x, c in zip(shapes, counts)]
        logical = dict(descs[0])
        logical["tensors"] = [{"name": nm, "shape": s, "count": c, "origin": o}
                              for nm, s, c, o in zip(names, shapes, counts, origins)]
        lay = _Layout(logical, shapes)
        lay.ranges = shard_ranges(n, len(descs))
        for k, d in enumerate(descs[1:], 1):
            if d.get("mode") != lay.mode or d.get("algorithm") != lay.algorithm:
                raise DescentError(409, "conflict", "'%s': shard %d is a %s/%s instance, shard 0 a %s/%s one" % (
                    name, k, d.get("algorithm"), d.get("mode"), lay.algorithm, lay.mode))
        return lay

    def _describe_logical(self, name, descs, lay):
        d = dict(descs[0])
        tensors = []
        for nm, s, c, o, off in zip(lay.names, lay.shapes, lay.counts, lay.origins, lay.offsets):
            t = {"name": nm, "shape": s, "offset": off, "count": c}
            if o:
                t["origin"] = o
            tensors.append(t)
        d["tensors"] = tensors
        d["size"] = lay.n
        steps = [x["step"] for x in descs]
        d["step"] = min(steps)
        d["steps"] = steps
        d["workers_seen"] = max(x.get("workers_seen", 0) for x in descs)
        d["waiting"] = sum(x.get("waiting", 0) for x in descs)
        d["shards"] = [{"url": u, "offset": lo, "size": hi - lo, "step": s}
                       for u, (lo, hi), s in zip(self.urls, lay.ranges, steps)]
        return d

    # -- instances ----------------------------------------------------------------

    def health(self):
        """GET /healthz of every daemon ({"status": "ok"}, a list when sharded)."""
        res = self._all(lambda k, e: e.json("GET", "/healthz"), "healthz")
        return res if self.sharded else res[0]

    def create(self, spec=None, **kw):
        """Creates an instance; the contract's Create body as keyword arguments
        (or one dict).  Returns its description."""
        spec = dict(spec or {}, **kw)
        name = spec.get("name")
        if not self.sharded:
            d = self.endpoints[0].json("POST", "/v1/optimizers", spec)
            self._forget(name)
            return d
        specs, shapes = self._shard_specs(spec)
        self._check_shardable(spec)
        res = self._each(lambda k, e: e.json("POST", "/v1/optimizers", specs[k]))
        if any(isinstance(r, BaseException) for r in res):
            # undo the shards that were created so that nothing half-exists
            made = [k for k, r in enumerate(res) if not isinstance(r, BaseException)]
            self._each(lambda k, e: self._quiet_delete(e, name), only=made)
            self._all(lambda k, e: self._raise(res[k]), "create (the shards created were removed again)")
        with self._lock:
            self._shapes[name] = shapes
            self._layouts.pop(name, None)
        lay = self._merge_layout(name, res)
        with self._lock:
            self._layouts[name] = lay
        return self._describe_logical(name, res, lay)

    @staticmethod
    def _raise(r):
        if isinstance(r, BaseException):
            raise r
        return r

    @staticmethod
    def _quiet_delete(e, name):
        try:
            e.json("DELETE", "/v1/optimizers/" + _quote(name))
        except DescentError:
            pass

    def _check_shardable(self, cfg):
        mode = cfg.get("mode", "async")
        if cfg.get("algorithm") == "random_search":
            raise DescentError(422, "invalid_value", "algorithm: random_search (ask/tell) is not sharded; "
                               "use a Client with one URL")
        if mode == "sync" and cfg.get("clip_grad_norm"):
            raise DescentError(422, "invalid_value", "clip_grad_norm: not with a sharded sync instance (the norm "
                               "of the round's combined gradient is only known inside each daemon)")
        mw, w = cfg.get("min_workers"), cfg.get("workers")
        if mode == "sync" and mw is not None and w is not None and mw < w:
            raise DescentError(422, "invalid_value", "min_workers: backup workers are not sharded (a late round "
                               "could close with different workers on different shards)")

    def _shard_specs(self, spec):
        """The create body of every shard, and the logical shapes."""
        tensors = spec.get("tensors")
        if not isinstance(tensors, list) or not tensors:
            raise DescentError(400, "bad_request", "tensors: expected a non-empty array of {\"name\", \"shape\"}")
        shapes, counts = [], []
        for i, t in enumerate(tensors):
            shape = t.get("shape") if isinstance(t, dict) else None
            if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 1 for d in shape):
                raise DescentError(400, "bad_request", "tensors[%d].shape: expected an array of positive sizes" % i)
            shapes.append(list(shape))
            counts.append(math.prod(shape))
        plan = shard_plan(counts, len(self.endpoints))
        specs = []
        for pieces in plan:
            s = {k: v for k, v in spec.items() if k != "tensors"}
            st = []
            for t, start, length in pieces:
                src = tensors[t]
                if length == counts[t]:
                    st.append(src)  # a whole tensor goes as it is
                    continue
                base = int(src.get("offset", src.get("origin", 0)) or 0)
                piece = {"name": src["name"], "shape": [length], "offset": base + start}
                values = src.get("values")
                init = src.get("init")
                if values is None and isinstance(init, dict) and list(init) == ["values"]:
                    values, init = init["values"], None
                if values is not None:
                    flat = _flatten(values, shapes[t], "tensors[%d].values" % t)
                    piece["values"] = flat[start:start + length].tolist()
                elif init is not None:
                    piece["init"] = init
                st.append(piece)
            s["tensors"] = st
            specs.append(s)
        return specs, shapes

    def list(self):
        """Every instance: [{"name", "algorithm", "mode", "step", "size", ...}].
        Sharded: one entry per name with the summed size, the smallest step,
        "steps" per shard (None where a shard lacks it)."""
        res = self._all(lambda k, e: e.json("GET", "/v1/optimizers")["optimizers"], "list")
        if not self.sharded:
            return res[0]
        merged = {}
        for k, lst in enumerate(res):
            for o in lst:
                m = merged.setdefault(o["name"], dict(o, size=0, steps=[None] * len(res)))
                m["size"] += o["size"]
                m["steps"][k] = o["step"]
        for m in merged.values():
            present = [s for s in m["steps"] if s is not None]
            m["step"] = min(present)
            m["complete"] = len(present) == len(res)
        return list(merged.values())

    def describe(self, name):
        """The instance's configuration and status.  Sharded: the logical
        tensors, "step" the smallest, "steps" and "shards" per shard."""
        if not self.sharded:
            return self.endpoints[0].json("GET", "/v1/optimizers/" + _quote(name))
        descs = self._all(lambda k, e: e.json("GET", "/v1/optimizers/" + _quote(name)), "describe", name)
        lay = self._merge_layout(name, descs)
        with self._lock:
            self._layouts[name] = lay
        return self._describe_logical(name, descs, lay)

    def patch(self, name, **fields):
        """PATCH run-time settings: hyper={...}, clip_grad_norm, schedule,
        max_staleness, workers, worker_lease_ms, ...  Returns the description."""
        if self.sharded:
            lay = self._layout(name)
            self._check_shardable({"algorithm": lay.algorithm, "mode": lay.mode,
                                   "clip_grad_norm": fields.get("clip_grad_norm"),
                                   "min_workers": fields.get("min_workers"),
                                   "workers": fields.get("workers", lay.workers)})
        res = self._all(lambda k, e: e.json("PATCH", "/v1/optimizers/" + _quote(name), fields), "patch", name)
        self._forget(name)
        return self.describe(name) if self.sharded else res[0]

    def set(self, name, **hyper):
        """Changes hyperparameters at run time: set("m", lr=0.0005)."""
        return self.patch(name, hyper=hyper)

    def delete(self, name):
        """Removes the instance (from every shard) and its snapshots."""
        res = self._each(lambda k, e: e.json("DELETE", "/v1/optimizers/" + _quote(name)))
        self._forget(name)
        with self._lock:
            self._shapes.pop(name, None)
        errs = [r for r in res if isinstance(r, BaseException)]
        if errs and (len(errs) == len(res) or any(getattr(e, "status", None) != 404 for e in errs)):
            self._all(lambda k, e: self._raise(res[k]), "delete")
        return {"name": name, "deleted": True}

    # -- push and pull ------------------------------------------------------------

    def push(self, name, grads, worker=None, step=None, loss=None, seq=None, idempotency_key=None,
             params=True, binary=True, timeout=-1):
        """Pushes a gradient: a flat sequence of floats (every tensor in
        creation order), float32 bytes, or a dict by tensor (flat or nested
        lists).  Returns the new parameters as Params (empty with
        params=False; .step is always set).  worker/step/loss/seq as in the
        contract; idempotency_key sends the Idempotency-Key header."""
        lay = self._layout(name)
        g = lay.gather(grads)
        if self.sharded and lay.mode == "sync" and lay.clip:
            raise DescentError(422, "invalid_value", "clip_grad_norm: a sharded sync instance cannot clip")
        norm = None
        if self.sharded:
            # Refused here, or some shards would take the step and others not.
            norm = global_norm(g)
            if not math.isfinite(norm):
                raise DescentError(422, "not_finite", "%s: NaN or infinite" % lay.where(_first_bad(g)))
            if lay.mode == "sync":
                norm = None  # each daemon computes the norm of the round's combined gradient
            # async: every shard clips by (and records in its history) the whole gradient's norm
        if timeout == -1:
            if lay.mode == "sync":
                timeout = None if not lay.round_timeout_ms else lay.round_timeout_ms / 1000.0 + self.timeout
            else:
                timeout = self.timeout
        headers = {"Idempotency-Key": str(idempotency_key)} if idempotency_key is not None else {}
        opts = dict(worker=worker, step=step, loss=loss, seq=seq, params=params, binary=binary,
                    timeout=timeout, headers=headers, grad_norm=norm)
        if not self.sharded:
            try:
                arr, st = self._push_one(self.endpoints[0], name, lay, g, 0, lay.n, **opts)
            except DescentError as e:
                if e.status == 404:
                    self._forget(name)
                raise
            if arr is not None and len(arr) != lay.n:
                lay = self._layout(name, refresh=True)
                if len(arr) != lay.n:
                    raise DescentError(500, "bad_reply", "'%s': %d parameters in the reply, %d expected"
                                       % (name, len(arr), lay.n))
            return Params(lay.split(arr) if arr is not None else {}, st)
        res = self._all(lambda k, e: self._push_one(e, name, lay, g, *lay.ranges[k], **opts), "push", name)
        steps = [st for _, st in res]
        step_now = self._check_steps(name, lay, steps, "a push", sync_exact=True)
        if not params:
            return Params({}, step_now, steps)
        flat = array("f")
        for arr, _ in res:
            flat.extend(arr)
        return Params(lay.split(flat), step_now, steps)

    def _push_one(self, e, name, lay, g, lo, hi, worker, step, loss, seq, params, binary, timeout, headers,
                  grad_norm):
        """One daemon's push of g[lo:hi]: (array of its parameters or None, step)."""
        part = g if (lo == 0 and hi == len(g)) else g[lo:hi]
        path = "/v1/optimizers/%s/step" % _quote(name)
        if binary:
            q = _query(worker=worker, step=step, loss=None if loss is None else repr(float(loss)), seq=seq,
                       params=None if params else "none",
                       grad_norm=None if grad_norm is None else repr(grad_norm))
            h = dict(headers, **{"Content-Type": BINARY, "Accept": BINARY})
            _, rh, data = e.request("POST", path + q, _to_wire(part), h, timeout=timeout)
            st = int(rh["descent-step"])
            return (_from_wire(data) if params else None), st
        body = {"grads": self._slice_by_tensor(lay, part, lo)}
        for k, v in (("worker", worker), ("step", step), ("loss", loss), ("seq", seq), ("grad_norm", grad_norm)):
            if v is not None:
                body[k] = v
        text = _finite_json(body, "grads", [(k, v) for k, v in body["grads"].items()])
        q = "" if params else "?params=none"
        _, rh, data = e.request("POST", path + q, text, dict(headers, **{"Content-Type": "application/json"}),
                                timeout=timeout)
        doc = json.loads(data)
        if not params:
            return None, int(doc["step"])
        flat = array("f")
        for v in doc["params"].values():
            flat.extend(array("f", v))
        return flat, int(doc["step"])

    @staticmethod
    def _slice_by_tensor(lay, part, lo):
        """{tensor: list} of the part of the logical flat range starting at lo."""
        out = {}
        hi = lo + len(part)
        for nm, o, c in zip(lay.names, lay.offsets, lay.counts):
            a, b = max(o, lo), min(o + c, hi)
            if a < b:
                out[nm] = part[a - lo:b - lo].tolist()
        return out

    def pull(self, name, wait_for_step=None, timeout_ms=None, worker=None, binary=True):
        """The parameters as Params ({tensor: flat list}, .step).  With
        wait_for_step=N the daemon answers once the step is at least N, or
        after timeout_ms (its default 30 s) with the older step."""
        lay = self._layout(name)
        t = self.timeout + ((timeout_ms if timeout_ms is not None else 30000) / 1000.0 if wait_for_step is not None
                            else 0)
        if not self.sharded:
            try:
                arr, st = self._pull_one(self.endpoints[0], name, wait_for_step, timeout_ms, worker, binary, t)
            except DescentError as e:
                if e.status == 404:
                    self._forget(name)
                raise
            if len(arr) != lay.n:
                lay = self._layout(name, refresh=True)
            return Params(lay.split(arr), st)
        res = self._all(lambda k, e: self._pull_one(e, name, wait_for_step, timeout_ms, worker, binary, t),
                        "pull", name)
        res = self._settle_pull(name, lay, res, worker, binary)
        flat = array("f")
        for arr, _ in res:
            flat.extend(arr)
        steps = [st for _, st in res]
        return Params(lay.split(flat), min(steps), steps)

    def _pull_one(self, e, name, wait_for_step, timeout_ms, worker, binary, timeout):
        q = _query(wait_for_step=wait_for_step, timeout_ms=timeout_ms if wait_for_step is not None else None,
                   worker=worker)
        path = "/v1/optimizers/%s/params%s" % (_quote(name), q)
        if binary:
            _, h, data = e.request("GET", path, headers={"Accept": BINARY}, timeout=timeout)
            return _from_wire(data), int(h["descent-step"])
        doc = e.json("GET", path, timeout=timeout)
        flat = array("f")
        for v in doc["params"].values():
            flat.extend(array("f", v))
        return flat, int(doc["step"])

    def _settle_pull(self, name, lay, res, worker, binary):
        """Pulls again from shards behind the others until all show one step
        (sync) or all reached the first leader's step (async), or settle_ms passes."""
        steps = [st for _, st in res]
        target = max(steps)
        deadline = time.monotonic() + self.settle_ms / 1000.0
        while True:
            if lay.mode == "sync":
                behind = [k for k, s in enumerate(steps) if s != max(steps)]
                target = max(steps)
            else:
                behind = [k for k, s in enumerate(steps) if s < target]
            if not behind:
                return res
            left = int((deadline - time.monotonic()) * 1000)
            if left <= 0:
                raise DescentStepMismatch(name, self.urls, steps, "a pull")
            again = self._each(lambda k, e: self._pull_one(e, name, target, left, worker, binary,
                                                           self.timeout + left / 1000.0), only=behind)
            for k, r in zip(behind, again):
                if isinstance(r, BaseException):
                    raise r
                res[k] = r
                steps[k] = r[1]

    def _check_steps(self, name, lay, steps, what, sync_exact):
        """The step of a sharded reply; raises DescentStepMismatch when the
        shards disagree (sync: exactly; async: after settle_ms of catching up)."""
        if len(set(steps)) == 1:
            return steps[0]
        if lay.mode == "sync" and sync_exact:
            raise DescentStepMismatch(name, self.urls, steps, what)
        target = max(steps)
        behind = [k for k, s in enumerate(steps) if s < target]
        ms = max(1, int(self.settle_ms))
        got = self._each(lambda k, e: self._pull_one(e, name, target, ms, None, True, self.timeout + ms / 1000.0),
                         only=behind)
        now = list(steps)
        for k, r in zip(behind, got):
            if isinstance(r, BaseException):
                raise r
            now[k] = r[1]
        if any(s < target for s in now):
            raise DescentStepMismatch(name, self.urls, steps, what + " (still behind after %d ms: %s)"
                                      % (ms, now))
        return min(steps)

    # -- state ----------------------------------------------------------------------

    def export_state(self, name):
        """The whole state (parameters, every optimizer buffer, step, hyper) as
        one document; sharded: gathered from every shard, which must agree on the step."""
        if not self.sharded:
            return self.endpoints[0].json("GET", "/v1/optimizers/%s/state" % _quote(name), timeout=None)
        docs = self._all(lambda k, e: e.json("GET", "/v1/optimizers/%s/state" % _quote(name), timeout=None),
                         "export", name)
        steps = [d["step"] for d in docs]
        if len(set(steps)) != 1:
            raise DescentStepMismatch(name, self.urls, steps, "an export")
        lay = self._merge_layout(name, docs)
        out = {k: v for k, v in docs[0].items() if k not in ("params", "buffers", "tensors", "size")}
        tensors = []
        for nm, s, c, o, off in zip(lay.names, lay.shapes, lay.counts, lay.origins, lay.offsets):
            t = {"name": nm, "shape": s, "offset": off, "count": c}
            if o:
                t["origin"] = o
            tensors.append(t)
        out["tensors"] = tensors
        out["size"] = lay.n

        def gather(get):
            per = {nm: [] for nm in lay.names}
            for d in docs:
                part = get(d)
                for t in d["tensors"]:
                    per[t["name"]].extend(part[t["name"]])
            return per

        out["params"] = gather(lambda d: d["params"])
        names = [set(d.get("buffers", {})) for d in docs]
        if any(b != names[0] for b in names):
            raise DescentError(409, "conflict", "'%s': the shards hold different optimizer buffers: %s"
                               % (name, [sorted(b) for b in names]))
        out["buffers"] = {b: gather(lambda d, b=b: d["buffers"][b]) for b in docs[0].get("buffers", {})}
        return out

    def import_state(self, name, doc):
        """Creates or replaces the instance from a state document (sharded:
        split over every shard, which then all hold its step)."""
        if not self.sharded:
            d = self.endpoints[0].json("PUT", "/v1/optimizers/%s/state" % _quote(name), doc, timeout=None)
            self._forget(name)
            return d
        self._check_shardable(doc)
        tensors = doc.get("tensors")
        if not isinstance(tensors, list) or not tensors:
            raise DescentError(400, "bad_request", "tensors: expected a non-empty array of {\"name\", \"shape\"}")
        shapes = [list(t["shape"]) for t in tensors]
        counts = [math.prod(s) for s in shapes]
        plan = shard_plan(counts, len(self.endpoints))
        flat_params = {t["name"]: _flatten(doc["params"][t["name"]], s, "params." + t["name"])
                       for t, s in zip(tensors, shapes)}
        flat_bufs = {b: {t["name"]: _flatten(per[t["name"]], s, "buffers.%s.%s" % (b, t["name"]))
                         for t, s in zip(tensors, shapes)}
                     for b, per in (doc.get("buffers") or {}).items()}
        docs = []
        for pieces in plan:
            d = {k: v for k, v in doc.items() if k not in ("params", "buffers", "tensors", "size", "name")}
            d["tensors"], d["params"] = [], {}
            d["buffers"] = {b: {} for b in flat_bufs}
            for t, start, length in pieces:
                src = tensors[t]
                nm = src["name"]
                d["tensors"].append({"name": nm, "shape": shapes[t] if length == counts[t] else [length],
                                     "origin": int(src.get("origin", 0) or 0) + start})
                d["params"][nm] = flat_params[nm][start:start + length].tolist()
                for b in flat_bufs:
                    d["buffers"][b][nm] = flat_bufs[b][nm][start:start + length].tolist()
            docs.append(d)
        self._forget(name)
        res = self._all(lambda k, e: e.json("PUT", "/v1/optimizers/%s/state" % _quote(name), docs[k],
                                            timeout=None), "import", name)
        with self._lock:
            self._shapes[name] = shapes
        lay = self._merge_layout(name, res)
        with self._lock:
            self._layouts[name] = lay
        return self._describe_logical(name, res, lay)

    # -- the rest of the API --------------------------------------------------------

    def _single(self, what):
        if self.sharded:
            raise DescentError(422, "invalid_value", "%s: random_search (ask/tell) instances are not sharded; "
                               "use a Client with one URL" % what)
        return self.endpoints[0]

    def ask(self, name):
        """A random_search candidate: {"candidate": id, "params": {tensor: list}}."""
        doc = self._single("ask").json("POST", "/v1/optimizers/%s/ask" % _quote(name), {})
        doc["params"] = {k: array("f", v).tolist() for k, v in doc["params"].items()}
        return doc

    def tell(self, name, candidate, loss):
        """Reports a candidate's loss: {"step", "improved", "best_loss"}."""
        return self._single("tell").json("POST", "/v1/optimizers/%s/tell" % _quote(name),
                                         {"candidate": int(candidate), "loss": float(loss)})

    def workers(self, name):
        """Each worker's last push, step and staleness: {"step", "workers": [...]}
        (sharded: shard 0's, with every shard's under "shards")."""
        res = self._all(lambda k, e: e.json("GET", "/v1/optimizers/%s/workers" % _quote(name)), "workers", name)
        if not self.sharded:
            return res[0]
        return dict(res[0], shards=res)

    def history(self, name):
        """The recent steps, oldest first: [{"step", "time", "loss", "grad_norm", "lr"}]
        (sharded: shard 0's)."""
        return self.endpoints[0].json("GET", "/v1/optimizers/%s/history" % _quote(name))["history"]

    def playground(self, **body):
        """POST /v1/playground (objective, algorithm, hyper, start, steps, ...)."""
        return self.endpoints[0].json("POST", "/v1/playground", body)

    def metrics(self):
        """The Prometheus text of the first daemon."""
        return self.endpoints[0].request("GET", "/metrics", headers={"Accept": "text/plain"})[2].decode()


# ---- worker tools (the seed's Approach 2 and its gradient check; the seed is neuralnets' ---------
# optimizers tutorial that descent grew from, not part of this repository)

def numeric_gradient(f, x, h=1e-5):
    """The gradient of f at x by central differences, (f(x+h) - f(x-h)) / 2h
    per element.  x: a flat sequence of floats or a dict of them by tensor
    (f receives the same kind); returns the same kind, as lists."""
    if isinstance(x, dict):
        xs = {k: list(v) for k, v in x.items()}
        out = {}
        for k in xs:
            v = xs[k]
            g = []
            for i in range(len(v)):
                old = v[i]
                v[i] = old + h
                fp = f(xs)
                v[i] = old - h
                fm = f(xs)
                v[i] = old
                g.append((fp - fm) / (2 * h))
            out[k] = g
        return out
    v = list(x)
    g = []
    for i in range(len(v)):
        old = v[i]
        v[i] = old + h
        fp = f(v)
        v[i] = old - h
        fm = f(v)
        v[i] = old
        g.append((fp - fm) / (2 * h))
    return g


def gradient_check(analytic, numeric):
    """The largest relative error |a - n| / max(|a|, |n|) over the elements
    (0 where both are 0): below ~1e-6 the analytic gradient is right, above
    ~1e-2 it is probably wrong.  Flat sequences or dicts by tensor."""
    if isinstance(analytic, dict) or isinstance(numeric, dict):
        if set(analytic) != set(numeric):
            raise ValueError("gradient_check: tensors differ: %s vs %s" % (sorted(analytic), sorted(numeric)))
        return max((gradient_check(analytic[k], numeric[k]) for k in analytic), default=0.0)
    a, n = list(analytic), list(numeric)
    if len(a) != len(n):
        raise ValueError("gradient_check: %d analytic values, %d numeric" % (len(a), len(n)))
    worst = 0.0
    for x, y in zip(a, n):
        d = max(abs(x), abs(y))
        if d > 0:
            worst = max(worst, abs(x - y) / d)
    return worst
