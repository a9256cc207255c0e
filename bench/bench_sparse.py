#!/usr/bin/env python3
"""bench_sparse: the torch column of the sparse benchmark (issue 15).

torch.optim.SparseAdam and torch.optim.Adagrad stepping a sparse gradient
locally, as bench_sparse (C) steps the daemon: an nn.Embedding-shaped table,
4096 uniformly random rows per step (repeats left in, uncoalesced, as
nn.Embedding(sparse=True) produces them).  Times opt.step() alone (the
gradient is already set), best and median of --steps after two warm-up
steps (the first allocates the dense state), with torch's default threads
and with one thread.

Tables: 10^6 x 64 ("t1m64") and, for the 2^40 x 16 hashed table a local
torch cannot hold (2^40 * 16 * 4 bytes = 64 TiB dense, and torch's state is
dense too), a 10^6 x 16 table: the same rows per step, remapped to a table
of the rows touched ("h40d16"; a stand-in that favours torch).

Writes "key<TAB>value" lines to --out; without torch, one line and exit 0.
Each (table, threads) runs in its own process so memory is returned.

--serve: the co-process bench_sparse (C) starts with --torch, so that torch's
step and the daemon's round trip are timed in the same rounds (the machine is
shared and noisy; only figures taken side by side compare).  Reads commands
on stdin, one a line, and answers one line each on stdout:
  table LABEL V D      a fresh V x D table and optimizer LABEL
                       (sparse_adam, adagrad); answers "ok"
  step T               one opt.step() on T threads (0: every core) with a new
                       4096-row sparse gradient; answers its seconds
"""
import argparse
import json
import os
import subprocess
import sys
import time

TABLES = [("t1m64", 1000000, 64), ("h40d16", 1000000, 16)]
ALGS = [("sparse_adam", "SparseAdam", {"lr": 0.01}), ("adagrad", "Adagrad", {"lr": 0.01})]
K = 4096


def child(args):
    import torch

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    V, D = args.V, args.D
    out = {}
    gen = torch.Generator().manual_seed(1)
    for label, ctor, kw in ALGS:
        w = torch.nn.Parameter(torch.randn(V, D, generator=gen) * 0.01)
        opt = getattr(torch.optim, ctor)([w], **kw)
        vals = torch.rand(K, D, generator=gen) * 0.02 - 0.01
        times = []
        for i in range(args.steps + 2):
            idx = torch.randint(V, (1, K), generator=gen)
            w.grad = torch.sparse_coo_tensor(idx, vals, (V, D))
            t0 = time.perf_counter()
            opt.step()
            t = time.perf_counter() - t0
            if i >= 2:
                times.append(t)
        times.sort()
        out[label] = [times[0], times[len(times) // 2]]
        del opt, w
    out["threads"] = torch.get_num_threads()
    print(json.dumps(out))


def serve():
    import torch

    gen = torch.Generator().manual_seed(1)
    w = opt = vals = None
    V = D = 0
    ctors = {label: (ctor, kw) for label, ctor, kw in ALGS}
    allcores = os.cpu_count() or 1
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "table":
            w = opt = None
            V, D = int(cmd[2]), int(cmd[3])
            ctor, kw = ctors[cmd[1]]
            w = torch.nn.Parameter(torch.randn(V, D, generator=gen) * 0.01)
            opt = getattr(torch.optim, ctor)([w], **kw)
            vals = torch.rand(K, D, generator=gen) * 0.02 - 0.01
            for _ in range(2):  # the first step allocates the dense state
                w.grad = torch.sparse_coo_tensor(torch.randint(V, (1, K), generator=gen), vals, (V, D))
                opt.step()
            print("ok", flush=True)
        elif cmd[0] == "step":
            torch.set_num_threads(int(cmd[1]) or allcores)
            w.grad = torch.sparse_coo_tensor(torch.randint(V, (1, K), generator=gen), vals, (V, D))
            t0 = time.perf_counter()
            opt.step()
            print("%.9f" % (time.perf_counter() - t0), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--serve", action="store_true")
    ap.add_argument("--V", type=int, default=0)
    ap.add_argument("--D", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--out", default=os.environ.get("DESCENT_BENCH_OUT"))
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    if args.serve:
        serve()
        return
    try:
        import torch
    except ImportError:
        print("torch (sparse): not installed (apt-get install python3-torch); column skipped")
        return
    out = open(args.out, "a") if args.out else None
    print("torch %s, local sparse step (opt.step() with a %d-row sparse gradient set), best / median of %d "
          "steps, ms" % (torch.__version__, K, args.steps))
    print("  %-7s %-11s %10s %16s %16s" % ("table", "algorithm", "V x D", "all cores", "1 thread"))
    for table, V, D in TABLES:
        res = {}
        for threads in (0, 1):
            cmd = [sys.executable, os.path.abspath(__file__), "--child", "--V", str(V), "--D", str(D),
                   "--threads", str(threads), "--steps", str(args.steps)]
            r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            if r.returncode != 0:
                sys.stderr.write(r.stderr)
                continue
            res[threads] = json.loads(r.stdout.strip().splitlines()[-1])
        for label, _, _ in ALGS:
            cells = []
            best = None
            for threads in (0, 1):
                v = res.get(threads, {}).get(label)
                cells.append("%7.3f / %6.3f" % (v[0] * 1e3, v[1] * 1e3) if v else "-")
                if v:
                    best = v if best is None or v[0] < best[0] else best
                    if out:
                        tag = "t1" if threads else "tall"
                        out.write("torchsp.%s.%s.%s.ms\t%.6g\n" % (table, label, tag, v[0] * 1e3))
                        out.write("torchsp.%s.%s.%s.med_ms\t%.6g\n" % (table, label, tag, v[1] * 1e3))
            if best and out:
                out.write("torchsp.%s.%s.ms\t%.6g\n" % (table, label, best[0] * 1e3))
                out.write("torchsp.%s.%s.med_ms\t%.6g\n" % (table, label, best[1] * 1e3))
            print("  %-7s %-11s %10s %16s %16s" % (table, label, "%dx%d" % (V, D), *cells))
        if 0 in res and out:
            out.write("torchsp.threads\t%d\n" % res[0].get("threads", 0))
    if out:
        out.write("torchsp.version\t%s\n" % torch.__version__)
        out.close()


if __name__ == "__main__":
    main()
