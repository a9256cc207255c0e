"""sparse_features: the sparse demo's data, from apt's own package lists.

Owns: reading apt's Packages files (and Translation-en, for the long
descriptions), the label set (Section), the deterministic train/test split and
the hashed features.  Never talks to a daemon and never changes apt's lists.
Called from one thread of sparse_demo.py (the workers and the torch baseline
read the cache it writes, so every one of them sees the same features).

The hash (fixed; the same in every worker and the torch baseline):
  text      = short description + " " + long description (Translation-en, when
              the lists have it; the Packages files carry the short one only)
  tokens    = re.findall("[a-z0-9]+", text.lower())
  unigram w = key b"1 " + w,     bigram (w1, w2) = key b"2 " + w1 + b" " + w2
  row       = little-endian u64 of BLAKE2b(key, digest_size=8), mod 2^bits
  features of a package = the distinct rows of its keys, ascending (binary bag)
Split: a package is in the test set when BLAKE2b(b"split " + name, 8) % 5 == 0
(about 20 %).  Labels: Section without its component ("contrib/net" -> "net");
the 10 most frequent sections are the classes, packages of any other section
are dropped (an "other" class would mix 40-odd unrelated sections).
"""
import glob
import hashlib
import os
import re
import subprocess

import numpy as np

SYSTEM_LISTS = "/var/lib/apt/lists"
APT_HELPER = "/usr/lib/apt/apt-helper"
TOKEN = re.compile(r"[a-z0-9]+")


def row_of(key, bits):
    """The row of one feature key (bytes): BLAKE2b-64, little-endian, mod 2^bits."""
    h = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")
    return h & ((1 << bits) - 1)


def is_test(name):
    """The split: a hash of the package name, so every run and machine agrees."""
    return int.from_bytes(hashlib.blake2b(b"split " + name.encode(), digest_size=8).digest(), "little") % 5 == 0


def cat(path):
    """A list file's text; apt keeps them compressed (.lz4 here), apt-helper reads every kind."""
    return subprocess.run([APT_HELPER, "cat-file", path], check=True, capture_output=True).stdout.decode("utf-8", "replace")


def list_files(lists_dir):
    """(Packages files, Translation-en files) of a lists directory, sorted."""
    pk = sorted(p for p in glob.glob(os.path.join(lists_dir, "*_binary-*_Packages*")) if not p.endswith(".diff_Index"))
    tr = sorted(glob.glob(os.path.join(lists_dir, "*_i18n_Translation-en*")))
    return pk, tr


def stanzas(text):
    """Each stanza of a deb822 file as {field: value} (continuation lines kept, joined by newlines)."""
    for block in text.split("\n\n"):
        fields, key = {}, None
        for line in block.split("\n"):
            if line.startswith((" ", "\t")) and key:
                fields[key] += "\n" + line[1:]
            elif ":" in line:
                key, _, v = line.partition(":")
                fields[key] = v.strip()
        if fields:
            yield fields


def long_descriptions(files):
    """Description-md5 -> long description text (the lines after the short one), from Translation-en."""
    out = {}
    for path in files:
        for st in stanzas(cat(path)):
            md5, d = st.get("Description-md5"), st.get("Description-en")
            if md5 and d:
                body = d.split("\n", 1)[1] if "\n" in d else ""
                out[md5] = " ".join(l for l in body.split("\n") if l.strip() != ".")
    return out


def packages(lists_dir):
    """[(name, section, text)] of the binary packages, one per name (the first list that has it),
    sorted by name, and whether long descriptions were found."""
    pk, tr = list_files(lists_dir)
    if not pk:
        raise SystemExit("sparse demo: no Packages files in %s (run apt-get update; make demo-sparse does)" % lists_dir)
    longs = long_descriptions(tr)
    seen = {}
    for path in pk:
        for st in stanzas(cat(path)):
            name, sec, desc = st.get("Package"), st.get("Section"), st.get("Description")
            if not name or not sec or not desc or name in seen:
                continue
            short = desc.split("\n", 1)
            text = short[0] + " " + (longs.get(st.get("Description-md5"), "") if len(short) == 1 else short[1])
            seen[name] = (name, sec.rsplit("/", 1)[-1], text)
    return [seen[k] for k in sorted(seen)], bool(longs)


def featurize(text, bits):
    """The distinct hashed rows of a text's unigrams and bigrams, ascending (uint64)."""
    toks = [t.encode() for t in TOKEN.findall(text.lower())]
    keys = [b"1 " + t for t in toks] + [b"2 " + a + b" " + b for a, b in zip(toks, toks[1:])]
    return np.unique(np.fromiter((row_of(k, bits) for k in keys), dtype=np.uint64, count=len(keys)))


def build(lists_dir, bits, classes=10):
    """The whole data set as numpy arrays: CSR features (indptr, ids), labels, test mask, names."""
    pkgs, have_long = packages(lists_dir)
    counts = {}
    for _, sec, _ in pkgs:
        counts[sec] = counts.get(sec, 0) + 1
    top = sorted(counts, key=lambda s: (-counts[s], s))[:classes]
    label = {s: i for i, s in enumerate(top)}
    kept = [p for p in pkgs if p[1] in label]
    rows = [featurize(t, bits) for _, _, t in kept]
    indptr = np.zeros(len(kept) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in rows], out=indptr[1:])
    return {
        "indptr": indptr,
        "ids": np.concatenate(rows) if rows else np.zeros(0, np.uint64),
        "y": np.array([label[s] for _, s, _ in kept], dtype=np.int64),
        "test": np.array([is_test(n) for n, _, _ in kept], dtype=bool),
        "names": np.array([n for n, _, _ in kept]),
        "sections": np.array(top),
        "section_counts": np.array([counts[s] for s in top], dtype=np.int64),
        "packages_total": np.int64(len(pkgs)),
        "have_long": np.bool_(have_long),
        "bits": np.int64(bits),
    }


def load(cache, lists_dir, bits):
    """The data set from the cache file if it was built from the same lists and bits, else built and cached."""
    stamp = "|".join("%s:%d:%d" % (p, os.path.getsize(p), int(os.path.getmtime(p)))
                     for p in sum(list_files(lists_dir), [])) + "|bits=%d|v1" % bits
    if os.path.exists(cache):
        with np.load(cache, allow_pickle=False) as z:
            if str(z["stamp"]) == stamp:
                return {k: z[k] for k in z.files}
    data = build(lists_dir, bits)
    data["stamp"] = np.array(stamp)
    tmp = cache + ".tmp.npz"
    np.savez(tmp, **data)
    os.replace(tmp, cache)
    return data


class Subset:
    """Some examples of the data set (train or test), as CSR; limit: a fixed sample of that
    many (spread over the whole alphabet: packages are sorted by name, and neighbours are alike)."""

    def __init__(self, data, which, limit=0):
        idx = np.flatnonzero(data["test"] if which == "test" else ~data["test"])
        if limit and limit < len(idx):
            idx = idx[np.sort(np.random.default_rng(7).permutation(len(idx))[:limit])]
        ip, ids = data["indptr"], data["ids"]
        lens = ip[idx + 1] - ip[idx]
        self.indptr = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lens, out=self.indptr[1:])
        self.ids = np.concatenate([ids[ip[i]:ip[i + 1]] for i in idx]) if len(idx) else np.zeros(0, np.uint64)
        self.y = data["y"][idx]
        self.n = len(idx)

    def batch(self, sel):
        """CSR of the examples sel (an index array): (offsets, flat ids, labels)."""
        lens = self.indptr[sel + 1] - self.indptr[sel]
        offs = np.zeros(len(sel) + 1, dtype=np.int64)
        np.cumsum(lens, out=offs[1:])
        flat = np.concatenate([self.ids[self.indptr[i]:self.indptr[i + 1]] for i in sel]) if len(sel) else \
            np.zeros(0, np.uint64)
        return offs, flat, self.y[sel]


def order(n, epoch, seed=1):
    """The examples' order in one epoch: the same permutation for the torch baseline and the workers."""
    return np.random.default_rng([seed, epoch]).permutation(n)
