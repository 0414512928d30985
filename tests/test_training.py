"""Point-in-time training sets: snapshot as-of joins, mixed accuracies, leakage guards, manifests and rebuilds."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
import tally as tl
from click.testing import CliRunner
from tally import store
from tally.cli import cli
from tally.errors import DataError, RegistryError

CARD = tl.Entity("card", keys=["card_id"])
D = dt.date(2026, 4, 10)


def at(day_offset: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0) -> dt.datetime:
    return dt.datetime.combine(D + dt.timedelta(days=day_offset), dt.time(hour, minute, second, micro))


EVENTS = [("c1", at(-3, 10), 1.0), ("c1", at(-1, 23, 59, 59, 999999), 2.0), ("c1", at(0, 0), 4.0),
          ("c1", at(0, 12), 8.0), ("c2", at(-20, 5), 16.0)]


@pytest.fixture(scope="module")
def views(spark, tmp_path_factory):
    df = spark.createDataFrame(EVENTS, "card_id string, created timestamp, amount double")
    src = tl.Source("charges", dataframe=lambda s: df, timestamp="created")
    aggs = [tl.Aggregation("sum", column="amount", windows=["7d"]), tl.Aggregation("count", windows=["7d"])]
    snap = tl.FeatureView("card_daily", entity=CARD, source=src, aggregations=aggs, accuracy="snapshot", ttl="7d")
    temp = tl.FeatureView("card_live", entity=CARD, source=src, aggregations=aggs)
    wh = tmp_path_factory.mktemp("wh")
    store.backfill(spark, snap, D - dt.timedelta(days=5), D + dt.timedelta(days=1), warehouse=wh)
    return snap, temp, wh


def spine(spark, rows):
    return spark.createDataFrame(rows, "id int, card_id string, ts timestamp, label int")


def test_snapshot_join_reads_the_row_of_the_previous_day_at_and_around_midnight(spark, views):
    snap, _, wh = views
    rows = [(1, "c1", at(0, 0), 0),               # exactly midnight of D: values as of D 00:00 -> events before it
            (2, "c1", at(0, 0, 0, 0, 1), 0),      # a microsecond later: still D's snapshot (the 00:00 event excluded)
            (3, "c1", at(0, 23, 59, 59), 0),      # end of D: still the D 00:00 snapshot
            (4, "c1", at(1, 0), 0),               # D+1 00:00: includes the events of D
            (5, "c1", at(-1, 23, 59, 59), 0)]     # just before midnight: the D-1 00:00 snapshot
    out = tl.training_set(spark, spine(spark, rows), [snap], timestamp="ts", warehouse=wh).orderBy("id").collect()
    assert [r.card_daily__sum_amount_7d for r in out] == [3.0, 3.0, 3.0, 15.0, 1.0]
    assert [r.card_daily__count_7d for r in out] == [2, 2, 2, 4, 1]


def test_snapshot_ttl_gives_null_for_entities_without_recent_events(spark, views):
    snap, _, wh = views
    out = tl.training_set(spark, spine(spark, [(1, "c2", at(0, 9), 1), (2, "zz", at(0, 9), 0)]), [snap],
                          timestamp="ts", warehouse=wh).orderBy("id").collect()
    assert [r.card_daily__sum_amount_7d for r in out] == [None, None]


def test_snapshot_days_not_backfilled_are_refused_listing_them(spark, views):
    snap, _, wh = views
    rows = [(1, "c1", at(5, 1), 0), (2, "c1", at(-30, 1), 0)]
    with pytest.raises(DataError, match="does not cover 2 day") as err:
        tl.training_set(spark, spine(spark, rows), [snap], timestamp="ts", warehouse=wh)
    assert str(D + dt.timedelta(days=4)) in str(err.value) and str(D - dt.timedelta(days=31)) in str(err.value)
    out = tl.training_set(spark, spine(spark, rows), [snap], timestamp="ts", warehouse=wh, allow_missing=True)
    assert out.count() == 2


def test_temporal_and_snapshot_views_on_one_spine_keep_rows_and_column_order(spark, views):
    snap, temp, wh = views
    rows = [(i, "c1", at(0, 6 + i), i % 2) for i in range(5)] + [(9, "c1", at(0, 6), 1)]
    out = tl.training_set(spark, spine(spark, rows), [snap, "card_live:count_7d"], views={"card_live": temp},
                          timestamp="ts", warehouse=wh)
    assert out.columns == ["id", "card_id", "ts", "label", "card_daily__sum_amount_7d", "card_daily__count_7d",
                           "card_live__count_7d"]
    got = out.orderBy("id").collect()
    assert len(got) == 6
    # temporal is exact at 06:00 on D (includes the 00:00 event); the snapshot is as of 00:00
    assert [(r.card_daily__count_7d, r.card_live__count_7d) for r in got][:1] == [(2, 3)]


def test_spine_without_timestamp_or_with_wrong_key_type_is_refused(spark, views):
    snap, temp, wh = views
    no_ts = spark.createDataFrame([(1, "c1")], "id int, card_id string")
    with pytest.raises(DataError, match="no timestamp column 'ts'"):
        tl.training_set(spark, no_ts, [snap], timestamp="ts", warehouse=wh)
    wrong = spark.createDataFrame([(1, 7, at(0, 1))], "id int, card_id int, ts timestamp")
    with pytest.raises(DataError, match="spine key 'card_id' is int"):
        tl.training_set(spark, wrong, [snap], timestamp="ts", warehouse=wh)
    with pytest.raises(DataError, match="spine key 'card_id' is int"):
        tl.training_set(spark, wrong, [temp], timestamp="ts", warehouse=wh)


def test_unknown_view_or_feature_is_refused_naming_it(spark, views):
    snap, temp, wh = views
    s = spine(spark, [(1, "c1", at(0, 1), 0)])
    with pytest.raises(RegistryError, match="unknown feature view 'nope'"):
        tl.training_set(spark, s, ["nope"], views={"card_live": temp}, timestamp="ts")
    with pytest.raises(RegistryError, match="has no feature 'count_99d'"):
        tl.training_set(spark, s, ["card_live:count_99d"], views={"card_live": temp}, timestamp="ts")


def content_hash(df) -> str:
    rows = sorted(tuple(str(x) for x in r) for r in df.collect())
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def test_cli_training_set_writes_a_manifest_and_rebuilds_identical_rows_after_newer_backfills(spark, tmp_path):
    repo = tmp_path / "features"
    repo.mkdir()
    data = tmp_path / "charges"
    spark.createDataFrame(EVENTS, "card_id string, created timestamp, amount double").write.parquet(str(data))
    (repo / "v.py").write_text(
        "import tally as tl\n"
        f"src = tl.Source('charges', path={str(data)!r}, timestamp='created')\n"
        "card = tl.Entity('card', keys=['card_id'])\n"
        "daily = tl.FeatureView('daily', entity=card, source=src, accuracy='snapshot', ttl='30d',\n"
        "    aggregations=[tl.Aggregation('sum', column='amount', windows=['7d'])])\n"
        "live = tl.FeatureView('live', entity=card, source=src,\n"
        "    aggregations=[tl.Aggregation('count', windows=['1d'])])\n")
    spine_path = tmp_path / "spine"
    spine(spark, [(1, "c1", at(0, 6), 1), (2, "c2", at(-1, 6), 0), (3, "c1", at(1, 0), 0)]).write.parquet(str(spine_path))
    base = ["--repo", str(repo), "--warehouse", str(tmp_path / "wh")]
    runner = CliRunner()
    r = runner.invoke(cli, [*base, "backfill", "daily", "--start", str(D - dt.timedelta(days=2)), "--end", str(D)],
                      standalone_mode=False)
    assert r.exception is None, r.output
    out = tmp_path / "train"
    r = runner.invoke(cli, [*base, "training-set", "--spine", str(spine_path), "--timestamp", "ts",
                            "--features", "daily,live:count_1d", "--out", str(out)], standalone_mode=False)
    assert r.exception is None, r.output
    import json

    manifest = json.loads((tmp_path / "train.manifest.json").read_text())
    assert manifest["spine"]["rows"] == 3
    assert [(v["view"], v["accuracy"], v["delta_version"]) for v in manifest["views"]] == \
        [("daily", "snapshot", 0), ("live", "temporal", None)]
    # a newer backfill replaces the same days with new values (new source data) ...
    original_files = set(data.glob("*"))
    spark.createDataFrame([("c1", at(-1, 12), 100.0)], "card_id string, created timestamp, amount double") \
        .write.mode("append").parquet(str(data))
    r = runner.invoke(cli, [*base, "backfill", "daily", "--start", str(D - dt.timedelta(days=2)), "--end", str(D)],
                      standalone_mode=False)
    assert r.exception is None, r.output
    # ... the temporal view's parquet source grew: it cannot be read as it was, so the rebuild refuses, writing nothing
    again = tmp_path / "again"
    r = runner.invoke(cli, [*base, "training-set", "--from-manifest", str(tmp_path / "train.manifest.json"),
                            "--out", str(again)], standalone_mode=False)
    assert "source 'charges' changed since the manifest" in str(r.exception) and not again.exists()
    # ... with the source restored, the rebuild reads the snapshot table at Delta version 0: identical rows, temporal
    # column included, although the newer backfill replaced those days
    for extra in set(data.glob("*")) - original_files:
        extra.unlink()
    r = runner.invoke(cli, [*base, "training-set", "--from-manifest", str(tmp_path / "train.manifest.json"),
                            "--out", str(again)], standalone_mode=False)
    assert r.exception is None, r.output
    cols = ["id", "card_id", "ts", "label", "daily__sum_amount_7d", "live__count_1d"]
    assert content_hash(spark.read.parquet(str(again)).select(cols)) == \
        content_hash(spark.read.parquet(str(out)).select(cols))
    assert f"same 3 rows and content hash {manifest['output']['hash']}" in r.output
    fresh = tl.training_set(spark, spark.read.parquet(str(spine_path)), ["daily"],
                            views={"daily": __import__("tally").registry.load(repo).views["daily"]},
                            timestamp="ts", warehouse=tmp_path / "wh")
    cols = cols[:-1]
    assert content_hash(fresh.select(cols)) != content_hash(spark.read.parquet(str(out)).select(cols))


def test_as_of_kernel_equals_pandas_merge_asof_on_random_data(spark):
    import numpy as np
    import pandas as pd
    from tally import kernels

    rng = np.random.default_rng(3)
    base = dt.datetime(2026, 1, 1)
    right = pd.DataFrame({"k": rng.integers(0, 30, 2000).astype(str), "t": rng.integers(0, 10_000, 2000)})
    right = right.drop_duplicates(["k", "t"]).assign(v=lambda d: rng.normal(size=len(d)))
    left = pd.DataFrame({"k": rng.integers(0, 35, 1500).astype(str), "t": rng.integers(-50, 10_100, 1500),
                         "row": np.arange(1500)})
    to_ts = lambda m: [base + dt.timedelta(minutes=int(x)) for x in m]  # noqa: E731
    rdf = spark.createDataFrame([(k, t, float(v)) for k, t, v in zip(right.k, to_ts(right.t), right.v)],
                                "k string, ts timestamp, v double")
    ldf = spark.createDataFrame([(k, t, int(r)) for k, t, r in zip(left.k, to_ts(left.t), left.row)],
                                "k string, ts timestamp, row bigint")
    got = kernels.as_of(spark, ldf, "ts", rdf, "ts", ["k"], ["v"], "f__", 0).toPandas().sort_values("row")
    assert list(got.columns) == ["k", "ts", "row", "f__v"]
    want = pd.merge_asof(left.sort_values("t"), right.sort_values("t"), on="t", by="k", direction="backward",
                         allow_exact_matches=True).sort_values("row")
    assert len(got) == len(left)
    assert np.allclose(got["f__v"].to_numpy(dtype=float), want["v"].to_numpy(dtype=float), equal_nan=True)


def test_as_of_kernel_refuses_two_feature_rows_of_one_key_at_one_time(spark):
    """Which of two rows is "latest" would be arbitrary: the join stops and names the key instead."""
    from tally import kernels

    t = dt.datetime(2026, 1, 2)
    right = spark.createDataFrame([("a", t, 1.0), ("a", t, 2.0), ("b", t, 3.0)], "k string, ts timestamp, v double")
    spine = spark.createDataFrame([("a", t + dt.timedelta(hours=1))], "k string, ts timestamp")
    with pytest.raises(Exception, match="two rows for key a at the same time"):
        kernels.as_of(spark, spine, "ts", right, "ts", ["k"], ["v"], "f__", 0).collect()
