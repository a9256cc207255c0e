"""descent.sharding: the rule that spreads an instance over several daemons,
the client's view of an instance's layout, and the fan-out pool.

The rule (client/lib/layout.c, proto/sharding.md): the dense tensors, in
creation order, form one flat range of N floats; shard k of S holds
[floor(k*N/S), floor((k+1)*N/S)).  Every shard needs at least one float,
unless the instance has sparse tensors: each of those ([V, D]) is split by
rows with the same rule on [0, V) (every shard holds at least one row).

What it owns: ranges and plans (pure functions), Layout (names, shapes,
counts, flat offsets, mode of one instance), slicing a flat vector given as
a list of byte chunks without copying, and FanOut: one thread pool per
Client through which every sharded call runs (never a new thread per call).

Threads: FanOut.map may be called from any thread; Layout is read-only once built.
"""
import threading
import time
from typing import Any, Callable, List, Optional, Sequence, Tuple

from .errors import DescentError

__all__ = ["shard_ranges", "shard_plan", "Layout", "SparseTensor", "FanOut", "slice_chunks"]


def shard_ranges(n: int, nshards: int, empty_ok: bool = False) -> List[Tuple[int, int]]:
    """[(lo, hi)] of each shard: shard k holds [floor(k*n/S), floor((k+1)*n/S)).
    empty_ok: shards may hold no float (an instance with sparse tensors)."""
    if nshards < 1:
        raise ValueError("nshards must be at least 1")
    if n < nshards and not empty_ok:
        raise DescentError(400, "bad_length", "%d parameters cannot be spread over %d shards (each needs one)"
                           % (n, nshards))
    return [(k * n // nshards, (k + 1) * n // nshards) for k in range(nshards)]


def shard_plan(counts: Sequence[int], nshards: int, empty_ok: bool = False) -> List[List[Tuple[int, int, int]]]:
    """For tensors of these element counts (creation order): per shard, the
    list of (tensor index, first index in the tensor, length) it holds."""
    n = sum(counts)
    plan = []
    for lo, hi in shard_ranges(n, nshards, empty_ok):
        pieces = []
        start = 0
        for t, c in enumerate(counts):
            a, b = max(start, lo), min(start + c, hi)
            if a < b:
                pieces.append((t, a - start, b - a))
            start += c
        plan.append(pieces)
    return plan


def slice_chunks(chunks: Sequence[memoryview], lo: int, hi: int) -> List[memoryview]:
    """The float32 range [lo, hi) of a flat vector held as byte chunks, as
    views of those chunks (no copy)."""
    out = []
    base = 0
    for c in chunks:
        n = c.nbytes // 4
        a, b = max(lo, base), min(hi, base + n)
        if a < b:
            out.append(c[(a - base) * 4:(b - base) * 4])
        base += n
        if base >= hi:
            break
    return out


class SparseTensor:
    """A sparse tensor of an instance: [V, D] rows from `origin` in the
    logical table; pos is its place among all tensors in creation order;
    ranges (sharded) the local rows [lo, hi) of each shard."""

    __slots__ = ("name", "pos", "V", "D", "origin", "ranges", "init")

    def __init__(self, name: str, pos: int, V: int, D: int, origin: int, init: Any = None) -> None:
        self.name, self.pos, self.V, self.D, self.origin, self.init = name, pos, V, D, origin, init
        self.ranges: Optional[List[Tuple[int, int]]] = None


class Layout:
    """What the client knows of an instance: dense tensors (names, shapes,
    counts, flat offsets), sparse ones (SparseTensor), the creation order of
    both (order: ("d", i) or ("s", j)), mode and clipping; for a sharded
    instance, each shard's dense range."""

    def __init__(self, desc: dict, shapes: Optional[List[List[int]]] = None) -> None:
        dense = [t for t in desc["tensors"] if not t.get("sparse")]
        self.sparse: List[SparseTensor] = []
        self.order: List[Tuple[str, int]] = []
        for pos, t in enumerate(desc["tensors"]):
            if t.get("sparse"):
                self.order.append(("s", len(self.sparse)))
                self.sparse.append(SparseTensor(t["name"], pos, int(t["shape"][0]), int(t["shape"][1]),
                                                int(t.get("origin", 0) or 0), t.get("init")))
            else:
                self.order.append(("d", len(self.order) - len(self.sparse)))
        self.sparse_by_name = {st.name: st for st in self.sparse}
        self.names = [t["name"] for t in dense]
        self.counts = [int(t["count"]) for t in dense]
        self.shapes = shapes or [list(t["shape"]) for t in dense]
        self.origins = [int(t.get("origin", 0)) for t in dense]
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
        self.ranges: Optional[List[Tuple[int, int]]] = None
        hyper = desc.get("hyper") or {}
        # whether a shard a push does not touch may be left out: only when no
        # result depends on the step count (proto/sharding.md, sparse tensors)
        self.step_free = not (self.mode == "sync" or desc.get("schedule") or self.algorithm == "sparse_adam"
                              or (self.algorithm == "adagrad" and hyper.get("lr_decay")))

    def tensor_docs(self) -> List[dict]:
        """The logical instance's tensors as a description lists them."""
        docs = []
        for kind, i in self.order:
            if kind == "s":
                st = self.sparse[i]
                t = {"name": st.name, "shape": [st.V, st.D], "sparse": True,
                     "offset": self._dense_before(st.pos), "count": 0}
                if st.origin:
                    t["origin"] = st.origin
                if st.init is not None:
                    t["init"] = st.init  # the value of rows never held
                docs.append(t)
                continue
            nm, s, c, o, off = self.names[i], self.shapes[i], self.counts[i], self.origins[i], self.offsets[i]
            t = {"name": nm, "shape": s, "offset": off, "count": c}
            if o:
                t["origin"] = o
            docs.append(t)
        return docs

    def _dense_before(self, pos: int) -> int:
        """The flat offset where a tensor at creation position pos would start."""
        return sum(self.counts[i] for kind, i in self.order[:pos] if kind == "d")

    def where(self, i: int) -> str:
        """A flat index as "grads.W[3]"."""
        for name, o, c in zip(self.names, self.offsets, self.counts):
            if o <= i < o + c:
                return "grads.%s[%d]" % (name, i - o)
        return "grads[%d]" % i


class _Future:
    __slots__ = ("done", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None


class FanOut:
    """The threads a sharded Client runs its per-shard calls on: one cached
    pool per Client.  Threads are reused from call to call; a new one starts
    only when every pooled thread is busy (concurrent callers, long-polls),
    so one caller never waits behind another's long-poll.  A thread idle for
    60 s ends.  The calling thread takes the first shard itself."""

    IDLE_S = 60.0

    def __init__(self, nshards: int) -> None:
        self.nshards = nshards
        self._cv = threading.Condition()
        self._tasks: List[Tuple[Callable[[], Any], _Future]] = []
        self._idle = 0
        self._threads = 0
        self._closed = False

    def _worker(self) -> None:
        with self._cv:
            self._idle += 1
        while True:
            with self._cv:
                deadline = time.monotonic() + self.IDLE_S
                while not self._tasks and not self._closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cv.wait(left)
                if not self._tasks:
                    self._idle -= 1
                    self._threads -= 1
                    return
                fn, fut = self._tasks.pop(0)
                self._idle -= 1
            fut.value = fn()
            # idle again before the caller can see the result: its next call
            # then finds this thread free instead of starting another
            with self._cv:
                self._idle += 1
            fut.done.set()

    def _submit(self, fn: Callable[[], Any]) -> _Future:
        fut = _Future()
        with self._cv:
            self._closed = False
            self._tasks.append((fn, fut))
            if self._idle < len(self._tasks):
                self._threads += 1
                threading.Thread(target=self._worker, name="descent-shard", daemon=True).start()
            else:
                self._cv.notify()
        return fut

    def map(self, fn: Callable[[int], Any], ks: Sequence[int]) -> List[Any]:
        """[fn(k) for k in ks] concurrently; exceptions are returned in place."""
        def run(k):
            try:
                return fn(k)
            except BaseException as e:  # noqa: B902 - handed to the caller
                return e

        if len(ks) <= 1:
            return [run(k) for k in ks]
        futs = [self._submit(lambda k=k: run(k)) for k in ks[1:]]
        first = run(ks[0])
        out = [first]
        for f in futs:
            f.done.wait()
            out.append(f.value)
        return out

    @property
    def threads(self) -> int:
        """How many pooled threads exist now (for tests)."""
        with self._cv:
            return self._threads

    def close(self) -> None:
        """Lets the idle threads end (the pool restarts on the next call)."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
