"""test_install: `make install` with PREFIX and DESTDIR, as Debian packaging
expects: every file in its place (descentd, descent, libdescent.so with its
soname links and libdescent.a, descent.h, descent.pc, the systemd unit with
ExecStart at the installed descentd, the man pages descentd(8) and
descent(1)); a tiny C program built against the installed copy with
`pkg-config --cflags --libs descent` (PKG_CONFIG_PATH and
PKG_CONFIG_SYSROOT_DIR into the DESTDIR) runs against a real daemon, and
links against the installed libdescent.a too; the man
pages render without warnings and name every command and option that
--help lists; `make uninstall` removes everything again."""
import os
import re
import shutil
import subprocess
import tempfile
import unittest

from harness import BUILD, DESCENTD, ROOT, SANITIZED, Daemon

PROGRAM = r"""
#include <descent.h>
#include <stdio.h>

int main(int argc, char **argv) {
  descent_error err = {0};
  descent *d = descent_open(argv[1], NULL, &err);
  if (!d) { fprintf(stderr, "%s: %s\n", err.code, err.message); return 1; }
  const char *spec = "{\"name\": \"tiny\", \"algorithm\": \"sgd\", \"hyper\": {\"lr\": 0.5},"
                     " \"tensors\": [{\"name\": \"w\", \"shape\": [3], \"values\": [1, 2, 3]}]}";
  float g[3] = {2, 2, 2}, p[3];
  uint64_t step = 0;
  if (descent_create(d, spec, NULL, &err) < 0 || descent_push(d, "tiny", g, 3, NULL, p, &step, &err) < 0) {
    fprintf(stderr, "%s: %s\n", err.code, err.message);
    return 1;
  }
  printf("libdescent %s: step %llu: %g %g %g\n", DESCENT_VERSION, (unsigned long long)step, p[0], p[1], p[2]);
  descent_close(d);
  return 0;
}
"""

EXPECTED = ["usr/local/bin/descent", "usr/local/sbin/descentd", "usr/local/lib/libdescent.so.0.1.0",
            "usr/local/lib/libdescent.so.0", "usr/local/lib/libdescent.so", "usr/local/lib/libdescent.a",
            "usr/local/include/descent.h", "usr/local/lib/pkgconfig/descent.pc",
            "usr/local/lib/systemd/system/descentd.service", "usr/local/share/man/man1/descent.1",
            "usr/local/share/man/man8/descentd.8"]


def make(*args):
    return subprocess.run(["make", "--no-print-directory", "-C", ROOT, "B=" + BUILD] + list(args),
                          capture_output=True, text=True, timeout=600)


@unittest.skipIf(SANITIZED, "installs the plain build (the sanitizer run skips it)")
class Install(unittest.TestCase):
    def setUp(self):
        self.dest = tempfile.mkdtemp(prefix="descent-install-")

    def tearDown(self):
        shutil.rmtree(self.dest, ignore_errors=True)

    def files(self):
        out = []
        for dirpath, _, names in os.walk(self.dest):
            out += [os.path.relpath(os.path.join(dirpath, n), self.dest) for n in names]
        return sorted(out)

    def test_install_and_build_against_it(self):
        r = make("install", "DESTDIR=" + self.dest)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(self.files(), sorted(EXPECTED))
        lib = os.path.join(self.dest, "usr/local/lib")
        self.assertEqual(os.readlink(os.path.join(lib, "libdescent.so")), "libdescent.so.0")
        self.assertEqual(os.readlink(os.path.join(lib, "libdescent.so.0")), "libdescent.so.0.1.0")
        dyn = subprocess.run(["readelf", "-d", os.path.join(lib, "libdescent.so.0.1.0")], capture_output=True,
                             text=True, check=True).stdout
        self.assertIn("Library soname: [libdescent.so.0]", dyn)
        for f, mode in (("usr/local/sbin/descentd", 0o755), ("usr/local/bin/descent", 0o755),
                        ("usr/local/include/descent.h", 0o644), ("usr/local/lib/pkgconfig/descent.pc", 0o644)):
            self.assertEqual(os.stat(os.path.join(self.dest, f)).st_mode & 0o777, mode, f)
        with open(os.path.join(self.dest, "usr/local/lib/systemd/system/descentd.service")) as f:
            unit = f.read()
        self.assertIn("\nExecStart=/usr/local/sbin/descentd --token-file %d/tokens\n", unit)
        with open(os.path.join(ROOT, "client", "descent.h")) as a, \
                open(os.path.join(self.dest, "usr/local/include/descent.h")) as b:
            self.assertEqual(a.read(), b.read())
        # the installed programs run
        for prog, want in (("usr/local/sbin/descentd", r"^descentd 0\.1\.0"), ("usr/local/bin/descent", r"^descent 0\.1\.0")):
            p = subprocess.run([os.path.join(self.dest, prog), "--version"], capture_output=True, text=True, timeout=30)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertRegex(p.stdout, want)
        # pkg-config finds the installed copy
        env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(lib, "pkgconfig"), PKG_CONFIG_SYSROOT_DIR=self.dest)
        env.pop("PKG_CONFIG_LIBDIR", None)
        pc = subprocess.run(["pkg-config", "--cflags", "--libs", "descent"], capture_output=True, text=True, env=env,
                            check=True).stdout.split()
        self.assertIn("-I" + os.path.join(self.dest, "usr/local/include"), pc)
        self.assertIn("-L" + lib, pc)
        self.assertIn("-ldescent", pc)
        self.assertEqual(subprocess.run(["pkg-config", "--modversion", "descent"], capture_output=True, text=True,
                                        env=env).stdout.strip(), "0.1.0")
        src = os.path.join(self.dest, "tiny.c")
        exe = os.path.join(self.dest, "tiny")
        with open(src, "w") as f:
            f.write(PROGRAM)
        cc = subprocess.run(["cc", "-std=c11", "-Wall", "-Werror", src, "-o", exe] + pc, capture_output=True,
                            text=True, timeout=120)
        self.assertEqual(cc.returncode, 0, cc.stderr)
        run_env = dict(os.environ, LD_LIBRARY_PATH=lib)
        ldd = subprocess.run(["ldd", exe], capture_output=True, text=True, env=run_env).stdout
        self.assertRegex(ldd, r"libdescent\.so\.0 => %s/libdescent\.so\.0 " % re.escape(lib))
        d = Daemon()
        try:
            p = subprocess.run([exe, d.url], capture_output=True, text=True, env=run_env, timeout=60)
            self.assertEqual((p.returncode, p.stdout), (0, "libdescent 0.1.0: step 1: 0 1 2\n"), p.stderr)
            self.assertEqual(d.export("tiny")["params"], {"w": [0, 1, 2]})
        finally:
            d.stop()
            d.cleanup()
        # the static library links too, with the libraries descent.pc names as Requires.private
        with open(os.path.join(lib, "pkgconfig", "descent.pc")) as f:
            self.assertIn("\nRequires.private: libcurl jansson\n", f.read())
        deps = subprocess.run(["pkg-config", "--libs", "libcurl", "jansson"], capture_output=True, text=True,
                              check=True).stdout.split()
        cc = subprocess.run(["cc", "-std=c11", src, "-o", exe + "-static", "-I" + os.path.join(self.dest, "usr/local/include"),
                             os.path.join(lib, "libdescent.a")] + deps + ["-lm"], capture_output=True, text=True,
                            timeout=120)
        self.assertEqual(cc.returncode, 0, cc.stderr)
        ldd = subprocess.run(["ldd", exe + "-static"], capture_output=True, text=True).stdout
        self.assertNotIn("libdescent", ldd)
        r = make("uninstall", "DESTDIR=" + self.dest)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual([f for f in self.files() if f.startswith("usr/")], [])

    def test_prefix_usr(self):
        """PREFIX=/usr, as dh_auto_install runs it: the unit points at /usr/sbin/descentd."""
        r = make("install", "PREFIX=/usr", "DESTDIR=" + self.dest)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(self.files(), sorted(f.replace("usr/local/", "usr/") for f in EXPECTED))
        with open(os.path.join(self.dest, "usr/lib/systemd/system/descentd.service")) as f:
            self.assertIn("\nExecStart=/usr/sbin/descentd --token-file %d/tokens\n", f.read())
        with open(os.path.join(self.dest, "usr/lib/pkgconfig/descent.pc")) as f:
            pc = f.read()
        self.assertIn("prefix=/usr\n", pc)
        self.assertIn("libdir=/usr/lib\n", pc)


class ManPages(unittest.TestCase):
    def render(self, page):
        p = subprocess.run(["man", "--warnings", "-l", os.path.join(ROOT, "man", page)], capture_output=True,
                           text=True, timeout=60, env=dict(os.environ, MANWIDTH="200", MAN_KEEP_FORMATTING="0"))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr, "", "%s: groff warnings" % page)
        return re.sub(r".\x08", "", p.stdout).replace("\u2010", "-")

    @unittest.skipUnless(shutil.which("man"), "man-db is not installed")
    def test_descentd_8_names_every_option(self):
        text = self.render("descentd.8")
        self.assertIn("DESCENTD(8)", text)
        helptext = subprocess.run([DESCENTD, "--help"], capture_output=True, text=True, check=True).stdout
        options = re.findall(r"^  (--[a-z-]+)", helptext, re.M)
        self.assertGreater(len(options), 15)
        for o in options:
            self.assertIn(o, text, "descentd(8) does not document %s" % o)
        self.assertIn("--snapshot-interval", text)
        self.assertRegex(text, r"0\s+turns\s+periodic\s+snapshots\s+off")

    @unittest.skipUnless(shutil.which("man"), "man-db is not installed")
    def test_descent_1_names_every_command(self):
        text = self.render("descent.1")
        self.assertIn("DESCENT(1)", text)
        cli = os.path.join(os.path.dirname(DESCENTD), "descent")
        helptext = subprocess.run([cli, "--help"], capture_output=True, text=True, check=True).stdout
        commands = re.findall(r"^  ([a-z]+) ", helptext.split("commands:")[1].split("options of every")[0], re.M)
        self.assertGreater(len(commands), 10)
        for c in commands:
            self.assertRegex(text, r"\n {7}%s\b" % c, "descent(1) does not document the command %s" % c)
        for var in re.findall(r"^  (DESCENT_[A-Z_]+)", helptext, re.M):
            self.assertIn(var, text)
        for code in re.findall(r"^  (\d)  ", helptext, re.M):
            self.assertRegex(text, r"\n {7}%s\s" % code, "exit code %s" % code)


if __name__ == "__main__":
    unittest.main()
