"""test_state: GET .../state and PUT .../state.

An exported state imported into a FRESH daemon continues bit for bit: the
torch vectors are split in the middle (first half pushed to daemon A, state
moved to daemon B, second half pushed to B) and B must still give torch's
exact parameters, for sgd with momentum (also exported at step 0, when torch
has no momentum buffer yet), adam with amsgrad, rmsprop centered, adagrad,
adamw; random search continues with the same candidates.  PUT replaces an
existing instance, and bad state documents are refused with nothing changed.
"""
import copy
import json
import struct
import unittest

from harness import Daemon, DaemonTest, floats_to_bytes, load_case


def bits(values):
    return list(struct.unpack("<%dI" % len(values), floats_to_bytes(values)))


class StateTest(DaemonTest):
    def setUp(self):
        super().setUp()
        self.fresh = None

    def tearDown(self):
        if self.fresh:
            try:
                self.fresh.stop()
            finally:
                self.fresh.cleanup()
        super().tearDown()

    def other(self):
        """A second, fresh daemon with its own data dir."""
        if not self.fresh:
            self.fresh = Daemon()
        return self.fresh

    def raw_state(self, d, name):
        st, data, _ = d.req("GET", "/v1/optimizers/%s/state" % name, raw=True)
        self.assertEqual(st, 200, data)
        return data

    def push_rows(self, d, name, case, rows):
        for t in rows:
            st, body, _ = d.req("POST", "/v1/optimizers/%s/step" % name, {"grads": {"w": case["grads"][t]}})
            self.assertEqual(st, 200, body)
            self.assertEqual(body["step"], t + 1)
            self.assertEqual(bits(body["params"]["w"]), bits(case["expected"][t]), "%s after step %d" % (name, t + 1))


class RoundTrip(StateTest):
    CASES = ["sgd_momentum", "sgd_nesterov_wd", "adam_amsgrad", "adam_maximize", "adamw_amsgrad",
             "rmsprop_centered", "rmsprop_centered_momentum", "adagrad_decay"]

    def split_case(self, cname, at):
        case = load_case(cname)
        name = cname.replace("_", "-")
        self.create(name, case["algorithm"], hyper=case["hyper"],
                    tensors=[{"name": "w", "shape": [case["n"]], "values": case["init"]}])
        self.push_rows(self.d, name, case, range(at))
        doc = self.raw_state(self.d, name)
        b = self.other()
        st, body, _ = b.req("PUT", "/v1/optimizers/%s/state" % name, doc, {"Content-Type": "application/json"})
        self.assertEqual(st, 201, body)
        self.assertEqual(body["step"], at)
        # the import is the same document, byte for byte
        self.assertEqual(self.raw_state(b, name), doc)
        # both continue with torch's exact parameters
        self.push_rows(b, name, case, range(at, case["steps"]))
        self.push_rows(self.d, name, case, range(at, case["steps"]))
        self.assertEqual(self.raw_state(b, name), self.raw_state(self.d, name))
        final = b.export(name)
        for key, ref in case["final_state"].items():
            if key != "step":
                self.assertEqual(bits(final["buffers"][key]["w"]), bits(ref), key)

    def test_continue_bit_for_bit_in_a_fresh_daemon(self):
        for cname in self.CASES:
            with self.subTest(case=cname):
                self.split_case(cname, 17)

    def test_sgd_momentum_exported_at_step_0(self):
        # torch has no momentum_buffer before the first step, and its first
        # step clones the gradient without dampening: an import at step 0 must
        # keep the buffer "fresh", not start it at zeros (which would dampen)
        case = load_case("sgd_momentum_dampening")
        self.create("s0", "sgd", hyper=case["hyper"], tensors=[{"name": "w", "shape": [case["n"]], "values": case["init"]}])
        doc = self.d.export("s0")
        self.assertEqual(doc["step"], 0)
        self.assertEqual(doc["buffers"], {}, "no torch state before the first step")
        b = self.other()
        st, body, _ = b.req("PUT", "/v1/optimizers/s0/state", doc)
        self.assertEqual(st, 201, body)
        self.push_rows(b, "s0", case, range(case["steps"]))
        self.assertEqual(bits(b.export("s0")["buffers"]["momentum_buffer"]["w"]),
                         bits(case["final_state"]["momentum_buffer"]))

    def test_adam_exported_at_step_0_and_1(self):
        case = load_case("adam_amsgrad")
        self.create("a", "adam", hyper=case["hyper"], tensors=[{"name": "w", "shape": [case["n"]], "values": case["init"]}])
        b = self.other()
        st, body, _ = b.req("PUT", "/v1/optimizers/a/state", self.raw_state(self.d, "a"),
                            {"Content-Type": "application/json"})
        self.assertEqual(st, 201, body)
        self.push_rows(b, "a", case, range(1))
        st, body, _ = self.d.req("PUT", "/v1/optimizers/a/state", self.raw_state(b, "a"),
                                 {"Content-Type": "application/json"})
        self.assertEqual(st, 200, body)  # replaced
        self.push_rows(self.d, "a", case, range(1, case["steps"]))

    def test_random_search_continues(self):
        spec = dict(hyper={"scale": 0.5, "seed": 7, "center": "best"},
                    tensors=[{"name": "x", "shape": [5], "values": [1, 2, 3, 4, 5]}])
        self.create("rs", "random_search", **spec)

        def round_(d, loss):
            st, a, _ = d.req("POST", "/v1/optimizers/rs/ask", {})
            self.assertEqual(st, 200, a)
            st, t, _ = d.req("POST", "/v1/optimizers/rs/tell", {"candidate": a["candidate"], "loss": loss})
            self.assertEqual(st, 200, t)
            return a, t

        for loss in (5.0, 3.0, 4.0, 2.5):
            round_(self.d, loss)
        doc = self.raw_state(self.d, "rs")
        js = json.loads(doc)
        self.assertEqual(js["random_search"]["tells"], 4)
        self.assertEqual(js["random_search"]["best_loss"], 2.5)
        self.assertEqual(js["random_search"]["next_candidate"], 5)
        b = self.other()
        st, body, _ = b.req("PUT", "/v1/optimizers/rs/state", doc, {"Content-Type": "application/json"})
        self.assertEqual(st, 201, body)
        self.assertEqual(self.raw_state(b, "rs"), doc)
        for loss in (2.0, 9.0, 1.0):
            a1, t1 = round_(self.d, loss)
            a2, t2 = round_(b, loss)
            self.assertEqual(a1["candidate"], a2["candidate"])
            self.assertEqual(bits(a1["params"]["x"]), bits(a2["params"]["x"]))
            self.assertEqual(t1, t2)
        self.assertEqual(self.raw_state(b, "rs"), self.raw_state(self.d, "rs"))
        st, p, _ = b.req("GET", "/v1/optimizers/rs/params")
        self.assertEqual(p["step"], 7)

    def test_sync_config_survives_the_round_trip(self):
        self.create("sy", "adam", n=3, mode="sync", workers=3, min_workers=2, round_timeout_ms=5000,
                    aggregate="sum", worker_lease_ms=7000, clip_grad_norm=2.5,
                    schedule={"type": "step", "step_size": 2, "gamma": 0.5})
        doc = self.raw_state(self.d, "sy")
        b = self.other()
        st, body, _ = b.req("PUT", "/v1/optimizers/sy/state", doc, {"Content-Type": "application/json"})
        self.assertEqual(st, 201, body)
        self.assertEqual(self.raw_state(b, "sy"), doc)
        for k, v in (("mode", "sync"), ("workers", 3), ("min_workers", 2), ("round_timeout_ms", 5000),
                     ("aggregate", "sum"), ("worker_lease_ms", 7000), ("clip_grad_norm", 2.5)):
            self.assertEqual(body[k], v, k)
        self.assertEqual(body["schedule"], {"type": "step", "step_size": 2, "gamma": 0.5})


class Replace(StateTest):
    def test_put_replaces_an_existing_instance(self):
        import threading
        self.create("m", "sgd", hyper={"lr": 1.0}, tensors=[{"name": "w", "shape": [2], "values": [5, 5]}])
        self.d.req("POST", "/v1/optimizers/m/step", {"grads": [1, 2]})
        # a long-poll on the old instance is answered when it is replaced
        from harness import request
        result = {}

        def poll():
            c = self.d.new_conn()
            result["r"] = request(c, "GET", "/v1/optimizers/m/params?wait_for_step=50&timeout_ms=20000")
            c.close()

        th = threading.Thread(target=poll)
        th.start()
        import time
        for _ in range(500):
            if self.d.req("GET", "/v1/optimizers/m")[1]["waiting"]:
                break
            time.sleep(0.01)
        doc = {"algorithm": "adam", "hyper": {"lr": 0.5}, "step": 3,
               "tensors": [{"name": "v", "shape": [3]}],
               "params": {"v": [1, 2, 3]},
               "buffers": {"exp_avg": {"v": [0.1, 0.2, 0.3]}, "exp_avg_sq": {"v": [1, 1, 1]}}}
        st, body, _ = self.d.req("PUT", "/v1/optimizers/m/state", doc)
        self.assertEqual(st, 200, body)
        self.assertEqual((body["algorithm"], body["step"], body["size"]), ("adam", 3, 3))
        th.join(10)
        self.assertFalse(th.is_alive())
        st, body, _ = result["r"]
        self.assertEqual(st, 409, body)
        self.assertEqual(body["error"]["code"], "conflict")
        got = self.d.export("m")
        self.assertEqual(got["params"], {"v": [1, 2, 3]})
        self.assertEqual(bits(got["buffers"]["exp_avg"]["v"]), bits([0.1, 0.2, 0.3]))
        self.assertEqual(got["buffers"]["exp_avg_sq"]["v"], [1, 1, 1])
        self.assertEqual(got["step"], 3)
        st, lst, _ = self.d.req("GET", "/v1/optimizers")
        self.assertEqual([o["name"] for o in lst["optimizers"]], ["m"])
        # the next step is adam's step 4 from that state
        st, body, _ = self.d.req("POST", "/v1/optimizers/m/step", {"grads": {"v": [0, 0, 0]}})
        self.assertEqual((st, body["step"]), (200, 4))


class BadDocuments(StateTest):
    def setUp(self):
        super().setUp()
        self.create("m", "adam", hyper={"lr": 0.01}, tensors=[{"name": "w", "shape": [2, 2], "values": [1, 2, 3, 4]}])
        for g in ([1, 2, 3, 4], [0.5, -1, 2, 0]):
            self.d.req("POST", "/v1/optimizers/m/step", {"grads": g})
        self.good = self.d.export("m")
        self.before = self.raw_state(self.d, "m")

    def bad(self, name, doc, status, code):
        body = doc if isinstance(doc, (str, bytes)) else json.dumps(doc)
        st, rep, _ = self.d.req("PUT", "/v1/optimizers/%s/state" % name, body, {"Content-Type": "application/json"})
        self.assertEqual(st, status, rep)
        self.assertEqual(rep["error"]["code"], code, rep)
        self.assertTrue(rep["error"]["message"])

    def mutate(self, fn):
        d = copy.deepcopy(self.good)
        fn(d)
        return d

    def test_refused_without_change(self):
        g = self.good
        cases = [
            ("not json", '{"step": 3, "params":', 400, "bad_json"),
            ("not an object", "[1, 2]", 400, "bad_request"),
            ("empty object", {}, 400, "bad_request"),
            ("unknown field", self.mutate(lambda d: d.update(color="red")), 400, "bad_request"),
            ("bad format", self.mutate(lambda d: d.update(format="descent-state/9")), 422, "invalid_value"),
            ("no step", self.mutate(lambda d: d.pop("step")), 400, "bad_request"),
            ("negative step", self.mutate(lambda d: d.update(step=-1)), 422, "invalid_value"),
            ("fractional step", self.mutate(lambda d: d.update(step=1.5)), 400, "bad_request"),
            ("string step", self.mutate(lambda d: d.update(step="2")), 400, "bad_request"),
            ("no params", self.mutate(lambda d: d.pop("params")), 400, "bad_request"),
            ("short params", self.mutate(lambda d: d["params"].update(w=[1, 2, 3])), 400, "bad_length"),
            ("long params", self.mutate(lambda d: d["params"].update(w=[1, 2, 3, 4, 5])), 400, "bad_length"),
            ("wrong nested shape", self.mutate(lambda d: d["params"].update(w=[[1, 2, 3, 4]])), 400, "bad_length"),
            ("params as string", self.mutate(lambda d: d["params"].update(w="1,2,3,4")), 400, "bad_request"),
            ("unknown tensor", self.mutate(lambda d: d["params"].update(q=[1])), 400, "unknown_tensor"),
            ("overflowing param", self.mutate(lambda d: d["params"].update(w=[1, 2, 3e39, 4])), 422, "not_finite"),
            ("overflowing buffer", self.mutate(lambda d: d["buffers"]["exp_avg"].update(w=[1, -1e39, 3, 4])), 422,
             "not_finite"),
            ("missing buffer", self.mutate(lambda d: d["buffers"].pop("exp_avg_sq")), 400, "bad_request"),
            ("buffer of another algorithm", self.mutate(lambda d: d["buffers"].update(sum={"w": [1, 2, 3, 4]})), 422,
             "invalid_value"),
            ("amsgrad buffer without amsgrad",
             self.mutate(lambda d: d["buffers"].update(max_exp_avg_sq={"w": [1, 2, 3, 4]})), 422, "invalid_value"),
            ("unknown buffer", self.mutate(lambda d: d["buffers"].update(velocity={"w": [1, 2, 3, 4]})), 422,
             "invalid_value"),
            ("buffers not an object", self.mutate(lambda d: d.update(buffers=[1])), 400, "bad_request"),
            ("short buffer", self.mutate(lambda d: d["buffers"]["exp_avg"].update(w=[1])), 400, "bad_length"),
            ("unknown algorithm", self.mutate(lambda d: d.update(algorithm="lbfgs")), 422, "unknown_algorithm"),
            ("hyper of another algorithm", self.mutate(lambda d: d["hyper"].update(momentum=0.9)), 422,
             "unknown_hyperparameter"),
            ("negative lr", self.mutate(lambda d: d["hyper"].update(lr=-0.1)), 422, "invalid_value"),
            ("betas out of range", self.mutate(lambda d: d["hyper"].update(betas=[0.9, 1.5])), 422, "invalid_value"),
            ("name of another instance", self.mutate(lambda d: d.update(name="other")), 400, "bad_request"),
            ("bad tensor name", self.mutate(lambda d: d["tensors"][0].update(name="../w")), 400, "bad_name"),
            ("zero shape", self.mutate(lambda d: d["tensors"][0].update(shape=[0])), 400, "bad_request"),
            ("no tensors", self.mutate(lambda d: d.update(tensors=[])), 400, "bad_request"),
            ("random_search on adam", self.mutate(lambda d: d.update(random_search={"tells": 1})), 422,
             "invalid_value"),
            ("bad mode", self.mutate(lambda d: d.update(mode="turbo")), 422, "invalid_value"),
            ("sync without workers", self.mutate(lambda d: (d.update(mode="sync"), d.pop("max_staleness"))), 400,
             "bad_request"),
        ]
        for what, doc, status, code in cases:
            with self.subTest(what=what):
                self.bad("m", doc, status, code)
                self.assertEqual(self.raw_state(self.d, "m"), self.before)
                # the same document for a new name creates nothing
                if not isinstance(doc, (str, bytes)) and isinstance(doc, dict) and doc.get("name") == "m":
                    doc = dict(doc, name="n2")
                self.bad("n2", doc, status, code)
                self.assertError(self.d.req("GET", "/v1/optimizers/n2"), 404, "unknown_instance")
        st, lst, _ = self.d.req("GET", "/v1/optimizers")
        self.assertEqual([o["name"] for o in lst["optimizers"]], ["m"])
        # the good document is still accepted
        st, body, _ = self.d.req("PUT", "/v1/optimizers/m/state", g)
        self.assertEqual(st, 200, body)
        self.assertEqual(self.raw_state(self.d, "m"), self.before)

    def test_wrong_content_type_and_method(self):
        self.assertError(self.d.req("PUT", "/v1/optimizers/m/state", floats_to_bytes([1, 2]),
                                    {"Content-Type": "application/octet-stream"}), 415, "unsupported_media_type")
        self.assertError(self.d.req("POST", "/v1/optimizers/m/state", json.dumps(self.good),
                                    {"Content-Type": "application/json"}), 405, "method_not_allowed")
        self.assertError(self.d.req("PUT", "/v1/optimizers/m/state"), 400, "bad_request")
        self.assertEqual(self.raw_state(self.d, "m"), self.before)


if __name__ == "__main__":
    unittest.main()
