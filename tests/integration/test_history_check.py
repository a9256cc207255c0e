"""test_history_check: a concurrent history of pushes and reads, checked
against the documented promises (history_check.py has the encoding and the
rules), across kill -9 cycles and a clean stop.

- The checker itself: a valid history passes; a fabricated lost update, a
  doubled push (also a retry applied twice after a restart), two states that
  are not one chain, a stale read, a phantom push, a restart that lost pushes
  older than the snapshot window and a restart state outside the chain are
  each rejected.
- Against the daemon: 8 clients push (binary, each with an idempotency key:
  4 with Idempotency-Key, 4 with worker + seq) and read one SGD instance
  (lr 1, 512 floats) with --snapshot-interval 0.05; the daemon is killed
  with -9 a few times under load and started again.  After each restart every
  client first retries, with the same key, the push that was in flight and
  (Idempotency-Key clients) its two latest pushes the restored state holds:
  a retry of a push the snapshot reflects must replay, never apply it again.
  The run ends with SIGTERM, which must lose nothing.  The whole history must
  pass the checker, and the same history with one read tampered (a push taken
  out, a push added twice) must not.
"""
import http.client
import random
import threading
import time
import unittest

import history_check as hc
from harness import Daemon, bytes_to_floats, f32, quick

N = 512  # floats: room for N * 12 distinct pushes
WINDOW = 2.0  # seconds: pushes acknowledged longer than this before a kill -9 must survive it


def ev_push(i, start, end, ok=True, gen=0, state=None, n=4, retry=False):
    e = {"op": "push", "gen": gen, "id": i, "start": start, "end": end, "ok": ok, "retry": retry,
         "step": None, "values": None}
    if state is not None:
        e["values"] = hc.values_of(state, n)
        e["step"] = len(state)
    return e


def ev_read(ids, start, end, gen=0, n=4, values=None):
    return {"op": "read", "gen": gen, "start": start, "end": end, "step": len(ids),
            "values": values if values is not None else hc.values_of(ids, n)}


def ev_restart(ids, gen, kill, clean=False, n=4, values=None):
    return {"op": "restart", "gen": gen, "kill": kill, "clean": clean, "step": len(ids),
            "values": values if values is not None else hc.values_of(ids, n)}


class Checker(unittest.TestCase):
    """The checker accepts a valid history and rejects each kind of violation."""

    def valid(self):
        # pushes 0..3 (slot 0) and 12 (slot 1), reads in between, a kill -9
        # that loses push 12 (acknowledged within the window) and keeps push 3
        # (in flight at the kill), then a retry of push 3 (replayed) and a SIGTERM
        return [
            ev_push(0, 0.0, 0.1, state=[0]),
            ev_push(1, 0.05, 0.2, state=[0, 1]),
            ev_read([0, 1], 0.3, 0.4),
            ev_push(2, 0.5, 0.6, state=[0, 1, 2]),
            ev_read([0, 1, 2], 0.55, 0.7),   # the push in flight may already show
            ev_push(3, 0.8, None, ok=None),  # in flight at the kill
            ev_push(12, 0.8, 0.9),
            ev_restart([0, 1, 2, 3], 1, kill=1.0),
            ev_push(3, 1.2, 1.3, gen=1, retry=True),  # replayed: it is in the snapshot
            ev_read([0, 1, 2, 3], 1.4, 1.5, gen=1),
            ev_push(4, 1.6, 1.7, gen=1, state=[0, 1, 2, 3, 4]),
            ev_restart([0, 1, 2, 3, 4], 2, kill=2.0, clean=True),
            ev_read([0, 1, 2, 3, 4], 2.1, 2.2, gen=2),
        ]

    def assertRejected(self, events, *words, window=0.5):
        v = hc.check(events, window=window)
        self.assertTrue(v, "the checker accepted it")
        self.assertTrue(any(all(w in m for w in words) for m in v), v)

    def test_valid_history_passes(self):
        self.assertEqual(hc.check(self.valid(), window=0.5), [])

    def test_cuts_of_a_valid_history_are_valid(self):
        ev = self.valid()
        for k in range(24):
            t = 0.05 + 0.1 * k
            self.assertEqual(hc.check(hc.cut(ev, t), window=0.5), [], t)
        self.assertEqual(len(hc.cut(ev, 5.0)), len(ev))

    def test_encoding_is_exact(self):
        ids = list(range(0, 12 * N, 7))
        m, problem = hc.decode(hc.values_of(ids, N))
        self.assertIsNone(problem)
        self.assertEqual(hc.ids_of(m), ids)
        self.assertEqual(hc.ids_of(hc.mask_of(ids)), ids)
        for i in (0, 11, 12, 12 * N - 1):
            g = hc.gradient(i, N)
            self.assertEqual(bytes_to_floats(hc.gradient_bytes(i, N)), g)
            self.assertEqual(len([x for x in g if x]), 1)
        # every slot's largest sum is exact in float32
        full = hc.values_of(range(12), 1)[0]
        self.assertEqual(f32(full), (4 ** 12 - 1) // 3)
        self.assertLess(full, 2 ** 24)

    def test_rejects_lost_update(self):
        ev = self.valid()
        ev[2] = ev_read([0], 0.3, 0.4)  # push 1 was acknowledged at 0.2
        self.assertRejected(ev, "lost update", "[1]")

    def test_rejects_doubled_push(self):
        ev = self.valid()
        ev[2] = ev_read([0, 1], 0.3, 0.4, values=[1 + 4 + 4, 0, 0, 0])  # push 1 twice
        self.assertRejected(ev, "applied twice")

    def test_rejects_retry_applied_again_after_restart(self):
        ev = self.valid()
        twice = hc.values_of([0, 1, 2, 3], 4)
        twice[0] += 4 ** 3  # the retry of push 3 was applied although the snapshot held it
        ev[9] = ev_read([0, 1, 2, 3], 1.4, 1.5, gen=1, values=twice)
        self.assertRejected(ev, "applied twice")

    def test_rejects_states_not_one_chain(self):
        ev = [ev_push(0, 0.0, 1.0, ok=None), ev_push(1, 0.0, 1.0, ok=None),
              ev_read([0], 0.1, 0.9), ev_read([1], 0.1, 0.9)]
        self.assertRejected(ev, "not one chain")

    def test_rejects_stale_read(self):
        ev = [ev_push(0, 0.0, 1.0, ok=None), ev_read([0], 0.1, 0.2), ev_read([], 0.3, 0.4)]
        self.assertRejected(ev, "stale read")

    def test_rejects_phantom(self):
        ev = [ev_push(0, 0.0, 0.1, state=[0]), ev_read([0, 5], 0.2, 0.3)]
        self.assertRejected(ev, "phantom", "[5]")
        ev = [ev_read([0], 0.2, 0.3), ev_push(0, 0.4, 0.5, state=[0])]  # seen before it was sent
        self.assertRejected(ev, "phantom", "[0]")

    def test_rejects_lost_push_that_comes_back(self):
        ev = self.valid()
        ev[9] = ev_read([0, 1, 2, 3, 12], 1.4, 1.5, gen=1)  # 12 was lost by the kill
        ev[10] = ev_push(4, 1.6, 1.7, gen=1, state=[0, 1, 2, 3, 4, 12])
        ev[11] = ev_restart([0, 1, 2, 3, 4, 12], 2, kill=2.0, clean=True)
        ev[12] = ev_read([0, 1, 2, 3, 4, 12], 2.1, 2.2, gen=2)
        self.assertRejected(ev, "phantom", "[12]")

    def test_rejects_restart_older_than_window(self):
        ev = self.valid()
        ev[7] = ev_restart([0, 1], 1, kill=1.0)  # push 2, acknowledged at 0.6, is older than 1.0 - 0.3
        ev[8:] = []
        self.assertEqual(hc.check(ev, window=0.5), [])  # within a 0.5 s window: allowed
        self.assertRejected(ev, "acknowledged more than", "[2]", window=0.3)

    def test_rejects_restart_outside_the_chain(self):
        ev = self.valid()
        ev[7] = ev_restart([0, 1, 12], 1, kill=1.0)  # 12 without 2: no state ever held that
        ev[8:] = []
        self.assertRejected(ev, "none of incarnation 0's chain")

    def test_rejects_clean_stop_that_lost_a_push(self):
        ev = self.valid()
        ev[11] = ev_restart([0, 1, 2, 3], 2, kill=2.0, clean=True)
        ev[12] = ev_read([0, 1, 2, 3], 2.1, 2.2, gen=2)
        self.assertRejected(ev, "clean stop lost", "[4]")

    def test_rejects_step_mismatch(self):
        ev = self.valid()
        ev[2]["step"] = 3
        self.assertRejected(ev, "step 3 but it holds 2 pushes")


class ConcurrentHistory(unittest.TestCase):
    CLIENTS = 8
    maxDiff = None
    phases = quick(3, 2)  # kill -9 cycles
    daemon_args = ("--snapshot-interval", "0.05")
    window = WINDOW  # test_log_faults: 0 (--durability log loses nothing acknowledged)
    min_pushes, min_reads = 200, 100

    def phase_length(self, k):
        """Seconds of load before kill -9 number k (the last: before the clean stop)."""
        return quick(3.0, 2.5)

    def setUp(self):
        self.d = Daemon(*self.daemon_args)
        self.addCleanup(self.d.cleanup)
        st, body, _ = self.d.req("POST", "/v1/optimizers", {
            "name": "h", "algorithm": "sgd", "hyper": {"lr": 1.0},
            "tensors": [{"name": "w", "shape": [N]}]})
        self.assertEqual(st, 201, body)
        self.lock = threading.Lock()
        self.gen = 0
        self.port = self.d.port
        self.restored = {0: 0}
        self.up = threading.Event()
        self.up.set()
        self.done = threading.Event()
        self.events = []
        self.next_id = 0
        self.errors = []
        self.retries = 0

    def new_id(self, gen):
        with self.lock:
            # the ids are shared out between the incarnations, so that each gets pushes
            if self.next_id >= hc.capacity(N) * (gen + 1) // (self.phases + 1):
                return None
            self.next_id += 1
            return self.next_id - 1

    def client(self, ci):
        rnd = random.Random(ci)
        seq_client = ci >= self.CLIENTS // 2
        worker = "w%d" % ci
        mine = []  # this client's push attempts, in order
        seen_gen = -1
        while not self.done.is_set():
            if not self.up.wait(0.05):
                continue
            with self.lock:
                gen, port, restored = self.gen, self.port, self.restored[self.gen]
            if gen == seen_gen:  # the daemon we talked to is gone; wait for the next one
                time.sleep(0.01)
                continue
            seen_gen = gen
            plan = []
            if gen > 0 and mine:
                if mine[-1]["ok"] is None:
                    plan.append(mine[-1]["id"])
                if seq_client:
                    if not plan:
                        plan.append(mine[-1]["id"])  # only a worker's last seq is promised
                else:
                    held = [e["id"] for e in reversed(mine) if e["ok"] and restored & hc.bit(e["id"])]
                    for i in held:
                        if len(plan) >= 3:
                            break
                        if i not in plan:
                            plan.append(i)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
            try:
                for i in plan:
                    self.push(conn, gen, i, ci, worker, seq_client, mine, retry=True)
                while not self.done.is_set():
                    time.sleep(0.004)  # a few thousand operations per incarnation are enough
                    if rnd.random() < 0.55:
                        i = self.new_id(gen)
                        if i is not None:
                            self.push(conn, gen, i, ci, worker, seq_client, mine, retry=False)
                            continue
                    self.read(conn, gen)
            except (OSError, http.client.HTTPException):
                pass  # killed: the attempt's outcome stays unknown
            except Exception as x:  # a bug in the test or a malformed reply
                self.errors.append(("client %d" % ci, repr(x)))
                return
            finally:
                conn.close()

    def push(self, conn, gen, i, ci, worker, seq_client, mine, retry):
        path = "/v1/optimizers/h/step"
        hdrs = {"Content-Type": "application/octet-stream", "Accept": "application/octet-stream"}
        if seq_client:
            path += "?worker=%s&seq=%d" % (worker, i)
        else:
            hdrs["Idempotency-Key"] = "c%d-%d" % (ci, i)
        if retry:
            path += ("&" if "?" in path else "?") + "params=none"
        e = {"op": "push", "gen": gen, "id": i, "start": time.monotonic(), "end": None, "ok": None,
             "retry": retry, "step": None, "values": None}
        self.events.append(e)
        mine.append(e)
        conn.request("POST", path, body=hc.gradient_bytes(i, N), headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        e["end"] = time.monotonic()
        if resp.status != 200:
            e["ok"] = False
            self.errors.append((i, retry, resp.status, data[:200]))
            return
        e["ok"] = True
        if retry:
            with self.lock:
                self.retries += 1
            return
        e["step"] = int(resp.getheader("Descent-Step"))
        e["values"] = data  # decoded by the checker
        if len(data) != 4 * N:
            self.errors.append((i, "reply of %d bytes" % len(data)))

    def read(self, conn, gen):
        e = {"op": "read", "gen": gen, "start": time.monotonic()}
        conn.request("GET", "/v1/optimizers/h/params", headers={"Accept": "application/octet-stream"})
        resp = conn.getresponse()
        data = resp.read()
        e["end"] = time.monotonic()
        if resp.status != 200:
            self.errors.append(("read", resp.status, data[:200]))
            return
        e["step"] = int(resp.getheader("Descent-Step"))
        e["values"] = data
        if len(data) != 4 * N:
            self.errors.append(("read", "%d bytes" % len(data)))
        self.events.append(e)

    def state(self):
        st, data, h = self.d.req("GET", "/v1/optimizers/h/params", headers={"Accept": "application/octet-stream"})
        self.assertEqual(st, 200, data)
        return int(h["descent-step"]), bytes_to_floats(data)

    def restarted(self, t_kill, clean):
        self.d.restart()
        step, values = self.state()
        with self.lock:
            self.gen += 1
            self.events.append({"op": "restart", "gen": self.gen, "kill": t_kill, "clean": clean,
                                "step": step, "values": values})
            m, _ = hc.decode(values)
            self.restored[self.gen] = m or 0
            self.port = self.d.port
        return step, values

    def test_concurrent_history_across_kill9(self):
        threads = [threading.Thread(target=self.client, args=(ci,), daemon=True) for ci in range(self.CLIENTS)]
        self.addCleanup(self.done.set)
        for t in threads:
            t.start()
        for k in range(self.phases):
            time.sleep(self.phase_length(k))
            self.up.clear()
            t_kill = time.monotonic()
            self.d.kill9()
            self.restarted(t_kill, clean=False)
            self.up.set()
        time.sleep(self.phase_length(self.phases))
        self.done.set()
        for t in threads:
            t.join(30)
        self.assertFalse(any(t.is_alive() for t in threads), "a client hung")
        before = self.state()
        self.d.stop()  # SIGTERM: exit 0, nothing lost
        self.up.clear()
        after = self.restarted(time.monotonic(), clean=True)
        self.assertEqual(after, before, "SIGTERM lost pushes")
        self.d.stop()

        self.assertEqual(self.errors, [], "pushes or reads refused")
        pushes = [e for e in self.events if e["op"] == "push" and e["ok"] and not e["retry"]]
        reads = [e for e in self.events if e["op"] == "read"]
        self.assertGreater(len(pushes), self.min_pushes, "too few pushes to test anything")
        self.assertGreater(len(reads), self.min_reads, "too few reads to test anything")
        self.assertGreater(self.retries, 0, "no retry was made after a restart")
        violations = hc.check(self.events, window=self.window)
        self.assertEqual(violations, [], "%d pushes, %d reads, %d retries" % (len(pushes), len(reads), self.retries))

        # the same history, tampered, is rejected: a lost update and a doubled push
        for e in reads:
            g, m = e["gen"], hc.decode(e["values"])[0] or 0
            earlier = [p for p in pushes if p["gen"] == g and p["end"] < e["start"] and m & hc.bit(p["id"])]
            if earlier:
                break
        else:
            self.fail("no read came after an acknowledged push")
        p = earlier[-1]
        i = p["id"]
        # checked on the history as it stood when that read ended (a cut of a valid history is valid), for speed
        prefix = hc.cut([x for x in self.events if x is not e], e["end"])
        self.assertEqual(hc.check(prefix + [e], window=self.window), [])
        for delta in (-1, 1):  # push i taken out of the read, or added to it again
            victim = dict(e, values=bytes_to_floats(e["values"]), step=e["step"] + min(delta, 0))
            victim["values"][i // hc.PER_SLOT] += delta * 4 ** (i % hc.PER_SLOT)
            v = hc.check(prefix + [victim], window=self.window)
            if delta < 0:
                self.assertTrue(any("lost update" in x and "%d" % i in x for x in v), v)
            else:
                self.assertTrue(any("applied twice" in x for x in v), v)


if __name__ == "__main__":
    unittest.main()
