"""test_api_basics: every resource answers as proto/openapi.yaml says, over real
HTTP, and bad input is answered with its error and changes nothing."""
import math
import unittest

from harness import DaemonTest, bytes_to_floats, f32, floats_to_bytes


class Basics(DaemonTest):
    def test_healthz(self):
        st, body, h = self.d.req("GET", "/healthz")
        self.assertEqual((st, body), (200, {"status": "ok"}))
        self.assertTrue(h["content-type"].startswith("application/json"))

    def test_create_describe_list_delete(self):
        spec = {"name": "svm", "algorithm": "adam", "hyper": {"lr": 0.001, "betas": [0.9, 0.999]},
                "tensors": [{"name": "W", "shape": [10, 785], "init": {"normal": {"std": 0.0001, "seed": 42}}},
                            {"name": "b", "shape": [10], "values": [0] * 10}]}
        st, body, _ = self.d.req("POST", "/v1/optimizers", spec)
        self.assertEqual(st, 201, body)
        self.assertEqual(body["name"], "svm")
        self.assertEqual(body["algorithm"], "adam")
        self.assertEqual(body["hyper"]["lr"], 0.001)
        self.assertEqual(body["hyper"]["betas"], [0.9, 0.999])
        self.assertEqual(body["hyper"]["weight_decay"], 0)
        self.assertEqual(body["step"], 0)
        self.assertEqual(body["mode"], "async")
        self.assertEqual([(t["name"], t["shape"], t["offset"], t["count"]) for t in body["tensors"]],
                         [("W", [10, 785], 0, 7850), ("b", [10], 7850, 10)])
        self.assertError(self.d.req("POST", "/v1/optimizers", spec), 409, "already_exists")
        st, body, _ = self.d.req("GET", "/v1/optimizers/svm")
        self.assertEqual(st, 200)
        self.assertEqual(body["size"], 7860)
        st, body, _ = self.d.req("GET", "/v1/optimizers")
        self.assertEqual([o["name"] for o in body["optimizers"]], ["svm"])
        st, body, _ = self.d.req("DELETE", "/v1/optimizers/svm")
        self.assertEqual(st, 200, body)
        self.assertError(self.d.req("GET", "/v1/optimizers/svm"), 404, "unknown_instance")
        self.assertError(self.d.req("DELETE", "/v1/optimizers/svm"), 404, "unknown_instance")

    def test_create_with_put_names_in_path(self):
        spec = {"algorithm": "sgd", "tensors": [{"name": "w", "shape": [1]}]}
        st, body, _ = self.d.req("PUT", "/v1/optimizers/p1", spec)
        self.assertEqual((st, body["name"]), (201, "p1"))
        self.assertError(self.d.req("PUT", "/v1/optimizers/p1", spec), 409, "already_exists")
        self.assertError(self.d.req("PUT", "/v1/optimizers/p2", dict(spec, name="other")), 400, "bad_request")
        self.assertError(self.d.req("GET", "/v1/optimizers/p2"), 404, "unknown_instance")

    def test_sgd_steps_exact(self):
        self.create("m", "sgd", hyper={"lr": 0.5}, tensors=[{"name": "w", "shape": [2, 2], "values": [[1, 2], [3, 4]]}])
        st, body, h = self.d.req("POST", "/v1/optimizers/m/step", {"grads": {"w": [1, 1, 1, 1]}})
        self.assertEqual(st, 200, body)
        self.assertEqual(body, {"step": 1, "params": {"w": [0.5, 1.5, 2.5, 3.5]}})
        self.assertIn("decode;dur=", h["server-timing"])
        self.assertIn("apply;dur=", h["server-timing"])
        self.assertIn("encode;dur=", h["server-timing"])
        # nested to the shape, flat "grads", and params=none
        st, body, _ = self.d.req("POST", "/v1/optimizers/m/step?params=none", {"grads": {"w": [[1, 1], [1, 1]]}})
        self.assertEqual(body, {"step": 2})
        st, body, _ = self.d.req("POST", "/v1/optimizers/m/step", {"grads": [2, 2, 2, 2]})
        self.assertEqual(body["params"]["w"], [-1, 0, 1, 2])
        st, body, _ = self.d.req("GET", "/v1/optimizers/m/params")
        self.assertEqual(body, {"step": 3, "params": {"w": [-1, 0, 1, 2]}})

    def test_binary_step_and_pull(self):
        self.create("b", "sgd", hyper={"lr": 0.25}, tensors=[{"name": "a", "shape": [3]}, {"name": "c", "shape": [2]}])
        st, data, h = self.d.req("POST", "/v1/optimizers/b/step?worker=w1&step=0&loss=1.5",
                                 floats_to_bytes([4, 8, -4, 1, 2]),
                                 {"Content-Type": "application/octet-stream", "Accept": "application/octet-stream"})
        self.assertEqual(st, 200, data)
        self.assertEqual(h["content-type"], "application/octet-stream")
        self.assertEqual(h["descent-step"], "1")
        self.assertEqual(bytes_to_floats(data), [-1, -2, 1, -0.25, -0.5])
        st, data, h = self.d.req("GET", "/v1/optimizers/b/params", headers={"Accept": "application/octet-stream"})
        self.assertEqual(bytes_to_floats(data), [-1, -2, 1, -0.25, -0.5])
        self.assertEqual(h["descent-step"], "1")
        # wrong length is refused and changes nothing
        self.assertError(self.d.req("POST", "/v1/optimizers/b/step", floats_to_bytes([1, 2, 3]),
                                    {"Content-Type": "application/octet-stream"}), 400, "bad_length")
        st, body, _ = self.d.req("GET", "/v1/optimizers/b/params")
        self.assertEqual(body["step"], 1)

    def test_floats_round_trip(self):
        vals = [0.1, 1e-7, -3.4028234663852886e38, 1.401298464324817e-45, 123456.789, -0.0, 2.5e-20, 7.0]
        self.create("r", "sgd", hyper={"lr": 0.0}, tensors=[{"name": "x", "shape": [len(vals)], "values": vals}])
        st, body, _ = self.d.req("GET", "/v1/optimizers/r/params")
        self.assertEqual([f32(v) for v in body["params"]["x"]], [f32(v) for v in vals])
        self.assertEqual(floats_to_bytes(body["params"]["x"]), floats_to_bytes(vals))  # -0.0 keeps its sign
        st, data, _ = self.d.req("GET", "/v1/optimizers/r/params", headers={"Accept": "application/octet-stream"})
        self.assertEqual(data, floats_to_bytes(vals))


class BadInput(DaemonTest):
    daemon_args = ("--max-body", "100000")

    def setUp(self):
        super().setUp()
        self.create("m", "adam", tensors=[{"name": "w", "shape": [4], "values": [1, 2, 3, 4]}])
        self.before = self.d.req("GET", "/v1/optimizers/m/state")[1]

    def tearDown(self):
        # a refused request changes nothing
        self.assertEqual(self.d.req("GET", "/v1/optimizers/m/state")[1], self.before)
        st, body, _ = self.d.req("GET", "/healthz")
        self.assertEqual(st, 200)
        super().tearDown()

    def test_bad_json(self):
        self.assertError(self.d.req("POST", "/v1/optimizers/m/step", '{"grads": [1,2,', {"Content-Type": "application/json"}),
                         400, "bad_json")
        st, body, _ = self.d.req("POST", "/v1/optimizers/m/step", '{"grads": [1,2,,3,4]}', {"Content-Type": "application/json"})
        self.assertEqual(st, 400)
        self.assertIn("column", body["error"]["message"])

    def test_wrong_lengths_and_names(self):
        self.assertError(self.d.req("POST", "/v1/optimizers/m/step", {"grads": {"w": [1, 2, 3]}}), 400, "bad_length")
        self.assertError(self.d.req("POST", "/v1/optimizers/m/step", {"grads": {"w": [1, 2, 3, 4], "v": [1]}}), 400,
                         "unknown_tensor")
        self.assertError(self.d.req("POST", "/v1/optimizers/m/step", {"grads": {}}), 400, "bad_length")
        self.assertError(self.d.req("POST", "/v1/optimizers/m/step", {"grads": {"w": [[1, 2], [3, 4]]}}), 400, "bad_length")

    def test_not_finite(self):
        st, body, _ = self.d.req("POST", "/v1/optimizers/m/step", '{"grads": {"w": [1, 2, 1e39, 4]}}',
                                 {"Content-Type": "application/json"})
        self.assertEqual(st, 422)
        self.assertEqual(body["error"]["code"], "not_finite")
        self.assertIn("w[2]", body["error"]["message"])
        self.assertError(self.d.req("POST", "/v1/optimizers/m/step", floats_to_bytes([1, float("nan"), 3, 4]),
                                    {"Content-Type": "application/octet-stream"}), 422, "not_finite")
        self.assertError(self.d.req("POST", "/v1/optimizers/m/step", '{"grads": [1, NaN, 3, 4]}',
                                    {"Content-Type": "application/json"}), 400, "bad_json")

    def test_sizes_types_methods(self):
        self.assertError(self.d.req("POST", "/v1/optimizers/m/step", "x" * 200000, {"Content-Type": "application/json"}),
                         413, "body_too_large")
        self.assertError(self.d.req("POST", "/v1/optimizers/m/step", "abc", {"Content-Type": "text/plain"}),
                         415, "unsupported_media_type")
        st, body, h = self.d.req("POST", "/v1/optimizers/m")
        self.assertEqual(st, 405)
        self.assertEqual(body["error"]["code"], "method_not_allowed")
        self.assertEqual(h["allow"], "GET, PUT, PATCH, DELETE")
        self.assertError(self.d.req("GET", "/v1/nothing"), 404, "not_found")
        self.assertError(self.d.req("GET", "/v1/optimizers/..%2Fx"), 400, "bad_name")

    def test_bad_create(self):
        cases = [
            ({"name": "x", "algorithm": "lbfgs", "tensors": [{"name": "w", "shape": [1]}]}, 422, "unknown_algorithm"),
            ({"name": "x", "algorithm": "adam", "hyper": {"momentum": 0.9}, "tensors": [{"name": "w", "shape": [1]}]},
             422, "unknown_hyperparameter"),
            ({"name": "x", "algorithm": "adam", "hyper": {"lr": -1}, "tensors": [{"name": "w", "shape": [1]}]}, 422,
             "invalid_value"),
            ({"name": "x", "algorithm": "adam", "hyper": {"betas": [0.9, 1.0]}, "tensors": [{"name": "w", "shape": [1]}]},
             422, "invalid_value"),
            ({"name": "x", "algorithm": "sgd", "hyper": {"nesterov": True}, "tensors": [{"name": "w", "shape": [1]}]},
             422, "invalid_value"),
            ({"name": "../x", "algorithm": "sgd", "tensors": [{"name": "w", "shape": [1]}]}, 400, "bad_name"),
            ({"name": "x", "algorithm": "sgd", "tensors": [{"name": "w", "shape": [0]}]}, 400, "bad_request"),
            ({"name": "x", "algorithm": "sgd", "tensors": [{"name": "w", "shape": [2], "values": [1]}]}, 400, "bad_length"),
            ({"name": "x", "algorithm": "sgd"}, 400, "bad_request"),
            ({"name": "x", "algorithm": "sgd", "tensors": [{"name": "w", "shape": [1]}], "color": "red"}, 400, "bad_request"),
            ({"name": "x", "algorithm": "sgd", "tensors": [{"name": "w", "shape": [1]}], "mode": "sync"}, 400, "bad_request"),
            ({"name": "x", "algorithm": "sgd", "tensors": [{"name": "w", "shape": [1000000, 1000000, 1000000]}]}, 507,
             "quota_exceeded"),
        ]
        for spec, status, code in cases:
            with self.subTest(spec=spec):
                self.assertError(self.d.req("POST", "/v1/optimizers", spec), status, code)
        st, body, _ = self.d.req("GET", "/v1/optimizers")
        self.assertEqual([o["name"] for o in body["optimizers"]], ["m"])

    def test_bad_patch(self):
        self.assertError(self.d.req("PATCH", "/v1/optimizers/m", {"hyper": {"lr": -1}}), 422, "invalid_value")
        self.assertError(self.d.req("PATCH", "/v1/optimizers/m", {"hyper": {"nope": 1}}), 422, "unknown_hyperparameter")
        self.assertError(self.d.req("PATCH", "/v1/optimizers/m", {"algorithm": "sgd"}), 422, "invalid_value")
        self.assertError(self.d.req("PATCH", "/v1/optimizers/m", {"hyper": {"lr": "fast"}}), 400, "bad_request")


class Patch(DaemonTest):
    def test_patch_lr_applies_from_next_step(self):
        self.create("m", "sgd", hyper={"lr": 1.0}, tensors=[{"name": "w", "shape": [1], "values": [10]}])
        self.d.req("POST", "/v1/optimizers/m/step", {"grads": [1]})
        st, body, _ = self.d.req("PATCH", "/v1/optimizers/m", {"hyper": {"lr": 0.5}})
        self.assertEqual(st, 200, body)
        self.assertEqual(body["hyper"]["lr"], 0.5)
        st, body, _ = self.d.req("POST", "/v1/optimizers/m/step", {"grads": [1]})
        self.assertEqual(body["params"]["w"], [8.5])


if __name__ == "__main__":
    unittest.main()
