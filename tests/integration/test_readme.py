"""test_readme: the README's quick-start commands work as written against a
fresh daemon and give the reply the README shows."""
import json
import os
import re
import subprocess
import unittest

from harness import ROOT, DaemonTest


class Readme(DaemonTest):
    def test_quick_start(self):
        with open(os.path.join(ROOT, "README.md")) as f:
            text = f.read()
        blocks = re.findall(r"```(\w*)\n(.*?)```", text, re.S)
        curl = [b for lang, b in blocks if lang == "sh" and "curl" in b]
        self.assertEqual(len(curl), 1, "one block of curl commands in the README")
        want = [b for lang, b in blocks if lang == "json"][0]
        script = curl[0].replace("http://127.0.0.1:8080", self.d.url)
        out = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        lines = out.stdout.strip().split("\n")      # one reply per line
        self.assertEqual(len(lines), 2, out.stdout)
        self.assertEqual(json.loads(lines[0])["name"], "demo")
        self.assertEqual(json.loads(lines[1]), json.loads(want))


if __name__ == "__main__":
    unittest.main()
