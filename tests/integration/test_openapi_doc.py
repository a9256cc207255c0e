"""test_openapi_doc: proto/openapi.yaml says what the daemon's route table says,
and its JSON Schemas are real JSON Schema 2020-12.

  - every route of the daemon's table (server/**/*.c, `routes[]`) is described
    with what its flags mean: a token (401) unless R_PUBLIC, a read-write one
    (403) with R_WRITE, the three JSON request types (application/json,
    text/json, application/x-www-form-urlencoded: what `curl -d` sends) with
    R_JSON, application/octet-stream (float32, dtype=bfloat16, dtype=float16)
    with R_BINARY, no request body without either, an optional body with
    R_BODY_OPT; 413 and 503 `busy` on routes with a body; 400 (unknown query
    parameters), 405, 415 (a bad dtype in Accept) and 503 on all; 404 on
    {name} routes that do not create;
  - each error response lists its codes (x-descent-codes), each a code of
    the ErrorCode enum, and errors.h gives each of them the status it is
    listed under;
  - every Schema Object passes the 2020-12 meta-schema (jsonschema's
    Draft202012Validator.check_schema) and every example validates against
    its schema;
  - info.license is there.
(The OpenAPI structure itself is checked by `make check-openapi`; the
replies by openapi_check.py over the whole suite.)  No daemon is started.
"""
import glob
import os
import re
import unittest

from jsonschema import Draft202012Validator

from harness import ROOT
from openapi_check import METHODS, Checker, load_doc

JSON_TYPES = {"application/json", "text/json", "application/x-www-form-urlencoded"}
BINARY_TYPES = {"application/octet-stream", "application/octet-stream; dtype=bfloat16",
                "application/octet-stream; dtype=float16"}
CREATES = {("PUT", "/v1/optimizers/{name}"), ("PUT", "/v1/optimizers/{name}/state")}


def route_table():
    """[(METHOD, path, {flags})] of the daemon's route table."""
    rows = []
    for f in sorted(glob.glob(os.path.join(ROOT, "server", "**", "*.c"), recursive=True)):
        with open(f, encoding="utf-8") as fh:
            src = fh.read()
        if "route routes[]" not in src:
            continue
        table = src[src.index("route routes[]"):]
        table = table[:table.index("};")]
        for m, p, flags in re.findall(r'\{"([A-Z]+)",\s*"([^"]+)",\s*\w+,\s*([^}]*)\}', table):
            rows.append((m, p, set(re.findall(r"R_\w+", flags))))
    return rows


def errors_h():
    """{code: status} of server/**/errors.h's table."""
    out = {}
    for f in glob.glob(os.path.join(ROOT, "server", "**", "errors.h"), recursive=True):
        with open(f, encoding="utf-8") as fh:
            for s, c in re.findall(r'X\(E_\w+,\s*(\d{3}),\s*"(\w+)"', fh.read()):
                out[c] = int(s)
    return out


def ops(doc):
    for path, item in doc["paths"].items():
        for m, op in item.items():
            if m in METHODS:
                yield m.upper(), path, op


def schemas(node, where="#"):
    """Every Schema Object of an OpenAPI document: (where, schema)."""
    if isinstance(node, dict):
        for k, v in node.items():
            w = "%s/%s" % (where, k)
            if k == "schema" and isinstance(v, dict):
                yield w, v
            elif k == "schemas" and where == "#/components":
                for name, s in v.items():
                    yield "%s/%s" % (w, name), s
            elif k != "example":
                yield from schemas(v, w)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from schemas(v, "%s/%d" % (where, i))


class Document(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.doc = load_doc()
        cls.checker = Checker(cls.doc)

    def resolve(self, node):
        return self.checker.resolve(node)

    def test_route_flags(self):
        table = route_table()
        self.assertGreater(len(table), 15, "the route table was not found under server/")
        byop = {(m, p): op for m, p, op in ops(self.doc)}
        for method, path, flags in table:
            with self.subTest(route="%s %s" % (method, path)):
                self.assertIn((method, path), byop, "not in proto/openapi.yaml")
                op = byop[(method, path)]
                resp = {str(k): v for k, v in op["responses"].items()}
                public = "R_PUBLIC" in flags
                self.assertEqual(op.get("security") == [], public, "security: [] iff the route needs no token")
                self.assertEqual("401" in resp, not public, "401 iff the route needs a token")
                self.assertEqual("403" in resp, "R_WRITE" in flags, "403 iff the route needs a read-write token")
                body = flags & {"R_JSON", "R_BINARY"}
                rb = op.get("requestBody")
                if not body:
                    self.assertIsNone(rb, "the route takes no body (400)")
                else:
                    types = set(self.resolve(rb)["content"])
                    want = (JSON_TYPES if "R_JSON" in flags else set()) | \
                        (BINARY_TYPES if "R_BINARY" in flags else set())
                    self.assertEqual(types, want, "the request body types the daemon takes")
                    self.assertEqual(self.resolve(rb).get("required", False), "R_BODY_OPT" not in flags,
                                     "requestBody.required")
                for s in ("400", "405", "415", "503"):
                    self.assertIn(s, resp)
                self.assertEqual(resp["405"], {"$ref": "#/components/responses/MethodNotAllowed"})
                self.assertEqual("413" in resp, bool(body), "413 iff the route takes a body")
                leader_only = "R_REPL" in flags or path.startswith("/v1/cluster/")
                want503 = "Unavailable" if body else "ShuttingDownOrNoLeader" if leader_only else "ShuttingDown"
                self.assertEqual(resp["503"]["$ref"].rsplit("/", 1)[1], want503,
                                 "503 busy iff the route takes a body; no_leader iff it is replicated (R_REPL)")
                self.assertEqual("307" in resp, path.startswith("/v1/"),
                                 "307 to the leader on the API (writes; reads with Descent-Read: leader)")
                if "{name}" in path and (method, path) not in CREATES:
                    self.assertIn("404", resp)

    def test_error_codes(self):
        enum = set(self.doc["components"]["schemas"]["ErrorCode"]["enum"])
        table = errors_h()
        self.assertIn("bad_json", table, "server/errors.h was not found")
        used = {}
        for method, path, op in ops(self.doc):
            for status, r in op["responses"].items():
                if str(status)[0] in "45":
                    self.assertIn("$ref", r, "%s %s %s: errors are components/responses" % (method, path, status))
                    used.setdefault(r["$ref"], set()).add(int(status))
        for ref, statuses in sorted(used.items()):
            with self.subTest(response=ref):
                codes = self.resolve({"$ref": ref}).get("x-descent-codes")
                self.assertTrue(codes, "no x-descent-codes")
                self.assertEqual(len(statuses), 1, "used under several statuses: %s" % statuses)
                status = statuses.pop()
                for c in codes:
                    self.assertIn(c, enum, "not in ErrorCode")
                    if c in table:  # codes the daemon does not have yet: test_docs.test_error_codes says so
                        self.assertEqual(table[c], status, "errors.h gives %s status %d" % (c, table[c]))
                    self.assertIn("`%s`" % c, self.resolve({"$ref": ref})["description"],
                                  "the description names %s" % c)

    def test_schemas_are_json_schema_2020_12(self):
        n = 0
        for where, s in schemas(self.doc):
            n += 1
            with self.subTest(schema=where):
                Draft202012Validator.check_schema(s)
        self.assertGreater(n, 60)
        # the meta-schema check can fail
        with self.assertRaises(Exception):
            Draft202012Validator.check_schema({"type": "integr"})

    def test_examples_match_their_schemas(self):
        n = 0
        for method, path, op in ops(self.doc):
            bodies = [("request", op.get("requestBody"))] + [(s, r) for s, r in op["responses"].items()]
            for what, b in bodies:
                if not b:
                    continue
                for media, mt in (self.resolve(b).get("content") or {}).items():
                    if "example" not in mt or "schema" not in mt:
                        continue
                    n += 1
                    with self.subTest(example="%s %s %s %s" % (method, path, what, media)):
                        errs = list(self.checker.validator(mt["schema"]).iter_errors(mt["example"]))
                        self.assertEqual([e.message for e in errs], [])
        self.assertGreaterEqual(n, 6)

    def test_license(self):
        self.assertEqual(self.doc["info"]["license"], {"name": "MIT", "identifier": "MIT"})


if __name__ == "__main__":
    unittest.main()
