"""test_torch_optim: descent.torch against torch.optim run locally, on a
small CNN on Fashion-MNIST: every algorithm and option, every scheduler,
param groups and add_param_group, .grad None skipped as torch skips it,
step(closure), state_dict both ways, deepcopy/pickle/repr, sharding over two daemons, torch's
ValueErrors and signatures, non-contiguous parameters, a late worker, and
4 torchrun-style sync processes matching torch.optim on the mean of their
gradients, all bit for bit.  The torch parts run under /usr/bin/python3
(torch_cases.py, torch_workers.py), which has Debian's python3-torch."""
import json
import os
import subprocess
import tempfile
import unittest

from harness import Daemon

HERE = os.path.dirname(os.path.abspath(__file__))
PY = "/usr/bin/python3"


def have_torch():
    try:
        return subprocess.run([PY, "-c", "import torch"], capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


HAVE_TORCH = have_torch()


@unittest.skipUnless(HAVE_TORCH, "/usr/bin/python3 has no torch (make deps-test installs python3-torch)")
class TorchOptim(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Daemon()
        cls.d2 = Daemon()
        r = subprocess.run([PY, os.path.join(HERE, "torch_cases.py"), cls.d.url], capture_output=True, text=True,
                           timeout=600, cwd=HERE, env=dict(os.environ, DESCENT_URL2=cls.d2.url))
        cls.stderr = r.stderr
        cls.results = {}
        for line in r.stdout.splitlines():
            if line.startswith("{"):
                doc = json.loads(line)
                cls.results[doc["case"]] = doc

    @classmethod
    def tearDownClass(cls):
        for d in (cls.d, cls.d2):
            d.stop()
            d.cleanup()

    def check(self, case):
        r = self.results.get(case)
        self.assertIsNotNone(r, "case %s did not run:\n%s" % (case, self.stderr[-3000:]))
        self.assertTrue(r["ok"], "%s: %s" % (case, r["detail"]))

    def test_every_algorithm_and_option(self):
        self.check("algos")

    def test_every_scheduler(self):
        self.check("schedulers")

    def test_param_groups_and_add_param_group(self):
        self.check("groups")

    def test_none_grads_skipped_as_torch_does(self):
        self.check("none_grads")

    def test_closure_loss_reaches_the_history(self):
        self.check("closure_loss")

    def test_state_dict_into_torch_and_back(self):
        self.check("state_dict_roundtrip")

    def test_deepcopy_pickle_repr(self):
        self.check("deepcopy_pickle_repr")

    def test_valueerrors_and_signatures(self):
        self.check("valueerrors")

    def test_noncontiguous_and_outside_changes(self):
        self.check("noncontiguous_zero_grad")

    def test_late_worker_and_async(self):
        self.check("late_worker_and_async")

    def test_sharded_over_two_daemons(self):
        self.check("sharded")

    def test_four_sync_processes_match_the_mean(self):
        out = tempfile.mkdtemp(prefix="descent-ranks-")
        script = os.path.join(HERE, "torch_workers.py")
        procs = []
        for rank in (3, 2, 1, 0):  # rank 0 last: the others wait for its instances
            env = dict(os.environ, RANK=str(rank), WORLD_SIZE="4", MASTER_ADDR="127.0.0.1", MASTER_PORT="29500",
                       DESCENT_URL=self.d.url)
            procs.append(subprocess.Popen([PY, script, "ranks", out, "4"], env=env, cwd=HERE,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        outs = [p.communicate(timeout=300)[0] for p in procs]
        for p, o in zip(procs, outs):
            self.assertEqual(p.returncode, 0, o[-3000:])
        st, body, _ = self.d.req("GET", "/v1/optimizers/ranks.g0")
        self.assertEqual((st, body["mode"], body["workers"], body["step"]), (200, "sync", 4, 4), body)
        r = subprocess.run([PY, script, "--check", out, "4"], capture_output=True, text=True, timeout=300, cwd=HERE)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("identical: 4 ranks, 4 steps", r.stdout)


if __name__ == "__main__":
    unittest.main()
