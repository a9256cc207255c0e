"""test_demo_sparse: the sparse demo's quick run (sparse_demo.py --quick: 6000 training packages
from apt's lists, 2 epochs of 256) through a real daemon with 4 worker processes: descent's test
accuracy is within 1 point of torch trained directly and far above the majority class, the daemon
holds exactly the rows the training set touches (and the evaluation's pulls of untouched rows
allocate none), and the report and plot are written.  Also, without a daemon: the hash is the
documented one, and the workers' numpy gradient is torch's autograd gradient."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

from harness import BUILD, ROOT, QUICK

EXAMPLES = os.path.join(ROOT, "client", "examples")
PY = "/usr/bin/python3"


def have_torch():
    return subprocess.run([PY, "-c", "import torch, numpy"], capture_output=True).returncode == 0


def have_lists():
    import glob
    return bool(glob.glob("/var/lib/apt/lists/*_Packages*"))


@unittest.skipUnless(have_torch(), "python3-torch and python3-numpy are needed (make demo-sparse installs them)")
@unittest.skipUnless(have_lists(), "apt's package lists are empty (apt-get update; make demo-sparse does it)")
class SparseDemo(unittest.TestCase):
    def test_hash_and_gradient(self):
        """The fixed hash (BLAKE2b-64, little-endian, mod 2^bits) and the numpy gradient against torch's."""
        code = r"""
import sys; sys.path.insert(0, %r)
import numpy as np, torch
import sparse_features as sf, sparse_worker as sw
assert sf.row_of(b"1 debian", 24) == 4661623, sf.row_of(b"1 debian", 24)
assert sf.row_of(b"2 python module", 24) == 15336958
assert sf.row_of(b"1 debian", 62) == 4067383849829998967
assert list(sf.featurize("Python 3 module: the Python module", 24)) == [101082, 2828854, 3824058, 3827826,
    6881590, 7954389, 15336958, 15436613, 16498427]
rng = np.random.default_rng(3)
texts = ["library for %%s and %%s" %% (a, b) for a, b in zip("abcdefgh", "hgfedcba")] + ["x"]
rows = [sf.featurize(t, 10) for t in texts]
offs = np.zeros(len(rows) + 1, np.int64); np.cumsum([len(r) for r in rows], out=offs[1:])
flat = np.concatenate(rows); y = rng.integers(0, 4, len(rows))
Wt = torch.tensor(rng.normal(size=(1 << 10, 4)).astype(np.float32), requires_grad=True)
bt = torch.tensor(rng.normal(size=4).astype(np.float32), requires_grad=True)
z = torch.nn.functional.embedding_bag(torch.from_numpy(flat.astype(np.int64)), Wt, torch.from_numpy(offs[:-1]),
                                      mode="sum") + bt
loss = torch.nn.functional.cross_entropy(z, torch.from_numpy(y), reduction="sum") * 0.25
loss.backward()
u, inv = np.unique(flat, return_inverse=True)
l, gW, gb = sw.loss_and_grad(offs, flat, y, Wt.detach().numpy()[u], inv, bt.detach().numpy(), 0.25)
assert abs(l * 0.25 - float(loss)) < 1e-5 * abs(float(loss)), (l, float(loss))
ref = Wt.grad.numpy()
assert np.abs(gW - ref[u]).max() < 1e-6, np.abs(gW - ref[u]).max()
assert np.count_nonzero(np.delete(ref, u, axis=0)) == 0
assert np.abs(gb - bt.grad.numpy()).max() < 1e-6
# a worker's quarter: contiguous, covering the batch exactly once
sel = np.arange(10)
parts = [sw.quarter(sel, r, 4) for r in range(4)]
assert [len(p) for p in parts] == [3, 3, 2, 2] and list(np.concatenate(parts)) == list(sel)
print("ok")
""" % EXAMPLES
        r = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout[-2000:] + r.stderr[-3000:])
        self.assertEqual(r.stdout.strip(), "ok")

    @unittest.skipIf(QUICK, "the sanitizer run skips the demo (it runs in the plain build)")
    def test_quick_run(self):
        out = tempfile.mkdtemp(prefix="descent-sparse-demo-")
        try:
            r = subprocess.run([PY, os.path.join(EXAMPLES, "sparse_demo.py"), "--quick", "--out", out],
                               capture_output=True, text=True, timeout=600, env=dict(os.environ, DESCENT_BUILD=BUILD))
            self.assertEqual(r.returncode, 0, r.stdout[-3000:] + r.stderr[-3000:])
            progress = [l for l in r.stdout.splitlines() if l.lstrip().startswith("step ")]
            self.assertGreaterEqual(len(progress), 10, r.stdout)
            with open(os.path.join(out, "sparse.json")) as f:
                res = json.load(f)
            d, t = res["descent"], res["torch"]
            self.assertEqual(res["train_n"], 6000)
            self.assertEqual(len(res["sections"]), 10)
            self.assertEqual(d["steps"], 2 * -(-6000 // 256))
            self.assertLessEqual(abs(d["test_acc"] - t["test_acc"]), 0.01, (d["test_acc"], t["test_acc"]))
            self.assertGreater(res["agreement"], 0.95)
            self.assertGreater(d["test_acc"], res["majority_acc"] + 0.4)
            self.assertGreater(res["majority_acc"], 0.1)
            # exactly the rows the training packages touch, in the daemon and in torch's state;
            # the evaluation's pulls of never-touched rows allocate nothing
            self.assertEqual(d["rows_held"], res["train_rows"])
            self.assertEqual(t["rows_touched"], res["train_rows"])
            self.assertEqual(d["rows_held_after_eval"], d["rows_held"])
            self.assertGreater(res["eval_rows"], 1000)
            self.assertEqual(d["bytes_held"], d["rows_held"] * 10 * 8)
            self.assertEqual(res["dense_bytes"], (1 << 24) * 10 * 8)
            self.assertEqual(t["bytes_held"], res["dense_bytes"])
            self.assertLess(d["bytes_held"] * 20, res["dense_bytes"])
            self.assertGreater(d["examples_per_s"], 0)
            self.assertEqual(len(d["curve"]), len(t["curve"]))
            self.assertEqual([s for s, _ in d["curve"]], [s for s, _ in t["curve"]])
            self.assertLess(d["curve"][-1][1], d["curve"][0][1] * 0.7)
            with open(os.path.join(out, "sparse.md")) as f:
                md = f.read()
            self.assertIn("| descent, 4 workers, sparse tensor | **%.1f%%**" % (100 * d["test_acc"]), md)
            with open(os.path.join(out, "sparse.svg")) as f:
                svg = f.read()
            self.assertTrue(svg.startswith("<svg") and svg.count("<path") == 4)  # two charts, two curves each
        finally:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
