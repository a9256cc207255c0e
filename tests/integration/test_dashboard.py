"""test_dashboard: the dashboard page in a real browser (Debian's chromium,
headless): it lists the instances with step and workers, draws the selected
instance's loss and gradient-norm curves from /history, shows its
hyperparameters, runs the playground and draws one trajectory per optimizer
over the objective.  Curves as people read them in TensorBoard: the whole run
(downsampled buckets) or the last 1024 steps, smoothing (the EMA, checked
against its value computed here), a log scale that changes the axis labels,
numbered ticks, and several instances' loss overlaid.  With no instance, a
curl line that creates one (run here, as written); the playground runs on
load; the token box's placeholder and the objective menu fit their text.
Screenshots are saved as test artifacts ($DESCENT_ARTIFACTS, default
<build>/artifacts/dashboard*.png)."""
import html.parser
import json
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

    def page(self, fragment):
        dom = Dom()
        dom.feed(self.chromium(self.d.url + "/#" + fragment, "--dump-dom"))
        return dom

    def screenshot(self, fragment, name):
        artifacts = os.environ.get("DESCENT_ARTIFACTS", os.path.join(ROOT, BUILD, "artifacts"))
        os.makedirs(artifacts, exist_ok=True)
        shot = os.path.join(artifacts, name)
        if os.path.exists(shot):
            os.unlink(shot)
        self.chromium(self.d.url + "/#" + fragment, "--window-size=1400,1300", "--screenshot=" + shot)
        with open(shot, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
        self.assertGreater(os.path.getsize(shot), 20000)

    def ticks(self, dom, chart, axis):
        """The numbers on a chart's axis, in document order (the y axis bottom up)."""
        svg = dom.find(_tag="svg", id=chart)[0]
        i = dom.elements.index(svg)
        out = []
        for e in dom.elements[i + 1:]:
            if e["_tag"] == "svg":
                break
            if e["_tag"] == "text" and e.get("class") == "tick-" + axis:
                t = e["_text"]
                out.append(float(t[:-1]) * 1000 if t.endswith("k") else float(t))
        return out, svg

    def push_run(self, name, n, loss):
        for k in range(1, n + 1):
            st, out, _ = self.d.req("POST", "/v1/optimizers/%s/step?params=none" % name,
                                    {"grads": [1.0 / k ** 0.5, -0.5], "loss": loss(k)})
            self.assertEqual(st, 200, out)

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

        dom = self.page("select=svm&playground=ravine&smooth=0")
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
        self.assertEqual(dom.find(_tag="path", class_="loss-smooth"), [])   # smoothing 0: the raw curve only
        self.assertEqual(float(loss[0]["data-last"]), 10.0 / 12)
        # numbered ticks: steps 1..12 on x, the loss 10/12..10 on y, increasing, evenly spaced
        xs, _ = self.ticks(dom, "chart-loss", "x")
        ys, svg = self.ticks(dom, "chart-loss", "y")
        self.assertEqual(svg.get("data-scale"), "linear")
        self.assertGreaterEqual(len(xs), 3)
        self.assertTrue(all(1 <= x <= 12 and x == int(x) for x in xs), xs)
        self.assertGreaterEqual(len(ys), 3)
        self.assertEqual(ys, sorted(ys))
        self.assertTrue(0.5 <= ys[0] <= 2 and 8 <= ys[-1] <= 10.5, ys)
        steps = {round(b - a, 9) for a, b in zip(ys, ys[1:])}
        self.assertEqual(len(steps), 1, ys)
        hyper = {e["data-hyper"] for e in dom.find(_tag="tr") if "data-hyper" in e}
        self.assertTrue({"lr", "betas", "eps", "weight_decay", "amsgrad"} <= hyper)
        self.assertIn("svm", dom.find(_tag="h2", id="detail-title")[0]["_text"])
        workers = {e["data-worker"] for e in dom.find(_tag="tr") if "data-worker" in e}
        self.assertEqual(workers, {"w0", "w1", "w2"})
        trajs = {e["data-algorithm"]: int(e["data-points"]) for e in dom.find(_tag="path", class_="traj")}
        self.assertEqual(set(trajs), {"sgd", "momentum", "rmsprop", "adam"})
        self.assertTrue(all(n == 101 for n in trajs.values()), trajs)
        self.assertEqual(dom.find(_tag="section", id="playground")[0].get("data-ran"), "ravine")

    def test_whole_run_smoothing_log_scale_and_overlay(self):
        for name in ("long", "b", "c"):
            self.create(name, "sgd", hyper={"lr": 0.001}, tensors=[{"name": "w", "shape": [2]}])
        n = 1500   # past the 1024-step ring: the whole run is 750 buckets of 2 steps
        self.push_run("long", n, lambda k: 100.0 / k)
        self.push_run("b", 40, lambda k: 50.0 / k)
        self.push_run("c", 30, lambda k: 20.0 / k)

        # the whole run (the default), three runs overlaid: one point per bucket, ticks past the ring's start
        dom = self.page("select=long&compare=b,c&smooth=0")
        raw = {p["data-name"]: int(p["data-points"]) for p in dom.find(_tag="path", class_="loss-line")}
        self.assertEqual(raw, {"long": 750, "b": 40, "c": 30})
        self.assertEqual(dom.find(_tag="path", class_="loss-smooth"), [])
        self.assertEqual(len(dom.find(_tag="path", class_="band")), 1)   # min..max of long's 2-step buckets
        self.assertEqual({e["data-run"] for e in dom.elements if "data-run" in e}, {"long", "b", "c"})   # the legend
        boxes = {e["data-compare"]: "checked" in e for e in dom.find(_tag="input") if "data-compare" in e}
        self.assertEqual(boxes, {"long": False, "b": True, "c": True})
        self.assertEqual(len(dom.find(_tag="path", class_="norm-line")), 1)   # the gradient norm: the selected run
        info = dom.find(_tag="span", id="range-info")[0]["_text"]
        self.assertIn("1500 steps", info)
        self.assertIn("per 2 steps", info)
        xs, _ = self.ticks(dom, "chart-loss", "x")
        self.assertLessEqual(min(xs), 500)
        self.assertGreaterEqual(max(xs), 1400)
        linear, svg = self.ticks(dom, "chart-loss", "y")
        self.assertEqual(svg.get("data-scale"), "linear")
        self.assertTrue(all(t % 10 == 0 for t in linear), linear)   # 0, 20, 40 ... (bucket means up to 75)

        # the log scale toggle: the y labels become the powers of ten the losses span (100/1500 .. 75);
        # smoothing: TensorBoard's debiased EMA of the bucket means, over the faint raw curves
        st, hist, _ = self.d.req("GET", "/v1/optimizers/long/history?range=all")
        self.assertEqual(st, 200)
        w, last, m = 0.9, 0.0, 0
        for b in hist["whole"]["buckets"]:
            last = last * w + (1 - w) * b["loss"]
            m += 1
        want = last / (1 - w ** m)
        dom = self.page("select=long&compare=b,c&smooth=0.9&log=1")
        logt, svg = self.ticks(dom, "chart-loss", "y")
        self.assertEqual(svg.get("data-scale"), "log")
        self.assertEqual(logt, [0.1, 1, 10])
        self.assertNotEqual(logt, linear)
        sm = {p["data-name"]: p for p in dom.find(_tag="path", class_="loss-smooth")}
        self.assertEqual(set(sm), {"long", "b", "c"})
        self.assertEqual(sm["long"]["data-points"], "750")
        self.assertAlmostEqual(float(sm["long"]["data-last"]), want, delta=1e-12 * want)
        self.assertNotAlmostEqual(float(sm["long"]["data-last"]), hist["whole"]["buckets"][-1]["loss"], places=3)
        self.assertEqual(dom.find(_tag="output", id="smooth-val")[0]["_text"], "0.90")

        # the last 1024 steps only
        dom = self.page("select=long&smooth=0&range=recent")
        self.assertEqual([p["data-points"] for p in dom.find(_tag="path", class_="loss-line")], ["1024"])
        xs, _ = self.ticks(dom, "chart-loss", "x")
        self.assertGreaterEqual(min(xs), n - 1023)
        self.assertIn("the last 1024 steps", dom.find(_tag="span", id="range-info")[0]["_text"])
        self.screenshot("select=long&compare=b,c&log=1&playground=ravine", "dashboard.png")

    def test_empty_state_first_playground_run_and_text_that_fits(self):
        dom = self.page("measure")
        hint = dom.find(_tag="td", id="empty-hint")
        self.assertEqual(len(hint), 1)
        self.assertIn("No instances yet", hint[0]["_text"])
        curl = dom.find(_tag="code", id="create-curl")[0]["_text"]
        self.assertTrue(curl.startswith("curl -sS -X POST " + self.d.url + "/v1/optimizers "), curl)
        self.assertEqual([e for e in dom.find(_tag="tr") if "data-instance" in e], [])
        # the line works as written
        out = subprocess.run(["bash", "-c", curl + " -w '\\n%{http_code}'"], capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        body, code = out.stdout.rsplit("\n", 1)
        self.assertEqual(code, "201", body)
        self.assertEqual(json.loads(body)["name"], "demo")
        st, lst, _ = self.d.req("GET", "/v1/optimizers")
        self.assertEqual([o["name"] for o in lst["optimizers"]], ["demo"])
        # the playground ran on load, with nothing pressed and no #playground
        self.assertEqual(dom.find(_tag="section", id="playground")[0].get("data-ran"), "ravine")
        trajs = {e["data-algorithm"]: int(e["data-points"]) for e in dom.find(_tag="path", class_="traj")}
        self.assertEqual(set(trajs), {"sgd", "momentum", "rmsprop", "adam"})
        self.assertEqual(len(dom.find(_tag="path", class_="pg-loss-line")), 4)
        # nothing cut off: each text's width fits its box
        self.assertEqual(dom.find(_tag="body")[0].get("data-measured"), "1")
        for ident in ("token", "pg-objective"):
            e = [x for x in dom.elements if x.get("id") == ident][0]
            text, box = float(e["data-text-px"]), float(e["data-box-px"])
            self.assertGreater(text, 50, ident)
            self.assertLessEqual(text, box, "%s: the text needs %.1f px, the box has %.1f" % (ident, text, box))
        self.d.req("DELETE", "/v1/optimizers/demo")
        self.screenshot("", "dashboard-empty.png")


if __name__ == "__main__":
    unittest.main()
