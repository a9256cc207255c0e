"""test_py_sparse: sparse tensors from the Python package (descent.Rows,
push of rows, pull_rows), against real daemons.

- sgd on a mixed instance (a dense bias and a sparse [V, D] table with an
  explicit-rows init and a constant init elsewhere): every step equals a
  float32 replay of torch's rule (entries added one at a time in the order
  sent, repeats included), in binary and JSON, on one daemon and sharded
  over three (row ranges by the split rule), bit for bit;
- adagrad sharded equals one daemon bit for bit, and so do the gathered
  state exports; an export imported into the shards (and the other way
  round) continues bit for bit;
- the sharded fan-out: an sgd push touching one shard's rows reaches only
  that shard; with sparse_adam (bias correction counts steps) every shard
  gets the push, the untouched ones with no rows;
- refusals (row >= V, negative row, wrong D, an unknown tensor, a flat
  gradient for an instance with sparse tensors) carry the daemon's codes and
  change nothing;
- bfloat16 rows equal a float32 push of the rounded values;
- with numpy (/usr/bin/python3) Rows come back as int64 / float32 arrays.
The standard library alone runs the rest (this interpreter may have no numpy).
"""
import os
import struct
import subprocess
import sys
import unittest

from harness import ROOT, Daemon

sys.path.insert(0, os.path.join(ROOT, "client", "python"))
from descent import Client, DescentError, Rows  # noqa: E402

PY = "/usr/bin/python3"
V, D = 12, 3


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def bf16(x):
    u = struct.unpack("<I", struct.pack("<f", x))[0]
    return struct.unpack("<f", struct.pack("<I", (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000))[0]


def spec(name, algorithm="sgd", hyper=None, dense=True, init=None):
    ts = [{"name": "E", "shape": [V, D], "sparse": True,
           "init": init or {"rows": [2, 7, 11], "values": [[1, 2, 3], [-1, -2, -3], [0.5, 0.25, 0.125]]}}]
    if dense:
        ts = [{"name": "b", "shape": [2], "values": [0.5, -0.5]}] + ts
    return {"name": name, "algorithm": algorithm, "hyper": hyper or {"lr": 0.25}, "tensors": ts}


def steps_data():
    """Deterministic pushes: rows with repeats, unsorted, some shards untouched."""
    out = []
    seed = 12345
    for s in range(6):
        k = 2 + s % 4
        rows, vals = [], []
        for i in range(k):
            seed = (seed * 1103515245 + 12345) % (1 << 31)
            rows.append(seed % V)
            vals.append([f32(((seed >> (4 + c)) % 17 - 8) / 7.0) for c in range(D)])
        if s == 2:
            rows[1] = rows[0]  # a repeated row, applied twice in order
        out.append((rows, vals, [f32(0.1 * (s + 1)), f32(-0.05 * s)]))
    return out


class Replay:
    """torch's sgd on a sparse gradient, in float32: p[r] += (-lr) * g entry by entry."""

    def __init__(self, lr):
        self.lr = f32(lr)
        self.b = [0.5, -0.5]
        self.E = {2: [1.0, 2.0, 3.0], 7: [-1.0, -2.0, -3.0], 11: [0.5, 0.25, 0.125]}

    def row(self, r):
        return list(self.E.get(r, [0.0] * D))

    def step(self, rows, vals, gb):
        self.b = [f32(p - f32(self.lr * g)) for p, g in zip(self.b, gb)]
        for r, g in zip(rows, vals):
            self.E[r] = [f32(p - f32(self.lr * x)) for p, x in zip(self.row(r), g)]
        return [self.row(r) for r in rows]


class Sparse(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ds = [Daemon() for _ in range(4)]
        cls.one = Client(cls.ds[0].url)
        cls.sh = Client([d.url for d in cls.ds[1:]])

    @classmethod
    def tearDownClass(cls):
        for d in cls.ds:
            d.stop()
            d.cleanup()

    def both(self, sp):
        for c in (self.one, self.sh):
            c.create(sp)
            self.addCleanup(c.delete, sp["name"])

    def test_sgd_rows_match_torchs_rule_one_daemon_and_sharded(self):
        for binary in (True, False):
            name = "sgd-%s" % ("bin" if binary else "json")
            self.both(spec(name))
            ref = Replay(0.25)
            for rows, vals, gb in steps_data():
                want = ref.step(rows, vals, gb)
                for c in (self.one, self.sh):
                    p = c.push(name, {"b": gb, "E": Rows(rows, vals)}, binary=binary)
                    self.assertEqual(p["E"].rows, rows)
                    self.assertEqual(p["E"].values, want)
                    self.assertEqual(p["b"], ref.b)
            for c in (self.one, self.sh):
                st, vals = c.pull_rows(name, "E", list(range(V)), binary=binary)
                self.assertEqual(st, len(steps_data()))
                self.assertEqual(vals, [ref.row(r) for r in range(V)])
                self.assertEqual(c.pull(name)["b"], ref.b)

    def test_sharded_layout_row_ranges_and_offsets(self):
        self.both(spec("lay"))
        descs = [d.req("GET", "/v1/optimizers/lay")[1] for d in self.ds[1:]]
        got = [[(t["name"], t["shape"], t.get("origin", 0)) for t in d["tensors"] if t.get("sparse")] for d in descs]
        self.assertEqual(got, [[("E", [4, D], 0)], [("E", [4, D], 4)], [("E", [4, D], 8)]])
        logical = self.sh.describe("lay")["tensors"]
        self.assertEqual([(t["name"], t["shape"], bool(t.get("sparse"))) for t in logical],
                         [("b", [2], False), ("E", [V, D], True)])
        # the explicit rows went to the shards holding them, as local ids
        self.assertEqual(self.sh.pull_rows("lay", "E", [2, 7, 11, 0])[1],
                         [[1, 2, 3], [-1, -2, -3], [0.5, 0.25, 0.125], [0, 0, 0]])

    def test_adagrad_sharded_equals_one_daemon_and_state_round_trips(self):
        sp = spec("ada", "adagrad", {"lr": 0.5, "eps": 1e-6},
                  init={"normal": {"mean": 0, "std": 1, "seed": 7}})
        self.both(sp)
        data = steps_data()
        for rows, vals, gb in data[:3]:
            a = self.one.push("ada", {"b": gb, "E": Rows(rows, vals)})
            b = self.sh.push("ada", {"b": gb, "E": Rows(rows, vals)})
            self.assertEqual((a["E"].values, a["b"]), (b["E"].values, b["b"]))
        e1, e2 = self.one.export_state("ada"), self.sh.export_state("ada")
        self.assertEqual((e1["params"], e1["buffers"]), (e2["params"], e2["buffers"]))
        self.assertTrue(e1["params"]["E"]["rows"])
        self.one.import_state("ada", e2)
        self.sh.import_state("ada", e1)
        for rows, vals, gb in data[3:]:
            a = self.one.push("ada", {"b": gb, "E": Rows(rows, vals)})
            b = self.sh.push("ada", {"b": gb, "E": Rows(rows, vals)})
            self.assertEqual((a["E"].values, a["b"], a.step), (b["E"].values, b["b"], b.step))
        # never-held rows keep their seeded init through the round trip
        self.assertEqual(self.one.pull_rows("ada", "E", list(range(V)))[1],
                         self.sh.pull_rows("ada", "E", list(range(V)))[1])

    def shard_steps(self, name):
        return [d.req("GET", "/v1/optimizers/" + name)[1]["step"] for d in self.ds[1:]]

    def test_fan_out_only_to_touched_shards_unless_steps_count(self):
        self.sh.create(spec("fan", dense=False))
        self.addCleanup(self.sh.delete, "fan")
        p = self.sh.push("fan", {"E": Rows([5, 6], [[1, 1, 1], [2, 2, 2]])})
        self.assertEqual(self.shard_steps("fan"), [0, 1, 0])
        self.assertEqual(p.steps, [None, 1, None])
        self.assertEqual(p["E"].values, [[-0.25] * 3, [-0.5] * 3])
        self.sh.create(spec("fanadam", "sparse_adam", {"lr": 0.1}, dense=False))
        self.addCleanup(self.sh.delete, "fanadam")
        self.one.create(spec("fanadam", "sparse_adam", {"lr": 0.1}, dense=False))
        self.addCleanup(self.one.delete, "fanadam")
        for rows in ([5, 6], [0], [11, 11]):
            g = Rows(rows, [[0.5, -1, 2]] * len(rows))
            a, b = self.one.push("fanadam", {"E": g}), self.sh.push("fanadam", {"E": g})
            self.assertEqual(a["E"].values, b["E"].values)
        self.assertEqual(self.shard_steps("fanadam"), [3, 3, 3])
        self.assertEqual(self.one.pull_rows("fanadam", "E", list(range(V))),
                         self.sh.pull_rows("fanadam", "E", list(range(V))))

    def test_refusals_change_nothing(self):
        self.both(spec("bad"))
        before = [c.pull_rows("bad", "E", list(range(V))) for c in (self.one, self.sh)]
        cases = [
            ({"b": [0, 0], "E": Rows([V], [[1, 1, 1]])}, 422, "invalid_value"),
            ({"b": [0, 0], "E": Rows([-1], [[1, 1, 1]])}, 422, "invalid_value"),
            ({"b": [0, 0], "E": Rows([1], [[1, 1]])}, 400, "bad_length"),
            ({"b": [0, 0], "E": Rows([1, 2], [[1, 1, 1]])}, 400, "bad_length"),
            ({"b": [0, 0], "E": Rows([1], [[1, 1, 1]]), "X": [1]}, 400, "unknown_tensor"),
            ({"b": [0, 0], "E": [1, 2, 3]}, 400, "bad_request"),
            ([0, 0], 400, "bad_request"),
        ]
        for c in (self.one, self.sh):
            for grads, status, code in cases:
                for binary in (True, False):
                    with self.assertRaises(DescentError) as cm:
                        c.push("bad", grads, binary=binary)
                    self.assertEqual((cm.exception.status, cm.exception.code), (status, code), cm.exception)
            with self.assertRaises(DescentError) as cm:
                c.pull_rows("bad", "E", [0, V])
            self.assertEqual(cm.exception.code, "invalid_value")
            with self.assertRaises(DescentError) as cm:
                c.pull_rows("bad", "b", [0])
            self.assertEqual(cm.exception.code, "unknown_tensor")
        # the daemon's own check (the client's is bypassed: a raw binary body)
        body = struct.pack("<2f", 0, 0) + struct.pack("<QQ", 1, V) + struct.pack("<3f", 1, 1, 1)
        with self.assertRaises(DescentError) as cm:
            self.one.endpoints[0].request("POST", "/v1/optimizers/bad/step", body,
                                          {"Content-Type": "application/octet-stream"})
        self.assertEqual((cm.exception.status, cm.exception.code), (422, "invalid_value"))
        after = [c.pull_rows("bad", "E", list(range(V))) for c in (self.one, self.sh)]
        self.assertEqual(before, after)
        self.assertEqual(after[0][0], 0)

    def test_bfloat16_rows_equal_float32_rows_of_the_rounded_values(self):
        self.both(spec("h1"))
        self.both(spec("h2"))
        vals = [[0.1, -0.2, 0.3], [1 / 3, 2 / 3, 1e-3]]
        for c in (self.one, self.sh):
            a = c.push("h1", {"b": [0.1, 0.2], "E": Rows([3, 8], vals)}, dtype="bfloat16", reply_dtype="float32")
            b = c.push("h2", {"b": [bf16(0.1), bf16(0.2)], "E": Rows([3, 8], [[bf16(x) for x in r] for r in vals])})
            self.assertEqual((a["E"].values, a["b"]), (b["E"].values, b["b"]))

    def test_numpy_rows_and_out(self):
        if subprocess.run([PY, "-c", "import numpy"], capture_output=True).returncode:
            self.skipTest("no numpy in /usr/bin/python3")
        code = r'''
import sys
sys.path.insert(0, %r)
import numpy as np, descent
c = descent.Client(sys.argv[1:])
c.create({"name": "np", "algorithm": "sgd", "hyper": {"lr": 0.5},
          "tensors": [{"name": "E", "shape": [2**40, 4], "sparse": True, "init": {"constant": 1.0}}]})
ids = np.array([2**40 - 1, 3, 3], dtype=np.uint64)
p = c.push("np", {"E": descent.Rows(ids, np.ones((3, 4), np.float32))})
r = p["E"]
assert r.rows.dtype == np.int64 and r.values.dtype == np.float32 and r.values.shape == (3, 4), r
assert r.rows.tolist() == [2**40 - 1, 3, 3] and r.values.tolist() == [[0.5] * 4, [0.0] * 4, [0.0] * 4], r
out = np.empty((2, 4), np.float32)
st, got = c.pull_rows("np", "E", [3, 7], out=out)
assert got is out and st == 1 and out.tolist() == [[0.0] * 4, [1.0] * 4], out
print("ok")
''' % os.path.join(ROOT, "client", "python")
        for urls in ([self.ds[0].url], [d.url for d in self.ds[1:]]):
            r = subprocess.run([PY, "-c", code] + urls, capture_output=True, text=True, timeout=120)
            self.assertEqual(r.stdout.strip(), "ok", r.stderr[-2000:])
            Client(urls).delete("np")


if __name__ == "__main__":
    unittest.main()
