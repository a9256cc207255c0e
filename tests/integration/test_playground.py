"""test_playground: POST /v1/playground runs the daemon's own kernels on the
seed's objectives (the seed: neuralnets' optimizers tutorial that descent grew
from, not part of this repository): trajectories match a closed form (SGD) and a replay
through ordinary pushes (Adam, momentum) bit for bit, and the seed's claims
hold: momentum escapes the saddle where plain SGD stalls, and rolls past the
local minimum SGD settles in."""
import struct
import unittest

from harness import DaemonTest, f32


def ravine_grad(x, y):
    return [x, 100.0 * y]


class Playground(DaemonTest):
    def run_pg(self, **body):
        st, out, _ = self.d.req("POST", "/v1/playground", body)
        self.assertEqual(st, 200, out)
        self.assertEqual(len(out["trajectory"]), body["steps"] + 1)
        self.assertEqual(len(out["losses"]), body["steps"] + 1)
        return out

    def test_sgd_matches_closed_form(self):
        lr = 0.015
        out = self.run_pg(objective="ravine", algorithm="sgd", hyper={"lr": lr}, start=[-7, 1], steps=60)
        x, y = f32(-7.0), f32(1.0)
        for t, (px, py) in enumerate(out["trajectory"]):
            px, py = f32(px), f32(py)   # JSON carries the shortest decimal; the value is the float32
            # x_t = x0 (1 - lr)^t and y_t = y0 (1 - 100 lr)^t, up to float32 rounding
            self.assertAlmostEqual(px, -7.0 * (1 - lr) ** t, delta=1e-5 * 7)
            self.assertAlmostEqual(py, 1.0 * (1 - 100 * lr) ** t, delta=1e-5)
            self.assertAlmostEqual(out["losses"][t], (px * px + 100 * py * py) / 2, delta=1e-9 * max(1, out["losses"][t]))
        # SGD zig-zags across the ravine: y changes sign every step
        ys = [p[1] for p in out["trajectory"][:10]]
        self.assertTrue(all(a * b < 0 for a, b in zip(ys, ys[1:])))

    def replay(self, algorithm, hyper, start, steps, grad):
        """The same run as ordinary pushes to an instance: the kernels are torch-exact."""
        self.create("rp", algorithm, hyper=hyper, tensors=[{"name": "p", "shape": [2], "values": start}])
        p = [f32(v) for v in start]
        traj = [p]
        for _ in range(steps):
            g = [f32(v) for v in grad(*p)]
            st, body, _ = self.d.req("POST", "/v1/optimizers/rp/step", {"grads": g})
            self.assertEqual(st, 200, body)
            p = [f32(v) for v in body["params"]["p"]]   # the exact float32 values
            traj.append(p)
        self.d.req("DELETE", "/v1/optimizers/rp")
        return traj

    def test_adam_matches_replay_through_pushes(self):
        out = self.run_pg(objective="ravine", algorithm="adam", hyper={"lr": 0.1}, start=[-7, 1], steps=40)
        traj = self.replay("adam", {"lr": 0.1}, [-7, 1], 40, ravine_grad)
        self.assertEqual([[f32(v) for v in p] for p in out["trajectory"]], traj)

    def test_momentum_rosenbrock_matches_replay(self):
        def rosen(x, y):
            return [-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)]
        out = self.run_pg(objective="rosenbrock", algorithm="momentum", hyper={"lr": 0.0005}, start=[-1.5, 2], steps=30)
        self.assertEqual(out["algorithm"], "sgd")
        self.assertEqual([[f32(v) for v in p] for p in out["trajectory"]],
                         self.replay("momentum", {"lr": 0.0005}, [-1.5, 2], 30, rosen))

    def test_momentum_escapes_the_saddle(self):
        common = dict(objective="saddle", start=[1, 1e-6], steps=200, hyper={"lr": 0.01})
        sgd = self.run_pg(algorithm="sgd", **common)
        mom = self.run_pg(algorithm="momentum", **common)
        self.assertLess(abs(sgd["trajectory"][-1][1]), 1e-4)     # still sitting at the saddle
        self.assertLess(abs(sgd["trajectory"][-1][0]), 0.05)
        self.assertGreater(abs(mom["trajectory"][-1][1]), 1.0)   # rolled off it
        self.assertLess(mom["losses"][-1], -1.0)

    def test_momentum_rolls_past_the_local_minimum(self):
        common = dict(objective="local_minimum", start=[2, 1], steps=500, hyper={"lr": 0.01})
        sgd = self.run_pg(algorithm="sgd", **common)
        mom = self.run_pg(algorithm="momentum", **common)
        self.assertAlmostEqual(sgd["trajectory"][-1][0], 1.1309, places=3)   # the local minimum
        self.assertAlmostEqual(mom["trajectory"][-1][0], -1.3008, places=3)  # the global one
        self.assertLess(mom["losses"][-1], sgd["losses"][-1] - 2)

    def test_noise_is_seeded_and_random_search_works(self):
        a = self.run_pg(objective="ravine", algorithm="sgd", hyper={"lr": 0.01}, start=[1, 1], steps=20, noise=0.5, seed=3)
        b = self.run_pg(objective="ravine", algorithm="sgd", hyper={"lr": 0.01}, start=[1, 1], steps=20, noise=0.5, seed=3)
        c = self.run_pg(objective="ravine", algorithm="sgd", hyper={"lr": 0.01}, start=[1, 1], steps=20, noise=0.5, seed=4)
        self.assertEqual(a, b)
        self.assertNotEqual(a["trajectory"], c["trajectory"])
        rs = self.run_pg(objective="rosenbrock", algorithm="random_search", hyper={"scale": 0.1, "center": "best", "seed": 1},
                         start=[-1.5, 2], steps=300)
        losses = rs["losses"]
        self.assertTrue(all(b <= a for a, b in zip(losses[1:], losses[2:])))   # best so far never worsens
        self.assertLess(losses[-1], losses[0])

    def test_bad_requests(self):
        for body, status, code in [
            ({"objective": "moon", "algorithm": "sgd", "start": [0, 0], "steps": 1}, 422, "invalid_value"),
            ({"objective": "ravine", "algorithm": "lbfgs", "start": [0, 0], "steps": 1}, 422, "unknown_algorithm"),
            ({"objective": "ravine", "algorithm": "sgd", "start": [0], "steps": 1}, 400, "bad_request"),
            ({"objective": "ravine", "algorithm": "sgd", "start": [0, 0], "steps": 10 ** 7}, 422, "invalid_value"),
            ({"objective": "ravine", "algorithm": "sgd", "start": [0, 0], "steps": 1, "noise": -1}, 422, "invalid_value"),
            ({"objective": "ravine", "algorithm": "sgd", "hyper": {"lr": -1}, "start": [0, 0], "steps": 1}, 422, "invalid_value"),
            ({"objective": "ravine", "algorithm": "sgd", "start": [0, 0], "steps": 1, "x": 1}, 400, "bad_request"),
            # torch.optim.SparseAdam refuses dense gradients; the playground's are dense
            ({"objective": "ravine", "algorithm": "sparse_adam", "start": [0, 0], "steps": 1}, 422, "invalid_value"),
        ]:
            with self.subTest(body=body):
                self.assertError(self.d.req("POST", "/v1/playground", body), status, code)


if __name__ == "__main__":
    unittest.main()
