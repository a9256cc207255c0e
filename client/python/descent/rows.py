"""descent.rows: rows of a sparse tensor ("sparse": true, shape [V, D]).

    descent.Rows([3, 17, 3], [[...D floats...], [...], [...]])   # k entries

What it owns: Rows (row ids and their k x D values, the gradient of a sparse
tensor in a push and what a step reply answers for it), turning what a user
hands us into u64 row ids and float32 values (checked: ids in [0, V), k*D
values), the binary section of a push (u64 k, k x u64 row, k*D values,
proto/binary.md), splitting entries over shards by row range (order kept
within a shard), and putting the answered values back in the order sent.
numpy is used when present (vectorised checks and splits); without it,
everything works per element.  It never talks to a daemon.

Threads: pure functions and value objects, safe from any thread.
"""
import struct
import sys
from array import array
from typing import Any, List, Sequence, Tuple

from .errors import DescentError
from . import wire

__all__ = ["Rows"]

_U64 = struct.Struct("<Q")


class Rows:
    """The rows of a sparse tensor: .rows (k row ids) and .values (k x D).

    As input (a gradient): rows is a sequence of ints (a list, array, numpy
    integer array or torch integer tensor) and values k x D floats (nested,
    2-D numpy/torch) or k*D flat; ids may repeat and come in any order.
    As an answer (a step reply, pull_rows): numpy arrays (rows int64 (k,),
    values float32 (k, D)) when numpy is present, torch tensors with
    kind="torch", lists otherwise."""

    __slots__ = ("rows", "values")

    def __init__(self, rows: Any, values: Any) -> None:
        self.rows = rows
        self.values = values

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        """rows, values = r"""
        yield self.rows
        yield self.values

    def __repr__(self) -> str:
        return "Rows(rows=%r, values=%r)" % (self.rows, self.values)


# ---- input: ids and values -------------------------------------------------------------

def _np():
    return sys.modules.get("numpy")


def _bad_row(what: str, i: int, r: Any, V: int) -> DescentError:
    return DescentError(422, "invalid_value", "%s.rows[%d]: row %s is not in [0, %d)" % (what, i, r, V))


def check_ids(rows: Any, V: int, what: str) -> Any:
    """Row ids as a numpy int64 array (numpy present) or a list of ints,
    each checked to be in [0, V).  Raises DescentError like the daemon."""
    np = _np()
    if wire.is_torch(rows):
        rows = rows.detach().cpu()
        rows = rows.numpy() if np is not None else rows.tolist()
    if np is not None:
        a = np.asarray(rows)
        if a.ndim != 1:
            if a.size == 0:
                a = a.reshape(0)
            else:
                raise DescentError(400, "bad_request", "%s.rows: expected a flat sequence of row ids" % what)
        if a.size and a.dtype.kind not in "iu":
            for i, r in enumerate(a.tolist()):
                if not isinstance(r, int) or isinstance(r, bool):
                    raise DescentError(400, "bad_request", "%s.rows[%d]: not a row id (an integer)" % (what, i))
            a = np.asarray(a.tolist())
        if a.dtype.kind == "u":
            if a.size and int(a.max()) >= V:
                i = int(np.flatnonzero(a >= V)[0])
                raise _bad_row(what, i, int(a[i]), V)
            return a.astype(np.int64)
        a = a.astype(np.int64, copy=False)
        if a.size:
            bad = np.flatnonzero((a < 0) | (a >= V))
            if bad.size:
                i = int(bad[0])
                raise _bad_row(what, i, int(a[i]), V)
        return a
    out = []
    for i, r in enumerate(rows):
        if isinstance(r, bool) or not isinstance(r, int):
            try:
                r = r.__index__()
            except (AttributeError, TypeError):
                raise DescentError(400, "bad_request", "%s.rows[%d]: not a row id (an integer)" % (what, i)) from None
        if not 0 <= r < V:
            raise _bad_row(what, i, r, V)
        out.append(r)
    return out


def ids_bytes(ids: Any) -> memoryview:
    """Checked ids as k little-endian u64."""
    np = _np()
    if np is not None and isinstance(ids, np.ndarray):
        return memoryview(ids.astype("<u8").tobytes())
    a = array("Q", ids)
    if wire.BIG_ENDIAN:
        a.byteswap()
    return memoryview(a).cast("B")


def values_f32(values: Any, k: int, D: int, what: str) -> memoryview:
    """k x D values (nested, 2-D or flat) as k*D little-endian float32 bytes."""
    shape = getattr(values, "shape", None)
    if shape is not None and len(shape) == 2 and (int(shape[0]), int(shape[1])) != (k, D):
        raise DescentError(400, "bad_length", "%s.values: expected %d x %d values (k rows of D), got %d x %d"
                           % (what, k, D, int(shape[0]), int(shape[1])))
    if isinstance(values, (list, tuple)) and values and isinstance(values[0], (list, tuple)):
        if len(values) != k:
            raise DescentError(400, "bad_length", "%s.values: expected %d rows of %d values, got %d rows"
                               % (what, k, D, len(values)))
        return wire.as_f32_bytes(values, k * D, what + ".values", [k, D])
    return wire.as_f32_bytes(values, k * D, what + ".values")


class Encoded:
    """One sparse gradient, checked and in wire form: ids (numpy int64 or
    list), k, and the values as bytes of the wire dtype (esize bytes each)
    plus, as float32, what the daemon will see (for finite checks, norms)."""

    __slots__ = ("ids", "k", "D", "wire", "f32", "esize")

    def __init__(self, ids: Any, k: int, D: int, wire_vals: memoryview, f32: memoryview, esize: int) -> None:
        self.ids, self.k, self.D, self.wire, self.f32, self.esize = ids, k, D, wire_vals, f32, esize

    def section(self) -> List[memoryview]:
        """The binary push section: u64 k, k x u64 row, k*D values."""
        return [memoryview(_U64.pack(self.k)), ids_bytes(self.ids), self.wire]

    def json(self) -> dict:
        vals = wire.f32_array(self.f32)
        D = self.D
        return {"rows": [int(r) for r in self.ids],
                "values": [vals[i * D:(i + 1) * D].tolist() for i in range(self.k)]}


def encode(g: Any, V: int, D: int, what: str, dtype: str = "float32") -> Encoded:
    """A Rows gradient (or a {"rows", "values"} dict) for a [V, D] tensor."""
    if isinstance(g, dict) and set(g) == {"rows", "values"}:
        g = Rows(g["rows"], g["values"])
    if not isinstance(g, Rows):
        raise DescentError(400, "bad_request", "%s: a sparse tensor takes descent.Rows(rows, values) (or "
                           "{\"rows\": [...], \"values\": [[...], ...]}), not %s" % (what, type(g).__name__))
    ids = check_ids(g.rows, V, what)
    k = len(ids)
    f32 = values_f32(g.values, k, D, what)
    if dtype == "float32":
        return Encoded(ids, k, D, f32, f32, 4)
    half = memoryview(wire.narrow(f32, dtype))
    return Encoded(ids, k, D, half, wire.widen(half, dtype), 2)


# ---- sharding: split by row range ---------------------------------------------------------

def row_ranges(V: int, nshards: int) -> List[Tuple[int, int]]:
    """Rows [lo, hi) of each shard (the flat-range rule on rows); every shard needs one."""
    if V < nshards:
        raise DescentError(400, "bad_length", "a sparse tensor of %d rows cannot be spread over %d shards "
                           "(each needs one row)" % (V, nshards))
    return [(k * V // nshards, (k + 1) * V // nshards) for k in range(nshards)]


class Part:
    """The entries of one sparse gradient that go to one shard: positions in
    the gradient (order kept), local ids (row - lo), values in wire form."""

    __slots__ = ("pos", "enc")

    def __init__(self, pos: Any, enc: Encoded) -> None:
        self.pos, self.enc = pos, enc


def _take(mv: memoryview, sel: Sequence[int], width: int) -> memoryview:
    return memoryview(b"".join(bytes(mv[i * width:(i + 1) * width]) for i in sel))


def split(enc: Encoded, ranges: List[Tuple[int, int]]) -> List[Part]:
    """enc's entries per shard (every shard gets a Part, maybe empty)."""
    np = _np()
    D, es = enc.D, enc.esize
    out = []
    if np is not None and isinstance(enc.ids, np.ndarray):
        his = np.array([hi for _, hi in ranges], dtype=np.int64)
        which = np.searchsorted(his, enc.ids, side="right")
        wv = np.frombuffer(enc.wire, dtype="<f4" if es == 4 else "<u2").reshape(enc.k, D)
        fv = np.frombuffer(enc.f32, dtype="<f4").reshape(enc.k, D)
        for s, (lo, _) in enumerate(ranges):
            sel = np.flatnonzero(which == s)
            w = memoryview(np.ascontiguousarray(wv[sel]).tobytes())
            f = memoryview(np.ascontiguousarray(fv[sel]).tobytes()) if es != 4 else w
            out.append(Part(sel, Encoded(enc.ids[sel] - lo, int(sel.size), D, w, f, es)))
        return out
    for s, (lo, hi) in enumerate(ranges):
        sel = [i for i, r in enumerate(enc.ids) if lo <= r < hi]
        w = _take(enc.wire, sel, D * es)
        f = _take(enc.f32, sel, D * 4) if es != 4 else w
        out.append(Part(sel, Encoded([enc.ids[i] - lo for i in sel], len(sel), D, w, f, es)))
    return out


# ---- answers ---------------------------------------------------------------------------------

class Answer:
    """Where the values answered for one sparse gradient (k x D float32) go:
    one flat buffer, filled by position, turned into Rows at the end."""

    def __init__(self, ids: Any, k: int, D: int, kind: str) -> None:
        self.ids, self.k, self.D, self.kind = ids, k, D, kind
        self.obj, self.mv = wire.alloc("numpy" if kind != "torch" and _np() is not None else
                                       ("torch" if kind == "torch" else "array"), k * D)

    def view(self) -> memoryview:
        return self.mv

    def put(self, pos: Any, data: memoryview) -> None:
        """Writes float32 rows (bytes) at positions pos (a Part's)."""
        D = self.D
        if pos is None:
            self.mv[:] = data
            return
        np = _np()
        if np is not None and not isinstance(pos, list):
            dst = np.frombuffer(self.mv, dtype="<f4").reshape(self.k, D)
            dst[pos] = np.frombuffer(data, dtype="<f4").reshape(-1, D)
            return
        for j, i in enumerate(pos):
            self.mv[i * D * 4:(i + 1) * D * 4] = data[j * D * 4:(j + 1) * D * 4]

    def rows(self) -> Rows:
        return as_rows(self.ids, self.obj, self.k, self.D, self.kind)


def as_rows(ids: Any, vals: Any, k: int, D: int, kind: str) -> Rows:
    """Rows of the answer kind from checked ids and a flat float32 buffer of k*D."""
    np = _np()
    if kind == "torch":
        t = wire._torch()
        tv = vals if wire.is_torch(vals) else t.frombuffer(bytearray(memoryview(vals).cast("B")), dtype=t.float32)
        rid = t.as_tensor(np.asarray(ids, dtype=np.int64)) if np is not None else t.tensor(list(ids),
                                                                                              dtype=t.int64)
        return Rows(rid, tv.reshape(k, D))
    if np is not None:
        nv = vals if isinstance(vals, np.ndarray) else np.frombuffer(memoryview(vals).cast("B"),
                                                                   dtype="<f4").copy()
        return Rows(np.asarray(ids, dtype=np.int64), nv.reshape(k, D))
    flat = vals if isinstance(vals, array) else wire.f32_array(memoryview(vals).cast("B"))
    return Rows([int(r) for r in ids], [flat[i * D:(i + 1) * D].tolist() for i in range(k)])


def json_values(doc: Any, k: int, D: int, what: str) -> array:
    """A reply's {"rows", "values"} (nested or flat) as array('f') of k*D."""
    vals = doc.get("values") if isinstance(doc, dict) else None
    if not isinstance(vals, list):
        raise DescentError(500, "bad_reply", "%s: no rows in the reply" % what)
    flat = array("f")
    for v in vals:
        if isinstance(v, list):
            flat.extend(array("f", v))
        else:
            flat.append(v)
    if len(flat) != k * D:
        raise DescentError(500, "bad_reply", "%s: %d values in the reply, %d expected" % (what, len(flat), k * D))
    return flat


def u64_unpack(b: Any) -> int:
    return _U64.unpack(bytes(b[:8]))[0]
