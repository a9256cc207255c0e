"""test_nginx: many instances behind one address.  Three daemons behind
Debian's nginx configured by contrib/nginx/descent-nginx.sh: instances
created through nginx land on one stable daemon (consistent hashing of the
name), stay there across an nginx reload, and with one daemon down the
instances on the others keep working (and none moves)."""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

from harness import ROOT, Daemon

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
SCRIPT = os.path.join(ROOT, "contrib", "nginx", "descent-nginx.sh")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def req(port, method, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request(method, path, body=None if body is None else json.dumps(body), headers={"Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
        return r.status, (json.loads(data) if data and r.getheader("Content-Type", "").startswith("application/json") else data)
    finally:
        c.close()


@unittest.skipIf(NGINX is None, "nginx is not installed (apt-get install nginx-light)")
class Nginx(unittest.TestCase):
    def setUp(self):
        self.daemons = [Daemon() for _ in range(3)]
        self.dir = tempfile.mkdtemp(prefix="descent-nginx-")
        os.chmod(self.dir, 0o777)  # nginx's workers may run as another user
        self.port = free_port()
        env = dict(os.environ, NGINX_PREFIX_DIR=self.dir)
        conf = subprocess.run([SCRIPT, "127.0.0.1:%d" % self.port] + ["127.0.0.1:%d" % d.port for d in self.daemons],
                              capture_output=True, text=True, env=env, check=True).stdout
        self.conf = os.path.join(self.dir, "descent.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.nginx = subprocess.Popen([NGINX, "-p", self.dir, "-c", self.conf, "-g", "daemon off;"],
                                      stderr=subprocess.PIPE, text=True)
        for _ in range(200):
            try:
                if req(self.port, "GET", "/healthz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.05)
        else:
            self.fail("nginx did not start: " + self.nginx.stderr.read())

    def tearDown(self):
        self.nginx.send_signal(signal.SIGQUIT)
        try:
            self.nginx.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.nginx.kill()
            self.nginx.wait()
        self.nginx.stderr.close()
        for d in self.daemons:
            if d.proc.poll() is None:
                d.stop()
            d.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)

    def where(self, name):
        """Indices of the daemons that hold instance name."""
        return [i for i, d in enumerate(self.daemons) if d.req("GET", "/v1/optimizers/" + name)[0] == 200]

    def test_routing_reload_and_a_daemon_down(self):
        names = ["exp-%02d" % i for i in range(24)]
        for n in names:
            st, body = req(self.port, "PUT", "/v1/optimizers/" + n,
                           {"algorithm": "sgd", "hyper": {"lr": 1.0}, "tensors": [{"name": "w", "shape": [1]}]})
            self.assertEqual(st, 201, body)
        home = {}
        for n in names:
            w = self.where(n)
            self.assertEqual(len(w), 1, (n, w))
            home[n] = w[0]
        self.assertGreater(len(set(home.values())), 1, "hashing spreads the names over the daemons")
        # every request for a name goes to its daemon
        for n in names:
            st, body = req(self.port, "POST", "/v1/optimizers/%s/step" % n, {"grads": [1]})
            self.assertEqual((st, body["params"]["w"]), (200, [-1]))
        for i, d in enumerate(self.daemons):
            st, body = req(self.port, "GET", "/daemons/%d/v1/optimizers" % i)
            self.assertEqual(sorted(o["name"] for o in body["optimizers"]), sorted(n for n in names if home[n] == i))
            self.assertEqual(req(self.port, "GET", "/healthz/%d" % i), (200, {"status": "ok"}))
        st, body = req(self.port, "POST", "/v1/optimizers", {"name": "x"})
        self.assertEqual((st, body["error"]["code"]), (400, "bad_request"))
        # a reload keeps every name on its daemon
        subprocess.run([NGINX, "-p", self.dir, "-c", self.conf, "-s", "reload"], check=True, capture_output=True)
        time.sleep(0.5)
        for n in names:
            st, body = req(self.port, "POST", "/v1/optimizers/%s/step" % n, {"grads": [1]})
            self.assertEqual((st, body["step"], body["params"]["w"]), (200, 2, [-2]), n)
        # one daemon down: the others' instances keep working, nothing moves
        down = home[names[0]]
        self.daemons[down].stop()
        for n in names:
            st, body = req(self.port, "POST", "/v1/optimizers/%s/step" % n, {"grads": [1]})
            if home[n] == down:
                self.assertEqual(st, 502, n)
            else:
                self.assertEqual((st, body["step"]), (200, 3), n)
        self.assertEqual(req(self.port, "GET", "/healthz/%d" % down)[0], 502)


if __name__ == "__main__":
    unittest.main()
