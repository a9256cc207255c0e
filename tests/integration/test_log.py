"""test_log: --durability log (the write-ahead log, proto/log.md).

- replay bit for bit: an Adam instance (two tensors, keyed and worker pushes,
  a PATCH between pushes) and a sync instance (rounds of two workers) are
  killed with -9; after the restart GET .../state is the same bytes, and
  descent_log_replayed_total counts exactly the changes after the last
  snapshot (the PATCH's, for Adam).
- sparse rows (adagrad, ids up to 2^39, repeats) replay to the same state bytes.
- group commit: 16 threads push 25 times each: every push is applied once
  (step 400, the exact sum), and descent_log_fsyncs_total < 400 pushes.
- a torn tail (the last segment cut in the middle of its last entry) is
  dropped with a log line naming the file; exactly the last push is gone;
  the daemon serves and logs on.  A byte flipped in an entry followed by good
  ones refuses the start, naming the file and the offset.
- an idempotent retry after kill -9 (Idempotency-Key, and worker + seq) is
  replayed, not applied again.
- disk full (a 2 MiB tmpfs filled up): pushes are refused 507 disk_full, reads
  are served, the state does not change; once there is room writes succeed,
  and a restart holds exactly the acknowledged pushes.
- --durability other than snapshot/log, or log without a data dir, refuses
  to start.
"""
import glob
import os
import shutil
import subprocess
import tempfile
import threading
import unittest

import promtext
from harness import DESCENTD, Daemon, bytes_to_floats, floats_to_bytes, request

LOG = ("--durability", "log", "--snapshot-interval", "0")


def metric(d, name):
    st, data, _ = d.req("GET", "/metrics", raw=True)
    return promtext.value(promtext.parse(data.decode()), name)


class LogTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="descent-log-")
        self.daemons = []

    def tearDown(self):
        for d in self.daemons:
            d.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)

    def start(self, *args, data_dir=None):
        d = Daemon(*(LOG + args), data_dir=data_dir or self.dir)
        self.daemons.append(d)
        return d

    def create(self, d, spec):
        st, body, _ = d.req("POST", "/v1/optimizers", spec)
        self.assertEqual(st, 201, body)

    def push(self, d, name, grads, headers=None, query="", want=200):
        st, body, _ = d.req("POST", "/v1/optimizers/%s/step%s" % (name, query), {"grads": grads}, headers=headers)
        self.assertEqual(st, want, body)
        return body

    def raw_state(self, d, name):
        st, data, _ = d.req("GET", "/v1/optimizers/%s/state" % name, raw=True)
        self.assertEqual(st, 200, data)
        return data

    def segments(self, name):
        return sorted(glob.glob(os.path.join(self.dir, name + ".log.*")))

    # ---- replay ---------------------------------------------------------------

    def test_replay_bit_for_bit(self):
        d = self.start()
        self.create(d, {"name": "a", "algorithm": "adam", "hyper": {"lr": 0.01, "amsgrad": True, "weight_decay": 0.1},
                        "tensors": [{"name": "w", "shape": [3, 2]}, {"name": "b", "shape": [3]}]})
        self.create(d, {"name": "s", "algorithm": "sgd", "hyper": {"lr": 0.5, "momentum": 0.9}, "mode": "sync",
                        "workers": 2, "tensors": [{"name": "w", "shape": [4]}]})
        for i in range(12):
            g = {"w": [[0.1 * i, -0.2], [0.3, 0.01 * i], [1.5, -i]], "b": [i, 0.5, -0.25]}
            hdrs = {"Idempotency-Key": "k%d" % i} if i % 3 == 0 else None
            self.push(d, "a", g, headers=hdrs, query="?worker=w%d&loss=%g" % (i % 2, 1.0 / (i + 1)))
            if i == 5:
                st, body, _ = d.req("PATCH", "/v1/optimizers/a", {"hyper": {"lr": 0.003}})
                self.assertEqual(st, 200, body)
        errors = []

        def worker(w):
            c = d.new_conn()
            for r in range(3):
                st, body, _ = request(c, "POST", "/v1/optimizers/s/step?worker=%s" % w,
                                      {"grads": {"w": [r + 1, -w.count("1"), 0.5, r * 0.25]}})
                if st != 200:
                    errors.append(body)
            c.close()

        ts = [threading.Thread(target=worker, args=(w,)) for w in ("w0", "w1")]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
        self.assertEqual(errors, [])
        before = {n: self.raw_state(d, n) for n in ("a", "s")}
        self.assertEqual(d.export("s")["step"], 3)
        d.kill9()
        d.restart()
        for n in ("a", "s"):
            self.assertEqual(self.raw_state(d, n), before[n], n)
        # replayed: 6 pushes after the PATCH's snapshot, 3 rounds (one entry each)
        self.assertEqual(metric(d, "descent_log_replayed_total"), 6 + 3)
        # the keys came back through the log: a retry of k9 is replayed
        st, body, _ = d.req("POST", "/v1/optimizers/a/step", {"grads": {"w": [[9] * 2] * 3, "b": [9] * 3}},
                            headers={"Idempotency-Key": "k9"})
        self.assertEqual((st, body["step"]), (200, 10))  # its first reply's step
        self.assertEqual(self.raw_state(d, "a"), before["a"])
        d.stop()

    def test_sparse_replay_bit_for_bit(self):
        d = self.start()
        tensors = [{"name": "w", "shape": [3]},
                   {"name": "e", "shape": [1 << 40, 2], "sparse": True, "init": {"normal": {"mean": 0, "std": 1, "seed": 4}}}]
        self.create(d, {"name": "sp", "algorithm": "adagrad", "hyper": {"lr": 0.1}, "tensors": tensors})
        rows = [[5, 1 << 39, 5], [7, 5], [1 << 39]]
        for i, r in enumerate(rows):
            vals = [[0.25 * (i + j) - 0.5, 1.0 - 0.125 * j] for j in range(len(r))]
            body = self.push(d, "sp", {"w": [i, -1, 0.5], "e": {"rows": r, "values": vals}})
            self.assertEqual(body["step"], i + 1)
        before = self.raw_state(d, "sp")
        self.assertIn(b"549755813888", before)  # row 2^39, held: the rows are in the export compared
        d.kill9()
        d.restart()
        self.assertEqual(self.raw_state(d, "sp"), before)
        self.assertEqual(metric(d, "descent_log_replayed_total"), 3)
        d.stop()

    def test_group_commit(self):
        d = self.start()
        n = 1000
        self.create(d, {"name": "g", "algorithm": "sgd", "hyper": {"lr": 1.0}, "tensors": [{"name": "w", "shape": [n]}]})
        errors = []

        def client(k):
            c = d.new_conn()
            body = floats_to_bytes([-(k + 1.0)] * n)
            for _ in range(25):
                st, data, _ = request(c, "POST", "/v1/optimizers/g/step?params=none", body,
                                      {"Content-Type": "application/octet-stream"})
                if st != 200:
                    errors.append((st, data))
            c.close()

        ts = [threading.Thread(target=client, args=(k,)) for k in range(16)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        self.assertEqual(errors, [])
        st, data, h = d.req("GET", "/v1/optimizers/g/params", headers={"Accept": "application/octet-stream"})
        self.assertEqual(int(h["descent-step"]), 400)
        self.assertEqual(set(bytes_to_floats(data)), {25.0 * sum(range(1, 17))})
        entries, fsyncs = metric(d, "descent_log_entries_total"), metric(d, "descent_log_fsyncs_total")
        self.assertEqual(entries, 400)
        self.assertLess(fsyncs, 400, "no two pushes shared an fsync")
        d.stop()

    # ---- torn and corrupt logs ----------------------------------------------------

    def five_pushes(self, d):
        self.create(d, {"name": "t", "algorithm": "sgd", "hyper": {"lr": 1.0}, "tensors": [{"name": "w", "shape": [8]}]})
        return [self.push(d, "t", {"w": [-(i + 1.0)] * 8}) for i in range(5)]

    def test_torn_tail_is_dropped(self):
        d = self.start()
        replies = self.five_pushes(d)
        d.kill9()
        seg = self.segments("t")[-1]
        with open(seg, "r+b") as f:
            f.truncate(os.path.getsize(seg) - 10)  # the last entry, cut in the middle
        d.restart()
        log = d.wait_log("dropped a torn tail")
        self.assertIn("dropped a torn tail", log)
        self.assertIn(os.path.basename(seg), log)
        st, body, _ = d.req("GET", "/v1/optimizers/t/params")
        self.assertEqual(body, replies[3], "exactly the last push is gone")
        self.push(d, "t", {"w": [-10.0] * 8})
        d.kill9()
        d.restart()  # the cut segment is whole now, and a new one follows it
        st, body, _ = d.req("GET", "/v1/optimizers/t/params")
        self.assertEqual(body["step"], 5)
        self.assertEqual(body["params"]["w"], [20.0] * 8)
        d.stop()

    def test_corruption_refuses_to_start(self):
        d = self.start()
        self.five_pushes(d)
        d.kill9()
        seg = self.segments("t")[-1]
        with open(seg, "r+b") as f:
            data = bytearray(f.read())
            # the second frame's entry: header 16, frame 8 + len
            first = int.from_bytes(data[16:20], "little")
            at = 16 + 8 + first + 8 + 100
            data[at] ^= 0x40
            f.seek(0)
            f.write(data)
        with self.assertRaises(RuntimeError) as cm:
            d.restart()
        msg = str(cm.exception)
        self.assertIn(os.path.basename(seg), msg)
        self.assertIn("offset %d" % (16 + 8 + first), msg)
        self.assertIn("refusing to start", msg)

    # ---- idempotent retries across kill -9 -------------------------------------------

    def test_retry_after_kill_applied_once(self):
        d = self.start()
        self.create(d, {"name": "r", "algorithm": "adam", "hyper": {"lr": 0.1}, "tensors": [{"name": "w", "shape": [3]}]})
        self.push(d, "r", {"w": [1, 2, 3]})
        first = self.push(d, "r", {"w": [0.5, -1, 2]}, headers={"Idempotency-Key": "once"})
        seq = self.push(d, "r", {"w": [3, 3, 3]}, query="?worker=w7&seq=41")
        state = self.raw_state(d, "r")
        d.kill9()
        d.restart()
        again = self.push(d, "r", {"w": [0.5, -1, 2]}, headers={"Idempotency-Key": "once"})
        self.assertEqual(again["step"], first["step"])
        again = self.push(d, "r", {"w": [3, 3, 3]}, query="?worker=w7&seq=41")
        self.assertEqual(again, seq)  # the worker's latest push: its parameters are the state's
        self.assertEqual(self.raw_state(d, "r"), state, "a retry was applied again")
        d.stop()

    # ---- disk full --------------------------------------------------------------------

    def test_disk_full(self):
        mnt = tempfile.mkdtemp(prefix="descent-full-")
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt], capture_output=True).returncode:
            os.rmdir(mnt)
            self.skipTest("cannot mount a tmpfs (not root?)")
        self.addCleanup(os.rmdir, mnt)
        self.addCleanup(subprocess.run, ["umount", "-l", mnt])
        d = self.start(data_dir=mnt)
        n = 16384  # 64 KiB an entry
        self.create(d, {"name": "f", "algorithm": "sgd", "hyper": {"lr": 1.0}, "tensors": [{"name": "w", "shape": [n]}]})
        body = floats_to_bytes([-1.0] * n)
        hdrs = {"Content-Type": "application/octet-stream"}
        st, _, _ = d.req("POST", "/v1/optimizers/f/step?params=none", body, hdrs)
        self.assertEqual(st, 200)
        filler = os.path.join(mnt, "filler")
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"\0" * 4096) > 0:
                pass
        except OSError:
            pass
        os.close(fd)
        before = self.raw_state(d, "f")
        for _ in range(3):
            st, err, _ = d.req("POST", "/v1/optimizers/f/step?params=none", body, hdrs)
            self.assertEqual(st, 507, err)
            self.assertEqual(err["error"]["code"], "disk_full")
        self.assertEqual(self.raw_state(d, "f"), before, "a refused push changed the state")
        st, p, h = d.req("GET", "/v1/optimizers/f/params", headers={"Accept": "application/octet-stream"})
        self.assertEqual((st, h["descent-step"]), (200, "1"))
        self.assertEqual(metric(d, "descent_log_failures_total"), 3)
        os.unlink(filler)
        st, b, _ = d.req("POST", "/v1/optimizers/f/step?params=none", body, hdrs)
        self.assertEqual((st, b["step"]), (200, 2))
        after = self.raw_state(d, "f")
        d.kill9()
        d.restart()
        self.assertEqual(self.raw_state(d, "f"), after)
        d.stop()

    # ---- options --------------------------------------------------------------------------

    def test_bad_durability_refuses_to_start(self):
        for args, text in ((["--durability", "fsync", "--data-dir", self.dir], "expected snapshot or log"),
                           (["--durability", "log"], "needs --data-dir")):
            p = subprocess.run([DESCENTD, "--listen", "127.0.0.1:0"] + args, capture_output=True, text=True,
                               timeout=20)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn(text, p.stderr)


if __name__ == "__main__":
    unittest.main()
