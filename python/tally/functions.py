"""tally's aggregation kernels as PySpark column functions.

Each function returns a `Column` that calls the SQL function `tally_<name>` registered by `tally.session()`,
so it works in `groupBy(...).agg(...)` like `pyspark.sql.functions`. Column arguments take a `Column` or a
column name; constant arguments take Python values. Nulls are skipped (an all-null group is an empty one):
`count` and `sum` of nothing are 0, `decayed_*` 0.0, everything else null.

Result types: `sum` keeps the input kind (bigint stays bigint, decimal(p, s) gives decimal(38, s), doubles
give double); `min`/`max`/`first`/`last`/`last_k` keep the input type (integers widen to bigint, float to
double); `mean`, `variance*`, `stddev*`, `time_since_last` and `decayed_*` give double.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

from pyspark.sql import Column
from pyspark.sql import functions as F

__all__ = [
    "approx_distinct",
    "approx_percentile",
    "count",
    "decayed_count",
    "decayed_sum",
    "first",
    "last",
    "last_k",
    "max",
    "mean",
    "min",
    "stddev",
    "stddev_pop",
    "sum",
    "time_since_last",
    "top_k",
    "variance",
    "variance_pop",
]



def _col(c) -> Column:
    return c if isinstance(c, Column) else F.col(c)


def _call(name: str, *args: Column) -> Column:
    return F.call_function(f"tally_{name}", *args)


def _time(t) -> Column:
    """An as-of time: a Column, or a datetime / ISO string taken as a timestamp literal."""
    if isinstance(t, Column):
        return t
    if isinstance(t, str):
        return F.lit(t).cast("timestamp")  # a constant the kernels accept (to_timestamp(...) is not foldable)
    if isinstance(t, datetime):
        return F.lit(t if t.tzinfo else t.replace(tzinfo=timezone.utc))  # naive is UTC (DESIGN.md), never local
    raise TypeError(f"as_of must be a Column, a datetime or an ISO timestamp string, got {type(t).__name__}")


def _half_life(h) -> Column:
    """A half-life: '90s', '30m', '1h', '7d', a timedelta, or microseconds as an int."""
    if isinstance(h, timedelta):
        return F.lit(h // timedelta(microseconds=1))
    if isinstance(h, (str, int)) and not isinstance(h, bool):
        return F.lit(h)
    raise TypeError(f"half_life must be a duration string like '7d', a timedelta or microseconds, got {h!r}")


def count(col) -> Column:
    """Number of non-null values (0 for none).

    >>> df.groupBy("card_id").agg(count("amount").alias("n"))
    """
    return _call("count", _col(col))


def sum(col) -> Column:  # noqa: A001 - mirrors pyspark.sql.functions.sum
    """Exact sum: bigint for integers (raises on overflow), decimal(38, s) for decimals, else double.

    >>> df.groupBy("card_id").agg(sum("amount").alias("total"))
    """
    return _call("sum", _col(col))


def mean(col) -> Column:
    """Arithmetic mean as a double (Welford); NaN if a NaN is in the group.

    >>> df.groupBy("card_id").agg(mean("is_declined").alias("decline_rate"))
    """
    return _call("mean", _col(col))


def min(col) -> Column:  # noqa: A001
    """Smallest value, in the input's type (numbers, decimals, strings, timestamps); NaN sorts above all.

    >>> df.groupBy("card_id").agg(min("amount"))
    """
    return _call("min", _col(col))


def max(col) -> Column:  # noqa: A001
    """Largest value, in the input's type; a NaN in the group makes the max NaN (as in Spark).

    >>> df.groupBy("card_id").agg(max("merchant_id"))
    """
    return _call("max", _col(col))


def variance(col) -> Column:
    """Sample variance (n - 1), double; null for fewer than 2 values.

    >>> df.groupBy("card_id").agg(variance("amount"))
    """
    return _call("variance", _col(col))


def variance_pop(col) -> Column:
    """Population variance (n), double.

    >>> df.groupBy("card_id").agg(variance_pop("amount"))
    """
    return _call("variance_pop", _col(col))


def stddev(col) -> Column:
    """Sample standard deviation, double; null for fewer than 2 values.

    >>> df.groupBy("card_id").agg(stddev("amount"))
    """
    return _call("stddev", _col(col))


def stddev_pop(col) -> Column:
    """Population standard deviation, double.

    >>> df.groupBy("card_id").agg(stddev_pop("amount"))
    """
    return _call("stddev_pop", _col(col))


def first(col, ts) -> Column:
    """Value of the earliest event by `ts`; at equal `ts` the smallest value wins (deterministic).

    >>> df.groupBy("card_id").agg(first("merchant_id", "created"))
    """
    return _call("first", _col(col), _col(ts))


def last(col, ts) -> Column:
    """Value of the latest event by `ts`; at equal `ts` the largest value wins (deterministic).

    >>> df.groupBy("card_id").agg(last("merchant_id", "created"))
    """
    return _call("last", _col(col), _col(ts))


def last_k(col, ts, k: int) -> Column:
    """Array of the `k` most recent values by `ts`, newest first.

    >>> df.groupBy("card_id").agg(last_k("amount", "created", 3))
    """
    return _call("last_k", _col(col), _col(ts), F.lit(int(k)))


def time_since_last(ts, as_of) -> Column:
    """Seconds (double) from the latest `ts` to the constant `as_of`; null when there is no event.

    >>> df.groupBy("card_id").agg(time_since_last("created", "2024-06-01T00:00:00"))
    """
    return _call("time_since_last", _col(ts), _time(as_of))


def approx_distinct(col, lg_k: int = 12) -> Column:
    """Approximate distinct count (HyperLogLog, DataSketches), relative standard error 1.04 / sqrt(2**lg_k).

    >>> df.groupBy("card_id").agg(approx_distinct("merchant_id", lg_k=12))
    """
    return _call("approx_distinct", _col(col), F.lit(int(lg_k)))


def approx_percentile(col, quantiles: Sequence[float], k: int = 200, relative_error: float = 0.01) -> Column:
    """Approximate quantiles as array<double>, one per requested quantile (inclusive: the value of rank ceil(q n)).

    Exact while a group holds at most `k` values; beyond, each quantile is within `relative_error` (0.001 to 0.1)
    of the true one, and the minimum and maximum stay exact. The result depends only on the values, never on
    their order, so every run and every plan gives the same numbers.

    >>> df.groupBy("card_id").agg(approx_percentile("amount", [0.5, 0.99]))
    """
    qs = [quantiles] if isinstance(quantiles, (int, float)) else list(quantiles)
    return _call("approx_percentile", _col(col), F.array(*[F.lit(float(q)) for q in qs]), F.lit(int(k)),
                 F.lit(float(relative_error)))


def top_k(col, k: int = 5) -> Column:
    """The `k` most frequent values with counts, most frequent first.

    Returns array<struct<item: string, count: bigint>>.

    >>> df.groupBy("card_id").agg(top_k("merchant_id", k=3))
    """
    return _call("top_k", _col(col), F.lit(int(k)))


def decayed_sum(col, ts, half_life, as_of) -> Column:
    """Exponentially decayed sum: sum of value * 2 ** (-(as_of - ts) / half_life), as a double.

    >>> df.groupBy("card_id").agg(decayed_sum("amount", "created", "7d", "2024-06-01T00:00:00"))
    """
    return _call("decayed_sum", _col(col), _col(ts), _half_life(half_life), _time(as_of))


def decayed_count(ts, half_life, as_of) -> Column:
    """Exponentially decayed event count: sum of 2 ** (-(as_of - ts) / half_life), as a double.

    >>> df.groupBy("card_id").agg(decayed_count("created", "1h", F.current_timestamp()))
    """
    return _call("decayed_count", _col(ts), _half_life(half_life), _time(as_of))
