#!/usr/bin/env python3
"""fmnist_worker.py: the Python twin of fmnist_worker.c — a road-trip worker
written with the standard library and client/python/descent_client.py only.

It trains the seed's (neuralnets' optimizers tutorial that descent grew from, not part of
this repository) linear classifier (multiclass SVM loss, bias folded into
W, 10 x 785, pixels scaled to [0, 1], lambda = 1e-4) exactly like the C
worker's `train` mode: the same seeded batch order, its share of every batch
of 256, one push per step in sync mode, so it can stand in for any of the C
workers of a round.

    fmnist_worker.py --url URL --name INSTANCE --rank R --workers N [--epochs E] [--train-n N]
"""
import argparse
import gzip
import operator
import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from descent_client import Client  # noqa: E402

DATA = "/usr/share/datasets/fashion-mnist"
CLASSES, PIXELS, D = 10, 784, 785
LAMBDA = 1e-4
MASK = (1 << 64) - 1


def load(which, limit):
    with gzip.open(os.path.join(DATA, which + "-images-idx3-ubyte.gz")) as f:
        magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
        assert magic == 0x803 and rows * cols == PIXELS
        n = min(n, limit) if limit else n
        images = f.read(n * PIXELS)
    with gzip.open(os.path.join(DATA, which + "-labels-idx1-ubyte.gz")) as f:
        magic, _ = struct.unpack(">II", f.read(8))
        assert magic == 0x801
        labels = f.read(n)
    return images, labels, n


def permutation(n, seed):
    """The C worker's Fisher-Yates shuffle with splitmix64 (fm_permutation)."""
    perm = list(range(n))
    st = seed & MASK
    for i in range(n, 1, -1):
        st = (st + 0x9E3779B97F4A7C15) & MASK
        z = st
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        z ^= z >> 31
        j = z % i
        perm[i - 1], perm[j] = perm[j], perm[i - 1]
    return perm


def loss_grad(W, images, labels, idx):
    """The seed's loss and its gradient on the samples idx (W: 10 rows of 785)."""
    grad = [[0.0] * D for _ in range(CLASSES)]
    loss = 0.0
    mul, add, sub = operator.mul, operator.add, operator.sub
    for i in idx:
        raw = images[i * PIXELS:(i + 1) * PIXELS]
        x = [b / 255.0 for b in raw]
        x.append(1.0)
        y = labels[i]
        s = [sum(map(mul, W[c], x)) for c in range(CLASSES)]
        positive = 0
        for c in range(CLASSES):
            if c == y:
                continue
            margin = s[c] - s[y] + 1.0
            if margin > 0:
                loss += margin
                positive += 1
                grad[c] = list(map(add, grad[c], x))
        if positive:
            grad[y] = list(map(sub, grad[y], [positive * v for v in x]))
    m = len(idx)
    reg = sum(v * v for row in W for v in row)
    flat = []
    for c in range(CLASSES):
        flat += [g / m + 2 * LAMBDA * w for g, w in zip(grad[c], W[c])]
    return loss / m + LAMBDA * reg, flat


def main():
    ap = argparse.ArgumentParser(description="a Fashion-MNIST road-trip worker in Python")
    ap.add_argument("--url", default=os.environ.get("DESCENT_URL"), required=os.environ.get("DESCENT_URL") is None)
    ap.add_argument("--name", required=True)
    ap.add_argument("--rank", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--train-n", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    images, labels, n = load("train", a.train_n)
    client = Client(a.url, token=os.environ.get("DESCENT_TOKEN"))
    p = client.pull(a.name)
    step = p.step
    W = p["W"]
    per_epoch = n // a.batch
    worker = "w%d" % a.rank
    for s in range(per_epoch * a.epochs):
        epoch, k = divmod(s, per_epoch)
        if k == 0:
            perm = permutation(n, a.seed * 1000003 + epoch)
        lo = k * a.batch + a.batch * a.rank // a.workers
        hi = k * a.batch + a.batch * (a.rank + 1) // a.workers
        rows = [W[c * D:(c + 1) * D] for c in range(CLASSES)]
        loss, g = loss_grad(rows, images, labels, perm[lo:hi])
        p = client.push(a.name, {"W": g}, worker=worker, step=step, loss=loss)
        step, W = p.step, p["W"]
        if (s + 1) % max(1, per_epoch // 4) == 0:
            print("  python worker %d: step %d, batch loss %.4f" % (a.rank, step, loss), file=sys.stderr, flush=True)
    print('{"event":"trained","worker":"python","steps":%d}' % step, flush=True)


if __name__ == "__main__":
    main()
