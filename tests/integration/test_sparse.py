"""test_sparse: sparse tensors over HTTP, against torch (tests/data/optim_sparse).

Every recorded torch run is replayed through the daemon twice, once with JSON
pushes and once with binary ones: each step's reply must give the pushed rows
(and the dense tensors) exactly as torch had them after that step (bit for bit,
except rows torch leaves undefined: within the reference tolerance), and the
whole table, pulled through .../rows at the end, must equal torch's, as must the
state export (sum, exp_avg, exp_avg_sq).  Then: a 2^62-row table whose
untouched rows read as their seeded init without being held; bad pushes and
creates refused with their codes and nothing changed; bfloat16 row pushes; a
3-worker sync round equal to the combined gradient; export/import continuing
bit for bit.
"""
import glob
import json
import os
import struct
import threading
import unittest

from harness import Daemon, DATA

BIN = "application/octet-stream"
CASES = sorted(glob.glob(os.path.join(DATA, "optim_sparse", "*.json")))


def bits(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def close(a, b, scale):
    return abs(a - b) <= 1e-6 + 1e-5 * scale


def binary_push(tensors, grads, dtype="f"):
    """A binary push body (proto/binary.md): tensors in creation order, a sparse
    one as u64 k, k u64 ids, k*D values."""
    out = []
    for t in tensors:
        g = grads[t["name"]]
        if t.get("sparse"):
            rows, vals = g["rows"], [v for row in g["values"] for v in row]
            out.append(struct.pack("<Q%dQ" % len(rows), len(rows), *rows))
            out.append(struct.pack("<%d%s" % (len(vals), dtype), *vals))
        else:
            out.append(struct.pack("<%df" % len(g), *g))
    return b"".join(out)


def parse_binary_reply(tensors, data):
    """The binary step reply, mirroring the push: {name: flat list or (rows, values)}."""
    at, out = 0, {}
    for t in tensors:
        if t.get("sparse"):
            D = t["shape"][1]
            (k,) = struct.unpack_from("<Q", data, at)
            rows = list(struct.unpack_from("<%dQ" % k, data, at + 8))
            at += 8 + 8 * k
            vals = list(struct.unpack_from("<%df" % (k * D), data, at))
            at += 4 * k * D
            out[t["name"]] = (rows, [vals[i * D:(i + 1) * D] for i in range(k)])
        else:
            n = 1
            for s in t["shape"]:
                n *= s
            out[t["name"]] = list(struct.unpack_from("<%df" % n, data, at))
            at += 4 * n
    assert at == len(data), (at, len(data))
    return out


class Sparse(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Daemon()

    @classmethod
    def tearDownClass(cls):
        try:
            cls.d.stop()
        finally:
            cls.d.cleanup()

    def req(self, *a, **kw):
        return self.d.req(*a, **kw)

    def assertError(self, resp, status, code):
        st, body, _ = resp
        self.assertEqual(st, status, body)
        self.assertEqual(body["error"]["code"], code, body)

    def create(self, body):
        st, out, _ = self.req("POST", "/v1/optimizers", body)
        self.assertEqual(st, 201, out)
        return out

    def pull(self, name, tensor, ids):
        st, body, _ = self.req("POST", "/v1/optimizers/%s/rows" % name, {"tensor": tensor, "rows": ids})
        self.assertEqual(st, 200, body)
        return body

    # ---- torch's vectors --------------------------------------------------------

    def check_rows(self, case, t, step, got_rows, got_vals, where):
        want = case["steps"][step]["params"][t["name"]]
        inexact = set(case["steps"][step].get("inexact_rows", {}).get(t["name"], []))
        for r, row in zip(got_rows, got_vals):
            for c, v in enumerate(row):
                w = want[r][c]
                if r in inexact:
                    scale = max(abs(x) for s in case["steps"][:step + 1] for x in s["params"][t["name"]][r])
                    self.assertTrue(close(v, w, scale), "%s: row %d col %d: %r vs torch %r" % (where, r, c, v, w))
                else:
                    self.assertEqual(bits(v), bits(f32(w)), "%s: row %d col %d: %r vs torch %r" % (where, r, c, v, w))

    def check_dense(self, case, t, step, got, where):
        want = case["steps"][step]["params"][t["name"]]
        self.assertEqual([bits(x) for x in got], [bits(f32(x)) for x in want], where)

    def replay(self, case, binary):
        name = case["create"]["name"] + ("-bin" if binary else "-json")
        self.create(dict(case["create"], name=name))
        tensors = case["create"]["tensors"]
        for i, s in enumerate(case["steps"]):
            where = "%s step %d" % (name, i + 1)
            if binary:
                st, data, h = self.req("POST", "/v1/optimizers/%s/step" % name, binary_push(tensors, s["grads"]),
                                       {"Content-Type": BIN, "Accept": BIN}, raw=True)
                self.assertEqual(st, 200, data)
                self.assertEqual(int(h["descent-step"]), i + 1)
                got = parse_binary_reply(tensors, data)
            else:
                st, body, _ = self.req("POST", "/v1/optimizers/%s/step" % name, {"grads": s["grads"]})
                self.assertEqual(st, 200, body)
                self.assertEqual(body["step"], i + 1)
                got = {k: ((v["rows"], v["values"]) if isinstance(v, dict) else v) for k, v in body["params"].items()}
            for t in tensors:
                if t.get("sparse"):
                    rows, vals = got[t["name"]]
                    self.assertEqual(rows, s["grads"][t["name"]]["rows"], where + ": the rows as sent")
                    self.check_rows(case, t, i, rows, vals, where)
                else:
                    self.check_dense(case, t, i, got[t["name"]], where)
        last = len(case["steps"]) - 1
        state = self.d.export(name)
        for t in tensors:
            if not t.get("sparse"):
                continue
            V = t["shape"][0]
            whole = self.pull(name, t["name"], list(range(V)))
            self.check_rows(case, t, last, whole["rows"], whole["values"], name + " pulled")
            # the export's buffers: torch's state of every touched row (bits)
            for buf, rows in state["buffers"].items():
                tr = rows[t["name"]]
                want = case["steps"][last]["state"][t["name"]][buf]
                inexact = set(case["steps"][last].get("inexact_rows", {}).get(t["name"], []))
                for r, vals in zip(tr["rows"], tr["values"]):
                    if r not in inexact:
                        self.assertEqual([bits(x) for x in vals], [bits(f32(x)) for x in want[r]], "%s %s row %d" % (name, buf, r))
        return name

    def test_torch_vectors_json_and_binary(self):
        self.assertGreaterEqual(len(CASES), 8)
        for path in CASES:
            with open(path) as f:
                case = json.load(f)
            with self.subTest(case=case["case"]):
                self.replay(case, binary=False)
                self.replay(case, binary=True)

    # ---- a 2^62-row table ----------------------------------------------------------

    def test_huge_table_untouched_rows_read_as_init_and_hold_nothing(self):
        V = 1 << 62
        init = {"normal": {"mean": 0.5, "std": 2.0, "seed": 11}}
        self.create({"name": "huge", "algorithm": "adagrad", "hyper": {"lr": 0.1},
                     "tensors": [{"name": "e", "shape": [V, 4], "sparse": True, "init": init}]})
        self.create({"name": "huge-shard", "algorithm": "adagrad", "hyper": {"lr": 0.1},
                     "tensors": [{"name": "e", "shape": [1000, 4], "sparse": True, "init": init, "offset": V - 1000}]})
        ids = [0, 1, V - 1, 1 << 40, V - 3]
        a = self.pull("huge", "e", ids)
        self.assertEqual(a["rows"], ids)
        self.assertEqual(a["step"], 0)
        # each row is proto/init.md's reference generator on the row's own stream, bit for bit
        from test_docs import python_blocks
        ns = {}
        exec(compile(python_blocks("proto/init.md"), "proto/init.md", "exec"), ns)
        for r, vals in zip(ids, a["values"]):
            self.assertEqual([bits(x) for x in vals], [bits(x) for x in ns["init_normal"](4, 11, 0.5, 2.0, stream=r)], r)
        # the same logical rows on a shard that starts at V-1000: the same values
        b = self.pull("huge-shard", "e", [999, 997])
        self.assertEqual(b["values"], [a["values"][2], a["values"][4]])
        # GET with ?ids=, and binary
        st, g, _ = self.req("GET", "/v1/optimizers/huge/rows?tensor=e&ids=%d,%d" % (V - 1, 0))
        self.assertEqual((st, g["values"]), (200, [a["values"][2], a["values"][0]]))
        st, raw, h = self.req("POST", "/v1/optimizers/huge/rows?tensor=e", struct.pack("<2Q", 1 << 40, 1),
                              {"Content-Type": BIN, "Accept": BIN}, raw=True)
        self.assertEqual(st, 200)
        self.assertEqual(list(struct.unpack("<8f", raw)), [f32(x) for x in a["values"][3] + a["values"][1]])
        st, p, _ = self.req("GET", "/v1/optimizers/huge/params")
        self.assertEqual(p["params"]["e"], {"sparse": True, "rows_held": 0}, "pulls allocate nothing")
        # a push touches two rows, far apart; the reply gives them back
        grad = {"e": {"rows": [V - 1, 3], "values": [[1, 2, 3, 4], [-1, -2, -3, -4]]}}
        st, r, _ = self.req("POST", "/v1/optimizers/huge/step", {"grads": grad, "loss": 1.5})
        self.assertEqual(st, 200, r)
        self.assertEqual(r["params"]["e"]["rows"], [V - 1, 3])
        after = self.pull("huge", "e", [V - 1, 0])
        self.assertEqual(after["values"][0], r["params"]["e"]["values"][0])
        self.assertEqual(after["values"][1], a["values"][0], "an untouched row keeps its init")
        # adagrad's first step moves every element by lr (g/sqrt(g^2)), exactly here
        self.assertEqual([bits(x) for x in after["values"][0]], [bits(f32(x) - f32(0.1)) for x in a["values"][2]])
        st, p, _ = self.req("GET", "/v1/optimizers/huge/params")
        self.assertEqual(p["params"]["e"], {"sparse": True, "rows_held": 2})
        st, m, _ = self.req("GET", "/metrics", raw=True)
        self.assertIn(b'descent_rows_held{instance="huge",tensor="e"} 2\n', m)
        self.assertIn(b'descent_rows_touched{instance="huge"} 2\n', m)
        self.assertIn(b'descent_rows_held{instance="huge-shard",tensor="e"} 0\n', m)
        st, hist, _ = self.req("GET", "/v1/optimizers/huge/history")
        self.assertEqual(hist["history"][-1]["rows_touched"], 2)
        st, desc, _ = self.req("GET", "/v1/optimizers/huge")
        t = desc["tensors"][0]
        self.assertEqual((t["shape"], t["sparse"], t["count"], t["init"], t["rows_held"]), ([V, 4], True, 0, init, 2))
        st, page, _ = self.req("GET", "/", raw=True)
        self.assertIn(b"rows held: ", page, "the dashboard shows the rows held")

    # ---- refusals change nothing -------------------------------------------------------

    def test_bad_input_is_refused_and_changes_nothing(self):
        V = 50
        self.create({"name": "bad", "algorithm": "adagrad", "hyper": {"lr": 0.1},
                     "tensors": [{"name": "e", "shape": [V, 3], "sparse": True}, {"name": "w", "shape": [2]}]})
        ok = {"e": {"rows": [1, 1, 7], "values": [[1, 1, 1], [2, 2, 2], [3, 3, 3]]}, "w": [1, 2]}
        self.assertEqual(self.req("POST", "/v1/optimizers/bad/step", {"grads": ok})[0], 200)
        before = self.d.export("bad")
        T = [{"name": "e", "shape": [V, 3], "sparse": True}, {"name": "w", "shape": [2]}]
        cases = [
            ({"grads": dict(ok, e={"rows": [V], "values": [[1, 1, 1]]})}, 422, "invalid_value"),
            ({"grads": dict(ok, e={"rows": [2], "values": [[1, 1]]})}, 400, "bad_length"),
            ({"grads": dict(ok, e={"rows": [2, 3], "values": [[1, 1, 1]]})}, 400, "bad_length"),
            ({"grads": dict(ok, e={"rows": [-1], "values": [[1, 1, 1]]})}, 400, "bad_request"),
            ({"grads": dict(ok, e={"rows": [2], "values": [[1, float("nan"), 1]]})}, 400, "bad_json"),
            ({"grads": {"w": [1, 2]}}, 400, "bad_length"),
            ({"grads": [1, 2]}, 400, "bad_request"),
        ]
        for body, status, code in cases:
            with self.subTest(body=body):
                self.assertError(self.req("POST", "/v1/optimizers/bad/step", json.dumps(body),
                                          {"Content-Type": "application/json"}), status, code)
        good = binary_push(T, ok)
        bad_bins = [
            (good[:-1], 400, "bad_length"),
            (good + b"\0\0\0\0", 400, "bad_length"),
            (struct.pack("<Q", 1 << 40) + good[8:], 400, "bad_length"),  # k far beyond the body
            (struct.pack("<Q", 2) + good[8:], 400, "bad_length"),       # k not matching the body
            (good[:8] + struct.pack("<Q", V) + good[16:], 422, "invalid_value"),
        ]
        for body, status, code in bad_bins:
            with self.subTest(binary=body[:16]):
                self.assertError(self.req("POST", "/v1/optimizers/bad/step", body, {"Content-Type": BIN}), status, code)
        self.assertError(self.req("POST", "/v1/optimizers/bad/rows", {"tensor": "e", "rows": [V]}), 422, "invalid_value")
        self.assertError(self.req("POST", "/v1/optimizers/bad/rows", {"tensor": "w", "rows": [0]}), 422, "invalid_value")
        self.assertError(self.req("GET", "/v1/optimizers/bad/rows?tensor=e&ids=1,x"), 400, "bad_query")
        self.assertError(self.req("GET", "/v1/optimizers/bad/rows?tensor=nope&ids=1"), 400, "unknown_tensor")
        self.assertError(self.req("POST", "/v1/optimizers/bad/rows?tensor=e", b"\1\0\0", {"Content-Type": BIN}),
                         400, "bad_length")
        # torch's refusals: 422 at create and at PATCH
        sp = [{"name": "e", "shape": [10, 2], "sparse": True}]
        for alg, hyper in (("adam", {}), ("adamw", {}), ("rmsprop", {}), ("adagrad", {"weight_decay": 0.1}),
                           ("sgd", {"weight_decay": 0.1})):
            with self.subTest(alg=alg, hyper=hyper):
                self.assertError(self.req("POST", "/v1/optimizers", {"name": "no", "algorithm": alg, "hyper": hyper,
                                                                     "tensors": sp}), 422, "invalid_value")
        self.assertError(self.req("POST", "/v1/optimizers", {"name": "no", "algorithm": "sparse_adam",
                                                             "tensors": sp + [{"name": "w", "shape": [2]}]}),
                         422, "invalid_value")
        self.assertError(self.req("PATCH", "/v1/optimizers/bad", {"hyper": {"weight_decay": 0.5}}), 422, "invalid_value")
        # clip_grad_norm_ leaves torch's sparse gradients unscaled: refused with sparse tensors
        self.assertError(self.req("POST", "/v1/optimizers", {"name": "no", "algorithm": "sgd", "clip_grad_norm": 1.0,
                                                             "tensors": sp}), 422, "invalid_value")
        self.assertError(self.req("PATCH", "/v1/optimizers/bad", {"clip_grad_norm": 1.0}), 422, "invalid_value")
        self.assertEqual(self.req("GET", "/v1/optimizers/no")[0], 404)
        self.assertEqual(self.d.export("bad"), before, "a refused request changed the state")

    # ---- wire precision -----------------------------------------------------------------

    def test_bfloat16_row_push_equals_float32_of_the_widened_values(self):
        T = [{"name": "w", "shape": [3]}, {"name": "e", "shape": [1000, 5], "sparse": True}]
        for n in ("bf", "fp"):
            self.create({"name": n, "algorithm": "adagrad", "hyper": {"lr": 0.05}, "tensors": T})
        g = {"w": [0.5, -0.25, 2.0], "e": {"rows": [9, 999, 9], "values": [[1.5, -2, 0.125, 8, -0.5]] * 3}}
        half = b"".join([struct.pack("<3f", *g["w"])[0:0]])  # dense part in bfloat16 too
        vals = [v for r in g["e"]["values"] for v in r]
        half = (b"".join(struct.pack("<f", v)[2:] for v in g["w"]) + struct.pack("<4Q", 3, 9, 999, 9) +
                b"".join(struct.pack("<f", v)[2:] for v in vals))
        sa, pa, _ = self.req("POST", "/v1/optimizers/bf/step", half,
                             {"Content-Type": BIN + "; dtype=bfloat16", "Accept": BIN}, raw=True)
        sb, pb, _ = self.req("POST", "/v1/optimizers/fp/step", binary_push(T, g), {"Content-Type": BIN, "Accept": BIN},
                             raw=True)
        self.assertEqual((sa, sb), (200, 200), (pa, pb))
        self.assertEqual(pa, pb)
        self.assertEqual(len(pa), 12 + 8 + 24 + 60)
        # and the reply in bfloat16: the same layout, values rounded
        st, ph, _ = self.req("POST", "/v1/optimizers/fp/step", binary_push(T, g),
                             {"Content-Type": BIN, "Accept": BIN + "; dtype=bfloat16"}, raw=True)
        self.assertEqual((st, len(ph)), (200, 6 + 8 + 24 + 30))
        self.assertEqual(struct.unpack_from("<4Q", ph, 6), (3, 9, 999, 9))

    # ---- export, import ----------------------------------------------------------------------

    def test_export_import_continues_bit_for_bit(self):
        T = [{"name": "e", "shape": [64, 3], "sparse": True, "init": {"uniform": {"low": -1, "high": 1, "seed": 4}}}]
        self.create({"name": "ex", "algorithm": "sparse_adam", "hyper": {"lr": 0.01}, "tensors": T})
        steps = [{"e": {"rows": [(5 * i + j) % 64 for j in range(4)], "values": [[i + j, -j, 0.5] for j in range(4)]}}
                 for i in range(6)]
        for g in steps[:3]:
            self.assertEqual(self.req("POST", "/v1/optimizers/ex/step", {"grads": g})[0], 200)
        state = self.d.export("ex")
        self.assertEqual(len(state["params"]["e"]["rows"]), len({r for g in steps[:3] for r in g["e"]["rows"]}))
        self.assertEqual(sorted(state["buffers"]), ["exp_avg", "exp_avg_sq"])
        st, body, _ = self.req("PUT", "/v1/optimizers/ex2/state", dict(state, name="ex2"))
        self.assertIn(st, (200, 201), body)
        for g in steps[3:]:
            a = self.req("POST", "/v1/optimizers/ex/step", {"grads": g})
            b = self.req("POST", "/v1/optimizers/ex2/step", {"grads": g})
            self.assertEqual(a[1], b[1])
        ea, eb = self.d.export("ex"), self.d.export("ex2")
        for k in ("params", "buffers", "step"):
            self.assertEqual(ea[k], eb[k])
        # untouched rows read as init on both
        self.assertEqual(self.pull("ex", "e", [63, 62]), self.pull("ex2", "e", [63, 62]))

    def test_retried_push_replays_its_rows(self):
        T = [{"name": "e", "shape": [30, 2], "sparse": True}]
        self.create({"name": "idem", "algorithm": "sgd", "hyper": {"lr": 0.5}, "tensors": T})
        g = {"grads": {"e": {"rows": [3, 3, 8], "values": [[1, 2], [3, 4], [5, 6]]}}}
        h = {"Idempotency-Key": "push-1"}
        a = self.req("POST", "/v1/optimizers/idem/step", g, h)
        b = self.req("POST", "/v1/optimizers/idem/step", g, h)
        self.assertEqual(a[0], 200, a[1])
        self.assertEqual(a[1], b[1], "a retry gives the first reply")
        # sgd applies repeats in order: row 3 moved by -0.5*(1,2) then -0.5*(3,4), both entries show the end value
        self.assertEqual(a[1]["params"]["e"]["values"], [[-2, -3], [-2, -3], [-2.5, -3]])
        self.assertEqual(self.pull("idem", "e", [3])["step"], 1, "applied once")
        st, raw, _ = self.req("POST", "/v1/optimizers/idem/step", binary_push(T, g["grads"]),
                              {"Content-Type": BIN, "Accept": BIN, "Idempotency-Key": "push-2"}, raw=True)
        st2, raw2, h2 = self.req("POST", "/v1/optimizers/idem/step", binary_push(T, g["grads"]),
                                 {"Content-Type": BIN, "Accept": BIN, "Idempotency-Key": "push-2"}, raw=True)
        self.assertEqual((st, st2, raw), (200, 200, raw2))
        self.assertEqual(h2["descent-step"], "2")
        self.assertEqual(parse_binary_reply(T, raw)["e"], ([3, 3, 8], [[-4, -6], [-4, -6], [-5, -6]]))

    # ---- a sync round of three workers -------------------------------------------------------------

    def test_sync_round_of_three_equals_the_combined_gradient(self):
        T = [{"name": "e", "shape": [100, 2], "sparse": True}, {"name": "w", "shape": [2]}]
        self.create({"name": "sy", "algorithm": "adagrad", "hyper": {"lr": 0.1}, "mode": "sync", "workers": 3,
                     "aggregate": "sum", "tensors": T})
        self.create({"name": "one", "algorithm": "adagrad", "hyper": {"lr": 0.1}, "tensors": T})
        pushes = {"w1": {"e": {"rows": [4, 1], "values": [[0.1, 0.2], [0.3, 0.7]]}, "w": [1, 2]},
                  "w2": {"e": {"rows": [1], "values": [[0.25, -0.5]]}, "w": [0.5, 0.125]},
                  "w3": {"e": {"rows": [], "values": []}, "w": [-1, 3]}}
        replies = {}

        def push(w):
            c = self.d.new_conn()
            from harness import request
            if w == "w2":  # one worker in binary: its reply has the push's layout
                st, raw, h = request(c, "POST", "/v1/optimizers/sy/step?worker=w2&step=0", binary_push(T, pushes[w]),
                                     {"Content-Type": BIN, "Accept": BIN}, raw=True)
                got = parse_binary_reply(T, raw) if st == 200 else {}
                replies[w] = (st, {"step": int(h.get("descent-step", -1)), "params": {
                    "w": got.get("w"), "e": {"rows": got["e"][0], "values": got["e"][1]} if got else None}}, h)
            else:
                replies[w] = request(c, "POST", "/v1/optimizers/sy/step", {"worker": w, "step": 0, "grads": pushes[w]})
            c.close()

        ts = [threading.Thread(target=push, args=(w,)) for w in pushes]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        # the combined gradient, summed in worker-name order in float32
        comb = {"e": {"rows": [1, 4], "values": [[f32(0.3 + 0.25), f32(0.7 + -0.5)], [0.1, 0.2]]},
                "w": [f32(f32(1 + 0.5) - 1), f32(f32(2 + 0.125) + 3)]}
        st, one, _ = self.req("POST", "/v1/optimizers/one/step", {"grads": comb})
        self.assertEqual(st, 200, one)
        for w, (st, body, _) in replies.items():
            self.assertEqual(st, 200, body)
            self.assertEqual(body["step"], 1)
            self.assertEqual([bits(x) for x in body["params"]["w"]], [bits(x) for x in one["params"]["w"]])
            rows = body["params"]["e"]["rows"]
            self.assertEqual(rows, pushes[w]["e"]["rows"])
            want = self.pull("one", "e", rows)["values"] if rows else []
            self.assertEqual([[bits(x) for x in r] for r in body["params"]["e"]["values"]],
                             [[bits(x) for x in r] for r in want], w)
        self.assertEqual(self.pull("sy", "e", [1, 4, 5]), dict(self.pull("one", "e", [1, 4, 5])))


class SparseLimits(unittest.TestCase):
    """--max-params counts held rows; a snapshot keeps them across kill -9."""

    def setUp(self):
        self.d = Daemon("--max-params", "200", "--snapshot-interval", "3600")

    def tearDown(self):
        try:
            self.d.stop()
        finally:
            self.d.cleanup()

    def push(self, rows):
        body = {"grads": {"e": {"rows": rows, "values": [[1.0 * (r % 7 + 1)] * 10 for r in rows]}}}
        return self.d.req("POST", "/v1/optimizers/q/step", body)

    def create(self):
        # adagrad: a row block is 2*D = 20 floats; 200 floats hold 10 rows
        st, body, _ = self.d.req("POST", "/v1/optimizers", {"name": "q", "algorithm": "adagrad", "hyper": {"lr": 0.1},
                                                          "tensors": [{"name": "e", "shape": [1 << 40, 10], "sparse": True}]})
        self.assertEqual(st, 201, body)

    def rows_held(self):
        st, p, _ = self.d.req("GET", "/v1/optimizers/q/params")
        return p["params"]["e"]["rows_held"]

    def test_quota_refuses_a_push_whole(self):
        self.create()
        self.assertEqual(self.push(list(range(8)))[0], 200)
        before = self.d.export("q")
        st, body, _ = self.push([3, 100, 101, 102])  # 3 new rows: 11 > 10
        self.assertEqual((st, body["error"]["code"]), (507, "quota_exceeded"), body)
        self.assertEqual(self.d.export("q"), before, "a refused push changed something")
        self.assertEqual(self.rows_held(), 8)
        self.assertEqual(self.push([1, 100, 101])[0], 200)  # exactly 10 rows
        self.assertEqual(self.rows_held(), 10)
        st, body, _ = self.d.req("POST", "/v1/optimizers", {"name": "q2", "algorithm": "sgd", "tensors": [
            {"name": "e", "shape": [100, 10], "sparse": True, "init": {"rows": [1], "values": [[1] * 10]}}]})
        self.assertEqual((st, body["error"]["code"]), (507, "quota_exceeded"), "explicit rows count too")

    def test_snapshot_restart_after_kill9_keeps_rows(self):
        self.create()
        for rows in ([0, 5, 5], [5, 9], [1 << 39]):
            self.assertEqual(self.push(rows)[0], 200)
        self.assertEqual(self.d.req("POST", "/v1/optimizers/q/snapshot")[0], 200)
        saved = self.d.export("q")
        self.assertEqual(len(saved["params"]["e"]["rows"]), 4)
        self.d.kill9()
        self.d.restart()
        self.assertEqual(self.d.export("q"), saved, "the snapshot did not keep the rows")
        self.assertEqual(self.rows_held(), 4)
        # the restored instance continues as a copy imported from the saved state
        st, body, _ = self.d.req("PUT", "/v1/optimizers/q2/state", dict(saved, name="q2"))
        self.assertIn(st, (200, 201), body)
        a = self.push([5, 77])
        b = self.d.req("POST", "/v1/optimizers/q2/step",
                       {"grads": {"e": {"rows": [5, 77], "values": [[1.0 * (r % 7 + 1)] * 10 for r in (5, 77)]}}})
        self.assertEqual((a[0], a[1]), (b[0], b[1]))


class SparseReadOnly(unittest.TestCase):
    """A read-only token pulls rows (GET and POST .../rows) but cannot push."""

    def test_read_only_token_pulls_rows(self):
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            tokens = os.path.join(tmp, "tokens")
            with open(tokens, "w") as f:
                f.write("rw:writer-token\nro:reader-token\n")
            d = Daemon("--token-file", tokens)
            try:
                w = {"Authorization": "Bearer writer-token"}
                ro = {"Authorization": "Bearer reader-token"}
                st, body, _ = d.req("POST", "/v1/optimizers", {"name": "t", "algorithm": "sgd", "tensors": [
                    {"name": "e", "shape": [10, 2], "sparse": True, "init": {"constant": 0.25}}]}, w)
                self.assertEqual(st, 201, body)
                st, body, _ = d.req("POST", "/v1/optimizers/t/rows", {"tensor": "e", "rows": [9]}, ro)
                self.assertEqual((st, body["values"]), (200, [[0.25, 0.25]]))
                st, body, _ = d.req("GET", "/v1/optimizers/t/rows?tensor=e&ids=0", headers=ro)
                self.assertEqual((st, body["values"]), (200, [[0.25, 0.25]]))
                st, body, _ = d.req("POST", "/v1/optimizers/t/step", {"grads": {"e": {"rows": [1], "values": [[1, 1]]}}}, ro)
                self.assertEqual((st, body["error"]["code"]), (403, "forbidden"))
            finally:
                d.stop()
                d.cleanup()


if __name__ == "__main__":
    unittest.main()
