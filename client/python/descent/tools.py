"""descent.tools: worker tools from the seed document (neuralnets' optimizers
tutorial that descent grew from, not in this repository): numeric_gradient (central differences) and
gradient_check (the largest relative error).  Pure functions, any thread."""

__all__ = ["numeric_gradient", "gradient_check"]


def numeric_gradient(f, x, h=1e-5):
    """The gradient of f at x by central differences, (f(x+h) - f(x-h)) / 2h
    per element.  x: a flat sequence of floats or a dict of them by tensor
    (f receives the same kind); returns the same kind, as lists."""
    if isinstance(x, dict):
        xs = {k: list(v) for k, v in x.items()}
        out = {}
        for k in xs:
            v = xs[k]
            g = []
            for i in range(len(v)):
                old = v[i]
                v[i] = old + h
                fp = f(xs)
                v[i] = old - h
                fm = f(xs)
                v[i] = old
                g.append((fp - fm) / (2 * h))
            out[k] = g
        return out
    v = list(x)
    g = []
    for i in range(len(v)):
        old = v[i]
        v[i] = old + h
        fp = f(v)
        v[i] = old - h
        fm = f(v)
        v[i] = old
        g.append((fp - fm) / (2 * h))
    return g


def gradient_check(analytic, numeric):
    """The largest relative error |a - n| / max(|a|, |n|) over the elements
    (0 where both are 0): below ~1e-6 the analytic gradient is right, above
    ~1e-2 it is probably wrong.  Flat sequences or dicts by tensor."""
    if isinstance(analytic, dict) or isinstance(numeric, dict):
        if set(analytic) != set(numeric):
            raise ValueError("gradient_check: tensors differ: %s vs %s" % (sorted(analytic), sorted(numeric)))
        return max((gradient_check(analytic[k], numeric[k]) for k in analytic), default=0.0)
    a, n = list(analytic), list(numeric)
    if len(a) != len(n):
        raise ValueError("gradient_check: %d analytic values, %d numeric" % (len(a), len(n)))
    worst = 0.0
    for x, y in zip(a, n):
        d = max(abs(x), abs(y))
        if d > 0:
            worst = max(worst, abs(x - y) / d)
    return worst
