"""test_demo: a shortened road trip (road_trip.py --quick: 12000 training
images, 2 epochs) through a real daemon with C and Python workers: gradient
methods learn (Adam and SGD+momentum above 70% test accuracy after 92 steps),
random search stays far below them, the gradient check passes in float64,
and the report and plot are written."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

from harness import BUILD, ROOT

DATA = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
WORKER = os.path.join(ROOT, BUILD, "bin", "fmnist_worker")


@unittest.skipUnless(os.path.exists(DATA), "dataset-fashion-mnist is not installed (make demo installs it)")
@unittest.skipIf(os.environ.get("DESCENT_QUICK") == "1", "the sanitizer run skips the demo (it runs in the plain build)")
class Demo(unittest.TestCase):
    def test_quick_road_trip(self):
        self.assertTrue(os.path.exists(WORKER), "build fmnist_worker first (make integration does)")
        out = tempfile.mkdtemp(prefix="descent-demo-")
        try:
            r = subprocess.run([sys.executable, os.path.join(ROOT, "client", "examples", "road_trip.py"), "--quick",
                                "--out", out], capture_output=True, text=True, timeout=900,
                               env=dict(os.environ, DESCENT_BUILD=BUILD))
            self.assertEqual(r.returncode, 0, r.stdout[-3000:] + r.stderr[-3000:])
            with open(os.path.join(out, "road-trip.json")) as f:
                res = {x["approach"]: x for x in json.load(f)["runs"]}
            self.assertEqual(len(res), 10, sorted(res))
            for name in ("Adam", "SGD + momentum"):
                self.assertGreaterEqual(res[name]["test_acc"], 0.70, name)
                self.assertLess(res[name]["train_loss"], 1.2, name)
            rs = res["random search"]["test_acc"]
            self.assertLess(rs, 0.30)
            self.assertGreater(res["Adam"]["test_acc"] - rs, 0.35)
            num = res["numeric-gradient descent"]["numeric"]
            self.assertLess(num["gradient_check"], 1e-6)
            self.assertLess(num["gradient_check_elementwise"], 1e-6)
            self.assertGreater(num["elements_checked"], 1000)
            self.assertGreater(num["numeric_seconds"], 100 * num["analytic_seconds"])
            self.assertEqual(res["gradient descent (full batch)"]["steps"], 15)
            self.assertEqual(res["Adam"]["steps"], 92)
            self.assertGreaterEqual(res["Adam, one worker in Python"]["test_acc"], 0.60)
            with open(os.path.join(out, "road-trip.md")) as f:
                md = f.read()
            self.assertEqual(md.count("\n| "), 12)  # header, separator and 10 rows
            with open(os.path.join(out, "road-trip.svg")) as f:
                svg = f.read()
            self.assertTrue(svg.startswith("<svg") and svg.count("<path") >= 7)
        finally:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
