"""descent_client: the Python client of descent, kept for existing users.

The client is now the package `descent` (client/python/descent/, installable
with `pip install ./client/python`); this module re-exports its public API so
that `from descent_client import Client, DescentError` keeps working.  Copy
the `descent/` directory next to this file, or install the package.
See docs/python.md.
"""
import os
import sys

try:
    import descent as _descent  # an installed package, or one next to this file
except ImportError:  # pragma: no cover - run from a copy without the package on the path
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import descent as _descent

from descent import (Client, DescentError, DescentStepMismatch, Params, global_norm, gradient_check,  # noqa: E402
                     numeric_gradient, shard_plan, shard_ranges)

__all__ = _descent.__all__
