"""test_cli_usability: the rough edges of the `descent` command a new user hit
(issue 13): a gradient of the wrong length is told in values, not bytes;
`import NAME FILE` imports under NAME; a timed-out `pull --wait-for-step`
exits 5; DESCENT_CA_FILE is in --help and a certificate that does not verify
points to it; `descent save NAME` takes a durable snapshot that survives
kill -9."""
import json
import os
import shutil
import subprocess
import tempfile
import unittest

from harness import DESCENTD, Daemon, DaemonTest, request
from test_cli import DESCENT, SPEC, run


class Usability(DaemonTest):
    def cli(self, *args, **kw):
        return run(list(args), url=self.d.url, **kw)

    def test_wrong_length_in_values(self):
        self.assertEqual(self.cli("create", json.dumps(SPEC))[0], 0)      # 6 floats: W [2,2] and b [2]
        rc, out, err = self.cli("push", "m", stdin="1 2 3\n")
        self.assertEqual(rc, 2, err)
        self.assertIn("bad_length (400): expected 6 values, got 3", err)
        self.assertNotIn("bytes", err)
        rc, out, err = self.cli("--json", "push", "m", stdin="1 2 3")
        self.assertEqual(rc, 2, err)
        e = json.loads(err)["error"]
        self.assertEqual((e["status"], e["code"]), (400, "bad_length"))
        self.assertTrue(e["message"].startswith("expected 6 values, got 3"), e)
        # --params checks before sending: the same words, the same exit code
        rc, out, err = self.cli("push", "m", "--params", stdin="1 2 3 4 5 6 7")
        self.assertEqual(rc, 2, err)
        self.assertIn("bad_length: expected 6 values, got 7", err)
        rc, out, err = self.cli("push", "m", "--binary", stdin=b"\0" * 8)
        self.assertEqual(rc, 2, err)
        self.assertIn("expected 6 values, got 2", err)
        self.assertEqual(self.d.req("GET", "/v1/optimizers/m")[1]["step"], 0)   # nothing applied

    def test_dtype_sends_and_receives_half_precision(self):
        spec = dict(SPEC, hyper={"lr": 1.0})
        self.assertEqual(self.cli("create", json.dumps(spec))[0], 0)
        g = "0.1 0.2 0.3 0.4 0.5 0.6"
        p0 = self.d.req("GET", "/v1/optimizers/m/params")[1]["params"]
        p0 = p0["W"] + p0["b"]
        rc, out, err = self.cli("push", "m", "--dtype", "bfloat16", "--output", "-", stdin=g)
        self.assertEqual(rc, 0, err)
        import struct
        def bf16(x):  # x rounded to bfloat16, nearest even
            u = struct.unpack("<I", struct.pack("<f", x))[0]
            return struct.unpack("<f", struct.pack("<I", (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000))[0]
        params = self.d.req("GET", "/v1/optimizers/m/params")[1]["params"]
        f32 = lambda x: struct.unpack("<f", struct.pack("<f", x))[0]
        want = [f32(a - bf16(float(v))) for a, v in zip(p0, g.split())]  # sgd lr=1: minus the widened gradient
        self.assertEqual([f32(x) for x in params["W"] + params["b"]], want)
        self.assertEqual([f32(float(v)) for v in out.split()], [bf16(v) for v in want])  # the reply, in bfloat16
        rc, out, err = self.cli("pull", "m", "--dtype", "float16", "--output", "-")
        self.assertEqual(rc, 0, err)
        self.assertEqual([f32(float(v)) for v in out.split()],
                         [struct.unpack("<e", struct.pack("<e", v))[0] for v in want])
        rc, out, err = self.cli("pull", "m", "--dtype", "int8")
        self.assertEqual(rc, 1, err)
        self.assertIn("--dtype: expected float32, bfloat16 or float16", err)

    def test_import_under_another_name(self):
        self.assertEqual(self.cli("create", json.dumps(dict(SPEC, algorithm="adam")))[0], 0)
        self.assertEqual(self.cli("push", "m", stdin="1 2 3 4 5 6")[0], 0)
        rc, doc, err = self.cli("export", "m")
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(doc)["name"], "m")
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "m.json")
            with open(path, "w") as f:
                f.write(doc)
            rc, out, err = self.cli("import", "m-copy", path)
            self.assertEqual((rc, out), (0, "imported m-copy: adam, step 1, 6 floats\n"), err)
        # from stdin too, and the copy continues bit for bit like the original
        rc, out, err = self.cli("import", "m3", "--json", stdin=doc)
        self.assertEqual(rc, 0, err)
        self.assertEqual((json.loads(out)["name"], json.loads(out)["step"]), ("m3", 1))
        original = self.d.export("m")
        for name in ("m-copy", "m3"):
            copy = self.d.export(name)
            self.assertEqual(copy["name"], name)
            self.assertEqual((copy["params"], copy["buffers"], copy["step"]),
                             (original["params"], original["buffers"], original["step"]))
        for name in ("m", "m-copy"):
            self.assertEqual(self.cli("push", name, stdin="0.5 0.5 0.5 0.5 0.5 0.5")[0], 0)
        self.assertEqual(self.d.export("m-copy")["params"], self.d.export("m")["params"])
        self.assertEqual(sorted(o["name"] for o in self.d.req("GET", "/v1/optimizers")[1]["optimizers"]),
                         ["m", "m-copy", "m3"])

    def test_wait_for_step_timeout_exits_5(self):
        self.assertEqual(self.cli("create", json.dumps(SPEC))[0], 0)
        rc, out, err = self.cli("pull", "m", "--wait-for-step", "1", "--timeout-ms", "100")
        self.assertEqual(rc, 5, err)
        self.assertEqual(out, "step 0\nW [2,2]: 1 2 3 4\nb [2]: 0.5 -0.5\n")
        self.assertIn("wait_timeout: 'm' is at step 0, not yet 1", err)
        rc, out, err = self.cli("--json", "pull", "m", "--wait-for-step", "1", "--timeout-ms", "100")
        self.assertEqual((rc, json.loads(out)["step"], json.loads(err)["error"]["code"]), (5, 0, "wait_timeout"))
        # reached: 0 (the step is already there)
        self.assertEqual(self.cli("pull", "m", "--wait-for-step", "0", "--timeout-ms", "100")[0], 0)
        help_ = self.cli("--help")[1]
        self.assertRegex(help_, r"\n  5  pull --wait-for-step")


class CaFile(unittest.TestCase):
    def test_ca_file_in_help_and_in_tls_failures(self):
        rc, out, err = run(["--help"])
        self.assertEqual(rc, 0)
        self.assertRegex(out, r"\n  DESCENT_CA_FILE +\S")
        from test_tls import make_cert
        tmp = tempfile.mkdtemp(prefix="descent-cli-tls-")
        try:
            cert, key = make_cert(tmp)
            d = Daemon("--tls-cert", cert, "--tls-key", key, tls=True)
            try:
                env = {"DESCENT_CA_FILE": ""}
                rc, out, err = run(["list"], url=d.url, env=env)
                self.assertEqual(rc, 3, err)
                self.assertIn("connection_failed", err)
                self.assertIn("set DESCENT_CA_FILE to that certificate's PEM file", err)
                # a CA file that is not the daemon's: the message says what was checked against
                os.makedirs(os.path.join(tmp, "other"))
                other, _ = make_cert(os.path.join(tmp, "other"))
                rc, out, err = run(["list"], url=d.url, env={"DESCENT_CA_FILE": other})
                self.assertEqual(rc, 3, err)
                self.assertIn("DESCENT_CA_FILE names the CA bundle", err)
                rc, out, err = run(["list"], url=d.url, env={"DESCENT_CA_FILE": cert})
                self.assertEqual((rc, out), (0, "no instances\n"), err)
            finally:
                d.stop()
                d.cleanup()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class Save(unittest.TestCase):
    def tearDown(self):
        for d in getattr(self, "daemons", []):
            d.cleanup()

    def test_save_survives_kill_9(self):
        d = Daemon("--snapshot-interval", "0")      # no periodic snapshots: only create and save write
        self.daemons = [d]
        self.assertEqual(run(["create", json.dumps(SPEC)], url=d.url)[0], 0)
        for _ in range(3):
            self.assertEqual(run(["push", "m"], url=d.url, stdin="1 1 1 1 1 1")[0], 0)
        before = d.export("m")
        rc, out, err = run(["save", "m"], url=d.url)
        self.assertEqual((rc, out), (0, "saved m at step 3\n"), err)
        for _ in range(2):                           # after the snapshot: lost by kill -9
            self.assertEqual(run(["push", "m"], url=d.url, stdin="1 1 1 1 1 1")[0], 0)
        rc, out, err = run(["--json", "save", "m"], url=d.url)
        self.assertEqual((rc, json.loads(out)), (0, {"name": "m", "step": 5, "durable": True}), err)
        self.assertEqual(run(["push", "m"], url=d.url, stdin="1 1 1 1 1 1")[0], 0)
        d.kill9()
        d.restart()
        after = d.export("m")
        self.assertEqual(after["step"], 5)
        self.assertNotEqual(after["params"], before["params"])
        self.assertEqual(after["params"], {"W": [-1.5, -0.5, 0.5, 1.5], "b": [-2.0, -3.0]})
        rc, out, err = run(["save", "nosuch"], url=d.url)
        self.assertEqual(rc, 2, err)
        self.assertIn("(404)", err)
        d.stop()

    def test_save_without_data_dir(self):
        p = subprocess.Popen([DESCENTD, "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
        try:
            url = p.stdout.readline().split()[-1]
            self.assertEqual(run(["create", json.dumps(SPEC)], url=url)[0], 0)
            rc, out, err = run(["save", "m"], url=url)
            self.assertEqual((rc, out), (2, ""), err)
            self.assertIn("no_data_dir (409)", err)
            rc, out, err = run(["--json", "save", "m"], url=url)
            self.assertEqual((rc, json.loads(err)["error"]["code"]), (2, "no_data_dir"))
        finally:
            p.terminate()
            p.wait(timeout=60)
            p.stdout.close()


if __name__ == "__main__":
    unittest.main()
