"""test_py_docs: docs/python.md runs as written.  Every ```python block runs,
in order, in one /usr/bin/python3 interpreter (numpy and torch) against a
fresh daemon (its address replaces http://127.0.0.1:8080), and what each block
prints must equal the ```text block right after it (if there is one)."""
import json
import os
import re
import subprocess
import unittest

from harness import ROOT, Daemon

PY = "/usr/bin/python3"
DOC = os.path.join(ROOT, "docs", "python.md")

RUNNER = r'''
import io, json, sys, contextlib
sys.path.insert(0, %r)
blocks = json.load(sys.stdin)
env = {"__name__": "__doc__"}
for i, src in enumerate(blocks):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(src, "docs/python.md block %%d" %% i, "exec"), env)
    print(json.dumps(buf.getvalue()))
''' % os.path.join(ROOT, "client", "python")


def blocks(text):
    """[(python source, expected output or None)] in document order."""
    out = []
    parts = re.findall(r"```(\w*)\n(.*?)```", text, re.S)
    for k, (lang, body) in enumerate(parts):
        if lang == "python":
            nxt = parts[k + 1] if k + 1 < len(parts) else None
            out.append((body, nxt[1] if nxt and nxt[0] == "text" else None))
    return out


class PythonDoc(unittest.TestCase):
    def test_examples_run_as_written(self):
        d = Daemon()
        try:
            text = open(DOC, encoding="utf-8").read()
            bl = blocks(text)
            self.assertGreaterEqual(len(bl), 6)
            srcs = [s.replace("http://127.0.0.1:8080", d.url) for s, _ in bl]
            r = subprocess.run([PY, "-c", RUNNER], input=json.dumps(srcs), capture_output=True, text=True,
                               timeout=300)
            self.assertEqual(r.returncode, 0, r.stderr[-3000:])
            got = [json.loads(line) for line in r.stdout.splitlines()]
            self.assertEqual(len(got), len(bl))
            for i, ((src, want), out) in enumerate(zip(bl, got)):
                if want is not None:
                    self.assertEqual(out, want, "block %d:\n%s" % (i, src))
        finally:
            d.stop()
            d.cleanup()


if __name__ == "__main__":
    unittest.main()
