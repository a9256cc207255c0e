"""py_arrays: the zero-copy array paths of descent.Client, run by
test_py_package.py under /usr/bin/python3 (numpy and torch).  Prints "ok"."""
import os
import sys
from array import array

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "client", "python"))
import numpy as np  # noqa: E402
import torch  # noqa: E402

from descent import Client, DescentError  # noqa: E402

c = Client(sys.argv[1])
c.create(name="arr", algorithm="sgd", hyper={"lr": 1.0},
         tensors=[{"name": "W", "shape": [2, 3], "values": [[1, 2, 3], [4, 5, 6]]}, {"name": "b", "shape": [1]}])
g = np.arange(7, dtype=np.float32) * 0.5
p = c.push("arr", g, kind="numpy")                           # flat numpy in, numpy out
assert p.step == 1 and p["W"].shape == (2, 3) and p["b"].shape == (1,), p
assert np.array_equal(p.flat(), np.array([1, 1.5, 2, 2.5, 3, 3.5, -3], dtype=np.float32)), p.flat()
t = c.push("arr", {"W": torch.ones(2, 3), "b": torch.tensor([2.0])}, kind="torch")  # dict of tensors
assert isinstance(t["W"], torch.Tensor) and t["W"].shape == (2, 3) and t["b"].item() == -5.0, t
# a non-contiguous tensor, a float64 array, array('f') and a memoryview
c.push("arr", {"W": torch.ones(3, 2).t(), "b": np.float64([1.0])})
c.push("arr", array("f", [0] * 6 + [1]))
c.push("arr", memoryview(np.zeros(7, dtype=np.float32)))
# scalars for a one-element tensor (issue 13)
c.push("arr", {"W": np.zeros((2, 3), np.float32), "b": 0.5})
c.push("arr", {"W": [0] * 6, "b": np.float32(0.5)})
try:
    c.push("arr", {"W": 0.5, "b": 0.5})
    raise AssertionError("a scalar for a 6-float tensor was accepted")
except DescentError as e:
    assert (e.status, e.code) == (400, "bad_length"), e
# out=: straight into a preallocated tensor and into a dict of numpy arrays
out = torch.empty(7)
q = c.pull("arr", out=out)
assert q.step == 7 and q.flat() is out, q
want = [-1, -0.5, 0, 0.5, 1, 1.5, -8]
assert out.tolist() == want, out
outs = {"W": np.empty((2, 3), np.float32), "b": np.empty(1, np.float32)}
r = c.push("arr", np.zeros(7, np.float32), out=outs)
assert r["W"] is outs["W"] and outs["W"].ravel().tolist() == want[:6] and outs["b"].tolist() == [-8.0], outs
try:
    c.pull("arr", out=np.empty(7, np.float64))
    raise AssertionError("a float64 out= was accepted")
except ValueError:
    pass
assert c.pull("arr") == {"W": want[:6], "b": [-8.0]}                   # lists by default
assert c.pull("arr", binary=False, kind="numpy")["W"].tolist() == [want[:3], want[3:6]]
print("ok")
