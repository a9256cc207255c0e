"""test_torch_sparse: descent.torch with sparse gradients against torch.optim
run locally, bit for bit: a small model (nn.Embedding(sparse=True) or
nn.EmbeddingBag(mode="sum", sparse=True) and a dense layer above it) over
batches with repeated indices, for several steps:

- SGD (with a StepLR schedule: lr PATCHed as torch's changes) and Adagrad
  (lr_decay) learn at the first step which parameters are sparse, hold the
  table as a sparse tensor on the daemon (checked in its description) and
  match torch.optim; their state_dict equals torch's;
- SparseAdam (the table) with Adam (the dense layer), as torch users pair
  them: parameters and state equal torch's; torch's state loaded into a
  fresh descent.torch.SparseAdam, and descent's into torch.optim.SparseAdam,
  both continue bit for bit;
- Adagrad on an Embedding and SparseAdam on an EmbeddingBag also over two
  daemons (a sharded instance, rows split by range).
The torch side runs under /usr/bin/python3 (this file, --cases)."""
import json
import os
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
PY = "/usr/bin/python3"


def have_torch():
    try:
        return subprocess.run([PY, "-c", "import torch"], capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


# ---- the cases (run by /usr/bin/python3 with torch) -----------------------------------

def cases(urls):
    sys.path.insert(0, os.path.join(HERE, "..", "..", "client", "python"))
    import torch
    import descent.torch as dt

    def model(bag):
        torch.manual_seed(0)
        emb = torch.nn.EmbeddingBag(20, 4, mode="sum", sparse=True) if bag else torch.nn.Embedding(20, 4, sparse=True)
        return torch.nn.ModuleDict({"emb": emb, "lin": torch.nn.Linear(4 if bag else 12, 3)})

    def loss(m, x, bag):
        y = m["lin"](m["emb"](x)) if bag else m["lin"](m["emb"](x).reshape(x.shape[0], -1))
        return y.square().mean()

    torch.manual_seed(1)
    xs = [torch.randint(0, 20, (5, 3)) for _ in range(6)]
    xs[0][0] = torch.tensor([2, 2, 2])   # a row three times in one batch
    xs[1][:, 0] = 7                      # and in every example

    def train(pairs, bag, batches, scheds=()):
        for x in batches:
            for m, opts in pairs:
                for o in opts:
                    o.zero_grad()
                loss(m, x, bag).backward()
                for o in opts:
                    o.step()
            for s in scheds:
                s.step()

    def same(a, b):
        return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))

    def same_state(s1, s2):
        if s1.keys() != s2.keys():
            return False
        for k in s1:
            for b in s1[k]:
                x, y = s1[k][b], s2[k].get(b)
                if isinstance(x, torch.Tensor) != isinstance(y, torch.Tensor):
                    return False
                if isinstance(x, torch.Tensor) and not torch.equal(x, y):
                    return False
                if not isinstance(x, torch.Tensor) and x != y:
                    return False
        return True

    def sparse_on_daemon(opt):
        c = opt.client
        return [[bool(t.get("sparse")) for t in c.describe(n)["tensors"]] for n in opt.instances]

    out = {}
    for where, url in (("one", urls[0]), ("sharded", urls[1:])):
        for alg in ("sgd", "adagrad"):
            for bag in (False, True):
                if where == "sharded" and (alg, bag) != ("adagrad", False):
                    continue
                m1, m2 = model(bag), model(bag)
                if alg == "sgd":
                    o1 = torch.optim.SGD(m1.parameters(), lr=0.2)
                    o2 = dt.SGD(m2.parameters(), lr=0.2, url=url, name="s-%s-%d" % (where, bag))
                    sc = [torch.optim.lr_scheduler.StepLR(o, 2, 0.5) for o in (o1, o2)]
                else:
                    o1 = torch.optim.Adagrad(m1.parameters(), lr=0.2, lr_decay=0.01)
                    o2 = dt.Adagrad(m2.parameters(), lr=0.2, lr_decay=0.01, url=url, name="a-%s-%d" % (where, bag))
                    sc = []
                train([(m1, [o1]), (m2, [o2])], bag, xs, sc)
                key = "%s_%s_%s" % (alg, "bag" if bag else "emb", where)
                out[key] = {"params": same(m1, m2), "state": same_state(o1.state_dict()["state"],
                                                                       o2.state_dict()["state"]),
                            "sparse": sparse_on_daemon(o2)}
                o2.delete_instances()
        for bag in (False, True):
            if where == "sharded" and not bag:
                continue
            m1, m2, m3, m4 = model(bag), model(bag), model(bag), model(bag)
            o1 = [torch.optim.SparseAdam(m1["emb"].parameters(), lr=0.05), torch.optim.Adam(m1["lin"].parameters(),
                                                                                         lr=0.05)]
            nm = "sa-%s-%d" % (where, bag)
            o2 = [dt.SparseAdam(m2["emb"].parameters(), lr=0.05, url=url, name=nm),
                  dt.Adam(m2["lin"].parameters(), lr=0.05, url=url, name=nm + "l")]
            train([(m1, o1), (m2, o2)], bag, xs[:4])
            st_ok = same_state(o1[0].state_dict()["state"], o2[0].state_dict()["state"])
            # torch's state into a fresh descent optimizer, descent's into torch
            m3.load_state_dict(m1.state_dict())
            m4.load_state_dict(m2.state_dict())
            o3 = [dt.SparseAdam(m3["emb"].parameters(), lr=0.05, url=url, name=nm + "c"),
                  dt.Adam(m3["lin"].parameters(), lr=0.05, url=url, name=nm + "cl")]
            o4 = [torch.optim.SparseAdam(m4["emb"].parameters(), lr=0.05), torch.optim.Adam(m4["lin"].parameters(),
                                                                                         lr=0.05)]
            for a, b in zip(o3, o1):
                a.load_state_dict(b.state_dict())
            for a, b in zip(o4, o2):
                a.load_state_dict(b.state_dict())
            train([(m1, o1), (m2, o2), (m3, o3), (m4, o4)], bag, xs[4:])
            out["sparse_adam_%s_%s" % ("bag" if bag else "emb", where)] = {
                "params": same(m1, m2), "state": st_ok, "sparse": sparse_on_daemon(o2[0]),
                "torch_into_descent": same(m1, m3), "descent_into_torch": same(m1, m4)}
            for o in o2 + o3:
                o.delete_instances()
    print(json.dumps(out))


# ---- the test ---------------------------------------------------------------------------

@unittest.skipUnless(have_torch(), "/usr/bin/python3 has no torch (make deps-test installs python3-torch)")
class TorchSparse(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        from harness import Daemon
        cls.ds = [Daemon() for _ in range(3)]
        r = subprocess.run([PY, os.path.abspath(__file__), "--cases"] + [d.url for d in cls.ds],
                           capture_output=True, text=True, timeout=600, cwd=HERE)
        cls.stderr = r.stderr
        lines = [x for x in r.stdout.splitlines() if x.startswith("{")]
        cls.results = json.loads(lines[-1]) if lines else {}

    @classmethod
    def tearDownClass(cls):
        for d in cls.ds:
            d.stop()
            d.cleanup()

    def check(self, key, sparse):
        r = self.results.get(key)
        self.assertIsNotNone(r, "%s did not run:\n%s" % (key, self.stderr[-3000:]))
        self.assertTrue(r["params"], "%s: parameters differ from torch.optim" % key)
        self.assertTrue(r["state"], "%s: state_dict differs from torch.optim's" % key)
        self.assertEqual(r["sparse"], sparse, key)
        return r

    def test_sgd_and_adagrad_learn_sparse_tensors(self):
        for alg, kind, where in (("sgd", "emb", "one"), ("sgd", "bag", "one"), ("adagrad", "emb", "one"),
                                 ("adagrad", "bag", "one"), ("adagrad", "emb", "sharded")):
                    # the table sparse on the daemon, the dense layer's weight and bias dense
                    self.check("%s_%s_%s" % (alg, kind, where), [[True, False, False]])

    def test_sparse_adam_and_state_dict_both_ways(self):
        for kind, where in (("emb", "one"), ("bag", "one"), ("bag", "sharded")):
                r = self.check("sparse_adam_%s_%s" % (kind, where), [[True]])
                self.assertTrue(r["torch_into_descent"], "torch's state did not continue on descent")
                self.assertTrue(r["descent_into_torch"], "descent's state did not continue in torch")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--cases":
        cases(sys.argv[2:])
    else:
        unittest.main()
