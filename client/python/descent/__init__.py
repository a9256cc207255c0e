"""descent: the Python client of descentd (torch.optim as a network service).

    import descent
    c = descent.Client("http://127.0.0.1:8080")
    c.create(name="m", algorithm="adam", tensors=[{"name": "w", "shape": [3]}])
    p = c.push("m", [0.1, -0.2, 0.3])          # Params {"w": [...]}, p.step == 1

Sparse tensors ("sparse": true, shape [V, D]) push and pull by rows:
    p = c.push("e", {"E": descent.Rows([3, 17], [[...D], [...D]])})   # p["E"]: Rows
    step, values = c.pull_rows("e", "E", [3, 17, 42])

Modules: descent.client (Client, Params), descent.rows (Rows), descent.wire (float32 buffers and
wire formats), descent.http (connections), descent.sharding (the sharding
rule and the fan-out pool), descent.errors, descent.tools, and
descent.torch (torch.optim's optimizers with the math on descentd; imports
torch).  Standard library only; numpy and torch are used when present.
See docs/python.md.
"""
from .client import Client, Params
from .errors import DescentError, DescentStepMismatch
from .rows import Rows
from .sharding import shard_plan, shard_ranges
from .tools import gradient_check, numeric_gradient
from .wire import global_norm

__version__ = "0.2.0"

__all__ = ["Client", "Params", "Rows", "DescentError", "DescentStepMismatch", "shard_ranges", "shard_plan",
           "global_norm", "numeric_gradient", "gradient_check"]
