"""test_py_package: client/python as the package `descent`: pip install
(offline, into a temporary venv with --system-site-packages), the old
descent_client module re-exporting it, scalar gradients and what the
client refuses with the daemon's codes, the per-client fan-out pool, the
bound on sync pushes, and the zero-copy array paths with numpy and torch
(py_arrays.py under /usr/bin/python3)."""
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import unittest

from harness import ROOT, Daemon

sys.path.insert(0, os.path.join(ROOT, "client", "python"))
import descent  # noqa: E402
import descent_client  # noqa: E402
from descent import Client, DescentError  # noqa: E402

PKG = os.path.join(ROOT, "client", "python")
PY = "/usr/bin/python3"


class Package(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Daemon()

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()
        cls.d.cleanup()

    def test_old_module_reexports(self):
        self.assertIs(descent_client.Client, descent.Client)
        self.assertIs(descent_client.DescentError, descent.DescentError)
        self.assertEqual(sorted(descent_client.__all__), sorted(descent.__all__))

    def test_scalars_and_refusals(self):
        c = Client(self.d.url)
        c.create(name="sc", algorithm="sgd", hyper={"lr": 1}, tensors=[{"name": "b", "shape": [1]},
                                                                       {"name": "w", "shape": [2]}])
        self.assertEqual(c.push("sc", {"b": 0.5, "w": [1, 1]}), {"b": [-0.5], "w": [-1, -1]})
        for bad in ({"b": 0.5, "w": 0.5}, {"b": True, "w": [1, 1]}, 0.5):
            with self.assertRaises(DescentError) as cm:
                c.push("sc", bad)
            self.assertIn(cm.exception.code, ("bad_length", "bad_request"))
            self.assertEqual(cm.exception.status, 400)
        self.assertEqual(c.pull("sc").step, 1)   # nothing refused was applied
        c.create(name="one", algorithm="sgd", hyper={"lr": 1}, tensors=[{"name": "x", "shape": [1]}])
        self.assertEqual(c.push("one", 2.0), {"x": [-2]})
        c.close()

    def test_sync_push_is_bounded(self):
        c = Client(self.d.url, timeout=0.5, sync_timeout=0.5)
        c.create(name="sy", algorithm="sgd", mode="sync", workers=2, tensors=[{"name": "x", "shape": [1]}])
        with self.assertRaises(DescentError) as cm:
            c.push("sy", [1], worker="alone")   # the partner never comes
        self.assertEqual((cm.exception.status, cm.exception.code), (None, "timeout"))
        c.close()

    def test_one_pool_per_client(self):
        d2 = Daemon()
        try:
            c = Client([self.d.url, d2.url])
            c.create(name="pool", algorithm="sgd", tensors=[{"name": "w", "shape": [10]}])
            before = threading.active_count()
            for _ in range(20):
                c.push("pool", [1] * 10)
                c.pull("pool")
            self.assertLessEqual(c._fan.threads, 1)
            self.assertLessEqual(threading.active_count(), before + 1)
            self.assertEqual(c.pull("pool").steps, [20, 20])
            c.close()
        finally:
            d2.stop()
            d2.cleanup()

    @unittest.skipUnless(os.path.exists(PY), "no /usr/bin/python3")
    def test_pip_install_offline_in_a_venv(self):
        tmp = tempfile.mkdtemp(prefix="descent-venv-")
        try:
            venv = os.path.join(tmp, "venv")
            # Debian's pip (python3-pip) is seen through --system-site-packages: no copy of pip is needed
            has_pip = subprocess.run([PY, "-c", "import pip"], capture_output=True).returncode == 0
            subprocess.run([PY, "-m", "venv", "--system-site-packages"] + (["--without-pip"] if has_pip else [])
                           + [venv], check=True, capture_output=True, timeout=300)
            vpy = os.path.join(venv, "bin", "python3")
            src = os.path.join(tmp, "src")   # a copy: building writes build/ and *.egg-info next to the sources
            shutil.copytree(PKG, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
            r = subprocess.run([vpy, "-m", "pip", "install", "--no-build-isolation", "--no-index",
                                "--no-deps", src], capture_output=True, text=True, timeout=300,
                               cwd=tmp, env=dict(os.environ, PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1"))
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            code = ("import descent, descent_client, os; "
                    "assert os.path.exists(os.path.join(os.path.dirname(descent.__file__), 'py.typed')); "
                    "c = descent.Client(%r); c.create(name='venv', algorithm='sgd', hyper={'lr': 1}, "
                    "tensors=[{'name': 'w', 'shape': [2]}]); print(c.push('venv', [1, 2]))" % self.d.url)
            r = subprocess.run([vpy, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout.strip(), "Params(step=1, {'w': [-1.0, -2.0]})")
            self.assertIn(venv, subprocess.run([vpy, "-c", "import descent; print(descent.__file__)"],
                                               capture_output=True, text=True, cwd=tmp).stdout)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @unittest.skipUnless(os.path.exists(PY), "no /usr/bin/python3")
    def test_zero_copy_arrays_numpy_torch(self):
        r = subprocess.run([PY, os.path.join(os.path.dirname(__file__), "py_arrays.py"), self.d.url],
                           capture_output=True, text=True, timeout=300)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(r.stdout.strip(), "ok")


if __name__ == "__main__":
    unittest.main()
