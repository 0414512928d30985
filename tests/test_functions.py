"""Every tally SQL function, called from Python (tally.functions and spark.sql), against pandas on the
same seeded data with nulls, ties and several groups: exact for exact kernels, within documented bounds for
sketches."""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
import tally.functions as tf
from pyspark.sql import functions as F

AS_OF = datetime(2024, 3, 1, tzinfo=timezone.utc)
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
HALF_LIFE = timedelta(days=7)
QS = [0.1, 0.5, 0.9]
WORDS = ["", "a", "ab", "B", "é", "z", "card-17", "card-3"]
SCHEMA = "k string, l bigint, i int, d double, m decimal(12,2), s string, ts timestamp"


@pytest.fixture(scope="module")
def data(spark):
    rng = random.Random(42)
    rows = []
    for k, n in [("a", 600), ("b", 250), ("c", 1), ("d", 40), ("e", 300)]:
        for _ in range(n):
            def maybe(v):
                return None if rng.random() < 0.1 else v

            step = 6 if rng.random() < 0.5 else 1  # coarse steps make many ties
            ts = T0 + timedelta(hours=rng.randrange(0, 24 * 50, step))
            rows.append((
                k, maybe(rng.randrange(-10**9, 10**9)), maybe(rng.randrange(-1000, 1000)),
                maybe(rng.gauss(100, 40)),
                maybe(Decimal(rng.randrange(-10**6, 10**6)).scaleb(-2)), maybe(rng.choice(WORDS)), ts,
            ))
    rows.append(("f", None, None, None, None, None, T0))  # an all-null group
    pdf = pd.DataFrame(rows, columns=["k", "l", "i", "d", "m", "s", "ts"])
    return pdf, spark.createDataFrame(rows, SCHEMA)


def _aggs():
    return [
        tf.count("d").alias("count_d"),
        tf.sum("l").alias("sum_l"), tf.sum("i").alias("sum_i"),
        tf.sum("d").alias("sum_d"), tf.sum("m").alias("sum_m"),
        tf.mean("d").alias("mean_d"), tf.variance("d").alias("var_d"), tf.variance_pop("l").alias("varp_l"),
        tf.stddev("m").alias("std_m"), tf.stddev_pop("d").alias("stdp_d"),
        tf.min("s").alias("min_s"), tf.max("l").alias("max_l"),
        tf.min("m").alias("min_m"), tf.max("d").alias("max_d"),
        tf.first("s", "ts").alias("first_s"), tf.last("l", "ts").alias("last_l"),
        tf.last_k("s", "ts", 3).alias("last3_s"),
        tf.time_since_last("ts", AS_OF).alias("tsl"),
        tf.approx_distinct("l").alias("ad_l"), tf.approx_distinct("s", lg_k=10).alias("ad_s"),
        tf.approx_percentile("d", QS).alias("pct_d"),
        tf.top_k("s", k=3).alias("top_s"),
        tf.decayed_sum("d", "ts", "7d", AS_OF).alias("dsum_d"),
        tf.decayed_count("ts", HALF_LIFE, AS_OF).alias("dcount"),
    ]


SQL = """
SELECT k, tally_count(d) count_d,
  tally_sum(l) sum_l, tally_sum(i) sum_i, tally_sum(d) sum_d, tally_sum(m) sum_m,
  tally_mean(d) mean_d, tally_variance(d) var_d, tally_variance_pop(l) varp_l, tally_stddev(m) std_m,
  tally_stddev_pop(d) stdp_d, tally_min(s) min_s, tally_max(l) max_l, tally_min(m) min_m, tally_max(d) max_d,
  tally_first(s, ts) first_s, tally_last(l, ts) last_l, tally_last_k(s, ts, 3) last3_s,
  tally_time_since_last(ts, TIMESTAMP'2024-03-01 00:00:00') tsl,
  tally_approx_distinct(l) ad_l, tally_approx_distinct(s, 10) ad_s,
  tally_approx_percentile(d, array(0.1, 0.5, 0.9)) pct_d, tally_top_k(s, 3) top_s,
  tally_decayed_sum(d, ts, '7d', TIMESTAMP'2024-03-01 00:00:00') dsum_d,
  tally_decayed_count(ts, '7d', TIMESTAMP'2024-03-01 00:00:00') dcount
FROM events GROUP BY k
"""


@pytest.fixture(scope="module", params=["functions", "sql"])
def result(request, spark, data):
    pdf, df = data
    if request.param == "functions":
        out = df.groupBy("k").agg(*_aggs())
    else:
        df.createOrReplaceTempView("events")
        out = spark.sql(SQL)
    return out, {r["k"]: r.asDict(recursive=True) for r in out.collect()}


def _close(a, b, rel=1e-9):
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-9)


def _by_time(g, col, newest_first):
    """Values ordered like the kernels: by (ts, value); strings by code point."""
    events = zip(g["ts"], g[col], strict=True)
    pairs = sorted(((t, v) for t, v in events if v is not None and not pd.isna(v)), reverse=newest_first)
    return [v for _, v in pairs]


def test_exact_kernels_match_pandas(data, result):
    pdf, _ = data
    _, got = result
    for k, g in pdf.groupby("k"):
        r = got[k]
        d = g["d"].dropna().astype(float)
        l_ = g["l"].dropna().astype("int64")
        m = [x for x in g["m"] if x is not None]
        s = [x for x in g["s"] if x is not None]
        assert r["count_d"] == len(d)
        assert r["sum_l"] == int(l_.sum()) and r["sum_i"] == int(g["i"].dropna().sum())
        assert _close(r["sum_d"], float(d.sum()))
        assert r["sum_m"] == sum(m, Decimal("0.00"))
        assert _close(r["mean_d"], d.mean() if len(d) else None)
        assert _close(r["var_d"], d.var(ddof=1) if len(d) > 1 else None, 1e-7)
        assert _close(r["varp_l"], float(np.var(l_.astype(float))) if len(l_) else None, 1e-7)
        std_m = float(np.std([float(x) for x in m], ddof=1)) if len(m) > 1 else None
        assert _close(r["std_m"], std_m, 1e-7)
        assert _close(r["stdp_d"], float(np.std(d, ddof=0)) if len(d) else None, 1e-7)
        assert r["min_s"] == (min(s, key=lambda x: [ord(c) for c in x]) if s else None)
        assert r["max_l"] == (int(l_.max()) if len(l_) else None)
        assert r["min_m"] == (min(m) if m else None)
        assert _close(r["max_d"], d.max() if len(d) else None)
        s_by_time = _by_time(g, "s", newest_first=False)
        assert r["first_s"] == (s_by_time[0] if s_by_time else None)
        l_by_time = _by_time(g, "l", newest_first=True)
        assert r["last_l"] == (l_by_time[0] if l_by_time else None)
        assert r["last3_s"] == (_by_time(g, "s", newest_first=True)[:3] or None)
        assert _close(r["tsl"], (AS_OF - g["ts"].max().to_pydatetime()).total_seconds())
        counts = pd.Series(s, dtype=object).value_counts()
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        assert [(t["item"], t["count"]) for t in r["top_s"] or []] == top
        ages = [(AS_OF - t.to_pydatetime()) / HALF_LIFE for t in g["ts"]]
        dsum = sum(v * 2 ** -a for v, a in zip(g["d"], ages, strict=True) if v is not None and not pd.isna(v))
        assert _close(r["dsum_d"], dsum)
        assert _close(r["dcount"], sum(2 ** -a for a in ages))


def test_sketches_within_their_bounds(data, result):
    pdf, _ = data
    _, got = result
    for k, g in pdf.groupby("k"):
        r = got[k]
        for col, lg_k in [("l", 12), ("s", 10)]:
            exact = g[col].dropna().nunique()
            if exact == 0:
                assert r[f"ad_{col}"] is None
            else:
                assert abs(r[f"ad_{col}"] - exact) <= max(1, 3 * 1.04 / math.sqrt(2**lg_k) * exact)
        d = np.sort(g["d"].dropna().astype(float).to_numpy())
        if len(d) == 0:
            assert r["pct_d"] is None
            continue
        for q, x in zip(QS, r["pct_d"], strict=True):
            rank = np.searchsorted(d, x, side="right") / len(d)
            assert abs(rank - q) <= 0.0133 + 1 / len(d), (k, q, x, rank)


def test_types_follow_the_input(result):
    out, _ = result
    types = dict(out.dtypes)
    assert types["sum_l"] == "bigint" and types["sum_i"] == "bigint"
    assert types["sum_m"] == "decimal(38,2)" and types["min_m"] == "decimal(12,2)"
    assert types["sum_d"] == "double" and types["mean_d"] == "double" and types["std_m"] == "double"
    assert types["min_s"] == "string" and types["max_l"] == "bigint" and types["last3_s"] == "array<string>"
    assert types["pct_d"] == "array<double>"
    assert types["top_s"] == "array<struct<item:string,count:bigint>>"


def test_empty_group_gives_zero_for_count_and_sum_and_null_otherwise(result):
    _, got = result
    r = got["f"]
    assert r["count_d"] == 0 and r["sum_l"] == 0 and r["sum_m"] == Decimal("0.00")
    assert r["mean_d"] is None and r["min_s"] is None and r["ad_l"] is None and r["pct_d"] is None
    assert r["top_s"] is None and r["last3_s"] is None and r["dsum_d"] == 0.0


@pytest.mark.parametrize(
    "expr, words",
    [
        ("tally_approx_distinct(s, 40)", ["tally_approx_distinct", "lg_k", "40"]),
        ("tally_last_k(s, ts)", ["tally_last_k", "expected 3 arguments"]),
        ("tally_decayed_sum(d, ts, '7 days', current_timestamp())", ["tally_decayed_sum", "7 days"]),
        ("tally_mean(s)", ["tally_mean", "STRING"]),
        ("tally_first(s, d)", ["tally_first", "'ts'"]),
        ("tally_approx_percentile(d, array(1.5))", ["tally_approx_percentile", "quantiles"]),
    ],
)
def test_bad_argument_fails_clearly(data, expr, words):
    _, df = data
    with pytest.raises(Exception) as err:
        df.groupBy("k").agg(F.expr(expr)).collect()
    assert all(w in str(err.value) for w in words), str(err.value)


def test_python_wrappers_are_exported():
    assert sorted(tf.__all__) == sorted([
        "approx_distinct", "approx_percentile", "count", "decayed_count", "decayed_sum", "first", "last",
        "last_k", "max", "mean", "min", "stddev", "stddev_pop", "sum", "time_since_last", "top_k", "variance",
        "variance_pop",
    ])
    for name in tf.__all__:
        assert ">>>" in getattr(tf, name).__doc__, name


def test_as_of_given_naive_or_as_a_string_means_utc(data):
    """DESIGN.md: naive timestamps are UTC. A naive datetime or an ISO string as `as_of` is the same instant as
    the aware UTC one, whatever the process's local zone."""
    _, df = data
    forms = [AS_OF, AS_OF.replace(tzinfo=None), "2024-03-01 00:00:00", "2024-03-01T05:30:00+05:30"]
    row = df.agg(*[tf.time_since_last("ts", f).alias(f"t{i}") for i, f in enumerate(forms)],
                 *[tf.decayed_count("ts", "7d", f).alias(f"c{i}") for i, f in enumerate(forms)]).first()
    assert len({row[f"t{i}"] for i in range(len(forms))}) == 1, row
    assert len({row[f"c{i}"] for i in range(len(forms))}) == 1, row
    latest = max(r.ts for r in df.select("ts").collect()).astimezone(timezone.utc)
    assert row["t0"] == (AS_OF - latest).total_seconds()
