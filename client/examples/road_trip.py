#!/usr/bin/env python3
"""road_trip: the seed document's road trip, for real, through descent.

The seed document is "Optimizers: a deep dive into the evolution of optimization
algorithms in deep learning" (by neuralnets), the tutorial descent grew from (not
part of this repository): it invents each optimizer from the previous one's
problem on a linear classifier.  This script trains the seed's linear classifier (multiclass SVM loss, bias folded into W,
10 x 785) on Debian's Fashion-MNIST with every approach of the seed — random
search, numeric-gradient descent with a gradient check, full-batch gradient
descent, mini-batch SGD, SGD+momentum, Nesterov, AdaGrad, RMSProp, Adam —
each optimizer held by descentd and fed by 4 worker processes (C, with
libdescent) in sync mode; Adam once more with one of its workers written in
Python (the stdlib client).  Writes road-trip.md, road-trip.json and
road-trip.svg into the build directory (build/demo/), or into --out DIR:
`make demo DEMO_REPORT=docs` is how the committed docs/road-trip.* are
rewritten, and only then.

    python3 client/examples/road_trip.py [--quick] [--out DIR] [--url URL]

Without --url (or DESCENT_URL) it starts its own daemon on a free port with
a temporary data dir.  --quick is the shortened run the test uses (a subset,
fewer steps).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("DESCENT_BUILD", "build")
WORKER = os.path.join(ROOT, BUILD, "bin", "fmnist_worker")
DAEMON = os.path.join(ROOT, BUILD, "bin", "descentd")
PY_WORKER = os.path.join(ROOT, "client", "examples", "fmnist_worker.py")
DATA = "/usr/share/datasets/fashion-mnist"

# What torch.optim gets directly on the same loss, for the table's last column: PyTorch 1.13
# (Debian python3-torch), one process, one thread, W = 1e-4 N(0, 1), mini-batches of 256 by a
# random permutation each epoch, 5 epochs (full batch: 117 steps over the 60,000 images; random
# search: 1000 candidates 1e-3 N(0, 1), each scored on the same 2000 training images).
TORCH = {
    "random search": (8.95, 18.4), "gradient descent (full batch)": (1.17, 78.0), "SGD": (0.70, 81.8),
    "SGD + momentum": (0.57, 83.6), "Nesterov": (0.58, 83.5), "AdaGrad": (0.65, 82.6), "RMSProp": (0.59, 83.3),
    "Adam": (0.61, 83.4),
}


def http(url, method="GET", body=None):
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        raise RuntimeError("%s %s: %s %s" % (method, url, e.code, e.read().decode()[:300]))


class Daemon:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="descent-demo-")
        self.proc = subprocess.Popen([DAEMON, "--listen", "127.0.0.1:0", "--data-dir", self.dir,
                                      "--snapshot-interval", "0"], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            raise RuntimeError("descentd did not start: " + line)
        self.url = line.split()[-1]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self.proc.stdout.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def create(url, name, algorithm, hyper, mode="sync", workers=4):
    http(url + "/v1/optimizers/" + name, "DELETE") if exists(url, name) else None
    spec = {"name": name, "algorithm": algorithm, "hyper": hyper,
            "tensors": [{"name": "W", "shape": [10, 785], "init": {"normal": {"std": 0.0001, "seed": 42}}}]}
    if mode == "sync":
        spec.update(mode="sync", workers=workers)
    http(url + "/v1/optimizers", "POST", spec)


def exists(url, name):
    return any(o["name"] == name for o in http(url + "/v1/optimizers")["optimizers"])


def run_workers(cmds):
    """Runs worker processes to the end; returns the JSON events they printed."""
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, text=True) for c in cmds]
    events = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            for q in procs:
                if q.poll() is None:
                    q.kill()
            raise RuntimeError("worker failed: " + " ".join(p.args))
        events += [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    return events


def worker_cmd(mode, url, name, **kw):
    cmd = [WORKER, mode, "--url", url, "--name", name]
    for k, v in kw.items():
        cmd += ["--" + k.replace("_", "-"), str(v)]
    return cmd


def evaluate(url, name, train_n):
    ev = run_workers([worker_cmd("eval", url, name, train_n=train_n)])
    return [e for e in ev if e["event"] == "eval"][0]


def svg_plot(runs, path, title):
    """Loss against step (log y) for every run with a curve, as a small SVG."""
    W, H, L, R, T, B = 720, 420, 60, 180, 30, 40
    series = [(r["approach"], r["curve"]) for r in runs if len(r.get("curve", [])) > 1]
    xs = [s for _, c in series for s, _ in c]
    ys = [l for _, c in series for _, l in c if l > 0]
    import math
    x0, x1 = 0, max(xs) if xs else 1
    y0, y1 = math.log10(min(ys)), math.log10(max(ys))
    if y1 - y0 < 1e-9:
        y1 = y0 + 1
    sx = lambda x: L + (x - x0) / (x1 - x0 or 1) * (W - L - R)
    sy = lambda y: T + (y1 - math.log10(y)) / (y1 - y0) * (H - T - B)
    colors = ["#2f5fd0", "#d0502f", "#2f9d5a", "#9b3fc4", "#c49a1f", "#1fa6b8", "#666666", "#b8336a", "#000000"]
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">' % (W, H),
           '<rect width="100%" height="100%" fill="white"/>',
           '<text x="%d" y="18" font-size="13">%s</text>' % (L, title),
           '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#999"/>' % (L, H - B, W - R, H - B),
           '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#999"/>' % (L, T, L, H - B)]
    for e in range(int(math.floor(y0)), int(math.ceil(y1)) + 1):
        for m in (1, 2, 5):
            v = m * 10 ** e
            if y0 <= math.log10(v) <= y1:
                out.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#eee"/>' % (L, sy(v), W - R, sy(v)))
                out.append('<text x="%d" y="%.1f" text-anchor="end">%g</text>' % (L - 4, sy(v) + 4, v))
    for k in range(6):
        x = x0 + (x1 - x0) * k / 5
        out.append('<text x="%.1f" y="%d" text-anchor="middle">%d</text>' % (sx(x), H - B + 16, x))
    out.append('<text x="%d" y="%d" text-anchor="middle">optimizer steps</text>' % ((L + W - R) // 2, H - 6))
    out.append('<text x="14" y="%d" transform="rotate(-90 14 %d)" text-anchor="middle">training loss (5000 images)</text>'
               % ((T + H - B) // 2, (T + H - B) // 2))
    for i, (name, c) in enumerate(series):
        col = colors[i % len(colors)]
        d = " ".join(("M" if k == 0 else "L") + "%.1f,%.1f" % (sx(s), sy(l)) for k, (s, l) in enumerate(c) if l > 0)
        out.append('<path d="%s" fill="none" stroke="%s" stroke-width="1.6"/>' % (d, col))
        ly = T + 14 * i
        out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"/>' % (W - R + 10, ly, W - R + 28, ly, col))
        out.append('<text x="%d" y="%d">%s</text>' % (W - R + 32, ly + 4, name))
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def default_out_dir():
    """Where the report goes without --out: the build directory, never the committed docs/."""
    return os.path.join(ROOT, BUILD, "demo")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a shortened run (subset, few steps), for tests")
    ap.add_argument("--url", default=os.environ.get("DESCENT_URL"))
    ap.add_argument("--out", help="directory for road-trip.md, .json and .svg (default: %s)" % default_out_dir())
    ap.add_argument("--workers", type=int, default=4)
    args = ap.parse_args()
    out_dir = args.out or default_out_dir()
    os.makedirs(out_dir, exist_ok=True)
    if not os.path.exists(os.path.join(DATA, "train-images-idx3-ubyte.gz")):
        sys.exit("road_trip: Fashion-MNIST is missing: apt-get install dataset-fashion-mnist (make demo does it)")
    q = args.quick
    train_n = 12000 if q else 60000
    epochs = 2 if q else 5
    full_steps = 15 if q else 117
    candidates = 200 if q else 1000
    numeric_n, numeric_steps = (20, 1) if q else (100, 2)
    R = args.workers
    daemon = None
    url = args.url
    if not url:
        daemon = Daemon()
        url = daemon.url
    print("road trip: descentd at %s, %s run, %d workers per approach" % (url, "quick" if q else "full", R), flush=True)
    runs = []
    t_all = time.time()
    try:
        # Approach 1: random search
        print("[1/10] random search: %d candidates 1e-3 N(0,1), each scored on 2000 training images" % candidates, flush=True)
        create(url, "rt-random", "random_search", {"scale": 0.001, "center": "zero", "seed": 1}, mode="async")
        t = time.time()
        run_workers([worker_cmd("random", url, "rt-random", rank=r, workers=R, candidates=candidates, score_n=2000)
                     for r in range(R)])
        ev = evaluate(url, "rt-random", train_n)
        runs.append(dict(approach="random search", hyper="%d candidates, scale 1e-3" % candidates, steps=ev["step"],
                         seconds=time.time() - t, **ev))
        # Approaches 2-3: numeric gradient, gradient check
        print("[2/10] numeric-gradient descent on %d images (central differences) and the gradient check" % numeric_n, flush=True)
        create(url, "rt-numeric", "sgd", {"lr": 0.1}, mode="async")
        t = time.time()
        nev = [e for e in run_workers([worker_cmd("numeric", url, "rt-numeric", numeric_n=numeric_n, steps=numeric_steps)])
               if e["event"] == "numeric"][0]
        ev = evaluate(url, "rt-numeric", train_n)
        runs.append(dict(approach="numeric-gradient descent", hyper="lr 0.1, %d images, %d steps" % (numeric_n, numeric_steps),
                         steps=ev["step"], seconds=time.time() - t, numeric=nev, **ev))
        print("      gradient check: relative error %.3g (float64); numeric gradient %.2f s vs analytic %.5f s (%.0fx)"
              % (nev["gradient_check"], nev["numeric_seconds"], nev["analytic_seconds"],
                 nev["numeric_seconds"] / max(nev["analytic_seconds"], 1e-9)), flush=True)
        # Approach 4: full-batch gradient descent
        print("[3/10] full-batch gradient descent: %d steps over %d images" % (full_steps, train_n), flush=True)
        create(url, "rt-gd", "sgd", {"lr": 0.1}, workers=R)
        t = time.time()
        ev_w = run_workers([worker_cmd("train", url, "rt-gd", rank=r, workers=R, batch=0, steps=full_steps,
                                       train_n=train_n, eval_every=max(1, full_steps // 20)) for r in range(R)])
        ev = evaluate(url, "rt-gd", train_n)
        runs.append(dict(approach="gradient descent (full batch)", hyper="lr 0.1", steps=ev["step"], seconds=time.time() - t,
                         curve=[(e["step"], e["loss"]) for e in ev_w if e["event"] == "curve"], **ev))
        # Approaches 5-10: mini-batch methods
        mini = [("SGD", "sgd", {"lr": 0.01}, "lr 0.01"),
                ("SGD + momentum", "momentum", {"lr": 0.01, "momentum": 0.9}, "lr 0.01, momentum 0.9"),
                ("Nesterov", "nesterov", {"lr": 0.01, "momentum": 0.9}, "lr 0.01, momentum 0.9"),
                ("AdaGrad", "adagrad", {"lr": 0.01}, "lr 0.01"),
                ("RMSProp", "rmsprop", {"lr": 0.001}, "lr 0.001"),
                ("Adam", "adam", {"lr": 0.001}, "lr 0.001")]
        steps_per_epoch = train_n // 256
        for k, (label, alg, hyper, htext) in enumerate(mini):
            name = "rt-" + alg
            print("[%d/10] %s: %d epochs of mini-batches of 256 (%d steps)" % (k + 4, label, epochs, epochs * steps_per_epoch),
                  flush=True)
            create(url, name, alg, hyper, workers=R)
            t = time.time()
            ev_w = run_workers([worker_cmd("train", url, name, rank=r, workers=R, batch=256, epochs=epochs,
                                           train_n=train_n, eval_every=max(1, steps_per_epoch // 6)) for r in range(R)])
            ev = evaluate(url, name, train_n)
            runs.append(dict(approach=label, hyper=htext + ", batch 256, %d epochs" % epochs, steps=ev["step"],
                             seconds=time.time() - t, curve=[(e["step"], e["loss"]) for e in ev_w if e["event"] == "curve"],
                             **ev))
            print("      %s: training loss %.3f, test accuracy %.1f%%" % (label, ev["train_loss"], 100 * ev["test_acc"]),
                  flush=True)
        # The Python twin: Adam again, one of the workers in Python.
        if os.path.exists(PY_WORKER):
            py_epochs = 1
            print("[10/10] Adam with a Python worker among the C ones (%d epoch)" % py_epochs, flush=True)
            create(url, "rt-adam-python", "adam", {"lr": 0.001}, workers=R)
            t = time.time()
            cmds = [[sys.executable, PY_WORKER, "--url", url, "--name", "rt-adam-python", "--rank", "0", "--workers", str(R),
                     "--epochs", str(py_epochs), "--train-n", str(train_n)]]
            cmds += [worker_cmd("train", url, "rt-adam-python", rank=r, workers=R, batch=256, epochs=py_epochs,
                                train_n=train_n) for r in range(1, R)]
            run_workers(cmds)
            ev = evaluate(url, "rt-adam-python", train_n)
            runs.append(dict(approach="Adam, one worker in Python", hyper="lr 0.001, batch 256, %d epoch" % py_epochs,
                             steps=ev["step"], seconds=time.time() - t, **ev))
    finally:
        if daemon:
            daemon.stop()
    total = time.time() - t_all
    with open(os.path.join(out_dir, "road-trip.json"), "w") as f:
        json.dump({"quick": q, "train_images": train_n, "seconds": total, "runs": runs}, f, indent=1)
    svg_plot(runs, os.path.join(out_dir, "road-trip.svg"),
             "The optimizers' road trip through descent: training loss against steps")
    write_report(os.path.join(out_dir, "road-trip.md"), runs, q, train_n, total)
    print("road trip: done in %.0f s; report in %s" % (total, os.path.join(out_dir, "road-trip.md")), flush=True)


def write_report(path, runs, quick, train_n, total):
    num = [r for r in runs if r["approach"] == "numeric-gradient descent"][0]["numeric"]
    lines = [
        "# The seed's road trip, trained through descent",
        "",
        "Generated by `make demo` (`client/examples/road_trip.py`%s) on %s: the seed's multiclass SVM" %
        (" --quick" if quick else "", time.strftime("%Y-%m-%d")),
        "(mean hinge loss with margin 1 plus 1e-4·ΣW², scores s = W x, the bias folded into W, 10 x 785, pixels in [0, 1])",
        "on Debian's Fashion-MNIST: %d training images, the 10,000 test images. Every optimizer runs inside descentd;" % train_n,
        "4 worker processes (C, libdescent, binary bodies) compute the loss and gradient on their quarter of each",
        "mini-batch of 256 and push it in sync mode, so each step is the gradient of the whole batch. W starts at",
        "1e-4·N(0, 1) (the daemon's seeded init). Whole run: %.0f s on this 2-core machine." % total,
        "",
        "The seed document is \"Optimizers: a deep dive into the evolution of optimization algorithms in deep learning\"",
        "(by neuralnets), the tutorial descent grew from; it is not part of this repository. It invents each optimizer",
        "from the previous one's problem — random search, numeric and analytic gradients, gradient descent, SGD,",
        "momentum, Nesterov, AdaGrad, RMSProp, Adam — on a linear classifier like this one (Approaches 1 to 10).",
        "",
        "| approach | hyperparameters | steps | final training loss | test accuracy | wall time | torch.optim directly: loss / accuracy |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        ref = TORCH.get(r["approach"])
        lines.append("| %s | %s | %d | %.3f | %.1f%% | %.1f s | %s |" % (
            r["approach"], r["hyper"], r["steps"], r["train_loss"], 100 * r["test_acc"], r["seconds"],
            "%.2f / %.1f%%" % ref if ref else "–"))
    lines += [
        "",
        "![training loss against steps for every approach](road-trip.svg)",
        "",
        "## What the seed said, and what we measured",
        "",
        "- **Random search** (Approach 1): the seed saw about 16%% accuracy from random search on CIFAR-10; here %.1f%%" %
        (100 * runs[0]["test_acc"]) + " on Fashion-MNIST — better than chance (10%), far below every gradient method.",
        "- **Numeric gradient** (Approach 2): one gradient by central differences on %d images took %.2f s against %.5f s for" %
        (num["images"], num["numeric_seconds"], num["analytic_seconds"]) +
        " the analytic one (%.0fx): 2 x 7850 loss evaluations per step, which is why the seed calls it too slow." %
        (num["numeric_seconds"] / max(num["analytic_seconds"], 1e-9)),
        "- **Gradient check** (the seed's tip): the analytic gradient against the numeric one (central differences,",
        "  h = 1e-5), in float64, at the starting point: relative error ||a - n|| / max(||a||, ||n||) = %.2g, and %.2g for" %
        (num["gradient_check"], num["gradient_check_elementwise"]),
        "  the worst single parameter among the %d whose gradient is at least 1e-3 of the largest. Differences of a" %
        num["elements_checked"],
        "  loss near 9 carry about 1e-10 of rounding noise even in float64, so parameters fed only by always-black pixels",
        "  (true gradient 2e-4·W, about 1e-8) cannot be checked one by one; in float32 that noise is about 1e-3 of a",
        "  typical gradient, which is why the check is done in float64.",
        "- **Gradient descent to Adam** (Approaches 4-10): linear classifiers reach about 84% on Fashion-MNIST in its",
        "  authors' benchmark; the table's last column is torch.optim run directly with the same loss, hyperparameters and",
        "  budget (PyTorch 1.13 in one process and one thread; the figures are in `client/examples/road_trip.py`);",
        "  descent lands within about a point of it.",
        "",
        "Reproduce: `make demo` (about a minute here on an idle machine; several on a busy one) writes a fresh report",
        "into `build/demo/`; `make demo DEMO_REPORT=docs` rewrites this page. `make demo DEMO_ARGS=--quick` is the",
        "shortened run the tests use.",
    ]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
