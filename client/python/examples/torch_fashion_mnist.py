#!/usr/bin/python3
"""torch_fashion_mnist: a small CNN on Debian's dataset-fashion-mnist, trained
through descent by 4 worker processes (sync mode, as torchrun would run them).

    /usr/bin/python3 torch_fashion_mnist.py --url http://127.0.0.1:8080 [--workers 4] [--steps 200] [--quick]

Each worker is a process with RANK/WORLD_SIZE set, the way torchrun starts
them; descent.torch.Adam takes mode="sync", workers and its worker name from
them, rank 0 creates the instance and the others join it.  Each worker trains
on its own slice of every batch; rank 0 prints progress lines and the test
accuracy at the end.  --quick: 20 steps on a few thousand images.
"""
import argparse
import gzip
import multiprocessing
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

DATA = "/usr/share/datasets/fashion-mnist"


def load(kind, limit):
    import torch
    with gzip.open(os.path.join(DATA, "%s-images-idx3-ubyte.gz" % kind)) as f:
        f.read(16)
        x = f.read(28 * 28 * limit)
    with gzip.open(os.path.join(DATA, "%s-labels-idx1-ubyte.gz" % kind)) as f:
        f.read(8)
        y = f.read(limit)
    n = len(y)
    return (torch.frombuffer(bytearray(x[:n * 784]), dtype=torch.uint8).float().div(255).view(n, 1, 28, 28),
            torch.frombuffer(bytearray(y), dtype=torch.uint8).long())


def net():
    import torch.nn as nn
    return nn.Sequential(nn.Conv2d(1, 8, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 5), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))


def worker(rank, args):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(args.workers), MASTER_ADDR="127.0.0.1")
    import torch
    import torch.nn.functional as F
    import descent.torch
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = net()
    opt = descent.torch.Adam(model.parameters(), lr=args.lr, url=args.url, name=args.name)
    x, y = load("train", args.train)
    batch = 64 * args.workers
    for step in range(args.steps):
        i = (step * batch) % (len(y) - batch)
        xb, yb = x[i + rank:i + batch:args.workers], y[i + rank:i + batch:args.workers]
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        if rank == 0 and (step % max(1, args.steps // 10) == 0 or step == args.steps - 1):
            print("step %4d  loss %.4f" % (step + 1, loss.item()), flush=True)
    if rank == 0:
        tx, ty = load("t10k", args.test)
        with torch.no_grad():
            acc = (model(tx).argmax(1) == ty).float().mean().item()
        print("test accuracy %.3f on %d images after %d steps of %d workers" % (acc, len(ty), args.steps,
                                                                              args.workers), flush=True)
        opt.delete_instances()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default=os.environ.get("DESCENT_URL", "http://127.0.0.1:8080"))
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--name", default="fashion-mnist-cnn")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    args.train, args.test = (60000, 10000) if not args.quick else (4000, 1000)
    if args.quick:
        args.steps = min(args.steps, 20)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=worker, args=(r, args)) for r in range(args.workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    sys.exit(max(p.exitcode for p in procs))


if __name__ == "__main__":
    main()
