"""descent.torch: torch.optim's optimizers, with the math on descentd.

    import descent.torch
    opt = descent.torch.Adam(model.parameters(), lr=1e-3, url="http://127.0.0.1:8080")
    ...   # the training loop is unchanged: zero_grad, backward, step, schedulers, state_dict

SGD, Adagrad, RMSprop, Adam, AdamW and SparseAdam subclass their torch.optim namesakes
(so torch validates the arguments, with its own defaults and ValueError
messages, and isinstance(opt, torch.optim.Adam) holds).  step() pushes the
parameters' .grad to the daemon and writes the parameters it answers into
the parameters in place (straight into their memory when they are
contiguous float32 CPU tensors).

How groups map to the daemon: each param_group is one instance named
"<name>.g<i>" holding its parameters as tensors "p<k>" (k: the parameter's
index in state_dict order).  torch keeps state per parameter and skips a
parameter whose .grad is None (no step, no weight decay, its step count
stays); when a step has such a parameter in a group with others that do
have one, the group's instance is split into one instance per parameter
("<name>.g<i>.p<k>"), each with its own state and step count, and stays
split.  Hyperparameters are compared with what the daemon has before each
step; a changed group value (a scheduler's lr, OneCycleLR's betas or
momentum, a hand edit) is PATCHed first.  A parameter changed outside the
optimizer (model.load_state_dict, an in-place edit: torch bumps its
version counter) is sent to the daemon before the next step.

Sparse gradients (nn.Embedding(..., sparse=True), nn.EmbeddingBag(sparse=True)):
SGD and Adagrad learn at the first step which parameters get sparse
gradients and, while nothing has been pushed yet, create their instance
again with those parameters as sparse [V, D] tensors (the parameter's
values uploaded as explicit rows); SparseAdam creates every parameter
sparse from the start.  A sparse gradient is pushed as its rows in
torch's order (uncoalesced, as torch.optim applies it), and the rows the
daemon answers are written into the parameter (index_copy_).  A sparse
gradient for a tensor the daemon holds dense (an instance that already
stepped) is pushed densified, which gives the same values.

Coordination: under torchrun (RANK and WORLD_SIZE in the environment) the
defaults are mode="sync", workers=WORLD_SIZE, worker="rank<RANK>"; rank 0
creates the instances, the other ranks wait for them and pull the current
parameters into their model.  Any process that finds the instances already
there joins them the same way (a late or restarted worker).

Threads: an optimizer is used by one thread at a time, as torch's are.
"""
import copy
import hashlib
import json
import math
import os
import socket
import time
import uuid
from typing import Any, Dict, List, Optional

import torch
import torch.optim
from torch.optim.optimizer import required

from .client import Client
from . import wire as _wire
from .errors import DescentError

__all__ = ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "SparseAdam"]

_HYPER = {
    "sgd": ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize"),
    "adagrad": ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps", "maximize"),
    "rmsprop": ("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize"),
    "adam": ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize"),
    "adamw": ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize"),
    "sparse_adam": ("lr", "betas", "eps", "maximize"),
}
_BUFFERS = {
    "sgd": ("momentum_buffer",),
    "adagrad": ("sum",),
    "rmsprop": ("square_avg", "momentum_buffer", "grad_avg"),
    "adam": ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
    "adamw": ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
    "sparse_adam": ("exp_avg", "exp_avg_sq"),
}
WAIT_FOR_INSTANCE_S = 300.0   # how long a rank other than 0 waits for rank 0 to create the instances


def _wire_value(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.item()
    if isinstance(v, bool):
        return v
    if isinstance(v, (tuple, list)):
        return [_wire_value(x) for x in v]
    if isinstance(v, int):
        return v
    return float(v)


def _f32_json(p: torch.Tensor) -> List[bytes]:
    """A float32 tensor as a JSON array in byte chunks, each value with 9
    significant digits (which read back to the same float32)."""
    flat = p.detach().reshape(-1)
    chunks = [b"["]
    step = 1 << 16
    n = flat.numel()
    for i in range(0, n, step):
        part = flat[i:i + step].tolist()
        text = ("%.9g," * len(part)) % tuple(part)
        if "n" in text or "i" in text:
            raise DescentError(422, "not_finite", "a parameter holds NaN or infinity")
        chunks.append((text[:-1] if i + step >= n else text).encode())
    chunks.append(b"]")
    return chunks


def _f32_rows_json(p: torch.Tensor) -> List[bytes]:
    """A 2-D float32 tensor's rows as JSON {"rows": [0..V), "values": [[...], ...]}
    in byte chunks (9 significant digits per value)."""
    V, D = p.shape
    flat = p.detach().float().reshape(-1)
    chunks = [b'{"rows":[', ",".join(map(str, range(V))).encode(), b'],"values":[']
    per = max(1, (1 << 16) // max(1, D))
    row = "[" + ",".join(["%.9g"] * D) + "]"
    for r in range(0, V, per):
        n = min(per, V - r)
        text = ",".join([row] * n) % tuple(flat[r * D:(r + n) * D].tolist())
        if "n" in text or "i" in text:
            raise DescentError(422, "not_finite", "a parameter holds NaN or infinity")
        chunks.append((text + ("," if r + n < V else "")).encode())
    chunks.append(b"]}")
    return chunks


def _all_rows(p: torch.Tensor) -> Dict[str, Any]:
    """Every row of a 2-D parameter as a state document's {"rows", "values"}."""
    return {"rows": list(range(p.shape[0])), "values": p.detach().float().tolist()}


def _dense_of(doc: Any, p: torch.Tensor, fill: float) -> torch.Tensor:
    """A state document's {"rows", "values"} (held rows only) as a dense tensor
    like p, the other rows at fill."""
    out = torch.full(p.shape, float(fill), dtype=torch.float32)
    if doc and doc.get("rows"):
        out[torch.tensor(doc["rows"], dtype=torch.int64)] = torch.tensor(doc["values"], dtype=torch.float32).view(
            -1, p.shape[1])
    return out


class _Segment:
    """One daemon instance: some parameters of one group."""

    def __init__(self, name: str, group: int, params: List[torch.Tensor], index: List[int],
                 sparse: Optional[List[bool]] = None) -> None:
        self.name = name
        self.group = group
        self.params = params
        self.index = index              # each parameter's index in state_dict order
        self.sparse = list(sparse) if sparse is not None else [False] * len(params)  # held sparse on the daemon
        self.step = 0                   # the step of the parameters the model holds
        self.sent: Dict[str, Any] = {}  # the hyperparameters the daemon has
        self.versions: List[int] = []   # each parameter's _version after descent last wrote it

    def tensors(self) -> List[str]:
        return ["p%d" % k for k in self.index]


def _env_int(name: str) -> Optional[int]:
    v = os.environ.get(name)
    try:
        return int(v) if v not in (None, "") else None
    except ValueError:
        return None


class _Remote:
    """The descent half of every optimizer here (mixed into a torch.optim class)."""

    _algorithm = ""

    @property
    def _d_all_sparse(self) -> bool:
        return self._algorithm == "sparse_adam"

    def _descent_init(self, url=None, name=None, token=None, mode=None, workers=None, worker=None,
                      max_staleness=None, client=None, timeout=60.0, wire_dtype=None) -> None:
        if wire_dtype is not None:
            wire_dtype = _wire.check_dtype(wire_dtype)
        self._d_wire = wire_dtype
        rank, world = _env_int("RANK"), _env_int("WORLD_SIZE")
        if url is None:
            url = os.environ.get("DESCENT_URL")
        if url is None and os.environ.get("MASTER_ADDR") and rank is not None:
            url = "http://%s:%s" % (os.environ["MASTER_ADDR"], os.environ.get("DESCENT_PORT", "8080"))
        if url is None:
            url = "http://127.0.0.1:8080"
        if mode is None:
            mode = "sync" if (world is not None and world > 1 and max_staleness is None) else "async"
        if mode == "sync" and workers is None:
            workers = world if world is not None else 1
        if worker is None:
            worker = ("rank%d" % rank) if rank is not None else (
                "%s-%d" % (socket.gethostname().split(".")[0][:40], os.getpid()) if mode == "sync" else None)
        if token is None:
            token = os.environ.get("DESCENT_TOKEN")
        for g in self.param_groups:
            for p in g["params"]:
                if p.dtype not in (torch.float32, torch.bfloat16, torch.float16):
                    raise TypeError("descent.torch: parameters must be float32, bfloat16 or float16 (descentd "
                                    "keeps float32 master copies); this parameter is %s" % p.dtype)
                if p.is_sparse:
                    raise TypeError("descent.torch: sparse parameters are not supported (sparse gradients are)")
                if self._algorithm == "sparse_adam" and p.dim() != 2:
                    raise ValueError("descent.torch.SparseAdam: every parameter must be a 2-D table [V, D] (an "
                                     "nn.Embedding's weight); this one has shape %s" % (list(p.shape),))
        self._d_url = url
        self._d_token = token
        self._d_timeout = timeout
        self._d_client = client if client is not None else Client(url, token=token, timeout=timeout, kind="torch")
        self._d_own_client = client is None
        self._d_mode = mode
        self._d_workers = workers
        self._d_worker = worker
        self._d_max_staleness = max_staleness
        self._d_rank = rank
        self._d_name = name or self._default_name()
        self._d_segments: List[_Segment] = []
        self._d_ready = True
        for gi in range(len(self.param_groups)):
            self._d_open_group(gi)

    # -- naming and layout ------------------------------------------------------------

    def _default_name(self) -> str:
        h = hashlib.sha1()
        for g in self.param_groups:
            h.update(b"g")
            for p in g["params"]:
                h.update(repr(tuple(p.shape)).encode())
        return "torch-%s-%s" % (self._algorithm, h.hexdigest()[:12])

    def _d_index(self) -> Dict[int, int]:
        idx, k = {}, 0
        for g in self.param_groups:
            for p in g["params"]:
                if id(p) not in idx:
                    idx[id(p)] = k
                k += 1
        return idx

    def _d_hyper(self, gi: int) -> Dict[str, Any]:
        g = self.param_groups[gi]
        return {k: _wire_value(g[k]) for k in _HYPER[self._algorithm] if k in g}

    def _d_spec(self, seg: _Segment, values: bool) -> Dict[str, Any]:
        spec: Dict[str, Any] = {"name": seg.name, "algorithm": self._algorithm, "hyper": self._d_hyper(seg.group),
                                "mode": self._d_mode}
        if self._d_mode == "sync":
            spec["workers"] = self._d_workers
        elif self._d_max_staleness is not None:
            spec["max_staleness"] = self._d_max_staleness
        tensors = []
        for nm, p, sp in zip(seg.tensors(), seg.params, seg.sparse):
            t: Dict[str, Any] = {"name": nm, "shape": list(p.shape) or [1]}
            if sp:
                t["sparse"] = True
                if values:
                    t["init"] = _all_rows(p)
            elif values:
                t["values"] = p.detach().reshape(-1).tolist()
            tensors.append(t)
        spec["tensors"] = tensors
        return spec

    def _d_create(self, seg: _Segment) -> None:
        """Creates seg's instance with the parameters' values.  The JSON body
        carries each float32 as "%.9g" (9 significant digits read back to the
        same float32), written in chunks: no list of Python floats per parameter."""
        c = self._d_client
        if c.sharded:
            c.create(self._d_spec(seg, values=True))
            return
        spec = self._d_spec(seg, values=False)
        for k, t in enumerate(spec["tensors"]):
            t["init" if seg.sparse[k] else "values"] = "@@V%d@@" % k
        text = json.dumps(spec)
        parts = text.split('"@@V')
        out = [parts[0].encode()]
        for part in parts[1:]:
            k, rest = part.split('@@"', 1)
            p = seg.params[int(k)]
            out.extend(_f32_rows_json(p) if seg.sparse[int(k)] else _f32_json(p))
            out.append(rest.encode())
        c.endpoints[0].request("POST", "/v1/optimizers", [memoryview(b) for b in out],
                               {"Content-Type": "application/json"})
        c._forget(seg.name)

    def _d_open_group(self, gi: int) -> None:
        """Creates (rank 0, or alone) or joins the instance of group gi."""
        idx = self._d_index()
        params = list(self.param_groups[gi]["params"])
        index = [idx[id(p)] for p in params]
        if params:
            # a group split per parameter by an earlier run (some .grad were None): join those
            first = "%s.g%d.p%d" % (self._d_name, gi, index[0])
            try:
                self._d_client.describe(first)
                split = True
            except DescentError as e:
                if e.code != "unknown_instance":
                    raise
                split = False
            if split:
                for p, k in zip(params, index):
                    seg = _Segment("%s.g%d.p%d" % (self._d_name, gi, k), gi, [p], [k], [self._d_all_sparse])
                    self._d_attach(seg)
                    self._d_segments.append(seg)
                return
        seg = _Segment("%s.g%d" % (self._d_name, gi), gi, params, index, [self._d_all_sparse] * len(params))
        self._d_attach(seg)
        self._d_segments.append(seg)

    def _d_attach(self, seg: _Segment) -> None:
        c = self._d_client
        creator = self._d_rank in (None, 0)
        if creator:
            try:
                self._d_create(seg)
                seg.step = 0
                seg.sent = self._d_hyper(seg.group)
                seg.versions = [p._version for p in seg.params]
                return
            except DescentError as e:
                if e.code != "already_exists":
                    raise
        deadline = time.monotonic() + WAIT_FOR_INSTANCE_S
        while True:
            try:
                d = c.describe(seg.name)
                break
            except DescentError as e:
                if e.code != "unknown_instance" or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        want = [(nm, list(p.shape) or [1]) for nm, p in zip(seg.tensors(), seg.params)]
        have = [(t["name"], t["shape"]) for t in d["tensors"]]
        if want != have:
            raise DescentError(409, "already_exists", "instance '%s' exists with other tensors (%s, this optimizer "
                               "has %s); pass another name= or delete it" % (seg.name, have, want))
        seg.sparse = [bool(t.get("sparse")) for t in d["tensors"]]
        seg.sent = dict(d["hyper"])
        self._d_pull(seg)

    def _d_pull(self, seg: _Segment) -> None:
        """The daemon's current parameters into the model (a joining worker)."""
        out, copies = self._d_out(seg)
        p = self._d_client.pull(seg.name, out=out)
        step = p.step
        for nm, q, sp in zip(seg.tensors(), seg.params, seg.sparse):
            if sp:
                tmp = torch.empty(q.numel(), dtype=torch.float32)
                step, _ = self._d_client.pull_rows(seg.name, nm, range(q.shape[0]), out=tmp)
                copies.append((q, tmp))
        for dst, src in copies:
            with torch.no_grad():
                dst.copy_(src.view_as(dst))
        seg.step = step
        seg.versions = [q._version for q in seg.params]

    def _d_out(self, seg: _Segment):
        out, copies = {}, []
        for nm, p, sp in zip(seg.tensors(), seg.params, seg.sparse):
            if sp:
                continue  # its rows come back as Rows
            if p.is_contiguous() and p.device.type == "cpu" and p.dtype == torch.float32:
                out[nm] = p.detach()
            else:
                tmp = torch.empty(p.numel(), dtype=torch.float32)
                out[nm] = tmp
                copies.append((p, tmp))
        return out, copies

    # -- the step ----------------------------------------------------------------------

    def _d_sync_hyper(self, seg: _Segment) -> None:
        now = self._d_hyper(seg.group)
        diff = {k: v for k, v in now.items() if seg.sent.get(k) != v}
        if diff:
            self._d_client.patch(seg.name, hyper=diff)
            seg.sent.update(diff)

    def _d_sync_params(self, seg: _Segment) -> None:
        """Sends parameters changed outside the optimizer (their _version moved)."""
        if [p._version for p in seg.params] == seg.versions:
            return
        doc = self._d_client.export_state(seg.name)
        doc["params"] = {nm: _all_rows(p) if sp else p.detach().reshape(-1).tolist()
                         for nm, p, sp in zip(seg.tensors(), seg.params, seg.sparse)}
        self._d_client.import_state(seg.name, doc)
        seg.versions = [p._version for p in seg.params]

    def _d_split(self, si: int) -> None:
        """Replaces segment si (a group's instance) by one instance per parameter."""
        seg = self._d_segments[si]
        doc = self._d_client.export_state(seg.name)
        new = []
        for nm, p, k, sp in zip(seg.tensors(), seg.params, seg.index, seg.sparse):
            part = _Segment("%s.g%d.p%d" % (self._d_name, seg.group, k), seg.group, [p], [k], [sp])
            d = {key: v for key, v in doc.items() if key not in ("params", "buffers", "tensors", "size", "name")}
            d["tensors"] = [t for t in doc["tensors"] if t["name"] == nm]
            for t in d["tensors"]:
                t.pop("offset", None)
                t.pop("count", None)
            d["params"] = {nm: doc["params"][nm]}
            d["buffers"] = {b: {nm: v[nm]} for b, v in doc.get("buffers", {}).items()}
            self._d_client.import_state(part.name, d)
            part.step, part.sent, part.versions = seg.step, dict(seg.sent), [p._version]
            new.append(part)
        self._d_client.delete(seg.name)
        self._d_segments[si:si + 1] = new

    def _d_step(self, loss: Optional[float]) -> None:
        c = self._d_client
        si = 0
        while si < len(self._d_segments):
            seg = self._d_segments[si]
            have = [p.grad is not None for p in seg.params]
            if not any(have):
                si += 1
                continue
            if not all(have):
                if self._d_mode == "sync" and (self._d_workers or 1) > 1:
                    raise RuntimeError("descent.torch: some parameters of group %d have no .grad while others do; "
                                       "in sync mode with several workers every worker must push every "
                                       "parameter of a group (put frozen parameters in a group of their own)"
                                       % seg.group)
                self._d_split(si)
                continue
            self._d_sparse_layout(seg)
            self._d_sync_hyper(seg)
            self._d_sync_params(seg)
            grads = {nm: self._d_grad(p, sp) for nm, p, sp in zip(seg.tensors(), seg.params, seg.sparse)}
            out, copies = self._d_out(seg)
            try:
                r = c.push(seg.name, grads, worker=self._d_worker, loss=loss,
                           step=seg.step if (self._d_mode == "sync" or self._d_max_staleness is not None) else None,
                           out=out, dtype=self._d_wire_of(seg), reply_dtype=self._d_reply_of(seg))
            except DescentError as e:
                if e.code == "stale_gradient" and self._d_mode == "sync":
                    self._d_pull(seg)   # the round closed without us: resync and push on the new step
                    continue
                raise
            for dst, src in copies:
                with torch.no_grad():
                    dst.copy_(src.view_as(dst))
            for nm, p, sp in zip(seg.tensors(), seg.params, seg.sparse):
                if sp:
                    rows = r[nm]
                    with torch.no_grad():
                        p.index_copy_(0, rows.rows, rows.values.to(p.dtype))
            seg.step = r.step
            seg.versions = [p._version for p in seg.params]
            si += 1

    @staticmethod
    def _d_grad(p: torch.Tensor, sparse: bool) -> Any:
        """What goes to the daemon for p.grad: a sparse gradient's rows in
        torch's (uncoalesced) order for a sparse tensor; a dense tensor for
        a dense one (densified when the gradient is sparse)."""
        g = p.grad
        if not sparse:
            return g.to_dense() if g.is_sparse else g
        from .rows import Rows
        if g.is_sparse and g.sparse_dim() == 1:
            return Rows(g._indices()[0], g._values().reshape(-1, p.shape[1]))
        g = g.to_dense() if g.is_sparse else g
        return Rows(torch.arange(p.shape[0]), g.reshape(p.shape[0], -1))

    def _d_sparse_layout(self, seg: _Segment) -> None:
        """Before a segment's first push: when some parameters have sparse
        gradients that the daemon holds as dense tensors, its instance is
        created again with them sparse (rank 0 or alone; other ranks wait
        for that).  Once an instance has stepped it stays as it is."""
        want = [s or (p.grad.is_sparse and p.dim() == 2) for p, s in zip(seg.params, seg.sparse)]
        if want == seg.sparse or seg.step != 0:
            return
        c = self._d_client
        if self._d_rank in (None, 0):
            if int(c.describe(seg.name)["step"]) != 0:
                return
            c.delete(seg.name)
            seg.sparse = want
            self._d_create(seg)
            seg.sent = self._d_hyper(seg.group)
            return
        deadline = time.monotonic() + WAIT_FOR_INSTANCE_S
        while True:
            try:
                d = c.describe(seg.name)
                if [bool(t.get("sparse")) for t in d["tensors"]] == want or int(d["step"]) != 0:
                    seg.sparse = [bool(t.get("sparse")) for t in d["tensors"]]
                    return
            except DescentError as e:
                if e.code != "unknown_instance":
                    raise
            if time.monotonic() > deadline:
                raise DescentError(None, "timeout", "'%s': rank 0 did not create the instance with sparse tensors"
                                   % seg.name)
            time.sleep(0.05)

    def _d_wire_of(self, seg) -> str:
        """The gradient's wire precision: wire_dtype= if given, else bfloat16
        (float16) when every .grad of the segment already is one (mixed
        precision: half the bytes, nothing rounded), else float32.  The
        parameters always come back in float32."""
        if self._d_wire is not None:
            return self._d_wire
        kinds = {p.grad.dtype for p in seg.params}
        if kinds == {torch.bfloat16}:
            return "bfloat16"
        if kinds == {torch.float16}:
            return "float16"
        return "float32"

    def _d_reply_of(self, seg) -> str:
        """bfloat16 (float16) parameters take the daemon's float32 master copy
        rounded to nearest even, so their replies may travel in that type."""
        kinds = {p.dtype for p in seg.params}
        if kinds == {torch.bfloat16}:
            return "bfloat16"
        if kinds == {torch.float16}:
            return "float16"
        return "float32"

    def step(self, closure=None):
        """Pushes every parameter's .grad (parameters without one are
        skipped, as torch skips them), writes the daemon's parameters into
        them in place, and returns the closure's loss (sent as the loss)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        v = None
        if loss is not None:
            try:
                v = float(loss)
                if not math.isfinite(v):
                    v = None
            except (TypeError, ValueError):
                v = None
        with torch.no_grad():
            self._d_step(v)
        return loss

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        if getattr(self, "_d_ready", False):
            self._d_open_group(len(self.param_groups) - 1)

    # -- state ---------------------------------------------------------------------------

    def _d_fetch_state(self) -> None:
        """self.state from the daemon, in torch's format."""
        for seg in self._d_segments:
            doc = self._d_client.export_state(seg.name)
            step = int(doc["step"])
            bufs = doc.get("buffers", {})
            for nm, p, sp in zip(seg.tensors(), seg.params, seg.sparse):
                st: Dict[str, Any] = {}
                if sp:
                    self._d_sparse_state(p, step, bufs, nm, seg.group)
                    continue
                if self._algorithm == "sgd":
                    if step == 0:
                        self.state.pop(p, None)
                        continue
                    b = bufs.get("momentum_buffer", {}).get(nm)
                    st["momentum_buffer"] = None if b is None else torch.tensor(b, dtype=torch.float32).view_as(p)
                else:
                    if step == 0 and self._algorithm != "adagrad":
                        self.state.pop(p, None)
                        continue
                    st["step"] = step if self._algorithm == "rmsprop" else torch.tensor(float(step))
                    for b in _BUFFERS[self._algorithm]:
                        if b in bufs:
                            st[b] = torch.tensor(bufs[b][nm], dtype=torch.float32).view_as(p).clone()
                        elif b == "sum":
                            st[b] = torch.full_like(p, self.param_groups[seg.group]["initial_accumulator_value"])
                self.state[p] = st

    def _d_sparse_state(self, p: torch.Tensor, step: int, bufs: Dict[str, Any], nm: str, gi: int) -> None:
        """self.state[p] of a sparse tensor in torch's format: dense buffers,
        rows never touched at their initial value."""
        if step == 0 and self._algorithm != "adagrad":
            self.state.pop(p, None)
            return
        st: Dict[str, Any] = {}
        if self._algorithm == "sgd":
            st["momentum_buffer"] = None
        elif self._algorithm == "adagrad":
            st["step"] = torch.tensor(float(step))
            st["sum"] = _dense_of(bufs.get("sum", {}).get(nm), p,
                                  self.param_groups[gi]["initial_accumulator_value"])
        else:
            st["step"] = step
            for b in _BUFFERS[self._algorithm]:
                st[b] = _dense_of(bufs.get(b, {}).get(nm), p, 0.0)
        self.state[p] = st

    def state_dict(self):
        """torch's format: loads into the torch.optim namesake and back."""
        self._d_fetch_state()
        return super().state_dict()

    def load_state_dict(self, state_dict):
        """Loads torch's format (from this class or its torch.optim namesake)
        and moves it into the daemon; training continues bit for bit."""
        super().load_state_dict(state_dict)
        self._d_push_state()

    def _d_push_state(self) -> None:
        old = {seg.name for seg in self._d_segments}
        was_sparse = {id(p): sp for seg in self._d_segments for p, sp in zip(seg.params, seg.sparse)}
        idx = self._d_index()
        segs: List[_Segment] = []
        for gi, g in enumerate(self.param_groups):
            params = list(g["params"])
            keys = [self._d_state_key(p) for p in params]
            if len(set(keys)) == 1:
                segs.append(_Segment("%s.g%d" % (self._d_name, gi), gi, params, [idx[id(p)] for p in params]))
            else:
                segs.extend(_Segment("%s.g%d.p%d" % (self._d_name, gi, idx[id(p)]), gi, [p], [idx[id(p)]])
                            for p in params)
        for seg in segs:
            seg.sparse = [was_sparse.get(id(p), self._d_all_sparse) for p in seg.params]
            doc = self._d_spec(seg, values=False)
            doc["format"] = "descent-state/1"
            st = self.state.get(seg.params[0], {})
            step = st.get("step", 0)
            step = int(step.item() if isinstance(step, torch.Tensor) else step)
            if self._algorithm == "sgd" and st:
                step = max(step, 1)   # torch's SGD keeps no count; any state means it has stepped
            doc["step"] = step
            doc["created"] = time.time()
            doc["params"] = {nm: _all_rows(p) if sp else p.detach().reshape(-1).tolist()
                             for nm, p, sp in zip(seg.tensors(), seg.params, seg.sparse)}
            bufs: Dict[str, Dict[str, Any]] = {}
            for b in _BUFFERS[self._algorithm]:
                vals = [self.state.get(p, {}).get(b) for p in seg.params]
                if all(isinstance(v, torch.Tensor) for v in vals):
                    bufs[b] = {nm: _all_rows(v) if sp else v.detach().reshape(-1).float().tolist()
                               for nm, v, sp in zip(seg.tensors(), vals, seg.sparse)}
            doc["buffers"] = bufs
            if self._d_mode != "sync":
                doc.pop("workers", None)
            self._d_client.import_state(seg.name, doc)
            seg.step = step
            seg.sent = self._d_hyper(seg.group)
            seg.versions = [p._version for p in seg.params]
        for name in old - {s.name for s in segs}:
            self._d_client.delete(name)
        self._d_segments = segs

    def _d_state_key(self, p):
        st = self.state.get(p, {})
        step = st.get("step", 0)
        step = float(step.item() if isinstance(step, torch.Tensor) else step)
        return step, tuple(sorted(k for k, v in st.items() if isinstance(v, torch.Tensor) and k != "step"))

    # -- copies ----------------------------------------------------------------------------

    _D_CONFIG = ("_d_url", "_d_token", "_d_timeout", "_d_mode", "_d_workers", "_d_worker", "_d_max_staleness",
                 "_d_rank", "_d_name")

    def __getstate__(self):
        s = super().__getstate__()
        for k in self._D_CONFIG:
            s[k] = getattr(self, k)
        s["_d_layout"] = [(seg.name, seg.group, seg.index, seg.step, seg.sparse) for seg in self._d_segments]
        return s

    def __setstate__(self, state):
        layout = state.pop("_d_layout", [])
        super().__setstate__(state)
        self._d_client = Client(self._d_url, token=self._d_token, timeout=self._d_timeout, kind="torch")
        self._d_own_client = True
        flat = [p for g in self.param_groups for p in g["params"]]
        self._d_segments = []
        for name, gi, index, step, *sparse in layout:
            sparse = sparse[0] if sparse else None
            seg = _Segment(name, gi, [flat[k] for k in index], list(index), sparse)
            seg.step = step
            seg.versions = [-1] * len(index)   # unknown: send the parameters before the next step
            self._d_segments.append(seg)
        self._d_ready = True

    def __deepcopy__(self, memo):
        """An independent copy: the torch side deep-copied (parameters too, as
        deepcopy does), and every instance copied on the daemon under a new name."""
        cls = self.__class__
        new = cls.__new__(cls)
        memo[id(self)] = new
        skip = {"_d_client", "_d_segments"}
        for k, v in self.__dict__.items():
            if k not in skip:
                new.__dict__[k] = copy.deepcopy(v, memo)
        new._d_client = Client(self._d_url, token=self._d_token, timeout=self._d_timeout, kind="torch")
        new._d_own_client = True
        new._d_name = "%s-copy-%s" % (self._d_name[:40], uuid.uuid4().hex[:8])
        flat = [p for g in new.param_groups for p in g["params"]]
        new._d_segments = []
        for seg in self._d_segments:
            name = new._d_name + seg.name[len(self._d_name):]
            doc = self._d_client.export_state(seg.name)
            doc["name"] = name
            new._d_client.import_state(name, doc)
            s = _Segment(name, seg.group, [flat[k] for k in seg.index], list(seg.index), seg.sparse)
            s.step, s.sent = seg.step, dict(seg.sent)
            s.versions = [-1] * len(seg.index)
            new._d_segments.append(s)
        return new

    # -- housekeeping ----------------------------------------------------------------------

    @property
    def instances(self) -> List[str]:
        """The names of the daemon instances this optimizer uses."""
        return [seg.name for seg in self._d_segments]

    @property
    def client(self) -> Client:
        return self._d_client

    def delete_instances(self) -> None:
        """Deletes this optimizer's instances on the daemon (the end of a run)."""
        for seg in self._d_segments:
            try:
                self._d_client.delete(seg.name)
            except DescentError as e:
                if e.code != "unknown_instance":
                    raise

    def close(self) -> None:
        if self._d_own_client:
            self._d_client.close()


_NOTE = """

    descent: the update runs on descentd.  Keyword-only extras: url= (a URL or a
    list of URLs for a sharded instance; default $DESCENT_URL, then
    http://$MASTER_ADDR:8080 under torchrun, then http://127.0.0.1:8080),
    name= (the instance name prefix; default from the parameter shapes),
    token=, mode= ("async" or "sync"), workers=, worker=, max_staleness=,
    client= (a descent.Client to reuse), timeout=, wire_dtype= (the
    gradients' wire precision: "bfloat16" or "float16" halves the bytes;
    default: that of bf16/fp16 .grad tensors, else float32).
"""


class SGD(_Remote, torch.optim.SGD):
    __doc__ = (torch.optim.SGD.__doc__ or "") + _NOTE
    _algorithm = "sgd"

    def __init__(self, params, lr=required, momentum=0, dampening=0,
                 weight_decay=0, nesterov=False, *, maximize=False, foreach: Optional[bool] = None,
                 differentiable=False, url=None, name=None, token=None, mode=None, workers=None, worker=None,
                 max_staleness=None, client=None, timeout=60.0, wire_dtype=None):
        torch.optim.SGD.__init__(self, params, lr=lr, momentum=momentum, dampening=dampening,
                                 weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                                 foreach=foreach, differentiable=differentiable)
        self._descent_init(url, name, token, mode, workers, worker, max_staleness, client, timeout, wire_dtype)


class Adagrad(_Remote, torch.optim.Adagrad):
    __doc__ = (torch.optim.Adagrad.__doc__ or "") + _NOTE
    _algorithm = "adagrad"

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
                 foreach: Optional[bool] = None, *, maximize: bool = False, url=None, name=None, token=None,
                 mode=None, workers=None, worker=None, max_staleness=None, client=None, timeout=60.0, wire_dtype=None):
        torch.optim.Adagrad.__init__(self, params, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                     initial_accumulator_value=initial_accumulator_value, eps=eps,
                                     foreach=foreach, maximize=maximize)
        self._descent_init(url, name, token, mode, workers, worker, max_staleness, client, timeout, wire_dtype)


class RMSprop(_Remote, torch.optim.RMSprop):
    __doc__ = (torch.optim.RMSprop.__doc__ or "") + _NOTE
    _algorithm = "rmsprop"

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                 foreach: Optional[bool] = None, maximize: bool = False, differentiable: bool = False, *,
                 url=None, name=None, token=None, mode=None, workers=None, worker=None, max_staleness=None,
                 client=None, timeout=60.0, wire_dtype=None):
        torch.optim.RMSprop.__init__(self, params, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                     momentum=momentum, centered=centered, foreach=foreach, maximize=maximize,
                                     differentiable=differentiable)
        self._descent_init(url, name, token, mode, workers, worker, max_staleness, client, timeout, wire_dtype)


class Adam(_Remote, torch.optim.Adam):
    __doc__ = (torch.optim.Adam.__doc__ or "") + _NOTE
    _algorithm = "adam"

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
                 foreach: Optional[bool] = None, maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False, fused: bool = False, url=None, name=None, token=None, mode=None,
                 workers=None, worker=None, max_staleness=None, client=None, timeout=60.0, wire_dtype=None):
        torch.optim.Adam.__init__(self, params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                  amsgrad=amsgrad, foreach=foreach, maximize=maximize, capturable=capturable,
                                  differentiable=differentiable, fused=fused)
        self._descent_init(url, name, token, mode, workers, worker, max_staleness, client, timeout, wire_dtype)


class AdamW(_Remote, torch.optim.AdamW):
    __doc__ = (torch.optim.AdamW.__doc__ or "") + _NOTE
    _algorithm = "adamw"

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize: bool = False, foreach: Optional[bool] = None, capturable: bool = False,
                 url=None, name=None, token=None, mode=None, workers=None, worker=None, max_staleness=None,
                 client=None, timeout=60.0, wire_dtype=None):
        torch.optim.AdamW.__init__(self, params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                   amsgrad=amsgrad, maximize=maximize, foreach=foreach, capturable=capturable)
        self._descent_init(url, name, token, mode, workers, worker, max_staleness, client, timeout, wire_dtype)


class SparseAdam(_Remote, torch.optim.SparseAdam):
    __doc__ = (torch.optim.SparseAdam.__doc__ or "") + _NOTE + """
    Every parameter is held on the daemon as a sparse [V, D] tensor
    (algorithm sparse_adam); a step pushes only the rows in .grad.
"""
    _algorithm = "sparse_adam"

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, maximize: bool = False, *, url=None,
                 name=None, token=None, mode=None, workers=None, worker=None, max_staleness=None, client=None,
                 timeout=60.0, wire_dtype=None):
        torch.optim.SparseAdam.__init__(self, params, lr=lr, betas=betas, eps=eps, maximize=maximize)
        self._descent_init(url, name, token, mode, workers, worker, max_staleness, client, timeout, wire_dtype)
