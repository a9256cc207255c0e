"""test_tls: --tls-cert/--tls-key serve HTTPS.

A self-signed certificate is generated with openssl into a temp dir; the
daemon is talked to with Python's ssl (verifying against that certificate)
and with `curl --cacert`; suspended requests (long-poll, a sync round) are
resumed over TLS too; plain HTTP to the TLS port gets no HTTP answer; curl
without the CA refuses the server; a bad key stops the daemon at start."""
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest

from harness import DESCENTD, Daemon, bytes_to_floats, floats_to_bytes, request


def make_cert(d):
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=descent-test",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


class TLS(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="descent-tls-")
        cls.cert, cls.key = make_cert(cls.dir)
        cls.d = Daemon("--tls-cert", cls.cert, "--tls-key", cls.key, tls=True)

    @classmethod
    def tearDownClass(cls):
        try:
            cls.d.stop()
        finally:
            cls.d.cleanup()
            shutil.rmtree(cls.dir, ignore_errors=True)

    def verified_conn(self):
        ctx = ssl.create_default_context(cafile=self.cert)  # verifies the chain and the IP
        return http.client.HTTPSConnection("127.0.0.1", self.d.port, timeout=30, context=ctx)

    def curl(self, *args):
        p = subprocess.run(["curl", "-sS", "--max-time", "20"] + list(args), capture_output=True, timeout=60)
        return p.returncode, p.stdout, p.stderr

    def test_url_is_https(self):
        self.assertTrue(self.d.url.startswith("https://127.0.0.1:"), self.d.url)

    def test_python_ssl_verified(self):
        c = self.verified_conn()
        st, body, _ = request(c, "GET", "/healthz")
        self.assertEqual((st, body), (200, {"status": "ok"}))
        self.assertEqual(c.sock.version()[:3], "TLS")
        st, body, _ = request(c, "POST", "/v1/optimizers", {"name": "t", "algorithm": "sgd", "hyper": {"lr": 0.5},
                                                            "tensors": [{"name": "w", "shape": [3], "values": [1, 2, 3]}]})
        self.assertEqual(st, 201, body)
        st, data, h = request(c, "POST", "/v1/optimizers/t/step", floats_to_bytes([2, 2, 2]),
                              {"Content-Type": "application/octet-stream", "Accept": "application/octet-stream"})
        self.assertEqual((st, h["descent-step"], bytes_to_floats(data)), (200, "1", [0, 1, 2]))
        # a big body over TLS (several records)
        n = 100000
        st, body, _ = request(c, "POST", "/v1/optimizers", {"name": "big", "algorithm": "sgd", "hyper": {"lr": 1.0},
                                                            "tensors": [{"name": "w", "shape": [n]}]})
        self.assertEqual(st, 201, body)
        st, body, _ = request(c, "POST", "/v1/optimizers/big/step", {"grads": [0.5] * n})
        self.assertEqual((st, body["step"], body["params"]["w"][:2], len(body["params"]["w"])), (200, 1, [-0.5, -0.5], n))
        c.close()

    def test_curl_with_cacert(self):
        rc, out, err = self.curl("--cacert", self.cert, "https://127.0.0.1:%d/healthz" % self.d.port)
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out), {"status": "ok"})
        rc, out, err = self.curl("--cacert", self.cert, "-H", "Content-Type: application/json", "-d",
                                 json.dumps({"name": "c", "algorithm": "adam", "tensors": [{"name": "w", "shape": [2]}]}),
                                 "https://localhost:%d/v1/optimizers" % self.d.port)
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["name"], "c")
        # without the CA, curl refuses the self-signed server (60: peer certificate cannot be authenticated)
        rc, out, err = self.curl("https://127.0.0.1:%d/healthz" % self.d.port)
        self.assertEqual(rc, 60, err)

    def test_libdescent_with_ca_file(self):
        """The C library (through the descent command) verifies the daemon with DESCENT_CA_FILE."""
        cli = os.path.join(os.path.dirname(DESCENTD), "descent")
        spec = json.dumps({"name": "tlsc", "algorithm": "sgd", "hyper": {"lr": 1},
                           "tensors": [{"name": "w", "shape": [2], "values": [1, 2]}]})
        env = dict(os.environ, DESCENT_URL=self.d.url, DESCENT_CA_FILE=self.cert)
        run = lambda *a, **kw: subprocess.run([cli] + list(a), capture_output=True, text=True, timeout=60, **kw)
        p = run("create", "-", "--json", input=spec, env=env)
        self.assertEqual(p.returncode, 0, p.stderr)
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write("1 1\n")
        try:
            p = run("push", "tlsc", f.name, "--params", "--json", env=env)
        finally:
            os.unlink(f.name)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("[0,1]", p.stdout.replace(" ", ""))
        # without the CA the library refuses the self-signed daemon: exit 3 (unreachable)
        env.pop("DESCENT_CA_FILE")
        p = run("list", env=env)
        self.assertEqual(p.returncode, 3, p.stdout + p.stderr)

    def test_plain_http_to_the_tls_port_fails(self):
        s = socket.create_connection(("127.0.0.1", self.d.port), timeout=10)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except (socket.timeout, ConnectionResetError):
            pass
        s.close()
        self.assertFalse(data.startswith(b"HTTP/"), data[:80])
        self.assertNotIn(b'"status":"ok"', data)
        with self.assertRaises((http.client.HTTPException, ConnectionError, OSError)):
            c = http.client.HTTPConnection("127.0.0.1", self.d.port, timeout=10)
            c.request("GET", "/healthz")
            r = c.getresponse()
            r.read()
        rc, out, err = self.curl("http://127.0.0.1:%d/healthz" % self.d.port)
        self.assertNotEqual(rc, 0)
        # the daemon is unharmed
        c = self.verified_conn()
        self.assertEqual(request(c, "GET", "/healthz")[0], 200)
        c.close()

    def test_suspended_requests_over_tls(self):
        c = self.verified_conn()
        request(c, "POST", "/v1/optimizers", {"name": "s", "algorithm": "sgd", "hyper": {"lr": 1.0}, "mode": "sync",
                                              "workers": 2, "tensors": [{"name": "w", "shape": [1]}]})
        out = {}

        def run(key, method, path, body):
            c2 = self.verified_conn()
            out[key] = request(c2, method, path, body)
            c2.close()

        ts = [threading.Thread(target=run, args=("poll", "GET", "/v1/optimizers/s/params?wait_for_step=1&timeout_ms=20000", None)),
              threading.Thread(target=run, args=("w1", "POST", "/v1/optimizers/s/step", {"worker": "w1", "grads": [2]}))]
        for t in ts:
            t.start()
        for _ in range(500):
            if request(c, "GET", "/v1/optimizers/s")[1]["waiting"] == 2:
                break
            time.sleep(0.01)
        st, body, _ = request(c, "POST", "/v1/optimizers/s/step", {"worker": "w2", "grads": [4]})
        self.assertEqual((st, body), (200, {"step": 1, "params": {"w": [-3]}}))
        for t in ts:
            t.join(10)
        self.assertEqual(out["w1"][:2], (200, {"step": 1, "params": {"w": [-3]}}))
        self.assertEqual(out["poll"][:2], (200, {"step": 1, "params": {"w": [-3]}}))
        c.close()


class TLSStartErrors(unittest.TestCase):
    def test_bad_key_or_cert(self):
        with tempfile.TemporaryDirectory() as d:
            cert, key = make_cert(d)
            other = os.path.join(d, "other")
            os.mkdir(other)
            _, key2 = make_cert(other)
            garbage = os.path.join(d, "garbage.pem")
            with open(garbage, "w") as f:
                f.write("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
            for c, k in ((cert, key2), (garbage, key), (cert, os.path.join(d, "missing.pem")), (cert, garbage)):
                with self.subTest(cert=os.path.basename(c), key=os.path.relpath(k, d)):
                    p = subprocess.run([DESCENTD, "--listen", "127.0.0.1:0", "--tls-cert", c, "--tls-key", k],
                                       capture_output=True, text=True, timeout=30)
                    self.assertNotEqual(p.returncode, 0)
                    self.assertNotIn("listening", p.stdout)
                    self.assertTrue(p.stderr.strip())


if __name__ == "__main__":
    unittest.main()
