#!/usr/bin/env python3
"""sparse_demo: the parameter server's own workload, end to end (make demo-sparse).

Owns the demo's run: the data (apt's package lists, sparse_features.py), the
baselines (the majority class; torch trained directly on the same features:
nn.EmbeddingBag(mode="sum", sparse=True) + a bias, torch.optim.Adagrad, the
same batches, learning rate and epochs), the descent run (descentd holds W as a
sparse tensor [2^bits, C] and b [C], sparse Adagrad, sync rounds of 4 worker
processes, sparse_worker.py), the evaluation and the report (sparse.md, .json,
.svg).  Never writes into docs/ unless told to (--out docs).  One thread, plus
one reader thread per worker's output.

    sparse_demo.py [--quick] [--out DIR] [--lists DIR] [--url URL] [--bits 24]

Without --url it starts its own daemon on a free port with a temporary data dir.
"""
import argparse
import json
import os
import queue
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "client", "python"))
import sparse_features as sf  # noqa: E402
import sparse_worker as sw  # noqa: E402

BUILD = os.environ.get("DESCENT_BUILD", "build")
DAEMON = os.path.join(ROOT, BUILD, "bin", "descentd")
WORK = os.path.join(ROOT, BUILD, "sparse-demo")
NAME = "sparse-demo"


def say(msg):
    print(msg, flush=True)


def pick_lists(arg):
    """The apt lists to read: --lists, else the system's when they have Translation-en (the long
    descriptions), else the copy make demo-sparse fetched with them, else the system's (short only)."""
    if arg:
        return arg
    own = os.path.join(WORK, "apt-lists")
    if sf.list_files(sf.SYSTEM_LISTS)[1] or not sf.list_files(own)[0]:
        return sf.SYSTEM_LISTS
    return own


# ---- the daemon ------------------------------------------------------------------------------

class Daemon:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="descent-sparse-")
        self.proc = subprocess.Popen([DAEMON, "--listen", "127.0.0.1:0", "--data-dir", self.dir,
                                      "--snapshot-interval", "0"], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            raise RuntimeError("descentd did not start: " + line)
        self.url = line.split()[-1]

    def rss(self):
        """Resident memory of the daemon, bytes."""
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self.proc.stdout.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def rows_held(c, name, tensor="W"):
    """Rows of W the daemon holds: its metric descent_rows_held{instance, tensor}."""
    want = 'descent_rows_held{instance="%s",tensor="%s"} ' % (name, tensor)
    for line in c.metrics().splitlines():
        if line.startswith(want):
            return int(line[len(want):])
    raise RuntimeError("no %s in the daemon's metrics" % want.strip())


# ---- evaluation -----------------------------------------------------------------------------

def predict(s, logits_of):
    """The predicted class of every example of one CSR subset, by a model given as logits_of(offs, flat)."""
    offs, flat, _ = s.batch(np.arange(s.n))
    return logits_of(offs, flat).argmax(axis=1)


def accuracy(s, pred):
    return float((pred == s.y).mean()) if s.n else 0.0


def descent_logits(c, name, chunk=65536):
    """logits_of for the model held by the daemon: pulls each distinct row the examples use
    (never-touched rows answer their init, zeros, and the daemon allocates nothing)."""
    def logits_of(offs, flat):
        u, inv = np.unique(flat, return_inverse=True)
        parts = [c.pull_rows(name, "W", u[i:i + chunk])[1] for i in range(0, len(u), chunk)]
        W_rows = np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, 1), np.float32)
        b = np.asarray(c.pull(name, kind="numpy")["b"], dtype=np.float32)
        return sw.forward(offs, flat, W_rows, inv, b)
    return logits_of


# ---- torch directly --------------------------------------------------------------------------

def torch_baseline(tr, te, V, C, lr, batch, epochs, every):
    """torch.optim.Adagrad on nn.EmbeddingBag(sparse=True) + bias, the same batches: accuracy, curve, speed."""
    import torch
    torch.set_num_threads(1)
    torch.manual_seed(0)
    hwm0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    emb = torch.nn.EmbeddingBag(V, C, mode="sum", sparse=True, _weight=torch.zeros(V, C))  # zeros, as descent's init
    bias = torch.nn.Parameter(torch.zeros(C))
    opt = torch.optim.Adagrad([emb.weight, bias], lr=lr)
    curve, acc_loss, acc_n, t0, n = [], 0.0, 0, time.time(), 0
    total = -(-tr.n // batch) * epochs
    for ep, step, sel in sw.batches(tr.n, batch, epochs):
        offs, flat, y = tr.batch(sel)
        z = emb(torch.from_numpy(flat.astype(np.int64)), torch.from_numpy(offs[:-1])) + bias
        loss = torch.nn.functional.cross_entropy(z, torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += len(sel)
        acc_loss += float(loss) * len(sel)
        acc_n += len(sel)
        if (step + 1) % every == 0 or step + 1 == total:
            curve.append((step + 1, acc_loss / acc_n))
            acc_loss, acc_n = 0.0, 0
    seconds = time.time() - t0

    def logits_of(offs, flat):
        with torch.no_grad():
            return (emb(torch.from_numpy(flat.astype(np.int64)), torch.from_numpy(offs[:-1])) + bias).double().numpy()
    pred = predict(te, logits_of)
    touched = int((opt.state[emb.weight]["sum"].sum(dim=1) > 0).sum())  # sums of squares: > 0 once touched
    held = (emb.weight.numel() + opt.state[emb.weight]["sum"].numel()) * 4
    hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"test_acc": accuracy(te, pred), "pred": pred, "seconds": seconds, "examples_per_s": n / seconds, "curve": curve,
            "bytes_held": held, "rss_growth": (hwm - hwm0) * 1024, "rows_touched": touched}


# ---- descent ---------------------------------------------------------------------------------

def create(c, name, C, V, lr, workers):
    if any(o["name"] == name for o in c.list()):
        c.delete(name)
    c.create(name=name, algorithm="adagrad", hyper={"lr": lr}, mode="sync", workers=workers, aggregate="sum",
             tensors=[{"name": "W", "shape": [V, C], "sparse": True, "init": "zeros"},
                      {"name": "b", "shape": [C], "init": "zeros"}])


def run_workers(cmds, total, batch, on_progress):
    """Runs the workers to the end, printing one progress line per reported step (all workers' loss)."""
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for cmd in cmds]
    q = queue.Queue()

    def reader(k, p):
        for line in p.stdout:
            if line.startswith("{"):
                q.put((k, json.loads(line)))
        q.put((k, None))
    threads = [threading.Thread(target=reader, args=(k, p), daemon=True) for k, p in enumerate(procs)]
    for t in threads:
        t.start()
    by_step, done, curve, ended = {}, [], [], 0
    while ended < len(procs):
        k, ev = q.get()
        if ev is None:
            ended += 1
            continue
        if ev["event"] == "done":
            done.append(ev)
        elif ev["event"] == "progress":
            got = by_step.setdefault(ev["step"], [])
            got.append(ev)
            if len(got) == len(procs):
                loss = sum(e["loss"] * e["examples"] for e in got) / max(1, sum(e["examples"] for e in got))
                curve.append((ev["step"], loss))
                on_progress(ev["step"], total, ev["epoch"], loss, max(e["seconds"] for e in got))
                del by_step[ev["step"]]
    for p in procs:
        p.wait()
    bad = [p for p in procs if p.returncode != 0]
    if bad:
        raise RuntimeError("worker failed: " + " ".join(bad[0].args))
    return curve, done


def descent_run(args, c, daemon, name, data_path, tr_n, C, V, every):
    """Trains instance `name` (created afresh) with the workers; speed, memory, curves."""
    create(c, name, C, V, args.lr, args.workers)
    rss0 = daemon.rss() if daemon else 0
    total = -(-tr_n // args.batch) * args.epochs
    cmds = [[sys.executable, os.path.join(HERE, "sparse_worker.py"), "--url", c.urls[0], "--name", name,
             "--rank", str(r), "--workers", str(args.workers), "--data", data_path,
             "--batch", str(args.batch), "--epochs", str(args.epochs), "--train-n", str(args.train_n),
             "--progress-every", str(every)] for r in range(args.workers)]
    t0 = time.time()

    rows_curve = []

    def progress(step, total, epoch, loss, secs):
        rows_curve.append((step, rows_held(c, name)))
        say("  step %4d/%d  epoch %d/%d  training loss %.4f  %6.0f examples/s  rows held %s" % (
            step, total, epoch + 1, args.epochs, loss, tr_n * args.epochs * step / total / max(secs, 1e-9),
            format(rows_curve[-1][1], ",")))
    curve, done = run_workers(cmds, total, args.batch, progress)
    seconds = time.time() - t0
    held = rows_held(c, name)
    rss1 = daemon.rss() if daemon else 0
    steps = c.pull(name).step
    spent = {k: 1000.0 * sum(x["spent"][k] for x in done) / len(done) / max(1, steps) for k in done[0]["spent"]}
    train_s = max(x["seconds"] for x in done)  # from each worker's first step to its last (data loaded)
    return {"seconds": train_s, "wall_seconds": seconds, "examples_per_s": sum(x["examples"] for x in done) / train_s,
            "curve": curve, "rows_curve": rows_curve,
            "ms_per_step": spent,
            "rows_held": held, "rss_before": rss0, "rss_after": rss1, "steps": steps}


# ---- the report -----------------------------------------------------------------------------

def svg_panel(out, x_off, series, title, ylabel, w=440, h=360):
    """One chart (log y) of (label, [(step, value)], colour, dashed) series at x offset x_off."""
    import math
    L, R, T, B = 62, 14, 44, 40
    xs = [x for _, c, _, _ in series for x, _ in c]
    ys = [v for _, c, _, _ in series for _, v in c if v > 0]
    x0, x1 = 0, max(xs)
    y0, y1 = math.log10(min(ys)), math.log10(max(ys))
    y0, y1 = y0 - 0.04 * (y1 - y0 or 1), y1 + 0.04 * (y1 - y0 or 1)
    sx = lambda x: x_off + L + (x - x0) / (x1 - x0 or 1) * (w - L - R)  # noqa: E731
    sy = lambda y: T + (y1 - math.log10(y)) / (y1 - y0) * (h - T - B)  # noqa: E731
    out += ['<text x="%d" y="18" font-size="13">%s</text>' % (x_off + L, title),
            '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#999"/>' % (x_off + L, h - B, x_off + w - R, h - B),
            '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#999"/>' % (x_off + L, T, x_off + L, h - B)]
    for e in range(int(math.floor(y0)), int(math.ceil(y1)) + 1):
        for m in (1, 2, 5):
            v = m * 10 ** e
            if y0 <= math.log10(v) <= y1:
                out.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#eee"/>'
                           % (x_off + L, sy(v), x_off + w - R, sy(v)))
                out.append('<text x="%d" y="%.1f" text-anchor="end">%g</text>' % (x_off + L - 4, sy(v) + 4, v))
    for k in range(6):
        x = x0 + (x1 - x0) * k / 5
        out.append('<text x="%.1f" y="%d" text-anchor="middle">%d</text>' % (sx(x), h - B + 16, x))
    out.append('<text x="%d" y="%d" text-anchor="middle">optimizer steps</text>' % (x_off + (L + w - R) // 2, h - 6))
    out.append('<text x="%d" y="%d" transform="rotate(-90 %d %d)" text-anchor="middle">%s</text>'
               % (x_off + 14, (T + h - B) // 2, x_off + 14, (T + h - B) // 2, ylabel))
    for i, (label, c, col, dashed) in enumerate(series):
        dash = ' stroke-dasharray="6,4"' if dashed else ""
        d = " ".join(("M" if k == 0 else "L") + "%.1f,%.1f" % (sx(x), sy(v)) for k, (x, v) in enumerate(c) if v > 0)
        out.append('<path d="%s" fill="none" stroke="%s" stroke-width="1.8"%s/>' % (d, col, dash))
        ly = 32 + 0 * i
        lx = x_off + L + 8 + 200 * i
        out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"%s/>' % (lx, ly, lx + 18, ly, col, dash))
        out.append('<text x="%d" y="%d">%s</text>' % (lx + 22, ly + 4, label))


def svg_plot(path, d, t, dense_bytes, row_bytes):
    """Two charts: training loss (descent and torch; they coincide), and memory held for W and
    its Adagrad state against steps (descent's rows held, torch's dense table)."""
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="900" height="360" font-family="sans-serif" '
           'font-size="11">', '<rect width="100%" height="100%" fill="white"/>']
    svg_panel(out, 0, [("descent, 4 workers", d["curve"], "#2f5fd0", False),
                       ("torch directly", t["curve"], "#d0502f", True)],
              "Training loss (the two curves coincide)", "mean cross-entropy of the last steps' batches")
    mem = [(s, r * row_bytes / 1048576.0) for s, r in d["rows_curve"]]
    svg_panel(out, 450, [("descent: rows held", mem, "#2f5fd0", False),
                         ("torch: dense table", [(0, dense_bytes / 1048576.0), (mem[-1][0], dense_bytes / 1048576.0)],
                          "#d0502f", True)],
              "Memory for W and its Adagrad state", "MiB (float32 params + state)")
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def index_slots(n):
    """Slots of the rows' hash for n rows by server/state/rows.h's rule (a power of two, load <= 3/4)."""
    cap = 64
    while n * 4 > cap * 3:
        cap *= 2
    return cap


def mib(x):
    return "%.1f MiB" % (x / 1048576.0)


def big_paragraph(r):
    b = r.get("big")
    if not b:
        return []
    return [
        "**2^%d rows.** The same training, the features hashed into 2^%d rows instead (the same keys, BLAKE2b-64" % (
            b["bits"], b["bits"]),
        "mod 2^%d, so almost no two collide), descent only: torch's dense table and its state would take %s." % (
            b["bits"], tib(b["dense_bytes"])),
        "Test accuracy %.1f%% (%.1f%% at 2^%d); %s rows held, against %s at 2^%d where colliding keys share" % (
            100 * b["test_acc"], 100 * r["descent"]["test_acc"], r["bits"], format(b["rows_held"], ","),
            format(r["descent"]["rows_held"], ","), r["bits"]),
        "a row: %s for W and its state, %.1e of the dense size; %s training examples/s." % (
            mib(b["bytes_held"]), b["bytes_held"] / b["dense_bytes"], format(int(b["examples_per_s"]), ",")),
        "",
    ]


def write_report(path, r):
    d, t = r["descent"], r["torch"]
    lines = [
        "# Sparse: hashed-feature softmax regression on apt's package lists",
        "",
        "Generated by `make demo-sparse` (`client/examples/sparse_demo.py`%s) on %s." % (
            " --quick" if r["quick"] else "", r.get("date") or time.strftime("%Y-%m-%d")),
        "",
        "**The task.** Predict a Debian binary package's `Section` from its description. The data is apt's own",
        "package lists (%d binary packages in %s); the text is the short description plus the long one%s." % (
            r["packages_total"], ", ".join(r["lists"]),
            " (from the `Translation-en` lists)" if r["have_long"] else
            " -- here only the short one: these lists have no `Translation-en`"),
        "The classes are the %d most frequent sections (%s); the %d packages of the other sections are dropped" % (
            len(r["sections"]), ", ".join("`%s` %d" % sc for sc in zip(r["sections"], r["section_counts"])),
            r["packages_total"] - r["kept"]),
        "(an \"other\" class would lump 40-odd unrelated sections together). A package is a test example when",
        "BLAKE2b-64(\"split \" + name) %% 5 == 0: %d training and %d test packages, the same on every machine." % (
            r["train_n"], r["test_n"]),
        "",
        "**Features and model.** Word unigrams and bigrams of the lower-cased text (`[a-z0-9]+`), each hashed with",
        "BLAKE2b-64 (keys `\"1 \" + w` and `\"2 \" + w1 + \" \" + w2`, little-endian, mod 2^%d): %s rows; each package is the" % (
            r["bits"], format(1 << r["bits"], ",")),
        "set of its distinct rows (%.0f on average). Logits = the sum of those rows of W [2^%d, %d] plus b [%d]; the" % (
            r["features_per_example"], r["bits"], len(r["sections"]), len(r["sections"])),
        "loss is the mean cross-entropy. W and b start at zero.",
        "",
        "**Training.** descentd holds W as a sparse tensor (`\"sparse\": true`, init zeros) and b as a dense one, with",
        "`adagrad` (lr %g, torch's defaults otherwise) in sync mode with %d workers and `\"aggregate\": \"sum\"`. Each worker" % (
            r["lr"], r["workers"]),
        "is a process (`client/examples/sparse_worker.py`, numpy): for every mini-batch of %d it takes its quarter," % r["batch"],
        "pulls the rows of W that quarter touches (`Client.pull_rows`), computes the gradient of its part of the",
        "mean loss, and pushes W's rows (`descent.Rows`) and b's gradient; the daemon sums the four pushes (the",
        "union of rows) into the whole batch's gradient and takes one sparse Adagrad step. %d epochs, %d steps." % (
            r["epochs"], d["steps"]),
        "torch, directly: `nn.EmbeddingBag(2^%d, %d, mode=\"sum\", sparse=True)` (zeros) + a bias, `torch.optim.Adagrad`" % (
            r["bits"], len(r["sections"])),
        "with the same lr, the same batches in the same order, one process, one thread.",
        "",
        "| | test accuracy | training examples/s | memory for W and its Adagrad state |",
        "| --- | --- | --- | --- |",
        "| majority class (`%s`) | %.1f%% | – | – |" % (r["majority_class"], 100 * r["majority_acc"]),
        "| torch directly (dense table, sparse gradients) | %.1f%% | %s | %s (dense: weight + `sum`) |" % (
            100 * t["test_acc"], format(int(t["examples_per_s"]), ","), mib(t["bytes_held"])),
        "| descent, %d workers, sparse tensor | **%.1f%%** | %s | %s (%s rows held, %.2f%% of the table) |" % (
            r["workers"], 100 * d["test_acc"], format(int(d["examples_per_s"]), ","), mib(d["bytes_held"]),
            format(d["rows_held"], ","), 100.0 * d["rows_held"] / (1 << r["bits"])),
        "",
        "descent lands %.2f points %s torch (the goal: within 1). Their predictions agree on %.1f%% of the test" % (
            abs(d["test_acc"] - t["test_acc"]) * 100, "above" if d["test_acc"] >= t["test_acc"] else "below",
            100 * r["agreement"]),
        "packages: they are the same computation up to float32 rounding, which Adagrad's first steps amplify",
        "(g / sqrt(g²) is ±1 for any gradient however tiny, so a summation order that flips a near-zero entry's",
        "sign moves that weight by 2·lr).",
        "",
        "**Memory.** The dense equivalent of W and its Adagrad state is 2 x 2^%d x %d float32 = %s; descent holds" % (
            r["bits"], len(r["sections"]), mib(r["dense_bytes"])),
        "the %s rows the training set touches (%.1f%% of the dense size). The daemon's resident memory" % (
            format(d["rows_held"], ","), 100.0 * d["bytes_held"] / r["dense_bytes"]),
        "grew by %s over the run (%s before the first push, %s after): the rows' blocks, their hash index" % (
            mib(d["rss_after"] - d["rss_before"]), mib(d["rss_before"]), mib(d["rss_after"])),
        "(16-byte slots at a load of at most 3/4, `server/state/rows.h`: %s slots, %s here), up to 4 MiB of" % (
            format(index_slots(d["rows_held"]), ","), mib(16 * index_slots(d["rows_held"]))),
        "a chunk not yet filled, and the daemon's buffers and pools. The rows it pulled for the evaluation",
        "(%s distinct test rows, most never trained) took no memory: rows held before and after it: %s and %s." % (
            format(r["eval_rows"], ","), format(d["rows_held"], ","), format(d["rows_held_after_eval"], ",")),
        "",
        "**Speed.** %s training examples/s through descent (4 worker processes, two requests each per step:" % (
            format(int(d["examples_per_s"]), ",")),
        "pull rows, push), against %s/s for torch in one process on its own dense table. This machine has %d" % (
            format(int(t["examples_per_s"]), ","), r["cores"]),
        "cores, shared by the daemon and the 4 workers (and by whatever else runs: the load average was %.1f at" % (
            r["loadavg"][0]),
        "the start, %.1f at the end). A worker's step, on average: pulling its rows %.1f ms," % (
            r["loadavg"][1], d["ms_per_step"]["pull"]),
        "its numpy gradient %.1f ms, the push %.1f ms (that includes waiting for the other three: the round" % (
            d["ms_per_step"]["compute"], d["ms_per_step"]["push"]),
        "closes when the last one pushes). Both speeds are measured in the same run, one after the other, so",
        "the load weighs on both, but not equally: torch's single thread gets one share of the cores, descent's",
        "five processes get five. Whole run, torch and evaluation included: %.0f s." % r["seconds"],
        "",
        ] + big_paragraph(r) + [
        "![training loss against steps for descent and torch (the curves coincide), and memory held against the dense table](sparse.svg)",
        "",
        "Reproduce: `make demo-sparse` writes a fresh report into `build/sparse-demo/`;",
        "`make demo-sparse DEMO_SPARSE_REPORT=docs` rewrites this page; `DEMO_SPARSE_ARGS=--quick` is the short run",
        "the test uses (`tests/integration/test_demo_sparse.py`).",
    ]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def big_run(args, c, daemon, lists, C, every):
    """The same training with the features hashed into 2^big_bits rows: descent only (torch's dense
    table would not fit in any machine's memory)."""
    path = os.path.join(WORK, "features-%d.npz" % args.big_bits)
    data = sf.load(path, lists, args.big_bits)
    tr, te = sf.Subset(data, "train", args.train_n), sf.Subset(data, "test")
    say("the same, hashed into 2^%d rows (descent only: a dense table and its state would be %s)" % (
        args.big_bits, tib((1 << args.big_bits) * C * 8)))
    name = NAME + "-%d" % args.big_bits
    b = descent_run(args, c, daemon, name, path, tr.n, C, 1 << args.big_bits, every)
    b["test_acc"] = accuracy(te, predict(te, descent_logits(c, name)))
    b["bits"] = args.big_bits
    b["train_rows"] = int(len(np.unique(tr.ids)))
    b["bytes_held"] = b["rows_held"] * C * 8
    b["dense_bytes"] = (1 << args.big_bits) * C * 8
    c.delete(name)
    say("  test accuracy %.2f%%, %.0f examples/s, %s rows held (%s)" % (
        100 * b["test_acc"], b["examples_per_s"], format(b["rows_held"], ","), mib(b["bytes_held"])))
    return b


def tib(x):
    return "%.0f TiB" % (x / 2.0 ** 40)


def finish(out_dir, res):
    """sparse.md and sparse.svg from the results."""
    C = len(res["sections"])
    svg_plot(os.path.join(out_dir, "sparse.svg"), res["descent"], res["torch"], res["dense_bytes"], C * 8)
    write_report(os.path.join(out_dir, "sparse.md"), res)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a shortened run (a subset, 2 epochs), for the test")
    ap.add_argument("--out", help="directory for sparse.md, .json and .svg (default: %s)" % WORK)
    ap.add_argument("--lists", help="apt lists directory (default: the system's, or build/sparse-demo/apt-lists)")
    ap.add_argument("--url", default=os.environ.get("DESCENT_URL"))
    ap.add_argument("--bits", type=int, default=24)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--epochs", type=int, default=0)
    ap.add_argument("--train-n", type=int, default=0)
    ap.add_argument("--big-bits", type=int, default=-1,
                    help="then the same training hashed into 2^N rows, descent only (default 40; --quick: none)")
    ap.add_argument("--rewrite-report", action="store_true",
                    help="rewrite sparse.md and sparse.svg from the sparse.json in --out (no training)")
    args = ap.parse_args()
    if args.rewrite_report:
        with open(os.path.join(args.out or WORK, "sparse.json")) as f:
            res = json.load(f)
        finish(args.out or WORK, res)
        return
    args.epochs = args.epochs or (2 if args.quick else 5)
    args.big_bits = (0 if args.quick else 40) if args.big_bits < 0 else args.big_bits
    args.train_n = args.train_n or (6000 if args.quick else 0)
    out_dir = args.out or WORK
    os.makedirs(out_dir, exist_ok=True)
    os.makedirs(WORK, exist_ok=True)
    from descent import Client
    t_all = time.time()
    load0 = os.getloadavg()[0]
    lists = pick_lists(args.lists)
    data_path = os.path.join(WORK, "features-%d.npz" % args.bits)
    say("sparse demo: reading apt's package lists in %s" % lists)
    data = sf.load(data_path, lists, args.bits)
    tr, te = sf.Subset(data, "train", args.train_n), sf.Subset(data, "test")
    C, V = len(data["sections"]), 1 << args.bits
    say("  %d packages, %d in the %d most frequent sections; %d training, %d test; %s long descriptions" % (
        int(data["packages_total"]), len(data["y"]), C, tr.n, te.n, "with" if data["have_long"] else "WITHOUT"))
    total = -(-tr.n // args.batch) * args.epochs
    every = max(1, total // 25)
    majority = int(np.bincount(tr.y, minlength=C).argmax())
    maj_acc = float((te.y == majority).mean())
    say("majority class (%s): test accuracy %.1f%%" % (data["sections"][majority], 100 * maj_acc))
    say("torch directly: EmbeddingBag(2^%d, %d, sparse=True) + bias, Adagrad lr %g, %d epochs of %d" % (
        args.bits, C, args.lr, args.epochs, args.batch))
    t = torch_baseline(tr, te, V, C, args.lr, args.batch, args.epochs, every)
    say("  test accuracy %.2f%%, %.0f examples/s" % (100 * t["test_acc"], t["examples_per_s"]))
    daemon = None if args.url else Daemon()
    url = args.url or daemon.url
    try:
        c = Client(url)
        say("descent at %s: W sparse [2^%d, %d], adagrad lr %g, sync, %d worker processes" % (
            url, args.bits, C, args.lr, args.workers))
        d = descent_run(args, c, daemon, NAME, data_path, tr.n, C, V, every)
        pred = predict(te, descent_logits(c, NAME))
        d["test_acc"] = accuracy(te, pred)
        d["rows_held_after_eval"] = rows_held(c, NAME)
        agree = float((pred == t.pop("pred")).mean())
        d["bytes_held"] = d["rows_held"] * C * 4 * 2
        say("  test accuracy %.2f%% (torch %.2f%%), %.0f examples/s, %s rows held (%s; dense %s)" % (
            100 * d["test_acc"], 100 * t["test_acc"], d["examples_per_s"], format(d["rows_held"], ","),
            mib(d["bytes_held"]), mib(V * C * 8)))
        c.delete(NAME)
        big = big_run(args, c, daemon, lists, C, every) if args.big_bits else None
    finally:
        if daemon:
            daemon.stop()
    train_rows = int(len(np.unique(tr.ids)))
    res = {"quick": args.quick, "lists": sorted(set(os.path.basename(p).split("_dists_")[1].split("_")[0]
                                                     for p in sf.list_files(lists)[0])),
           "have_long": bool(data["have_long"]), "packages_total": int(data["packages_total"]),
           "kept": int(len(data["y"])), "sections": [str(s) for s in data["sections"]],
           "section_counts": [int(x) for x in data["section_counts"]], "train_n": tr.n, "test_n": te.n,
           "bits": args.bits, "lr": args.lr, "batch": args.batch, "epochs": args.epochs, "workers": args.workers,
           "features_per_example": float(np.diff(tr.indptr).mean()), "train_rows": train_rows,
           "eval_rows": int(len(np.unique(te.ids))), "majority_class": str(data["sections"][majority]),
           "majority_acc": maj_acc, "torch": t, "descent": d, "agreement": agree, "dense_bytes": V * C * 8,
           "big": big,
           "seconds": time.time() - t_all, "loadavg": [load0, os.getloadavg()[0]], "cores": os.cpu_count(),
           "date": time.strftime("%Y-%m-%d")}
    with open(os.path.join(out_dir, "sparse.json"), "w") as f:
        json.dump(res, f, indent=1)
    finish(out_dir, res)
    say("sparse demo: done in %.0f s; report in %s" % (res["seconds"], os.path.join(out_dir, "sparse.md")))


if __name__ == "__main__":
    main()
