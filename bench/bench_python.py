#!/usr/bin/python3
"""bench_python: the Python package against raw http.client and local torch.

    /usr/bin/python3 bench/bench_python.py [--quick]

Starts build/bin/descentd on a free port and measures, on loopback:
  * a push plus pull of 1e6 and 1e7 float32 through descent.Client with
    numpy arrays and torch tensors (out= buffers), against raw http.client
    sending and receiving the same bytes (goal: <= 1.2x);
  * descent.torch.Adam.step() on a 1e7-parameter model against
    torch.optim.Adam.step() locally (goal: within 2x);
  * the worker's resident memory (max RSS) during those steps, in copies of
    the parameters.
Prints one line per measurement (median of the runs)."""
import http.client
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "client", "python"))
import numpy as np  # noqa: E402
import torch  # noqa: E402

import descent  # noqa: E402
import descent.torch as dt  # noqa: E402

QUICK = "--quick" in sys.argv
RUNS = 3 if QUICK else 7


def med(fn, runs=RUNS):
    fn()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main():
    data = tempfile.mkdtemp(prefix="descent-bench-")
    d = subprocess.Popen([os.path.join(ROOT, os.environ.get("DESCENT_BUILD", "build"), "bin", "descentd"),
                          "--listen", "127.0.0.1:0", "--data-dir", data, "--max-body", str(1 << 30)],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = d.stdout.readline().split()[-1]
    port = int(url.rsplit(":", 1)[1])
    try:
        c = descent.Client(url)
        for n in (10 ** 6, 10 ** 7):
            name = "b%d" % n
            c.create(name=name, algorithm="sgd", hyper={"lr": 0.0}, tensors=[{"name": "w", "shape": [n]}])
            g = np.ones(n, np.float32)
            tg = torch.ones(n)
            out = np.empty(n, np.float32)
            tout = torch.empty(n)
            body = g.tobytes()
            conn = http.client.HTTPConnection("127.0.0.1", port)
            conn.connect()
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # as descent's connections

            def raw():
                conn.request("POST", "/v1/optimizers/%s/step?params=none" % name, body=body,
                             headers={"Content-Type": "application/octet-stream"})
                conn.getresponse().read()
                conn.request("GET", "/v1/optimizers/%s/params" % name, headers={"Accept": "application/octet-stream"})
                r = conn.getresponse()
                np.frombuffer(r.read(), dtype="<f4")

            def via_numpy():
                c.push(name, g, params=False)
                c.pull(name, out=out)

            def via_torch():
                c.push(name, tg, params=False)
                c.pull(name, out=tout)

            def via_push_reply():
                c.push(name, g, out=out)

            r = med(raw)
            a = med(via_numpy)
            b = med(via_torch)
            e = med(via_push_reply)
            print("push+pull %.0e float32: raw http.client %.1f ms, descent numpy %.1f ms (%.2fx), torch %.1f ms "
                  "(%.2fx); push with params back into out= %.1f ms" % (n, r * 1e3, a * 1e3, a / r, b * 1e3, b / r,
                                                                       e * 1e3), flush=True)
            conn.close()
        # descent.torch.Adam vs torch.optim.Adam on a 1e7-parameter model, each in a process of its own
        for which in ("local", "descent"):
            r = subprocess.run([sys.executable, __file__, "--adam", which, url] + (["--quick"] if QUICK else []),
                               capture_output=True, text=True)
            sys.stdout.write(r.stdout + r.stderr)
    finally:
        d.terminate()
        d.wait()
        subprocess.run(["rm", "-rf", data])


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def adam(which, url):
    """One Adam.step() benchmark in this process: time per step, and max RSS
    against the bytes of the parameters."""
    torch.manual_seed(0)
    m = torch.nn.Linear(3162, 3162)     # 10 001 406 parameters
    for p in m.parameters():
        p.grad = torch.full_like(p, 0.01)
    nparams = sum(p.numel() for p in m.parameters())
    size = nparams * 4 / 2 ** 20
    base = rss_mb()
    t0 = time.perf_counter()
    if which == "local":
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    else:
        opt = dt.Adam(m.parameters(), lr=1e-3, url=url, name="bench-adam-%d" % os.getpid())
    setup = time.perf_counter() - t0
    after_setup = rss_mb()
    t = med(opt.step)
    peak = rss_mb()
    print("Adam.step() %-8s %d parameters (%.0f MB): %.1f ms per step; construction %.1f s; max RSS %.0f MB before "
          "the optimizer (model + grads + torch), %.0f MB after construction, %.0f MB after the steps: %.1f "
          "parameter-sized copies beyond the model and its grads" % (
              which, nparams, size, t * 1e3, setup, base, after_setup, peak, (peak - base) / size), flush=True)
    if which != "local":
        opt.delete_instances()


if __name__ == "__main__":
    if "--adam" in sys.argv:
        k = sys.argv.index("--adam")
        adam(sys.argv[k + 1], sys.argv[k + 2])
    else:
        main()
