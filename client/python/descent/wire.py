"""descent.wire: float32 buffers and the wire formats (binary and JSON).

What it owns: turning whatever a user hands us (numpy arrays, torch CPU
tensors, array('f'), memoryview, bytes, lists, scalars) into little-endian
float32 bytes for a request body, and allocating (or adopting, for out=)
the buffers a binary reply is read straight into.  It never does per-element
Python work on a buffer that already is C-contiguous float32: such a buffer
is sent as a memoryview of its own memory.  Other dtypes are converted once
(one vectorised copy with numpy or torch; an array('f') copy otherwise);
Python lists and tuples are converted element by element, as they must be.

numpy and torch are optional: neither is imported here unless the caller
hands us one of their objects (then it is already imported) or asks for
kind="numpy" / kind="torch".

Threads: pure functions, safe from any thread.
"""
import json
import math
import operator
import sys
from array import array
from functools import reduce
from typing import Any, List, Optional, Sequence, Tuple

from .errors import DescentError

__all__ = ["as_f32_bytes", "flatten_values", "alloc", "adopt_out", "global_norm", "finite_json",
           "first_bad", "to_list", "KINDS"]

BIG_ENDIAN = sys.byteorder == "big"
KINDS = ("list", "array", "numpy", "torch")


def _numpy():
    np = sys.modules.get("numpy")
    if np is None:
        import numpy as np  # noqa: F811 - asked for explicitly
    return np


def _torch():
    t = sys.modules.get("torch")
    if t is None:
        import torch as t  # noqa: F811
    return t


def is_torch(x: Any) -> bool:
    t = sys.modules.get("torch")
    return t is not None and isinstance(x, t.Tensor)


def is_numpy(x: Any) -> bool:
    np = sys.modules.get("numpy")
    return np is not None and isinstance(x, (np.ndarray, np.generic))


def _bad_length(what: str, count: int, got: Any) -> DescentError:
    return DescentError(400, "bad_length", "%s: expected %d values, got %s" % (what, count, got))


def _mv_bytes(x: Any) -> memoryview:
    """A C-contiguous buffer as a flat memoryview of bytes."""
    mv = memoryview(x)
    if mv.format in ("B", "b", "c") and mv.ndim == 1:
        return mv
    return mv.cast("B")


def _swap(a: array) -> array:
    a = array("f", a)
    a.byteswap()
    return a


def as_f32_bytes(x: Any, count: Optional[int], what: str, shape: Optional[Sequence[int]] = None) -> memoryview:
    """x as a memoryview of count little-endian float32 (count None: any
    length).  Zero-copy for C-contiguous float32 numpy arrays, torch CPU
    tensors, array('f') and float32 memoryviews; bytes-like objects of format
    'B' are taken as float32 bytes already.  Raises DescentError 400
    bad_length (wrong count) or bad_request (not numbers), as the daemon would."""
    mv = None
    if is_torch(x):
        t = x.detach()
        if t.device.type != "cpu":
            t = t.cpu()                                  # one copy off the device
        if t.dtype != _torch().float32:
            t = t.to(_torch().float32)                   # one conversion
        if not t.is_contiguous():
            t = t.contiguous()                           # one copy
        if BIG_ENDIAN:
            mv = memoryview(_swap(array("f", t.numpy().tobytes()))).cast("B")
        else:
            mv = _mv_bytes(t.reshape(-1).numpy())
    elif is_numpy(x):
        np = _numpy()
        a = x
        if not (isinstance(a, np.ndarray) and a.dtype == np.dtype("<f4") and a.flags.c_contiguous):
            try:
                a = np.ascontiguousarray(x, dtype="<f4")   # one conversion
            except (TypeError, ValueError):
                raise DescentError(400, "bad_request", "%s: not numbers (dtype %s)" % (what, x.dtype)) from None
        mv = _mv_bytes(a.reshape(-1))
    elif isinstance(x, array):
        a = x if x.typecode == "f" else array("f", x)
        if BIG_ENDIAN:
            a = _swap(a)
        mv = memoryview(a).cast("B")
    elif isinstance(x, (bytes, bytearray, memoryview)):
        m = memoryview(x)
        if m.format in ("B", "b", "c"):
            if not m.c_contiguous:
                m = memoryview(m.tobytes())
            m = m.cast("B") if m.ndim != 1 else m
            if m.nbytes % 4:
                raise DescentError(400, "bad_length", "%s: %d bytes is not a whole number of float32"
                                   % (what, m.nbytes))
            mv = m
        elif m.format in ("f", "<f", "=f") and m.itemsize == 4 and not BIG_ENDIAN:
            mv = m.cast("B") if m.c_contiguous else memoryview(m.tobytes())
        else:
            mv = memoryview(array("f", m.tolist() if m.ndim <= 1 else _flat_list(m.tolist()))).cast("B")
    elif isinstance(x, bool):
        raise DescentError(400, "bad_request", "%s: not a number" % what)
    elif isinstance(x, (int, float)):
        if count is not None and count != 1:
            raise _bad_length(what, count, "a single number")
        mv = memoryview(array("f", [x])).cast("B")
    elif isinstance(x, (list, tuple)):
        a = flatten_values(x, shape if shape is not None else ([count] if count is not None else None), what)
        if BIG_ENDIAN:
            a = _swap(a)
        mv = memoryview(a).cast("B")
    elif hasattr(x, "__array__") or hasattr(x, "__array_interface__"):
        return as_f32_bytes(_numpy().asarray(x), count, what, shape)
    else:
        try:
            m = memoryview(x)
        except TypeError:
            if hasattr(x, "tolist"):
                return as_f32_bytes(x.tolist(), count, what, shape)
            raise DescentError(400, "bad_request", "%s: expected numbers, got %s" % (what, type(x).__name__)) from None
        return as_f32_bytes(m, count, what, shape)
    if count is not None and mv.nbytes != 4 * count:
        raise _bad_length(what, count, mv.nbytes // 4)
    return mv


def _flat_list(v: list) -> list:
    out: list = []
    for y in v:
        if isinstance(y, list):
            out.extend(_flat_list(y))
        else:
            out.append(y)
    return out


def _f32_list(values: Sequence[Any], what: str) -> array:
    try:
        return array("f", values)
    except TypeError:
        for i, v in enumerate(values):
            if isinstance(v, (list, tuple)):
                raise DescentError(400, "bad_length", "%s[%d]: nested deeper than the tensor's shape" % (what, i))
            if is_numpy(v) or is_torch(v):
                return array("f", [float(y) for y in values])
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise DescentError(400, "bad_request", "%s[%d]: not a number" % (what, i))
        raise


def flatten_values(x: Sequence[Any], shape: Optional[Sequence[int]], what: str) -> array:
    """A list or tuple of numbers, flat or nested to shape (row-major), as array('f')."""
    if shape is not None and len(shape) > 1 and x and isinstance(x[0], (list, tuple)):
        out = array("f")

        def walk(v, dim, path):
            if not isinstance(v, (list, tuple)) or len(v) != shape[dim]:
                got = len(v) if isinstance(v, (list, tuple)) else "a number"
                raise DescentError(400, "bad_length", "%s: expected %d values for shape %s, got %s"
                                   % (path, shape[dim], list(shape), got))
            if dim == len(shape) - 1:
                out.extend(_f32_list(v, path))
            else:
                for i, y in enumerate(v):
                    walk(y, dim + 1, "%s[%d]" % (path, i))

        walk(x, 0, what)
        return out
    a = _f32_list(x, what)
    if shape is not None:
        count = math.prod(shape)
        if len(a) != count:
            raise _bad_length(what, count, len(a))
    return a


# ---- reply buffers -----------------------------------------------------------------------

def alloc(kind: str, count: int) -> Tuple[Any, memoryview]:
    """A new flat float32 buffer of count values for a reply: (object, bytes view).
    kind "list" and "array" give an array('f') (converted by to_list later)."""
    if kind == "numpy":
        a = _numpy().empty(count, dtype="<f4")
        return a, _mv_bytes(a)
    if kind == "torch":
        t = _torch().empty(count, dtype=_torch().float32)
        return t, _mv_bytes(t.numpy())
    if kind in ("list", "array"):
        a = array("f", bytes(4 * count))
        return a, memoryview(a).cast("B")
    raise ValueError("kind must be one of %s, not %r" % (", ".join(KINDS), kind))


def adopt_out(x: Any, count: int, what: str) -> memoryview:
    """A caller's out= buffer (numpy array, torch CPU tensor, array('f'),
    bytearray, writable memoryview) as a writable bytes view of count
    float32; it must be C-contiguous float32 (no silent copies)."""
    if is_torch(x):
        t = _torch()
        if x.dtype != t.float32 or x.device.type != "cpu" or not x.is_contiguous():
            raise ValueError("%s: out= must be a contiguous float32 CPU tensor (got %s %s%s)" % (
                what, x.dtype, x.device, "" if x.is_contiguous() else ", not contiguous"))
        mv = _mv_bytes(x.detach().reshape(-1).numpy())
    elif is_numpy(x):
        if x.dtype != _numpy().dtype("<f4") or not x.flags.c_contiguous or not x.flags.writeable:
            raise ValueError("%s: out= must be a writable C-contiguous float32 array (got %s)" % (what, x.dtype))
        mv = _mv_bytes(x.reshape(-1)) if x.ndim else _mv_bytes(x.reshape(1))
    elif isinstance(x, array):
        if x.typecode != "f":
            raise ValueError("%s: out= must be array('f'), not array(%r)" % (what, x.typecode))
        mv = memoryview(x).cast("B")
    else:
        try:
            mv = memoryview(x)
        except TypeError:
            raise ValueError("%s: out= must be a float32 buffer, not %s" % (what, type(x).__name__)) from None
        if mv.readonly:
            raise ValueError("%s: out= is read-only" % what)
        mv = _mv_bytes(mv)
    if mv.nbytes != 4 * count:
        raise ValueError("%s: out= holds %d float32, the reply has %d" % (what, mv.nbytes // 4, count))
    return mv


def to_list(mv: memoryview) -> List[float]:
    """float32 bytes as a list of Python floats."""
    a = array("f")
    a.frombytes(mv)
    if BIG_ENDIAN:
        a.byteswap()
    return a.tolist()


def f32_array(mv: memoryview) -> array:
    a = array("f")
    a.frombytes(mv)
    if BIG_ENDIAN:
        a.byteswap()
    return a


# ---- JSON and norms ---------------------------------------------------------------------

def finite_json(obj: Any, what: str, flat: Sequence[Tuple[str, Sequence[float]]]) -> str:
    """json.dumps(obj) refusing NaN and infinities the way the daemon does (422)."""
    try:
        return json.dumps(obj, allow_nan=False, separators=(",", ":"))
    except ValueError:
        for name, a in flat:
            for i, v in enumerate(a):
                if not math.isfinite(v):
                    raise DescentError(422, "not_finite", "%s.%s[%d]: NaN or infinite" % (what, name, i))
        raise DescentError(422, "not_finite", "%s: NaN or infinite value" % what) from None


def first_bad(chunks: Sequence[memoryview]) -> int:
    """The flat index of the first NaN or infinity in the float32 chunks (-1 if none)."""
    base = 0
    np = sys.modules.get("numpy")
    for c in chunks:
        n = c.nbytes // 4
        if np is not None:
            a = np.frombuffer(c, dtype="<f4")
            bad = np.flatnonzero(~np.isfinite(a))
            if bad.size:
                return base + int(bad[0])
        else:
            for i, v in enumerate(f32_array(c)):
                if not math.isfinite(v):
                    return base + i
        base += n
    return -1


def _lanes_py(g: array, base: int, acc: List[float]) -> None:
    for j in range(8):
        first = (j - base) % 8
        lane = g[first::8]
        acc[j] = reduce(operator.add, map(operator.mul, lane, lane), acc[j])


def _lanes_np(np, g, base: int, acc: List[float]) -> None:
    for j in range(8):
        first = (j - base) % 8
        lane = g[first::8].astype(np.float64)
        if lane.size:
            sq = np.empty(lane.size + 1)
            sq[0] = acc[j]
            np.multiply(lane, lane, out=sq[1:])
            acc[j] = float(np.cumsum(sq)[-1])  # in index order, as the daemon sums


def sum_lanes(chunks: Sequence[memoryview]) -> float:
    """The sum of squares of float32 chunks (one flat vector) as the daemon
    sums it: 8 double lanes by index mod 8, each in index order, then the
    lanes left to right."""
    np = sys.modules.get("numpy")
    acc = [0.0] * 8
    base = 0
    for c in chunks:
        if np is not None:
            _lanes_np(np, np.frombuffer(c, dtype="<f4"), base, acc)
        else:
            _lanes_py(f32_array(c), base, acc)
        base += c.nbytes // 4
    total = 0.0
    for v in acc:
        total += v
    return total


def global_norm(g: Any) -> float:
    """The L2 norm of a flat float32 gradient exactly as the daemon computes it
    (optim_sumsq): every square in double, 8 lanes by index mod 8, each lane in
    index order, lanes added left to right, then sqrt."""
    if isinstance(g, list) and g and isinstance(g[0], memoryview):
        chunks = g
    else:
        chunks = [as_f32_bytes(g, None, "grads")]
    return math.sqrt(sum_lanes(chunks))


# -- wire precision: bfloat16 and float16 bodies (proto/binary.md) ------------------

DTYPES = ("float32", "bfloat16", "float16")


def check_dtype(dtype: str) -> str:
    if dtype in ("bf16",):
        return "bfloat16"
    if dtype in ("fp16", "half"):
        return "float16"
    if dtype not in DTYPES:
        raise ValueError("dtype: expected float32, bfloat16 or float16, got %r" % (dtype,))
    return dtype


def media_type(dtype: str) -> str:
    """The binary media type of a dtype (float32: the plain one)."""
    return "application/octet-stream" if dtype == "float32" else "application/octet-stream; dtype=" + dtype


def _numpy_if_any():
    """numpy if it can be imported (the conversions' fast path), else None."""
    np = sys.modules.get("numpy")
    if np is not None:
        return np
    try:
        import numpy as np  # noqa: F811
    except ImportError:
        return None
    return np


def _bf16_py(u: int) -> int:
    if (u & 0x7FFFFFFF) > 0x7F800000:
        return (u >> 16) | 0x40
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF


def narrow(f32: memoryview, dtype: str) -> bytes:
    """Little-endian float32 bytes as dtype bytes, rounded to nearest even
    (one vectorised pass with numpy when it is there; per element without)."""
    if dtype == "float32":
        return bytes(f32)
    np = _numpy_if_any()
    if np is not None:
        if dtype == "float16":
            return np.frombuffer(f32, dtype="<f4").astype("<f2").tobytes()
        u = np.frombuffer(f32, dtype="<u4")
        out = ((u + (0x7FFF + ((u >> 16) & 1))) >> 16).astype("<u2")
        nan = (u & 0x7FFFFFFF) > 0x7F800000
        if nan.any():
            out[nan] = ((u[nan] >> 16) | 0x40).astype("<u2")
        return out.tobytes()
    import struct
    n = f32.nbytes // 4
    if dtype == "float16":
        fl = struct.unpack("<%df" % n, f32)
        return struct.pack("<%de" % n, *[x if abs(x) < 65520 or x != x else math.copysign(math.inf, x) for x in fl])
    return struct.pack("<%dH" % n, *[_bf16_py(u) for u in struct.unpack("<%dI" % n, f32)])


def widen(half: bytes, dtype: str, into: Optional[Sequence[memoryview]] = None) -> memoryview:
    """dtype bytes widened exactly to little-endian float32 bytes (written
    into the views `into` when given, one after the other)."""
    if dtype == "float32":
        f32 = memoryview(half)
    else:
        np = _numpy_if_any()
        if np is not None:
            if dtype == "float16":
                a = np.frombuffer(half, dtype="<f2").astype("<f4")
            else:
                a = (np.frombuffer(half, dtype="<u2").astype("<u4") << 16)
            f32 = memoryview(a.tobytes())
        else:
            import struct
            n = len(half) // 2
            if dtype == "float16":
                f32 = memoryview(struct.pack("<%df" % n, *struct.unpack("<%de" % n, half)))
            else:
                f32 = memoryview(struct.pack("<%dI" % n, *[h << 16 for h in struct.unpack("<%dH" % n, half)]))
    if into is not None:
        pos = 0
        for v in into:
            v[:] = f32[pos:pos + v.nbytes]
            pos += v.nbytes
    return f32
