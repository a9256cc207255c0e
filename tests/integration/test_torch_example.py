"""test_torch_example: client/python/examples/torch_fashion_mnist.py --quick
trains its CNN through a real daemon with 4 worker processes (sync mode from
RANK/WORLD_SIZE) and prints its progress and test accuracy."""
import os
import re
import subprocess
import unittest

from harness import ROOT, Daemon

PY = "/usr/bin/python3"
EXAMPLE = os.path.join(ROOT, "client", "python", "examples", "torch_fashion_mnist.py")
DATA = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


@unittest.skipUnless(os.path.exists(DATA), "dataset-fashion-mnist is not installed (make deps-test installs it)")
class Example(unittest.TestCase):
    def test_quick_run(self):
        d = Daemon()
        try:
            r = subprocess.run([PY, EXAMPLE, "--url", d.url, "--quick", "--name", "ex-fmnist"], capture_output=True,
                               text=True, timeout=600)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            steps = re.findall(r"^step +(\d+)  loss ([0-9.]+)$", r.stdout, re.M)
            self.assertGreaterEqual(len(steps), 5, r.stdout)
            self.assertEqual(steps[-1][0], "20")
            m = re.search(r"test accuracy ([0-9.]+) on 1000 images after 20 steps of 4 workers", r.stdout)
            self.assertIsNotNone(m, r.stdout)
            self.assertGreater(float(m.group(1)), 0.3)     # chance is 0.1
            st, body, _ = d.req("GET", "/v1/optimizers")
            self.assertEqual(body["optimizers"], [])          # the example deleted its instance
        finally:
            d.stop()
            d.cleanup()


if __name__ == "__main__":
    unittest.main()
