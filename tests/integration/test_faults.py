"""test_faults: the durability and idempotency promises under faults (issue 18).

- PATCH race: while pushes keep the snapshot writer busy (--snapshot-interval
  0.05, a 2^21-float instance beside a 4096-float one), every PATCH answered
  200 is in NAME.snap's header right after the reply, and survives kill -9.
- Keyed retries across kill -9: a push with an Idempotency-Key (or worker +
  seq, binary and JSON) that a snapshot reflects is replayed after kill -9 and
  a restart, never applied again.
- A create whose snapshot cannot be written (the data dir a full tmpfs) is
  answered 500 io_error, and no request ever sees the instance meanwhile or
  afterwards: pushes, GET and the list answer as for an unknown name.
- A clean stop whose final snapshots cannot be written (full or read-only
  data dir) retries for --final-snapshot-timeout, names each instance it could
  not write in the log and exits 74 (EX_IOERR); a writable data dir exits 0.

The tmpfs tests mount a 256 KiB tmpfs (root can, here); where mount fails
they are skipped with the reason.  Mounts and daemons are cleaned up even when
an assertion fails.
"""
import errno
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import threading
import time
import unittest

from harness import DESCENTD, Daemon, floats_to_bytes, quick, request

EX_IOERR = 74
OCTET = {"Content-Type": "application/octet-stream"}

_help = None


def supports(option):
    """Whether descentd knows --option (from its --help)."""
    global _help
    if _help is None:
        p = subprocess.run([DESCENTD, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        _help = p.stdout
    return "--" + option in _help


def read_header(path):
    """The JSON header of a snapshot file (proto/snapshot.md)."""
    with open(path, "rb") as f:
        head = f.read(16)
        if len(head) < 16 or head[:8] != b"DESCENTS":
            raise AssertionError("%s: not a snapshot (%r)" % (path, head))
        version, hlen = struct.unpack_from("<II", head, 8)
        if version != 1:
            raise AssertionError("%s: snapshot version %d" % (path, version))
        return json.loads(f.read(hlen).decode("utf-8"))


class FaultTest(unittest.TestCase):
    def start(self, *args, data_dir=None):
        d = Daemon(*args, data_dir=data_dir)
        self.addCleanup(d.cleanup)
        return d

    def tmpfs(self, size="256k"):
        """A fresh tmpfs of `size` (unmounted at cleanup), or skips the test."""
        path = tempfile.mkdtemp(prefix="descent-faults-")
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0700" % size, "tmpfs", path],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if p.returncode != 0:
            os.rmdir(path)
            self.skipTest("cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): %s" % p.stdout.strip())
        self.addCleanup(self.unmount, path)
        return path

    def unmount(self, path):
        if subprocess.run(["umount", path], stderr=subprocess.DEVNULL).returncode != 0:
            subprocess.run(["umount", "-l", path], stderr=subprocess.DEVNULL)
        try:
            os.rmdir(path)
        except OSError:
            pass

    def fill(self, path, leave=0):
        """Fills the file system of path with a filler file, then frees `leave` bytes."""
        filler = os.path.join(path, "filler")
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in (65536, 4096, 512, 1):
                block = b"\xff" * chunk
                while True:
                    try:
                        if os.write(fd, block) < chunk:
                            break
                    except OSError as e:
                        if e.errno != errno.ENOSPC:
                            raise
                        break
            if leave:
                os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave))
        finally:
            os.close(fd)
        return filler

    def create(self, d, name, n, **kw):
        spec = {"name": name, "algorithm": "sgd", "hyper": {"lr": 1.0},
                "tensors": [{"name": "w", "shape": [n]}]}
        spec.update(kw)
        st, body, _ = d.req("POST", "/v1/optimizers", spec)
        self.assertEqual(st, 201, body)
        return body

    def describe(self, d, name):
        st, body, _ = d.req("GET", "/v1/optimizers/%s" % name)
        self.assertEqual(st, 200, body)
        return body

    def assertCode(self, resp, status, code):
        st, body, _ = resp
        self.assertEqual((st, body["error"]["code"] if isinstance(body, dict) and "error" in body else body),
                         (status, code))


# ---- 1. an acknowledged PATCH is in the file, and survives kill -9 ------------------------

class PatchRace(FaultTest):
    def test_acknowledged_patch_is_on_disk_while_pushes_run(self):
        d = self.start("--snapshot-interval", "0.05")
        self.create(d, "p", 4096)
        self.create(d, "big", 1 << 21)
        stop = threading.Event()
        pushed = []
        errors = []

        def pusher(name, n):
            body = floats_to_bytes([0.0]) * n
            c = d.new_conn()
            k = 0
            try:
                while not stop.is_set():
                    st, data, _ = request(c, "POST", "/v1/optimizers/%s/step?params=none" % name, body, OCTET)
                    if st != 200:
                        errors.append((name, st, data))
                        return
                    k += 1
            except Exception as e:
                if not stop.is_set():
                    errors.append((name, repr(e)))
            finally:
                c.close()
                pushed.append((name, k))

        threads = [threading.Thread(target=pusher, args=a, daemon=True)
                   for a in (("p", 4096), ("p", 4096), ("big", 1 << 21))]
        self.addCleanup(stop.set)
        for t in threads:
            t.start()
        snap = os.path.join(d.data_dir, "p.snap")
        deadline = time.monotonic() + quick(8.0, 4.0)
        miss = None
        k = 0
        for i in range(quick(300, 150)):
            if time.monotonic() > deadline:
                break
            k = 1000003 + 7 * i
            st, body, _ = d.req("PATCH", "/v1/optimizers/p", {"max_staleness": k})
            self.assertEqual((st, body.get("max_staleness")), (200, k), body)
            h = read_header(snap)
            if h.get("max_staleness") != k:
                miss = (i, k, h.get("max_staleness"), h.get("version"), h.get("step"))
                break
        stop.set()
        for t in threads:
            t.join(30)
        self.assertEqual(errors, [])
        self.assertGreater(sum(n for name, n in pushed if name == "p"), 0, "no push ran beside the PATCHes")
        # kill -9 now: the acknowledged value must be the one served after the restart
        d.kill9()
        d.restart()
        served = self.describe(d, "p")["max_staleness"]
        if miss:
            self.assertEqual(served, k, "PATCH #%d {max_staleness: %d} answered 200, then %s.snap held %r "
                             "(version %r, step %r), and after kill -9 the instance serves %r"
                             % (miss[0], k, "p", miss[2], miss[3], miss[4], served))
            self.fail("PATCH #%d {max_staleness: %d} answered 200 but p.snap's header held %r right after "
                      "the reply (version %r, step %r); the restart served %r"
                      % (miss[0], k, miss[2], miss[3], miss[4], served))
        self.assertEqual(served, k)
        self.assertEqual(read_header(snap)["max_staleness"], k)


# ---- 2. keyed retries across kill -9 -------------------------------------------------------

class KeyedRetry(FaultTest):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="descent-faults-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.d = self.start("--snapshot-interval", "3600", data_dir=self.dir)

    def snapshot(self, name, step):
        """Makes sure name's current state is in a snapshot: POST .../snapshot,
        or, where that route does not exist, a no-op PATCH (which writes one)."""
        st, body, _ = self.d.req("POST", "/v1/optimizers/%s/snapshot" % name)
        if st == 404 and body["error"]["code"] == "not_found":
            st, body, _ = self.d.req("PATCH", "/v1/optimizers/%s" % name, {})
            self.assertEqual(st, 200, body)
            return
        self.assertEqual(st, 200, body)
        self.assertEqual({k: body.get(k) for k in ("name", "step", "durable")},
                         {"name": name, "step": step, "durable": True}, body)

    def params(self, name):
        st, body, _ = self.d.req("GET", "/v1/optimizers/%s/params" % name)
        self.assertEqual(st, 200, body)
        return body

    def test_idempotency_key_retry_after_kill9_replays(self):
        d = self.d
        self.create(d, "k", 4, tensors=[{"name": "w", "shape": [4], "values": [0, 0, 0, 0]}])
        st, first, _ = d.req("POST", "/v1/optimizers/k/step", {"grads": [1, 2, 3, 4]}, {"Idempotency-Key": "k1"})
        self.assertEqual((st, first), (200, {"step": 1, "params": {"w": [-1, -2, -3, -4]}}))
        self.snapshot("k", 1)
        d.kill9()
        d.restart()
        self.assertEqual(self.params("k"), {"step": 1, "params": {"w": [-1, -2, -3, -4]}})
        for g in ([1, 2, 3, 4], [9, 9, 9, 9]):  # the key names the push, whatever the body
            st, again, _ = d.req("POST", "/v1/optimizers/k/step", {"grads": g}, {"Idempotency-Key": "k1"})
            self.assertEqual((st, again), (200, first), "the retry of an applied, snapshotted push was applied again")
        self.assertEqual(self.describe(d, "k")["step"], 1)
        self.assertEqual(self.params("k"), {"step": 1, "params": {"w": [-1, -2, -3, -4]}})
        # a new key is a new push; both keys survive a clean stop too
        st, second, _ = d.req("POST", "/v1/optimizers/k/step", {"grads": [1, 1, 1, 1]}, {"Idempotency-Key": "k2"})
        self.assertEqual((st, second), (200, {"step": 2, "params": {"w": [-2, -3, -4, -5]}}))
        d.stop()
        d.restart()
        st, again, _ = d.req("POST", "/v1/optimizers/k/step", {"grads": [1, 1, 1, 1]}, {"Idempotency-Key": "k2"})
        self.assertEqual((st, again), (200, second))
        st, again, _ = d.req("POST", "/v1/optimizers/k/step", {"grads": [1, 2, 3, 4]}, {"Idempotency-Key": "k1"})
        self.assertEqual(st, 200, again)
        # the first reply, or (as past the kept-replies budget) the current parameters with their own step
        self.assertIn(again, (first, second))
        self.assertEqual(self.params("k"), {"step": 2, "params": {"w": [-2, -3, -4, -5]}})

    def test_worker_seq_retry_after_kill9_replays(self):
        d = self.d
        self.create(d, "s", 2, tensors=[{"name": "w", "shape": [2], "values": [0, 0]}])
        path = "/v1/optimizers/s/step?worker=w&seq=7"
        st, b1, _ = d.req("POST", path, floats_to_bytes([1, 2]), OCTET)
        self.assertEqual((st, b1), (200, {"step": 1, "params": {"w": [-1, -2]}}))
        st, j1, _ = d.req("POST", "/v1/optimizers/s/step", {"worker": "v", "seq": 7, "grads": [10, 20]})
        self.assertEqual((st, j1), (200, {"step": 2, "params": {"w": [-11, -22]}}))
        self.snapshot("s", 2)
        d.kill9()
        d.restart()
        self.assertEqual(self.params("s"), {"step": 2, "params": {"w": [-11, -22]}})
        st, j2, _ = d.req("POST", "/v1/optimizers/s/step", {"worker": "v", "seq": 7, "grads": [10, 20]})
        self.assertEqual((st, j2), (200, j1), "a JSON worker+seq retry was applied again after kill -9")
        st, b2, _ = d.req("POST", path, floats_to_bytes([1, 2]), OCTET)
        self.assertEqual(st, 200, b2)
        self.assertEqual(self.params("s"), {"step": 2, "params": {"w": [-11, -22]}},
                         "a binary worker+seq retry was applied again after kill -9")
        # the first reply, or (as past the kept-replies budget) the current parameters with their own step
        self.assertIn(b2, (b1, j1))
        # a new seq is a new push
        st, b3, _ = d.req("POST", "/v1/optimizers/s/step?worker=w&seq=8", floats_to_bytes([1, 1]), OCTET)
        self.assertEqual((st, b3), (200, {"step": 3, "params": {"w": [-12, -23]}}))


# ---- 3. a create that cannot be written is never visible -----------------------------------

class CreateOnFullDisk(FaultTest):
    N = 16384  # a 64 KiB snapshot, where 16 KiB are free

    def test_refused_create_is_never_seen(self):
        dir_ = self.tmpfs()
        d = self.start("--snapshot-interval", "3600", data_dir=dir_)
        self.create(d, "ok", 4)
        filler = self.fill(dir_, leave=16384)
        spec = {"name": "ghost", "algorithm": "sgd", "hyper": {"lr": 1.0},
                "tensors": [{"name": "w", "shape": [self.N]}]}
        stop = threading.Event()
        seen = {"push": {}, "get": {}, "list": 0, "lists": 0}
        errors = []
        lock = threading.Lock()

        def count(kind, st, body):
            code = body["error"]["code"] if isinstance(body, dict) and "error" in body else None
            with lock:
                seen[kind][(st, code)] = seen[kind].get((st, code), 0) + 1

        def pusher():
            grad = floats_to_bytes([1.0]) * self.N
            c = d.new_conn()
            try:
                while not stop.is_set():
                    st, body, _ = request(c, "POST", "/v1/optimizers/ghost/step?params=none", grad, OCTET)
                    count("push", st, body)
            except Exception as e:
                errors.append(repr(e))
            finally:
                c.close()

        def reader():
            c = d.new_conn()
            try:
                while not stop.is_set():
                    st, body, _ = request(c, "GET", "/v1/optimizers/ghost")
                    count("get", st, body)
                    st, body, _ = request(c, "GET", "/v1/optimizers")
                    with lock:
                        seen["lists"] += 1
                        if any(o["name"] == "ghost" for o in body["optimizers"]):
                            seen["list"] += 1
            except Exception as e:
                errors.append(repr(e))
            finally:
                c.close()

        threads = [threading.Thread(target=f, daemon=True) for f in (pusher, pusher, reader)]
        self.addCleanup(stop.set)
        for t in threads:
            t.start()
        creates = {}
        for i in range(quick(150, 60)):
            if i % 2:
                st, body, _ = d.req("PUT", "/v1/optimizers/ghost", {k: v for k, v in spec.items() if k != "name"})
            else:
                st, body, _ = d.req("POST", "/v1/optimizers", spec)
            key = (st, body["error"]["code"] if isinstance(body, dict) and "error" in body else None)
            creates[key] = creates.get(key, 0) + 1
        stop.set()
        for t in threads:
            t.join(30)
        self.assertEqual(errors, [])
        self.assertEqual(creates, {(500, "io_error"): quick(150, 60)}, "creates on a full disk")
        pushes_ok = seen["push"].get((200, None), 0)
        self.assertEqual(pushes_ok, 0, "%d pushes to the refused instance were acknowledged: %s"
                         % (pushes_ok, seen["push"]))
        self.assertEqual(list(seen["push"]), [(404, "unknown_instance")], seen["push"])
        self.assertEqual(list(seen["get"]), [(404, "unknown_instance")], seen["get"])
        self.assertEqual(seen["list"], 0, "the list showed the refused instance %d times" % seen["list"])
        self.assertGreater(sum(seen["push"].values()), 0)
        self.assertGreater(seen["lists"], 0)
        # afterwards too
        self.assertCode(d.req("GET", "/v1/optimizers/ghost"), 404, "unknown_instance")
        self.assertCode(d.req("POST", "/v1/optimizers/ghost/step", {"grads": [0] * 4}), 404, "unknown_instance")
        self.assertEqual([o["name"] for o in d.req("GET", "/v1/optimizers")[1]["optimizers"]], ["ok"])
        self.assertEqual(sorted(f for f in os.listdir(dir_) if f.startswith("ghost")), [])
        # with room again, the name can be created, and it starts at step 0
        os.unlink(filler)
        self.create(d, "ghost", self.N)
        st, body, _ = d.req("POST", "/v1/optimizers/ghost/step?params=none", floats_to_bytes([1.0]) * self.N, OCTET)
        self.assertEqual((st, body), (200, {"step": 1}))


# ---- 4. a clean stop that cannot write its final snapshots --------------------------------

class FinalSnapshot(FaultTest):
    NAMES = ("alpha", "beta")

    def run_daemon(self, dir_, break_dir):
        args = ["--snapshot-interval", "3600"]
        if supports("final-snapshot-timeout"):
            args += ["--final-snapshot-timeout", "1"]
        d = self.start(*args, data_dir=dir_)
        for name in self.NAMES:
            self.create(d, name, 256)
            for i in range(3):
                st, body, _ = d.req("POST", "/v1/optimizers/%s/step?params=none" % name, {"grads": [1.0] * 256})
                self.assertEqual((st, body), (200, {"step": i + 1}))
        self.assertEqual([self.describe(d, n)["step"] for n in self.NAMES], [3, 3])
        break_dir()
        code = d.stop(expect_clean=False)
        return d, code, d.logs()

    def failed_lines(self, log):
        return [l for l in log.splitlines() if 'msg="final snapshot failed"' in l]

    def assertFailedStop(self, d, code, log):
        self.assertEqual(code, EX_IOERR, "the stop could not write its final snapshots, yet exited %s\n%s"
                         % (code, log[-3000:]))
        lines = self.failed_lines(log)
        for name in self.NAMES:
            named = [l for l in lines if re.search(r"\binstance=%s(\s|$)" % name, l)]
            self.assertEqual(len(named), 1, "one line must name %s:\n%s" % (name, log))
            self.assertIn("level=error", named[0])
            self.assertRegex(named[0], r'\berror="[^"]+"')
        self.assertEqual(len(lines), len(self.NAMES), log)
        self.assertTrue(supports("final-snapshot-timeout"), "descentd has no --final-snapshot-timeout option")

    def assertRestartsAtLastSnapshot(self, d, step):
        d.restart()
        self.assertEqual([self.describe(d, n)["step"] for n in self.NAMES], [step] * len(self.NAMES))
        self.assertEqual([f for f in os.listdir(d.data_dir) if f.endswith(".tmp")], [])
        d.stop()

    def test_full_data_dir_exits_74_and_names_the_instances(self):
        dir_ = self.tmpfs()
        filler = []
        d, code, log = self.run_daemon(dir_, lambda: filler.append(self.fill(dir_)))
        self.assertFailedStop(d, code, log)
        os.unlink(filler[0])
        self.assertRestartsAtLastSnapshot(d, 0)  # the create's snapshot: the steps since are lost

    def test_read_only_data_dir_exits_74(self):
        dir_ = self.tmpfs()

        def remount(mode):
            p = subprocess.run(["mount", "-o", "remount,%s" % mode, dir_], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
            if p.returncode != 0:
                self.skipTest("cannot remount the tmpfs %s: %s" % (mode, p.stdout.strip()))

        d, code, log = self.run_daemon(dir_, lambda: remount("ro"))
        remount("rw")
        self.assertFailedStop(d, code, log)
        self.assertRestartsAtLastSnapshot(d, 0)

    def test_writable_data_dir_exits_0(self):
        dir_ = tempfile.mkdtemp(prefix="descent-faults-")
        self.addCleanup(shutil.rmtree, dir_, True)
        d, code, log = self.run_daemon(dir_, lambda: None)
        self.assertEqual(code, 0, log[-3000:])
        self.assertEqual(self.failed_lines(log), [])
        self.assertRestartsAtLastSnapshot(d, 3)


if __name__ == "__main__":
    unittest.main()
