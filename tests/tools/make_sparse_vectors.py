#!/usr/bin/python3
"""make_sparse_vectors: records torch.optim runs on sparse COO gradients into
tests/data/optim_sparse/<case>.json (format: tests/data/optim_sparse/README.md).

Drives real torch.optim (1.13, CPU, float32, one thread): SGD and Adagrad on a
sparse gradient, SparseAdam; gradients uncoalesced with repeated rows (2 and 3+
copies), rows untouched for many steps, an empty step, an lr schedule given per
step, maximize, every option torch accepts for sparse gradients, a mixed
dense + sparse instance and one with two tables.  Run with /usr/bin/python3
(python3-torch):  tests/tools/make_sparse_vectors.py [--out DIR]
"""
import argparse
import json
import math
import os

import numpy as np
import torch

torch.set_num_threads(1)


def f32s(x):
    """A float32 as the shortest decimal that reads back (as double, then
    float32) to the same bits; the long form when the short one would not."""
    f = np.float32(x)
    s = repr(float(f)) if not np.isfinite(f) else np.format_float_positional(f, unique=True, trim="-")
    if np.float32(float(s)) != f or s in ("-0",):
        s = repr(float(f))
    return s


def jarr(a):
    a = np.asarray(a, dtype=np.float32)
    if a.ndim == 1:
        return "[" + ",".join(f32s(v) for v in a) + "]"
    return "[" + ",".join(jarr(r) for r in a) + "]"


class Raw(str):
    """A JSON fragment written as is."""


def dump(o, ind=0):
    sp = "  " * ind
    if isinstance(o, Raw):
        return str(o)
    if isinstance(o, dict):
        if not o:
            return "{}"
        items = [f'{sp}  {json.dumps(k)}: {dump(v, ind + 1)}' for k, v in o.items()]
        return "{\n" + ",\n".join(items) + "\n" + sp + "}"
    if isinstance(o, list) and o and isinstance(o[0], (dict, list, Raw)):
        return "[\n" + ",\n".join(sp + "  " + dump(v, ind + 1) for v in o) + "\n" + sp + "]"
    return json.dumps(o)


def schedule_lr(s, base, t):
    """server/kernel/schedule.c's closed forms (lr after t steps), in double."""
    if not s:
        return base
    x = float(t)
    if s["type"] == "step":
        return base * math.pow(s.get("gamma", 0.1), math.floor(x / s["step_size"]))
    if s["type"] == "exponential":
        return base * math.pow(s["gamma"], x)
    if s["type"] == "cosine":
        em = s.get("eta_min", 0.0)
        return em + (base - em) * (1 + math.cos(math.pi * x / s["T_max"])) / 2
    raise ValueError(s["type"])


def row_plan(rng, V, T, hot):
    """Row ids per step: random draws from the hot rows (repeats happen), plus
    a 2-copy, a 3-copy and a 4-copy step, an empty step, a row touched only at
    steps 1 and T-1 and one only at step 2; the last rows are never touched."""
    plan = []
    for t in range(1, T + 1):
        k = int(rng.integers(1, 9))
        rows = list(rng.choice(hot, size=k, replace=True))
        if t == 1:
            rows += [V - 4]
        if t == 2:
            rows += [V - 5, 0, 0]                      # 2 copies of row 0
        if t == 6:
            rows = [hot[1], hot[2], hot[1], hot[1]]   # 3 copies
        if t == 9:
            rows = [hot[3]] * 4 + [hot[4], hot[4]]    # 4 copies and 2
        if t == 5:
            rows = []                                 # empty push
        if t == 12:                                   # k > 16, many copies: torch's std::sort order
            rows = list(rng.choice(hot[:5], size=40, replace=True))
        if t == T - 1:
            rows += [V - 4, hot[0], hot[0]]
        plan.append([int(r) for r in rows])
    return plan


def grad_values(rng, k, D, t):
    scale = 10.0 ** rng.uniform(-2, 1)
    v = rng.standard_normal((k, D)) * scale
    if k:
        v[0, 0] = 0.0                                 # exact zero
        if t % 4 == 0:
            v[-1, -1] = 1e3 * np.sign(v[-1, -1] or 1.0)
        if t % 5 == 1 and D > 1:
            v[rng.integers(k), 1] = 1e-6
    return v.astype(np.float32)


def sparse(rows, vals, V, D):
    idx = torch.tensor([rows], dtype=torch.long) if rows else torch.empty((1, 0), dtype=torch.long)
    return torch.sparse_coo_tensor(idx, torch.from_numpy(vals.reshape(len(rows), D)), (V, D))


def make_optimizer(alg, params, hyper):
    if alg == "sgd":
        return torch.optim.SGD(params, **hyper)
    if alg == "adagrad":
        return torch.optim.Adagrad(params, **hyper)
    if alg == "sparse_adam":
        kw = dict(hyper)
        kw["betas"] = tuple(kw["betas"])
        return torch.optim.SparseAdam(params, **kw)
    raise ValueError(alg)


STATE_KEYS = {"sgd": [], "adagrad": ["sum"], "sparse_adam": ["exp_avg", "exp_avg_sq"]}
COALESCES = {"sgd": False, "adagrad": True, "sparse_adam": True}


def run_case(name, alg, hyper, tables, dense=None, schedule=None, T=30, seed=1):
    """tables: [(name, V, D)]; dense: (name, n) or None."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    params, inits, plans = {}, {}, {}
    for tn, V, D in tables:
        init = (rng.standard_normal((V, D)) * 0.5).astype(np.float32)
        init[0, 0] = 0.0
        init[1, 0] = 100.0
        inits[tn] = init
        params[tn] = torch.nn.Parameter(torch.from_numpy(init.copy()))
        hot = list(rng.permutation(V - 6)[: max(6, (V - 6) // 2)])
        plans[tn] = row_plan(rng, V, T, hot)
    if dense:
        dn, n = dense
        inits[dn] = (rng.standard_normal(n) * 0.5).astype(np.float32)
        params[dn] = torch.nn.Parameter(torch.from_numpy(inits[dn].copy()))
    order = [t[0] for t in tables] + ([dense[0]] if dense else [])
    opt = make_optimizer(alg, [params[k] for k in order], hyper)
    inexact = {tn: set() for tn, _, _ in tables}
    steps = []
    for t in range(1, T + 1):
        lr = schedule_lr(schedule, hyper["lr"], t - 1)
        for g in opt.param_groups:
            g["lr"] = lr
        rec = {"lr": lr, "grads": {}}
        for tn, V, D in tables:
            rows = plans[tn][t - 1]
            vals = grad_values(rng, len(rows), D, t)
            params[tn].grad = sparse(rows, vals, V, D)
            rec["grads"][tn] = {"rows": rows, "values": Raw(jarr(vals) if rows else "[]")}
            # inexact[tn] stays empty: the kernels reproduce torch's summation
            # order (libstdc++'s std::sort) for any number of copies.
        if dense:
            g = (rng.standard_normal(dense[1]) * 10.0 ** rng.uniform(-2, 1)).astype(np.float32)
            params[dense[0]].grad = torch.from_numpy(g)
            rec["grads"][dense[0]] = Raw(jarr(g))
        # torch 1.13's Adagrad and SparseAdam count the step, then fail on an
        # empty sparse gradient ("The size of tensor a (D) must match the size
        # of tensor b (0)") before changing that tensor.  What the daemon does
        # for k = 0 is that: the step counted, nothing else changed; recorded
        # here by stepping without that gradient and counting its step.
        skipped = []
        if alg != "sgd":
            for tn, _, _ in tables:
                if params[tn].grad._nnz() == 0:
                    params[tn].grad = None
                    skipped.append(tn)
        opt.step()
        for tn in skipped:
            opt.state[params[tn]]["step"] += 1
        rec["params"] = {k: Raw(jarr(params[k].detach().numpy())) for k in order}
        st = {}
        for k in order:
            s = opt.state[params[k]]
            st[k] = {b: Raw(jarr(s[b].numpy())) for b in STATE_KEYS[alg]}
            if "step" in s:
                st[k]["step"] = int(float(s["step"]))
        rec["state"] = st
        rec["inexact_rows"] = {tn: sorted(int(r) for r in inexact[tn]) for tn in inexact}
        steps.append(rec)
    create_tensors = []
    for tn, V, D in tables:
        create_tensors.append({"name": tn, "sparse": True, "shape": [V, D],
                               "init": {"rows": list(range(V)), "values": Raw(jarr(inits[tn]))}})
    if dense:
        create_tensors.append({"name": dense[0], "shape": [dense[1]], "values": Raw(jarr(inits[dense[0]]))})
    create = {"name": name.replace("_", "-"), "algorithm": alg, "hyper": hyper, "tensors": create_tensors}
    if schedule:
        create["schedule"] = schedule
    doc = {
        "case": name,
        "torch_version": torch.__version__,
        "seed": seed,
        "algorithm": alg,
        "hyper": hyper,
        "schedule": schedule,
        "steps_count": T,
        "tensors": [{"name": tn, "sparse": True, "shape": [V, D]} for tn, V, D in tables]
        + ([{"name": dense[0], "sparse": False, "shape": [dense[1]]}] if dense else []),
        "create": create,
        "init": {k: Raw(jarr(inits[k])) for k in order},
        "steps": steps,
    }
    return doc


SGD = dict(lr=0.05, momentum=0, dampening=0, weight_decay=0, nesterov=False, maximize=False)
ADAGRAD = dict(lr=0.01, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10, maximize=False)
SPADAM = dict(lr=1e-3, betas=[0.9, 0.999], eps=1e-8, maximize=False)


def coalesce_cases():
    """torch's coalesce itself: (rows, values) -> coalesced (rows, values),
    where the order of a sum of three or more copies is std::sort's."""
    rng = np.random.default_rng(12)
    out = []
    for name, k, V, kind in [("k17", 17, 3, "rand"), ("k40", 40, 5, "rand"), ("k2000", 2000, 50, "rand"),
                             ("same", 300, 1, "rand"), ("sorted", 500, 40, "sorted"), ("reversed", 500, 40, "rev"),
                             ("wide", 1000, 1 << 40, "rand")]:
        D = 2
        rows = rng.integers(0, V, k)
        if kind == "sorted":
            rows.sort()
        if kind == "rev":
            rows = np.sort(rows)[::-1].copy()
        vals = (rng.standard_normal((k, D)) * 10.0 ** rng.uniform(-3, 3, (k, 1))).astype(np.float32)
        g = torch.sparse_coo_tensor(torch.from_numpy(rows[None, :].astype(np.int64)), torch.from_numpy(vals),
                                    (int(V), D)).coalesce()
        out.append({"name": name, "D": D, "rows": [int(r) for r in rows], "values": Raw(jarr(vals)),
                    "coalesced_rows": [int(r) for r in g._indices()[0]], "coalesced_values": Raw(jarr(g._values().numpy()))})
    return {"case": "coalesce", "torch_version": torch.__version__, "cases": out}


def cases():
    yield run_case("sgd_plain", "sgd", SGD, [("emb", 40, 5)])
    yield run_case("sgd_maximize_cosine", "sgd", dict(SGD, lr=0.1, dampening=0.3, maximize=True), [("emb", 24, 3)],
                   schedule={"type": "cosine", "T_max": 20, "eta_min": 0.001}, seed=2)
    yield run_case("adagrad_default", "adagrad", ADAGRAD, [("emb", 40, 5)], seed=3)
    yield run_case("adagrad_decay", "adagrad",
                   dict(ADAGRAD, lr=0.1, lr_decay=0.05, initial_accumulator_value=0.1, eps=1e-6), [("emb", 30, 7)], seed=4)
    yield run_case("adagrad_maximize_step", "adagrad", dict(ADAGRAD, lr=0.05, maximize=True), [("emb", 20, 4)],
                   schedule={"type": "step", "step_size": 7, "gamma": 0.5}, seed=5)
    yield run_case("sparse_adam_default", "sparse_adam", SPADAM, [("emb", 40, 5)], seed=6)
    yield run_case("sparse_adam_betas_eps", "sparse_adam", dict(SPADAM, lr=0.02, betas=[0.8, 0.99], eps=1e-6),
                   [("emb", 30, 8)], seed=7)
    yield run_case("sparse_adam_maximize_exp", "sparse_adam", dict(SPADAM, lr=0.05, maximize=True), [("emb", 24, 3)],
                   schedule={"type": "exponential", "gamma": 0.95}, seed=8)
    yield run_case("sparse_adam_two_tables", "sparse_adam", dict(SPADAM, lr=0.01), [("emb", 30, 4), ("bag", 20, 6)],
                   seed=9, T=24)
    yield run_case("mixed_adagrad", "adagrad", dict(ADAGRAD, lr=0.05, lr_decay=0.01), [("emb", 32, 6)],
                   dense=("w", 13), seed=10, T=24)
    yield run_case("mixed_sgd", "sgd", dict(SGD, lr=0.02), [("emb", 26, 3)], dense=("w", 9), seed=11, T=24)


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "data", "optim_sparse"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    os.makedirs(os.path.join(a.out, "coalesce"), exist_ok=True)
    for doc in list(cases()) + [coalesce_cases()]:
        path = os.path.join(a.out, "coalesce/torch.json" if doc["case"] == "coalesce" else doc["case"] + ".json")
        with open(path, "w") as f:
            f.write(dump(doc) + "\n")
        print(path, os.path.getsize(path))


if __name__ == "__main__":
    main()
