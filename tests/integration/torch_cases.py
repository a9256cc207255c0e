"""torch_cases: descent.torch against torch.optim, run under an interpreter
that has torch (/usr/bin/python3) by test_torch_optim.py.

    /usr/bin/python3 torch_cases.py URL [case ...]

Every case trains the same small nn.Module (a CNN on Fashion-MNIST images
when the dataset is installed, random images otherwise) with torch.optim
locally and with descent.torch through the daemon at URL, and compares the
parameters (and optimizer state) bit for bit.  One JSON line per case:
{"case": name, "ok": bool, "detail": text}.
"""
import copy
import gzip
import io
import json
import os
import pickle
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "client", "python"))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.optim import lr_scheduler as S  # noqa: E402

import descent.torch as dt  # noqa: E402
from descent import Client, DescentError  # noqa: E402

URL = sys.argv[1]
FMNIST = "/usr/share/datasets/fashion-mnist"
STEPS = 5


def data(n=16, seed=1):
    path = os.path.join(FMNIST, "train-images-idx3-ubyte.gz")
    if os.path.exists(path):
        with gzip.open(path) as f:
            f.read(16)
            raw = f.read(28 * 28 * n * (seed + 1))
        with gzip.open(os.path.join(FMNIST, "train-labels-idx1-ubyte.gz")) as f:
            f.read(8)
            lab = f.read(n * (seed + 1))
        x = torch.frombuffer(bytearray(raw), dtype=torch.uint8).float().div(255).view(-1, 1, 28, 28)[-n:]
        y = torch.frombuffer(bytearray(lab), dtype=torch.uint8).long()[-n:]
        return x, y
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 5, stride=2)
        self.fc1 = nn.Linear(4 * 12 * 12, 16)
        self.fc2 = nn.Linear(16, 10)
        self.extra = nn.Linear(16, 10)   # used only on some steps (None grads)

    def forward(self, x, use_extra=False):
        h = F.relu(self.conv(x)).flatten(1)
        h = F.relu(self.fc1(h))
        out = self.fc2(h)
        return out + self.extra(h) if use_extra else out


def model():
    torch.manual_seed(0)
    return Net()


def uniq(tag):
    return "%s-%d" % (tag, time.monotonic_ns() % 10 ** 12)


def same_params(a, b):
    bad = [n for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters())
           if not torch.equal(p.detach(), q.detach())]
    return bad


def same_state(sa, sb):
    """torch state dicts equal (tensors bit for bit), as (ok, detail)."""
    if sorted(sa["state"]) != sorted(sb["state"]):
        return False, "state keys %s vs %s" % (sorted(sa["state"]), sorted(sb["state"]))
    for i in sa["state"]:
        x, y = sa["state"][i], sb["state"][i]
        if sorted(x) != sorted(y):
            return False, "param %d: %s vs %s" % (i, sorted(x), sorted(y))
        for k in x:
            u, v = x[k], y[k]
            if isinstance(u, torch.Tensor) or isinstance(v, torch.Tensor):
                if not (isinstance(u, torch.Tensor) and isinstance(v, torch.Tensor) and torch.equal(u, v)
                        and u.dtype == v.dtype and u.shape == v.shape):
                    return False, "param %d %s differs" % (i, k)
            elif u != v:
                return False, "param %d %s: %r vs %r" % (i, k, u, v)
    ga = [{k: v for k, v in g.items()} for g in sa["param_groups"]]
    gb = [{k: v for k, v in g.items()} for g in sb["param_groups"]]
    if ga != gb:
        return False, "param_groups %s vs %s" % (ga, gb)
    return True, ""


def train(pairs, steps=STEPS, extra_every=0, closure=False, plateau=False):
    """pairs: [(model, optimizer, [schedulers])]; the same steps on each."""
    x, y = data()
    losses = []
    for t in range(steps):
        use_extra = bool(extra_every) and t % extra_every == 1   # the first step without: .grad None
        row = []
        for m, o, scheds in pairs:
            def fn():
                o.zero_grad(set_to_none=bool(extra_every))   # None again on the steps without extra
                loss = F.cross_entropy(m(x, use_extra), y)
                loss.backward()
                return loss
            if closure:
                loss = o.step(fn)
            else:
                loss = fn()
                o.step()
            row.append(loss.item())
            for s in scheds:
                if isinstance(s, S.ReduceLROnPlateau):
                    s.step(1.0)   # never improves: the lr drops every patience+1 steps
                else:
                    s.step()
        losses.append(row)
    return losses


def compare(cls, kw, sched=None, steps=STEPS, extra_every=0, groups=None, closure=False):
    a, b = model(), model()
    pa = groups(a) if groups else a.parameters()
    pb = groups(b) if groups else b.parameters()
    oa = getattr(torch.optim, cls)(pa, **kw)
    ob = getattr(dt, cls)(pb, url=URL, name=uniq(cls), **kw)
    sa, sb = (sched(oa), sched(ob)) if sched else ([], [])
    train([(a, oa, sa), (b, ob, sb)], steps, extra_every, closure)
    bad = same_params(a, b)
    if bad:
        return False, "parameters differ: %s" % bad
    ok, why = same_state(oa.state_dict(), ob.state_dict())
    ob.delete_instances()
    return ok, why


ALGOS = {
    "sgd": ("SGD", dict(lr=0.1)),
    "sgd_momentum": ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    "sgd_nesterov_maximize": ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, maximize=True)),
    "adagrad": ("Adagrad", dict(lr=0.1)),
    "adagrad_options": ("Adagrad", dict(lr=0.1, lr_decay=0.05, weight_decay=0.01, initial_accumulator_value=0.2,
                                        eps=1e-6, maximize=True)),
    "rmsprop": ("RMSprop", dict(lr=1e-3)),
    "rmsprop_centered_momentum": ("RMSprop", dict(lr=1e-3, alpha=0.9, centered=True, momentum=0.5,
                                                  weight_decay=0.01)),
    "rmsprop_maximize": ("RMSprop", dict(lr=1e-3, maximize=True, eps=1e-5)),
    "adam": ("Adam", dict()),
    "adam_amsgrad_wd": ("Adam", dict(lr=1e-2, betas=(0.8, 0.99), amsgrad=True, weight_decay=0.1)),
    "adam_maximize": ("Adam", dict(lr=1e-2, maximize=True, eps=1e-6)),
    "adamw": ("AdamW", dict(lr=1e-2)),
    "adamw_amsgrad": ("AdamW", dict(lr=1e-2, amsgrad=True, weight_decay=0.5, maximize=True)),
}

SCHEDS = {
    "StepLR": ("SGD", dict(lr=0.1, momentum=0.9), lambda o: [S.StepLR(o, 2, 0.5)]),
    "MultiStepLR": ("Adam", dict(lr=0.01), lambda o: [S.MultiStepLR(o, [1, 3], 0.3)]),
    "ExponentialLR": ("RMSprop", dict(lr=0.001), lambda o: [S.ExponentialLR(o, 0.9)]),
    "CosineAnnealingLR": ("AdamW", dict(lr=0.01), lambda o: [S.CosineAnnealingLR(o, 3, 1e-4)]),
    "LinearLR": ("Adagrad", dict(lr=0.1), lambda o: [S.LinearLR(o, 0.25, 1.0, 3)]),
    "ConstantLR": ("Adam", dict(lr=0.01), lambda o: [S.ConstantLR(o, 0.5, 2)]),
    "PolynomialLR": ("SGD", dict(lr=0.1), lambda o: [S.PolynomialLR(o, 4, 2.0)]),
    "OneCycleLR_adam_betas": ("Adam", dict(lr=0.01), lambda o: [S.OneCycleLR(o, 0.05, total_steps=STEPS + 1)]),
    "OneCycleLR_sgd_momentum": ("SGD", dict(lr=0.01, momentum=0.9),
                                lambda o: [S.OneCycleLR(o, 0.05, total_steps=STEPS + 1)]),
    "CyclicLR_momentum": ("SGD", dict(lr=0.01, momentum=0.9),
                          lambda o: [S.CyclicLR(o, 0.001, 0.05, step_size_up=2)]),
    "ReduceLROnPlateau": ("Adam", dict(lr=0.01), lambda o: [S.ReduceLROnPlateau(o, patience=0, factor=0.5)]),
    "SequentialLR": ("SGD", dict(lr=0.1, momentum=0.5),
                     lambda o: [S.SequentialLR(o, [S.ConstantLR(o, 0.1, 2), S.ExponentialLR(o, 0.8)], [2])]),
    "ChainedScheduler": ("RMSprop", dict(lr=0.01, momentum=0.3),
                         lambda o: [S.ChainedScheduler([S.ConstantLR(o, 0.5, 3), S.ExponentialLR(o, 0.9)])]),
    "LambdaLR_two": ("AdamW", dict(lr=0.01), lambda o: [S.LambdaLR(o, lambda t: 1 / (t + 1)),
                                                         S.MultiplicativeLR(o, lambda t: 0.95)]),
}


def case_algos():
    fails = []
    for k, (cls, kw) in ALGOS.items():
        ok, why = compare(cls, kw)
        if not ok:
            fails.append("%s: %s" % (k, why))
    return not fails, "; ".join(fails)


def case_schedulers():
    fails = []
    for k, (cls, kw, sched) in SCHEDS.items():
        ok, why = compare(cls, kw, sched)
        if not ok:
            fails.append("%s: %s" % (k, why))
    return not fails, "; ".join(fails)


def case_groups():
    def groups(m):
        return [{"params": list(m.conv.parameters()), "lr": 0.02, "betas": (0.5, 0.9)},
                {"params": list(m.fc1.parameters()) + list(m.fc2.parameters()), "weight_decay": 0.1},
                {"params": list(m.extra.parameters())}]
    ok, why = compare("Adam", dict(lr=0.01), groups=groups, sched=lambda o: [S.StepLR(o, 1, 0.7)])
    if not ok:
        return ok, why
    # add_param_group after some steps, with its own hyperparameters
    a, b = model(), model()
    oa = torch.optim.SGD(list(a.conv.parameters()) + list(a.fc1.parameters()), lr=0.1, momentum=0.9)
    ob = dt.SGD(list(b.conv.parameters()) + list(b.fc1.parameters()), lr=0.1, momentum=0.9, url=URL,
                name=uniq("addgroup"))
    train([(a, oa, []), (b, ob, [])], 2)
    oa.add_param_group({"params": list(a.fc2.parameters()) + list(a.extra.parameters()), "lr": 0.01})
    ob.add_param_group({"params": list(b.fc2.parameters()) + list(b.extra.parameters()), "lr": 0.01})
    train([(a, oa, []), (b, ob, [])], 3)
    bad = same_params(a, b)
    if bad:
        return False, "add_param_group: %s differ" % bad
    r = same_state(oa.state_dict(), ob.state_dict())
    ob.delete_instances()
    return r


def case_none_grads():
    """extra is used every other step: torch skips it (no step, no decay, no count)."""
    fails = []
    for cls, kw in (("Adam", dict(lr=0.01, weight_decay=0.1)), ("SGD", dict(lr=0.1, momentum=0.9,
                                                                            weight_decay=0.1)),
                    ("AdamW", dict(lr=0.01)), ("RMSprop", dict(lr=0.01, momentum=0.1)),
                    ("Adagrad", dict(lr=0.1, weight_decay=0.1))):
        ok, why = compare(cls, kw, extra_every=2, steps=5)
        if not ok:
            fails.append("%s: %s" % (cls, why))
    # a frozen parameter (requires_grad False, never a grad) in the optimizer
    a, b = model(), model()
    for m in (a, b):
        m.fc1.bias.requires_grad_(False)
    oa, ob = torch.optim.Adam(a.parameters(), lr=0.01), dt.Adam(b.parameters(), lr=0.01, url=URL,
                                                                 name=uniq("frozen"))
    train([(a, oa, []), (b, ob, [])], 3)
    if same_params(a, b):
        fails.append("frozen: %s" % same_params(a, b))
    ok, why = same_state(oa.state_dict(), ob.state_dict())
    if not ok:
        fails.append("frozen state: " + why)
    ob.delete_instances()
    return not fails, "; ".join(fails)


def case_closure_loss():
    a, b = model(), model()
    oa = torch.optim.Adam(a.parameters(), lr=0.01)
    name = uniq("closure")
    ob = dt.Adam(b.parameters(), lr=0.01, url=URL, name=name)
    losses = train([(a, oa, []), (b, ob, [])], 3, closure=True)
    if same_params(a, b):
        return False, "parameters differ"
    if any(x != y for x, y in losses):
        return False, "losses differ: %s" % losses
    hist = Client(URL).history(ob.instances[0])
    got = [h["loss"] for h in hist]
    want = [row[1] for row in losses]
    ob.delete_instances()
    if got != want:
        return False, "history losses %s, closure returned %s" % (got, want)
    return True, ""


def case_state_dict_roundtrip():
    """descent.torch.Adam -> torch.save -> torch.optim.Adam continues bit for bit, and back."""
    a, b = model(), model()
    oa = torch.optim.Adam(a.parameters(), lr=0.01, amsgrad=True)
    ob = dt.Adam(b.parameters(), lr=0.01, amsgrad=True, url=URL, name=uniq("sd"))
    train([(a, oa, []), (b, ob, [])], 3, extra_every=2)
    buf = io.BytesIO()
    torch.save(ob.state_dict(), buf)
    buf.seek(0)
    # into torch.optim.Adam on a copy of b's model
    c = model()
    c.load_state_dict(b.state_dict())
    oc = torch.optim.Adam(c.parameters(), lr=0.5)
    oc.load_state_dict(torch.load(buf))
    train([(a, oa, []), (c, oc, [])], 2, extra_every=2)
    if same_params(a, c):
        return False, "torch.optim.Adam from descent's state_dict: %s differ" % same_params(a, c)
    # and back: torch's state into a fresh descent.torch.Adam
    d = model()
    d.load_state_dict(c.state_dict())
    od = dt.Adam(d.parameters(), lr=0.3, url=URL, name=uniq("sd-back"))
    od.load_state_dict(copy.deepcopy(oc.state_dict()))
    train([(a, oa, []), (d, od, [])], 3, extra_every=2)
    if same_params(a, d):
        return False, "descent.torch.Adam from torch's state_dict: %s differ" % same_params(a, d)
    ok, why = same_state(oa.state_dict(), od.state_dict())
    ob.delete_instances()
    od.delete_instances()
    return ok, why


def case_deepcopy_pickle_repr():
    a, b = model(), model()
    oa = torch.optim.RMSprop(a.parameters(), lr=0.01, momentum=0.5)
    ob = dt.RMSprop(b.parameters(), lr=0.01, momentum=0.5, url=URL, name=uniq("dc"))
    if repr(oa) != repr(ob):
        return False, "repr: %r vs %r" % (repr(oa), repr(ob))
    train([(a, oa, []), (b, ob, [])], 2)
    # deepcopy of (model, optimizer) together, as a checkpoint in memory
    a2, oa2 = copy.deepcopy((a, oa))
    b2, ob2 = copy.deepcopy((b, ob))
    if set(ob2.instances) & set(ob.instances):
        return False, "the copy shares instances: %s" % ob2.instances
    train([(a, oa, []), (b, ob, [])], 2)           # the originals go on
    train([(a2, oa2, []), (b2, ob2, [])], 3)       # the copies go their own way
    if same_params(a, b) or same_params(a2, b2):
        return False, "deepcopy: %s / %s" % (same_params(a, b), same_params(a2, b2))
    # pickling (torch.save(optimizer)) reattaches to the same instances
    ob3 = pickle.loads(pickle.dumps(ob))
    if ob3.instances != ob.instances:
        return False, "pickled: %s vs %s" % (ob3.instances, ob.instances)
    for o in (ob, ob2):
        o.delete_instances()
    return True, ""


def case_valueerrors():
    fails = []
    m = model()
    bad = [("SGD", dict(lr=-1)), ("SGD", dict(lr=0.1, momentum=-0.5)), ("SGD", dict(lr=0.1, weight_decay=-1)),
           ("SGD", dict(lr=0.1, nesterov=True)), ("SGD", dict()),
           ("Adam", dict(lr=-0.1)), ("Adam", dict(eps=-1)), ("Adam", dict(betas=(1.0, 0.9))),
           ("Adam", dict(betas=(0.9, -0.1))), ("Adam", dict(weight_decay=-2)), ("AdamW", dict(betas=(0.9, 1.5))),
           ("Adagrad", dict(lr_decay=-1)), ("Adagrad", dict(initial_accumulator_value=-1)),
           ("Adagrad", dict(eps=-1)), ("RMSprop", dict(alpha=-1)), ("RMSprop", dict(momentum=-1))]
    for cls, kw in bad:
        msgs = []
        for mod in (torch.optim, dt):
            extra = {"url": URL} if mod is dt else {}
            try:
                getattr(mod, cls)(m.parameters(), **kw, **extra)
                msgs.append(None)
            except ValueError as e:
                msgs.append(str(e))
        if msgs[0] is None or msgs[0] != msgs[1]:
            fails.append("%s(%s): %s" % (cls, kw, msgs))
    emb = torch.nn.Embedding(5, 2, sparse=True)
    for kw in (dict(lr=-1), dict(eps=0), dict(betas=(1.0, 0.9)), dict(betas=(0.9, -0.1))):
        msgs = []
        for mod in (torch.optim, dt):
            try:
                getattr(mod, "SparseAdam")(emb.parameters(), **kw, **({"url": URL} if mod is dt else {}))
                msgs.append(None)
            except ValueError as e:
                msgs.append(str(e))
        if msgs[0] is None or msgs[0] != msgs[1]:
            fails.append("SparseAdam(%s): %s" % (kw, msgs))
    try:
        dt.SparseAdam(m.parameters(), url=URL)  # a CNN's 4-D kernels are not [V, D] tables
        fails.append("SparseAdam took a 4-D parameter")
    except ValueError as e:
        if "2-D" not in str(e):
            fails.append("SparseAdam: %s" % e)
    # the same signature as torch's, plus the keyword-only descent options
    import inspect
    for cls in ("SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "SparseAdam"):
        ta = inspect.signature(getattr(torch.optim, cls).__init__).parameters
        da = inspect.signature(getattr(dt, cls).__init__).parameters
        for k, p in ta.items():
            q = da.get(k)
            if q is None or q.default != p.default or q.kind != p.kind:
                fails.append("%s.%s: %s vs %s" % (cls, k, p, q))
        for k in ("url", "name", "token", "mode", "workers", "worker", "max_staleness"):
            if k not in da or da[k].kind != inspect.Parameter.KEYWORD_ONLY:
                fails.append("%s: no keyword-only %s" % (cls, k))
    return not fails, "; ".join(fails)


def case_noncontiguous_zero_grad():
    """A non-contiguous parameter, zero_grad(set_to_none=False), and a
    parameter changed outside the optimizer between steps."""
    def build():
        torch.manual_seed(3)
        w = nn.Parameter(torch.randn(6, 4).t())      # 4x6, not contiguous
        v = nn.Parameter(torch.randn(5))
        return w, v
    (wa, va), (wb, vb) = build(), build()
    oa = torch.optim.SGD([wa, va], lr=0.1, momentum=0.9)
    ob = dt.SGD([wb, vb], lr=0.1, momentum=0.9, url=URL, name=uniq("noncontig"))
    x = torch.randn(6, 5)
    for t in range(4):
        for w, v, o in ((wa, va, oa), (wb, vb, ob)):
            o.zero_grad(set_to_none=False)
            loss = (w @ x @ v).pow(2).sum() if t != 1 else (w.sum() * 0 + (w @ x).sum())
            loss.backward()
            o.step()
            if t == 2:
                with torch.no_grad():
                    v.mul_(0.5)          # changed outside the optimizer
    if wb.is_contiguous():
        return False, "the parameter became contiguous"
    if not (torch.equal(wa, wb) and torch.equal(va, vb)):
        return False, "parameters differ"
    ob.delete_instances()
    return True, ""


def case_late_worker_and_async():
    """A worker that joins an instance already trained pulls its parameters
    into its model before its first step; async with max_staleness is one keyword."""
    name = uniq("late")
    a = model()
    oa = dt.SGD(a.parameters(), lr=0.1, momentum=0.9, url=URL, name=name, max_staleness=2)
    train([(a, oa, [])], 3)
    d = Client(URL).describe(oa.instances[0])
    if (d["mode"], d["max_staleness"], d["step"]) != ("async", 2, 3):
        return False, "instance: %s %s %s" % (d["mode"], d["max_staleness"], d["step"])
    torch.manual_seed(42)
    b = Net()                                   # another init
    ob = dt.SGD(b.parameters(), lr=0.1, momentum=0.9, url=URL, name=name, max_staleness=2)
    if same_params(a, b):
        return False, "the late worker did not pull the parameters: %s" % same_params(a, b)
    if ob._d_segments[0].step != 3:
        return False, "late worker at step %d" % ob._d_segments[0].step
    train([(b, ob, [])], 1)
    if Client(URL).describe(oa.instances[0])["step"] != 4:
        return False, "the late worker's step did not count"
    oa.delete_instances()
    return True, ""


def case_sharded():
    """url=[two daemons]: the instances are sharded, results still torch's bit for bit."""
    url2 = os.environ.get("DESCENT_URL2")
    if not url2:
        return False, "DESCENT_URL2 is not set"
    a, b = model(), model()
    oa = torch.optim.Adam(a.parameters(), lr=0.01, weight_decay=0.01)
    ob = dt.Adam(b.parameters(), lr=0.01, weight_decay=0.01, url=[URL, url2], name=uniq("sharded"))
    sa, sb = S.ExponentialLR(oa, 0.9), S.ExponentialLR(ob, 0.9)
    train([(a, oa, [sa]), (b, ob, [sb])], 4, extra_every=2)
    if same_params(a, b):
        return False, "parameters differ: %s" % same_params(a, b)
    ok, why = same_state(oa.state_dict(), ob.state_dict())
    steps = [Client(u).describe(ob.instances[-1])["step"] for u in (URL, url2)]
    ob.delete_instances()
    if not ok:
        return ok, why
    if steps != [2, 2]:   # extra.bias had a gradient on steps 2 and 4 only
        return False, "shard steps %s" % steps
    return True, ""


CASES = {n[5:]: f for n, f in globals().items() if n.startswith("case_")}


def main():
    names = sys.argv[2:] or list(CASES)
    for n in names:
        t0 = time.monotonic()
        try:
            ok, detail = CASES[n]()
        except Exception:  # noqa: BLE001 - reported to the test
            ok, detail = False, traceback.format_exc()
        print(json.dumps({"case": n, "ok": bool(ok), "detail": detail, "s": round(time.monotonic() - t0, 2)}),
              flush=True)


if __name__ == "__main__":
    main()
