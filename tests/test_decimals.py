"""Decimal amounts through the sweep: exact sums at the input's scale, every value kind on decimals, and a sum
that outgrows decimal(38) stopping with an error that names the view and the feature instead of a wrong value."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import numpy as np
import oracle
import pytest
import tally as tl
from utc import utc

CARD = tl.Entity("card", keys=["card_id"])
T0 = utc(2026, 5, 3)


def test_decimal_amounts_aggregate_exactly(spark):
    rng = np.random.default_rng(23)
    n = 800
    rows = [(f"c{int(k)}", T0 + dt.timedelta(minutes=int(m)), None if rng.random() < 0.05 else Decimal(int(c)).scaleb(-2))
            for k, m, c in zip(rng.integers(0, 8, n), rng.integers(0, 3 * 24 * 60, n), rng.integers(-10**6, 10**9, n))]
    df = spark.createDataFrame(rows, "card_id string, created timestamp, amount decimal(18,2)")
    windows = ["1h", "1d", tl.Window("12h", closed="right"), None]
    v = tl.FeatureView("d", entity=CARD, source=tl.Source("s", dataframe=lambda s: df, timestamp="created"),
                       aggregations=[tl.Aggregation(fn, column="amount", windows=windows)
                                     for fn in ("sum", "mean", "min", "max", "first", "last", "variance")]
                       + [tl.Aggregation("last_k", column="amount", windows=["1d"], params={"k": 3}),
                          tl.Aggregation("top_k", column="amount", windows=["1d"], params={"k": 2}),
                          tl.Aggregation("sum", column="amount", windows=["1h"], name="sum_d", default=-1)])
    spine_rows = [(f"c{int(k)}", T0 + dt.timedelta(minutes=int(m)), i)
                  for i, (k, m) in enumerate(zip(rng.integers(0, 9, 300), rng.integers(-60, 3 * 24 * 60 + 60, 300)))]
    spine = spark.createDataFrame(spine_rows, "card_id string, ts timestamp, i int")
    out = tl.training_set(spark, spine, [v], timestamp="ts")
    types = dict(out.dtypes)
    assert types["d__sum_amount_1h"] == "decimal(38,2)" and types["d__min_amount_1d"] == "decimal(18,2)"
    assert types["d__last_amount_1d"] == "decimal(18,2)" and types["d__mean_amount_1d"] == "double"
    assert types["d__last_k_amount_1d"] == "array<decimal(18,2)>"
    got = [r.asDict(recursive=True) for r in out.orderBy("i").collect()]
    events = [{"card_id": k, "ts": oracle.micros(ts), "amount": a} for k, ts, a in rows]
    queries = [((k,), oracle.micros(ts)) for k, ts, _ in spine_rows]
    bad = oracle.mismatches(v, events, queries, got, prefix="d__")
    assert not bad, f"{len(bad)} mismatches, first: {bad[:5]}"
    sums = [g["d__sum_amount_lifetime"] for g in got]
    assert all(isinstance(x, Decimal) for x in sums) and any(x.as_tuple().exponent == -2 and x != 0 for x in sums)


def test_a_decimal_sum_beyond_38_digits_fails_naming_the_view_and_feature(spark):
    big = Decimal("9" * 38)  # decimal(38,0) holds it; the sum of two needs 39 digits
    rows = [("c1", T0, big), ("c1", T0 + dt.timedelta(minutes=1), big), ("c2", T0, Decimal(1))]
    df = spark.createDataFrame(rows, "card_id string, created timestamp, amount decimal(38,0)")
    v = tl.FeatureView("wide", entity=CARD, source=tl.Source("s", dataframe=lambda s: df, timestamp="created"),
                       aggregations=[tl.Aggregation("sum", column="amount", windows=["1d"])])
    spine = spark.createDataFrame([("c1", T0 + dt.timedelta(minutes=30)), ("c2", T0 + dt.timedelta(minutes=30))],
                                  "card_id string, ts timestamp")
    with pytest.raises(Exception) as err:  # noqa: PT011 - the type is Spark's; the message is the contract
        tl.training_set(spark, spine, [v], timestamp="ts").collect()
    text = str(err.value)
    assert "NUMERIC_VALUE_OUT_OF_RANGE" in text or "overflow" in text.lower(), text  # an error, never a wrong value or a null
    assert "view 'wide'" in text and "sum_amount_1d" in text, text  # ... that says which view and feature
