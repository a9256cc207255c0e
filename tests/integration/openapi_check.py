#!/usr/bin/env python3
"""openapi_check: holds the daemon's real replies against proto/openapi.yaml.

    python3 tests/integration/openapi_check.py [--min-records N] DIR [DOC]

DIR holds the JSONL files harness.py writes when DESCENT_OPENAPI_RECORD is set
(run.py sets it for every module and runs this afterwards); DOC defaults to
proto/openapi.yaml.  Each line is one reply: method, path (with its query),
status, some headers, the body (binary bodies only by length).  For each, the
path is matched to the document's path templates (percent-decoded as the
daemon does), then the operation, then the response by status, and:

  - the status must be documented for that operation (exact, 4XX/5XX, or
    default); a method the path does not list must be 405 with `Allow` naming
    exactly the documented methods; an unknown path must be 404 (or 400
    `bad_name` under /v1/optimizers/); HEAD is checked as the path's GET with
    an empty body; 503 `shutting_down` is accepted on any path;
  - the reply's Content-Type must be one the response lists;
  - a JSON body must validate against the response's schema with a JSON Schema
    2020-12 validator (jsonschema's Draft202012Validator; the document's own
    `#/components/...` $refs resolve inside it); text bodies are checked as
    strings; a Float32Vector (HalfVector) body must be a whole number of
    4-byte (2-byte) values;
  - an error reply's code must be one of its response's `x-descent-codes`;
  - documented headers present must match their schema; `required` ones
    must be present.

Replies that fail are printed, grouped, with one example each; the exit status
is 1 if any failed.  Needs python3-jsonschema (4.10 or later) and python3-yaml.
Used as a library by test_openapi*.py: Checker(load_doc()).check(record).
"""
import hashlib
import json
import os
import re
import sys

import yaml
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import best_match

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DOC = os.path.join(ROOT, "proto", "openapi.yaml")
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
_ITEMS = Draft202012Validator.VALIDATORS["items"]


def _items(validator, items, instance, schema):
    """2020-12 `items`, with `items: {type: number}` (every float array of the
    replies, up to millions of values) checked in one Python loop: the same
    verdict, the errors from the validator itself for each offending value."""
    if items == {"type": "number"} and "prefixItems" not in schema and isinstance(instance, list):
        for i, x in enumerate(instance):
            if type(x) not in (int, float):
                yield from validator.descend(x, items, path=i)
        return
    yield from _ITEMS(validator, items, instance, schema)


Validator = validators.extend(Draft202012Validator, {"items": _items})


def load_doc(path=DOC):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def decode_path(raw):
    """The path of a request target, %XX-decoded as descentd decodes it (%00 stays)."""
    path = raw.split("?", 1)[0]

    def dec(m):
        return m.group(0) if m.group(1) == "00" else chr(int(m.group(1), 16))
    return re.sub(r"%([0-9A-Fa-f]{2})", dec, path)


def norm_media(ct):
    """'Text/Plain ; charset=UTF-8' -> ('text/plain', 'text/plain;charset=utf-8')."""
    parts = [p.strip().lower() for p in ct.split(";") if p.strip()]
    return (parts[0] if parts else ""), ";".join(parts)


class Checker:
    def __init__(self, doc):
        self.doc = doc
        self.components = doc.get("components", {})
        self.paths = []
        for tmpl, item in doc.get("paths", {}).items():
            rx = "^" + "".join("[^/]+" if re.fullmatch(r"\{\w+\}", seg) else re.escape(seg)
                               for seg in re.split(r"(\{\w+\})", tmpl)) + "$"
            self.paths.append((tmpl, re.compile(rx), item))
        self._validators = {}
        self._seen = {}
        self.coverage = {}  # (METHOD, template) -> {status: count}

    # ---- the document -------------------------------------------------------------
    def resolve(self, node):
        while isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            if not ref.startswith("#/"):
                raise ValueError("only local $refs are supported: %s" % ref)
            node = self.doc
            for part in ref[2:].split("/"):
                node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def validator(self, schema):
        key = id(schema)
        v = self._validators.get(key)
        if v is None:
            # The schema becomes a $def of a root that also holds the document's
            # components, so "#/components/schemas/X" resolves as in the document.
            root = {"$schema": "https://json-schema.org/draft/2020-12/schema",
                    "$defs": {"target": schema}, "components": self.components,
                    "$ref": "#/$defs/target"}
            Validator.check_schema(root)
            v = self._validators[key] = (Validator(root), schema)
        return v[0]

    def response_set(self, method, raw_path):
        """(where, responses dict, op or None, extra checks) for a request."""
        path = decode_path(raw_path)
        for tmpl, rx, item in self.paths:
            if not rx.match(path):
                continue
            m = method.lower()
            if m == "head" and "head" not in item and "get" in item:
                return "HEAD %s" % tmpl, tmpl, item["get"]["responses"], True, None
            if m in METHODS and m in item:
                return "%s %s" % (method.upper(), tmpl), tmpl, item[m]["responses"], False, None
            allowed = sorted(k.upper() for k in item if k in METHODS)
            resp = {"405": self.components["responses"]["MethodNotAllowed"],
                    "503": self.components["responses"]["ShuttingDown"]}
            return "%s %s (not an operation)" % (method.upper(), tmpl), tmpl, resp, False, allowed
        resp = {"404": self.components["responses"]["NotFound"],
                "503": self.components["responses"]["ShuttingDown"]}
        if path.startswith("/v1/optimizers/"):
            resp["400"] = self.components["responses"]["BadRequest"]
        return "%s (unknown path)" % method.upper(), None, resp, False, None

    # ---- one reply ----------------------------------------------------------------
    def check(self, rec):
        """The list of problems with one recorded reply (empty: it matches)."""
        method, status = rec["method"].upper(), int(rec["status"])
        headers = {k.lower(): v for k, v in rec.get("headers", {}).items()}
        where, tmpl, responses, head, allowed = self.response_set(method, rec["path"])
        if tmpl and allowed is None:
            cov = self.coverage.setdefault(where, {})
            cov[status] = cov.get(status, 0) + 1
        resp = None
        for key in (str(status), "%dXX" % (status // 100), "default"):
            if key in responses:
                resp = self.resolve(responses[key])
                break
        if resp is None:
            return ["%s: status %d is not documented (documented: %s)" % (where, status, ", ".join(map(str, responses)))]
        problems = []
        body_text = rec.get("body")
        if body_text is None and "body_latin1" in rec:
            problems.append("%s %d: the body is not UTF-8" % (where, status))
        body = None
        ct = headers.get("content-type")
        content = resp.get("content")
        if not content:
            if rec.get("body_len", 0):
                problems.append("%s %d: documented without a body, got %d bytes" % (where, status, rec["body_len"]))
        elif ct is None:
            if rec.get("body_len", 0) or not head:
                problems.append("%s %d: no Content-Type (documented: %s)" % (where, status, ", ".join(content)))
        else:
            base, full = norm_media(ct)
            # a key with parameters must match them all; a key without matches any parameters,
            # unless the response also lists that type with parameters (then they are significant)
            media = next((k for k in content if norm_media(k)[1] == full), None)
            if media is None and (full == base or not any(norm_media(k)[0] == base != norm_media(k)[1]
                                                          for k in content)):
                media = next((k for k in content if norm_media(k) == (base, base)), None)
            if media is None:
                problems.append("%s %d: Content-Type %r is not documented (documented: %s)"
                                % (where, status, ct, ", ".join(content)))
            elif not head:
                schema = content[media].get("schema")
                raw_schema = schema
                schema = self.resolve(schema) if schema is not None else None
                if base == "application/json" or base.endswith("+json"):
                    try:
                        body = json.loads(body_text if body_text is not None else "")
                    except ValueError as e:
                        problems.append("%s %d: the body is not JSON (%s)" % (where, status, e))
                        body = None
                    else:
                        if schema is not None:
                            problems += self.validate(where, status, raw_schema, body)
                elif base.startswith("text/"):
                    if schema is not None and body_text is not None:
                        problems += self.validate(where, status, raw_schema, body_text)
                elif base == "application/octet-stream":
                    size = {"Float32Vector": (4, "float32"), "HalfVector": (2, "16-bit")}.get(
                        (raw_schema or {}).get("$ref", "").rsplit("/", 1)[-1])
                    if size and rec.get("body_len", 0) % size[0]:
                        problems.append("%s %d: a %s body of %d bytes" % (where, status, size[1], rec["body_len"]))
            elif rec.get("body_len", 0):
                problems.append("%s %d: a HEAD reply with a %d-byte body" % (where, status, rec["body_len"]))
        codes = resp.get("x-descent-codes")
        if codes and isinstance(body, dict) and isinstance(body.get("error"), dict):
            code = body["error"].get("code")
            if code not in codes:
                problems.append("%s %d: error code %r is not one of this response's %s" % (where, status, code, codes))
        for name, h in (resp.get("headers") or {}).items():
            h = self.resolve(h)
            value = headers.get(name.lower())
            if value is None:
                if h.get("required"):
                    problems.append("%s %d: required header %s is missing" % (where, status, name))
                continue
            hs = self.resolve(h.get("schema", {}))
            inst = value
            if hs.get("type") == "integer":
                try:
                    inst = int(value)
                except ValueError:
                    problems.append("%s %d: header %s=%r is not an integer" % (where, status, name, value))
                    continue
            problems += self.validate(where, status, h.get("schema", {}), inst, "header " + name)
        if allowed is not None and status == 405:
            got = sorted(m.strip().upper() for m in headers.get("allow", "").split(",") if m.strip())
            if got != allowed:
                problems.append("%s 405: Allow %r, the document lists %s" % (where, headers.get("allow"), allowed))
        return problems

    def validate(self, where, status, schema, instance, what="body"):
        key = (id(schema), hashlib.sha1(json.dumps(instance, sort_keys=True).encode()).hexdigest())
        if key in self._seen:
            return self._seen[key]
        out = []
        errs = sorted(self.validator(schema).iter_errors(instance), key=lambda e: list(e.absolute_path))
        for e in errs[:3]:
            e = best_match([e])  # into oneOf/anyOf: the branch that came closest
            at = "/".join(map(str, e.absolute_path)) or "(top)"
            group = "%s %d: %s at %s fails %s" % (where, status, what,
                                                  re.sub(r"(^|/)\d+(?=/|$)", r"\1*", at),
                                                  "/".join(map(str, e.schema_path)))
            out.append(Problem(group, "%s %d: %s at %s: %s" % (where, status, what, at, e.message[:300])))
        self._seen[key] = out
        return out


class Problem(str):
    """A problem's text; .group is what similar problems share (for the summary)."""

    def __new__(cls, group, text=None):
        p = str.__new__(cls, text if text is not None else group)
        p.group = group
        return p


def read_records(d):
    for name in sorted(os.listdir(d)):
        if not name.endswith(".jsonl"):
            continue
        with open(os.path.join(d, name), encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    yield "%s:%d" % (name, n), json.loads(line)


def main(argv):
    min_records = 0
    args = []
    i = 0
    while i < len(argv):
        if argv[i] == "--min-records":
            min_records = int(argv[i + 1])
            i += 2
            continue
        args.append(argv[i])
        i += 1
    if not args:
        print(__doc__)
        return 2
    checker = Checker(load_doc(args[1] if len(args) > 1 else DOC))
    failures = {}
    count = 0
    for where, rec in read_records(args[0]):
        count += 1
        for p in checker.check(rec):
            first = failures.setdefault(getattr(p, "group", p), [0, where, rec, p])
            first[0] += 1
    for _, (n, where, rec, p) in sorted(failures.items()):
        body = rec.get("body", "")
        print("openapi: %s\n   %d repl%s, e.g. %s: %s %s -> %s %s" % (p, n, "y" if n == 1 else "ies", where,
              rec["method"], rec["path"][:120], rec["status"], (body or "")[:300].rstrip()))
    ops = sum(1 for item in checker.doc["paths"].values() for m in item if m in METHODS)
    seen = sum(1 for k in checker.coverage if not k.startswith("HEAD "))
    print("openapi: %d replies checked against %s, %d operations of %d seen, %d problem%s"
          % (count, os.path.relpath(args[1] if len(args) > 1 else DOC, ROOT), seen, ops,
             len(failures), "" if len(failures) == 1 else "s"))
    if count < min_records:
        print("openapi: expected at least %d recorded replies (is harness.py recording?)" % min_records)
        return 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
