"""test_half: bfloat16 and float16 binary bodies (proto/binary.md, "Wire
precision").  A half-precision push gives exactly the parameters a float32
push of the widened values gives, for every algorithm, async and sync; the
parameters come back rounded to nearest even when asked; NaN, Inf, wrong
lengths and unknown dtypes are refused and change nothing.
"""
import random
import struct
import unittest

from harness import DaemonTest, bytes_to_floats, floats_to_bytes

ALGS = [("sgd", {"lr": 0.1}), ("sgd", {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
        ("adagrad", {"lr": 0.1}), ("rmsprop", {"lr": 0.01, "centered": True, "momentum": 0.5}),
        ("adam", {"lr": 0.01, "amsgrad": True}), ("adamw", {"lr": 0.01})]
BIN = "application/octet-stream"


def bf16_bytes(values):
    """values (exactly representable in bfloat16) as little-endian bf16."""
    return b"".join(struct.pack("<f", v)[2:] for v in values)


def bf16_round(v):
    """v rounded to bfloat16 (nearest even), as a float."""
    u = struct.unpack("<I", struct.pack("<f", v))[0]
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return struct.unpack("<f", struct.pack("<I", u))[0]


def f16_bytes(values):
    return struct.pack("<%de" % len(values), *values)


class Half(DaemonTest):
    def push(self, name, body, dtype=None, accept=BIN, query=""):
        ct = BIN + ("; dtype=" + dtype if dtype else "")
        return self.d.req("POST", "/v1/optimizers/%s/step%s" % (name, query), body,
                          {"Content-Type": ct, "Accept": accept}, raw=True)

    def grads(self, rng, n, dtype):
        g = [rng.uniform(-2, 2) for _ in range(n)]
        if dtype == "bfloat16":
            return [bf16_round(x) for x in g]
        return [struct.unpack("<e", struct.pack("<e", x))[0] for x in g]

    def test_half_push_equals_float32_of_the_widened_values(self):
        rng = random.Random(5)
        n = 37
        for dtype, enc in (("bfloat16", bf16_bytes), ("float16", f16_bytes)):
            for k, (alg, hyper) in enumerate(ALGS):
                a, b = "h%d%s" % (k, dtype[:2]), "f%d%s" % (k, dtype[:2])
                self.create(a, alg, n=n, hyper=hyper)
                self.create(b, alg, n=n, hyper=hyper)
                for _ in range(5):
                    g = self.grads(rng, n, dtype)
                    sa, pa, _ = self.push(a, enc(g), dtype)
                    sb, pb, _ = self.push(b, floats_to_bytes(g))
                    self.assertEqual((sa, sb), (200, 200), (pa, pb))
                    self.assertEqual(pa, pb, "%s %s: half and float32 pushes differ" % (dtype, alg))
                self.assertEqual(self.d.export(a)["buffers"], self.d.export(b)["buffers"])

    def test_sync_round_of_half_pushes(self):
        self.create("s", "adam", n=8, mode="sync", workers=2)
        self.create("t", "adam", n=8, mode="sync", workers=2)
        import threading
        rng = random.Random(9)
        g1, g2 = self.grads(rng, 8, "bfloat16"), self.grads(rng, 8, "bfloat16")
        out = {}

        def go(name, w, body, dtype):
            from harness import Daemon  # noqa: F401 (a connection of its own)
            c = self.d.new_conn()
            ct = BIN + ("; dtype=" + dtype if dtype else "")
            c.request("POST", "/v1/optimizers/%s/step?worker=%s&step=0" % (name, w), body,
                      {"Content-Type": ct, "Accept": BIN})
            r = c.getresponse()
            out[(name, w)] = (r.status, r.read())
            c.close()

        ts = [threading.Thread(target=go, args=("s", "a", bf16_bytes(g1), "bfloat16")),
              threading.Thread(target=go, args=("s", "b", bf16_bytes(g2), "bfloat16")),
              threading.Thread(target=go, args=("t", "a", floats_to_bytes(g1), None)),
              threading.Thread(target=go, args=("t", "b", floats_to_bytes(g2), None))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(out[("s", "a")], out[("t", "a")])
        self.assertEqual(out[("s", "a")][0], 200)
        self.assertEqual(self.d.export("s")["params"], self.d.export("t")["params"])

    def test_parameters_come_back_rounded(self):
        vals = [1.0 + 2 ** -9, 1.0 + 3 * 2 ** -9, -3.0e-3, 65504.0, 1e-8, 70000.0, 0.1, -0.0]
        self.create("p", "sgd", tensors=[{"name": "w", "shape": [len(vals)], "values": vals}])
        st, body, h = self.d.req("GET", "/v1/optimizers/p/params", headers={"Accept": BIN + "; dtype=bfloat16"},
                                 raw=True)
        self.assertEqual((st, h["content-type"]), (200, BIN + "; dtype=bfloat16"))
        got = [struct.unpack("<f", b"\0\0" + body[2 * i:2 * i + 2])[0] for i in range(len(vals))]
        f32 = [struct.unpack("<f", struct.pack("<f", v))[0] for v in vals]
        self.assertEqual(got, [bf16_round(v) for v in f32])
        self.assertEqual(got[0], 1.0)           # a tie: to even
        self.assertEqual(got[1], 1.0 + 2 ** -7)  # a tie: to even, upwards
        st, body, h = self.d.req("GET", "/v1/optimizers/p/params", headers={"Accept": BIN + "; dtype=float16"},
                                 raw=True)
        self.assertEqual((st, len(body)), (200, 2 * len(vals)))
        got = list(struct.unpack("<%de" % len(vals), body))
        self.assertEqual(got[3], 65504.0)
        self.assertEqual(got[5], float("inf"))  # past float16's range
        self.assertEqual(got[:3], [struct.unpack("<e", struct.pack("<e", v))[0] for v in f32[:3]])
        # a step reply in bf16
        st, body, h = self.push("p", bf16_bytes([0.0] * len(vals)), "bfloat16", BIN + "; dtype=bfloat16")
        self.assertEqual((st, len(body)), (200, 2 * len(vals)))

    def test_refusals_change_nothing(self):
        self.create("r", "adam", n=4)
        before = self.d.export("r")
        bad = [(f16_bytes([1, float("inf"), 0, 0]), "float16", 422, "not_finite"),
                (b"\xc0\x7f" + bf16_bytes([1, 2, 3]), "bfloat16", 422, "not_finite"),  # a bf16 NaN first
                (bf16_bytes([1, 2, 3]), "bfloat16", 400, "bad_length"),
                (floats_to_bytes([1, 2, 3, 4]), "bfloat16", 400, "bad_length"),
                (bf16_bytes([1, 2, 3, 4]), "float64", 415, "unsupported_media_type")]
        for body, dtype, status, code in bad:
            st, b, _ = self.push("r", body, dtype, accept="application/json")
            import json
            err = json.loads(b)["error"]
            self.assertEqual((st, err["code"]), (status, code), err)
        st, b, _ = self.push("r", bf16_bytes([1, 2, 3]), "bfloat16", accept="application/json")
        import json
        self.assertIn("expected 4 bfloat16 values", json.loads(b)["error"]["message"])
        st, b, _ = self.push("r", f16_bytes([1, 2, float("nan"), 0]), "float16", accept="application/json")
        self.assertIn("grads.w[2]", json.loads(b)["error"]["message"])
        self.assertEqual(self.d.export("r"), before)
        st, b, _ = self.d.req("GET", "/v1/optimizers/r/params", headers={"Accept": BIN + "; dtype=int8"})
        self.assertEqual((st, b["error"]["code"]), (415, "unsupported_media_type"))


if __name__ == "__main__":
    unittest.main()
