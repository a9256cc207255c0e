"""test_query_params: a query parameter a route does not read is refused, never
silently ignored (as unknown JSON fields are refused).

  - every route answers ?zz_typo=1 with 400 `bad_request` whose message names the
    parameter and lists the ones the route takes, and that list is exactly the
    query parameters proto/openapi.yaml documents for the operation;
  - typos on the routes that change state (a push's ?stpe= / ?wrker=, JSON and
    binary; a create, a PATCH, a DELETE) change nothing;
  - the documented parameters are still accepted.
"""
import re
import unittest

from harness import DaemonTest, floats_to_bytes, bytes_to_floats
from test_docs import METHODS, load_yaml, read, run_descentd

MESSAGE = re.compile(r"^\?(\S*): unknown query parameter \((\w+) (\S+) takes: (.*)\)$")


def documented_query_params(doc):
    """{(METHOD, path): set of query parameter names} from proto/openapi.yaml."""
    def resolve(p):
        if "$ref" in p:
            node = doc
            for part in p["$ref"][2:].split("/"):
                node = node[part]
            return node
        return p

    out = {}
    for path, item in doc["paths"].items():
        shared = [resolve(p) for p in item.get("parameters", [])]
        for method, op in item.items():
            if method not in METHODS:
                continue
            params = shared + [resolve(p) for p in op.get("parameters", [])]
            out[(method.upper(), path)] = {p["name"] for p in params if p["in"] == "query"}
    return out


class QueryParams(DaemonTest):
    def setUp(self):
        super().setUp()
        self.create("m", n=2, hyper={"lr": 0.5})

    def assertUnknown(self, resp, key, known):
        st, body, _ = resp
        self.assertEqual(st, 400, body)
        self.assertEqual(body["error"]["code"], "bad_request", body)
        m = MESSAGE.match(body["error"]["message"])
        self.assertTrue(m, body["error"]["message"])
        self.assertEqual(m.group(1), key)
        self.assertEqual(m.group(4), known)

    def test_every_route_lists_what_openapi_documents(self):
        documented = documented_query_params(load_yaml(read("proto/openapi.yaml")))
        routes = [line.split() for line in run_descentd("--print-routes").splitlines()]
        self.assertGreaterEqual(len(routes), 18)
        for method, path in routes:
            st, body, _ = self.d.req(method, path.replace("{name}", "m") + "?zz_typo=1")
            where = "%s %s" % (method, path)
            self.assertEqual((st, body["error"]["code"]), (400, "bad_request"), where)
            m = MESSAGE.match(body["error"]["message"])
            self.assertTrue(m, "%s: %s" % (where, body["error"]["message"]))
            self.assertEqual((m.group(1), m.group(2), m.group(3)), ("zz_typo", method, path))
            known = set() if m.group(4) == "none" else set(m.group(4).split(", "))
            if (method, path) not in documented:
                continue  # undocumented routes are test_docs' failure
            self.assertEqual(known, documented[(method, path)], where + ": the daemon vs proto/openapi.yaml")
        self.assertEqual(self.d.export("m")["step"], 0)

    def test_push_typos_apply_nothing(self):
        before = self.d.export("m")
        steps = "worker, step, seq, loss, grad_norm, params"
        self.assertUnknown(self.d.req("POST", "/v1/optimizers/m/step?stpe=5&wrker=a", {"grads": [1, 2]}),
                           "stpe", steps)
        self.assertUnknown(self.d.req("POST", "/v1/optimizers/m/step?worker=a&wrker=a", {"grads": [1, 2]}),
                           "wrker", steps)
        self.assertUnknown(self.d.req("POST", "/v1/optimizers/m/step?step=0&Step=0", floats_to_bytes([1, 2]),
                                      {"Content-Type": "application/octet-stream"}), "Step", steps)
        self.assertUnknown(self.d.req("GET", "/v1/optimizers/m/params?wait_for_stp=3"), "wait_for_stp",
                           "wait_for_step, timeout_ms, worker")
        self.assertEqual(self.d.export("m"), before)
        st, body, _ = self.d.req("GET", "/v1/optimizers/m/workers")
        self.assertEqual((st, body["workers"]), (200, []))

    def test_typos_on_create_patch_delete_change_nothing(self):
        spec = {"name": "n", "algorithm": "sgd", "tensors": [{"name": "w", "shape": [1]}]}
        self.assertUnknown(self.d.req("POST", "/v1/optimizers?dry_run=1", spec), "dry_run", "none")
        self.assertUnknown(self.d.req("PUT", "/v1/optimizers/n?x=1", {"algorithm": "sgd",
                                                                     "tensors": [{"name": "w", "shape": [1]}]}),
                           "x", "none")
        before = self.d.export("m")
        self.assertUnknown(self.d.req("PATCH", "/v1/optimizers/m?lr=1", {"hyper": {"lr": 1.0}}), "lr", "none")
        self.assertUnknown(self.d.req("DELETE", "/v1/optimizers/m?force=1"), "force", "none")
        st, body, _ = self.d.req("GET", "/v1/optimizers")
        self.assertEqual([o["name"] for o in body["optimizers"]], ["m"])
        self.assertEqual(self.d.export("m"), before)
        self.assertEqual(self.d.export("m")["hyper"]["lr"], 0.5)

    def test_known_parameters_still_work(self):
        st, body, _ = self.d.req("POST", "/v1/optimizers/m/step?worker=w1&step=0&loss=0.25&grad_norm=2&params=none",
                                 {"grads": [1, 2]})
        self.assertEqual((st, body), (200, {"step": 1}))
        st, body, _ = self.d.req("POST", "/v1/optimizers/m/step?worker=w1&seq=7&step=1",
                                 floats_to_bytes([2, 4]), {"Content-Type": "application/octet-stream",
                                                           "Accept": "application/octet-stream"}, raw=True)
        self.assertEqual(st, 200, body)
        self.assertEqual(bytes_to_floats(body), [-1.5, -3.0])  # 0 - 0.5 * (1 + 2), 0 - 0.5 * (2 + 4)
        st, body, _ = self.d.req("GET", "/v1/optimizers/m/params?wait_for_step=1&timeout_ms=0&worker=w1")
        self.assertEqual((st, body), (200, {"step": 2, "params": {"w": [-1.5, -3.0]}}))
        st, body, _ = self.d.req("GET", "/v1/optimizers/m/workers")
        self.assertEqual([(w["name"], w["pushes"]) for w in body["workers"]], [("w1", 2)])


if __name__ == "__main__":
    unittest.main()
