"""test_py_half: bfloat16 and float16 on the wire from the Python package
and descent.torch (proto/binary.md, "Wire precision").

- descent.Client.push/pull with dtype= send the values rounded to nearest
  even and give exactly what a float32 push of the rounded values gives,
  on one daemon and sharded over two, with numpy, torch and with the
  standard library alone (this interpreter may have neither);
- descent.torch with bfloat16 (float16) parameters keeps float32 master
  copies on the daemon: the parameters after N steps equal torch.optim run
  on float32 masters fed the widened gradients, rounded to the parameters'
  type, bit for bit, and the gradients travel in half precision.
"""
import os
import struct
import subprocess
import sys
import unittest

from harness import ROOT, Daemon

sys.path.insert(0, os.path.join(ROOT, "client", "python"))
from descent import Client, DescentError  # noqa: E402
from descent import wire  # noqa: E402

PY = "/usr/bin/python3"


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def bf16(x):
    u = struct.unpack("<I", struct.pack("<f", x))[0]
    return struct.unpack("<f", struct.pack("<I", (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000))[0]


def f16(x):
    return struct.unpack("<e", struct.pack("<e", x))[0]


class Wire(unittest.TestCase):
    def test_conversions_round_to_nearest_even(self):
        vals = [1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, -0.1, 3.0e38, 1e-40, float("inf")]
        raw = struct.pack("<%df" % len(vals), *vals)
        half = wire.narrow(memoryview(raw), "bfloat16")
        back = struct.unpack("<%df" % len(vals), wire.widen(half, "bfloat16"))
        self.assertEqual(list(back[:3]), [1.0, 1.0 + 2 ** -6, bf16(-0.1)])
        self.assertEqual(back[5], float("inf"))
        h16 = wire.narrow(memoryview(struct.pack("<3f", 65519.0, 65520.0, 0.1)), "float16")
        self.assertEqual(struct.unpack("<3e", h16), (65504.0, float("inf"), f16(0.1)))
        with self.assertRaises(ValueError):
            wire.check_dtype("int8")


class Client_(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ds = [Daemon(), Daemon(), Daemon()]

    @classmethod
    def tearDownClass(cls):
        for d in cls.ds:
            d.stop()
            d.cleanup()

    def run_pair(self, c, name, dtype, grads):
        spec = dict(algorithm="adam", hyper={"lr": 0.01}, tensors=[{"name": "w", "shape": [len(grads[0])]}])
        c.create(name=name + "h", **spec)
        c.create(name=name + "f", **spec)
        rnd = bf16 if dtype == "bfloat16" else f16
        for g in grads:
            a = c.push(name + "h", g, dtype=dtype, reply_dtype="float32", kind="list")
            b = c.push(name + "f", [rnd(x) for x in g], kind="list")
            self.assertEqual(a, b)
        self.assertEqual(c.pull(name + "h", dtype=dtype, kind="list"),
                         {"w": [rnd(x) for x in c.pull(name + "f", kind="list")["w"]]})

    def test_one_daemon_and_sharded(self):
        grads = [[(i * 37 % 101) / 50.0 - 1 + t for i in range(301)] for t in range(4)]
        for urls, tag in (([self.ds[0].url], "one"), ([self.ds[1].url, self.ds[2].url], "two")):
            c = Client(urls if len(urls) > 1 else urls[0])
            for dtype in ("bfloat16", "float16"):
                self.run_pair(c, "%s-%s" % (tag, dtype[:2]), dtype, grads)
            c.close()

    def test_refusals(self):
        c = Client(self.ds[0].url)
        c.create(name="r", algorithm="sgd", tensors=[{"name": "w", "shape": [3]}])
        with self.assertRaises(DescentError) as cm:
            c.push("r", [1.0, float("nan"), 2.0], dtype="bfloat16")
        self.assertEqual((cm.exception.status, cm.exception.code), (422, "not_finite"))
        with self.assertRaises(ValueError):
            c.push("r", [1, 2, 3], dtype="bfloat16", binary=False)
        self.assertEqual(c.pull("r").step, 0)
        c.close()

    def test_standard_library_alone(self):
        # the same pushes from an interpreter without numpy or torch, if this machine has one
        script = r'''
import sys, struct
sys.path.insert(0, %r)
try:
    import numpy
    print("skip: numpy present")
    raise SystemExit(0)
except ImportError:
    pass
from descent import Client
c = Client(%r)
c.create(name="std", algorithm="sgd", hyper={"lr": 1.0}, tensors=[{"name": "w", "shape": [3]}])
print(c.push("std", [0.1, 0.2, 0.3], dtype="bfloat16")["w"], c.pull("std", dtype="float16")["w"])
''' % (os.path.join(ROOT, "client", "python"), self.ds[0].url)
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        if out.stdout.startswith("skip"):
            return
        want = [-bf16(x) for x in (0.1, 0.2, 0.3)]
        self.assertEqual(out.stdout.strip(), "%s %s" % ([bf16(x) for x in want], [f16(x) for x in want]))


TORCH_CASE = r'''
import sys, torch
sys.path.insert(0, %r)
import descent.torch as dt
url = %r
for dtype in (torch.bfloat16, torch.float16):
    torch.manual_seed(1)
    if dtype == torch.bfloat16:
        m = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)).to(dtype)
    else:  # torch 1.13 has no float16 matmul on the CPU: a quadratic instead
        class Quad(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.w = torch.nn.Parameter(torch.randn(7).to(dtype))
                self.b = torch.nn.Parameter(torch.randn(3).to(dtype))
            def forward(self, x):
                return (self.w.float() * x[:, :1].float()).sum(1, keepdim=True) + self.b.float().sum()
        m = Quad()
    for Opt, Ref, kw in ((dt.Adam, torch.optim.Adam, dict(lr=1e-2)), (dt.SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9))):
        # the masters start as the parameters' own values (exact in float32)
        masters = [p.detach().float().clone().requires_grad_(True) for p in m.parameters()]
        o = Opt(m.parameters(), url=url, name="h-%%s-%%s" %% (Opt.__name__, str(dtype)[6:]), **kw)
        r = Ref(masters, **kw)
        for t in range(6):
            x = torch.randn(8, 6).to(dtype)
            m.zero_grad()
            m(x).float().pow(2).mean().backward()
            for p, q in zip(m.parameters(), masters):
                q.grad = p.grad.float()
            o.step()
            r.step()
            assert all(torch.equal(p, q.to(dtype)) for p, q in zip(m.parameters(), masters)), (Opt, dtype, t)
        seg = o._d_segments[0]
        assert o._d_wire_of(seg) == str(dtype)[6:] and o._d_reply_of(seg) == str(dtype)[6:]
print("ok")
'''


@unittest.skipUnless(os.path.exists(PY), "/usr/bin/python3 is missing")
class Torch(unittest.TestCase):
    def test_half_parameters_keep_float32_masters(self):
        d = Daemon()
        try:
            out = subprocess.run([PY, "-c", TORCH_CASE % (os.path.join(ROOT, "client", "python"), d.url)],
                                 capture_output=True, text=True, timeout=300)
            self.assertEqual((out.returncode, out.stdout.strip()), (0, "ok"), out.stderr[-3000:])
        finally:
            d.stop()
            d.cleanup()


if __name__ == "__main__":
    unittest.main()
