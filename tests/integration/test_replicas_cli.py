"""test_replicas_cli: the descent CLI (libdescent) and the Python package on
a three-member group, given the members' list: "--url a,b,c" (recognised as
one group by GET /v1/cluster at start, not three shards) and
DESCENT_URL="a|b|c".  A push without --key after the leader is killed -9
fails over to the new leader and is applied once; a pull through the leader
sees every push (exact values and step).  The Python Client takes the
"|" spelling too.
"""
import json
import os
import subprocess
import sys
import unittest

from harness import BUILD, ROOT
from replicas import Group

sys.path.insert(0, os.path.join(ROOT, "client", "python"))
import descent  # noqa: E402

CLI = os.path.join(ROOT, BUILD, "bin", "descent")


class CliFailover(unittest.TestCase):
    def run_cli(self, args, url=None, env_url=None, stdin=None):
        env = dict(os.environ)
        env.pop("DESCENT_URL", None)
        if env_url:
            env["DESCENT_URL"] = env_url
        pre = ["--url", url] if url else []
        r = subprocess.run([CLI] + pre + list(args), input=stdin, capture_output=True, text=True, timeout=60, env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def test_member_list_and_failover(self):
        g = Group(3)
        try:
            lead = g.wait_leader()
            order = [d for d in g.live() if d is not lead] + [lead]
            comma = ",".join(d.url for d in order)
            bars = "|".join(d.url for d in order)
            self.run_cli(["create", json.dumps({"name": "c", "algorithm": "sgd", "hyper": {"lr": 1},
                                                "tensors": [{"name": "w", "shape": [2]}]})], url=comma)
            self.run_cli(["push", "c", "-"], url=comma, stdin="1 2")
            # one group, not three shards: the instance is whole on the leader
            st, body, _ = lead.req("GET", "/v1/optimizers/c")
            self.assertEqual((st, body["size"]), (200, 2))
            g.kill9(lead)
            # the list now starts with a live follower and ends with the dead leader; the
            # push waits out the election (no_leader) and lands on the new leader once
            self.run_cli(["push", "c", "-"], env_url=bars, stdin="0.5 0.5")
            out = json.loads(self.run_cli(["--json", "pull", "c"], url=comma))
            self.assertEqual((out["step"], out["params"]["w"]), (2, [-1.5, -2.5]))
            new = g.wait_leader()
            self.assertIsNot(new, lead)
            st, body, _ = new.req("GET", "/v1/optimizers/c/params")
            self.assertEqual((body["step"], body["params"]["w"]), (2, [-1.5, -2.5]))
            # the Python client with libdescent's spelling
            c = descent.Client(bars)
            self.assertEqual(c.push("c", [1.0, 1.0])["w"], [-2.5, -3.5])
            self.assertEqual(c.pull("c")["w"], [-2.5, -3.5])
        finally:
            g.stop()


if __name__ == "__main__":
    unittest.main()
