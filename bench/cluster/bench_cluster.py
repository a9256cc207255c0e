#!/usr/bin/env python3
"""bench_cluster: scale-out on simulated hosts (make bench-cluster).

One logical Adam instance of N = 10^7 parameters is range-sharded
(proto/sharding.md) over 1, 2 and 4 daemons, each a host of its own, and
trained by 4 workers, each a host of its own: Linux network namespaces
joined by a bridge, every host's link shaped to --rate each way
(bench/cluster/netns.sh).  Workers are bench/cluster/cluster_worker
(libdescent for float32; the same split rule in a raw libcurl client for
bfloat16 bodies).  Measured for each shard count:

  pipelined   async workers that overlap communication: one thread pushes
              gradients (?params=none), one pulls the parameters
  roundtrip   async workers with one push in flight (parameters in the reply)
  sync        one round of 4 workers per step (mode sync, workers 4), and
              where a round's time goes: the links, the daemons' apply
              (their /metrics), and the rest (waiting)

bfloat16 (Content-Type: application/octet-stream; dtype=bfloat16) is
probed on the first daemon and measured when it is accepted; else
"bf16: not supported by this daemon yet" and the column is skipped.

Writes a table (stdout), a TSV (--out) and a plot (--svg: gnuplot when
present, else an SVG written here).  Skips with exit 0, saying why, where
network namespaces cannot be used.
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster  # noqa: E402

WORKERS = int(os.environ.get("CLUSTER_WORKERS", "4"))


def parse_args(argv):
    a = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    a.add_argument("--daemon", default="build/bin/descentd")
    a.add_argument("--worker", default="build/bench/cluster_worker")
    a.add_argument("--rate", default="500mbit", help="each host's link, each way (tc rate)")
    a.add_argument("--delay", default="0.2ms", help="one-way delay (netem; none where the kernel lacks it)")
    a.add_argument("--n", type=float, default=1e7)
    a.add_argument("--shards", default="1,2,4")
    a.add_argument("--modes", default="pipelined,sync", help="pipelined, roundtrip (one push in flight per worker), sync")
    a.add_argument("--dtype", default="auto", help="float32, bfloat16, or auto (bfloat16 when the daemon takes it)")
    a.add_argument("--seconds", type=float, default=8.0, help="per async measurement (after a warm-up)")
    a.add_argument("--clients", default="libdescent,raw",
                   help="float32 through libdescent, through the raw client (the bfloat16 baseline), or both")
    a.add_argument("--lanes", type=int, default=2, help="pipelined: push lanes (and as many pull lanes) per worker")
    a.add_argument("--rounds", type=int, default=3, help="sync rounds measured (after one warm-up)")
    a.add_argument("--quick", action="store_true", help="N = 10^6, 3 s, 2 rounds (for trying changes)")
    a.add_argument("--out", default="build/bench/cluster.tsv")
    a.add_argument("--svg", default="")
    o = a.parse_args(argv)
    if o.quick:
        o.n, o.seconds, o.rounds = min(o.n, 1e6), 3.0, 2
    o.n = int(o.n)
    o.shards = [int(s) for s in o.shards.split(",")]
    o.modes = o.modes.split(",")
    o.clients = o.clients.split(",")
    return o


def urls_of(daemons, s):
    return ",".join(daemons[:s])


def spec(name, n, mode):
    body = {"name": name, "algorithm": "adam", "hyper": {"lr": 0.001},
            "tensors": [{"name": "w", "shape": [n], "init": {"normal": {"std": 0.02, "seed": 1}}}]}
    if mode == "sync":
        body.update(mode="sync", workers=WORKERS)
    return json.dumps(body)


def delete(c, daemons, s, name):
    for u in daemons[:s]:
        c.http(0, "DELETE", "%s/v1/optimizers/%s" % (u, name))


def probe_bf16(c, url):
    """True when the daemon takes a bfloat16 push and returns bfloat16
    parameters; else the reason (a string)."""
    name = "dtype-probe"
    st, body = c.http(0, "POST", url + "/v1/optimizers", json.dumps(
        {"name": name, "algorithm": "sgd", "hyper": {"lr": 1},
         "tensors": [{"name": "w", "shape": [4], "init": "zeros"}]}).encode(),
        ["Content-Type: application/json"])
    if st != 201:
        return "create: %d %s" % (st, body[:200])
    try:
        g = struct.pack("<4H", 0x3f80, 0x4000, 0x4040, 0x4080)  # 1, 2, 3, 4 in bfloat16
        st, body = c.http(0, "POST", url + "/v1/optimizers/%s/step" % name, g,
                          ["Content-Type: application/octet-stream; dtype=bfloat16",
                           "Accept: application/octet-stream; dtype=bfloat16"])
        want = struct.pack("<4H", 0xbf80, 0xc000, 0xc040, 0xc080)  # -1 .. -4
        if st == 200 and body == want:
            return True
        return "%d %s" % (st, body[:200].decode(errors="replace").strip())
    finally:
        c.http(0, "DELETE", "%s/v1/optimizers/%s" % (url, name))


def metrics(c, daemons, s, name):
    """Per shard: {apply, decode, encode, steps} seconds/counts of `name`."""
    out = []
    for u in daemons[:s]:
        st, text = c.http(0, "GET", u + "/metrics")
        m = {"apply": 0.0, "decode": 0.0, "encode": 0.0, "steps": 0}
        for line in text.decode().splitlines():
            if ('instance="%s"' % name) not in line or line.startswith("#"):
                continue
            key, _, val = line.rpartition(" ")
            if key.startswith("descent_step_phase_seconds_total"):
                for ph in ("decode", "apply", "encode"):
                    if 'phase="%s"' % ph in key:
                        m[ph] = float(val)
            elif key.startswith("descent_step_apply_seconds_count"):
                m["steps"] = int(float(val))
        out.append(m)
    return out


def start_workers(c, o, urls, name, mode, dtype, client, steps=None):
    procs = []
    for j in range(WORKERS):
        argv = [o.worker, "run", "--urls", urls, "--name", name, "--n", str(o.n), "--worker", str(j),
                "--dtype", dtype, "--client", client]
        if mode == "sync":
            argv += ["--mode", "sync", "--steps", str(steps)]
        else:
            argv += ["--until-stop"]
            if mode == "pipelined":
                argv += ["--pipeline", str(o.lanes)]
        procs.append(c.worker(j, argv))
    cluster.wait_ready(procs)
    return procs


def shard_step(c, url, name):
    """(time, step) of shard `url`: the time is the middle of the request."""
    t0 = time.monotonic()
    st, body = c.http(0, "GET", "%s/v1/optimizers/%s" % (url, name))
    if st != 200:
        raise RuntimeError("describe %s: %d %s" % (name, st, body[:200]))
    return (t0 + time.monotonic()) / 2, json.loads(body)["step"]


def link_bytes(c, s):
    """(time, bytes sent so far) on every link, each way: daemon k in (the
    switch's port dk), daemon k out (its eth0), worker j up (its eth0), down
    (port wj).  Each counter has its own time: on a loaded machine reading
    a dozen of them takes a while."""
    sw = c.prefix + "-sw"

    def read(ns, dev):
        t0 = time.monotonic()
        b = cluster.tc_sent(ns, dev)
        return (t0 + time.monotonic()) / 2, b
    return {"d_in": [read(sw, "d%d" % k) for k in range(s)],
            "d_out": [read(c.ns("d", k), "eth0") for k in range(s)],
            "w_up": [read(c.ns("w", j), "eth0") for j in range(WORKERS)],
            "w_down": [read(sw, "w%d" % j) for j in range(WORKERS)]}


def measure_async(c, o, daemons, s, mode, dtype, client, cap):
    """Steps per second from the daemons' own step counter over a window
    in which every worker is busy; link bytes from the qdiscs' counters
    over the same window (what really crossed each link, headers included)."""
    name = "a%d%s%s%s" % (s, mode[0], dtype[0], client[0])
    urls = urls_of(daemons, s)
    c.run(0, [o.worker, "create", "--urls", urls, "--spec", spec(name, o.n, "async")])
    procs = []
    try:
        procs = start_workers(c, o, urls, name, mode, dtype, client)
        cluster.go(procs)
        lanes = o.lanes if mode == "pipelined" else 1
        deadline = time.monotonic() + 300
        while shard_step(c, daemons[0], name)[1] < WORKERS * lanes:  # warm-up: every lane has pushed once
            if time.monotonic() > deadline:
                raise RuntimeError("no progress")
            time.sleep(0.2)
        (t1, s1), b1 = shard_step(c, daemons[0], name), link_bytes(c, s)
        time.sleep(o.seconds)
        (t2, s2), b2 = shard_step(c, daemons[0], name), link_bytes(c, s)
        cluster.go(procs, "stop")
        res = cluster.collect(procs)
    finally:
        for p in procs:
            c.stop(p)
        delete(c, daemons, s, name)
    dt = t2 - t1
    rate = {k: [(b2[k][i][1] - b1[k][i][1]) / (b2[k][i][0] - b1[k][i][0]) for i in range(len(b1[k]))] for k in b1}
    d_in, d_out = max(rate["d_in"]), max(rate["d_out"])
    w_up, w_down = max(rate["w_up"]), max(rate["w_down"])
    return {"kind": mode, "dtype": dtype, "client": client, "shards": s, "steps_per_s": (s2 - s1) / dt,
            "daemon_link_in_GBps": d_in / 1e9, "daemon_link_out_GBps": d_out / 1e9,
            "worker_link_up_GBps": w_up / 1e9, "worker_link_down_GBps": w_down / 1e9,
            "busiest_link_ratio": max(d_in, d_out, w_up, w_down) / cap,
            "median_push_s": sorted(r["median_s"] for r in res)[WORKERS // 2]}


def measure_sync(c, o, daemons, s, dtype, client, cap):
    name = "s%d%s%s" % (s, dtype[0], client[0])
    urls = urls_of(daemons, s)
    c.run(0, [o.worker, "create", "--urls", urls, "--spec", spec(name, o.n, "sync")])
    try:
        m0 = metrics(c, daemons, s, name)
        procs = start_workers(c, o, urls, name, "sync", dtype, client, steps=o.rounds + 1)
        res = cluster.go_and_collect(procs)
        m1 = metrics(c, daemons, s, name)
    finally:
        delete(c, daemons, s, name)
    b = 2 if dtype == "bfloat16" else 4
    rounds = o.rounds + 1
    for r in res:
        if r["step"] != rounds:
            raise RuntimeError("sync worker %d ended at step %d, not %d" % (r["worker"], r["step"], rounds))
    round_s = sorted(r["median_s"] for r in res)[WORKERS // 2]
    per = [{k: (m1[i][k] - m0[i][k]) / rounds for k in ("apply", "decode", "encode")} for i in range(s)]
    apply_s = max(p["apply"] for p in per)
    codec_s = max(p["decode"] + p["encode"] for p in per)
    # a round moves every worker's gradient in, then the parameters out:
    # on a daemon link W * N/S values each way, one after the other; on a
    # worker link N values each way, one after the other
    link_s = max(2 * WORKERS * o.n * b / s, 2 * o.n * b) / cap
    return {"kind": "sync", "dtype": dtype, "client": client, "shards": s, "steps_per_s": 1 / round_s,
            "round_s": round_s, "link_s": link_s, "apply_s": apply_s, "codec_s": codec_s,
            "wait_s": max(0.0, round_s - link_s - apply_s - codec_s),
            "busiest_link_ratio": link_s / round_s}


def fmt_table(rows, cap_gbps):
    out = []
    hdr = "%-10s %-8s %-10s %6s %9s %8s %10s %10s %7s %8s" % (
        "mode", "dtype", "client", "shards", "steps/s", "speedup", "daemon GB/s", "worker GB/s", "link %", "")
    out.append(hdr)
    base = {}
    for r in rows:
        key = (r["kind"], r["dtype"], r["client"])
        if r["shards"] == 1:
            base[key] = r["steps_per_s"]
        sp = r["steps_per_s"] / base[key] if key in base else float("nan")
        r["speedup"] = sp
        if r["kind"] == "sync":
            extra = "round %.0f ms = link %.0f + apply %.0f + codec %.0f + waiting %.0f" % (
                r["round_s"] * 1e3, r["link_s"] * 1e3, r["apply_s"] * 1e3, r["codec_s"] * 1e3, r["wait_s"] * 1e3)
            out.append("%-10s %-8s %-10s %6d %9.2f %7.2fx %11s %11s %6.0f%%  %s" % (
                r["kind"], r["dtype"], r["client"], r["shards"], r["steps_per_s"], sp, "", "",
                100 * r["busiest_link_ratio"], extra))
        else:
            out.append("%-10s %-8s %-10s %6d %9.2f %7.2fx %5.3f/%5.3f %5.3f/%5.3f %6.0f%%" % (
                r["kind"], r["dtype"], r["client"], r["shards"], r["steps_per_s"], sp,
                r["daemon_link_in_GBps"], r["daemon_link_out_GBps"], r["worker_link_up_GBps"],
                r["worker_link_down_GBps"], 100 * r["busiest_link_ratio"]))
    out.append("(GB/s: bytes on the wire, headers included, in/out of the busiest daemon's link and up/down of the "
               "busiest worker's;\n link %%: the busiest link against its capacity, %.4f GB/s each way; sync: a "
               "round's link time at line rate against the round)" % cap_gbps)
    return "\n".join(out)


COLS = ["kind", "dtype", "client", "shards", "steps_per_s", "speedup", "daemon_link_in_GBps",
        "daemon_link_out_GBps", "worker_link_up_GBps", "worker_link_down_GBps", "busiest_link_ratio",
        "median_push_s", "round_s", "link_s", "apply_s", "codec_s", "wait_s"]


def write_tsv(path, rows, meta):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        for k, v in meta.items():
            f.write("# %s: %s\n" % (k, v))
        f.write("\t".join(COLS) + "\n")
        for r in rows:
            vals = []
            for k in COLS:
                v = r.get(k, "")
                vals.append("%.6g" % v if isinstance(v, float) else str(v))
            f.write("\t".join(vals) + "\n")


def series_of(rows, shards):
    """Speedup over one shard against the shard count, per mode/dtype/client,
    and the links' bound (each extra daemon host adds its link)."""
    series = {"links' bound": [(s, float(s)) for s in shards]}
    for r in rows:
        label = "%s %s, %s" % (r["kind"], r["dtype"], r["client"])
        series.setdefault(label, []).append((r["shards"], r["speedup"]))
    return series


def plot(path, rows, meta, shards):
    series = series_of(rows, shards)
    if shutil.which("gnuplot"):
        dat = path + ".dat"
        with open(dat, "w") as f:
            for label, pts in series.items():
                f.write('"%s"\n' % label)
                for x, y in pts:
                    f.write("%d %g\n" % (x, y))
                f.write("\n\n")
        gp = ("set terminal svg size 720,440 dynamic font 'sans,12'; set output '%s'; "
              "set title 'one Adam instance over daemon hosts, 4 worker hosts, %s'; "
              "set xlabel 'daemons (shards), one host each'; set ylabel 'optimizer steps per second, against one shard'; "
              "set xtics (%s); set key left top; set grid; "
              "plot for [i=0:%d] '%s' index i using 1:2 with linespoints lw 2 title columnheader(1)"
              % (path, meta["links"], ",".join(str(s) for s in shards), len(series) - 1, dat))
        subprocess.run(["gnuplot", "-e", gp], check=True)
        os.unlink(dat)
        return
    # no gnuplot: a small line chart by hand
    R = 60 + int(6.6 * max(len(k) for k in series))  # room for the legend
    W, H, L, T, B = 520 + R, 440, 70, 50, 60
    xs = sorted(set(shards))
    ymax = max(y for pts in series.values() for _, y in pts) * 1.15
    step = 10 ** int("%d" % (len("%d" % max(1, int(ymax))) - 1))
    while ymax / step < 4:
        step /= 2
    px = lambda x: L + (W - L - R) * (xs.index(x) / max(1, len(xs) - 1))  # noqa: E731
    py = lambda y: H - B - (H - T - B) * y / ymax  # noqa: E731
    colors = ["#888888", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    s = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">' % (W, H),
         '<rect width="100%" height="100%" fill="white"/>',
         '<text x="%d" y="24" font-size="14">one %s-parameter Adam instance over 1-%d daemon hosts, %d worker hosts%s</text>'
         % (L, "10^7" if meta["n"] == 10 ** 7 else meta["n"], max(shards), meta["workers"],
            ", %s links" % meta["links"].split(" each way")[0].replace("links: ", "") if "each way" in meta["links"] else "")]
    y = 0.0
    while y <= ymax:
        s.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>' % (L, py(y), W - R, py(y)))
        s.append('<text x="%d" y="%.1f" text-anchor="end">%g</text>' % (L - 6, py(y) + 4, y))
        y += step
    for x in xs:
        s.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>' % (px(x), T, px(x), H - B))
        s.append('<text x="%.1f" y="%d" text-anchor="middle">%d</text>' % (px(x), H - B + 18, x))
    s.append('<text x="%d" y="%d" text-anchor="middle">daemons (shards), one host each</text>' % ((L + W - R) / 2, H - 18))
    s.append('<text x="16" y="%d" transform="rotate(-90 16 %d)" text-anchor="middle">steps per second, against one shard</text>'
             % ((T + H - B) / 2, (T + H - B) / 2))
    for i, (label, pts) in enumerate(series.items()):
        col = colors[i % len(colors)]
        path_d = " ".join("%s%.1f,%.1f" % ("M" if k == 0 else "L", px(x), py(v)) for k, (x, v) in enumerate(pts))
        dash = ' stroke-dasharray="6,4"' if i == 0 else ""
        s.append('<path d="%s" fill="none" stroke="%s" stroke-width="2"%s/>' % (path_d, col, dash))
        for x, v in pts:
            s.append('<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"><title>%s, %d shards: %.2fx</title></circle>'
                     % (px(x), py(v), col, label, x, v))
        ly = T + 10 + 20 * i
        s.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"/>' % (W - R + 14, ly, W - R + 38, ly, col))
        s.append('<text x="%d" y="%d">%s</text>' % (W - R + 44, ly + 4, label))
    s.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(s) + "\n")


def main(argv):
    o = parse_args(argv)
    for f in (o.daemon, o.worker):
        if not os.access(f, os.X_OK):
            print("bench-cluster: %s is not built (make %s)" % (f, f), file=sys.stderr)
            return 1
    o.daemon, o.worker = os.path.abspath(o.daemon), os.path.abspath(o.worker)
    try:
        cluster.check()
    except cluster.Unavailable as e:
        print("bench-cluster: skipped: %s" % e)
        return 0
    nd = max(o.shards)
    cap = cluster.rate_bps(o.rate) / 8
    t0 = time.time()
    load0 = os.getloadavg()[0]
    c = cluster.Cluster("dscb", nd, WORKERS, rate=o.rate, delay=o.delay)
    rows = []
    try:
        print("bench-cluster: %d daemon hosts, %d worker hosts; %s" % (nd, WORKERS, c.report))
        daemons = [c.start_daemon(k, o.daemon, ["--max-body", "1G", "--log-level", "error"]) for k in range(nd)]
        dtypes = [(d, cl) for d, cl in (("float32", "libdescent"), ("float32", "raw")) if cl in o.clients]
        if o.dtype in ("auto", "bfloat16"):
            ok = probe_bf16(c, daemons[0])
            if ok is True:
                dtypes += [("bfloat16", "raw")]
            else:
                print("bf16: not supported by this daemon yet (%s); column skipped" % ok)
                if o.dtype == "bfloat16":
                    return 1
        for s in o.shards:
            for mode in o.modes:
                for dtype, client in dtypes:
                    if mode == "sync":
                        r = measure_sync(c, o, daemons, s, dtype, client, cap)
                    else:
                        r = measure_async(c, o, daemons, s, mode, dtype, client, cap)
                    rows.append(r)
                    print("  %s %s %s, %d shard%s: %.2f steps/s" % (mode, dtype, client, s, "s" if s > 1 else "",
                                                                  r["steps_per_s"]), flush=True)
    finally:
        c.close()
    rows.sort(key=lambda r: (["pipelined", "roundtrip", "sync"].index(r["kind"]), r["dtype"], r["client"], r["shards"]))
    meta = {"links": c.report, "n": o.n, "workers": WORKERS, "seconds": o.seconds, "rounds": o.rounds,
            "capacity_GBps_each_way": cap / 1e9, "lanes": o.lanes,
            "load_average_start_end": "%.1f %.1f (%d cores, shared)" % (load0, os.getloadavg()[0], os.cpu_count()),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    print()
    print(fmt_table(rows, cap / 1e9))
    for kind in ("pipelined", "sync"):
        for dt in ("float32", "bfloat16"):
            sp = [r for r in rows if r["kind"] == kind and r["dtype"] == dt and r["shards"] == max(o.shards)]
            if sp and max(o.shards) == 4 and 1 in o.shards:
                print("goal (%s %s): 4 shards >= 3.2x one shard: %.2fx %s" % (
                    kind, dt, sp[0]["speedup"], "met" if sp[0]["speedup"] >= 3.2 else "NOT met"))
    f32 = {(r["kind"], r["shards"]): r["steps_per_s"] for r in rows if r["dtype"] == "float32" and r["client"] == "raw"}
    for r in rows:
        if r["dtype"] == "bfloat16" and (r["kind"], r["shards"]) in f32:
            print("bf16 vs float32 (%s, %d shards, same client): %.2fx" % (
                r["kind"], r["shards"], r["steps_per_s"] / f32[(r["kind"], r["shards"])]))
    write_tsv(o.out, rows, meta)
    print("load average %s; results: %s (%.0f s)" % (meta["load_average_start_end"], o.out, time.time() - t0))
    if o.svg:
        os.makedirs(os.path.dirname(o.svg) or ".", exist_ok=True)
        plot(o.svg, rows, meta, o.shards)
        print("plot: %s" % o.svg)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
