"""test_durability: snapshots and restarts on the same data dir.

- kill -9 during a stream of pushes (--snapshot-interval 0.2): after the
  restart each instance holds exactly the state of one snapshot: for SGD
  with momentum 1 and integer gradients step, parameters and momentum buffer
  determine each other; for Adam a twin fed the same first `step` gradients
  must export the same bits.  The push loop resumes; no *.tmp file remains.
- a clean SIGTERM loses nothing (the export after the restart is the same
  bytes as before).
- a snapshot with one flipped byte, or cut short, is refused (log line, not
  loaded, set aside as NAME.snap.bad) and the daemon serves the others.
- configuration changes (create, PATCH, delete, import) are durable before
  the reply: kill -9 right after it, restart, check.
"""
import glob
import json
import os
import random
import shutil
import signal
import tempfile
import threading
import time
import unittest

from harness import Daemon, DaemonTest, quick, request

ADAM_HYPER = {"lr": 0.01, "amsgrad": True, "weight_decay": 0.1}


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def momentum_state(grads):
    """SGD lr 1, momentum 1, integer gradients: (params delta, buffer) after them (exact)."""
    n = len(grads[0]) if grads else 0
    buf = [0] * n
    p = [0] * n
    for g in grads:
        buf = [buf[i] + g[i] for i in range(n)]
        p = [p[i] - buf[i] for i in range(n)]
    return p, buf


class Durability(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="descent-dur-")
        self.daemons = []

    def tearDown(self):
        try:
            for d in self.daemons:
                if d.proc.poll() is None:
                    d.stop()
        finally:
            for d in self.daemons:
                d.cleanup()
            shutil.rmtree(self.dir, ignore_errors=True)

    def start(self, *args):
        d = Daemon(*args, data_dir=self.dir)
        self.daemons.append(d)
        return d

    def create(self, d, name, algorithm, hyper, tensors, **kw):
        spec = {"name": name, "algorithm": algorithm, "hyper": hyper, "tensors": tensors}
        spec.update(kw)
        st, body, _ = d.req("POST", "/v1/optimizers", spec)
        self.assertEqual(st, 201, body)
        return body

    def raw_state(self, d, name):
        st, data, _ = d.req("GET", "/v1/optimizers/%s/state" % name, raw=True)
        self.assertEqual(st, 200, data)
        return data

    def tmp_files(self):
        """The daemon's temporary files (NAME.snap.tmp) in the data dir."""
        return [f for f in os.listdir(self.dir) if f.endswith(".tmp")]

    # ---- kill -9 in the middle of pushes -------------------------------------------

    def test_kill9_during_pushes_restores_one_snapshot(self):
        d = self.start("--snapshot-interval", "0.2")
        init = [5.0, -3.0, 0.0]
        self.create(d, "mom", "sgd", {"lr": 1.0, "momentum": 1.0},
                    [{"name": "a", "shape": [1], "values": init[:1]}, {"name": "b", "shape": [2], "values": init[1:]}])
        ainit = [0.5, -0.25, 2.0, 1e-3]
        self.create(d, "adam", "adam", ADAM_HYPER, [{"name": "w", "shape": [4], "values": ainit}])
        rnd = random.Random(3)
        grads, agrads = [], []
        acked = []  # (time, step) of each acknowledged momentum push
        stop = threading.Event()
        errors = []

        def loop():
            c = d.new_conn(timeout=10)
            try:
                while not stop.is_set():
                    g = [rnd.randint(-3, 3) for _ in range(3)]
                    ag = [rnd.uniform(-1, 1) for _ in range(4)]
                    grads.append(g)  # recorded before sending: it may be applied without a reply
                    st, body, _ = request(c, "POST", "/v1/optimizers/mom/step", {"grads": g})
                    if st != 200:
                        errors.append(body)
                        return
                    acked.append((time.monotonic(), body["step"]))
                    agrads.append(ag)
                    st, body, _ = request(c, "POST", "/v1/optimizers/adam/step", {"grads": ag})
                    if st != 200:
                        errors.append(body)
                        return
            except (OSError, ConnectionError, Exception):
                pass  # the daemon was killed
            finally:
                c.close()

        th = threading.Thread(target=loop, daemon=True)
        th.start()
        time.sleep(quick(3.0, 3.0))
        t_kill = time.monotonic()
        d.kill9()
        stop.set()
        th.join(10)
        self.assertEqual(errors, [])
        self.assertGreater(len(acked), 20, "too few pushes to test anything")
        # a stale temporary file, as a crash in the middle of a write leaves it
        with open(os.path.join(self.dir, "mom.snap.tmp"), "wb") as f:
            f.write(b"DESCENTS half a snapshot")
        d.restart()
        self.assertEqual(self.tmp_files(), [], "temporary files left in the data dir")
        # momentum: step, params and buffer are one moment
        st = d.export("mom")
        s = st["step"]
        self.assertLessEqual(s, len(grads))
        recent = [step for (t, step) in acked if t <= t_kill - 2.5]
        self.assertGreaterEqual(s, recent[-1] if recent else 1, "the restored snapshot is too old")
        dp, buf = momentum_state(grads[:s])
        self.assertEqual(st["params"], {"a": [init[0] + dp[0]], "b": [init[1] + dp[1], init[2] + dp[2]]})
        self.assertEqual(st["buffers"], {"momentum_buffer": {"a": buf[:1], "b": buf[1:]}})
        # adam: a twin fed the same first k gradients exports the same state
        ad = d.export("adam")
        k = ad["step"]
        self.assertLessEqual(k, len(agrads) + 1)
        self.assertGreater(k, 0)
        self.create(d, "twin", "adam", ADAM_HYPER, [{"name": "w", "shape": [4], "values": ainit}])
        c = d.new_conn()
        for g in (agrads + [None])[:k]:
            self.assertIsNotNone(g, "the restored adam is ahead of every gradient sent")
            self.assertEqual(request(c, "POST", "/v1/optimizers/twin/step?params=none", {"grads": g})[0], 200)
        c.close()
        tw = d.export("twin")
        self.assertEqual((ad["step"], ad["params"], ad["buffers"]), (tw["step"], tw["params"], tw["buffers"]))
        # the push loop resumes from the restored step
        g = [1, 2, 3]
        st2, body, _ = d.req("POST", "/v1/optimizers/mom/step", {"step": s, "grads": g})
        self.assertEqual(st2, 200, body)
        dp, buf = momentum_state(grads[:s] + [g])
        self.assertEqual(body, {"step": s + 1, "params": {"a": [init[0] + dp[0]], "b": [init[1] + dp[1], init[2] + dp[2]]}})
        self.assertEqual(d.req("POST", "/v1/optimizers/adam/step", {"grads": [0, 0, 0, 0]})[1]["step"], k + 1)
        d.stop()
        self.assertEqual(self.tmp_files(), [])

    # ---- clean shutdown -----------------------------------------------------------------

    def test_sigterm_loses_nothing(self):
        d = self.start("--snapshot-interval", "3600")
        self.create(d, "a", "adam", ADAM_HYPER, [{"name": "w", "shape": [3, 2], "init": {"normal": {"std": 1, "seed": 4}}}])
        self.create(d, "r", "rmsprop", {"centered": True, "momentum": 0.5}, [{"name": "w", "shape": [5]}])
        self.create(d, "rs", "random_search", {"seed": 3, "center": "best"}, [{"name": "x", "shape": [2]}])
        self.create(d, "sy", "sgd", {"lr": 0.1}, [{"name": "w", "shape": [2]}], mode="sync", workers=2)
        c = d.new_conn()
        for i in range(quick(300, 60)):
            request(c, "POST", "/v1/optimizers/a/step?params=none", {"grads": [i % 7 - 3.5, 1, 2, 3, 4, 0.25]})
            request(c, "POST", "/v1/optimizers/r/step?params=none", {"grads": [i, -i, 0.5, 1e-3, 7]})
        for loss in (3.0, 1.0, 2.0):
            cand = request(c, "POST", "/v1/optimizers/rs/ask", {})[1]["candidate"]
            request(c, "POST", "/v1/optimizers/rs/tell", {"candidate": cand, "loss": loss})
        # a sync push waiting at shutdown is answered 503 and applies nothing
        out = {}

        def waiter():
            c2 = d.new_conn()
            try:
                out["r"] = request(c2, "POST", "/v1/optimizers/sy/step", {"worker": "w1", "grads": [1, 1]})
            except Exception as e:
                out["e"] = e
            c2.close()

        th = threading.Thread(target=waiter)
        th.start()
        for _ in range(500):
            if request(c, "GET", "/v1/optimizers/sy")[1]["waiting"]:
                break
            time.sleep(0.01)
        c.close()
        before = {n: self.raw_state(d, n) for n in ("a", "r", "rs", "sy")}
        d.stop()  # SIGTERM; asserts exit 0
        th.join(10)
        self.assertNotIn("e", out)
        self.assertEqual((out["r"][0], out["r"][1]["error"]["code"]), (503, "shutting_down"))
        d.restart()
        for n, doc in before.items():
            self.assertEqual(self.raw_state(d, n), doc, n)
        self.assertEqual(json.loads(before["sy"])["step"], 0)

    def test_names_that_look_like_temporary_files(self):
        # instance names may contain ".tmp"; only the daemon's own temporary
        # files may be swept away at start, never a snapshot
        d = self.start("--snapshot-interval", "3600")
        names = ["model.tmp", "a.tmpx", "x.snap.tmp", "tmp", "b.snap", "c.snap.bad"]
        for n in names:
            self.create(d, n, "sgd", {"lr": 1.0}, [{"name": "w", "shape": [1], "values": [len(n)]}])
        # the PUT form of create is durable before its reply too
        st, body, _ = d.req("PUT", "/v1/optimizers/put.tmp", {"algorithm": "sgd", "tensors": [{"name": "w", "shape": [1]}]})
        self.assertEqual(st, 201, body)
        docs = {n: self.raw_state(d, n) for n in names + ["put.tmp"]}
        d.kill9()
        with open(os.path.join(self.dir, "model.tmp.snap.tmp"), "wb") as f:
            f.write(b"half")
        d.restart()
        st, body, _ = d.req("GET", "/v1/optimizers")
        self.assertEqual(sorted(o["name"] for o in body["optimizers"]), sorted(docs))
        for n, doc in docs.items():
            self.assertEqual(self.raw_state(d, n), doc, n)
        self.assertEqual(self.tmp_files(), [])

    # ---- damaged files -------------------------------------------------------------------

    def test_damaged_snapshots_refused_others_served(self):
        d = self.start("--snapshot-interval", "3600")
        names = ["flip-magic", "flip-header", "flip-params", "flip-buffer", "flip-crc",
                 "cut-empty", "cut-10", "cut-half", "cut-1", "good"]
        for n in names:
            self.create(d, n, "adam", {}, [{"name": "w", "shape": [16], "init": {"uniform": {"low": -1, "high": 1, "seed": 1}}}])
            d.req("POST", "/v1/optimizers/%s/step" % n, {"grads": [0.5] * 16})
        good = self.raw_state(d, "good")
        d.stop()
        files = {n: os.path.join(self.dir, n + ".snap") for n in names}
        sizes = {n: os.path.getsize(p) for n, p in files.items()}
        damaged = {}
        for n, p in files.items():
            data = bytearray(read_bytes(p))
            size = len(data)
            if n.startswith("flip-"):
                at = {"flip-magic": 3, "flip-header": 30, "flip-params": size - 4 - 3 * 64 + 5,
                      "flip-buffer": size - 4 - 20, "flip-crc": size - 2}[n]
                data[at] ^= 0x10
            elif n == "cut-empty":
                data = data[:0]
            elif n == "cut-10":
                data = data[:10]
            elif n == "cut-half":
                data = data[:size // 2]
            elif n == "cut-1":
                data = data[:-1]
            else:
                continue
            damaged[n] = bytes(data)
            with open(p, "wb") as f:
                f.write(data)
        # a snapshot whose contents belong to another name is refused too
        shutil.copy(files["good"], os.path.join(self.dir, "alias.snap"))
        d.restart()
        log = d.logs()
        st, body, _ = d.req("GET", "/v1/optimizers")
        self.assertEqual([o["name"] for o in body["optimizers"]], ["good"])
        self.assertEqual(self.raw_state(d, "good"), good)
        for n, data in list(damaged.items()) + [("alias", read_bytes(files["good"]))]:
            with self.subTest(snapshot=n):
                self.assertIn("snapshot refused", log)
                lines = [l for l in log.splitlines() if "%s.snap" % n in l and "refused" in l]
                self.assertEqual(len(lines), 1, "no single log line names %s.snap:\n%s" % (n, log))
                self.assertError404(d, n)
                self.assertFalse(os.path.exists(os.path.join(self.dir, n + ".snap")))
                self.assertEqual(read_bytes(os.path.join(self.dir, n + ".snap.bad")), data,
                                 "the damaged file was not set aside unchanged")
        # the names are free again, and a second restart reports nothing new
        self.create(d, "cut-half", "sgd", {}, [{"name": "w", "shape": [1]}])
        d.stop()
        d.restart()
        self.assertNotIn("refused", d.logs())
        st, body, _ = d.req("GET", "/v1/optimizers")
        self.assertEqual([o["name"] for o in body["optimizers"]], ["cut-half", "good"])
        self.assertEqual(self.raw_state(d, "good"), good)

    def assertError404(self, d, name):
        st, body, _ = d.req("GET", "/v1/optimizers/%s" % name)
        self.assertEqual((st, body["error"]["code"]), (404, "unknown_instance"))

    # ---- configuration changes are durable before the reply ------------------------------

    def test_config_changes_durable_before_reply(self):
        d = self.start("--snapshot-interval", "3600")
        spec_t = [{"name": "w", "shape": [3], "values": [1, 2, 3]}]
        # create
        self.create(d, "c", "adamw", {"lr": 0.5}, spec_t, schedule={"type": "exponential", "gamma": 0.5})
        self.create(d, "gone", "sgd", {}, spec_t)
        doc = self.raw_state(d, "c")
        d.kill9()
        d.restart()
        self.assertEqual(self.raw_state(d, "c"), doc)
        # patch (the pushes before it are saved with it: one moment)
        d.req("POST", "/v1/optimizers/c/step", {"grads": [1, 1, 1]})
        st, body, _ = d.req("PATCH", "/v1/optimizers/c", {"hyper": {"lr": 0.25, "amsgrad": True}, "clip_grad_norm": 3})
        self.assertEqual(st, 200, body)
        doc = self.raw_state(d, "c")
        d.kill9()
        d.restart()
        self.assertEqual(self.raw_state(d, "c"), doc)
        st, body, _ = d.req("GET", "/v1/optimizers/c")
        self.assertEqual((body["hyper"]["lr"], body["hyper"]["amsgrad"], body["clip_grad_norm"], body["step"]),
                         (0.25, True, 3, 1))
        # delete
        st, body, _ = d.req("DELETE", "/v1/optimizers/gone")
        self.assertEqual(st, 200, body)
        d.kill9()
        d.restart()
        self.assertError404(d, "gone")
        self.assertFalse(os.path.exists(os.path.join(self.dir, "gone.snap")))
        # import, new and replacing
        imp = {"algorithm": "rmsprop", "hyper": {"centered": True}, "step": 9,
               "tensors": [{"name": "v", "shape": [2]}], "params": {"v": [0.5, 1.5]},
               "buffers": {"square_avg": {"v": [1, 2]}, "grad_avg": {"v": [0.25, -0.25]}}}
        st, body, _ = d.req("PUT", "/v1/optimizers/imp/state", imp)
        self.assertEqual(st, 201, body)
        st, body, _ = d.req("PUT", "/v1/optimizers/c/state", imp)
        self.assertEqual(st, 200, body)
        docs = {n: self.raw_state(d, n) for n in ("imp", "c")}
        d.kill9()
        d.restart()
        for n, doc in docs.items():
            self.assertEqual(self.raw_state(d, n), doc, n)
        # delete and create again under the same name
        d.req("DELETE", "/v1/optimizers/imp")
        self.create(d, "imp", "sgd", {"lr": 0.125}, spec_t)
        doc = self.raw_state(d, "imp")
        d.kill9()
        d.restart()
        self.assertEqual(self.raw_state(d, "imp"), doc)
        st, body, _ = d.req("GET", "/v1/optimizers")
        self.assertEqual([o["name"] for o in body["optimizers"]], ["c", "imp"])

    def test_replaced_or_deleted_instance_never_comes_back(self):
        # periodic snapshots run while instances are replaced (PUT) and deleted
        # and created again; after kill -9 the files hold the last acknowledged
        # change, never an older incarnation saved late
        d = self.start("--snapshot-interval", "0.01")
        for k in range(2):  # other instances keep the snapshot writer busy
            self.create(d, "busy%d" % k, "adam", {}, [{"name": "w", "shape": [5000]}])
        stop = threading.Event()

        def churn():
            c = d.new_conn()
            try:
                while not stop.is_set():
                    for k in range(2):
                        request(c, "POST", "/v1/optimizers/busy%d/step?params=none" % k, {"grads": [0.1] * 5000})
                        request(c, "PATCH", "/v1/optimizers/busy%d" % k, {"hyper": {"lr": 0.001}})
            except Exception:
                pass
            finally:
                c.close()

        ths = [threading.Thread(target=churn, daemon=True) for _ in range(2)]
        for t in ths:
            t.start()
        c = d.new_conn()
        last = None
        for i in range(quick(60, 30)):
            doc = {"algorithm": "sgd", "hyper": {"lr": 0.0}, "step": i,
                   "tensors": [{"name": "w", "shape": [1]}], "params": {"w": [i]}}
            st, body, _ = request(c, "PUT", "/v1/optimizers/x/state", doc)
            self.assertIn(st, (200, 201), body)
            # dirty it so a periodic snapshot wants to write this incarnation
            request(c, "POST", "/v1/optimizers/x/step?params=none", {"grads": [0]})
            if i % 3 == 0:
                self.assertEqual(request(c, "DELETE", "/v1/optimizers/y")[0] in (200, 404), True)
                request(c, "POST", "/v1/optimizers", {"name": "y", "algorithm": "sgd",
                                                      "tensors": [{"name": "w", "shape": [1], "values": [i]}]})
                request(c, "POST", "/v1/optimizers/y/step?params=none", {"grads": [0]})
                last = i
        c.close()
        d.kill9()
        stop.set()
        for t in ths:
            t.join(10)
        d.restart()
        st = d.export("x")
        self.assertEqual(st["params"]["w"][0], i, "an older imported state came back after kill -9")
        self.assertIn(st["step"], (i, i + 1))
        y = d.export("y")
        self.assertEqual(y["params"]["w"], [last], "an older incarnation of y came back")


if __name__ == "__main__":
    unittest.main()
