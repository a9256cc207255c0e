#!/usr/bin/env python3
"""run: runs every tests/integration/test_*.py module, a few at a time, each
in its own process, and fails if any fails.

    python3 tests/integration/run.py [--quick] [-j N] [module ...]

--quick sets DESCENT_QUICK=1 (tests shorten their long loops; used for the
sanitizer build).  DESCENT_BUILD picks the build directory.
"""
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv):
    jobs = 3
    quick = False
    names = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--quick":
            quick = True
        elif a == "-j":
            i += 1
            jobs = int(argv[i])
        else:
            names.append(a[:-3] if a.endswith(".py") else a)
        i += 1
    if not names:
        names = sorted(f[:-3] for f in os.listdir(HERE) if f.startswith("test_") and f.endswith(".py"))
    env = dict(os.environ)
    if quick:
        env["DESCENT_QUICK"] = "1"
    env["PYTHONPATH"] = HERE + os.pathsep + env.get("PYTHONPATH", "")
    pending = list(names)
    running = {}
    failed = []
    t0 = time.time()
    while pending or running:
        while pending and len(running) < jobs:
            n = pending.pop(0)
            p = subprocess.Popen([sys.executable, "-m", "unittest", "-v", n], cwd=HERE, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            running[n] = (p, time.time())
        for n, (p, start) in list(running.items()):
            if p.poll() is None:
                continue
            out = p.stdout.read()
            p.stdout.close()
            del running[n]
            status = "ok" if p.returncode == 0 else "FAILED"
            print("integration %-28s %-6s %6.1fs" % (n, status, time.time() - start), flush=True)
            if p.returncode != 0:
                failed.append(n)
                print(out, flush=True)
        time.sleep(0.05)
    print("integration: %d modules, %d failed, %.1fs%s" % (len(names), len(failed), time.time() - t0,
                                                          " (quick)" if quick else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
