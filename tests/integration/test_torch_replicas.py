"""test_torch_replicas: descent.torch on a Raft group of three.

descent.torch.Adam with url="a|b|c" (the members of one group) trains a
small model beside torch.optim.Adam run locally on a copy; half-way the
group's leader is killed -9 while the optimizer keeps stepping.  The client
follows the new leader and retries each push with its Idempotency-Key, so
after every step the parameters equal torch.optim's bit for bit: no step
lost, none applied twice.  The torch side runs under /usr/bin/python3
(this file, --cases URL STEPS)."""
import os
import subprocess
import sys
import unittest

from harness import quick

HERE = os.path.dirname(os.path.abspath(__file__))
PY = "/usr/bin/python3"
STEPS = quick(16, 10)


def have_torch():
    try:
        return subprocess.run([PY, "-c", "import torch"], capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def cases(url, steps):
    sys.path.insert(0, os.path.join(HERE, "..", "..", "client", "python"))
    import torch
    import descent.torch as dt

    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))

    a, b = model(), model()
    oa = dt.Adam(a.parameters(), lr=0.01, amsgrad=True, url=url, name="torch-repl")
    ob = torch.optim.Adam(b.parameters(), lr=0.01, amsgrad=True)
    torch.manual_seed(1)
    for k in range(steps):
        x = torch.randn(8, 6)
        for m, o in ((a, oa), (b, ob)):
            o.zero_grad()
            m(x).square().mean().backward()
            o.step()
        if not all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters())):
            print("differs at step %d" % k, flush=True)
            return 1
        print("step %d" % k, flush=True)
    print("ok", flush=True)
    return 0


@unittest.skipUnless(have_torch(), "python3-torch is not installed")
class TorchOnReplicas(unittest.TestCase):
    def test_adam_across_a_leader_kill_equals_torch(self):
        from replicas import Group
        g = Group(3)
        try:
            lead = g.wait_leader()
            url = "|".join(d.url for d in g.live())
            p = subprocess.Popen([PY, os.path.abspath(__file__), "--cases", url, str(STEPS)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            out = []
            for line in p.stdout:
                out.append(line)
                if line.strip() == "step %d" % (STEPS // 2):
                    g.kill9(lead)
            err = p.stderr.read()
            p.stdout.close()
            p.stderr.close()
            self.assertEqual(p.wait(300), 0, "".join(out) + err)
            self.assertEqual(out[-1].strip(), "ok", "".join(out) + err)
            self.assertIn("step %d\n" % (STEPS - 1), out)
            g.wait_applied()
            st, body, _, _ = g.write("GET", "/v1/optimizers")
            self.assertEqual(st, 200, body)
            steps = [o["step"] for o in body["optimizers"] if o["name"].startswith("torch-repl")]
            self.assertEqual(steps, [STEPS], body)  # one instance (both groups' params), every step once
        finally:
            g.stop()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--cases":
        sys.exit(cases(sys.argv[2], int(sys.argv[3])))
    unittest.main()
