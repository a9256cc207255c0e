"""test_cli: the `descent` command against real daemons: every command, its
human and --json output, the exit codes scripts rely on (0 done, 1 usage,
2 refused, 3 unreachable, 4 shards disagree), tokens, sharding over two
daemons, and libdescent.so exporting exactly the descent_* functions of
client/descent.h."""
import json
import os
import re
import struct
import subprocess
import tempfile
import time
import unittest

from harness import BUILD, ROOT, Daemon, DaemonTest, bytes_to_floats, f32, floats_to_bytes

DESCENT = os.path.join(ROOT, BUILD, "bin", "descent")
LIBSO = os.path.join(ROOT, BUILD, "lib", "libdescent.so")
HEADER = os.path.join(ROOT, "client", "descent.h")

SPEC = {"name": "m", "algorithm": "sgd", "hyper": {"lr": 0.5},
        "tensors": [{"name": "W", "shape": [2, 2], "values": [[1, 2], [3, 4]]},
                    {"name": "b", "shape": [2], "values": [0.5, -0.5]}]}


def run(args, url=None, stdin=None, env=None, token=None, binary=False):
    """Runs descent; (exit code, stdout, stderr)."""
    e = dict(os.environ)
    e.pop("DESCENT_TOKEN", None)
    if url:
        e["DESCENT_URL"] = url
    if token:
        e["DESCENT_TOKEN"] = token
    e.update(env or {})
    if isinstance(stdin, str):
        stdin = stdin.encode()
    p = subprocess.run([DESCENT] + args, input=stdin, capture_output=True, env=e, timeout=60)
    out = p.stdout if binary else p.stdout.decode()
    return p.returncode, out, p.stderr.decode()


class Cli(DaemonTest):
    def cli(self, *args, **kw):
        return run(list(args), url=self.d.url, **kw)

    def ok(self, *args, **kw):
        rc, out, err = self.cli(*args, **kw)
        self.assertEqual(rc, 0, "descent %s: %s %s" % (" ".join(args), out, err))
        return out

    def fails(self, code, *args, **kw):
        rc, out, err = self.cli(*args, **kw)
        self.assertEqual(rc, code, "descent %s: exit %d, stdout %r, stderr %r" % (" ".join(args), rc, out, err))
        return err

    def test_help_and_usage(self):
        out = self.ok("--help")
        for c in ("create", "list", "show", "push", "pull", "set", "export", "import", "save", "delete", "ask", "tell"):
            self.assertRegex(out, r"\n  %s " % c)
            sub = self.ok(c, "--help")
            self.assertTrue(sub.startswith("usage: descent %s" % c), sub)
            self.assertIn("--url", sub)
        self.assertIn("exit codes", out)
        for n in ("0", "1", "2", "3", "4", "5"):
            self.assertRegex(out, r"\n  %s  " % n)
        self.assertIn("--wait-for-step", self.ok("pull", "--help"))
        self.assertIn("--key", self.ok("push", "--help"))
        self.assertIn("unknown command", self.fails(1, "frobnicate"))
        self.assertIn("usage", self.fails(1, "show"))                 # missing NAME
        self.assertIn("usage", self.fails(1, "show", "a", "b"))       # too many
        self.assertIn("--nope", self.fails(1, "list", "--nope"))
        self.assertIn("--step", self.fails(1, "push", "m", "--step", "x"))
        rc, out, err = run(["--help"])
        self.assertEqual(rc, 0)
        rc, out, err = run([])
        self.assertEqual(rc, 1)
        self.assertIn("usage", err)
        self.assertRegex(self.ok("--version"), r"^descent \d+\.\d+")

    def test_create_list_show_delete(self):
        out = self.ok("create", json.dumps(SPEC))
        self.assertEqual(out, "created m: sgd, async, 6 floats in 2 tensors\n")
        spec2 = dict(SPEC, name="m2", algorithm="adam")
        with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
            json.dump(spec2, f)
            f.flush()
            desc = json.loads(self.ok("--json", "create", f.name))
        self.assertEqual((desc["name"], desc["algorithm"], desc["size"]), ("m2", "adam", 6))
        self.assertEqual(json.loads(self.ok("create", "-", "--json", stdin=json.dumps(dict(SPEC, name="m3"))))["name"], "m3")
        err = self.fails(2, "create", json.dumps(SPEC))
        self.assertIn("already_exists (409)", err)
        self.assertIn("unknown_algorithm (422)", self.fails(2, "create", json.dumps(dict(SPEC, name="x", algorithm="lbfgs"))))
        self.assertIn("cannot read", self.fails(1, "create", "/nonexistent/spec.json"))

        out = self.ok("list")
        lines = out.splitlines()
        self.assertEqual(lines[0].split(), ["NAME", "ALGORITHM", "MODE", "STEP", "SIZE", "WORKERS"])
        self.assertEqual(lines[1].split(), ["m", "sgd", "async", "0", "6", "0"])
        self.assertEqual(sorted(o["name"] for o in json.loads(self.ok("list", "--json"))["optimizers"]),
                         ["m", "m2", "m3"])

        out = self.ok("show", "m")
        self.assertTrue(out.startswith("m: sgd, async, step 0\n"), out)
        self.assertIn("lr=0.5", out)
        self.assertRegex(out, r"W\s+\[2,2\]\s+offset 0\s+count 4")
        self.assertRegex(out, r"b\s+\[2\]\s+offset 4\s+count 2")
        self.assertEqual(json.loads(self.ok("show", "m", "--json"))["tensors"][1]["offset"], 4)

        self.assertEqual(self.ok("delete", "m"), "deleted m\n")
        self.assertEqual(json.loads(self.ok("delete", "m2", "--json")), {"name": "m2", "deleted": True})
        err = self.fails(2, "show", "m")
        self.assertEqual(err, "descent: show: unknown_instance (404): no optimizer instance named 'm'\n")
        err = json.loads(self.fails(2, "--json", "show", "m"))
        self.assertEqual(err["error"]["code"], "unknown_instance")
        self.assertEqual(err["error"]["status"], 404)
        self.assertIn("bad_name", self.fails(2, "show", "a/b"))
        self.assertEqual(self.ok("list").splitlines()[1].split()[0], "m3")

    def test_push_pull(self):
        self.ok("create", json.dumps(SPEC))
        # text from stdin, with every push option
        self.assertEqual(self.ok("push", "m", "--worker", "w1", "--step", "0", "--loss", "1.5",
                                 stdin="2 2 2 2\n1 -1\n"), "m: step 1\n")
        self.assertEqual(self.ok("pull", "m"), "step 1\nW [2,2]: 0 1 2 3\nb [2]: 0 0\n")
        self.assertEqual(json.loads(self.ok("pull", "m", "--json")),
                         {"step": 1, "params": {"W": [0, 1, 2, 3], "b": [0, 0]}})
        # a JSON array from a file, and --params
        with tempfile.TemporaryDirectory() as tmp:
            g = os.path.join(tmp, "g.txt")
            with open(g, "w") as f:
                f.write("[1, 1, 1, 1, 0.25, 0.25]")
            out = self.ok("push", "m", g, "--params")
            self.assertEqual(out, "m: step 2\nW [2,2]: -0.5 0.5 1.5 2.5\nb [2]: -0.125 -0.125\n")
            # binary in, binary out
            gb = os.path.join(tmp, "g.bin")
            with open(gb, "wb") as f:
                f.write(floats_to_bytes([0.5, 0, 0, 0, 0, 0.1]))
            self.assertEqual(json.loads(self.ok("push", "m", gb, "--binary", "--json")), {"step": 3})
            pb = os.path.join(tmp, "p.bin")
            self.ok("pull", "m", "--binary", "--output", pb)
            with open(pb, "rb") as f:
                got = bytes_to_floats(f.read())
            self.assertEqual(got, [-0.75, 0.5, 1.5, 2.5, -0.125, f32(f32(-0.125) - f32(f32(0.1) * 0.5))])
            rc, raw, _ = self.cli("pull", "m", "--binary", binary=True)
            self.assertEqual((rc, bytes_to_floats(raw)), (0, got))
            # text output: one number a line, which push reads back
            pt = os.path.join(tmp, "p.txt")
            self.ok("pull", "m", "-o", pt)
            with open(pt) as f:
                self.assertEqual([f32(float(x)) for x in f.read().split()], got)
        # idempotency key: the retry is not applied again
        self.assertEqual(self.ok("push", "m", "--key", "k1", stdin="0 0 0 0 0 0"), "m: step 4\n")
        self.assertEqual(self.ok("push", "m", "--key", "k1", stdin="0 0 0 0 0 0"), "m: step 4\n")
        self.assertEqual(json.loads(self.ok("pull", "m", "--json"))["step"], 4)
        # refusals and local errors
        self.assertIn("bad_length (400)", self.fails(2, "push", "m", stdin="1 2 3"))
        self.assertIn("'x' is not a finite number", self.fails(1, "push", "m", stdin="1 x"))
        self.assertIn("no numbers", self.fails(1, "push", "m", stdin=""))
        self.assertIn("not a whole number", self.fails(1, "push", "m", "--binary", stdin=b"\0\0\0"))
        self.assertIn("unknown_instance", self.fails(2, "push", "nope", stdin="1"))
        self.assertIn("'1e39' is not a finite number", self.fails(1, "push", "m", stdin="1 2 3 4 5 1e39"))
        inf = floats_to_bytes([1, 2, 3, 4, 5]) + struct.pack("<f", float("inf"))
        self.assertIn("not_finite (422)", self.fails(2, "push", "m", "-b", stdin=inf))
        self.assertEqual(json.loads(self.ok("pull", "m", "--json"))["step"], 4)  # nothing changed

    def test_long_poll(self):
        self.ok("create", json.dumps(SPEC))
        t0 = time.monotonic()
        rc, out, err = self.cli("pull", "m", "--wait-for-step", "1", "--timeout-ms", "300")
        waited = time.monotonic() - t0
        self.assertEqual(rc, 5, err)                       # timed out: exit 5 ...
        self.assertTrue(out.startswith("step 0\n"), out)   # ... with the current, older step
        self.assertGreaterEqual(waited, 0.25)
        p = subprocess.Popen([DESCENT, "--url", self.d.url, "pull", "m", "--json", "--wait-for-step", "1"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(0.3)
        self.assertIsNone(p.poll())                        # still waiting
        self.ok("push", "m", stdin="0 0 0 0 0 0")
        out, err = p.communicate(timeout=30)
        self.assertEqual(p.returncode, 0, err)
        self.assertEqual(json.loads(out)["step"], 1)

    def test_set(self):
        self.ok("create", json.dumps(SPEC))
        self.assertEqual(self.ok("set", "m", "lr=0.25", "momentum=0.9", "nesterov=true"),
                         "m: lr=0.25 momentum=0.9 nesterov=true\n")
        desc = json.loads(self.ok("show", "m", "--json"))
        self.assertEqual((desc["hyper"]["lr"], desc["hyper"]["momentum"], desc["hyper"]["nesterov"]), (0.25, 0.9, True))
        self.assertEqual(self.ok("set", "m", "clip_grad_norm=2"), "m: clip_grad_norm=2\n")
        self.assertEqual(json.loads(self.ok("show", "m", "--json"))["clip_grad_norm"], 2)
        desc = json.loads(self.ok("set", "m", "--patch", '{"hyper":{"lr":0.125}}', "--json"))
        self.assertEqual(desc["hyper"]["lr"], 0.125)
        self.assertIn("unknown_hyperparameter (422)", self.fails(2, "set", "m", "betas=[0.9,0.99]"))
        self.assertIn("invalid_value (422)", self.fails(2, "set", "m", "lr=-1"))
        self.assertIn("KEY=VALUE", self.fails(1, "set", "m", "lr"))
        self.assertIn("nothing to set", self.fails(1, "set", "m"))
        self.assertEqual(json.loads(self.ok("show", "m", "--json"))["hyper"]["lr"], 0.125)

    def test_export_import(self):
        self.ok("create", json.dumps(dict(SPEC, algorithm="adam")))
        self.ok("push", "m", stdin="1 2 3 4 5 6")
        before = self.ok("pull", "m", "--json")
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "m.json")
            self.ok("export", "m", "-o", path)
            with open(path) as f:
                doc = json.load(f)
            self.assertEqual((doc["format"], doc["step"]), ("descent-state/1", 1))
            self.assertEqual(sorted(doc["buffers"]), ["exp_avg", "exp_avg_sq"])
            self.assertEqual(json.loads(self.ok("export", "m")), doc)
            self.ok("delete", "m")
            self.assertEqual(self.ok("import", "m", path), "imported m: adam, step 1, 6 floats\n")
            self.assertEqual(self.ok("pull", "m", "--json"), before)
            with open(path) as f:
                desc = json.loads(self.ok("import", "m", "--json", stdin=f.read()))  # replaces it
            self.assertEqual(desc["step"], 1)
        self.assertIn("bad_json", self.fails(2, "import", "m", stdin="{"))
        self.assertIn("unknown_instance", self.fails(2, "export", "nope"))

    def test_ask_tell(self):
        self.ok("create", json.dumps({"name": "r", "algorithm": "random_search", "hyper": {"scale": 1, "seed": 5},
                                      "tensors": [{"name": "x", "shape": [3]}]}))
        out = self.ok("ask", "r")
        m = re.match(r"candidate 1: (\S+) (\S+) (\S+)\n$", out)
        self.assertTrue(m, out)
        a = json.loads(self.ok("ask", "r", "--json"))
        self.assertEqual((a["candidate"], len(a["params"])), (2, 3))
        self.assertEqual(self.ok("tell", "r", "1", "2.5"), "candidate 1: loss 2.5, improved (best loss 2.5)\n")
        t = json.loads(self.ok("tell", "r", "2", "3", "--json"))
        self.assertEqual((t["improved"], t["best_loss"]), (False, 2.5))
        self.assertIn("conflict (409)", self.fails(2, "tell", "r", "2", "1"))
        self.assertIn("candidate id", self.fails(1, "tell", "r", "zero", "1"))
        self.assertEqual([f32(float(x)) for x in m.groups()],
                         [f32(x) for x in json.loads(self.ok("pull", "r", "--json"))["params"]["x"]])

    def test_unreachable_and_env(self):
        rc, out, err = run(["list"], url="http://127.0.0.1:1")
        self.assertEqual(rc, 3, err)
        self.assertIn("connection_failed", err)
        rc, out, err = run(["--url", "http://127.0.0.1:1", "--json", "show", "m"], url=self.d.url)
        self.assertEqual(rc, 3)
        self.assertEqual(json.loads(err)["error"]["code"], "connection_failed")
        rc, out, err = run(["--url", "ftp://x", "list"])
        self.assertEqual(rc, 1, err)
        # DESCENT_URL is the default --url
        self.assertEqual(run(["list"], url=self.d.url)[:2], (0, "no instances\n"))


class Tokens(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        tf = os.path.join(self.tmp.name, "tokens")
        with open(tf, "w") as f:
            f.write("s3cret\nro:look\n")
        self.d = Daemon("--token-file", tf)

    def tearDown(self):
        try:
            self.d.stop()
        finally:
            self.d.cleanup()
            self.tmp.cleanup()

    def test_tokens(self):
        rc, out, err = run(["list"], url=self.d.url)
        self.assertEqual(rc, 2)
        self.assertIn("unauthorized (401)", err)
        self.assertEqual(run(["--token", "s3cret", "create", json.dumps(SPEC)], url=self.d.url)[0], 0)
        self.assertEqual(run(["pull", "m"], url=self.d.url, token="look")[0], 0)      # $DESCENT_TOKEN, read-only
        rc, out, err = run(["push", "m"], url=self.d.url, token="look", stdin="1 1 1 1 1 1")
        self.assertEqual(rc, 2)
        self.assertIn("forbidden (403)", err)
        rc, out, err = run(["--url", self.d.url + "," + self.d.url, "list"], token="wrong")
        self.assertEqual(rc, 2, err)        # a sharded handle is refused at open
        self.assertIn("unauthorized", err)


class Sharded(unittest.TestCase):
    """The CLI over two daemons: one logical instance split by the rule."""

    def setUp(self):
        self.a, self.b = Daemon(), Daemon()
        self.url = self.a.url + "," + self.b.url

    def tearDown(self):
        for d in (self.a, self.b):
            try:
                d.stop()
            finally:
                d.cleanup()

    def test_sharded_commands(self):
        def cli(*args, **kw):
            return run(["--url", self.url] + list(args), **kw)

        spec = dict(SPEC, tensors=[{"name": "W", "shape": [2, 2], "values": [[1, 2], [3, 4]]},
                                   {"name": "b", "shape": [3], "values": [0.5, -0.5, 1]}])
        rc, out, err = cli("create", json.dumps(spec))
        self.assertEqual((rc, out), (0, "created m: sgd, async, 7 floats in 2 tensors\n"), err)
        # the split rule: 7 floats over 2 shards: [0, 3) and [3, 7)
        _, d0, _ = self.a.req("GET", "/v1/optimizers/m")
        _, d1, _ = self.b.req("GET", "/v1/optimizers/m")
        self.assertEqual([(t["name"], t["shape"], t.get("origin", 0)) for t in d0["tensors"]], [("W", [3], 0)])
        self.assertEqual([(t["name"], t["shape"], t.get("origin", 0)) for t in d1["tensors"]],
                         [("W", [1], 3), ("b", [3], 0)])
        rc, out, err = cli("show", "m")
        self.assertEqual(rc, 0, err)
        self.assertIn("tensors (7 floats)", out)
        self.assertRegex(out, r"0 http://\S+\s+offset 0\s+size 3\s+step 0")
        self.assertRegex(out, r"1 http://\S+\s+offset 3\s+size 4\s+step 0")
        self.assertEqual(cli("push", "m", stdin="2 2 2 2 1 1 1")[:2], (0, "m: step 1\n"))
        self.assertEqual(cli("pull", "m")[1], "step 1\nW [4]: 0 1 2 3\nb [3]: 0 -1 0.5\n")
        self.assertEqual(cli("list")[1].splitlines()[1].split(), ["m", "sgd", "async", "1", "7", "0"])
        rc, doc, err = cli("export", "m")
        self.assertEqual(rc, 0, err)
        state = json.loads(doc)
        self.assertEqual((state["step"], state["size"], state["params"]), (1, 7, {"W": [0, 1, 2, 3], "b": [0, -1, 0.5]}))
        # one shard restored to an older state: the client reports it, exit 4
        old = self.b.export("m")
        self.assertEqual(cli("push", "m", stdin="0 0 0 0 0 0 0")[0], 0)
        st, body, _ = self.b.req("PUT", "/v1/optimizers/m/state", old)
        self.assertEqual(st, 200, body)
        rc, out, err = cli("pull", "m")
        self.assertEqual(rc, 4, err)
        self.assertIn("step_mismatch", err)
        self.assertRegex(err, r"shard 0 \(\S+\) at step 2, shard 1 \(\S+\) at step 1")
        self.assertEqual(cli("export", "m")[0], 4)
        # brought back in line by importing one state into every shard
        rc, out, err = cli("import", "m", stdin=doc)
        self.assertEqual((rc, out), (0, "imported m: sgd, step 1, 7 floats\n"), err)
        self.assertEqual(cli("pull", "m")[1], "step 1\nW [4]: 0 1 2 3\nb [3]: 0 -1 0.5\n")
        self.assertEqual(cli("delete", "m")[1], "deleted m\n")
        self.assertEqual(self.a.req("GET", "/v1/optimizers/m")[0], 404)
        self.assertEqual(self.b.req("GET", "/v1/optimizers/m")[0], 404)


class Symbols(unittest.TestCase):
    def test_exported_symbols_are_the_api(self):
        """libdescent.so exports exactly the DESCENT_API functions of descent.h."""
        with open(HEADER) as f:
            header = f.read()
        declared = set(re.findall(r"DESCENT_API\s[^;(]*?\b(descent_\w+)\s*\(", header))
        self.assertGreater(len(declared), 20)
        out = subprocess.run(["nm", "-D", "--defined-only", LIBSO], capture_output=True, text=True, check=True).stdout
        exported = set(line.split()[-1].split("@")[0] for line in out.splitlines() if line.strip())
        self.assertEqual(exported, declared)
        self.assertTrue(all(s.startswith("descent_") and not s.startswith("descent__") for s in exported))


if __name__ == "__main__":
    unittest.main()
