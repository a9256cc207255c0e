"""replicas: three (or more) real descentd members of one Raft group on
loopback, for test_replicas*.py.

    g = Group(3)                    # started; each member a harness.Daemon
    lead = g.wait_leader()          # the Daemon that leads (all agree)
    st, body, h = g.write("POST", "/v1/optimizers", spec)   # follows 307s, retries 503s
    g.wait_applied()                # every live member applied the leader's commit index
    g.stop()

The Raft ports are picked free on 127.0.0.1 before the start (a port taken
in between fails the start loudly, it is not retried silently).
"""
import http.client
import json
import socket
import time
import urllib.parse

from harness import Daemon

ELECTION_MS = 400


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
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
            if st is not None and not (st == 503 and isinstance(b, dict) and b["error"]["code"] == "no_leader"):
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
