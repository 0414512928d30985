"""Delta feature tables: idempotent, chunked, resumable backfills; spec drift refused; time travel."""

from __future__ import annotations

import datetime as dt
import hashlib

import numpy as np
import oracle
import pytest
import tally as tl
from tally import store
from tally.errors import SpecChangedError
from utc import aware, midnight, utc

START = dt.date(2026, 2, 1)


def _charge_rows() -> list[tuple]:
    rng = np.random.default_rng(11)
    n = 3000
    base = utc(2026, 1, 20)
    return [(f"c{int(k)}", base + dt.timedelta(seconds=int(s)), float(round(a, 2)))
            for k, s, a in zip(rng.zipf(1.6, n) % 60, rng.integers(0, 25 * 86400, n), rng.lognormal(3, 1, n))]


CHARGES = _charge_rows()


@pytest.fixture(scope="module")
def charges(spark):
    return spark.createDataFrame(CHARGES, "card_id string, created timestamp, amount double").cache()


def oracle_events(rows=CHARGES) -> list[dict]:
    return [{"card_id": k, "ts": oracle.micros(t), "amount": a} for k, t, a in rows]


FAIL = {"after": None}


def make_view(charges, version=1, windows=("1d", "7d")):
    def read(spark):
        from pyspark.sql import functions as F

        if FAIL["after"] is None:
            return charges
        boom = F.raise_error(F.lit("injected failure"))
        return charges.withColumn("amount", F.when(F.col("created") > F.lit(FAIL["after"]), boom.cast("double"))
                                  .otherwise(F.col("amount")))

    source = tl.Source("charges", dataframe=read, timestamp="created")
    return tl.FeatureView("card_stats", entity=tl.Entity("card", keys=["card_id"]), source=source, version=version,
                          aggregations=[tl.Aggregation("count", windows=list(windows)),
                                        tl.Aggregation("sum", column="amount", windows=list(windows))], ttl="7d")


def content_hash(df) -> str:
    rows = sorted(tuple(str(x) for x in r) for r in df.drop("_computed_at").collect())
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def test_backfilling_the_same_range_twice_gives_identical_rows_and_a_new_version(spark, charges, tmp_path):
    v = make_view(charges)
    first = store.backfill(spark, v, START, START + dt.timedelta(days=5), warehouse=tmp_path, step_days=3)
    h1 = content_hash(store.read_features(spark, v, warehouse=tmp_path))
    second = store.backfill(spark, v, START, START + dt.timedelta(days=5), warehouse=tmp_path, step_days=3)
    assert [r["delta_version"] for r in first] == [0, 1] and [r["delta_version"] for r in second] == [2, 3]
    assert content_hash(store.read_features(spark, v, warehouse=tmp_path)) == h1
    assert content_hash(store.read_features(spark, v, warehouse=tmp_path, version=1)) == h1


def test_overlapping_range_replaces_only_its_days(spark, charges, tmp_path):
    v = make_view(charges)
    store.backfill(spark, v, START, START + dt.timedelta(days=5), warehouse=tmp_path, step_days=6)
    before = store.read_features(spark, v, warehouse=tmp_path)
    before_rows = {str(d): content_hash(before.where(f"ds = '{d}'")) for d in
                   [START + dt.timedelta(days=i) for i in range(6)]}
    store.backfill(spark, v, START + dt.timedelta(days=4), START + dt.timedelta(days=8), warehouse=tmp_path, step_days=5)
    after = store.read_features(spark, v, warehouse=tmp_path)
    days = sorted(str(r.ds) for r in after.select("ds").distinct().collect())
    assert days == [str(START + dt.timedelta(days=i)) for i in range(9)]
    for d, h in before_rows.items():
        assert content_hash(after.where(f"ds = '{d}'")) == h, d
    ops = store.commits(spark, store.table_path(tmp_path, v.name, v.version))
    assert [c["tally"]["range"] for c in ops] == [[str(START), str(START + dt.timedelta(days=5))],
                                                  [str(START + dt.timedelta(days=4)), str(START + dt.timedelta(days=8))]]


def test_failure_in_chunk_k_keeps_earlier_commits_and_resume_matches_a_clean_run(spark, charges, tmp_path):
    v = make_view(charges)
    end = START + dt.timedelta(days=8)
    clean = tmp_path / "clean"
    store.backfill(spark, v, START, end, warehouse=clean, step_days=3)
    broken = tmp_path / "broken"
    FAIL["after"] = midnight(START + dt.timedelta(days=3)) + dt.timedelta(hours=12)  # read first by chunk 2
    try:
        with pytest.raises(Exception, match="injected failure"):
            store.backfill(spark, v, START, end, warehouse=broken, step_days=3)
    finally:
        FAIL["after"] = None
    path = store.table_path(broken, v.name, v.version)
    assert [c["tally"]["range"][0] for c in store.commits(spark, path)] == [str(START)]
    resumed = store.backfill(spark, v, START, end, warehouse=broken, step_days=3, resume=True)
    assert [r["status"] for r in resumed] == ["skipped", "written", "written"]
    assert content_hash(store.read_features(spark, v, warehouse=broken)) == \
        content_hash(store.read_features(spark, v, warehouse=clean))


def test_changed_spec_under_the_same_version_is_refused(spark, charges, tmp_path):
    store.backfill(spark, make_view(charges), START, START, warehouse=tmp_path)
    changed = make_view(charges, windows=("1d", "14d"))
    with pytest.raises(SpecChangedError, match="bump version"):
        store.backfill(spark, changed, START, START, warehouse=tmp_path)
    store.backfill(spark, make_view(charges, version=2, windows=("1d", "14d")), START, START, warehouse=tmp_path)
    assert set(store.stored_versions(spark, tmp_path, "card_stats")) == {1, 2}


def test_snapshot_rows_and_values_equal_the_oracle_for_every_key_and_day(spark, charges, tmp_path):
    """Every card of the source (and one it never saw) on every backfilled day: a row exactly when the card had an
    event within the ttl before D+1 00:00 UTC, and then every feature equal to the brute-force oracle at that
    instant."""
    source = tl.Source("charges", dataframe=lambda s: charges, timestamp="created")
    amount = {"column": "amount"}
    v = tl.FeatureView("card_full", entity=tl.Entity("card", keys=["card_id"]), source=source, ttl="3d", aggregations=[
        tl.Aggregation("count", windows=["1d", "7d"]), tl.Aggregation("sum", **amount, windows=["1d", "7d"]),
        tl.Aggregation("mean", **amount, windows=["1d"]), tl.Aggregation("max", **amount, windows=["6h"], default=-1.0),
        tl.Aggregation("last", **amount, windows=["1d"]), tl.Aggregation("time_since_last", windows=["7d"]),
        tl.Aggregation("count", windows=[tl.Window("1d", delay="1d")], name="count_yesterday"),
    ])
    days = [START + dt.timedelta(days=i) for i in range(4)]
    store.backfill(spark, v, days[0], days[-1], warehouse=tmp_path, step_days=3)
    rows = {(r.card_id, r.ds): r.asDict() for r in store.read_features(spark, v, warehouse=tmp_path).collect()}
    cards = sorted({k for k, _, _ in CHARGES}) + ["never_seen"]
    events = oracle_events()
    queries = [((card,), oracle.micros(midnight(d + dt.timedelta(days=1)))) for d in days for card in cards]
    want = oracle.features(v, events, queries)
    ttl = v.ttl_us
    seen = [any(e["card_id"] == key[0] and t - ttl <= e["ts"] < t for e in events) for key, t in queries]
    keys = [(key[0], d) for d in days for key in [(c,) for c in cards]]
    assert {k for k, s in zip(keys, seen) if s} == set(rows), "rows exist exactly for cards with an event in the ttl"
    assert 20 < len(rows) < len(keys)  # the data has both kinds on these days
    for d in days:  # a row of day D holds the values as of D+1 00:00 UTC
        assert all(aware(r["snapshot_ts"]) == midnight(d + dt.timedelta(days=1)) for (_, day), r in rows.items() if day == d)
    present = [(q, rows[k]) for q, k, s in zip(queries, keys, seen) if s]
    bad = oracle.mismatches(v, events, [q for q, _ in present], [r for _, r in present])
    assert not bad, f"{len(bad)} mismatches, first: {bad[:5]}"
    assert all(all(value is None for value in w.values()) for w, s in zip(want, seen) if not s)


def test_array_features_backfill_in_several_chunks(spark, charges, tmp_path):
    source = tl.Source("charges", dataframe=lambda s: charges, timestamp="created")
    v = tl.FeatureView("card_tickets", entity=tl.Entity("card", keys=["card_id"]), source=source, ttl="7d",
                       aggregations=[tl.Aggregation("approx_percentile", column="amount", windows=["7d"],
                                                    params={"quantiles": [0.5, 0.9]}, name="p50_p90")])
    results = store.backfill(spark, v, START, START + dt.timedelta(days=3), warehouse=tmp_path, step_days=2)
    assert [r["status"] for r in results] == ["written", "written"]
    table = store.read_features(spark, v, warehouse=tmp_path).collect()
    assert {r.ds for r in table} == {START + dt.timedelta(days=i) for i in range(4)}
    queries = [((r.card_id,), oracle.micros(aware(r.snapshot_ts))) for r in table]
    bad = oracle.mismatches(v, oracle_events(), queries, [r.asDict() for r in table])
    assert not bad, f"{len(bad)} mismatches, first: {bad[:5]}"


def test_days_before_the_first_event_backfill_empty_and_count_as_covered(spark, charges, tmp_path):
    # the charges start on 2026-01-20: the day before reads no rows, which is not an empty source; Delta commits
    # nothing for an empty write into an existing table, so the day must still be recorded as covered
    view = make_view(charges)
    path = store.table_path(tmp_path, view.name, view.version)
    day, before = dt.date(2026, 1, 25), dt.date(2026, 1, 19)
    rows = store.backfill(spark, view, day, day, warehouse=tmp_path)[0]["rows"]
    [result] = store.backfill(spark, view, before, before, warehouse=tmp_path)
    assert result["status"] == "written" and not result["rows"]  # an empty commit reports no row count
    assert {str(day), str(before)} <= store.covered_days(spark, path)
    assert spark.read.format("delta").load(str(path)).count() == rows > 0
    assert [r["status"] for r in store.backfill(spark, view, before, before, warehouse=tmp_path, resume=True)] == ["skipped"]
