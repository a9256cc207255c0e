#!/usr/bin/env python3
"""run: runs every tests/integration/test_*.py module, a few at a time, each
in its own process, and fails if any fails.

    python3 tests/integration/run.py [--quick] [-j N] [--skip m1,m2] [module ...]

--quick sets DESCENT_QUICK=1 (tests shorten their long loops; used for the
sanitizer build).  DESCENT_BUILD picks the build directory.

Every reply the modules receive through harness.py is recorded under
$DESCENT_BUILD/openapi-replies/ (DESCENT_OPENAPI_RECORD), and once all have
run, openapi_check.py validates each against proto/openapi.yaml (status,
content type, headers, body); a reply the document does not describe fails
the run.  --no-openapi-check turns that off.
"""
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


SLOW = ["test_demo", "test_demo_sparse", "test_dashboard", "test_docs", "test_torch_optim", "test_body_memory",
        "test_client_python", "test_cli", "test_history_check", "test_async"]


def main(argv):
    jobs = 3
    quick = False
    check_replies = True
    skip = set()
    names = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--quick":
            quick = True
        elif a == "--no-openapi-check":
            check_replies = False
        elif a == "--skip":
            i += 1
            skip = set(x[:-3] if x.endswith(".py") else x for x in argv[i].split(",") if x)
        elif a == "-j":
            i += 1
            jobs = int(argv[i])
        else:
            names.append(a[:-3] if a.endswith(".py") else a)
        i += 1
    every = not names
    if not names:
        names = sorted(f[:-3] for f in os.listdir(HERE) if f.startswith("test_") and f.endswith(".py"))
        # the longest first, so that they do not finish last, alone
        names.sort(key=lambda n: (SLOW.index(n) if n in SLOW else len(SLOW), n))
    names = [n for n in names if n not in skip]
    env = dict(os.environ)
    if quick:
        env["DESCENT_QUICK"] = "1"
    env["PYTHONPATH"] = HERE + os.pathsep + env.get("PYTHONPATH", "")
    record = None
    if check_replies:
        root = os.path.abspath(os.path.join(HERE, "..", ".."))
        record = os.path.join(root, env.get("DESCENT_BUILD", "build"), "openapi-replies")
        shutil.rmtree(record, ignore_errors=True)
        os.makedirs(record)
        env["DESCENT_OPENAPI_RECORD"] = record
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
    if record:
        # the checker needs jsonschema and PyYAML: Debian's python3 has them (python3-jsonschema,
        # python3-yaml; deps.sh test), the python3 running this script may not (a pyenv one)
        py = sys.executable
        for cand in ("/usr/bin/python3", sys.executable):
            if os.path.exists(cand) and subprocess.run([cand, "-c", "import jsonschema, yaml"],
                                                       capture_output=True).returncode == 0:
                py = cand
                break
        t1 = time.time()
        cmd = [py, os.path.join(HERE, "openapi_check.py"), record]
        if every:
            cmd[2:2] = ["--min-records", "1000"]
        rc = subprocess.run(cmd).returncode
        print("integration %-28s %-6s %6.1fs" % ("(replies vs openapi.yaml)", "ok" if rc == 0 else "FAILED",
                                                time.time() - t1), flush=True)
        if rc != 0:
            failed.append("openapi_check")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
