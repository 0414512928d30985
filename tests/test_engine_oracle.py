"""The sweep engine against the brute-force oracle (tests/oracle.py) on seeded random data with hot keys and ties:
every function tally registers, over every kind of window, with and without available_at and ttl, on keys swept
whole and on keys split into time buckets."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import tally as tl
from oracle import micros, mismatches
from tally import kernels
from tally.definitions import FUNCTIONS
from utc import utc

WINDOWS = [
    tl.Window("10m"), tl.Window("1h", closed="right"), tl.Window("1d", delay="1h"),
    tl.Window("6h", delay="30m", closed="right"), tl.Window(None), tl.Window(None, delay="2h", closed="right"),
]
# Without lifetime windows a key can be split into time buckets (a lifetime window needs all of its history).
BOUNDED = [w for w in WINDOWS if w.length is not None]
EPOCH = utc(2026, 1, 1)
MCC = ["5411", "5812", "5999", "4829", "7995", "5411x", "Z", "a", "é"]

# Every registered function with the columns (and parameters) it is checked on. A function missing here fails
# the test by name: the oracle must grow with the kernel library.
CASES: dict[str, list[dict]] = {
    "count": [{}, {"column": "amount"}],
    "sum": [{"column": "amount"}, {"column": "qty"}],
    "mean": [{"column": "amount"}, {"column": "qty"}],
    "min": [{"column": "amount"}, {"column": "qty"}, {"column": "mcc"}],
    "max": [{"column": "amount"}, {"column": "mcc"}],
    "variance": [{"column": "amount"}, {"column": "qty"}],
    "variance_pop": [{"column": "amount"}],
    "stddev": [{"column": "qty"}],
    "stddev_pop": [{"column": "amount"}],
    "first": [{"column": "amount"}, {"column": "mcc"}],
    "last": [{"column": "qty"}, {"column": "mcc"}],
    "last_k": [{"column": "mcc", "params": {"k": 3}}, {"column": "amount", "params": {"k": 2}}],
    "time_since_last": [{}],
    "approx_distinct": [{"column": "mcc"}, {"column": "qty", "params": {"lg_k": 10}}],
    "approx_percentile": [{"column": "amount", "params": {"quantiles": [0.0, 0.1, 0.5, 0.9, 1.0]}}],
    # k sizes the sketch's map: with 55 distinct quantities, k=5 keeps every count exact (k=2 would not)
    "top_k": [{"column": "mcc", "params": {"k": 3}}, {"column": "qty", "params": {"k": 5}}],
    "decayed_sum": [{"column": "amount", "params": {"half_life": "6h"}}],
    "decayed_count": [{"params": {"half_life": "2h"}}],
}


def test_every_registered_function_has_an_oracle_case():
    assert sorted(CASES) == sorted(FUNCTIONS), \
        f"functions without an oracle case: {sorted(set(FUNCTIONS) - set(CASES))}; unknown: {sorted(set(CASES) - set(FUNCTIONS))}"


def _aggregations(windows) -> list[tl.Aggregation]:
    out = []
    for fn in FUNCTIONS:
        for i, case in enumerate(CASES.get(fn, [])):
            out.append(tl.Aggregation(fn, column=case.get("column"), windows=windows, params=case.get("params", {}),
                                      name=f"{fn}_{case.get('column') or 'rows'}_{i}"))
    return out


def _events(seed: int, n: int, with_avail: bool) -> list[dict]:
    rng = np.random.default_rng(seed)
    keys = np.where(rng.random(n) < 0.5, "hot", np.char.add("k", rng.integers(0, 40, n).astype(str)))
    minutes = rng.integers(0, 3 * 24 * 60, n)  # a coarse grid: many equal timestamps
    amount = np.round(rng.lognormal(3, 1, n), 2)
    qty = rng.integers(-5, 50, n)
    mcc = rng.choice(MCC, n)
    lag = rng.integers(-30, 6 * 60, n)
    nulls = rng.random((3, n)) < 0.1
    out = []
    for i in range(n):
        created = EPOCH + dt.timedelta(minutes=int(minutes[i]))
        # a fifth of the events are known when they happen (a null available_at is refused as a data error)
        known = None if not with_avail else created if rng.random() < 0.2 else created + dt.timedelta(minutes=int(lag[i]))
        out.append({"card_id": str(keys[i]), "created": created, "known": known,
                    "amount": None if nulls[0, i] else float(amount[i]), "qty": None if nulls[1, i] else int(qty[i]),
                    "mcc": None if nulls[2, i] else str(mcc[i])})
    return out


def _spine(seed: int, n: int) -> list[dict]:
    rng = np.random.default_rng(seed + 1)
    keys = np.where(rng.random(n) < 0.4, "hot", np.char.add("k", rng.integers(0, 45, n).astype(str)))
    minutes = rng.integers(-60, 3 * 24 * 60 + 600, n)
    return [{"card_id": str(k), "ts": EPOCH + dt.timedelta(minutes=int(m)), "row_id": i}
            for i, (k, m) in enumerate(zip(keys, minutes))]


@pytest.mark.parametrize("seed,with_avail,ttl,split", [
    (1, False, None, False), (2, True, None, False), (3, False, "12h", False), (4, True, "1d", False),
    (5, True, "1d", True),
], ids=["plain", "available_at", "ttl", "available_at-ttl", "available_at-ttl-split"])
def test_engine_equals_the_brute_force_oracle(spark, seed, with_avail, ttl, split):
    events = _events(seed, 1200, with_avail)
    spine = _spine(seed, 400)
    schema = "card_id string, created timestamp, known timestamp, amount double, qty bigint, mcc string"
    sdf = spark.createDataFrame([tuple(e.values()) for e in events], schema)
    source = tl.Source("charges", dataframe=lambda s: sdf, timestamp="created", available_at="known" if with_avail else None)
    view = tl.FeatureView("v", entity=tl.Entity("card", keys=["card_id"]), source=source, ttl=ttl,
                          aggregations=_aggregations(BOUNDED if split else WINDOWS))
    spark.conf.set("spark.tally.sweep.split", "always" if split else "off")
    spark.conf.set("spark.tally.sweep.splitSample", "1.0")
    try:
        if split:
            assert [h["key"] for h in kernels.hot_keys(spark, sdf, view)] == [["hot"]], "the hot card was not split"
        spine_df = spark.createDataFrame([tuple(r.values()) for r in spine], "card_id string, ts timestamp, row_id bigint")
        got = [r.asDict(recursive=True) for r in tl.training_set(spark, spine_df, [view], timestamp="ts").orderBy("row_id").collect()]
    finally:
        spark.conf.unset("spark.tally.sweep.split")
        spark.conf.unset("spark.tally.sweep.splitSample")
    assert [g["row_id"] for g in got] == [r["row_id"] for r in spine]
    oracle_events = [{**e, "ts": micros(e["created"]), "avail": None if e["known"] is None else micros(e["known"])}
                     for e in events]
    queries = [((r["card_id"],), micros(r["ts"])) for r in spine]
    bad = mismatches(view, oracle_events, queries, got, prefix="v__")
    by_feature = sorted({m[0] for m in bad})
    assert not bad, f"{len(bad)} mismatches in {by_feature}; first: {bad[:5]}"
    # every function was really compared: each appears among the view's features
    assert {f.function for f in view.features} == set(FUNCTIONS)


@pytest.mark.parametrize("split", [False, True], ids=["one-sweep", "hot-keys-one-view-at-a-time"])
def test_views_sharing_a_key_are_swept_together_and_each_equals_the_oracle(spark, split):
    """Views with the same keys share one sweep (the spine shuffled and sorted once, each view's events with their
    own columns, availability and ttl); with hot keys split by each view's own reach they are swept one at a time.
    Either way each view equals the oracle, with the spine a frame of its own and with the spine one view's source,
    and a view of another key between them keeps the columns in the order asked for."""
    windows = BOUNDED if split else WINDOWS
    events = _events(11, 1200, True)
    refunds = [{"card_id": e["card_id"], "refunded": e["created"], "amount": e["amount"]} for e in _events(12, 300, False)]
    rng = np.random.default_rng(13)
    for i, e in enumerate(events):
        e["row_id"], e["mcc"] = i, str(rng.choice(MCC))
    charges_df = spark.createDataFrame(
        [tuple(e.values()) for e in events],
        "card_id string, created timestamp, known timestamp, amount double, qty bigint, mcc string, row_id bigint")
    refunds_df = spark.createDataFrame([tuple(r.values()) for r in refunds], "card_id string, refunded timestamp, amount double")
    charges = tl.Source("charges", dataframe=lambda s: charges_df, timestamp="created", available_at="known")
    refund_source = tl.Source("refunds", dataframe=lambda s: refunds_df, timestamp="refunded")
    card, mcc = tl.Entity("card", keys=["card_id"]), tl.Entity("mcc", keys=["mcc"])
    spending = tl.FeatureView("spending", entity=card, source=charges, ttl="1d", aggregations=_aggregations(windows))
    refunded = tl.FeatureView("refunded", entity=card, source=refund_source, ttl="12h", aggregations=[
        tl.Aggregation(fn, column=col, windows=windows, name=f"{fn}_{col or 'rows'}")
        for fn, col in [("count", None), ("sum", "amount"), ("max", "amount"), ("time_since_last", None)]])
    by_mcc = tl.FeatureView("by_mcc", entity=mcc, source=charges, aggregations=[
        tl.Aggregation("count", windows=windows, name="n"), tl.Aggregation("mean", column="amount", windows=windows)])
    spine = [{**r, "mcc": str(m)} for r, m in zip(_spine(11, 400), rng.choice(MCC, 400))]
    spine_df = spark.createDataFrame([tuple(r.values()) for r in spine], "card_id string, ts timestamp, row_id bigint, mcc string")
    oracle_events = [{**e, "ts": micros(e["created"]), "avail": micros(e["known"])} for e in events]
    oracle_refunds = [{**r, "ts": micros(r["refunded"]), "avail": None} for r in refunds]
    spark.conf.set("spark.tally.sweep.split", "always" if split else "off")
    spark.conf.set("spark.tally.sweep.splitSample", "1.0")
    try:
        if split:
            assert [h["key"] for h in kernels.hot_keys(spark, charges_df, spending)] == [["hot"]]
        for rows, frame, ts in [(spine, spine_df, "ts"), (events, charges_df, "created")]:
            out = tl.training_set(spark, frame, [spending, by_mcc, refunded], timestamp=ts)
            added = [c for c in out.columns if c not in frame.columns]
            assert added == ([f"spending__{f.name}" for f in spending.features] + [f"by_mcc__{f.name}" for f in by_mcc.features]
                             + [f"refunded__{f.name}" for f in refunded.features])
            got = [r.asDict(recursive=True) for r in out.orderBy("row_id").collect()]
            assert [g["row_id"] for g in got] == [r["row_id"] for r in rows]
            at = [micros(r[ts]) for r in rows]
            for view, evs, key in [(spending, oracle_events, "card_id"), (refunded, oracle_refunds, "card_id"),
                                   (by_mcc, oracle_events, "mcc")]:
                bad = mismatches(view, evs, [((r[key],), t) for r, t in zip(rows, at)], got, prefix=f"{view.name}__")
                assert not bad, f"{view.name} with spine {ts}: {len(bad)} mismatches; first: {bad[:5]}"
    finally:
        spark.conf.unset("spark.tally.sweep.split")
        spark.conf.unset("spark.tally.sweep.splitSample")
