"""test_client_python: the Python client (client/python/descent_client.py)
against real daemons: every operation, the torch reference vectors through
push (binary and JSON, float32 bits), errors, long-poll, idempotent retries,
the worker tools, the example worker end to end, and sharding over three
daemons compared bit for bit with one daemon."""
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from array import array

from harness import ROOT, TORCH_CASES, Daemon, load_case

sys.path.insert(0, os.path.join(ROOT, "client", "python"))
import descent_client as dc  # noqa: E402
from descent_client import Client, DescentError, DescentStepMismatch  # noqa: E402

EXAMPLE = os.path.join(ROOT, "client", "python", "examples", "train_quadratic.py")


def bits(values):
    """The float32 bits of values (any sequence of numbers), for exact comparison."""
    return array("f", values).tobytes()


def flat_bits(params):
    return b"".join(bits(v) for v in params.values())


class DaemonsCase(unittest.TestCase):
    """Daemons shared by the tests of a class (each test uses its own names)."""

    ndaemons = 1
    daemon_args = ()

    @classmethod
    def setUpClass(cls):
        cls.daemons = []
        try:
            for _ in range(cls.ndaemons):
                cls.daemons.append(Daemon(*cls.daemon_args))
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for d in cls.daemons:
            try:
                d.stop()
            finally:
                d.cleanup()

    def setUp(self):
        self.clients = []

    def tearDown(self):
        for c in self.clients:
            c.close()

    def client(self, *args, **kw):
        """A Client closed at the end of the test."""
        c = Client(*args, **kw)
        self.clients.append(c)
        return c

    def assertRaisesDescent(self, status, code, fn, *args, **kw):
        with self.assertRaises(DescentError) as cm:
            fn(*args, **kw)
        e = cm.exception
        self.assertEqual((e.status, e.code), (status, code), e)
        self.assertTrue(e.message, e)
        return e


# ---- one daemon ---------------------------------------------------------------------------

class Operations(DaemonsCase):
    def setUp(self):
        super().setUp()
        self.c = self.client(self.daemons[0].url)

    def test_create_list_describe_set_patch_delete(self):
        d = self.c.create(name="ops", algorithm="adam", hyper={"lr": 0.001, "betas": [0.9, 0.999]},
                          tensors=[{"name": "W", "shape": [10, 785], "init": {"normal": {"std": 0.0001, "seed": 42}}},
                                   {"name": "b", "shape": [10], "values": [0] * 10}])
        self.assertEqual((d["name"], d["algorithm"], d["step"], d["size"]), ("ops", "adam", 0, 7860))
        self.assertIn("ops", [o["name"] for o in self.c.list()])
        d = self.c.describe("ops")
        self.assertEqual([(t["name"], t["shape"], t["offset"]) for t in d["tensors"]],
                         [("W", [10, 785], 0), ("b", [10], 7850)])
        self.assertEqual(self.c.set("ops", lr=0.0005)["hyper"]["lr"], 0.0005)
        self.assertEqual(self.c.describe("ops")["hyper"]["lr"], 0.0005)
        self.assertEqual(self.c.patch("ops", clip_grad_norm=2.5, hyper={"eps": 1e-6})["clip_grad_norm"], 2.5)
        self.assertEqual(self.c.describe("ops")["hyper"]["eps"], 1e-6)
        self.assertEqual(self.c.delete("ops"), {"name": "ops", "deleted": True})
        self.assertRaisesDescent(404, "unknown_instance", self.c.describe, "ops")
        self.assertNotIn("ops", [o["name"] for o in self.c.list()])
        self.assertEqual(self.c.health(), {"status": "ok"})

    def test_push_and_pull_forms(self):
        self.c.create(name="forms", algorithm="sgd", hyper={"lr": 0.5},
                      tensors=[{"name": "w", "shape": [2, 2], "values": [[1, 2], [3, 4]]}, {"name": "b", "shape": [1]}])
        p = self.c.pull("forms")
        self.assertEqual((p.step, p), (0, {"w": [1, 2, 3, 4], "b": [0]}))
        p = self.c.push("forms", {"w": [[1, 1], [1, 1]], "b": [2]})           # nested, binary
        self.assertEqual((p.step, p), (1, {"w": [0.5, 1.5, 2.5, 3.5], "b": [-1]}))
        p = self.c.push("forms", [1, 1, 1, 1, 2], binary=False)               # flat, JSON
        self.assertEqual((p.step, p), (2, {"w": [0, 1, 2, 3], "b": [-2]}))
        p = self.c.push("forms", {"w": [1, 1, 1, 1], "b": [2]}, binary=False)  # dict, JSON
        self.assertEqual(p.flat(), [-0.5, 0.5, 1.5, 2.5, -3])
        p = self.c.push("forms", array("f", [1, 1, 1, 1, 2]), params=False)   # array, no params back
        self.assertEqual((p.step, dict(p)), (4, {}))
        p = self.c.push("forms", bits([1, 1, 1, 1, 2]), params=False, binary=False)  # float32 bytes
        self.assertEqual((p.step, dict(p)), (5, {}))
        for binary in (True, False):
            p = self.c.pull("forms", binary=binary)
            self.assertEqual((p.step, p), (5, {"w": [-1.5, -0.5, 0.5, 1.5], "b": [-5]}))
        # float32 rounding is the same either way: 0.1 is sent and returned as float32
        self.c.create(name="round", algorithm="sgd", hyper={"lr": 1.0}, tensors=[{"name": "x", "shape": [3]}])
        g = [0.1, 1 / 3, 1e-45]
        a = self.c.push("round", g)
        b = self.c.push("round", g, binary=False)
        self.assertEqual(bits(a["x"]), bits([-v for v in array("f", g)]))
        self.assertEqual(bits(b["x"]), bits([2 * -v for v in array("f", g)]))
        self.assertEqual(bits(self.c.pull("round", binary=False)["x"]), bits(self.c.pull("round")["x"]))

    def test_torch_vectors_binary_and_json(self):
        """Every torch reference run replayed through push: each step's
        parameters and the final optimizer state equal torch's float32 bits."""
        for case in TORCH_CASES:
            ref = load_case(case)
            for binary in (True, False):
                name = "%s-%s" % (case, "bin" if binary else "json")
                with self.subTest(case=name):
                    self.c.create(name=name, algorithm=ref["algorithm"], hyper=ref["hyper"],
                                  tensors=[{"name": "p", "shape": [ref["n"]], "values": ref["init"]}])
                    for t, (g, want) in enumerate(zip(ref["grads"], ref["expected"])):
                        p = self.c.push(name, g, binary=binary, worker="w", step=t)
                        self.assertEqual(p.step, t + 1)
                        self.assertEqual(bits(p["p"]), bits(want), "%s step %d" % (name, t + 1))
                    state = self.c.export_state(name)
                    for buf, want in ref["final_state"].items():
                        if buf != "step":
                            self.assertEqual(bits(state["buffers"][buf]["p"]), bits(want), "%s %s" % (name, buf))
                    self.c.delete(name)

    def test_errors_map_to_descent_error(self):
        self.c.create(name="err", algorithm="adam", max_staleness=1, tensors=[{"name": "w", "shape": [4]}])
        e = self.assertRaisesDescent(404, "unknown_instance", self.c.describe, "nope")
        self.assertIn("nope", e.message)
        self.assertRaisesDescent(404, "unknown_instance", self.c.pull, "nope")
        self.assertRaisesDescent(404, "unknown_instance", self.c.push, "nope", [1])
        self.assertRaisesDescent(409, "already_exists", self.c.create, name="err", algorithm="sgd",
                                 tensors=[{"name": "w", "shape": [1]}])
        self.assertRaisesDescent(422, "invalid_value", self.c.create, name="neg", algorithm="sgd", hyper={"lr": -1},
                                 tensors=[{"name": "w", "shape": [1]}])
        self.assertRaisesDescent(422, "unknown_algorithm", self.c.create, name="x", algorithm="lbfgs",
                                 tensors=[{"name": "w", "shape": [1]}])
        self.assertRaisesDescent(422, "unknown_hyperparameter", self.c.set, "err", momentum=0.9)
        self.assertRaisesDescent(400, "bad_request", self.c.create, name="x", algorithm="sgd")
        # checked by the client with the daemon's codes
        self.assertRaisesDescent(400, "bad_length", self.c.push, "err", [1, 2, 3])
        self.assertRaisesDescent(400, "unknown_tensor", self.c.push, "err", {"w": [1, 2, 3, 4], "v": [1]})
        self.assertRaisesDescent(400, "bad_length", self.c.push, "err", {"w": [[1, 2], [3, 4]]})
        self.assertRaisesDescent(422, "not_finite", self.c.push, "err", [1, float("inf"), 3, 4], binary=False)
        # refused by the daemon
        e = self.assertRaisesDescent(422, "not_finite", self.c.push, "err", [1, float("nan"), 3, 4])
        self.assertIn("w[1]", e.message)
        self.c.push("err", [1, 1, 1, 1], step=0)
        self.c.push("err", [1, 1, 1, 1], step=1)
        e = self.assertRaisesDescent(409, "stale_gradient", self.c.push, "err", [1, 1, 1, 1], step=0)
        self.assertEqual(e.step, 2)
        e = self.assertRaisesDescent(409, "step_ahead", self.c.push, "err", [1, 1, 1, 1], step=99)
        self.assertEqual(e.step, 2)
        self.assertEqual(self.c.pull("err").step, 2)  # nothing refused changed anything
        self.c.create(name="errsync", algorithm="sgd", mode="sync", workers=2, tensors=[{"name": "w", "shape": [1]}])
        self.assertRaisesDescent(400, "missing_worker", self.c.push, "errsync", [1])
        self.assertRaisesDescent(409, "wrong_algorithm", self.c.ask, "err")
        # a daemon that is not there
        dead = self.client("http://127.0.0.1:9", timeout=5)
        e = self.assertRaisesDescent(None, "unreachable", dead.list)

    def test_long_poll(self):
        self.c.create(name="poll", algorithm="sgd", hyper={"lr": 1}, tensors=[{"name": "w", "shape": [2]}])
        got = {}

        def waiter():
            t0 = time.monotonic()
            got["p"] = self.c.pull("poll", wait_for_step=2, timeout_ms=20000)
            got["t"] = time.monotonic() - t0

        th = threading.Thread(target=waiter)
        th.start()
        time.sleep(0.3)
        self.assertNotIn("p", got)  # still waiting at step 0
        self.c.push("poll", [1, 2])
        time.sleep(0.1)
        self.assertNotIn("p", got)  # step 1 is not enough
        self.c.push("poll", [1, 2])
        th.join(10)
        self.assertEqual((got["p"].step, got["p"]), (2, {"w": [-2, -4]}))
        self.assertGreater(got["t"], 0.35)
        # a long-poll that times out answers with the older step
        t0 = time.monotonic()
        p = self.c.pull("poll", wait_for_step=5, timeout_ms=300, binary=False)
        self.assertEqual(p.step, 2)
        self.assertGreaterEqual(time.monotonic() - t0, 0.28)

    def test_idempotent_retry_applied_once(self):
        self.c.create(name="idem", algorithm="sgd", hyper={"lr": 1}, tensors=[{"name": "w", "shape": [2]}])
        a = self.c.push("idem", [1, 1], worker="w1", seq=7)
        b = self.c.push("idem", [1, 1], worker="w1", seq=7)  # a retry: the first reply
        self.assertEqual((a.step, a), (1, {"w": [-1, -1]}))
        self.assertEqual((b.step, b), (1, {"w": [-1, -1]}))
        c = self.c.push("idem", [2, 2], idempotency_key="k-42", binary=False)
        d = self.c.push("idem", [2, 2], idempotency_key="k-42")
        self.assertEqual((c.step, c), (2, {"w": [-3, -3]}))
        self.assertEqual((d.step, d), (2, {"w": [-3, -3]}))
        self.assertEqual(self.c.pull("idem").step, 2)
        e = self.c.push("idem", [1, 1], worker="w1", seq=8)
        self.assertEqual((e.step, e), (3, {"w": [-4, -4]}))

    def test_ask_tell(self):
        self.c.create(name="rs", algorithm="random_search", tensors=[{"name": "x", "shape": [3], "values": [1, 2, 3]}])
        a = self.c.ask("rs")
        self.assertEqual(len(a["params"]["x"]), 3)
        r = self.c.tell("rs", a["candidate"], 1.5)
        self.assertTrue(r["improved"])
        self.assertEqual(r["best_loss"], 1.5)
        b = self.c.ask("rs")
        self.assertNotEqual(a["candidate"], b["candidate"])
        self.assertFalse(self.c.tell("rs", b["candidate"], 9.0)["improved"])
        self.assertEqual(self.c.describe("rs")["best_loss"], 1.5)
        self.assertRaisesDescent(409, "wrong_algorithm", self.c.push, "rs", [1, 2, 3])

    def test_workers_history_and_the_norm(self):
        r = random.Random(3)
        g = [r.gauss(0, 1) * 10 ** r.randint(-6, 3) for _ in range(1001)]
        self.c.create(name="hist", algorithm="sgd", hyper={"lr": 0.01}, tensors=[{"name": "w", "shape": [1001]}])
        self.c.push("hist", g, worker="w1", loss=0.5, step=0)
        self.c.push("hist", g, worker="w2", loss=0.25)
        w = self.c.workers("hist")
        self.assertEqual(w["step"], 2)
        self.assertEqual(sorted((x["name"], x["pushes"]) for x in w["workers"]), [("w1", 1), ("w2", 1)])
        h = self.c.history("hist")
        self.assertEqual([(x["step"], x["loss"]) for x in h], [(1, 0.5), (2, 0.25)])
        # the client's norm is the daemon's, to the last bit
        self.assertEqual(h[-1]["grad_norm"], dc.global_norm(g))

    def test_export_import(self):
        spec = dict(algorithm="adam", hyper={"lr": 0.01, "amsgrad": True},
                    tensors=[{"name": "a", "shape": [3, 7], "init": {"uniform": {"low": -1, "high": 1, "seed": 5}}},
                             {"name": "b", "shape": [5]}])
        self.c.create(name="exp", **spec)
        r = random.Random(4)
        grads = [[r.gauss(0, 1) for _ in range(26)] for _ in range(4)]
        for g in grads[:2]:
            self.c.push("exp", g)
        doc = self.c.export_state("exp")
        self.assertEqual(doc["step"], 2)
        self.assertEqual(sorted(doc["buffers"]), ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"])
        doc["name"] = "exp-copy"
        self.assertEqual(self.c.import_state("exp-copy", doc)["step"], 2)
        for g in grads[2:]:
            a, b = self.c.push("exp", g), self.c.push("exp-copy", g)
            self.assertEqual(flat_bits(a), flat_bits(b))
        x, y = self.c.export_state("exp"), self.c.export_state("exp-copy")
        self.assertEqual(x["buffers"], y["buffers"])


class Tools(unittest.TestCase):
    def test_numeric_gradient_and_check(self):
        def f(x):
            return x[0] ** 3 + x[0] * x[1] + 2 * x[2] ** 2

        x = [0.7, -1.3, 2.0]
        analytic = [3 * x[0] ** 2 + x[1], x[0], 4 * x[2]]
        numeric = dc.numeric_gradient(f, x)
        self.assertEqual(x, [0.7, -1.3, 2.0])  # x is left as it was
        for a, n in zip(analytic, numeric):
            self.assertAlmostEqual(a, n, places=6)
        self.assertLess(dc.gradient_check(analytic, numeric), 1e-7)
        wrong = [analytic[0], analytic[1] * 1.1, analytic[2]]
        self.assertAlmostEqual(dc.gradient_check(wrong, numeric), 0.1 / 1.1, places=5)
        self.assertEqual(dc.gradient_check([0.0, 1.0], [0.0, 1.0]), 0.0)
        # by tensor
        g = dc.numeric_gradient(lambda p: sum(v * v for v in p["w"]) + 3 * p["b"][0], {"w": [1.0, -2.0], "b": [0.5]})
        self.assertLess(dc.gradient_check({"w": [2.0, -4.0], "b": [3.0]}, g), 1e-8)
        self.assertGreater(dc.gradient_check({"w": [2.0, 4.0], "b": [3.0]}, g), 1.0)

    def test_sharding_rule(self):
        self.assertEqual(dc.shard_ranges(10, 3), [(0, 3), (3, 6), (6, 10)])
        self.assertEqual(dc.shard_ranges(300716, 3), [(0, 100238), (100238, 200477), (200477, 300716)])
        self.assertEqual(dc.shard_plan([5, 4, 3], 3), [[(0, 0, 4)], [(0, 4, 1), (1, 0, 3)], [(1, 3, 1), (2, 0, 3)]])
        with self.assertRaises(DescentError):
            dc.shard_ranges(2, 3)

    def test_norm_lanes(self):
        # 8 lanes by index mod 8, each in order, lanes left to right: not sum(), not fsum()
        g = array("f", [1e8, 1.0, 3.0, 0.1, -1e8, 2.5, 7.0, 1e-3, 1.0, 1e4, 0.5])
        lanes = [0.0] * 8
        for i, v in enumerate(g):
            lanes[i % 8] += float(v) * float(v)
        t = 0.0
        for v in lanes:
            t += v
        self.assertEqual(dc.global_norm(g), t ** 0.5)


class Tokens(DaemonsCase):
    @classmethod
    def setUpClass(cls):
        cls.tokfile = tempfile.NamedTemporaryFile("w", suffix=".tokens", delete=False)
        cls.tokfile.write("# tokens\nrw-secret\nro:ro-secret\n")
        cls.tokfile.close()
        cls.daemon_args = ("--token-file", cls.tokfile.name, "--connection-timeout", "1")
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        os.unlink(cls.tokfile.name)

    def test_tokens(self):
        url = self.daemons[0].url
        self.assertEqual(self.client(url).health(), {"status": "ok"})
        self.assertRaisesDescent(401, "unauthorized", self.client(url).list)
        self.assertRaisesDescent(401, "unauthorized", self.client(url, token="wrong").list)
        rw, ro = self.client(url, token="rw-secret"), self.client(url, token="ro-secret")
        rw.create(name="t", algorithm="sgd", hyper={"lr": 1}, tensors=[{"name": "w", "shape": [1]}])
        self.assertRaisesDescent(403, "forbidden", ro.push, "t", [1])
        self.assertEqual(rw.push("t", [1]), {"w": [-1]})
        self.assertEqual(ro.pull("t"), {"w": [-1]})

    def test_stale_keepalive_connection_is_retried_once(self):
        """The daemon closes idle connections after 1 s; the next push on the
        pooled connection is sent again on a fresh one, and applied once."""
        c = self.client(self.daemons[0].url, token="rw-secret")
        c.create(name="ka", algorithm="sgd", hyper={"lr": 1}, tensors=[{"name": "w", "shape": [1]}])
        self.assertEqual(c.push("ka", [1]).step, 1)
        time.sleep(2.5)
        p = c.push("ka", [1])
        self.assertEqual((p.step, p), (2, {"w": [-2]}))
        self.assertEqual(c.pull("ka").step, 2)


class Example(DaemonsCase):
    ndaemons = 2

    def run_example(self, urls, *args):
        cmd = [sys.executable, EXAMPLE] + [a for u in urls for a in ("--url", u)] + list(args)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    def test_worker_converges(self):
        r = self.run_example([self.daemons[0].url], "--workers", "3", "--steps", "120", "--name", "ex1")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("gradient check: max relative error", r.stdout)
        self.assertIn("final step 120", r.stdout)
        self.assertIn("converged", r.stdout)

    def test_worker_sharded_converges(self):
        r = self.run_example([d.url for d in self.daemons], "--workers", "2", "--steps", "120", "--name", "ex2")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("2 shard(s)", r.stdout)

    def test_worker_reports_failure(self):
        r = self.run_example([self.daemons[0].url], "--workers", "2", "--steps", "3", "--name", "ex3")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("did NOT converge", r.stdout)


# ---- three shards against one daemon -----------------------------------------------------------

class Sharded(DaemonsCase):
    ndaemons = 4  # three shards, and one daemon to compare with

    def setUp(self):
        super().setUp()
        self.shard_urls = [d.url for d in self.daemons[:3]]
        self.s = self.client(self.shard_urls, settle_ms=300)
        self.one = self.client(self.daemons[3].url)

    def both(self, **spec):
        a = self.s.create(**spec)
        b = self.one.create(**spec)
        return a, b

    def assertSameState(self, name):
        x, y = self.s.export_state(name), self.one.export_state(name)
        self.assertEqual(x["step"], y["step"])
        self.assertEqual([(t["name"], t["shape"], t["count"]) for t in x["tensors"]],
                         [(t["name"], t["shape"], t["count"]) for t in y["tensors"]])
        for t in y["tensors"]:
            self.assertEqual(bits(x["params"][t["name"]]), bits(y["params"][t["name"]]), t["name"])
        self.assertEqual(sorted(x["buffers"]), sorted(y["buffers"]))
        for b in y["buffers"]:
            for t in y["tensors"]:
                self.assertEqual(bits(x["buffers"][b][t["name"]]), bits(y["buffers"][b][t["name"]]),
                                 "%s.%s" % (b, t["name"]))
        return x, y

    def test_layout_follows_the_rule(self):
        spec = dict(name="lay", algorithm="sgd",
                    tensors=[{"name": "A", "shape": [5], "init": {"normal": {"mean": 1, "std": 2, "seed": 9}}},
                             {"name": "B", "shape": [2, 2], "values": [[1, 2], [3, 4]]},
                             {"name": "C", "shape": [2, 2], "offset": 100, "init": {"uniform": {"low": -1, "high": 1,
                                                                                              "seed": 4}}}])
        d, _ = self.both(**spec)
        self.assertEqual([(t["name"], t["shape"], t["offset"], t["count"]) for t in d["tensors"]],
                         [("A", [5], 0, 5), ("B", [2, 2], 5, 4), ("C", [2, 2], 9, 4)])
        # 13 floats over 3 shards: [0, 4), [4, 8), [8, 13)
        self.assertEqual([(x["offset"], x["size"]) for x in d["shards"]], [(0, 4), (4, 4), (8, 5)])
        shards = [self.client(u).describe("lay") for u in self.shard_urls]
        self.assertEqual([[(t["name"], t["count"], t.get("origin", 0)) for t in s["tensors"]] for s in shards],
                         [[("A", 4, 0)], [("A", 1, 4), ("B", 3, 0)], [("B", 1, 3), ("C", 4, 100)]])
        # a client that did not create it reads the layout back: split tensors show flat
        d = self.client(self.shard_urls).describe("lay")
        self.assertEqual([(t["name"], t["shape"], t["offset"], t["count"]) for t in d["tensors"]],
                         [("A", [5], 0, 5), ("B", [4], 5, 4), ("C", [2, 2], 9, 4)])
        a, b = self.s.pull("lay"), self.one.pull("lay")
        self.assertEqual(list(a), ["A", "B", "C"])
        self.assertEqual(flat_bits(a), flat_bits(b))  # seeded inits match one daemon
        self.assertEqual(a["B"], [1, 2, 3, 4])
        self.assertEqual(self.s.describe("lay")["steps"], [0, 0, 0])
        self.assertEqual(self.s.delete("lay")["deleted"], True)
        for u in self.shard_urls:
            self.assertRaisesDescent(404, "unknown_instance", self.client(u).describe, "lay")
        self.assertRaisesDescent(400, "bad_length", self.s.create, name="tiny", algorithm="sgd",
                                 tensors=[{"name": "w", "shape": [2]}])

    def test_adam_300k_bit_identical(self):
        spec = dict(name="big", algorithm="adam", hyper={"lr": 0.001, "weight_decay": 0.01, "amsgrad": True},
                    tensors=[{"name": "W", "shape": [480, 625], "init": {"normal": {"std": 0.05, "seed": 42}}},
                             {"name": "b", "shape": [625], "values": [0.001 * i for i in range(625)]},
                             {"name": "E", "shape": [7, 13], "init": {"uniform": {"low": -1, "high": 1, "seed": 3}}}])
        d, _ = self.both(**spec)
        n = d["size"]
        self.assertEqual(n, 300716)
        r = random.Random(11)
        base = array("f", [r.gauss(0, 1) for _ in range(n)])
        for t in range(8):
            k = (7919 * t) % n
            g = base[k:] + base[:k]
            binary = t not in (3, 6)
            a = self.s.push("big", g, binary=binary, loss=1.0 / (t + 1))
            b = self.one.push("big", g, binary=binary, loss=1.0 / (t + 1))
            self.assertEqual((a.step, a.steps), (t + 1, [t + 1] * 3))
            self.assertEqual(flat_bits(a), flat_bits(b), "step %d" % (t + 1))
        self.assertEqual(flat_bits(self.s.pull("big")), flat_bits(self.one.pull("big")))
        x, _ = self.assertSameState("big")
        # the gathered state is a one-daemon document: it imports into one daemon
        x["name"] = "big-copy"
        self.one.import_state("big-copy", x)
        g = base[5:] + base[:5]
        self.assertEqual(flat_bits(self.one.push("big-copy", g)), flat_bits(self.s.push("big", g)))
        for name in ("big", "big-copy"):
            self.one.delete(name)
        self.s.delete("big")

    def test_sync_rounds_bit_identical(self):
        spec = dict(name="sync", algorithm="adam", hyper={"lr": 0.01}, mode="sync", workers=2,
                    tensors=[{"name": "w", "shape": [20011]}, {"name": "v", "shape": [3, 3], "init": {"constant": 1}}])
        self.both(**spec)
        r = random.Random(5)
        grads = [[[r.gauss(0, 1) for _ in range(20020)] for _ in range(4)] for _ in range(2)]
        replies = {}

        def worker(client, key, i):
            p = client.pull("sync")
            for rnd in range(4):
                p = client.push("sync", grads[i][rnd], worker="w%d" % i, step=p.step, loss=float(rnd))
                replies[key, i, rnd] = (p.step, flat_bits(p))

        threads = [threading.Thread(target=worker, args=(c, key, i)) for key, c in (("s", self.s), ("one", self.one))
                   for i in range(2)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        self.assertEqual(len(replies), 16)
        for rnd in range(4):
            want = replies["one", 0, rnd]
            self.assertEqual(want[0], rnd + 1)
            for key in ("s", "one"):
                for i in range(2):
                    self.assertEqual(replies[key, i, rnd], want, (key, i, rnd))
        self.assertSameState("sync")
        self.s.delete("sync")
        self.one.delete("sync")

    def test_clipping_sharded_equals_single(self):
        spec = dict(name="clip", algorithm="adam", hyper={"lr": 0.1}, clip_grad_norm=1.0,
                    tensors=[{"name": "w", "shape": [30001]}, {"name": "b", "shape": [10]}])
        self.both(**spec)
        self.one.create(dict(spec, name="noclip", clip_grad_norm=None))
        r = random.Random(8)
        for t in range(5):
            g = [r.gauss(0, 3) for _ in range(30011)]
            a, b = self.s.push("clip", g, loss=1.0), self.one.push("clip", g, loss=1.0)
            self.assertEqual(flat_bits(a), flat_bits(b), "step %d" % (t + 1))
            unclipped = self.one.push("noclip", g)
            if t == 1:
                self.assertNotEqual(flat_bits(unclipped), flat_bits(b))  # the clipping did something
            # every shard clipped by, and recorded, the whole gradient's norm
            norm = dc.global_norm(g)
            self.assertGreater(norm, 100)
            self.assertEqual(self.one.history("clip")[-1]["grad_norm"], norm)
            for u in self.shard_urls:
                self.assertEqual(self.client(u).history("clip")[-1]["grad_norm"], norm)
        self.assertSameState("clip")
        # what cannot be sharded is refused, and nothing is created
        self.assertRaisesDescent(422, "invalid_value", self.s.create, dict(spec, name="clipsync", mode="sync",
                                                                           workers=2))
        self.assertRaisesDescent(422, "invalid_value", self.s.create, name="backup", algorithm="sgd", mode="sync",
                                 workers=3, min_workers=2, round_timeout_ms=1000,
                                 tensors=[{"name": "w", "shape": [9]}])
        self.assertRaisesDescent(422, "invalid_value", self.s.create, name="rs", algorithm="random_search",
                                 tensors=[{"name": "w", "shape": [9]}])
        self.assertEqual([n for n in ("clipsync", "backup", "rs") if n in [o["name"] for o in self.s.list()]], [])
        for c in (self.s, self.one):
            c.delete("clip")
        self.one.delete("noclip")

    def test_step_mismatch_detected_and_repaired(self):
        self.s.create(name="mm", algorithm="sgd", hyper={"lr": 0.5, "momentum": 0.9},
                      tensors=[{"name": "w", "shape": [10], "init": {"constant": 1}}])
        g = list(range(10))
        for _ in range(3):
            self.s.push("mm", g)
        good = self.s.export_state("mm")
        self.assertEqual(good["step"], 3)
        shard1 = self.client(self.shard_urls[1])
        old = shard1.export_state("mm")
        for _ in range(2):
            self.s.push("mm", g)
        shard1.import_state("mm", old)  # one shard restored from an older state
        with self.assertRaises(DescentStepMismatch) as cm:
            self.s.pull("mm")
        e = cm.exception
        self.assertEqual((e.status, e.code, e.steps), (409, "step_mismatch", [5, 3, 5]))
        for k, u in enumerate(self.shard_urls):
            self.assertIn("shard %d (%s) at step %d" % (k, u, [5, 3, 5][k]), e.message)
        with self.assertRaises(DescentStepMismatch) as cm:
            self.s.push("mm", g)
        self.assertEqual(cm.exception.steps, [6, 4, 6])
        self.assertEqual(self.s.describe("mm")["steps"], [6, 4, 6])
        self.assertRaises(DescentStepMismatch, self.s.export_state, "mm")
        # the documented repair: one state at one step into every shard
        self.s.import_state("mm", good)
        p = self.s.pull("mm")
        self.assertEqual((p.step, p.steps), (3, [3, 3, 3]))
        self.assertEqual(bits(p["w"]), bits(good["params"]["w"]))
        self.assertEqual(self.s.push("mm", g).step, 4)
        self.s.delete("mm")

    def test_sync_step_mismatch_on_push(self):
        self.s.create(name="mms", algorithm="sgd", mode="sync", workers=1, tensors=[{"name": "w", "shape": [6]}])
        self.s.push("mms", [1] * 6, worker="a")
        old = self.client(self.shard_urls[2]).export_state("mms")
        self.s.push("mms", [1] * 6, worker="a")
        self.client(self.shard_urls[2]).import_state("mms", old)
        with self.assertRaises(DescentStepMismatch) as cm:
            self.s.push("mms", [1] * 6, worker="a")
        self.assertEqual(cm.exception.steps, [3, 3, 2])
        self.s.delete("mms")

    def test_create_is_all_or_nothing_and_errors(self):
        self.client(self.shard_urls[2]).create(name="dup", algorithm="sgd", tensors=[{"name": "x", "shape": [1]}])
        e = self.assertRaisesDescent(409, "already_exists", self.s.create, name="dup", algorithm="sgd",
                                     tensors=[{"name": "w", "shape": [30]}])
        self.assertIn("shard 2", e.message)
        for u in self.shard_urls[:2]:
            self.assertRaisesDescent(404, "unknown_instance", self.client(u).describe, "dup")
        self.assertEqual(self.client(self.shard_urls[2]).describe("dup")["size"], 1)  # untouched
        self.client(self.shard_urls[2]).delete("dup")
        self.assertRaisesDescent(404, "unknown_instance", self.s.pull, "nothing")
        self.assertRaisesDescent(404, "unknown_instance", self.s.push, "nothing", [1])
        self.assertRaisesDescent(404, "unknown_instance", self.s.delete, "nothing")
        self.s.create(name="e", algorithm="sgd", tensors=[{"name": "w", "shape": [2, 3]}])
        self.assertRaisesDescent(400, "bad_length", self.s.push, "e", [1, 2])
        e = self.assertRaisesDescent(422, "not_finite", self.s.push, "e", [1, 2, float("nan"), 4, 5, 6])
        self.assertIn("w[2]", e.message)
        self.assertRaisesDescent(422, "not_finite", self.s.push, "e", [1, 2, 3, 4, float("-inf"), 6], binary=False)
        self.assertEqual(self.s.pull("e").steps, [0, 0, 0])  # refused everywhere alike: nothing changed
        self.assertRaisesDescent(422, "invalid_value", self.s.ask, "e")
        self.s.delete("e")

    def test_long_poll_and_set_sharded(self):
        self.s.create(name="lp", algorithm="sgd", hyper={"lr": 1}, tensors=[{"name": "w", "shape": [7]}])
        got = {}
        th = threading.Thread(target=lambda: got.setdefault("p", self.s.pull("lp", wait_for_step=1,
                                                                               timeout_ms=10000)))
        th.start()
        time.sleep(0.2)
        self.assertNotIn("p", got)
        self.s.set("lp", lr=2)
        self.assertEqual([self.client(u).describe("lp")["hyper"]["lr"] for u in self.shard_urls], [2, 2, 2])
        self.s.push("lp", [1] * 7, worker="x", loss=0.5)
        th.join(10)
        self.assertEqual((got["p"].step, got["p"]["w"]), (1, [-2] * 7))
        self.assertEqual(self.s.pull("lp", binary=False), got["p"])
        w = self.s.workers("lp")
        self.assertEqual([x["name"] for x in w["workers"]], ["x"])
        self.assertEqual(len(w["shards"]), 3)
        self.assertEqual(self.s.history("lp")[-1]["loss"], 0.5)
        lst = [o for o in self.s.list() if o["name"] == "lp"]
        self.assertEqual([(o["size"], o["steps"], o["complete"]) for o in lst], [(7, [1, 1, 1], True)])
        self.s.delete("lp")


if __name__ == "__main__":
    unittest.main()
