#!/usr/bin/env python3
"""bench_torch: the torch.optim column of `make bench-kernels`.

Times one optimizer.step() of torch.optim on n float32 parameters (default
10^7), one thread, for the same nine algorithm settings as bench_kernels, in
three processes per setting of `foreach` (off, on):

  tuned    glibc's malloc told to keep freed memory (MALLOC_MMAP_MAX_=0,
           MALLOC_TRIM_THRESHOLD_ and MALLOC_TOP_PAD_ large), so the
           temporaries torch allocates on every step reuse touched pages;
  default  the process as Python starts it: every step's temporaries are
           fresh mmaps, and their first-touch page faults dominate.

Writes "key<TAB>value" lines to --out (the results file bench_report reads)
and a table to stdout.  Without torch it prints one line and exits 0, so
`make bench` skips the column cleanly.  --sweep FILE adds Adam (tuned, best
foreach) against size for the plot.
"""
import argparse
import json
import os
import subprocess
import sys
import time

CASES = [
    # label, constructor, keyword arguments (torch's defaults otherwise)
    ("sgd", "SGD", {"lr": 1e-3}),
    ("momentum", "SGD", {"lr": 1e-3, "momentum": 0.9}),
    ("nesterov", "SGD", {"lr": 1e-3, "momentum": 0.9, "nesterov": True}),
    ("adagrad", "Adagrad", {}),
    ("rmsprop", "RMSprop", {}),
    ("rmsprop_centered", "RMSprop", {"centered": True}),
    ("adam", "Adam", {}),
    ("adam_amsgrad", "Adam", {"amsgrad": True}),
    ("adamw", "AdamW", {}),
]

TUNED_ENV = {
    "MALLOC_MMAP_MAX_": "0",                 # big blocks from the heap, not fresh mmaps
    "MALLOC_TRIM_THRESHOLD_": "68719476736",  # never give the heap's top back
    "MALLOC_TOP_PAD_": "268435456",
    "MALLOC_ARENA_MAX": "1",
}
MALLOC_VARS = list(TUNED_ENV)


def child(args):
    import torch

    torch.set_num_threads(1)
    foreach = bool(args.foreach)
    out = {}
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    labels = args.algs.split(",")
    for n in sizes:
        gen = torch.Generator().manual_seed(1)
        for label, ctor, kw in CASES:
            if label not in labels:
                continue
            p = torch.rand(n, generator=gen, dtype=torch.float32) * 2 - 1
            p.requires_grad_(True)
            p.grad = (torch.rand(n, generator=gen, dtype=torch.float32) - 0.5)
            opt = getattr(torch.optim, ctor)([p], foreach=foreach, **kw)
            opt.step()  # the first step allocates the state
            opt.step()
            reps = max(1, min(1000, int(2e6 // n)))  # small sizes: several steps per timing
            best = float("inf")
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                for _ in range(reps):
                    opt.step()
                best = min(best, (time.perf_counter() - t0) / reps)
            out["%s/%d" % (label, n)] = best * 1e9 / n
            del opt, p
    print(json.dumps(out))


def run_child(mode, foreach, sizes, algs, rounds):
    env = {k: v for k, v in os.environ.items() if k not in MALLOC_VARS}
    env["OMP_NUM_THREADS"] = "1"
    if mode == "tuned":
        env.update(TUNED_ENV)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--foreach", str(int(foreach)),
           "--sizes", sizes, "--algs", algs, "--rounds", str(rounds)]
    r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stderr)
        return {}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--foreach", type=int, default=0)
    ap.add_argument("--sizes", default="1e7")
    ap.add_argument("--algs", default=",".join(c[0] for c in CASES))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--default-rounds", type=int, default=2)
    ap.add_argument("--n", default="1e7")
    ap.add_argument("--out", default=os.environ.get("DESCENT_BENCH_OUT"))
    ap.add_argument("--sweep")
    ap.add_argument("--no-default", action="store_true", help="skip the untuned process")
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    try:
        import torch
    except ImportError:
        print("torch: not installed (apt-get install python3-torch); column skipped")
        return
    n = int(float(args.n))
    print("torch %s, one thread (torch.set_num_threads(1)), n=%d, ns/element, best of %d steps"
          % (torch.__version__, n, args.rounds))
    res = {}
    modes = [("tuned", args.rounds)] + ([] if args.no_default else [("default", args.default_rounds)])
    for mode, rounds in modes:
        for fe in (0, 1):
            r = run_child(mode, fe, str(n), args.algs, rounds)
            for key, v in r.items():
                label = key.split("/")[0]
                res[(label, mode, fe)] = v
    out = open(args.out, "a") if args.out else None
    if out:
        out.write("torch.version\t%s\n" % torch.__version__.replace("\t", " "))
    head = "  %-17s %12s %12s %14s %14s" % ("algorithm", "tuned", "tuned+fe", "default", "default+fe")
    print(head)
    for label, _, _ in CASES:
        cells = []
        for mode in ("tuned", "default"):
            for fe in (0, 1):
                v = res.get((label, mode, fe))
                cells.append("%.3f" % v if v is not None else "-")
                if v is not None and out:
                    out.write("torch.%s.%s.fe%d\t%.6g\n" % (label, mode, fe, v))
        print("  %-17s %12s %12s %14s %14s" % (label, *cells))
    if args.sweep:
        sizes = "1e3,3e3,1e4,3e4,1e5,3e5,1e6,3e6,1e7,3e7,1e8"
        best = {}
        for fe in (0, 1):
            r = run_child("tuned", fe, sizes, "adam", 3)
            for key, v in r.items():
                sz = int(key.split("/")[1])
                best[sz] = min(best.get(sz, float("inf")), v)
        with open(args.sweep, "w") as f:
            f.write("# n torch_adam_tuned_GBps torch_adam_tuned_ns\n")
            for sz in sorted(best):
                f.write("%d %.3f %.4f\n" % (sz, 28.0 / best[sz], best[sz]))
    if out:
        out.close()


if __name__ == "__main__":
    main()
