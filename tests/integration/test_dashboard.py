"""test_dashboard: the dashboard page in a real browser (Debian's chromium,
headless): it lists the instances with step and workers, draws the selected
instance's loss and gradient-norm curves from /history, shows its
hyperparameters, runs the playground and draws one trajectory per optimizer
over the objective.  A screenshot is saved as a test artifact
($DESCENT_ARTIFACTS, default <build>/artifacts/dashboard.png)."""
import html.parser
import os
import shutil
import subprocess
import tempfile
import unittest

from harness import BUILD, ROOT, DaemonTest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--virtual-time-budget=8000"]


class Dom(html.parser.HTMLParser):
    """Collects every element's attributes and the text inside marked rows."""

    def __init__(self):
        super().__init__()
        self.elements = []
        self.stack = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        a["_tag"] = tag
        a["_text"] = ""
        self.elements.append(a)
        if tag not in ("br", "img", "input", "meta", "link", "path", "line", "circle", "image"):
            self.stack.append(a)

    def handle_endtag(self, tag):
        while self.stack:
            e = self.stack.pop()
            if e["_tag"] == tag:
                break

    def handle_data(self, data):
        for e in self.stack:
            e["_text"] += data

    def find(self, **kw):
        return [e for e in self.elements if all(e.get(k.rstrip("_")) == v for k, v in kw.items())]


@unittest.skipIf(os.environ.get("DESCENT_NO_BROWSER") == "1", "DESCENT_NO_BROWSER=1")
class Dashboard(DaemonTest):
    def chromium(self, url, *extra):
        self.assertIsNotNone(CHROMIUM, "chromium is not installed (make test installs it)")
        profile = tempfile.mkdtemp(prefix="descent-chromium-")
        try:
            out = subprocess.run([CHROMIUM] + FLAGS + ["--user-data-dir=" + profile] + list(extra) + [url],
                                 capture_output=True, text=True, timeout=120)
        finally:
            shutil.rmtree(profile, ignore_errors=True)
        self.assertEqual(out.returncode, 0, out.stderr[-2000:])
        return out.stdout

    def test_page_shows_instances_curves_and_playground(self):
        self.create("svm", "adam", hyper={"lr": 0.01}, tensors=[{"name": "W", "shape": [4]}])
        self.create("other", "sgd", tensors=[{"name": "w", "shape": [2]}])
        for i in range(12):
            st, _, _ = self.d.req("POST", "/v1/optimizers/svm/step?worker=w%d" % (i % 3),
                                  {"grads": [1, -2, 0.5, i], "loss": 10.0 / (i + 1)})
            self.assertEqual(st, 200)
        st, page, h = self.d.req("GET", "/", raw=True)
        self.assertEqual(st, 200)
        self.assertTrue(h["content-type"].startswith("text/html"))
        self.assertNotIn(b"http://", page.replace(b"http://www.w3.org/2000/svg", b""))  # self-contained: no CDN

        url = self.d.url + "/#select=svm&playground=ravine"
        dom = Dom()
        dom.feed(self.chromium(url, "--dump-dom"))
        rows = {e["data-instance"]: e for e in dom.find(_tag="tr") if "data-instance" in e}
        self.assertEqual(set(rows), {"svm", "other"})
        cells = [e for e in dom.elements if e["_tag"] == "td"]
        step_cells = [e["_text"] for e in cells if e.get("class") == "num step"]
        self.assertIn("12", step_cells)
        self.assertIn("0", step_cells)
        self.assertIn("3", [e["_text"] for e in cells if e.get("class") == "num workers"])
        loss = dom.find(_tag="path", class_="loss-line")
        norm = dom.find(_tag="path", class_="norm-line")
        self.assertEqual(len(loss), 1)
        self.assertEqual(loss[0]["data-points"], "12")
        self.assertEqual(norm[0]["data-points"], "12")
        hyper = {e["data-hyper"] for e in dom.find(_tag="tr") if "data-hyper" in e}
        self.assertTrue({"lr", "betas", "eps", "weight_decay", "amsgrad"} <= hyper)
        self.assertIn("svm", dom.find(_tag="h2", id="detail-title")[0]["_text"])
        workers = {e["data-worker"] for e in dom.find(_tag="tr") if "data-worker" in e}
        self.assertEqual(workers, {"w0", "w1", "w2"})
        trajs = {e["data-algorithm"]: int(e["data-points"]) for e in dom.find(_tag="path", class_="traj")}
        self.assertEqual(set(trajs), {"sgd", "momentum", "rmsprop", "adam"})
        self.assertTrue(all(n == 101 for n in trajs.values()), trajs)
        self.assertEqual(dom.find(_tag="section", id="playground")[0].get("data-ran"), "ravine")

        artifacts = os.environ.get("DESCENT_ARTIFACTS", os.path.join(ROOT, BUILD, "artifacts"))
        os.makedirs(artifacts, exist_ok=True)
        shot = os.path.join(artifacts, "dashboard.png")
        if os.path.exists(shot):
            os.unlink(shot)
        self.chromium(url, "--window-size=1400,1300", "--screenshot=" + shot)
        with open(shot, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
        self.assertGreater(os.path.getsize(shot), 20000)


if __name__ == "__main__":
    unittest.main()
