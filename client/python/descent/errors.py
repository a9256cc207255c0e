"""descent.errors: the exceptions every part of the package raises.

Every refusal is a DescentError with .status (the HTTP status, None when the
daemon could not be reached), .code (the daemon's snake_case code, see
proto/errors.md), .message and .step (the instance's step when the daemon
sent one).  Checks the client makes itself use the code the daemon would.
"""
from typing import List, Optional, Sequence

__all__ = ["DescentError", "DescentStepMismatch"]


class DescentError(Exception):
    """A refused or failed request: .status (HTTP status, None when the daemon
    could not be reached), .code (snake_case), .message, .step (or None)."""

    def __init__(self, status: Optional[int], code: str, message: str, step: Optional[int] = None,
                 url: Optional[str] = None, shards: Optional[List[str]] = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.step = step
        self.url = url
        self.shards = shards
        super().__init__("%s %s: %s" % (status if status is not None else "-", code, message))

    def __reduce__(self):  # picklable across multiprocessing
        return (self.__class__._rebuild, (self.status, self.code, self.message, self.step, self.url, self.shards))

    @classmethod
    def _rebuild(cls, status, code, message, step, url, shards):
        e = DescentError.__new__(cls)
        DescentError.__init__(e, status, code, message, step, url, shards)
        return e


class DescentStepMismatch(DescentError):
    """The shards of one instance are at different steps (.steps, one per shard)."""

    def __init__(self, name: str, urls: Sequence[str], steps: Sequence[int], what: str) -> None:
        self.steps = list(steps)
        self.urls = list(urls)
        self._args = (name, list(urls), list(steps), what)
        where = ", ".join("shard %d (%s) at step %s" % (k, u, s) for k, (u, s) in enumerate(zip(urls, steps)))
        msg = ("the shards of '%s' are out of step after %s: %s; bring them back into line by importing one "
               "state into every shard (import_state with a document exported at one step)" % (name, what, where))
        super().__init__(409, "step_mismatch", msg)

    def __reduce__(self):
        return (self.__class__, self._args)
