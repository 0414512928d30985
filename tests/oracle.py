"""A brute-force oracle of DESIGN.md's time semantics and of every aggregation function, in plain Python.

It knows nothing of the engine: per query, it tests every event of the query's key against the window's rule,
then computes the function over the events inside from its definition (sorting, counting, summing). Slow and
obvious on purpose, as Chronon's `NaiveAggregator`; tests compare the engine with it on seeded random data.

Events are dicts (or pandas rows) with the key columns, `ts` and `avail` in epoch microseconds (`avail` None when
the row has no availability time), and value columns with None for nulls.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal

from utc import UTC

EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)


def micros(value: dt.datetime) -> int:
    """An aware datetime (or a naive one meaning UTC) as epoch microseconds."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - EPOCH) // dt.timedelta(microseconds=1)


def inside(window, ts: int, avail: int | None, t: int) -> bool:
    """Is an event at ts (known at avail) inside `window` for a query at t? DESIGN.md, "Time semantics"."""
    d, w = window.delay_us, window.length_us
    if window.closed == "left":
        visible = avail is None or avail < t
        return visible and ts < t - d and (w is None or ts >= t - d - w)
    visible = avail is None or avail <= t
    return visible and ts <= t - d and (w is None or ts > t - d - w)


def _mean(xs):
    return math.fsum(map(float, xs)) / len(xs) if xs else None


def _m2(xs):
    m = _mean(xs)
    return math.fsum((float(x) - m) ** 2 for x in xs)


def _inclusive_quantile(xs, q):
    """The smallest value whose rank (1-based position / n) is at least q."""
    s = sorted(map(float, xs))
    i = max(1, math.ceil(q * len(s) - 1e-9))
    return s[i - 1]


def _show(v) -> str:
    """An item as top_k reports it (Values.show): decimals in plain notation, others as str."""
    return format(v, "f") if isinstance(v, Decimal) else str(v)


def _decayed(pairs, t, half_life_us):
    return math.fsum(float(v) * 2.0 ** (-(t - ts) / half_life_us) for ts, v in pairs)


# function -> f(values, pairs, times, t, params): `values` are the non-null values inside the window, `pairs` the
# (ts, value) of those, `times` the times of every event inside (for functions without a column).
FUNCTIONS: dict[str, Callable] = {
    "count": lambda vs, ps, ts, t, p: len(vs),
    "sum": lambda vs, ps, ts, t, p: sum(vs, Decimal(0) if vs and isinstance(vs[0], Decimal) else 0),
    "mean": lambda vs, ps, ts, t, p: _mean(vs),
    "min": lambda vs, ps, ts, t, p: min(vs) if vs else None,
    "max": lambda vs, ps, ts, t, p: max(vs) if vs else None,
    "variance": lambda vs, ps, ts, t, p: _m2(vs) / (len(vs) - 1) if len(vs) > 1 else None,
    "variance_pop": lambda vs, ps, ts, t, p: _m2(vs) / len(vs) if vs else None,
    "stddev": lambda vs, ps, ts, t, p: math.sqrt(_m2(vs) / (len(vs) - 1)) if len(vs) > 1 else None,
    "stddev_pop": lambda vs, ps, ts, t, p: math.sqrt(_m2(vs) / len(vs)) if vs else None,
    # ties of time are broken by value: first is the least (ts, value), last the greatest
    "first": lambda vs, ps, ts, t, p: min(ps)[1] if ps else None,
    "last": lambda vs, ps, ts, t, p: max(ps)[1] if ps else None,
    "last_k": lambda vs, ps, ts, t, p: [v for _, v in sorted(ps, reverse=True)[: p["k"]]] or None,
    "time_since_last": lambda vs, ps, ts, t, p: (t - max(ts)) / 1e6 if ts else None,
    "approx_distinct": lambda vs, ps, ts, t, p: len(set(vs)) or None,
    "approx_percentile": lambda vs, ps, ts, t, p: [_inclusive_quantile(vs, q) for q in p["quantiles"]] if vs else None,
    "top_k": lambda vs, ps, ts, t, p: sorted(Counter(map(_show, vs)).items(), key=lambda kv: (-kv[1], kv[0]))[: p["k"]] or None,
    "decayed_sum": lambda vs, ps, ts, t, p: _decayed(ps, t, p["half_life_us"]),
    "decayed_count": lambda vs, ps, ts, t, p: _decayed([(x, 1.0) for x in ts], t, p["half_life_us"]),
}


def features(view, events: Iterable[dict], queries: Sequence[tuple[tuple, int]]) -> list[dict]:
    """For each query (key tuple, t in microseconds): {feature name: expected value} of `view`."""
    return [{name: value for name, (value, _) in row.items()} for row in _expected(view, events, queries)]


def mismatches(view, events: Iterable[dict], queries: Sequence[tuple[tuple, int]], got: Sequence[dict],
               *, prefix: str = "") -> list[tuple]:
    """Every (feature, key, t, engine value, oracle value) where `got` (one dict per query, columns named
    `prefix + feature`) disagrees with the oracle. Sketches are held to their documented error bounds."""
    assert len(got) == len(queries), f"{len(got)} result rows for {len(queries)} queries"
    out = []
    for (key, t), row, want in zip(queries, got, _expected(view, events, queries), strict=True):
        for f in view.features:
            value, support = want[f.name]
            if not same(f, row[prefix + f.name], value, support):
                out.append((f.name, key, t, row[prefix + f.name], value))
    return out


def _expected(view, events, queries) -> list[dict]:
    keys = list(view.entity.keys)
    by_key: dict[tuple, list[dict]] = {}
    for e in events:
        by_key.setdefault(tuple(e[k] for k in keys), []).append(e)
    out = []
    for key, t in queries:
        evs = by_key.get(tuple(key), [])
        if view.ttl_us is not None and not any(t - view.ttl_us <= e["ts"] < t and (e.get("avail") is None or e["avail"] < t)
                                               for e in evs):
            out.append({f.name: (None, _Support([], 0.0)) for f in view.features})
            continue
        row, windows = {}, {}
        for f in view.features:
            if f.function not in FUNCTIONS:
                raise AssertionError(f"the oracle has no definition of '{f.function}' (feature '{f.name}')")
            if f.window not in windows:  # the events inside each window, once per query
                windows[f.window] = [e for e in evs if inside(f.window, e["ts"], e.get("avail"), t)]
            inw = windows[f.window]
            times = [e["ts"] for e in inw]
            pairs = [(e["ts"], e[f.column]) for e in inw if f.column and e[f.column] is not None]
            values = [v for _, v in pairs] if f.column else times
            value = FUNCTIONS[f.function](values, pairs, times, t, f.params)
            row[f.name] = (f.default if value is None else value, _Support(values, _m2_bound(f, evs)))
        out.append(row)
    return out


class _Support:
    """What a comparison may need beyond the value: the in-window values (sketch bounds) and the m2 error bound."""

    def __init__(self, values: list, m2_bound: float):
        self.values, self.m2_bound = values, m2_bound


MOMENTS = {"variance", "variance_pop", "stddev", "stddev_pop"}


def _m2_bound(feature, evs) -> float:
    """The documented error of the kernels' Welford state (Moments.scala): after adds and removes, m2 carries an
    absolute error of about eps * n * max(x^2), n the values that passed through it (at most the key's events)."""
    if feature.function not in MOMENTS:
        return 0.0
    xs = [float(e[feature.column]) ** 2 for e in evs if e[feature.column] is not None]
    return 4 * 2.3e-16 * len(xs) * max(xs, default=0.0)


# How a function's results are compared: exactly, within floating-point tolerance, or within a sketch's bounds.
def _close(a, b, rel=1e-7, abs_=1e-6) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=abs_)


def _distinct_ok(got, want, lg_k) -> bool:
    if got is None or want is None:
        return got is None and want is None
    return abs(got - want) <= max(1, 3 * 1.04 / math.sqrt(2**lg_k) * want)


def _percentile_ok(got, want, k, relative_error, values) -> bool:
    if got is None or want is None:
        return got is None and want is None
    if len(values) <= k:  # every value is kept until there are more than k: exact
        return [float(x) for x in got] == want
    # beyond, each quantile is within the relative error of the true one (NaN is ignored, infinities are kept)
    return all(x == w or abs(x - w) <= relative_error * abs(w) * (1 + 1e-9) for x, w in zip(got, want, strict=True))


FLOATING = {"mean", "variance", "variance_pop", "stddev", "stddev_pop", "time_since_last", "decayed_sum", "decayed_count"}


def same(feature, got, want, support: _Support) -> bool:
    """Does the engine's value `got` of `feature` agree with the oracle's `want`?"""
    fn = feature.function
    values = support.values
    if fn in MOMENTS and got is not None and want is not None:
        # compared as variances (m2 / n), at the Welford state's documented precision
        square = fn.startswith("stddev")
        g, w = (got**2, want**2) if square else (got, want)
        n = len(values) - (0 if fn.endswith("_pop") else 1)
        return abs(g - w) <= max(support.m2_bound / max(n, 1), 1e-9 * abs(w))
    if fn in FLOATING:
        return _close(got, want)
    if fn == "sum":  # an empty sum is 0 of the column's type, which the oracle does not know
        return _close(got, want) if isinstance(got, float) or isinstance(want, float) else got == want
    if fn == "approx_distinct":
        return _distinct_ok(got, want, feature.params["lg_k"])
    if fn == "approx_percentile":
        return _percentile_ok(got, want, feature.params["k"], feature.params["relative_error"], values)
    if fn == "top_k":
        got = None if got is None else [(r["item"], r["count"]) for r in got]
        return got == want
    if fn == "last_k":
        return (None if got is None else list(got)) == want
    return type(got) is type(want) and got == want if want is not None else got is None
