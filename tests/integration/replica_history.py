"""replica_history: a recorded workload against a replica group, checked by
history_check (test_replicas_history; also run as a script inside a network
namespace, where the group is reached over veth links).

    w = Workload([("127.0.0.1", p1), ("127.0.0.1", p2), ...], n=N)
    w.start()            # 4 writers and 2 readers, each thread its own client
    ...                  # kill -9 the leader, cut links, heal
    events = w.stop()    # history_check's events (one incarnation: gen 0)

Writers push distinct powers of two (history_check.gradient_bytes, SGD lr 1
on an instance of N zeros made beforehand), each push with its own
Idempotency-Key, retried with that key (following 307, across no_leader,
leadership_lost and dead members) until acknowledged: one event per push,
start = its first attempt, retry = it took more than one.  Readers read the
parameters with `Descent-Read: leader` (so reads must be linearizable).
Script: python3 replica_history.py N HOST:PORT,... ; runs until a line
"stop" on stdin, then prints the events as JSON (bytes as hex).
"""
import http.client
import json
import sys
import threading
import time
import urllib.parse

import history_check as hc

RETRY_CODES = ("no_leader", "leadership_lost", "shutting_down")


class Client:
    """One thread's client of the group: its own keep-alive connections."""

    def __init__(self, members, timeout=30):
        self.members = list(members)
        self.timeout = timeout
        self.conns = {}
        self.k = 0

    def _once(self, addr, method, path, body, headers):
        c = self.conns.get(addr)
        if c is None:
            c = self.conns[addr] = http.client.HTTPConnection(addr[0], addr[1], timeout=5)
        try:
            c.request(method, path, body=body, headers=headers)
            r = c.getresponse()
            data = r.read()
        except (OSError, http.client.HTTPException):
            c.close()
            self.conns.pop(addr, None)
            return None, None, {}
        return r.status, data, {k.lower(): v for k, v in r.getheaders()}

    def call(self, method, path, body=None, headers=None):
        """(status, data, headers, attempts): follows 307, retries the
        retryable 503s and dead members on the next member, same headers."""
        deadline = time.monotonic() + self.timeout
        attempts = 1  # 307s followed are not retries
        addr = self.members[self.k % len(self.members)]
        while True:
            st, data, h = self._once(addr, method, path, body, headers or {})
            h["by"] = "%s:%d" % addr
            if st == 307:
                loc = urllib.parse.urlsplit(h["location"])
                addr = (loc.hostname, loc.port)
                continue
            retry = st is None or (st == 503 and any(c.encode() in data for c in RETRY_CODES))
            if not retry:
                return st, data, h, attempts
            if time.monotonic() > deadline:
                raise AssertionError("%s %s: no answer in %ss (last %s %r)" % (method, path, self.timeout, st, data))
            time.sleep(0.02)
            attempts += 1
            self.k += 1
            addr = self.members[self.k % len(self.members)]

    def close(self):
        for c in self.conns.values():
            c.close()


class Workload:
    def __init__(self, members, n, name="h", writers=4, readers=2, pause=0.003):
        self.members, self.n, self.name = list(members), n, name
        self.writers, self.readers, self.pause = writers, readers, pause
        self.events, self.errors = [], []
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.threads = []

    def start(self):
        self.threads = [threading.Thread(target=self._writer, args=(w,)) for w in range(self.writers)]
        self.threads += [threading.Thread(target=self._reader, args=(r,)) for r in range(self.readers)]
        for t in self.threads:
            t.start()

    def stop(self, timeout=60):
        self.done.set()
        for t in self.threads:
            t.join(timeout)
        return self.events

    def acked(self):
        with self.lock:
            return sum(1 for e in self.events if e["op"] == "push")

    def _add(self, e):
        with self.lock:
            self.events.append(e)

    def _writer(self, w):
        cl = Client(self.members[w % len(self.members):] + self.members[:w % len(self.members)])
        path = "/v1/optimizers/%s/step" % self.name
        try:
            i = w
            while not self.done.is_set() and i < hc.capacity(self.n):
                hdrs = {"Content-Type": "application/octet-stream", "Accept": "application/octet-stream",
                        "Idempotency-Key": "%s-%d" % (self.name, i)}
                t0 = time.monotonic()
                st, data, h, attempts = cl.call("POST", path, hc.gradient_bytes(i, self.n), hdrs)
                t1 = time.monotonic()
                if st != 200:
                    self.errors.append(("push", i, st, data[:200]))
                    return
                self._add({"op": "push", "gen": 0, "id": i, "start": t0, "end": t1, "ok": True,
                           "retry": attempts > 1, "step": int(h["descent-step"]), "values": data,
                           "by": h["by"], "index": int(h.get("descent-applied-index", -1))})
                i += self.writers
                time.sleep(self.pause)
        except Exception as x:  # no answer within the client's timeout, or a bug
            self.errors.append(("writer %d" % w, repr(x)))
        finally:
            cl.close()

    def _reader(self, r):
        cl = Client(self.members[r % len(self.members):] + self.members[:r % len(self.members)])
        hdrs = {"Accept": "application/octet-stream", "Descent-Read": "leader"}
        try:
            while not self.done.is_set():
                t0 = time.monotonic()
                st, data, h, _ = cl.call("GET", "/v1/optimizers/%s/params" % self.name, None, hdrs)
                t1 = time.monotonic()
                if st != 200:
                    self.errors.append(("read", st, data[:200]))
                    return
                self._add({"op": "read", "gen": 0, "start": t0, "end": t1,
                           "step": int(h["descent-step"]), "values": data,
                           "by": h["by"], "index": int(h.get("descent-applied-index", -1))})
                time.sleep(self.pause)
        except Exception as x:
            self.errors.append(("reader %d" % r, repr(x)))
        finally:
            cl.close()


def to_json(events):
    return json.dumps([dict(e, values=e["values"].hex()) if isinstance(e.get("values"), bytes) else e
                       for e in events])


def from_json(text):
    return [dict(e, values=bytes.fromhex(e["values"])) if isinstance(e.get("values"), str) else e
            for e in json.loads(text)]


def main():
    n = int(sys.argv[1])
    members = [(a.rsplit(":", 1)[0], int(a.rsplit(":", 1)[1])) for a in sys.argv[2].split(",")]
    w = Workload(members, n)
    w.start()
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "stop":
            break
    events = w.stop()
    print(json.dumps({"errors": [repr(x) for x in w.errors]}))
    print(to_json(events), flush=True)


if __name__ == "__main__":
    main()
