"""Delta feature tables: idempotent, chunked, resumable backfills; spec drift refused; time travel."""

from __future__ import annotations

import datetime as dt
import hashlib

import numpy as np
import pytest
import tally as tl
from tally import store
from tally.errors import SpecChangedError

START = dt.date(2026, 2, 1)


@pytest.fixture(scope="module")
def charges(spark):
    rng = np.random.default_rng(11)
    n = 3000
    base = dt.datetime(2026, 1, 20)
    rows = [(f"c{int(k)}", base + dt.timedelta(seconds=int(s)), float(round(a, 2)))
            for k, s, a in zip(rng.zipf(1.6, n) % 60, rng.integers(0, 25 * 86400, n), rng.lognormal(3, 1, n))]
    return spark.createDataFrame(rows, "card_id string, created timestamp, amount double").cache()


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
    FAIL["after"] = dt.datetime.combine(START + dt.timedelta(days=3), dt.time(12))  # read first by chunk 2
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


def test_snapshot_values_equal_the_engine_at_midnight(spark, charges, tmp_path):
    v = make_view(charges)
    store.backfill(spark, v, START, START + dt.timedelta(days=2), warehouse=tmp_path)
    table = store.read_features(spark, v, warehouse=tmp_path)
    spine = table.select("card_id", "snapshot_ts")
    engine = tl.training_set(spark, spine, [v], timestamp="snapshot_ts")
    want = {(r.card_id, r.snapshot_ts): (r.card_stats__count_1d, r.card_stats__sum_amount_7d) for r in engine.collect()}
    got = {(r.card_id, r.snapshot_ts): (r.count_1d, r.sum_amount_7d) for r in table.collect()}
    assert got == want and len(got) > 20
    # and a row of day D holds the values as of D+1 00:00
    assert all(r.snapshot_ts == dt.datetime.combine(r.ds + dt.timedelta(days=1), dt.time()) for r in table.collect())


def test_snapshot_rows_exist_exactly_for_entities_seen_within_ttl(spark, charges, tmp_path):
    v = make_view(charges)
    day = START + dt.timedelta(days=3)
    store.backfill(spark, v, day, day, warehouse=tmp_path)
    got = {r.card_id for r in store.read_features(spark, v, warehouse=tmp_path).collect()}
    midnight = dt.datetime.combine(day + dt.timedelta(days=1), dt.time())
    want = {r.card_id for r in charges.where(
        (charges.created < midnight) & (charges.created >= midnight - dt.timedelta(days=7))).select("card_id").collect()}
    assert got == want


def test_array_features_backfill_in_several_chunks(spark, charges, tmp_path):
    source = tl.Source("charges", dataframe=lambda s: charges, timestamp="created")
    v = tl.FeatureView("card_tickets", entity=tl.Entity("card", keys=["card_id"]), source=source, ttl="7d",
                       aggregations=[tl.Aggregation("approx_percentile", column="amount", windows=["7d"],
                                                    params={"quantiles": [0.5, 0.9]}, name="p50_p90")])
    results = store.backfill(spark, v, START, START + dt.timedelta(days=3), warehouse=tmp_path, step_days=2)
    assert [r["status"] for r in results] == ["written", "written"]
    row = store.read_features(spark, v, warehouse=tmp_path).where("p50_p90 IS NOT NULL").first()
    assert len(row.p50_p90) == 2 and row.p50_p90[0] <= row.p50_p90[1]
