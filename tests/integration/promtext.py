"""promtext: a small strict parser of the Prometheus text exposition format
(version 0.0.4), for tests.  parse(text) -> {family: {"type", "help",
"samples": [(name, labels_dict, value)]}}; raises ValueError with the line
number on anything the format does not allow."""
import math
import re

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


def _value(s, ln):
    if s in ("NaN", "+Inf", "-Inf"):
        return {"NaN": math.nan, "+Inf": math.inf, "-Inf": -math.inf}[s]
    try:
        return float(s)
    except ValueError:
        raise ValueError("line %d: bad value %r" % (ln, s))


def _labels(s, ln):
    out = {}
    i = 0
    while i < len(s):
        m = re.match(r"([a-zA-Z_][a-zA-Z0-9_]*)=\"", s[i:])
        if not m:
            raise ValueError("line %d: bad label at %r" % (ln, s[i:]))
        name = m.group(1)
        i += m.end()
        val = []
        while True:
            if i >= len(s):
                raise ValueError("line %d: unterminated label value" % ln)
            c = s[i]
            if c == "\\":
                nxt = s[i + 1:i + 2]
                if nxt not in ("\\", "\"", "n"):
                    raise ValueError("line %d: bad escape" % ln)
                val.append({"\\": "\\", "\"": "\"", "n": "\n"}[nxt])
                i += 2
            elif c == "\"":
                i += 1
                break
            else:
                val.append(c)
                i += 1
        if name in out:
            raise ValueError("line %d: duplicate label %s" % (ln, name))
        out[name] = "".join(val)
        if i < len(s):
            if s[i] != ",":
                raise ValueError("line %d: expected ',' between labels" % ln)
            i += 1
    return out


def parse(text):
    if not text.endswith("\n"):
        raise ValueError("the exposition must end with a newline")
    fams = {}
    seen_samples = set()
    for ln, line in enumerate(text.split("\n")[:-1], 1):
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                if not NAME.match(name):
                    raise ValueError("line %d: bad metric name %r" % (ln, name))
                fam = fams.setdefault(name, {"type": None, "help": None, "samples": []})
                if parts[1] == "TYPE":
                    if fam["type"] is not None or fam["samples"]:
                        raise ValueError("line %d: TYPE after samples or twice for %s" % (ln, name))
                    if len(parts) != 4 or parts[3] not in TYPES:
                        raise ValueError("line %d: bad type" % ln)
                    fam["type"] = parts[3]
                else:
                    if fam["help"] is not None:
                        raise ValueError("line %d: HELP twice for %s" % (ln, name))
                    fam["help"] = parts[3] if len(parts) == 4 else ""
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( (-?\d+))?\Z", line)
        if not m:
            raise ValueError("line %d: not a sample: %r" % (ln, line))
        name, labels, value = m.group(1), _labels(m.group(3) or "", ln), _value(m.group(4), ln)
        family = name
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name[:-len(suffix)] in fams and fams[name[:-len(suffix)]]["type"] == "histogram":
                family = name[:-len(suffix)]
        if family not in fams or fams[family]["type"] is None:
            raise ValueError("line %d: sample %s before its TYPE" % (ln, name))
        key = (name, tuple(sorted(labels.items())))
        if key in seen_samples:
            raise ValueError("line %d: duplicate sample %s" % (ln, line))
        seen_samples.add(key)
        fams[family]["samples"].append((name, labels, value))
    for name, fam in fams.items():
        if fam["type"] == "counter" and not name.endswith("_total"):
            raise ValueError("counter %s should end in _total" % name)
        if fam["type"] == "histogram":
            _check_histogram(name, fam)
    return fams


def _check_histogram(name, fam):
    series = {}
    for n, labels, v in fam["samples"]:
        base = tuple(sorted((k, x) for k, x in labels.items() if k != "le"))
        s = series.setdefault(base, {"buckets": [], "sum": None, "count": None})
        if n == name + "_bucket":
            s["buckets"].append((float(labels["le"]), v))
        elif n == name + "_sum":
            s["sum"] = v
        elif n == name + "_count":
            s["count"] = v
    for base, s in series.items():
        les = [le for le, _ in s["buckets"]]
        if les != sorted(les) or not les or les[-1] != math.inf:
            raise ValueError("histogram %s%s: buckets must rise to +Inf" % (name, base))
        counts = [c for _, c in s["buckets"]]
        if counts != sorted(counts):
            raise ValueError("histogram %s%s: bucket counts must not decrease" % (name, base))
        if s["count"] != counts[-1] or s["sum"] is None:
            raise ValueError("histogram %s%s: _count must equal the +Inf bucket" % (name, base))


def value(fams, family, sample=None, **labels):
    """The value of the one sample of family (or its _bucket/_sum/_count) with these labels."""
    sample = sample or family
    hits = [v for n, l, v in fams[family]["samples"] if n == sample and all(l.get(k) == str(x) for k, x in labels.items())]
    if len(hits) != 1:
        raise KeyError("%s%s: %d samples" % (sample, labels, len(hits)))
    return hits[0]
