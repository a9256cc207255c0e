"""replicas: three (or more) real descentd members of one Raft group on
loopback, for test_replicas*.py.

    g = Group(3)                    # started; each member a harness.Daemon
    lead = g.wait_leader()          # the Daemon that leads (all agree)
    st, body, h = g.write("POST", "/v1/optimizers", spec)   # follows 307s, retries 503s
    g.wait_applied()                # every live member applied the leader's commit index
    g.stop()

The Raft ports are picked free on 127.0.0.1 before the start, below the
ephemeral range, so the daemons' own port-0 listens cannot take them (a port
taken in between fails the start loudly, it is not retried silently).
"""
import http.client
import json
import random
import socket
import time
import urllib.parse

from harness import Daemon

ELECTION_MS = 400


def free_ports(n):
    """n ports free on 127.0.0.1, taken below the kernel's ephemeral range
    (net.ipv4.ip_local_port_range), so that no daemon's --listen :0 and no
    outgoing connection can be handed one of them between now and the
    start: a random pick in [20000, low), kept only if it binds."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    lo = 10000 if low <= 20000 else 20000
    rnd = random.Random()
    socks, ports = [], []
    while len(ports) < n:
        p = rnd.randrange(lo, low)
        if p in ports:
            continue
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            s.close()
            continue
        socks.append(s)
        ports.append(p)
    for s in socks:
        s.close()
    return ports


class Group:
    def __init__(self, n=3, election_ms=ELECTION_MS, extra=()):
        self.ids = list(range(1, n + 1))
        self.raft_ports = free_ports(n)
        self.cluster = ",".join("%d=127.0.0.1:%d" % (i, p) for i, p in zip(self.ids, self.raft_ports))
        self.election_ms = election_ms
        self.extra = list(extra)
        self.members = {}
        for i in self.ids:
            self.members[i] = Daemon("--node-id", str(i), "--cluster", self.cluster, "--election-timeout",
                                     str(election_ms), "--snapshot-interval", "0", *self.extra)
        self.dead = set()

    def live(self):
        return [d for i, d in self.members.items() if i not in self.dead]

    def cluster_of(self, d):
        st, body, _ = d.req("GET", "/v1/cluster")
        assert st == 200, (st, body)
        return body

    def wait_leader(self, timeout=30):
        """The member every live member names as leader (and which says so itself)."""
        deadline = time.monotonic() + timeout
        while True:
            views = [self.cluster_of(d) for d in self.live()]
            leaders = {v["leader"] for v in views}
            if len(leaders) == 1 and None not in leaders and all(v["leader_http"] for v in views):
                lid = leaders.pop()
                if lid not in self.dead:
                    lv = self.cluster_of(self.members[lid])
                    if lv["role"] == "leader" and lv["leader_http"]:
                        return self.members[lid]
            if time.monotonic() > deadline:
                raise AssertionError("no agreed leader: %s" % json.dumps(views))
            time.sleep(0.05)

    def by_port(self, port):
        for d in self.members.values():
            if d.port == port:
                return d
        raise AssertionError("no member on port %d" % port)

    def write(self, method, path, body=None, headers=None, timeout=30, raw=False):
        """One write through the group: follows 307 to the leader, retries
        503 no_leader and dead members on the others, with the same headers
        (the Idempotency-Key) each time.  (status, body, headers, redirects)."""
        deadline = time.monotonic() + timeout
        order = self.live()
        k = 0
        redirects = 0
        while True:
            d = order[k % len(order)]
            try:
                st, b, h = d.req(method, path, body, headers, raw=raw)
            except (OSError, http.client.HTTPException):
                st, b, h = None, None, {}
            if st == 307:
                redirects += 1
                loc = urllib.parse.urlsplit(h["location"])
                d = self.by_port(loc.port)
                order = [d] + [x for x in self.live() if x is not d]
                k = 0
                continue
            if st is not None and not (st == 503 and isinstance(b, dict)
                                       and b["error"]["code"] in ("no_leader", "leadership_lost")):
                return st, b, h, redirects
            if time.monotonic() > deadline:
                raise AssertionError("write %s %s: no answer in %ss (last %s %s)" % (method, path, timeout, st, b))
            time.sleep(0.05)
            order = self.live()
            k += 1

    def wait_applied(self, timeout=30):
        """Until every live member has applied the leader's commit index."""
        lead = self.wait_leader(timeout)
        target = self.cluster_of(lead)["commit_index"]
        deadline = time.monotonic() + timeout
        while True:
            idx = [self.cluster_of(d)["applied_index"] for d in self.live()]
            if min(idx) >= target:
                return target
            if time.monotonic() > deadline:
                raise AssertionError("members did not apply index %d: %s" % (target, idx))
            time.sleep(0.05)

    def kill9(self, d):
        d.kill9()
        self.dead.add(self.id_of(d))

    def restart(self, d):
        d.restart()
        self.dead.discard(self.id_of(d))

    def id_of(self, d):
        for i, x in self.members.items():
            if x is d:
                return i
        raise KeyError(d)

    def stop(self):
        for i, d in self.members.items():
            if i not in self.dead:
                d.stop(expect_clean=False)
            d.cleanup()


class Client:
    """A client of the group for one thread (its own connections): writes
    follow 307 and retry no_leader / dead members with the same headers."""

    def __init__(self, group, timeout=30):
        self.g = group
        self.timeout = timeout
        self.conns = {}
        self.redirects = 0
        self.retries = 0

    def _req(self, port, method, path, body, headers):
        c = self.conns.get(port)
        if c is None:
            c = self.conns[port] = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
        except (OSError, http.client.HTTPException):
            c.close()
            self.conns.pop(port, None)
            return None, None, {}
        h = {k.lower(): v for k, v in r.getheaders()}
        if h.get("content-type", "").startswith("application/json") and data:
            data = json.loads(data)
        return r.status, data, h

    def call(self, method, path, body=None, headers=None):
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            headers = dict(headers or {}, **{"Content-Type": "application/json"})
        deadline = time.monotonic() + self.timeout
        ports = [d.port for d in self.g.members.values()]
        k = 0
        port = ports[0]
        while True:
            st, b, h = self._req(port, method, path, body, headers)
            if st == 307:
                self.redirects += 1
                port = urllib.parse.urlsplit(h["location"]).port
                continue
            if st is not None and not (st == 503 and b["error"]["code"] in ("no_leader", "leadership_lost",
                                                                           "shutting_down")):
                return st, b, h
            if time.monotonic() > deadline:
                raise AssertionError("%s %s: no answer in %ss (last %s %s)" % (method, path, self.timeout, st, b))
            self.retries += 1
            time.sleep(0.02)
            k += 1
            port = ports[k % len(ports)]

    def close(self):
        for c in self.conns.values():
            c.close()


def check_counters(history, nwriters):
    """A history of counter pushes and reads (see test_replicas_failover):
    ("push", writer, t_invoke, t_ack) for each acknowledged push and
    ("read", t_start, t_end, counts) for each read (counts[i]: writer i's
    pushes in the state read).  Every read must hold every push acknowledged
    before it began and no more than those invoked before it ended; the
    reads of one writer's counter never go back.  Returns the problems."""
    acks = [sorted(t1 for kind, w, t0, t1 in (e for e in history if e[0] == "push") if w == i)
            for i in range(nwriters)]
    invokes = [sorted(t0 for kind, w, t0, t1 in (e for e in history if e[0] == "push") if w == i)
               for i in range(nwriters)]
    problems = []
    reads = sorted((e for e in history if e[0] == "read"), key=lambda e: e[1])
    for _, t0, t1, counts in reads:
        for i in range(nwriters):
            lo = sum(1 for t in acks[i] if t < t0)
            hi = sum(1 for t in invokes[i] if t <= t1)
            if not lo <= counts[i] <= hi:
                problems.append("read at %.3f: writer %d has %d pushes, expected %d..%d" % (t0, i, counts[i], lo, hi))
    return problems
