"""test_cli_sparse: `descent rows` and `descent push-rows` (sparse tensors
by row) against real daemons, on one daemon and sharded over two: exact
values of sgd with a repeated row (applied in the order sent, as torch
does), never-touched rows at their init, --json and --output, `show`
marking sparse tensors, and refusals (a row >= V, a wrong count of
numbers, no such sparse tensor) exiting non-zero with nothing changed."""
import json
import struct
import unittest

from harness import Daemon
from test_cli import run

SPEC = json.dumps({"name": "m", "algorithm": "sgd", "hyper": {"lr": 0.5},
                   "tensors": [{"name": "b", "shape": [1]},
                               {"name": "E", "shape": [6, 2], "sparse": True, "init": {"constant": 1}}]})


class CliSparse(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ds = [Daemon() for _ in range(3)]
        cls.urls = [cls.ds[0].url, cls.ds[1].url + "," + cls.ds[2].url]

    @classmethod
    def tearDownClass(cls):
        for d in cls.ds:
            d.stop()
            d.cleanup()

    def ok(self, url, *args, stdin=None, binary=False):
        rc, out, err = run(list(args), url=url, stdin=stdin, binary=binary)
        self.assertEqual(rc, 0, "descent %s: %s %s" % (" ".join(args), out, err))
        return out

    def test_push_rows_and_rows(self):
        for url in self.urls:
            with self.subTest(url=url):
                self.ok(url, "create", SPEC)
                self.addCleanup(run, ["delete", "m"], url)
                # rows 5, 0, 5 (5 twice: 1 - 0.5*1 - 0.5*3 = -1), then b's gradient 10
                self.assertEqual(self.ok(url, "push-rows", "m", "E", "5,0,5", "-", stdin="1 1 2 2 3 3 10"),
                                 "m: step 1\n")
                self.assertEqual(self.ok(url, "rows", "m", "E", "0,1,5"), "step 1\n0: 0 0\n1: 1 1\n5: -1 -1\n")
                self.assertEqual(json.loads(self.ok(url, "--json", "rows", "m", "E", "5,4")),
                                 {"step": 1, "rows": [5, 4], "values": [[-1, -1], [1, 1]]})
                self.assertEqual(self.ok(url, "pull", "m"), "step 1\nb [1]: -5\n")
                out = self.ok(url, "--params", "push-rows", "m", "E", "4", "-", stdin="0.5 -0.5 0")
                self.assertEqual(out, "step 2\n4: 0.75 1.25\n")
                raw = self.ok(url, "--binary", "--output", "-", "rows", "m", "E", "4", binary=True)
                self.assertEqual(struct.unpack("<2f", raw), (0.75, 1.25))
                self.assertIn("sparse (by row)", self.ok(url, "show", "m"))

    def test_refusals_change_nothing(self):
        for url in self.urls:
            with self.subTest(url=url):
                self.ok(url, "create", SPEC)
                self.addCleanup(run, ["delete", "m"], url)
                for args, stdin, words in ((["push-rows", "m", "E", "6", "-"], "1 1 0", "out of range"),
                                           (["push-rows", "m", "E", "1", "-"], "1 1", "expected 3"),
                                           (["push-rows", "m", "X", "1", "-"], "1 1 0", "no sparse tensor"),
                                           (["push-rows", "m", "b", "0", "-"], "1 0", "no sparse tensor"),
                                           (["rows", "m", "E", "1,x"], None, "row ids"),
                                           (["rows", "m", "E", "9"], None, "out of range")):
                    rc, out, err = run(args, url=url, stdin=stdin)
                    self.assertNotEqual(rc, 0, args)
                    self.assertIn(words, err, args)
                self.assertEqual(self.ok(url, "rows", "m", "E", "0,1"), "step 0\n0: 1 1\n1: 1 1\n")


if __name__ == "__main__":
    unittest.main()
