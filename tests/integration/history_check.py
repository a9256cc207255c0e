"""history_check: a checker for concurrent push/read histories of one SGD
instance whose every state decodes to the exact set of pushes it holds.

The encoding.  The instance is SGD with lr 1, n float32 parameters, all 0 at
the start.  Push i has a gradient that is 0 everywhere except in slot
i // PER_SLOT, where it is -4^(i % PER_SLOT); so the push adds 4^k = 2^(2k)
to one slot.  PER_SLOT is 12: a slot's sum of distinct pushes is below 2^23
and is exactly representable in float32, and only even bits are ever set.  A
push applied twice adds 2 * 4^k = 2^(2k+1): an odd bit, which no set of
distinct pushes can make.  A state (the parameters) therefore decodes to a
bitmask over "positions" (32 bits per slot, push i at 32 * slot + 2k), and
sets of pushes are Python ints: inclusion is `a & ~b == 0`.

A history is a list of events (plain dicts, times from time.monotonic()):

  {"op": "push", "gen": g, "id": i, "start": t0, "end": t1,
   "ok": True | False | None, "step": s, "values": [...] or None,
   "retry": bool}
      one attempt of push i on incarnation g of the daemon.  ok True: the
      daemon acknowledged it (then step/values, if present, are its reply: the
      state right after it); False: refused (never applied); None: the
      connection failed, the outcome is unknown.  A retry (same idempotency
      key) is another attempt with the same id.
  {"op": "read", "gen": g, "start": t0, "end": t1, "step": s, "values": [...]}
      a read of the parameters on incarnation g.
  {"op": "restart", "gen": g, "kill": t, "clean": bool, "step": s, "values": [...]}
      incarnation g begins (g >= 1) with this state, read before any client
      was let in; the previous incarnation ended at time t by kill -9
      (clean False) or SIGTERM (clean True).

check(events, window) returns a list of violations (strings; [] = the history
is valid).  The rules, for each incarnation g with base state B (the empty
set for g = 0, else its restart state):
  - every state decodes: finite integers of even bits below 2^24 (else a push
    was doubled or the value is foreign), and its step equals its number of
    pushes;
  - every state of g contains B, and beyond B only pushes that had an attempt
    on g that began before the state was read (no phantom, nothing lost that
    comes back, nothing from the future);
  - a push reply contains its own push;
  - every read contains each push acknowledged on g before the read began,
    and every state read (completed) before it began: no lost update, no
    stale read;
  - the states of g form one chain (totally ordered by inclusion);
  - the next restart state is one of g's chain (contains B, comparable with
    every state of g, nothing beyond g's attempts) and, after kill -9, holds
    every push acknowledged more than `window` seconds before the kill (after
    a clean stop: every acknowledged push).
"""
import bisect
import struct

PER_SLOT = 12
SLOT_BITS = 32  # bits of a state mask per slot (a slot's value is below 2^24)
LIMIT = 1 << 24


def position(i):
    """The bit position of push i in a state mask."""
    return SLOT_BITS * (i // PER_SLOT) + 2 * (i % PER_SLOT)


def bit(i):
    return 1 << position(i)


def capacity(n):
    """How many distinct pushes an instance of n floats can tell apart."""
    return n * PER_SLOT


def gradient(i, n):
    """The gradient of push i (a list of n floats)."""
    g = [0.0] * n
    g[i // PER_SLOT] = -float(4 ** (i % PER_SLOT))
    return g


def gradient_bytes(i, n):
    """The gradient of push i as a binary body (little-endian float32)."""
    slot = i // PER_SLOT
    return b"\0" * (4 * slot) + struct.pack("<f", -float(4 ** (i % PER_SLOT))) + b"\0" * (4 * (n - slot - 1))


def values_of(ids, n):
    """The parameters after exactly the pushes ids (each once): a list of floats."""
    v = [0.0] * n
    for i in ids:
        v[i // PER_SLOT] += float(4 ** (i % PER_SLOT))
    return v


def mask_of(ids):
    m = 0
    for i in ids:
        m |= bit(i)
    return m


def ids_of(mask):
    """The push ids of a mask (even positions only), sorted."""
    out = []
    while mask:
        low = mask & -mask
        pos = low.bit_length() - 1
        slot, b = divmod(pos, SLOT_BITS)
        out.append(slot * PER_SLOT + b // 2)
        mask ^= low
    return out


if hasattr(int, "bit_count"):
    def popcount(m):
        return m.bit_count()
else:  # Python < 3.10
    def popcount(m):
        return bin(m).count("1")


_odd = {}


def _odd_bits(n):
    """The odd bit positions of n slots (no set of distinct pushes has one)."""
    if n not in _odd:
        _odd[n] = int.from_bytes(b"\xaa" * (SLOT_BITS // 8) * n, "little")
    return _odd[n]


def decode(values):
    """(mask, problem): the set of pushes a state holds, or (None, why it is no
    set of distinct pushes).  values: a list of floats, or the little-endian
    float32 bytes of a binary reply."""
    if isinstance(values, (bytes, bytearray)):
        nz = (len(bytes(values).rstrip(b"\0")) + 3) // 4  # trailing zero slots hold nothing
        values = struct.unpack_from("<%df" % nz, values)
    try:
        ints = list(map(int, values))
        ok = ints == list(values) and (not ints or (min(ints) >= 0 and max(ints) < LIMIT))
    except (ValueError, OverflowError):
        ok = False
    if not ok:
        for s, v in enumerate(values):
            if v != v or v in (float("inf"), float("-inf")):
                return None, "slot %d is not finite (%r)" % (s, v)
            if v != int(v) or v < 0 or v >= LIMIT:
                return None, "slot %d holds %r: not a sum of distinct pushes" % (s, v)
    mask = int.from_bytes(struct.pack("<%dI" % len(ints), *ints), "little")
    odd = mask & _odd_bits(len(ints))
    if odd:
        pos = (odd & -odd).bit_length() - 1
        s, k = divmod(pos, SLOT_BITS)
        return None, ("slot %d holds %d: an odd bit (2^%d), so push %d (or a neighbour) was applied twice"
                      % (s, ints[s], k, s * PER_SLOT + k // 2))
    return mask, None


def _show(mask, limit=8):
    ids = ids_of(mask)
    more = " ... (%d in all)" % len(ids) if len(ids) > limit else ""
    return "[%s%s]" % (", ".join(str(i) for i in ids[:limit]), more)


class _Prefix:
    """Union of masks of items sorted by a time key, queried by time."""

    def __init__(self, items):
        items = sorted(items, key=lambda x: x[0])
        self.times = [t for t, _ in items]
        self.unions = []
        u = 0
        for _, m in items:
            u |= m
            self.unions.append(u)

    def before(self, t):
        """The union of every item with time < t."""
        k = bisect.bisect_left(self.times, t)
        return self.unions[k - 1] if k else 0

    def all(self):
        return self.unions[-1] if self.unions else 0


def cut(events, t):
    """The history as it stood at time t: the restarts whose kill came before,
    the reads completed by then, the push attempts begun by then (those
    completed later as unknown outcomes).  A cut of a valid history is valid."""
    out = []
    for e in events:
        if e["op"] == "restart":
            if e["kill"] <= t:
                out.append(e)
        elif e["op"] == "read":
            if e["end"] <= t:
                out.append(e)
        elif e["start"] <= t:
            if e["ok"] is not None and (e["end"] is None or e["end"] > t):
                e = dict(e, ok=None, end=None, step=None, values=None)
            out.append(e)
    return out


def check(events, window=None, max_report=20):
    """The violations of a history (see the module docstring); [] when valid.
    window: seconds before a kill -9 within which acknowledged pushes may be
    lost (None: no bound is checked)."""
    out = []

    def bad(msg):
        if len(out) < max_report:
            out.append(msg)

    gens = {}
    restarts = {}
    for e in events:
        if e["op"] == "restart":
            if e["gen"] in restarts:
                bad("two restart events for incarnation %d" % e["gen"])
            restarts[e["gen"]] = e
        gens.setdefault(e["gen"], []).append(e)
    if not gens:
        return out
    last = max(gens)
    base = 0
    for g in range(0, last + 1):
        evs = gens.get(g, [])
        if g > 0:
            r = restarts.get(g)
            if r is None:
                bad("incarnation %d has no restart event" % g)
                continue
        attempts = [e for e in evs if e["op"] == "push"]
        sent = _Prefix([(e["start"], bit(e["id"])) for e in attempts])
        acked = _Prefix([(e["end"], bit(e["id"])) for e in attempts if e["ok"] is True])
        states = []  # (start, end, mask, what)
        undecoded = 0
        for e in evs:
            if e["op"] == "restart" or e.get("values") is None:
                continue
            if e["op"] == "push" and e["ok"] is not True:
                continue
            what = ("read [%.3f, %.3f]" % (e["start"], e["end"]) if e["op"] == "read"
                    else "reply to push %d [%.3f, %.3f]" % (e["id"], e["start"], e["end"]))
            what = "incarnation %d: %s" % (g, what)
            m, problem = decode(e["values"])
            if problem:
                if not undecoded:
                    bad("%s: %s" % (what, problem))
                undecoded += 1
                continue
            if e.get("step") is not None and e["step"] != popcount(m):
                bad("%s: step %d but it holds %d pushes" % (what, e["step"], popcount(m)))
            if base & ~m:
                bad("%s: lacks %s of the state this incarnation started from" % (what, _show(base & ~m)))
            extra = m & ~base & ~sent.before(e["end"])
            if extra:
                bad("%s: holds %s, never sent to this incarnation before it was read "
                    "(a phantom, or a lost push come back)" % (what, _show(extra)))
            if e["op"] == "push" and not m & bit(e["id"]):
                bad("%s: does not hold its own push" % what)
            if e["op"] == "push" and e.get("retry"):
                continue  # a replayed reply may be an older moment: not a read
            lost = acked.before(e["start"]) & ~m
            if lost:
                bad("%s: lost update: %s were acknowledged before it began and are missing"
                    % (what, _show(lost)))
            states.append((e["start"], e["end"], m, what))
        if undecoded > 1:
            bad("incarnation %d: %d more states do not decode either" % (g, undecoded - 1))
        # reads are linearizable: a state read before another began is contained in it
        done = _Prefix([(end, m) for (_, end, m, _) in states])
        for start, _, m, what in states:
            stale = done.before(start) & ~m
            if stale:
                bad("%s: stale read: %s were seen by reads that completed before it began"
                    % (what, _show(stale)))
        # one chain
        chain = sorted(set(m for (_, _, m, _) in states) | {base}, key=popcount)
        for a, b in zip(chain, chain[1:]):
            if a & ~b:
                bad("incarnation %d: two states are not ordered by inclusion: %s vs %s (not one chain)"
                    % (g, _show(a & ~b), _show(b & ~a)))
                break
        # the restart that ends this incarnation
        r = restarts.get(g + 1)
        if r is None:
            continue
        what = "restart %d" % (g + 1)
        m, problem = decode(r["values"])
        if problem:
            bad("%s: %s" % (what, problem))
            base = 0
            continue
        if r.get("step") is not None and r["step"] != popcount(m):
            bad("%s: step %d but it holds %d pushes" % (what, r["step"], popcount(m)))
        if base & ~m:
            bad("%s: lacks %s of the state incarnation %d started from" % (what, _show(base & ~m), g))
        extra = m & ~base & ~sent.all()
        if extra:
            bad("%s: holds %s, never sent to incarnation %d" % (what, _show(extra), g))
        for x in chain:
            if x & ~m and m & ~x:
                bad("%s: its state is none of incarnation %d's chain (%s missing, %s extra)"
                    % (what, g, _show(x & ~m), _show(m & ~x)))
                break
        if r.get("clean"):
            lost = acked.all() & ~m
            if lost:
                bad("%s: a clean stop lost acknowledged pushes %s" % (what, _show(lost)))
        elif window is not None:
            lost = acked.before(r["kill"] - window) & ~m
            if lost:
                bad("%s: lost %s, acknowledged more than %.2f s before the kill -9" % (what, _show(lost), window))
        base = m
    return out
