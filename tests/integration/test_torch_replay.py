"""test_torch_replay: every torch.optim reference vector (tests/data/optim/)
replayed over HTTP against the real daemon, once with JSON bodies and once
with binary bodies.  The parameters after every step must equal torch's bit
for bit (float32); the exported state (buffers under torch's names, step)
must be within the README's tolerance, and in fact exact."""
import json
import struct
import unittest

from harness import TORCH_CASES, DaemonTest, bytes_to_floats, floats_to_bytes, load_case


def bits(values):
    """The float32 bit patterns of values (a list of ints), for exact comparison."""
    return list(struct.unpack("<%dI" % len(values), floats_to_bytes(values)))


class TorchReplay(DaemonTest):
    def create_case(self, name, case):
        self.create(name, case["algorithm"], hyper=case["hyper"],
                    tensors=[{"name": "w", "shape": [case["n"]], "values": case["init"]}])

    def check_state(self, name, case):
        st = self.d.export(name)
        steps = case["steps"]
        self.assertEqual(st["step"], steps)
        self.assertEqual(st["algorithm"], case["algorithm"])
        self.assertEqual(bits(st["params"]["w"]), bits(case["expected"][-1]))
        want = {k: v for k, v in case["final_state"].items() if k != "step"}
        self.assertEqual(sorted(st["buffers"]), sorted(want), "buffers under torch's names")
        if "step" in case["final_state"]:
            self.assertEqual(st["step"], int(case["final_state"]["step"]))
        for key, ref in want.items():
            ours = st["buffers"][key]["w"]
            self.assertEqual(len(ours), case["n"])
            for i, (o, t) in enumerate(zip(ours, ref)):
                # README tolerance for state: S = max(|state_i|, max_t |grads_t,i|)
                s = max([abs(t)] + [abs(g[i]) for g in case["grads"]])
                self.assertLessEqual(abs(o - t), 1e-6 + 1e-5 * s, "%s[%d]" % (key, i))
            self.assertEqual(bits(ours), bits(ref), "%s is not bit-exact" % key)

    def test_json(self):
        for cname in TORCH_CASES:
            with self.subTest(case=cname):
                case = load_case(cname)
                name = "j-" + cname
                self.create_case(name, case)
                for t, (g, want) in enumerate(zip(case["grads"], case["expected"])):
                    # floats are written as Python's repr of the float32 value: exact
                    st, body, _ = self.d.req("POST", "/v1/optimizers/%s/step" % name,
                                             json.dumps({"grads": {"w": g}, "step": t}),
                                             {"Content-Type": "application/json"})
                    self.assertEqual(st, 200, body)
                    self.assertEqual(body["step"], t + 1)
                    self.assertEqual(bits(body["params"]["w"]), bits(want), "after step %d" % (t + 1))
                self.check_state(name, case)

    def test_binary(self):
        for cname in TORCH_CASES:
            with self.subTest(case=cname):
                case = load_case(cname)
                name = "b-" + cname
                self.create_case(name, case)
                for t, (g, want) in enumerate(zip(case["grads"], case["expected"])):
                    st, data, h = self.d.req("POST", "/v1/optimizers/%s/step?worker=w&step=%d" % (name, t),
                                             floats_to_bytes(g),
                                             {"Content-Type": "application/octet-stream",
                                              "Accept": "application/octet-stream"})
                    self.assertEqual(st, 200, data)
                    self.assertEqual(h["content-type"], "application/octet-stream")
                    self.assertEqual(h["descent-step"], str(t + 1))
                    self.assertEqual(data, floats_to_bytes(want), "after step %d" % (t + 1))
                # the binary pull gives the same bytes
                st, data, h = self.d.req("GET", "/v1/optimizers/%s/params" % name,
                                         headers={"Accept": "application/octet-stream"})
                self.assertEqual((st, h["descent-step"]), (200, str(case["steps"])))
                self.assertEqual(data, floats_to_bytes(case["expected"][-1]))
                self.check_state(name, case)

    def test_json_and_binary_agree_nested_and_flat(self):
        # the same case pushed as a flat "grads" array and as the tensor split in
        # two named tensors: the layouts are the same kernel path
        case = load_case("adam_amsgrad")
        n = case["n"]
        k = n // 3
        self.create("split", case["algorithm"], hyper=case["hyper"],
                    tensors=[{"name": "a", "shape": [k], "values": case["init"][:k]},
                             {"name": "b", "shape": [n - k], "values": case["init"][k:]}])
        for t, (g, want) in enumerate(zip(case["grads"], case["expected"])):
            body = {"grads": g} if t % 2 else {"grads": {"b": g[k:], "a": g[:k]}}
            st, rep, _ = self.d.req("POST", "/v1/optimizers/split/step", body)
            self.assertEqual(st, 200, rep)
            self.assertEqual(bits(rep["params"]["a"] + rep["params"]["b"]), bits(want))
        st = self.d.export("split")
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            self.assertEqual(bits(st["buffers"][key]["a"] + st["buffers"][key]["b"]),
                             bits(case["final_state"][key]))


class LargeTiled(DaemonTest):
    """Steps of at least 2^18 floats are cut across kernel threads (kpool);
    the kernels are elementwise, so a torch vector tiled 8192 times must
    still give torch's bits in every copy."""

    daemon_args = ("--threads", "3")
    TILES = 8192

    def test_tiled_torch_vectors_binary(self):
        from harness import quick
        for cname in quick(["adam_amsgrad", "rmsprop_centered_momentum", "sgd_nesterov_wd", "adagrad_decay",
                            "adamw_maximize"], ["adam_amsgrad", "sgd_nesterov_wd"]):
            with self.subTest(case=cname):
                case = load_case(cname)
                n = case["n"] * self.TILES
                self.assertGreaterEqual(n, 1 << 18)
                name = "big-" + cname.replace("_", "-")
                st, body, _ = self.d.req("POST", "/v1/optimizers", json.dumps(
                    {"name": name, "algorithm": case["algorithm"], "hyper": case["hyper"],
                     "tensors": [{"name": "w", "shape": [self.TILES, case["n"]], "values": case["init"] * self.TILES}]}),
                    {"Content-Type": "application/json"})
                self.assertEqual(st, 201, body)
                steps = quick(case["steps"], 20)
                for t in range(steps):
                    st, data, h = self.d.req("POST", "/v1/optimizers/%s/step" % name,
                                             floats_to_bytes(case["grads"][t]) * self.TILES,
                                             {"Content-Type": "application/octet-stream",
                                              "Accept": "application/octet-stream"})
                    self.assertEqual((st, h["descent-step"]), (200, str(t + 1)))
                    self.assertEqual(data, floats_to_bytes(case["expected"][t]) * self.TILES, "after step %d" % (t + 1))
                self.d.req("DELETE", "/v1/optimizers/" + name)


if __name__ == "__main__":
    unittest.main()
