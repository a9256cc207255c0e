#!/usr/bin/env python3
"""sparse_worker: one worker of the sparse demo (softmax regression over hashed features).

Owns: the model's math in numpy (logits, cross-entropy, its gradient by row)
and one worker's loop: for each global mini-batch it takes its quarter, pulls
the rows of W its examples touch, computes the gradient, and pushes W's rows
and b's gradient in sync mode (the daemon sums the 4 pushes: each worker
divides by the global batch size, so the sum is the mean gradient torch sees).
Never holds the table: only the rows of the current batch.  One thread per
process; sparse_demo.py starts 4 of them.

    sparse_worker.py --url URL --name NAME --rank R --workers N --data CACHE
                     --batch B --epochs E [--train-n N]
Prints JSON lines: {"event": "progress", ...} every few steps, {"event": "done", ...} at the end.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "python"))
import sparse_features as sf  # noqa: E402


def forward(offs, flat, W_rows, inv, b):
    """Logits (n x C, float64) of a CSR batch: each example sums its rows of W, plus b.
    W_rows are the distinct rows' values; inv maps each flat entry to its distinct row."""
    n = len(offs) - 1
    cs = np.zeros((len(flat) + 1, W_rows.shape[1]))
    np.cumsum(W_rows[inv], axis=0, dtype=np.float64, out=cs[1:])
    return cs[offs[1:]] - cs[offs[:-1]] + np.asarray(b, dtype=np.float64)[None, :] if n else np.zeros((0, len(b)))


def loss_and_grad(offs, flat, y, W_rows, inv, b, scale):
    """Sum of cross-entropy losses, and the gradient of (sum of losses) * scale
    with respect to the distinct rows (float32, one row per distinct id) and b."""
    z = forward(offs, flat, W_rows, inv, b)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    p = e / e.sum(axis=1, keepdims=True)
    n = len(y)
    loss = float(-np.log(p[np.arange(n), y]).sum())
    d = p
    d[np.arange(n), y] -= 1.0
    d *= scale
    ex = np.repeat(np.arange(n), np.diff(offs))
    de = d[ex]
    gW = np.empty((W_rows.shape[0], W_rows.shape[1]), dtype=np.float32)
    for c in range(W_rows.shape[1]):
        gW[:, c] = np.bincount(inv, weights=de[:, c], minlength=W_rows.shape[0])
    return loss, gW, d.sum(axis=0).astype(np.float32)


def quarter(sel, rank, workers):
    """Worker rank's contiguous share of one global batch (the first ones get one more when it does not divide)."""
    k, r = divmod(len(sel), workers)
    lo = rank * k + min(rank, r)
    return sel[lo:lo + k + (rank < r)]


def batches(n, batch, epochs):
    """(epoch, step, indices) of every global mini-batch, in the order torch sees them too."""
    step = 0
    for ep in range(epochs):
        perm = sf.order(n, ep)
        for i in range(0, n, batch):
            yield ep, step, perm[i:i + batch]
            step += 1


def train(args):
    from descent import Client, Rows
    with np.load(args.data, allow_pickle=False) as z:
        data = {k: z[k] for k in ("indptr", "ids", "y", "test", "sections")}
    tr = sf.Subset(data, "train", args.train_n)
    c = Client(args.url)
    worker = "w%d" % args.rank
    t0, n_done, loss_sum, seen = time.time(), 0, 0.0, 0
    spent = {"pull": 0.0, "compute": 0.0, "push": 0.0}
    b = np.zeros(len(data["sections"]), dtype=np.float32)
    every = max(1, args.progress_every)
    total = -(-tr.n // args.batch) * args.epochs
    for ep, step, sel in batches(tr.n, args.batch, args.epochs):
        mine = quarter(sel, args.rank, args.workers)
        offs, flat, y = tr.batch(mine)
        u, inv = np.unique(flat, return_inverse=True)
        C = len(b)
        ta = time.time()
        W_rows = np.asarray(c.pull_rows(args.name, "W", u)[1], dtype=np.float32).reshape(len(u), C) if len(u) else \
            np.zeros((0, C), np.float32)
        if step == 0:
            b = np.asarray(c.pull(args.name, kind="numpy")["b"], dtype=np.float32)
        tb = time.time()
        loss, gW, gb = loss_and_grad(offs, flat, y, W_rows, inv, b, 1.0 / len(sel))
        tc = time.time()
        p = c.push(args.name, {"W": Rows(u, gW), "b": gb}, worker=worker, step=step, kind="numpy")
        b = np.asarray(p["b"], dtype=np.float32)
        td = time.time()
        spent["pull"] += tb - ta
        spent["compute"] += tc - tb
        spent["push"] += td - tc
        n_done += len(mine)
        loss_sum += loss
        seen += len(mine)
        if (step + 1) % every == 0 or step + 1 == total:
            print(json.dumps({"event": "progress", "worker": worker, "epoch": ep, "step": step + 1, "steps": total,
                              "loss": loss_sum / max(seen, 1), "examples": seen, "seconds": time.time() - t0}),
                  flush=True)
            loss_sum, seen = 0.0, 0
    print(json.dumps({"event": "done", "worker": worker, "examples": n_done, "seconds": time.time() - t0,
                      "spent": spent}), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--rank", type=int, required=True)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--data", required=True, help="the feature cache sparse_demo.py wrote (.npz)")
    ap.add_argument("--bits", type=int, default=24)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--train-n", type=int, default=0)
    ap.add_argument("--progress-every", type=int, default=20)
    train(ap.parse_args())


if __name__ == "__main__":
    main()
