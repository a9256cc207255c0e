"""cluster: simulated hosts for make bench-cluster and the netns test.

    c = Cluster("dscb", ndaemons=4, nworkers=4, rate="1gbit", delay="0.2ms")
    try:
        url = c.start_daemon(0, "build/bin/descentd")       # in host d0
        p = c.worker(1, ["build/bench/cluster_worker", "run", ...])  # in host w1
        text = c.http(0, "GET", url + "/metrics")           # curl from host w0
    finally:
        c.close()          # every process by pid, then every namespace

The namespaces, links and shaping are bench/cluster/netns.sh's (read its
header).  A Cluster's prefix is BASE-PID: before building, it removes what a
killed earlier run of the same BASE left (netns.sh reap BASE), never a live
run's.  close() runs on exceptions, at exit and on SIGTERM/SIGINT/SIGHUP.
Standard library only; needs root (netns.sh check says why not).
"""
import atexit
import os
import signal
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
NETNS = os.path.join(HERE, "netns.sh")
PORT = 8080


class Unavailable(Exception):
    """Network namespaces cannot be used here; str() says why."""


def check():
    """Raises Unavailable (with netns.sh's reason) unless namespaces, veth,
    bridges and tbf work here.  Returns netns.sh's one-line report."""
    try:
        r = subprocess.run([NETNS, "check", "dsccheck-%d" % os.getpid()], capture_output=True, text=True,
                           timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise Unavailable("netns.sh check: %s" % e)
    out = (r.stdout + r.stderr).strip()
    if r.returncode != 0:
        raise Unavailable(out or "netns.sh check failed (%d)" % r.returncode)
    return out


def rate_bps(rate):
    """bits/s of a tc rate such as 1gbit, 500mbit."""
    r = rate.lower()
    for unit, m in (("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3), ("bit", 1)):
        if r.endswith(unit):
            return float(r[:-len(unit)]) * m
    return float(r)


def daemon_ip(k):
    return "198.18.0.%d" % (1 + k)


class Cluster:
    def __init__(self, base, ndaemons, nworkers, rate="1gbit", delay="0.2ms", mtu=1500):
        self.base = base
        self.prefix = "%s-%d" % (base, os.getpid())
        self.ndaemons, self.nworkers = ndaemons, nworkers
        self.rate, self.delay = rate, delay
        self.procs = []
        self.closed = False
        self.report = ""
        subprocess.run([NETNS, "reap", base], check=False)
        atexit.register(self.close)
        self._old = {}
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            self._old[s] = signal.signal(s, self._on_signal)
        env = dict(os.environ, NETNS_RATE=rate, NETNS_DELAY=delay, NETNS_MTU=str(mtu))
        r = subprocess.run([NETNS, "up", self.prefix, str(ndaemons), str(nworkers)], env=env,
                           capture_output=True, text=True)
        if r.returncode != 0:
            self.close()
            raise RuntimeError("netns.sh up failed:\n%s%s" % (r.stdout, r.stderr))
        self.report = [l for l in r.stdout.splitlines() if l.startswith("links:")][0]

    def _on_signal(self, signum, frame):
        self.close()
        raise SystemExit(128 + signum)

    def ns(self, kind, k):
        return "%s-%s%d" % (self.prefix, kind, k)

    def popen(self, kind, k, argv, **kw):
        """A process in host KIND k (d or w), remembered for close()."""
        p = subprocess.Popen(["ip", "netns", "exec", self.ns(kind, k)] + list(argv), **kw)
        self.procs.append(p)
        return p

    def start_daemon(self, k, descentd, args=(), wrapper=()):
        """descentd in host d<k> on 198.18.0.<k+1>:8080; returns its URL."""
        p = self.popen("d", k, list(wrapper) + [descentd, "--listen", "%s:%d" % (daemon_ip(k), PORT)] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = p.stdout.readline()
        if not line.startswith("listening on "):
            p.kill()
            p.wait()
            raise RuntimeError("descentd in %s did not start: %r %s" % (self.ns("d", k), line, p.stderr.read()))
        p.url = line.split()[-1]
        return p.url

    def worker(self, j, argv):
        """A process in host w<j> with pipes for stdin and stdout (text)."""
        return self.popen("w", j, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)

    def run(self, j, argv, timeout=300):
        """Runs argv in host w<j> to its end; raises with its stderr on failure."""
        p = self.popen("w", j, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = p.communicate(timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError("%s in %s exited %d: %s" % (argv[:2], self.ns("w", j), p.returncode, err))
        return out

    def http(self, j, method, url, body=None, headers=(), timeout=120):
        """curl from host w<j>: (status, body bytes).  body: bytes or None."""
        argv = ["curl", "-sS", "-X", method, "-o", "-", "-w", "\n%{http_code}", url]
        for h in headers:
            argv += ["-H", h]
        if body is not None:
            argv += ["--data-binary", "@-"]
        p = self.popen("w", j, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = p.communicate(body, timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError("curl %s %s: %s" % (method, url, err.decode(errors="replace")))
        data, _, code = out.rpartition(b"\n")
        return int(code), data

    def stop(self, p, timeout=30):
        """SIGTERM to p's pid, SIGKILL after timeout; returns the exit code."""
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in (p.stdin, p.stdout, p.stderr):
            if f:
                try:
                    f.close()
                except OSError:
                    pass
        return p.returncode

    def close(self):
        """Every process this Cluster started, by pid; then netns.sh down
        (which also kills, by namespace, anything left inside)."""
        if self.closed:
            return
        self.closed = True
        for p in self.procs:
            try:
                self.stop(p, timeout=10)
            except Exception:
                pass
        subprocess.run([NETNS, "down", self.prefix], check=False)
        for s, h in self._old.items():
            try:
                signal.signal(s, h)
            except (ValueError, TypeError):
                pass
        try:
            atexit.unregister(self.close)
        except Exception:
            pass


def wait_ready(procs, timeout=120):
    """Waits for each worker's "ready" line; raises with its stderr if one fails."""
    deadline = time.monotonic() + timeout
    for p in procs:
        line = p.stdout.readline()
        if line.strip() != "ready":
            p.wait(timeout=max(1, deadline - time.monotonic()))
            raise RuntimeError("worker failed before starting: %r %s" % (line, p.stderr.read()))


def go(procs, line="go"):
    """Writes line to every worker (go: start; stop: for --until-stop)."""
    for p in procs:
        p.stdin.write(line + "\n")
        p.stdin.flush()


def collect(procs, timeout=600):
    """Waits for every worker; returns their parsed result lines."""
    import json
    results = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError("worker exited %d: %s" % (p.returncode, err))
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def go_and_collect(procs, timeout=600):
    """Starts every ready worker at once and returns their parsed result lines."""
    go(procs)
    return collect(procs, timeout)


def tc_sent(ns, dev):
    """Bytes sent so far by the root qdisc of dev in namespace ns."""
    out = subprocess.run(["ip", "netns", "exec", ns, "tc", "-s", "qdisc", "show", "dev", dev],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split("Sent ", 1)[1].split()[0])
