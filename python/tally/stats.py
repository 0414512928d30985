"""Per-day feature statistics: computed when a backfill chunk is written, kept in its Delta commit, read back.

1. Before a chunk commits, one Spark aggregation over the chunk's (cached) frame, grouped by `ds`, gives per day
   the row count and per feature the null count; numeric features (integers, floats, decimals, booleans as 0/1)
   also get the count of NaN and ±infinity, and the mean, min, max and p01/p50/p99 of the finite values.
   Quantiles are Spark's `percentile_approx` at accuracy `ACCURACY`: the value returned has a rank within
   n / ACCURACY of the exact one (exact for fewer than ACCURACY values a day). Arrays, structs, maps, strings and
   timestamps get the null count only.
2. The result goes into the commit's userMetadata (`tally.stats`), compact: one list per feature and day,
   fractional values rounded to 6 significant digits (integer min/max/quantiles stay exact). A day of the chunk
   without rows is recorded with 0 rows, so a re-backfill that empties a day also replaces its statistics.
3. Reading back (`recorded`), the newest tally commit that wrote a day wins; a newer commit without statistics
   (written by a tally before them) makes the day's older statistics stale, so they are dropped.
"""

from __future__ import annotations

import math

FORMAT = 1
QUANTILES = (0.01, 0.5, 0.99)
ACCURACY = 10_000
NUMERIC_FIELDS = ("nulls", "nans", "mean", "min", "max", "p01", "p50", "p99")
OTHER_FIELDS = ("nulls",)


def kind(data_type) -> str:
    """'integral', 'fractional', 'decimal', 'boolean' (the numeric kinds), or the type's name (null count only)."""
    from pyspark.sql import types as T

    if isinstance(data_type, T.IntegralType):
        return "integral"
    if isinstance(data_type, (T.DoubleType, T.FloatType)):
        return "fractional"
    if isinstance(data_type, T.DecimalType):
        return "decimal"
    if isinstance(data_type, T.BooleanType):
        return "boolean"
    return data_type.typeName()


def is_numeric(k: str) -> bool:
    return k in ("integral", "fractional", "decimal", "boolean")


def compute(frame, features: list[str], days: list[str]) -> dict:
    """The `tally.stats` entry of one chunk: one aggregation over `frame` grouped by `ds`, one collect."""
    from pyspark.sql import functions as F

    kinds = {name: kind(frame.schema[name].dataType) for name in features}
    aggs = [F.count(F.lit(1)).alias("_rows")]
    for i, name in enumerate(features):
        col = F.col(f"`{name}`")
        aggs.append(F.count_if(col.isNull()).alias(f"_n{i}"))
        if not is_numeric(kinds[name]):
            continue
        if kinds[name] == "fractional":
            bad = F.isnan(col) | col.isin(float("inf"), float("-inf"))
            value = F.when(~bad, col)
        else:
            bad = F.lit(False)
            value = col.cast("int") if kinds[name] == "boolean" else col
        numeric = value.cast("double") if kinds[name] == "decimal" else value
        aggs += [F.count_if(bad).alias(f"_x{i}"), F.avg(numeric.cast("double")).alias(f"_m{i}"),
                 F.min(numeric).alias(f"_lo{i}"), F.max(numeric).alias(f"_hi{i}"),
                 F.percentile_approx(numeric, list(QUANTILES), ACCURACY).alias(f"_q{i}")]
    by_day = {str(r["ds"]): r for r in frame.groupBy("ds").agg(*aggs).collect()}
    out = {}
    for day in days:
        r = by_day.get(day)
        if r is None:
            out[day] = {"rows": 0, "f": {}}
            continue
        values = {}
        for i, name in enumerate(features):
            if is_numeric(kinds[name]):
                q = r[f"_q{i}"] or [None] * len(QUANTILES)
                values[name] = [r[f"_n{i}"], r[f"_x{i}"], _round(r[f"_m{i}"]), _round(r[f"_lo{i}"]), _round(r[f"_hi{i}"]),
                                *(_round(v) for v in q)]
            else:
                values[name] = [r[f"_n{i}"]]
        out[day] = {"rows": r["_rows"], "f": values}
    # Features as a list of [name, kind]: the commit's JSON sorts keys, and the view's order is worth keeping.
    return {"format": FORMAT, "quantile_accuracy": ACCURACY, "features": [[n, kinds[n]] for n in features], "days": out}


def _round(value):
    """6 significant digits for fractional values (compact metadata); integers as they are."""
    if value is None or isinstance(value, (bool, int)):
        return None if value is None else int(value)
    value = float(value)
    if not math.isfinite(value):
        return None
    return float(f"{value:.6g}")


def decode(entry: dict, day: str) -> dict:
    """One day of a commit's `tally.stats` as {"rows", "features": {name: {"kind", "null_share", ...}}}."""
    d = entry["days"][day]
    rows = d["rows"]
    features = {}
    for name, k in entry["features"]:
        values = d["f"].get(name)
        if values is None:  # a day without rows
            features[name] = {"kind": k, **{f: None for f in ("null_share", "nan_share", *NUMERIC_FIELDS[2:])}}
            continue
        fields = dict(zip(NUMERIC_FIELDS if is_numeric(k) else OTHER_FIELDS, values))
        features[name] = {"kind": k, "null_share": _share(fields["nulls"], rows), "nan_share": _share(fields.get("nans"), rows),
                          **{f: fields.get(f) for f in NUMERIC_FIELDS[2:]}}
    return {"rows": rows, "features": features}


def _share(count: int | None, rows: int) -> float | None:
    return None if count is None or not rows else count / rows


def recorded(commits: list[dict]) -> dict[str, dict]:
    """Per day, the statistics of the newest tally commit that wrote it, with that commit's Delta version.

    `commits` are `store.commits(...)`, oldest first. A day rewritten by a commit without statistics has none."""
    import datetime as dt

    out: dict[str, dict] = {}
    for c in commits:
        meta = c.get("tally") or {}
        if "range" not in meta:
            continue
        entry = meta.get("stats")
        a, b = (dt.date.fromisoformat(x) for x in meta["range"])
        for i in range((b - a).days + 1):
            day = str(a + dt.timedelta(days=i))
            if entry and day in entry.get("days", {}):
                out[day] = {**decode(entry, day), "delta_version": c["version"]}
            else:
                out.pop(day, None)
    return dict(sorted(out.items()))
