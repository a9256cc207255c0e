"""test_log_faults: --durability log under kill -9 at random moments.

The concurrent history of test_history_check (8 clients pushing with
idempotency keys and reading one SGD instance whose every state decodes to
the exact set of pushes it holds), against a daemon in log mode with
snapshots every 0.3 s (so the log is also cut while it runs), killed with -9
20 times at random moments (0.25 to 0.8 s of load each) and once stopped
with SIGTERM.  The checker runs with a window of 0: after each restart the
state must hold every push acknowledged before the kill, and nothing else
than pushes that were attempted: none lost, none doubled, step and values
from the same moment.  Retries of the in-flight push after each restart must
replay, never apply twice.  The same history with a restart state missing
one acknowledged push, or a read missing one, is rejected.
"""
import random
import unittest

import history_check as hc
import test_history_check as thc
from harness import quick


class LogHistory(thc.ConcurrentHistory):
    phases = quick(20, 6)
    daemon_args = ("--durability", "log", "--snapshot-interval", "0.3")
    window = 0.0
    min_pushes, min_reads = quick(300, 40), quick(100, 20)  # sanitizer builds push slower

    def phase_length(self, k):
        return random.Random(7000 + k).uniform(0.25, 0.8)

    def test_concurrent_history_across_kill9(self):
        super().test_concurrent_history_across_kill9()
        # a restart that lost one push acknowledged before the kill is rejected
        restarts = [e for e in self.events if e["op"] == "restart" and not e["clean"]]
        for r in restarts:
            m = hc.decode(r["values"])[0] or 0
            acked = [p for p in self.events if p["op"] == "push" and p["ok"] and p["gen"] == r["gen"] - 1
                     and p["end"] < r["kill"] and m & hc.bit(p["id"])]
            if acked:
                break
        else:
            self.fail("no restart held an acknowledged push")
        i = acked[-1]["id"]
        values = list(r["values"])
        values[i // hc.PER_SLOT] -= 4 ** (i % hc.PER_SLOT)
        tampered = [dict(e, values=values, step=e["step"] - 1) if e is r else e for e in self.events]
        v = hc.check(tampered, window=0.0)
        self.assertTrue(any("lost" in x for x in v), v)


del thc  # the base class is run by test_history_check itself

if __name__ == "__main__":
    unittest.main()
