#!/usr/bin/env python3
"""train_quadratic: several worker processes train a linear regression (a
least-squares, i.e. quadratic, objective) through a descent daemon in sync
mode, with the Python client.  Standard library only.

    python3 train_quadratic.py --url http://127.0.0.1:8080 [--url ...] \
        [--workers 4] [--steps 150] [--algorithm adam] [--lr 0.05]

Synthetic data with a fixed seed: y = x . w* + b* + noise.  Each worker owns
its own samples, checks its analytic gradient against a numeric one once
(the gradient check of the seed, neuralnets' optimizers tutorial that descent
grew from, not part of this repository), then every round pushes the gradient of its
loss on the parameters of the last step and gets the round's new
parameters back.  Worker 0 prints progress.  Given several --url the
instance is sharded over the daemons.  At the end the main process pulls
the parameters and exits 0 if they reached w*, b* (within --tol), else 1.
"""
import argparse
import math
import multiprocessing
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from descent_client import Client, DescentError, gradient_check, numeric_gradient  # noqa: E402

NOISE = 0.05


def truth(dim, seed):
    r = random.Random(seed)
    return [r.uniform(-2, 2) for _ in range(dim)], r.uniform(-1, 1)


def make_data(dim, samples, seed, worker):
    w, b = truth(dim, seed)
    r = random.Random(seed * 1000 + worker + 1)
    xs, ys = [], []
    for _ in range(samples):
        x = [r.gauss(0, 1) for _ in range(dim)]
        xs.append(x)
        ys.append(sum(a * c for a, c in zip(x, w)) + b + r.gauss(0, NOISE))
    return xs, ys


def loss_and_grad(params, xs, ys):
    """Half the mean squared error, and its gradient, for params {"w", "b"}."""
    w, b = params["w"], params["b"][0]
    gw = [0.0] * len(w)
    gb = 0.0
    loss = 0.0
    for x, y in zip(xs, ys):
        r = sum(a * c for a, c in zip(x, w)) + b - y
        loss += r * r
        for j, a in enumerate(x):
            gw[j] += r * a
        gb += r
    m = len(xs)
    return loss / (2 * m), {"w": [g / m for g in gw], "b": [gb / m]}


def worker(i, args):
    xs, ys = make_data(args.dim, args.samples, args.seed, i)
    client = Client(args.url, token=args.token)
    p = client.pull(args.name)
    # the seed's tip: check the analytic gradient against a numeric one first
    probe = {"w": [0.3 * (j % 3 - 1) for j in range(args.dim)], "b": [0.1]}
    _, analytic = loss_and_grad(probe, xs, ys)
    numeric = numeric_gradient(lambda q: loss_and_grad(q, xs, ys)[0], probe)
    err = gradient_check(analytic, numeric)
    if err > 1e-5:
        print("worker %d: gradient check failed (relative error %.2e)" % (i, err), flush=True)
        return 3
    if i == 0:
        print("gradient check: max relative error %.2e" % err, flush=True)
    t0 = time.time()
    for _ in range(args.steps):
        loss, g = loss_and_grad(p, xs, ys)
        p = client.push(args.name, g, worker="w%d" % i, step=p.step, loss=loss)
        if i == 0 and (p.step % args.every == 0 or p.step == args.steps):
            print("step %4d  loss %.6f  (%.0f steps/s)" % (p.step, loss, p.step / (time.time() - t0)), flush=True)
    client.close()
    return 0


def run_worker(i, args):
    try:
        code = worker(i, args)
    except DescentError as e:
        print("worker %d: %s" % (i, e), flush=True)
        code = 2
    sys.exit(code)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", action="append", required=True, help="a daemon; repeat to shard")
    ap.add_argument("--token")
    ap.add_argument("--name", default="linreg-%d" % os.getpid())
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--dim", type=int, default=8)
    ap.add_argument("--samples", type=int, default=200, help="per worker")
    ap.add_argument("--algorithm", default="adam")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--tol", type=float, default=0.05, help="largest error allowed on any weight")
    ap.add_argument("--every", type=int, default=25, help="print every N steps")
    ap.add_argument("--keep", action="store_true", help="keep the instance afterwards")
    args = ap.parse_args(argv)

    client = Client(args.url, token=args.token)
    client.create(name=args.name, algorithm=args.algorithm, hyper={"lr": args.lr},
                  tensors=[{"name": "w", "shape": [args.dim], "init": "zeros"}, {"name": "b", "shape": [1]}],
                  mode="sync", workers=args.workers, worker_lease_ms=10000)
    print("training '%s': %s, %d workers, %d steps, %d shard(s)"
          % (args.name, args.algorithm, args.workers, args.steps, len(args.url)), flush=True)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=run_worker, args=(i, args)) for i in range(args.workers)]
    for p in procs:
        p.start()
    deadline = time.time() + 60 + args.steps
    for p in procs:
        p.join(max(0.1, deadline - time.time()))
    failed = False
    for i, p in enumerate(procs):
        if p.is_alive():
            print("worker %d did not finish in time" % i, flush=True)
            p.terminate()
            p.join()
            failed = True
        elif p.exitcode != 0:
            print("worker %d failed (exit %s)" % (i, p.exitcode), flush=True)
            failed = True
    final = client.pull(args.name)
    w_true, b_true = truth(args.dim, args.seed)
    err = max(abs(a - b) for a, b in zip(final["w"] + final["b"], w_true + [b_true]))
    data = [make_data(args.dim, args.samples, args.seed, i) for i in range(args.workers)]
    loss = sum(loss_and_grad(final, xs, ys)[0] for xs, ys in data) / args.workers
    print("final step %d  loss %.6f  largest weight error %.4f (tolerance %g)" % (final.step, loss, err, args.tol))
    if not args.keep:
        client.delete(args.name)
    client.close()
    ok = not failed and final.step == args.steps and err <= args.tol and math.isfinite(loss)
    print("converged" if ok else "did NOT converge", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
