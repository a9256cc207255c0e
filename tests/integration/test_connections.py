"""test_connections: connections that do nothing, or too little, do not
stop real workers.

- 500 idle connections (silent, half a request line, or keep-alive after a
  request) held open while a worker pushes: every push is answered promptly
  and the parameters are exact.
- slowloris: clients dribbling a body (and headers) a byte at a time while a
  worker pushes; a dribbled body is cut off after the idle timeout (the
  daemon's own timeout only counts silence), so dribblers holding every
  connection slot (--max-connections) give way to a real worker; an idle
  connection is closed after --connection-timeout.
"""
import socket
import threading
import time
import unittest

from harness import Daemon, DaemonTest, floats_to_bytes, quick, raise_fd_limit, request


class Worker:
    """Pushes gradient [1, 2] to SGD(lr=1) instance `name` k times; latencies in .lat."""

    def __init__(self, d, name, k):
        self.d, self.name, self.k = d, name, k
        self.lat, self.steps = [], []

    def run(self):
        c = self.d.new_conn(timeout=30)
        for _ in range(self.k):
            t0 = time.monotonic()
            st, body, _ = request(c, "POST", "/v1/optimizers/%s/step" % self.name, {"grads": [1, 2]})
            self.lat.append(time.monotonic() - t0)
            assert st == 200, body
            self.steps.append(body["step"])
        c.close()


class Dribbler(threading.Thread):
    """Sends `head` and then one byte of `rest` every `every` seconds until
    stopped or cut off (.cut_after: seconds until the daemon closed it)."""

    def __init__(self, port, head, rest, every):
        super().__init__(daemon=True)
        self.s = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.s.sendall(head)
        self.rest, self.every = rest, every
        self.stop = threading.Event()
        self.cut_after = None
        self.t0 = time.monotonic()

    def run(self):
        self.s.settimeout(0.001)
        i = 0
        while not self.stop.is_set() and i < len(self.rest):
            try:
                self.s.send(self.rest[i:i + 1])
                i += 1
                if self.s.recv(4096) == b"":
                    raise ConnectionResetError
            except socket.timeout:
                pass
            except OSError:
                self.cut_after = time.monotonic() - self.t0
                break
            self.stop.wait(self.every)
        self.s.close()


class Connections(DaemonTest):
    def setUp(self):
        super().setUp()
        self.create("m", "sgd", hyper={"lr": 1.0}, tensors=[{"name": "w", "shape": [2], "values": [0, 0]}])

    def test_500_idle_connections(self):
        n = 500
        self.assertGreaterEqual(raise_fd_limit(n + 200), n + 100)
        idle = []
        try:
            for i in range(n):
                s = socket.create_connection(("127.0.0.1", self.d.port), timeout=10)
                if i % 3 == 1:
                    s.sendall(b"POST /v1/optimizers/m/st")  # half a request line
                elif i % 3 == 2:  # one request, then idle on keep-alive
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    self.assertIn(b'"status":"ok"', s.recv(4096))
                idle.append(s)
            pushes = quick(200, 60)
            w = Worker(self.d, "m", pushes)
            t0 = time.monotonic()
            w.run()
            total = time.monotonic() - t0
            self.assertEqual(w.steps, list(range(1, pushes + 1)))
            self.assertLess(max(w.lat), 2.0, "a push waited %.2fs" % max(w.lat))
            self.assertLess(total, pushes * 0.05 + 5)
            # new connections are still accepted while the idle ones stay open
            for k in range(20):
                c = self.d.new_conn(timeout=5)
                st, body, _ = request(c, "POST", "/v1/optimizers/m/step", {"grads": [1, 2]})
                c.close()
                self.assertEqual((st, body["step"]), (200, pushes + k + 1))
            st, body, _ = self.d.req("GET", "/v1/optimizers/m/params")
            self.assertEqual(body["params"]["w"], [-(pushes + 20), -2 * (pushes + 20)])
            # the idle connections are still open (not dropped to make room)
            alive = 0
            for s in idle[::3]:
                s.settimeout(0)
                try:
                    alive += s.recv(1) != b""
                except BlockingIOError:
                    alive += 1
            self.assertGreater(alive, len(idle[::3]) * 0.9)
        finally:
            for s in idle:
                s.close()

    def test_slowloris_does_not_starve_workers(self):
        body_head = (b"POST /v1/optimizers/m/step HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100000\r\n\r\n")
        drib = [Dribbler(self.d.port, body_head, b" " * 100000, 0.05) for _ in range(30)]
        drib += [Dribbler(self.d.port, b"GET /healthz HTTP/1.1\r\n", b"X-Slow: 1\r\n" * 10000, 0.05) for _ in range(30)]
        for t in drib:
            t.start()
        try:
            time.sleep(0.3)
            pushes = quick(150, 50)
            w = Worker(self.d, "m", pushes)
            w.run()
            self.assertEqual(w.steps, list(range(1, pushes + 1)))
            self.assertLess(max(w.lat), 2.0, "a push waited %.2fs" % max(w.lat))
        finally:
            for t in drib:
                t.stop.set()
            for t in drib:
                t.join(10)
        # the dribbled bodies never reached a handler: nothing was applied by them
        st, body, _ = self.d.req("GET", "/v1/optimizers/m/params")
        self.assertEqual(body, {"step": pushes, "params": {"w": [-pushes, -2 * pushes]}})


class Timeouts(unittest.TestCase):
    def setUp(self):
        self.d = None

    def tearDown(self):
        if self.d:
            try:
                self.d.stop()
            finally:
                self.d.cleanup()

    def test_idle_connection_closed_after_timeout(self):
        self.d = Daemon("--connection-timeout", "1")
        s = socket.create_connection(("127.0.0.1", self.d.port), timeout=15)
        t0 = time.monotonic()
        self.assertEqual(s.recv(100), b"")
        dt = time.monotonic() - t0
        s.close()
        self.assertGreaterEqual(dt, 0.9)
        self.assertLess(dt, 6)

    def test_dribbled_body_cut_off_and_slots_freed(self):
        # every connection slot held by a dribbler: a real worker gets in once
        # they are cut off (about --connection-timeout seconds)
        slots = 24
        self.d = Daemon("--connection-timeout", "2", "--max-connections", str(slots), "--threads", "2")
        st, body, _ = self.d.req("POST", "/v1/optimizers", {"name": "m", "algorithm": "sgd", "hyper": {"lr": 1.0},
                                                            "tensors": [{"name": "w", "shape": [1]}]})
        self.assertEqual(st, 201, body)
        self.d.conn.close()
        self.d.conn = None
        head = (b"POST /v1/optimizers/m/step HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100000\r\n\r\n")
        drib = [Dribbler(self.d.port, head, b" " * 100000, 0.2) for _ in range(slots)]
        for t in drib:
            t.start()
        time.sleep(0.5)
        t0 = time.monotonic()
        answered = None
        while time.monotonic() - t0 < 15 and answered is None:
            try:
                c = self.d.new_conn(timeout=3)
                st, body, _ = request(c, "POST", "/v1/optimizers/m/step", {"grads": [2]})
                c.close()
                if st == 200:
                    answered = time.monotonic() - t0
                    self.assertEqual(body, {"step": 1, "params": {"w": [-2]}})
            except (OSError, ConnectionError, Exception):
                time.sleep(0.2)
        # every dribbler is cut off about 2 s after the daemon took its
        # connection (those beyond the limit were taken as slots freed)
        deadline = time.monotonic() + 15
        for t in drib:
            t.join(max(0.0, deadline - time.monotonic()))
        for t in drib:
            t.stop.set()
        self.assertIsNotNone(answered, "the dribblers starved the worker for 15 s")
        self.assertLess(answered, 8)
        cut = [t.cut_after for t in drib if t.cut_after is not None]
        self.assertEqual(len(cut), slots, "some dribblers were never cut off")
        for c in cut:
            self.assertGreater(c, 1.5)
            self.assertLess(c, 12)
        self.assertIn("slow request cut off", self.d.logs())


if __name__ == "__main__":
    unittest.main()
