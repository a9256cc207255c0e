"""descent.client: the Client of descent (torch.optim as an HTTP service).

    from descent import Client, DescentError

    c = Client("http://127.0.0.1:8080", token=None)
    c.create(name="lr", algorithm="adam", hyper={"lr": 0.01},
             tensors=[{"name": "w", "shape": [8]}, {"name": "b", "shape": [1]}])
    p = c.pull("lr")                    # Params: {"w": [...], "b": [...]}, p.step == 0
    p = c.push("lr", {"w": gw, "b": gb}, worker="w1", step=p.step, loss=0.53)
    p.step                              # 1: the step of the returned parameters

What it owns: the conversation with one daemon, or with several over which
it shards every instance (descent.sharding has the rule).  Threads: a Client
may be shared by threads; connections are pooled per daemon (descent.http)
and sharded calls run on one thread pool per Client.

Arrays.  A gradient is a flat buffer (every tensor in creation order) or a
dict by tensor name; each may be a numpy array, a torch CPU tensor,
array('f'), a memoryview, float32 bytes, a (nested) list, or a number for a
one-element tensor.  C-contiguous float32 buffers are sent as they are (a
memoryview of their memory, no per-element work); other dtypes are
converted once (one vectorised copy).  Replies come back as Params: a dict
by tensor name of flat lists (kind="list", the default), array('f')
(kind="array"), numpy arrays or torch tensors shaped like the tensor
(kind="numpy" / "torch", views of one flat buffer), or are read straight
into out= (one flat buffer, or a dict of one buffer per tensor).

Wire formats.  push and pull use the binary format by default (proto/binary.md);
binary=False uses JSON.  Either way gradients are rounded to float32 in the
client first, so both send the same bits.

Errors.  Every refusal raises DescentError (.status, .code, .message, .step).
A daemon that cannot be reached raises status None, code "unreachable";
no answer in time: code "timeout".  A sync push waits for its round at most
the instance's round_timeout_ms, and at most `sync_timeout` seconds, plus
`timeout`: no request ever waits unbounded.

Sharding (several URLs): see descent.sharding and proto/sharding.md; push
and pull fan out to every shard at once and gather, bit-identical to one
daemon; global-norm clipping sends the whole gradient's norm as ?grad_norm=;
shards out of step raise DescentStepMismatch.
"""
import json
import math
import threading
import time
from array import array
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from .errors import DescentError, DescentStepMismatch
from .http import BINARY, Endpoint, endpoint, quote as _quote, query as _query
from .sharding import FanOut, Layout, shard_plan, shard_ranges, slice_chunks
from . import rows as _rows
from . import wire
from .wire import adopt_out, alloc, as_f32_bytes, f32_array, finite_json, first_bad, is_numpy, is_torch, to_list

__all__ = ["Client", "Params"]

DEFAULT_SYNC_TIMEOUT = 600.0   # seconds a sync push may wait when the instance has no round_timeout_ms


def _flat_array(values: Any, shape: Sequence[int], what: str) -> array:
    """A tensor's values (any accepted form) as array('f')."""
    return f32_array(as_f32_bytes(values, math.prod(shape), what, shape))


class Params(dict):
    """Parameters by tensor name at one step: flat lists (the default),
    array('f'), or numpy arrays / torch tensors shaped like their tensors.
    .step is their step; for a sharded instance .steps holds each shard's."""

    def __init__(self, values: Any = (), step: Optional[int] = None, steps: Optional[List[int]] = None,
                 flat: Any = None) -> None:
        super().__init__(values)
        self.step = step
        self.steps = steps
        self._flat = flat

    def flat(self) -> Any:
        """Every tensor concatenated in creation order (the flat buffer itself
        for numpy/torch replies and out= buffers; a list otherwise)."""
        if self._flat is not None:
            return self._flat
        out: list = []
        for v in self.values():
            if isinstance(v, _rows.Rows):
                continue  # sparse tensors are not in the flat layout
            out.extend(v.tolist() if hasattr(v, "tolist") and not isinstance(v, list) else v)
        return out

    def __repr__(self) -> str:
        return "Params(step=%r, %s)" % (self.step, super().__repr__())


class _Target:
    """Where a binary reply of one instance goes: flat byte views in order,
    and how to turn them into Params afterwards."""

    def __init__(self, lay: Layout, out: Any, kind: str, dtype: str = "float32") -> None:
        self.lay = lay
        self.out = out
        self.kind = kind
        self.dtype = dtype  # the wire precision its binary replies come in
        if out is None:
            self.obj, mv = alloc(kind, lay.n)
            self.views = [mv]
        elif isinstance(out, dict):
            for k in out:
                if k not in lay.names:
                    raise ValueError("out.%s: no tensor of that name" % k)
            missing = [nm for nm in lay.names if nm not in out]
            if missing:
                raise ValueError("out: missing %s (give every tensor a buffer, or one flat buffer)"
                                 % ", ".join(missing))
            self.obj = None
            self.views = [adopt_out(out[nm], c, "out." + nm) for nm, c in zip(lay.names, lay.counts)]
        else:
            self.obj = out
            self.views = [adopt_out(out, lay.n, "out")]

    def range(self, lo: int, hi: int) -> List[memoryview]:
        return slice_chunks(self.views, lo, hi)

    def fill(self, lo: int, values: array) -> None:
        """Writes float32 values (a JSON reply) at flat index lo."""
        data = memoryview(values).cast("B") if not wire.BIG_ENDIAN else memoryview(values.tobytes())
        self.write(lo, data, len(values))

    def write(self, lo: int, data: memoryview, n: Optional[int] = None) -> None:
        """Writes little-endian float32 bytes at flat index lo."""
        n = data.nbytes // 4 if n is None else n
        pos = 0
        for v in self.range(lo, lo + n):
            v[:] = data[pos:pos + v.nbytes]
            pos += v.nbytes

    def params(self, step: int, steps: Optional[List[int]] = None) -> Params:
        lay = self.lay
        if isinstance(self.out, dict):
            return Params({nm: self.out[nm] for nm in lay.names}, step, steps)
        obj = self.obj
        if is_numpy(obj) or is_torch(obj):
            flat = obj.reshape(-1) if is_numpy(obj) else obj.view(-1)
            vals = {nm: flat[o:o + c].reshape(s) for nm, o, c, s in zip(lay.names, lay.offsets, lay.counts, lay.shapes)}
            return Params(vals, step, steps, flat=obj)
        mv = self.views[0]
        if self.out is None and self.kind == "list":
            return Params({nm: to_list(mv[o * 4:(o + c) * 4]) for nm, o, c in zip(lay.names, lay.offsets, lay.counts)},
                          step, steps)
        if self.out is None or isinstance(obj, array):
            return Params({nm: f32_array(mv[o * 4:(o + c) * 4]) for nm, o, c in zip(lay.names, lay.offsets,
                                                                                       lay.counts)},
                          step, steps, flat=obj)
        return Params({nm: mv[o * 4:(o + c) * 4].cast("f") for nm, o, c in zip(lay.names, lay.offsets, lay.counts)},
                      step, steps, flat=obj)


class Client:
    """A connection to one descent daemon, or to several that shard every instance.

    Client(url_or_list_of_urls, token=None, timeout=60.0, settle_ms=2000,
           ssl_context=None, kind="list", sync_timeout=600.0)
    timeout: seconds for an ordinary request (long-polls and sync pushes get
    what they need on top); settle_ms: how long a lagging shard may take to
    catch up before the shards count as out of step (async mode); kind: what
    push and pull return by default ("list", "array", "numpy", "torch");
    sync_timeout: the longest a sync push waits for its round (also when the
    instance's round_timeout_ms is longer), plus timeout.
    Replicas: a URL that lists the members of one Raft group, comma-separated
    ("http://a:8080,http://b:8080,http://c:8080"), is one shard served by that
    group: writes follow the leader, failovers are retried (pushes with an
    Idempotency-Key, one is made up if none is given: applied exactly once),
    reads go through the leader (descent.http.Group).  The members may also be
    joined by "|", as libdescent and the CLI take them: "http://a1|http://a2,
    http://b1|http://b2" is an instance sharded over two groups."""

    def __init__(self, urls: Union[str, Sequence[str]], token: Optional[str] = None, timeout: float = 60.0,
                 settle_ms: float = 2000, ssl_context: Any = None, kind: str = "list",
                 sync_timeout: float = DEFAULT_SYNC_TIMEOUT) -> None:
        if isinstance(urls, str):
            # libdescent's spelling (the CLI's DESCENT_URL): "a1|a2,b1|b2" is two shards, each a group
            urls = urls.split(",") if "|" in urls else [urls]
        urls = list(urls)
        if not urls:
            raise ValueError("Client needs at least one URL")
        if kind not in wire.KINDS:
            raise ValueError("kind must be one of %s, not %r" % (", ".join(wire.KINDS), kind))
        self.kind = kind
        self.sync_timeout = sync_timeout
        self.endpoints = [endpoint(u, token, timeout, ssl_context) for u in urls]
        self.urls = [e.url for e in self.endpoints]
        self.sharded = len(self.endpoints) > 1
        self.timeout = timeout
        self.settle_ms = settle_ms
        self._layouts = {}
        self._shapes = {}  # logical shapes of sharded instances this client created
        self._lock = threading.Lock()
        self._fan = FanOut(len(self.endpoints))

    def close(self) -> None:
        """Closes the pooled connections and the fan-out threads (the Client
        may still be used afterwards: both come back on demand)."""
        for e in self.endpoints:
            e.close()
        self._fan.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- fan-out -------------------------------------------------------------------

    def _each(self, fn, only=None):
        """[fn(k, endpoint)] over the shards (only: a list of shard indexes),
        concurrently on the Client's pool; returns results and exceptions in shard order."""
        ks = list(range(len(self.endpoints))) if only is None else list(only)
        return self._fan.map(lambda k: fn(k, self.endpoints[k]), ks)

    def _all(self, fn, what, name=None, only=None):
        """_each, raising when any shard failed (with every shard's outcome);
        only: the shard indexes to call (results in that order)."""
        res = self._each(fn, only)
        ks = list(range(len(self.endpoints))) if only is None else list(only)
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
        for k, r in zip(ks, res):
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
            lay = Layout(self.endpoints[0].json("GET", "/v1/optimizers/" + _quote(name)))
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
        sparse = {}    # name -> [logical desc, [(origin, V) per shard]]
        after = {}     # sparse name -> how many dense tensors come before it (creation order)
        for k, d in enumerate(descs):
            sizes.append(int(d["size"]))
            last = -1  # the logical index of the last dense tensor seen on this shard
            for t in d["tensors"]:
                o = int(t.get("origin", 0) or 0)
                if t.get("sparse"):
                    V, D = int(t["shape"][0]), int(t["shape"][1])
                    if t["name"] not in sparse:
                        if k:
                            raise DescentError(409, "conflict", "'%s': sparse tensor '%s' is not on shard 0 (not a "
                                               "sharded instance of this client?)" % (name, t["name"]))
                        sparse[t["name"]] = [dict(t, shape=[V, D]), []]
                    sparse[t["name"]][1].append((o, V))
                    after[t["name"]] = max(after.get(t["name"], 0), last + 1)
                    continue
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
                last = len(names) - 1
        n = sum(sizes)
        nsh = len(descs)
        want = [hi - lo for lo, hi in shard_ranges(n, nsh, empty_ok=bool(sparse))]
        if sizes != want:
            raise DescentError(409, "conflict", "'%s': shard sizes %s do not follow the sharding rule for %d floats "
                               "over %d shards (%s)" % (name, sizes, n, nsh, want))
        row_ranges = {}
        for nm, (t, parts) in sparse.items():
            V = sum(v for _, v in parts)
            base = parts[0][0]
            rr = _rows.row_ranges(V, nsh) if len(parts) == nsh else None
            got = [(o - base, o - base + v) for o, v in parts]
            if rr != got:
                raise DescentError(409, "conflict", "'%s': the row ranges of sparse tensor '%s' on the shards %s do "
                                   "not follow the sharding rule for %d rows over %d shards" % (name, nm, got, V, nsh))
            t["shape"][0] = V
            row_ranges[nm] = rr
        known = self._shapes.get(name)
        if known and [math.prod(x) for x in known] == counts:
            shapes = known  # this client created it: the logical shapes
        else:
            shapes = [x if x is not None else [c] for x, c in zip(shapes, counts)]
        logical = dict(descs[0])
        logical["tensors"] = []
        for i in range(len(names) + 1):
            # sparse tensors are on every shard; their place among the dense ones is where any shard has them
            logical["tensors"].extend(sparse[nm][0] for nm in sparse if after[nm] == i)
            if i < len(names):
                logical["tensors"].append({"name": names[i], "shape": shapes[i], "count": counts[i],
                                           "origin": origins[i]})
        lay = Layout(logical, shapes)
        lay.ranges = shard_ranges(n, nsh, empty_ok=bool(sparse))
        for st in lay.sparse:
            st.ranges = row_ranges[st.name]
        for k, d in enumerate(descs[1:], 1):
            if d.get("mode") != lay.mode or d.get("algorithm") != lay.algorithm:
                raise DescentError(409, "conflict", "'%s': shard %d is a %s/%s instance, shard 0 a %s/%s one" % (
                    name, k, d.get("algorithm"), d.get("mode"), lay.algorithm, lay.mode))
        return lay

    def _describe_logical(self, name, descs, lay):
        d = dict(descs[0])
        d["tensors"] = lay.tensor_docs()
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
        """Creates an instance; the create body of docs/api.md as keyword arguments
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
        """The create body of every shard, and the logical shapes of the dense tensors."""
        tensors = spec.get("tensors")
        if not isinstance(tensors, list) or not tensors:
            raise DescentError(400, "bad_request", "tensors: expected a non-empty array of {\"name\", \"shape\"}")
        shapes, counts, dense = [], [], []
        for i, t in enumerate(tensors):
            shape = t.get("shape") if isinstance(t, dict) else None
            if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 1 for d in shape):
                raise DescentError(400, "bad_request", "tensors[%d].shape: expected an array of positive sizes" % i)
            if t.get("sparse"):
                if len(shape) != 2:
                    raise DescentError(400, "bad_request", "tensors[%d].shape: a sparse tensor is [V, D]" % i)
                continue
            dense.append(i)
            shapes.append(list(shape))
            counts.append(math.prod(shape))
        nsh = len(self.endpoints)
        has_sparse = len(dense) < len(tensors)
        plan = shard_plan(counts, nsh, empty_ok=has_sparse)
        sparse_parts = {i: self._sparse_pieces(t, i, nsh) for i, t in enumerate(tensors) if t.get("sparse")}
        specs = []
        for k, pieces in enumerate(plan):
            s = {key: v for key, v in spec.items() if key != "tensors"}
            by_tensor = {dense[t]: (start, length) for t, start, length in pieces}
            st = []
            for i, src in enumerate(tensors):
                if i in sparse_parts:
                    st.append(sparse_parts[i][k])
                    continue
                if i not in by_tensor:
                    continue
                start, length = by_tensor[i]
                c = math.prod(src["shape"])
                if length == c:
                    st.append(src)  # a whole tensor goes as it is
                    continue
                base = int(src.get("offset", src.get("origin", 0)) or 0)
                piece = {"name": src["name"], "shape": [length], "offset": base + start}
                values = src.get("values")
                init = src.get("init")
                if values is None and isinstance(init, dict) and list(init) == ["values"]:
                    values, init = init["values"], None
                if values is not None:
                    flat = _flat_array(values, src["shape"], "tensors[%d].values" % i)
                    piece["values"] = flat[start:start + length].tolist()
                elif init is not None:
                    piece["init"] = init
                st.append(piece)
            s["tensors"] = st
            specs.append(s)
        return specs, shapes

    @staticmethod
    def _sparse_pieces(src, i, nsh):
        """Each shard's part of a sparse tensor's create entry: rows [lo, hi)
        as [hi - lo, D] with "offset" at its first row; explicit rows split."""
        V, D = src["shape"]
        base = int(src.get("offset", src.get("origin", 0)) or 0)
        ranges = _rows.row_ranges(V, nsh)
        init = src.get("init")
        parts = None
        if isinstance(init, dict) and "rows" in init:
            what = "tensors[%d].init" % i
            enc = _rows.encode(_rows.Rows(init["rows"], init.get("values", [])), V, D, what)
            parts = _rows.split(enc, ranges)
        out = []
        for k, (lo, hi) in enumerate(ranges):
            piece = {key: v for key, v in src.items() if key not in ("shape", "offset", "origin", "init")}
            piece["shape"] = [hi - lo, D]
            if base + lo:
                piece["offset"] = base + lo
            if parts is not None:
                piece["init"] = dict(init, **parts[k].enc.json())
            elif init is not None:
                piece["init"] = init
            out.append(piece)
        return out

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

    def _grad_chunks(self, lay: Layout, grads: Any, what: str = "grads") -> List[memoryview]:
        """A gradient's dense tensors (flat buffer, or dict by tensor) as
        float32 byte chunks, flat order (sparse tensors: _sparse_grads)."""
        if isinstance(grads, dict):
            for k in grads:
                if k not in lay.names and k not in lay.sparse_by_name:
                    raise DescentError(400, "unknown_tensor", "%s.%s: no tensor of that name" % (what, k))
            chunks = []
            for nm, shape, c in zip(lay.names, lay.shapes, lay.counts):
                if nm not in grads:
                    raise DescentError(400, "bad_length", "%s.%s: missing (every tensor needs its gradient)"
                                       % (what, nm))
                chunks.append(as_f32_bytes(grads[nm], c, "%s.%s" % (what, nm), shape))
            return chunks
        if lay.sparse:
            raise DescentError(400, "bad_request", "%s: this instance has sparse tensors (%s): give the gradient as "
                               "a dict by tensor name, with descent.Rows for each sparse one"
                               % (what, ", ".join(st.name for st in lay.sparse)))
        if isinstance(grads, (int, float)) and not isinstance(grads, bool) and lay.n != 1:
            raise DescentError(400, "bad_length", "%s: expected %d values (every tensor in creation order), got "
                               "a single number" % (what, lay.n))
        mv = as_f32_bytes(grads, None, what)
        if mv.nbytes != 4 * lay.n:
            raise DescentError(400, "bad_length", "%s: expected %d values (every tensor in creation order), got %d"
                               % (what, lay.n, mv.nbytes // 4))
        return [mv]

    @staticmethod
    def _sparse_grads(lay: Layout, grads: Any, dtype: str, what: str = "grads") -> List[_rows.Encoded]:
        """Each sparse tensor's Rows of a gradient dict, checked, in wire form."""
        out = []
        for st in lay.sparse:
            if st.name not in grads:
                raise DescentError(400, "bad_length", "%s.%s: missing (a sparse tensor without rows this step: "
                                   "descent.Rows([], [])" % (what, st.name))
            out.append(_rows.encode(grads[st.name], st.V, st.D, "%s.%s" % (what, st.name), dtype))
        return out

    def _sync_timeout(self, lay: Layout) -> Optional[float]:
        """How long a sync push may wait: the round's deadline (every round has
        one; 300 s unless the instance says otherwise), at most sync_timeout,
        plus the Client's timeout."""
        wait = lay.round_timeout_ms / 1000.0 if lay.round_timeout_ms else self.sync_timeout
        return min(wait, self.sync_timeout) + self.timeout

    def push(self, name: str, grads: Any, worker: Optional[str] = None, step: Optional[int] = None,
             loss: Optional[float] = None, seq: Optional[int] = None, idempotency_key: Optional[str] = None,
             params: bool = True, binary: bool = True, timeout: Optional[float] = -1, out: Any = None,
             kind: Optional[str] = None, dtype: str = "float32", reply_dtype: Optional[str] = None) -> Params:
        """Pushes a gradient: a flat buffer or sequence (every tensor in
        creation order), float32 bytes, or a dict by tensor (flat or nested;
        a number for a one-element tensor; descent.Rows(rows, values) for a
        sparse tensor).  Returns the new parameters as
        Params (empty with params=False; .step is always set), of `kind`
        (the Client's default unless given) or read into `out`; a sparse
        tensor's entry is a Rows of the pushed rows' new values, in the order
        sent.
        worker/step/loss/seq as in docs/api.md; idempotency_key sends the
        Idempotency-Key header.  timeout: seconds (-1: the Client's, or for a
        sync instance its round timeout plus the Client's).  dtype="bfloat16"
        or "float16" sends the gradient rounded to that type (half the bytes;
        bf16/fp16 tensors and arrays go as they are) and receives the
        parameters in it, widened into `out` (binary only); reply_dtype
        (default: dtype) picks the parameters' precision on their own, e.g.
        bfloat16 gradients with float32 parameters back."""
        dtype = wire.check_dtype(dtype)
        reply_dtype = wire.check_dtype(reply_dtype or dtype)
        if (dtype != "float32" or reply_dtype != "float32") and not binary:
            raise ValueError("dtype=%s needs binary=True (JSON carries decimal numbers)" % dtype)
        lay = self._layout(name)
        chunks = self._grad_chunks(lay, grads)
        sp = self._sparse_grads(lay, grads, dtype) if lay.sparse else []
        half = None
        if dtype != "float32":
            # rounded once here: the bytes sent, and (widened) the values the
            # finite check and a sharded norm look at, exactly the daemon's
            half = memoryview(wire.narrow(memoryview(b"".join(chunks)) if len(chunks) != 1 else chunks[0], dtype))
            chunks = [wire.widen(half, dtype)]
        if self.sharded and lay.mode == "sync" and lay.clip:
            raise DescentError(422, "invalid_value", "clip_grad_norm: a sharded sync instance cannot clip")
        norm = None
        if self.sharded:
            # Refused here, or some shards would take the step and others not.
            bad = first_bad(chunks)
            if bad >= 0:
                raise DescentError(422, "not_finite", "%s: NaN or infinite" % lay.where(bad))
            for st, enc in zip(lay.sparse, sp):
                bad = first_bad([enc.f32])
                if bad >= 0:
                    raise DescentError(422, "not_finite", "grads.%s.values[%d][%d]: NaN or infinite"
                                       % (st.name, bad // st.D, bad % st.D))
            if lay.mode != "sync":
                # async: every shard clips by (and records in its history) the whole gradient's norm
                norm = math.sqrt(wire.sum_lanes(self._norm_chunks(lay, chunks, sp)))
        if timeout == -1:
            timeout = self._sync_timeout(lay) if lay.mode == "sync" else self.timeout
        headers = {"Idempotency-Key": str(idempotency_key)} if idempotency_key is not None else {}
        target = _Target(lay, out, kind or self.kind) if params else None
        answers = ([_rows.Answer(enc.ids, enc.k, st.D, kind or self.kind) for st, enc in zip(lay.sparse, sp)]
                   if params else None)
        opts = dict(worker=worker, step=step, loss=loss, seq=seq, binary=binary,
                    timeout=timeout, headers=headers, grad_norm=norm, dtype=dtype, reply_dtype=reply_dtype,
                    half=half)
        if not self.sharded:
            try:
                st = self._push_one(self.endpoints[0], name, lay, chunks, 0, lay.n, target,
                                    [_rows.Part(None, enc) for enc in sp], answers, **opts)
            except DescentError as e:
                if e.status in (404, 500) and e.code in ("unknown_instance", "bad_reply"):
                    self._forget(name)
                raise
            return self._params(lay, target, answers, st)
        assert lay.ranges is not None
        nsh = len(self.endpoints)
        split = [_rows.split(enc, st.ranges) for st, enc in zip(lay.sparse, sp)]
        per = [[split[j][k] for j in range(len(sp))] for k in range(nsh)]
        only = None
        if lay.sparse and lay.step_free:
            # only the shards this push touches (no result depends on the step count)
            only = [k for k in range(nsh) if lay.ranges[k][0] < lay.ranges[k][1] or any(pt.enc.k for pt in per[k])]
            only = only or [0]
        res = self._all(lambda k, e: self._push_one(e, name, lay, chunks, *lay.ranges[k], target, per[k], answers,
                                                    **opts), "push", name, only=only)
        if only is not None:
            steps: List[Optional[int]] = [None] * nsh
            for k, r in zip(only, res):
                steps[k] = r
            return self._params(lay, target, answers, max(res), steps)
        step_now = self._check_steps(name, lay, res, "a push", sync_exact=True)
        return self._params(lay, target, answers, step_now, res)

    @staticmethod
    def _params(lay: Layout, target: Optional[_Target], answers, step: int, steps=None) -> Params:
        p = target.params(step, steps) if target else Params({}, step, steps)
        for st, a in zip(lay.sparse, answers or ()):
            p[st.name] = a.rows()
        return p

    @staticmethod
    def _norm_chunks(lay: Layout, chunks: List[memoryview], sp) -> List[memoryview]:
        """The whole gradient's float32 values in creation order (a sparse
        tensor's values as sent), for the global norm."""
        out: List[memoryview] = []
        for kind, i in lay.order:
            if kind == "d":
                out.extend(slice_chunks(chunks, lay.offsets[i], lay.offsets[i] + lay.counts[i]))
            else:
                out.append(sp[i].f32)
        return out

    @staticmethod
    def _binary_body(lay: Layout, chunks, half, lo: int, hi: int, parts) -> List[memoryview]:
        """One daemon's binary push body: its dense range and each sparse
        tensor's section (u64 k, k x u64 row, k*D values), in creation order."""
        body: List[memoryview] = []
        for kind, i in lay.order:
            if kind == "s":
                body.extend(parts[i].enc.section())
                continue
            a, b = max(lay.offsets[i], lo), min(lay.offsets[i] + lay.counts[i], hi)
            if a < b:
                if half is not None:
                    body.append(half[2 * a:2 * b])
                else:
                    body.extend(slice_chunks(chunks, a, b))
        return body

    @staticmethod
    def _read_reply(name: str, lay: Layout, data: Optional[bytes], lo: int, hi: int, target, parts, answers,
                    dtype: str, e: Endpoint) -> None:
        """A binary step reply of an instance with sparse tensors: dense
        values into target, each sparse section's values into its answer."""
        es = 4 if dtype == "float32" else 2
        mv = memoryview(data or b"")
        ks = [(pt.enc.k, lay.sparse[j].D) for j, pt in enumerate(parts)]
        plain = (hi - lo) * es + sum(k * D * es for k, D in ks)
        mirror = plain + sum(8 + 8 * k for k, _ in ks)
        if mv.nbytes not in (plain, mirror):
            raise DescentError(500, "bad_reply", "'%s': %d bytes in the step reply, %d expected (was the instance "
                               "replaced?)" % (name, mv.nbytes, mirror), url=e.url)
        with_rows = mv.nbytes == mirror

        def f32(seg):
            return seg if es == 4 else wire.widen(bytes(seg), dtype)

        pos = 0
        for kind, i in lay.order:
            if kind == "d":
                a, b = max(lay.offsets[i], lo), min(lay.offsets[i] + lay.counts[i], hi)
                if a < b:
                    seg = mv[pos:pos + (b - a) * es]
                    pos += (b - a) * es
                    if target:
                        target.write(a, f32(seg))
                continue
            pt = parts[i]
            k, D = pt.enc.k, lay.sparse[i].D
            if with_rows:
                if _rows.u64_unpack(mv[pos:pos + 8]) != k:
                    raise DescentError(500, "bad_reply", "'%s': the step reply's section of '%s' has %d rows, %d "
                                       "were pushed" % (name, lay.sparse[i].name, _rows.u64_unpack(mv[pos:pos + 8]),
                                                        k), url=e.url)
                pos += 8 + 8 * k
            seg = mv[pos:pos + k * D * es]
            pos += k * D * es
            if answers:
                answers[i].put(pt.pos, f32(seg))

    def _push_one(self, e: Endpoint, name: str, lay: Layout, chunks: List[memoryview], lo: int, hi: int,
                  target: Optional[_Target], parts, answers, worker, step, loss, seq, binary, timeout, headers,
                  grad_norm, dtype="float32", reply_dtype="float32", half=None) -> int:
        """One daemon's push of the gradient's [lo, hi) and its parts of the
        sparse tensors: its step (parameters into target and answers)."""
        part = slice_chunks(chunks, lo, hi)
        path = "/v1/optimizers/%s/step" % _quote(name)
        want = target is not None or bool(answers)
        if binary:
            q = _query(worker=worker, step=step, loss=None if loss is None else repr(float(loss)), seq=seq,
                       params=None if want else "none",
                       grad_norm=None if grad_norm is None else repr(grad_norm))
            h = dict(headers, **{"Content-Type": wire.media_type(dtype), "Accept": wire.media_type(reply_dtype)})
            if lay.sparse:
                body = self._binary_body(lay, chunks, half, lo, hi, parts)
                _, rh, data = e.request("POST", path + q, body, h, timeout=timeout)
                if want:
                    self._read_reply(name, lay, data, lo, hi, target, parts, answers, reply_dtype, e)
                return int(rh["descent-step"])
            into = target.range(lo, hi) if target else None
            if half is not None:
                part = [half[2 * lo:2 * hi]]  # this shard's range of the bytes narrowed once in push
            if reply_dtype != "float32":
                half = bytearray(2 * (hi - lo)) if target else None
                _, rh, data = e.request("POST", path + q, part, h, timeout=timeout,
                                        into=[memoryview(half)] if target else None)
                if target and data is None:
                    wire.widen(bytes(half), reply_dtype, into)
            else:
                _, rh, data = e.request("POST", path + q, part, h, timeout=timeout, into=into)
            st = int(rh["descent-step"])
            if target and data is not None:
                raise DescentError(500, "bad_reply", "'%s': %d bytes of parameters in the reply, %d expected (was the "
                                   "instance replaced?)" % (name, len(data), 4 * (hi - lo)), url=e.url)
            return st
        flat = f32_array(b"".join(part))
        dense = self._slice_by_tensor(lay, flat, lo)
        body: Dict[str, Any] = {"grads": dict(dense)}
        for j, pt in enumerate(parts):
            body["grads"][lay.sparse[j].name] = pt.enc.json()
        for k, v in (("worker", worker), ("step", step), ("loss", loss), ("seq", seq), ("grad_norm", grad_norm)):
            if v is not None:
                body[k] = v
        text = finite_json(body, "grads", list(dense.items()))
        q = "" if want else "?params=none"
        _, rh, data = e.request("POST", path + q, text, dict(headers, **{"Content-Type": "application/json"}),
                                timeout=timeout)
        doc = json.loads(data)
        if target:
            self._fill_json(name, target, doc["params"], lo, hi, e)
        for j, pt in enumerate(parts if answers else ()):
            st = lay.sparse[j]
            vals = _rows.json_values(doc["params"].get(st.name), pt.enc.k, st.D, "'%s': %s" % (name, st.name))
            answers[j].put(pt.pos, memoryview(vals).cast("B") if not wire.BIG_ENDIAN else
                           memoryview(wire._swap(vals)).cast("B"))
        return int(doc["step"])

    @staticmethod
    def _fill_json(name: str, target: _Target, params: Dict[str, Sequence[float]], lo: int, hi: int,
                   e: Endpoint) -> None:
        flat = array("f")
        for v in params.values():
            if isinstance(v, dict):
                continue  # a sparse tensor: {"rows": ...} or {"sparse": true, "rows_held": m}
            flat.extend(array("f", v))
        if len(flat) != hi - lo:
            raise DescentError(500, "bad_reply", "'%s': %d parameters in the reply, %d expected (was the instance "
                               "replaced?)" % (name, len(flat), hi - lo), url=e.url)
        target.fill(lo, flat)

    @staticmethod
    def _slice_by_tensor(lay: Layout, part: array, lo: int) -> Dict[str, List[float]]:
        """{tensor: list} of the part of the logical flat range starting at lo."""
        out = {}
        hi = lo + len(part)
        for nm, o, c in zip(lay.names, lay.offsets, lay.counts):
            a, b = max(o, lo), min(o + c, hi)
            if a < b:
                out[nm] = part[a - lo:b - lo].tolist()
        return out

    def pull(self, name: str, wait_for_step: Optional[int] = None, timeout_ms: Optional[int] = None,
             worker: Optional[str] = None, binary: bool = True, out: Any = None, kind: Optional[str] = None,
             dtype: str = "float32") -> Params:
        """The parameters as Params (.step), of `kind` (the Client's default
        unless given) or read straight into `out`.  With wait_for_step=N the
        daemon answers once the step is at least N, or after timeout_ms (its
        default 30 s) with the older step.  dtype="bfloat16" or "float16"
        has them sent rounded to that type (half the bytes), widened here."""
        dtype = wire.check_dtype(dtype)
        if dtype != "float32" and not binary:
            raise ValueError("dtype=%s needs binary=True" % dtype)
        lay = self._layout(name)
        t = self.timeout + ((timeout_ms if timeout_ms is not None else 30000) / 1000.0 if wait_for_step is not None
                            else 0)
        target = _Target(lay, out, kind or self.kind, dtype)
        if not self.sharded:
            try:
                st = self._pull_one(self.endpoints[0], name, lay, wait_for_step, timeout_ms, worker, binary, t,
                                    target, 0, lay.n)
            except DescentError as e:
                if e.code in ("unknown_instance", "bad_reply"):
                    self._forget(name)
                raise
            return target.params(st)
        assert lay.ranges is not None
        ks = None
        if lay.sparse and lay.step_free:
            # shards a push may leave out (no dense floats) count fewer steps: ask the others
            ks = [k for k, (lo, hi) in enumerate(lay.ranges) if lo < hi] or [0]
        res = self._all(lambda k, e: self._pull_one(e, name, lay, wait_for_step, timeout_ms, worker, binary, t,
                                                    target, *lay.ranges[k]), "pull", name, only=ks)
        steps = self._settle_pull(name, lay, res, worker, binary, target, ks)
        return target.params(min(steps), steps)

    def pull_rows(self, name: str, tensor: str, rows: Any, out: Any = None, binary: bool = True,
                  kind: Optional[str] = None, dtype: str = "float32") -> Tuple[int, Any]:
        """(step, values): the current values of rows of sparse tensor
        `tensor` (never-touched rows: their initial values; nothing is
        allocated on the daemon), as k x D: a numpy float32 array when numpy
        is present (kind="torch": a torch tensor; lists without numpy), or
        read into `out` (k*D contiguous float32), which is then returned.
        Sharded: each row is asked of the shard that holds it."""
        dtype = wire.check_dtype(dtype)
        if dtype != "float32" and not binary:
            raise ValueError("dtype=%s needs binary=True" % dtype)
        lay = self._layout(name)
        st = lay.sparse_by_name.get(tensor)
        if st is None:
            code = "unknown_tensor"
            msg = "tensor: '%s' is not a sparse tensor of '%s'" % (tensor, name) if tensor in lay.names else \
                "tensor: '%s' has no tensor '%s'" % (name, tensor)
            raise DescentError(400, code, msg)
        ids = _rows.check_ids(rows, st.V, "pull")
        k = len(ids)
        kind = kind or ("list" if _rows._np() is None and self.kind != "torch" else self.kind)
        ans = _rows.Answer(ids, k, st.D, kind)
        into = wire.adopt_out(out, k * st.D, "out") if out is not None else None
        enc = _rows.Encoded(ids, k, 0, memoryview(b""), memoryview(b""), 4)
        if not self.sharded:
            parts = [_rows.Part(None, enc)]
            only = [0]
        else:
            parts = _rows.split(enc, st.ranges)
            only = [j for j, pt in enumerate(parts) if pt.enc.k] or [0]
        res = self._all(lambda j, e: self._rows_one(e, name, tensor, parts[j], st.D, binary, dtype, ans), "pull_rows",
                        name, only=only)
        if self.sharded and not lay.step_free and len(set(res)) > 1:
            res = self._settle_rows(name, lay, tensor, st, only, res, parts, binary, dtype, ans)
        step = max(res)
        if into is not None:
            into[:] = ans.view()
            return step, out
        return step, ans.rows().values

    def _rows_one(self, e: Endpoint, name: str, tensor: str, pt, D: int, binary: bool, dtype: str, ans) -> int:
        """One daemon's rows (pt.enc.ids, local) into ans at pt.pos: its step."""
        path = "/v1/optimizers/%s/rows" % _quote(name)
        k = pt.enc.k
        if binary and k:
            h = {"Content-Type": BINARY, "Accept": wire.media_type(dtype)}
            es = 4 if dtype == "float32" else 2
            _, rh, data = e.request("POST", path + _query(tensor=tensor), [_rows.ids_bytes(pt.enc.ids)], h)
            data = data or b""
            if len(data) != k * D * es:
                raise DescentError(500, "bad_reply", "'%s': %d bytes of rows in the reply, %d expected" % (
                    name, len(data), k * D * es), url=e.url)
            ans.put(pt.pos, memoryview(data) if es == 4 else wire.widen(data, dtype))
            return int(rh["descent-step"])
        doc = e.json("POST", path, {"tensor": tensor, "rows": [int(r) for r in pt.enc.ids]})
        vals = _rows.json_values(doc, k, D, "'%s': %s" % (name, tensor))
        ans.put(pt.pos, memoryview(vals).cast("B") if not wire.BIG_ENDIAN else memoryview(wire._swap(vals)).cast("B"))
        return int(doc["step"])

    def _settle_rows(self, name, lay, tensor, st, only, res, parts, binary, dtype, ans):
        """Shards that count every step but answered different ones: the
        behind ones are long-polled to the largest step and read again."""
        target = max(res)
        ms = max(1, int(self.settle_ms))
        behind = [k for k, r in zip(only, res) if r < target]
        got = self._each(lambda k, e: self._pull_one(e, name, lay, target, ms, None, True, self.timeout + ms / 1000.0,
                                                     None, *lay.ranges[k]), only=behind)
        for r in got:
            if isinstance(r, BaseException):
                raise r
        again = self._all(lambda k, e: self._rows_one(e, name, tensor, parts[k], st.D, binary, dtype, ans),
                          "pull_rows", name, only=behind)
        now = dict(zip(only, res))
        now.update(zip(behind, again))
        if len(set(now.values())) > 1:
            steps = [now.get(k) for k in range(len(self.endpoints))]
            raise DescentStepMismatch(name, self.urls, steps, "a pull of rows")
        return list(now.values())

    def _pull_one(self, e: Endpoint, name: str, lay: Layout, wait_for_step, timeout_ms, worker, binary, timeout,
                  target: Optional[_Target], lo: int, hi: int) -> int:
        q = _query(wait_for_step=wait_for_step, timeout_ms=timeout_ms if wait_for_step is not None else None,
                   worker=worker)
        path = "/v1/optimizers/%s/params%s" % (_quote(name), q)
        if binary:
            into = target.range(lo, hi) if target else None
            if target and target.dtype != "float32":
                half = bytearray(2 * (hi - lo))
                _, h, data = e.request("GET", path, headers={"Accept": wire.media_type(target.dtype)},
                                       timeout=timeout, into=[memoryview(half)])
                if data is None:
                    wire.widen(bytes(half), target.dtype, into)
            else:
                _, h, data = e.request("GET", path, headers={"Accept": BINARY}, timeout=timeout, into=into)
            if target and data is not None:
                raise DescentError(500, "bad_reply", "'%s': %d bytes of parameters in the reply, %d expected (was the "
                                   "instance replaced?)" % (name, len(data), 4 * (hi - lo)), url=e.url)
            return int(h["descent-step"])
        doc = e.json("GET", path, timeout=timeout)
        if target:
            self._fill_json(name, target, doc["params"], lo, hi, e)
        return int(doc["step"])

    def _settle_pull(self, name, lay, steps, worker, binary, target, ks=None):
        """Pulls again from shards behind the others until all show one step
        (sync) or all reached the first leader's step (async), or settle_ms
        passes; returns the steps.  ks: the shards asked (steps in that order)."""
        steps = list(steps)
        ks = list(range(len(self.endpoints))) if ks is None else ks
        target_step = max(steps)
        deadline = time.monotonic() + self.settle_ms / 1000.0
        while True:
            if lay.mode == "sync":
                behind = [k for k, s in enumerate(steps) if s != max(steps)]
                target_step = max(steps)
            else:
                behind = [k for k, s in enumerate(steps) if s < target_step]
            if not behind:
                return steps
            left = int((deadline - time.monotonic()) * 1000)
            if left <= 0:
                raise DescentStepMismatch(name, [self.urls[k] for k in ks], steps, "a pull")
            again = self._each(lambda k, e: self._pull_one(e, name, lay, target_step, left, worker, binary,
                                                           self.timeout + left / 1000.0, target, *lay.ranges[k]),
                               only=[ks[j] for j in behind])
            for k, r in zip(behind, again):
                if isinstance(r, BaseException):
                    raise r
                steps[k] = r

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
        got = self._each(lambda k, e: self._pull_one(e, name, lay, target, ms, None, True, self.timeout + ms / 1000.0,
                                                     None, *lay.ranges[k]), only=behind)
        now = list(steps)
        for k, r in zip(behind, got):
            if isinstance(r, BaseException):
                raise r
            now[k] = r
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
        lay = self._merge_layout(name, docs)
        if len(set(steps)) != 1 and not (lay.sparse and lay.step_free):
            raise DescentStepMismatch(name, self.urls, steps, "an export")
        out = {k: v for k, v in docs[0].items() if k not in ("params", "buffers", "tensors", "size")}
        # shards a push left out (no result depends on the step count) count fewer steps
        out["step"] = max(steps)
        out["tensors"] = lay.tensor_docs()
        out["size"] = lay.n

        def gather(get):
            per = {nm: [] for nm in lay.names}
            for st in lay.sparse:
                per[st.name] = {"rows": [], "values": []}
            for k, d in enumerate(docs):
                part = get(d)
                for t in d["tensors"]:
                    if t.get("sparse"):
                        # a shard's held rows, local ids: shift to the logical table's
                        base = lay.sparse_by_name[t["name"]].ranges[k][0]
                        got = part.get(t["name"]) or {"rows": [], "values": []}
                        per[t["name"]]["rows"].extend(int(r) + base for r in got["rows"])
                        vals = got["values"]
                        if vals and not isinstance(vals[0], list):  # flat k*D: as rows
                            D = lay.sparse_by_name[t["name"]].D
                            vals = [vals[i:i + D] for i in range(0, len(vals), D)]
                        per[t["name"]]["values"].extend(vals)
                    else:
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
        nsh = len(self.endpoints)
        dense = [t for t in tensors if not t.get("sparse")]
        shapes = [list(t["shape"]) for t in dense]
        counts = [math.prod(s) for s in shapes]
        plan = shard_plan(counts, nsh, empty_ok=len(dense) < len(tensors))
        flat_params = {t["name"]: _flat_array(doc["params"][t["name"]], s, "params." + t["name"])
                       for t, s in zip(dense, shapes)}
        flat_bufs = {b: {t["name"]: _flat_array(per[t["name"]], s, "buffers.%s.%s" % (b, t["name"]))
                         for t, s in zip(dense, shapes)}
                     for b, per in (doc.get("buffers") or {}).items()}
        sparse_parts = {}  # name -> per shard: (piece, params part, {buffer: part})
        for i, t in enumerate(tensors):
            if not t.get("sparse"):
                continue
            V, D = int(t["shape"][0]), int(t["shape"][1])
            base = int(t.get("origin", 0) or 0)  # in a state document "offset" is the flat position
            ranges = _rows.row_ranges(V, nsh)

            def cut(held, what):
                held = held or {"rows": [], "values": []}
                enc = _rows.encode(_rows.Rows(held["rows"], held["values"]), V, D, what)
                return [pt.enc.json() for pt in _rows.split(enc, ranges)]

            pp = cut(doc["params"].get(t["name"]), "params." + t["name"])
            bb = {b: cut(per.get(t["name"]), "buffers.%s.%s" % (b, t["name"]))
                  for b, per in (doc.get("buffers") or {}).items()}
            pieces = []
            for k, (lo, hi) in enumerate(ranges):
                piece = {key: v for key, v in t.items() if key not in ("shape", "offset", "origin", "count")}
                piece["shape"] = [hi - lo, D]
                if base + lo:
                    piece["origin"] = base + lo
                pieces.append((piece, pp[k], {b: bb[b][k] for b in bb}))
            sparse_parts[t["name"]] = pieces
        docs = []
        for k, pieces in enumerate(plan):
            d = {key: v for key, v in doc.items() if key not in ("params", "buffers", "tensors", "size", "name")}
            d["tensors"], d["params"] = [], {}
            d["buffers"] = {b: {} for b in (doc.get("buffers") or {})}
            by_tensor = {dense[t]["name"]: (t, start, length) for t, start, length in pieces}
            for src in tensors:
                nm = src["name"]
                if nm in sparse_parts:
                    piece, pp, bb = sparse_parts[nm][k]
                    d["tensors"].append(piece)
                    d["params"][nm] = pp
                    for b, v in bb.items():
                        d["buffers"][b][nm] = v
                    continue
                if nm not in by_tensor:
                    continue
                t, start, length = by_tensor[nm]
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


