"""test_docs: the documents say what the daemon does.

  (a) every route of `descentd --print-routes` is in proto/openapi.yaml, and every
      operation documented there is served (unless marked `x-descent-planned: true`);
      the YAML is read by a small standard-library reader (no PyYAML), every $ref
      resolves, and every error reply uses the Error schema;
  (b) docs/api.md's curl walkthrough runs as written against a daemon on which the
      README's quick start ran first, and prints the replies shown, line for line as
      the daemon prints them (the rule is at the end of docs/api.md);
  (c) docs/operations.md's options table is exactly `descentd --help-markdown`;
  (d) proto/errors.md and openapi.yaml's ErrorCode list exactly server/errors.h's codes;
  (e) proto/init.md's reference generator reproduces tests/unit/test_rng.c's golden
      values, the daemon's seeded inits and random search candidates, bit for bit;
  (f) proto/snapshot.md's reference reader reads a snapshot the daemon wrote;
  (g) docs/cli.md's examples of the `descent` command run as written (build/bin on PATH) and
      print what is shown (`descent save` included);
  (h) no file of the repository points to ../shared (documents a clone does not have), and every
      file that speaks of the seed document says in a sentence what it is;
  (i) `make demo` writes its report under build/, and the README says what kill -9 keeps and how
      to choose the port (`make run LISTEN=`, DESCENT_LISTEN), which work as it says.

`python3 tests/integration/test_docs.py --rewrite-api` (or `--rewrite-cli`) rewrites the replies
shown in docs/api.md (docs/cli.md) from a fresh run (for a deliberate change of behaviour; review
the diff).
"""
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest

from harness import BUILD, DESCENTD, ROOT, Daemon

DOC_URL = "http://127.0.0.1:8080"
VOLATILE = {"created", "time", "last_push", "idle_ms"}  # clock readings: compared as numbers only
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def read(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return f.read()


def run_descentd(*args):
    return subprocess.run([DESCENTD] + list(args), check=True, capture_output=True, text=True,
                          timeout=30).stdout


# ---- a small YAML reader ------------------------------------------------------------------
# The subset proto/openapi.yaml keeps to: block mappings and sequences indented with spaces,
# plain / 'single' / "double" (JSON escapes) scalars, flow [sequences] and {mappings} on one
# line, block scalars | and > (with - or + chomping), and whole-line or " #" comments.
# Anything else raises YamlError rather than being guessed at.

class YamlError(ValueError):
    pass


_INT = re.compile(r"^[-+]?[0-9]+$")
_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")


def _plain(s, where):
    s = s.strip()
    if s in ("null", "~", ""):
        return None
    if s == "true":
        return True
    if s == "false":
        return False
    if _INT.match(s):
        return int(s)
    if _FLOAT.match(s):
        return float(s)
    if s[0] in "&*!|>%@`" or s.startswith("- ") or s.startswith("? "):
        raise YamlError("%s: unsupported plain scalar %r" % (where, s))
    return s


def _cut_comment(s):
    """s without a trailing ' # comment' (outside quotes)."""
    q = None
    for i, c in enumerate(s):
        if q:
            if c == q:
                q = None
        elif c in "'\"" and (i == 0 or s[i - 1] in " [{,:"):
            q = c
        elif c == "#" and i > 0 and s[i - 1] in " \t":
            return s[:i].rstrip()
    return s


class _Flow:
    def __init__(self, s, where):
        self.s, self.i, self.where = s, 0, where

    def ws(self):
        while self.i < len(self.s) and self.s[self.i] in " \t":
            self.i += 1

    def value(self, stops):
        self.ws()
        c = self.s[self.i:self.i + 1]
        if c == "[":
            self.i += 1
            out = []
            self.ws()
            if self.s[self.i:self.i + 1] == "]":
                self.i += 1
                return out
            while True:
                out.append(self.value(",]"))
                self.ws()
                c = self.s[self.i:self.i + 1]
                self.i += 1
                if c == "]":
                    return out
                if c != ",":
                    raise YamlError("%s: bad flow sequence" % self.where)
        if c == "{":
            self.i += 1
            out = {}
            self.ws()
            if self.s[self.i:self.i + 1] == "}":
                self.i += 1
                return out
            while True:
                k = self.value(":")
                self.ws()
                if self.s[self.i:self.i + 1] != ":":
                    raise YamlError("%s: bad flow mapping" % self.where)
                self.i += 1
                out[k] = self.value(",}")
                self.ws()
                c = self.s[self.i:self.i + 1]
                self.i += 1
                if c == "}":
                    return out
                if c != ",":
                    raise YamlError("%s: bad flow mapping" % self.where)
        if c in ("'", '"'):
            v, n = _quoted(self.s[self.i:], self.where)
            self.i += n
            return v
        j = self.i
        while j < len(self.s) and self.s[j] not in stops and self.s[j] not in "[]{}":
            if self.s[j] == ":" and ":" in stops and (j + 1 == len(self.s) or self.s[j + 1] == " "):
                break
            j += 1
        v = _plain(self.s[self.i:j], self.where)
        self.i = j
        return v


def _quoted(s, where):
    """(value, characters used) of the quoted scalar at the start of s."""
    if s[0] == "'":
        i, out = 1, []
        while True:
            j = s.find("'", i)
            if j < 0:
                raise YamlError("%s: unterminated quote" % where)
            out.append(s[i:j])
            if s[j + 1:j + 2] == "'":
                out.append("'")
                i = j + 2
                continue
            return "".join(out), j + 1
    i = 1
    while i < len(s):
        if s[i] == "\\":
            i += 2
            continue
        if s[i] == '"':
            return json.loads(s[:i + 1]), i + 1
        i += 1
    raise YamlError("%s: unterminated quote" % where)


def _scalar(s, where):
    s = s.strip()
    if s[:1] in ("[", "{"):
        f = _Flow(s, where)
        v = f.value("")
        rest = _cut_comment(s[f.i:]).strip()
        if rest:
            raise YamlError("%s: text after a flow collection: %r" % (where, rest))
        return v
    if s[:1] in ("'", '"'):
        v, n = _quoted(s, where)
        if _cut_comment(s[n:]).strip():
            raise YamlError("%s: text after a quoted scalar" % where)
        return v
    return _plain(_cut_comment(s), where)


def _split_key(s, where):
    """(key, rest) of 'key: rest', or None if s is not a mapping entry."""
    if s[:1] in ("'", '"'):
        k, n = _quoted(s, where)
        if s[n:n + 1] != ":":
            return None
        return k, s[n + 1:]
    m = re.match(r"^([^\s'\"#\[\]{},][^#]*?):(\s|$)", s)
    if not m:
        return None
    return m.group(1), s[m.end(1) + 1:]


def load_yaml(text):
    lines = text.split("\n")
    pos = [0]

    def indent_of(line):
        return len(line) - len(line.lstrip(" "))

    def significant(i):
        while i < len(lines):
            raw = lines[i]
            if "\t" in raw[:indent_of(raw) + 1] and raw.strip():
                raise YamlError("line %d: tabs are not allowed for indentation" % (i + 1))
            s = raw.strip()
            if s and not s.startswith("#") and s != "---":
                return i
            i += 1
        return i

    def block_scalar(style, ind):
        kind, chomp = style[0], style[1:]
        if chomp not in ("", "-"):
            raise YamlError("line %d: unsupported block scalar header %r" % (pos[0], style))
        body, i = [], pos[0]
        while i < len(lines) and (not lines[i].strip() or indent_of(lines[i]) > ind):
            body.append(lines[i])
            i += 1
        while body and not body[-1].strip():  # trailing blank lines: dropped by clip and strip
            body.pop()
            i -= 1
        pos[0] = i
        if not body:
            return ""
        bi = min(indent_of(l) for l in body if l.strip())
        body = [l[bi:] if l.strip() else "" for l in body]
        if kind == "|":
            text_ = "\n".join(body)
        else:  # folded: lines join with a space, each blank line is one newline
            text_, prev_blank = "", True
            for l in body:
                if l.startswith(" "):
                    raise YamlError("line %d: more-indented lines in a folded scalar" % i)
                if not l:
                    text_ += "\n"
                else:
                    text_ += ("" if prev_blank else " ") + l
                prev_blank = not l
        return text_ if chomp == "-" else text_ + "\n"

    def value_after(rest, ind, where):
        """The value of 'key: rest' or '- rest' whose own indentation is ind."""
        r = _cut_comment(rest).strip()
        if r[:1] in ("|", ">"):
            pos[0] += 1
            return block_scalar(r, ind)
        if r:
            v = _scalar(r, where)
            pos[0] += 1
            nxt = significant(pos[0])
            if nxt < len(lines) and indent_of(lines[nxt]) > ind:
                raise YamlError("line %d: continuation lines are not supported" % (nxt + 1))
            return v
        pos[0] += 1
        nxt = significant(pos[0])
        if nxt < len(lines):
            ni = indent_of(lines[nxt])
            if ni > ind or (ni == ind and lines[nxt].lstrip().startswith("- ")):
                pos[0] = nxt
                return block(ni)
        return None

    def block(ind):
        i = significant(pos[0])
        pos[0] = i
        first = lines[i].strip()
        if first == "-" or first.startswith("- "):
            out = []
            while True:
                i = significant(pos[0])
                if i >= len(lines) or indent_of(lines[i]) != ind:
                    break
                s = lines[i].strip()
                if not (s == "-" or s.startswith("- ")):
                    break
                pos[0] = i
                rest = s[1:].lstrip()
                where = "line %d" % (i + 1)
                if rest and _split_key(rest, where) and rest[:1] not in "[{":
                    # "- key: value": a mapping whose entries sit at ind + 2 + extra spaces
                    lines[i] = " " * (ind + len(s) - len(rest)) + rest
                    out.append(block(ind + len(s) - len(rest)))
                else:
                    out.append(value_after(rest, ind, where))
            return out
        out = {}
        while True:
            i = significant(pos[0])
            if i >= len(lines):
                break
            li = indent_of(lines[i])
            if li < ind:
                break
            if li > ind:
                raise YamlError("line %d: unexpected indentation" % (i + 1))
            s = lines[i].strip()
            if s.startswith("- "):
                break
            where = "line %d" % (i + 1)
            kv = _split_key(s, where)
            if kv is None:
                raise YamlError("%s: expected 'key: value', got %r" % (where, s))
            k, rest = kv
            k = k.strip() if isinstance(k, str) else k
            if k in out:
                raise YamlError("%s: duplicate key %r" % (where, k))
            pos[0] = i
            out[k] = value_after(rest, ind, where)
        return out

    start = significant(0)
    if start >= len(lines):
        return None
    pos[0] = start
    doc = block(indent_of(lines[start]))
    rest = significant(pos[0])
    if rest < len(lines):
        raise YamlError("line %d: unexpected text" % (rest + 1))
    return doc


# ---- the walkthrough -------------------------------------------------------------------------

def fenced_blocks(text):
    """[(info, body, line number of the opening fence, number of body lines)] of every ``` block."""
    out, cur = [], None
    for no, line in enumerate(text.split("\n"), 1):
        if cur is None:
            m = re.match(r"^```(\S*)\s*$", line)
            if m:
                cur = (m.group(1), [], no)
        elif line.strip() == "```":
            out.append((cur[0], "\n".join(cur[1]), cur[2], len(cur[1])))
            cur = None
        else:
            cur[1].append(line)
    if cur is not None:
        raise ValueError("unterminated ``` block at line %d" % cur[2])
    return out


def walkthrough(text):
    """[(command block, its reply block or None)] in order."""
    blocks = fenced_blocks(text)
    steps = []
    for k, block in enumerate(blocks):
        if block[0] != "sh":
            continue
        reply = blocks[k + 1] if k + 1 < len(blocks) and blocks[k + 1][0] in ("json", "text") else None
        steps.append((block, reply))
    return steps


MARK = "@@descent-doc-block@@"


def run_walkthrough(steps, url, cwd, timeout=120, env=None):
    script = ["set -eo pipefail"]
    for (_, body, _, _), _ in steps:
        script.append(body.replace(DOC_URL, url))
        script.append("printf '\\n%s\\n' '" + MARK + "'")
    p = subprocess.run(["bash", "-c", "\n".join(script)], cwd=cwd, capture_output=True, text=True,
                       timeout=timeout, env=env)
    parts = p.stdout.split("\n" + MARK + "\n")
    return parts[:len(steps)], p


def json_values(text):
    dec, i, out = json.JSONDecoder(), 0, []
    while True:
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        if i >= len(text):
            return out
        v, i = dec.raw_decode(text, i)
        out.append(v)


def same(doc, real, path="$"):
    """None if real matches doc, else where and why not."""
    if isinstance(doc, dict) and isinstance(real, dict):
        if set(doc) != set(real):
            return "%s: keys %s, documented %s" % (path, sorted(real), sorted(doc))
        for k in doc:
            if k in VOLATILE and isinstance(doc[k], (int, float)) and not isinstance(doc[k], bool):
                if not isinstance(real[k], (int, float)) or isinstance(real[k], bool):
                    return "%s.%s: not a number: %r" % (path, k, real[k])
                continue
            why = same(doc[k], real[k], "%s.%s" % (path, k))
            if why:
                return why
        return None
    if isinstance(doc, list) and isinstance(real, list):
        if len(doc) != len(real):
            return "%s: %d items, documented %d" % (path, len(real), len(doc))
        for k, (a, b) in enumerate(zip(doc, real)):
            why = same(a, b, "%s[%d]" % (path, k))
            if why:
                return why
        return None
    if type(doc) is not type(real) and not (isinstance(doc, (int, float)) and isinstance(real, (int, float))
                                            and not isinstance(doc, bool) and not isinstance(real, bool)):
        return "%s: %r, documented %r" % (path, real, doc)
    return None if doc == real else "%s: %r, documented %r" % (path, real, doc)


def text_matches(doc, real):
    d = [l.rstrip() for l in doc.strip("\n").split("\n")] if doc.strip() else []
    r = [l.rstrip() for l in real.strip("\n").split("\n")] if real.strip() else []
    if len(d) != len(r):
        return "%d lines, documented %d" % (len(r), len(d))
    for k, (a, b) in enumerate(zip(d, r)):
        pattern = ".*?".join(re.escape(x) for x in a.split("…"))
        if not re.fullmatch(pattern, b):
            return "line %d: %r, documented %r" % (k + 1, b, a)
    return None


_CLOCK = re.compile(r'"(%s)":-?[0-9][0-9.eE+-]*' % "|".join(sorted(VOLATILE)))


def layout(text):
    """The lines of text, clock readings blanked: what must match character for character."""
    return [_CLOCK.sub(r'"\1":#', l.rstrip()) for l in text.strip("\n").split("\n")] if text.strip() else []


def compare(reply, out):
    if reply is None:
        return None if not out.strip() else "printed %r but no reply is documented" % out[:200]
    info, body = reply[0], reply[1]
    if info == "text":
        return text_matches(body, out)
    try:
        real = json_values(out)
    except ValueError as e:
        return "the output is not JSON (%s): %r" % (e, out[:300])
    doc = json_values(body)
    if len(doc) != len(real):
        return "%d JSON values, documented %d" % (len(real), len(doc))
    for k, (a, b) in enumerate(zip(doc, real)):
        why = same(a, b, "$" if len(doc) == 1 else "[%d]" % k)
        if why:
            return why
    # shown as the daemon prints it: the same lines, the same spacing (compact JSON, one reply a line)
    d, r = layout(body), layout(out)
    if len(d) != len(r):
        return "%d lines, documented %d (show the replies as printed: compact, one a line)" % (len(r), len(d))
    for k, (a, b) in enumerate(zip(d, r)):
        if a != b:
            return "line %d is printed as %r, documented as %r" % (k + 1, b, a)
    return None


def pretty(v, ind=0):
    """JSON as docs/api.md shows it: short values on one line, arrays of numbers unbroken."""
    one = json.dumps(v, separators=(", ", ": "))
    if len(one) + ind <= 104 or not isinstance(v, (dict, list)) or \
            (isinstance(v, list) and all(not isinstance(x, (dict, list)) for x in v)):
        return one
    pad = " " * (ind + 2)
    if isinstance(v, dict):
        items = ["%s%s: %s" % (pad, json.dumps(k), pretty(x, ind + 2)) for k, x in v.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * ind + "}"
    return "[\n" + ",\n".join(pad + pretty(x, ind + 2) for x in v) + "\n" + " " * ind + "]"


CLI_BIN = os.path.join(os.path.dirname(DESCENTD))


def cli_env():
    """docs/cli.md's environment: build/bin first on PATH, no DESCENT_* settings of our own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESCENT_") or k == "DESCENT_BUILD"}
    env["PATH"] = CLI_BIN + os.pathsep + env.get("PATH", "")
    return env


def rewrite_api(rel="docs/api.md"):
    """Replaces each reply block of a walkthrough page with the output of a fresh run."""
    path = os.path.join(ROOT, rel)
    text = read(rel)
    steps = walkthrough(text)
    d = Daemon()
    work = tempfile.mkdtemp(prefix="descent-docs-")
    try:
        env = None
        if rel == "docs/cli.md":
            env = cli_env()
        outs, p = run_walkthrough(steps, d.url, work, env=env)
    finally:
        d.stop(expect_clean=False)
        d.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    lines = text.split("\n")
    edits = []
    for (_, reply), out in zip(steps, outs):
        if reply is None:
            continue
        info, body, no, nlines = reply
        if info == "json":
            new = out.strip("\n")  # as printed
        else:
            if text_matches(body, out) is None:
                continue
            new = out.strip("\n")
        edits.append((no, no + nlines, new))
    for start, end, new in reversed(edits):  # lines[start:end] is the body (0-based start = line after ```)
        lines[start:end] = new.split("\n") if new else []
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    if p.returncode:
        print(p.stderr, file=sys.stderr)
    return p.returncode


# ---- the tests ---------------------------------------------------------------------------------

def errors_h():
    """[(status, code, message)] of server/errors.h's table."""
    rows = re.findall(r'X\((E_\w+),\s*(\d{3}),\s*"(\w+)",\s*"((?:[^"\\]|\\.)*)"\)', read("server/base/errors.h"))
    return [(int(s), c, m) for _, s, c, m in rows]


def python_blocks(rel):
    return "\n\n".join(b[1] for b in fenced_blocks(read(rel)) if b[0] == "python")


class OpenApi(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.text = read("proto/openapi.yaml")
        cls.doc = load_yaml(cls.text)

    def test_reader_agrees_with_pyyaml(self):
        try:
            import yaml
        except ImportError:
            self.skipTest("PyYAML not installed (optional cross-check)")
        self.assertEqual(self.doc, yaml.safe_load(self.text))

    def test_every_route_is_documented(self):
        served = set()
        for line in run_descentd("--print-routes").splitlines():
            method, path = line.split()
            served.add((method.upper(), path))
        self.assertTrue(served)
        documented, planned = set(), set()
        for path, item in self.doc["paths"].items():
            for method, op in item.items():
                if method in METHODS:
                    documented.add((method.upper(), path))
                    if op.get("x-descent-planned"):
                        planned.add((method.upper(), path))
        missing = sorted(served - documented)
        self.assertFalse(missing, "served by descentd but missing from proto/openapi.yaml: %s" % missing)
        unserved = sorted(documented - served - planned)
        self.assertFalse(unserved, "in proto/openapi.yaml but not served (mark planned ones "
                                   "x-descent-planned: true): %s" % unserved)
        stale = sorted(planned & served)
        self.assertFalse(stale, "served now: remove x-descent-planned from %s in proto/openapi.yaml" % stale)

    def test_structure(self):
        d = self.doc
        self.assertTrue(str(d["openapi"]).startswith("3.1"))
        for k in ("title", "version"):
            self.assertIn(k, d["info"])

        def resolve(ref):
            self.assertTrue(ref.startswith("#/"), ref)
            node = d
            for part in ref[2:].split("/"):
                part = part.replace("~1", "/").replace("~0", "~")
                self.assertIn(part, node, "unresolved $ref %s" % ref)
                node = node[part]
            return node

        def walk(node):
            if isinstance(node, dict):
                for k, v in node.items():
                    if k == "$ref":
                        resolve(v)
                    else:
                        walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)

        walk(d)
        for path, item in d["paths"].items():
            for method, op in item.items():
                if method not in METHODS:
                    continue
                where = "%s %s" % (method.upper(), path)
                self.assertIn("operationId", op, where)
                self.assertTrue(op.get("summary"), where)
                resp = op["responses"]
                self.assertTrue(any(str(s).startswith("2") for s in resp), where + ": no 2xx reply")
                for status, r in resp.items():
                    if "$ref" in r:
                        r = resolve(r["$ref"])
                    self.assertTrue(r.get("description"), "%s %s: no description" % (where, status))
                    if str(status)[0] in "45":
                        schema = r["content"]["application/json"]["schema"]
                        self.assertEqual(schema, {"$ref": "#/components/schemas/Error"},
                                         "%s %s: errors use the Error schema" % (where, status))
                if "{name}" in path:
                    self.assertIn("400", [str(s) for s in resp], where + ": bad_name")
                    if method != "put":  # PUT .../state creates
                        self.assertIn("404", [str(s) for s in resp], where + ": unknown_instance")

    def test_error_codes(self):
        codes = sorted(c for _, c, _ in errors_h())
        enum = self.doc["components"]["schemas"]["ErrorCode"]["enum"]
        self.assertEqual(sorted(enum), codes)

    def test_validator(self):
        try:
            from openapi_spec_validator import validate
        except ImportError:
            self.skipTest("openapi-spec-validator not installed (optional)")
        validate(self.doc)


class Documents(unittest.TestCase):
    def test_errors_md_lists_errors_h(self):
        table = set(re.findall(r"^\| (\d{3}) \| `(\w+)` \|", read("proto/errors.md"), re.M))
        want = {(str(s), c) for s, c, _ in errors_h()}
        self.assertEqual(sorted(table), sorted(want), "proto/errors.md's table vs server/errors.h")

    def test_options_table(self):
        want = run_descentd("--help-markdown").strip("\n").split("\n")
        lines = read("docs/operations.md").split("\n")
        self.assertIn(want[0], lines, "docs/operations.md has no options table")
        k = lines.index(want[0])
        got = []
        while k < len(lines) and lines[k].startswith("|"):
            got.append(lines[k])
            k += 1
        self.assertEqual(got, want, "docs/operations.md's options table differs from descentd --help-markdown")

    def test_init_md_golden_values(self):
        ns = {}
        exec(compile(python_blocks("proto/init.md"), "proto/init.md", "exec"), ns)
        src = read("tests/unit/test_rng.c")
        body = src[src.index("START_TEST(golden_values)"):]
        body = body[:body.index("END_TEST")]
        init_md = read("proto/init.md")
        checked = 0
        v = None
        for line in body.split("\n"):
            m = re.search(r"rng_bits\((\d+), (\d+), (\d+)\), (0x[0-9a-f]+)ull", line)
            if m:
                self.assertEqual(ns["bits"](*map(int, m.group(1, 2, 3))), int(m.group(4), 16), line)
                self.assertIn(m.group(4), init_md.lower())
                checked += 1
            m = re.search(r"rng_fill_(normal|uniform)\(v, (\d+), (\d+), (\d+), (\d+), ([-\d.]+), ([-\d.]+)\)", line)
            if m:
                n, first, seed, stream = map(int, m.group(2, 3, 4, 5))
                a, b = float(m.group(6)), float(m.group(7))
                v = ns["init_" + m.group(1)](n, seed, a, b, first=first, stream=stream)
            m = re.search(r"ck_assert_float_eq\(v\[(\d+)\], (-?0x[0-9a-fp.+-]+)f\)", line)
            if m:
                self.assertEqual(v[int(m.group(1))], float.fromhex(m.group(2)), line)
                self.assertIn(m.group(2), init_md)
                checked += 1
        self.assertGreaterEqual(checked, 7)


SEED_MENTION = re.compile(r"\bseed's\b|\bseed document\b|\bthe seed (said|saw|calls|does)\b|\"the seed\"")


def tracked_text_files():
    out = subprocess.run(["git", "-C", ROOT, "ls-files", "-z"], capture_output=True, check=True).stdout
    for rel in out.decode().split("\0"):
        if not rel:
            continue
        try:
            with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
                yield rel, f.read()
        except (UnicodeDecodeError, IsADirectoryError, FileNotFoundError):
            continue


@unittest.skipIf(shutil.which("git") is None or not os.path.exists(os.path.join(ROOT, ".git")),
                 "not a git checkout")
class StandAlone(unittest.TestCase):
    """Every file stands on its own in a clone: no ../shared paths (the project's private
    documents), and wherever the seed document is mentioned, a sentence says what it is."""

    def test_no_shared_paths(self):
        bad = [rel for rel, text in tracked_text_files()
               if re.search(r"\.\./shared\b|\bshared/(seed|reference|CONTRACT|STYLE)", text)
               and rel != "tests/integration/test_docs.py"]  # this file names the pattern it looks for
        self.assertEqual(bad, [], "files pointing to ../shared, which a clone does not have")

    def test_seed_is_said_where_mentioned(self):
        bad = [rel for rel, text in tracked_text_files()
               if SEED_MENTION.search(text) and "neuralnets" not in text]
        self.assertEqual(bad, [], "files that speak of the seed document without saying what it is "
                                  "(the tutorial by neuralnets descent grew from)")


def make_dry(*args, env=None):
    """The commands `make -n ARGS` would run (nothing is built or installed)."""
    p = subprocess.run(["make", "-n", "--no-print-directory", "-C", ROOT, "B=" + BUILD] + list(args),
                       capture_output=True, text=True, timeout=120, env=env)
    if p.returncode:
        raise AssertionError("make -n %s: %s" % (" ".join(args), p.stderr))
    return p.stdout.splitlines()


class MakeTargets(unittest.TestCase):
    def test_demo_writes_under_build(self):
        """`make demo` leaves the committed docs/road-trip.* alone unless asked (DEMO_REPORT=docs)."""
        def road_trip(*args):
            cmds = [l for l in make_dry("demo", *args) if "road_trip.py" in l]
            self.assertEqual(len(cmds), 1, cmds)
            return cmds[0].split()

        cmd = road_trip()
        self.assertIn("--out", cmd)
        out = cmd[cmd.index("--out") + 1]
        self.assertEqual(os.path.normpath(out), os.path.normpath(os.path.join(BUILD, "demo")))
        cmd = road_trip("DEMO_REPORT=docs")
        self.assertEqual(cmd[cmd.index("--out") + 1], "docs")
        # and road_trip.py run by hand (no --out) writes into the build directory too
        sys.path.insert(0, os.path.join(ROOT, "client", "examples"))
        try:
            import road_trip as rt
        finally:
            sys.path.pop(0)
        self.assertEqual(rt.default_out_dir(), os.path.join(ROOT, BUILD, "demo"))
        self.assertIn("make demo DEMO_REPORT=docs", read("docs/road-trip.md"))

    def test_run_listen(self):
        """`make run LISTEN=HOST:PORT` and DESCENT_LISTEN choose the address, as the README says."""
        text = read("README.md")
        self.assertIn("make run LISTEN=127.0.0.1:9000", text)
        self.assertIn("DESCENT_LISTEN", text)
        base = {k: v for k, v in os.environ.items() if k not in ("LISTEN", "DESCENT_LISTEN")}
        work = tempfile.mkdtemp(prefix="descent-run-")
        try:
            # make run LISTEN=..., and DESCENT_LISTEN in the environment of `make run`
            for args, env in ((["LISTEN=127.0.0.1:0"], base), ([], dict(base, DESCENT_LISTEN="127.0.0.1:0"))):
                cmds = [l for l in make_dry("run", *args, env=env) if l.startswith("exec ") and "descentd" in l]
                self.assertEqual(len(cmds), 1, cmds)
                argv = cmds[0].split()[1:]
                os.makedirs(os.path.join(work, "var"), exist_ok=True)
                p = subprocess.Popen([DESCENTD] + argv[1:], cwd=work, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, env=env)
                try:
                    line = p.stdout.readline()
                    self.assertRegex(line, r"^listening on http://127\.0\.0\.1:\d+$", (args, argv))
                    self.assertNotIn(":8080", line)
                finally:
                    p.terminate()
                    self.assertEqual(p.wait(timeout=60), 0)
                    p.stdout.close()
        finally:
            shutil.rmtree(work, ignore_errors=True)


class ReadmeDurability(unittest.TestCase):
    """The README says precisely what a kill -9 keeps; the daemon does what it says."""

    def test_what_kill_9_keeps(self):
        text = read("README.md")
        self.assertNotIn("survives restarts and\n`kill -9` from its snapshots", text)
        for phrase in ("last snapshot", "--snapshot-interval", "durable before their reply", "descent save",
                       "--snapshot-interval 0"):
            self.assertIn(phrase, text)
        d = Daemon("--snapshot-interval", "3600")
        try:
            spec = {"name": "demo", "algorithm": "adam", "hyper": {"lr": 0.1},
                    "tensors": [{"name": "w", "shape": [2], "values": [1, -1]}]}
            self.assertEqual(d.req("POST", "/v1/optimizers", spec)[0], 201)
            for k in range(20):
                self.assertEqual(d.req("POST", "/v1/optimizers/demo/step", {"grads": {"w": [0.5, -0.5]}})[0], 200)
            d.kill9()
            d.restart()
            st, body, _ = d.req("GET", "/v1/optimizers/demo/params")
            self.assertEqual((st, body["step"], body["params"]["w"]), (200, 0, [1, -1]))  # back at its last snapshot
            for k in range(3):
                d.req("POST", "/v1/optimizers/demo/step", {"grads": {"w": [0.5, -0.5]}})
            self.assertEqual(d.req("PATCH", "/v1/optimizers/demo", {"hyper": {"lr": 0.01}})[0], 200)
            d.kill9()
            d.restart()
            st, body, _ = d.req("GET", "/v1/optimizers/demo")
            self.assertEqual((body["hyper"]["lr"], body["step"]), (0.01, 3))   # a change is durable, with its step
        finally:
            d.stop(expect_clean=False)
            d.cleanup()


class AgainstDaemon(unittest.TestCase):
    def setUp(self):
        self.d = Daemon()

    def tearDown(self):
        try:
            self.d.stop()
        finally:
            self.d.cleanup()

    def test_api_md_walkthrough(self):
        self.assertIsNotNone(shutil.which("curl"), "the walkthrough needs curl")
        steps = walkthrough(read("docs/api.md"))
        self.assertGreater(len(steps), 10)
        # a reader who followed the README first has its `demo`: the page must not clash with it
        readme = [b for lang, b in re.findall(r"```(\w*)\n(.*?)```", read("README.md"), re.S)
                  if lang == "sh" and "curl" in b]
        self.assertEqual(len(readme), 1)
        p = subprocess.run(["bash", "-euo", "pipefail", "-c", readme[0].replace(DOC_URL, self.d.url)],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.d.req("GET", "/v1/optimizers/demo")[0], 200)
        work = tempfile.mkdtemp(prefix="descent-docs-")
        try:
            outs, p = run_walkthrough(steps, self.d.url, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        for ((_, body, no, _), reply), out in zip(steps, outs):
            why = compare(reply, out)
            if why:
                shown = out
                if reply and reply[0] == "json":
                    try:
                        shown = "\n".join(pretty(v) for v in json_values(out))
                    except ValueError:
                        pass
                self.fail("docs/api.md line %d: %s\n--- command\n%s\n--- output\n%s\n--- stderr\n%s"
                          % (no, why, body, shown, p.stderr[-2000:]))
        self.assertEqual(len(outs), len(steps), "the walkthrough stopped early:\n%s" % p.stderr[-2000:])
        self.assertEqual(p.returncode, 0, p.stderr[-2000:])
        # the page cleaned up after itself and left the README's instance alone
        names = [o["name"] for o in self.d.req("GET", "/v1/optimizers")[1]["optimizers"]]
        self.assertEqual(names, ["demo"])

    def test_cli_md_walkthrough(self):
        steps = walkthrough(read("docs/cli.md"))
        self.assertGreater(len(steps), 15)
        self.assertTrue(any("descent save" in b for (_, b, _, _), _ in steps))
        work = tempfile.mkdtemp(prefix="descent-cli-docs-")
        try:
            outs, p = run_walkthrough(steps, self.d.url, work, env=cli_env())
        finally:
            shutil.rmtree(work, ignore_errors=True)
        for ((_, body, no, _), reply), out in zip(steps, outs):
            why = compare(reply, out)
            if why:
                self.fail("docs/cli.md line %d: %s\n--- command\n%s\n--- output\n%s\n--- stderr\n%s"
                          % (no, why, body, out, p.stderr[-2000:]))
        self.assertEqual(len(outs), len(steps), "the examples stopped early:\n%s" % p.stderr[-2000:])
        self.assertEqual(p.returncode, 0, p.stderr[-2000:])
        self.assertEqual(self.d.req("GET", "/v1/optimizers")[1]["optimizers"], [])

    def test_init_md_matches_the_daemon(self):
        ns = {}
        exec(compile(python_blocks("proto/init.md"), "proto/init.md", "exec"), ns)
        spec = {"name": "inits", "algorithm": "sgd", "tensors": [
            {"name": "a", "shape": [3, 5], "init": {"normal": {"mean": 0.5, "std": 2, "seed": 42}}},
            {"name": "b", "shape": [7], "offset": 1000, "init": {"uniform": {"low": -3, "high": 1, "seed": 7}}},
            {"name": "c", "shape": [4], "init": {"normal": {"seed": 2 ** 63 - 1}}}]}
        st, body, _ = self.d.req("POST", "/v1/optimizers", spec)
        self.assertEqual(st, 201, body)
        st, raw, h = self.d.req("GET", "/v1/optimizers/inits/params",
                                headers={"Accept": "application/octet-stream"}, raw=True)
        self.assertEqual(st, 200)
        want = ns["init_normal"](15, 42, 0.5, 2.0) + ns["init_uniform"](7, 7, -3.0, 1.0, first=1000) + \
            ns["init_normal"](4, 2 ** 63 - 1)
        self.assertEqual(raw, struct.pack("<%df" % len(want), *want))
        # random search: candidate k is scale * N(0, 1) from stream k (center "zero")
        st, body, _ = self.d.req("POST", "/v1/optimizers", {
            "name": "rs", "algorithm": "random_search", "hyper": {"scale": 0.25, "seed": 9},
            "tensors": [{"name": "x", "shape": [5]}]})
        self.assertEqual(st, 201, body)
        for k in (1, 2):
            st, raw, h = self.d.req("POST", "/v1/optimizers/rs/ask", headers={"Accept": "application/octet-stream"},
                                    raw=True)
            self.assertEqual(h["descent-candidate"], str(k))
            self.assertEqual(raw, struct.pack("<5f", *ns["init_normal"](5, 9, 0.0, 0.25, stream=k)))

    def test_snapshot_md_reader(self):
        ns = {}
        exec(compile(python_blocks("proto/snapshot.md"), "proto/snapshot.md", "exec"), ns)
        spec = {"name": "snap.me", "algorithm": "adam", "hyper": {"amsgrad": True},
                "tensors": [{"name": "W", "shape": [2, 3], "init": {"normal": {"seed": 1}}},
                            {"name": "b", "shape": [3], "offset": 5}]}
        st, body, _ = self.d.req("POST", "/v1/optimizers", spec)
        self.assertEqual(st, 201, body)
        for step in range(3):
            st, body, _ = self.d.req("POST", "/v1/optimizers/snap.me/step",
                                     {"step": step, "grads": [0.5, -1, 2, 0.25, -0.5, 1, 3, -3, 0]})
            self.assertEqual(st, 200, body)
        st, state, _ = self.d.req("GET", "/v1/optimizers/snap.me/state")
        self.assertEqual(st, 200)
        self.d.stop()  # SIGTERM: the final snapshot
        path = os.path.join(self.d.data_dir, "snap.me.snap")
        header, arrays = ns["read_snapshot"](path)
        self.assertEqual(header["name"], "snap.me")
        self.assertEqual(header["step"], 3)
        self.assertEqual(header["buffers"], ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"])
        self.assertEqual([t.get("origin", 0) for t in header["tensors"]], [0, 5])

        def f32s(values):
            return list(struct.unpack("<%df" % len(values), struct.pack("<%df" % len(values), *values)))

        flat = f32s(state["params"]["W"] + state["params"]["b"])
        self.assertEqual(arrays["params"], flat)
        for b in header["buffers"]:
            self.assertEqual(arrays[b], f32s(state["buffers"][b]["W"] + state["buffers"][b]["b"]), b)
        with open(path, "rb") as f:
            data = bytearray(f.read())
        data[len(data) // 2] ^= 0x10
        bad = os.path.join(self.d.data_dir, "flipped.bin")
        with open(bad, "wb") as f:
            f.write(data)
        with self.assertRaises(ValueError):
            ns["read_snapshot"](bad)
        os.unlink(bad)


if __name__ == "__main__":
    if sys.argv[1:] == ["--rewrite-api"]:
        sys.exit(rewrite_api())
    if sys.argv[1:] == ["--rewrite-cli"]:
        sys.exit(rewrite_api("docs/cli.md"))
    unittest.main()
