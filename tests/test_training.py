"""Point-in-time training sets: snapshot as-of joins, mixed accuracies, leakage guards, manifests and rebuilds."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import oracle
import pytest
import tally as tl
from click.testing import CliRunner
from pyspark.sql import functions as F
from tally import registry, store, training
from tally.cli import cli
from tally.errors import DataError, RegistryError
from utc import UTC, aware, midnight

CARD = tl.Entity("card", keys=["card_id"])
D = dt.date(2026, 4, 10)


def at(day_offset: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0) -> dt.datetime:
    return midnight(D + dt.timedelta(days=day_offset)) + dt.timedelta(hours=hour, minutes=minute, seconds=second,
                                                                      microseconds=micro)


EVENTS = [("c1", at(-3, 10), 1.0), ("c1", at(-1, 23, 59, 59, 999999), 2.0), ("c1", at(0, 0), 4.0),
          ("c1", at(0, 12), 8.0), ("c2", at(-20, 5), 16.0), ("c3", at(-9, 5), 32.0)]
EVENT_SCHEMA = "card_id string, created timestamp, amount double"


def oracle_events(rows=EVENTS) -> list[dict]:
    return [{"card_id": k, "ts": oracle.micros(t), "amount": a} for k, t, a in rows]


def expected(view, rows, *, events=EVENTS) -> list[dict]:
    """The oracle's values for spine rows (id, card, ts, label): at ts (temporal), or at 00:00 UTC of ts's date
    (snapshot: the row of the previous day)."""
    def instant(ts):
        return midnight(ts.astimezone(UTC).date()) if view.accuracy == "snapshot" else ts

    return oracle.features(view, oracle_events(events), [((r[1],), oracle.micros(instant(r[2]))) for r in rows])


@pytest.fixture(scope="module")
def views(spark, tmp_path_factory):
    df = spark.createDataFrame(EVENTS, EVENT_SCHEMA)
    src = tl.Source("charges", dataframe=lambda s: df, timestamp="created")
    aggs = [tl.Aggregation("sum", column="amount", windows=["7d"]), tl.Aggregation("count", windows=["7d"])]
    snap = tl.FeatureView("card_daily", entity=CARD, source=src, aggregations=aggs, accuracy="snapshot", ttl="7d")
    temp = tl.FeatureView("card_live", entity=CARD, source=src, aggregations=aggs)
    wh = tmp_path_factory.mktemp("wh")
    store.backfill(spark, snap, D - dt.timedelta(days=5), D + dt.timedelta(days=1), warehouse=wh)
    return snap, temp, wh


def spine(spark, rows):
    return spark.createDataFrame(rows, "id int, card_id string, ts timestamp, label int")


def values(df, view, feature: str) -> list:
    return [r[f"{view.name}__{feature}"] for r in df.orderBy("id").collect()]


def test_snapshot_join_reads_the_row_of_the_previous_day_at_and_around_midnight(spark, views):
    snap, _, wh = views
    rows = [(1, "c1", at(0, 0), 0),               # exactly midnight of D: values as of D 00:00 -> events before it
            (2, "c1", at(0, 0, 0, 0, 1), 0),      # a microsecond later: still D's snapshot (the 00:00 event excluded)
            (3, "c1", at(0, 23, 59, 59), 0),      # end of D: still the D 00:00 snapshot
            (4, "c1", at(1, 0), 0),               # D+1 00:00: includes the events of D
            (5, "c1", at(-1, 23, 59, 59), 0)]     # just before midnight: the D-1 00:00 snapshot
    out = tl.training_set(spark, spine(spark, rows), [snap], timestamp="ts", warehouse=wh)
    assert values(out, snap, "sum_amount_7d") == [3.0, 3.0, 3.0, 15.0, 1.0]
    assert values(out, snap, "count_7d") == [2, 2, 2, 4, 1]


def test_snapshot_ttl_gives_null_for_entities_without_recent_events(spark, views):
    snap, _, wh = views
    # c3's only event (D-9 05:00) keeps it in the table through the row of D-3; the row of D-2 does not exist,
    # and the row of D-3 (24 h older) must not stand in for it, not even at exactly D-1 00:00
    rows = [(1, "c2", at(0, 9), 1), (2, "zz", at(0, 9), 0), (3, "c3", at(-2, 0), 0), (4, "c3", at(-2, 23, 59, 59, 999999), 0),
            (5, "c3", at(-1, 0), 0), (6, "c3", at(-1, 0, 0, 0, 1), 0)]
    out = tl.training_set(spark, spine(spark, rows), [snap], timestamp="ts", warehouse=wh)
    assert values(out, snap, "sum_amount_7d") == [None, None, 32.0, 32.0, None, None]
    assert values(out, snap, "count_7d") == [None, None, 1, 1, None, None]
    assert [w["sum_amount_7d"] for w in expected(snap, rows)] == [None, None, 32.0, 32.0, None, None]


def test_snapshot_days_not_backfilled_are_refused_listing_them_or_filled_with_nulls_exactly_there(spark, views):
    snap, _, wh = views
    rows = [(1, "c1", at(5, 1), 0),                       # needs the row of D+4: not backfilled
            (2, "c1", at(-30, 1), 0),                     # needs D-31: not backfilled
            (3, "c1", at(3, 0), 0),                       # needs D+2: not backfilled; D+1's row is exactly 24 h older
            (4, "c1", at(2, 23, 59, 59, 999999), 0),      # needs D+1: backfilled
            (5, "c1", at(0, 6), 0), (6, "c3", at(-3, 1), 0)]  # backfilled
    with pytest.raises(DataError, match="does not cover 3 day") as err:
        tl.training_set(spark, spine(spark, rows), [snap], timestamp="ts", warehouse=wh)
    for day in (D + dt.timedelta(days=4), D - dt.timedelta(days=31), D + dt.timedelta(days=2)):
        assert str(day) in str(err.value)
    out, built = training.build(spark, spine(spark, rows), [snap], "ts", warehouse=wh, allow_missing=True)
    want = expected(snap, rows)
    assert values(out, snap, "sum_amount_7d") == [None, None, None, *[w["sum_amount_7d"] for w in want[3:]]]
    assert values(out, snap, "count_7d") == [None, None, None, *[w["count_7d"] for w in want[3:]]]
    assert [w["count_7d"] for w in want[3:]] == [4, 2, 1]  # the covered rows have values, so nulls are only the gaps
    [entry] = built["views"]
    assert entry["rows_in_missing_days"] == 3
    assert sorted(entry["missing_days"]) == sorted(str(D + dt.timedelta(days=d)) for d in (4, -31, 2))


def test_a_day_missing_inside_the_table_gives_nulls_not_the_day_before(spark, views, tmp_path):
    snap, _, _ = views
    store.backfill(spark, snap, D - dt.timedelta(days=5), D - dt.timedelta(days=3), warehouse=tmp_path)
    store.backfill(spark, snap, D - dt.timedelta(days=1), D + dt.timedelta(days=1), warehouse=tmp_path)  # D-2 missing
    rows = [(1, "c1", at(-2, 0), 0), (2, "c1", at(-1, 0), 0), (3, "c1", at(-1, 12), 0), (4, "c1", at(0, 0), 0)]
    out = tl.training_set(spark, spine(spark, rows), [snap], timestamp="ts", warehouse=tmp_path, allow_missing=True)
    want = expected(snap, rows)
    assert values(out, snap, "sum_amount_7d") == [want[0]["sum_amount_7d"], None, None, want[3]["sum_amount_7d"]]
    assert want[0]["sum_amount_7d"] == 1.0 and want[1]["sum_amount_7d"] == 1.0  # the leaked value would be 1.0


def test_temporal_and_snapshot_views_on_one_spine_keep_rows_and_column_order(spark, views):
    snap, temp, wh = views
    rows = [(i, "c1", at(0, 6 + i), i % 2) for i in range(5)] + [(9, "c1", at(0, 6), 1), (10, "c3", at(-4, 6), 0),
                                                                  (11, "c1", at(-3, 10), 0)]
    out = tl.training_set(spark, spine(spark, rows), [snap, "card_live:count_7d"], views={"card_live": temp},
                          timestamp="ts", warehouse=wh)
    assert out.columns == ["id", "card_id", "ts", "label", "card_daily__sum_amount_7d", "card_daily__count_7d",
                           "card_live__count_7d"]
    got = [(r.id, r.card_id, aware(r.ts), r.label, r.card_daily__sum_amount_7d, r.card_daily__count_7d,
            r.card_live__count_7d) for r in out.orderBy("id").collect()]
    ordered = sorted(rows)
    daily, live = expected(snap, ordered), expected(temp, ordered)
    assert got == [(*r, s["sum_amount_7d"], s["count_7d"], t["count_7d"]) for r, s, t in zip(ordered, daily, live)]
    # temporal is exact at 06:00 on D (includes the 00:00 event); the snapshot is as of 00:00
    assert got[0][5:] == (2, 3)


def test_several_views_give_every_spine_row_what_each_view_gives_alone(spark, views):
    """With several views each one is computed on the spine's distinct (keys, time) rows and joined back once: every
    row, exact duplicates and rows that share keys and time included, gets what the view gives it alone."""
    snap, temp, wh = views
    rng = np.random.default_rng(11)
    instants = [at(d, h) for d in range(-4, 2) for h in (0, 10, 23)] + [at(-1, 23, 59, 59, 999999)]
    rows = [(int(i), f"c{rng.integers(1, 5)}", f"c{rng.integers(1, 5)}", instants[rng.integers(len(instants))],
             int(rng.integers(2))) for i in rng.integers(0, 40, 60)]
    rows += rows[:5]  # exact duplicates
    sp = spark.createDataFrame(rows, "id int, card_id string, payee string, ts timestamp, label int")
    uses = [snap, temp, tl.Use(temp, keys={"card_id": "payee"}, prefix="payee")]
    together = tl.training_set(spark, sp, uses, views={"card_live": temp}, timestamp="ts", warehouse=wh)
    def spine_row(r):
        return r.id, r.card_id, r.payee, aware(r.ts), r.label

    got = together.collect()
    assert together.columns[:5] == sp.columns and len(got) == len(rows)
    assert sorted(map(spine_row, got)) == sorted(rows)
    for use in uses:
        alone = tl.training_set(spark, sp, [use], views={"card_live": temp}, timestamp="ts", warehouse=wh)
        added = alone.columns[5:]
        assert added and set(added) <= set(together.columns)
        want = {spine_row(r): tuple(r)[5:] for r in alone.collect()}
        assert len(want) == len(set(rows))
        for r in got:
            assert tuple(r[c] for c in added) == want[spine_row(r)], (use, r)


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


@pytest.mark.parametrize("kind", ["timestamp_ntz", "date"])
def test_spines_with_timestamp_ntz_or_date_times_read_them_as_utc(spark, views, kind):
    """A timestamp_ntz spine time is a UTC wall clock; a date is 00:00 UTC of that day: both accuracies give what a
    timestamp spine at that instant gives."""
    snap, temp, wh = views
    rows = [(1, "c1", at(0, 0), 0), (2, "c1", at(0, 12), 1), (3, "c1", at(1, 0), 0), (4, "c3", at(-4, 23), 0),
            (5, "c1", at(-1, 23, 59, 59, 999999), 0)]
    base = spine(spark, rows)
    if kind == "date":
        typed = base.withColumn("ts", F.to_date("ts"))
        rows = [(i, k, midnight(t.date()), label) for i, k, t, label in rows]
    else:
        typed = base.withColumn("ts", F.col("ts").cast("timestamp_ntz"))
    assert typed.schema["ts"].dataType.typeName() == kind
    out = tl.training_set(spark, typed, [snap, temp], timestamp="ts", warehouse=wh)
    for view in (snap, temp):
        want = expected(view, rows)
        for feature in ("sum_amount_7d", "count_7d"):
            assert values(out, view, feature) == [w[feature] for w in want], (view.name, feature)
    if kind == "timestamp_ntz":  # within a day the accuracies differ (at 00:00, as for dates, they agree)
        assert values(out, temp, "count_7d") != values(out, snap, "count_7d")


def _keyed_view(name, entity, events, *, accuracy="snapshot"):
    src = tl.Source("tx", dataframe=lambda s: events, timestamp="created")
    return tl.FeatureView(name, entity=entity, source=src, accuracy=accuracy, ttl="3d", aggregations=[
        tl.Aggregation("count", windows=["1d", "3d"]), tl.Aggregation("sum", column="amount", windows=["3d"]),
        tl.Aggregation("max", column="amount", windows=["3d"])])


@pytest.mark.parametrize("keys", [("issuer string", "mcc int"), ("merchant_id bigint",)], ids=["composite", "integer"])
def test_snapshot_views_with_composite_or_integer_keys_join_every_key_as_of_its_day(spark, tmp_path, keys):
    rng = np.random.default_rng(17)
    names = [k.split()[0] for k in keys]

    def key(i):
        return (f"i{i % 3}", 5000 + i % 4) if len(keys) == 2 else (10**12 + i % 7,)

    n = 600
    rows = [(*key(int(k)), at(-6) + dt.timedelta(minutes=int(m)), float(round(a, 2)))
            for k, m, a in zip(rng.integers(0, 12, n), rng.integers(0, 6 * 24 * 60, n), rng.lognormal(2, 1, n))]
    events = spark.createDataFrame(rows, ", ".join([*keys, "created timestamp", "amount double"]))
    entity = tl.Entity("pair" if len(keys) == 2 else "merchant", keys=names)
    view = _keyed_view("keyed", entity, events)
    store.backfill(spark, view, D - dt.timedelta(days=5), D, warehouse=tmp_path)
    spine_rows = [(i, *key(int(k)), at(-4) + dt.timedelta(minutes=int(m)))
                  for i, (k, m) in enumerate(zip(rng.integers(0, 14, 300), rng.integers(0, 5 * 24 * 60, 300)))]
    spine_rows.append((999, *(("i9", 1) if len(keys) == 2 else (7,)), at(0, 3)))  # a key the source never saw
    sdf = spark.createDataFrame(spine_rows, ", ".join(["id int", *keys, "ts timestamp"]))
    out = tl.training_set(spark, sdf, [view], timestamp="ts", warehouse=tmp_path).orderBy("id").collect()
    assert [r.id for r in out] == sorted(r[0] for r in spine_rows)
    ev = [{**dict(zip(names, r[:-2])), "ts": oracle.micros(r[-2]), "amount": r[-1]} for r in rows]
    queries = [(tuple(r[1:-1]), oracle.micros(midnight(r[-1].date()))) for r in sorted(spine_rows)]
    bad = oracle.mismatches(view, ev, queries, [r.asDict() for r in out], prefix="keyed__")
    assert not bad, f"{len(bad)} mismatches, first: {bad[:5]}"
    assert sum(r.keyed__count_3d is not None for r in out) > 200


def test_as_of_a_delta_version_or_a_timestamp_reads_that_version(spark, tmp_path):
    state = {"df": spark.createDataFrame(EVENTS, EVENT_SCHEMA)}
    src = tl.Source("charges", dataframe=lambda s: state["df"], timestamp="created")
    snap = tl.FeatureView("daily", entity=CARD, source=src, accuracy="snapshot", ttl="7d",
                          aggregations=[tl.Aggregation("sum", column="amount", windows=["7d"])])
    days = (D - dt.timedelta(days=1), D)
    store.backfill(spark, snap, *days, warehouse=tmp_path)                       # Delta version 0
    between = dt.datetime.now(UTC)
    newer = [*EVENTS, ("c1", at(-1, 12), 100.0)]
    state["df"] = spark.createDataFrame(newer, EVENT_SCHEMA)
    store.backfill(spark, snap, *days, warehouse=tmp_path)                       # Delta version 1: other values
    rows = [(1, "c1", at(0, 6), 0), (2, "c1", at(1, 6), 1), (3, "c3", at(0, 1), 0)]
    old = [w["sum_amount_7d"] for w in expected(snap, rows)]
    new = [w["sum_amount_7d"] for w in expected(snap, rows, events=newer)]
    assert old != new
    kolkata = dt.timezone(dt.timedelta(hours=5, minutes=30))
    # a version; the latest; one instant between the commits as an aware datetime, as a string with an offset
    # (+05:30: the same instant), and as a naive string (UTC)
    for as_of, want, version in [(0, old, 0), (None, new, 1), (between.astimezone(kolkata), old, 0),
                                 (between.astimezone(kolkata).isoformat(), old, 0),
                                 (between.replace(tzinfo=None).isoformat(sep=" "), old, 0)]:
        pins = {} if as_of is None else {"daily": as_of}
        out, built = training.build(spark, spine(spark, rows), [snap], "ts", warehouse=tmp_path, as_of=pins)
        assert values(out, snap, "sum_amount_7d") == want, as_of
        assert built["views"][0]["delta_version"] == version, as_of
    with pytest.raises(DataError, match="no Delta version"):
        training.build(spark, spine(spark, rows), [snap], "ts", warehouse=tmp_path, as_of={"daily": 7})
    with pytest.raises(DataError, match="no Delta version at or before"):
        training.build(spark, spine(spark, rows), [snap], "ts", warehouse=tmp_path,
                       as_of={"daily": between - dt.timedelta(days=1)})


def _cli_project(spark, tmp_path, fmt: str):
    repo = tmp_path / "features"
    repo.mkdir()
    data = tmp_path / "charges"
    spark.createDataFrame(EVENTS, EVENT_SCHEMA).write.format(fmt).save(str(data))
    (repo / "v.py").write_text(
        "import tally as tl\n"
        f"src = tl.Source('charges', path={str(data)!r}, format={fmt!r}, timestamp='created')\n"
        "card = tl.Entity('card', keys=['card_id'])\n"
        "daily = tl.FeatureView('daily', entity=card, source=src, accuracy='snapshot', ttl='30d',\n"
        "    aggregations=[tl.Aggregation('sum', column='amount', windows=['7d'])])\n"
        "live = tl.FeatureView('live', entity=card, source=src,\n"
        "    aggregations=[tl.Aggregation('count', windows=['1d'])])\n")
    spine_path = tmp_path / "spine"
    spine(spark, [(1, "c1", at(0, 6), 1), (2, "c2", at(-1, 6), 0), (3, "c1", at(1, 0), 0)]).write.parquet(str(spine_path))
    return repo, data, spine_path, ["--repo", str(repo), "--warehouse", str(tmp_path / "wh")]


def invoke(*args):
    r = CliRunner().invoke(cli, list(args), standalone_mode=False)
    return r


def rows_of(spark, path, fmt="parquet") -> list[tuple]:
    return sorted((tuple(aware(x) for x in r) for r in spark.read.format(fmt).load(str(path)).collect()), key=repr)


@pytest.mark.parametrize("fmt", ["delta", "parquet"])
def test_cli_training_set_writes_a_manifest_and_rebuilds_identical_rows_after_newer_backfills(spark, tmp_path, fmt):
    """The rebuild reproduces every column, the temporal view's too, although the source and the feature table
    changed since. A source that cannot be read as it was (plain files rewritten) must be refused, naming it:
    never different rows under the same manifest."""
    repo, data, spine_path, base = _cli_project(spark, tmp_path, fmt)
    r = invoke(*base, "backfill", "daily", "--start", str(D - dt.timedelta(days=2)), "--end", str(D))
    assert r.exception is None, r.output
    out = tmp_path / "train"
    r = invoke(*base, "training-set", "--spine", str(spine_path), "--timestamp", "ts",
               "--features", "daily,live:count_1d", "--out", str(out))
    assert r.exception is None, r.output
    manifest = json.loads((tmp_path / "train.manifest.json").read_text())
    assert manifest["spine"]["rows"] == 3
    assert [(v["view"], v["accuracy"], v["delta_version"]) for v in manifest["views"]] == \
        [("daily", "snapshot", 0), ("live", "temporal", None)]
    first = rows_of(spark, out)
    assert [r[-2:] for r in sorted(first)] == [(3.0, 2), (0.0, 0), (15.0, 2)]  # (daily sum, live count) by id
    # new source data, and a newer backfill that replaces the same days with new values ...
    spark.createDataFrame([("c1", at(-1, 12), 100.0)], EVENT_SCHEMA).write.format(fmt).mode("append").save(str(data))
    r = invoke(*base, "backfill", "daily", "--start", str(D - dt.timedelta(days=2)), "--end", str(D))
    assert r.exception is None, r.output
    views = registry.load(repo).views
    fresh = tl.training_set(spark, spark.read.parquet(str(spine_path)), ["daily", "live:count_1d"], views=views,
                            timestamp="ts", warehouse=tmp_path / "wh")
    changed = sorted((tuple(aware(x) for x in r) for r in fresh.collect()), key=repr)
    assert [r[-2:] for r in sorted(changed)] == [(103.0, 3), (0.0, 0), (115.0, 2)]  # both views see the new row
    # ... yet the rebuild gives the identical rows, every column
    again = tmp_path / "again"
    r = invoke(*base, "training-set", "--from-manifest", str(tmp_path / "train.manifest.json"), "--out", str(again))
    if fmt == "parquet":  # plain files cannot be read as they were: refused before anything is written
        assert isinstance(r.exception, DataError), repr(r.exception)
        assert "source 'charges' changed since the manifest" in str(r.exception) and not again.exists()
        return
    assert r.exception is None, r.output  # a Delta source is read at its recorded version
    assert f"same 3 rows and content hash {manifest['output']['hash']}" in r.output
    assert rows_of(spark, again) == first


def test_cli_features_may_be_given_several_times_and_the_lists_merge(spark, tmp_path):
    _, _, spine_path, base = _cli_project(spark, tmp_path, "parquet")
    r = invoke(*base, "backfill", "daily", "--start", str(D - dt.timedelta(days=2)), "--end", str(D))
    assert r.exception is None, r.output
    common = [*base, "training-set", "--spine", str(spine_path), "--timestamp", "ts"]
    r = invoke(*common, "--features", "daily", "--features", "live:count_1d", "--out", str(tmp_path / "twice"))
    assert r.exception is None, r.output
    r = invoke(*common, "--features", "daily,live:count_1d", "--out", str(tmp_path / "once"))
    assert r.exception is None, r.output
    twice = spark.read.parquet(str(tmp_path / "twice"))
    assert twice.columns == ["id", "card_id", "ts", "label", "daily__sum_amount_7d", "live__count_1d"]
    assert rows_of(spark, tmp_path / "twice") == rows_of(spark, tmp_path / "once")
    manifest = json.loads((tmp_path / "twice.manifest.json").read_text())
    assert manifest["features"] == ["daily", "live:count_1d"]


def test_cli_as_of_pins_a_version_or_a_timestamp_and_is_refused_for_temporal_views(spark, tmp_path, capsys):
    from tally.cli import main

    _, data, spine_path, base = _cli_project(spark, tmp_path, "parquet")
    backfill = [*base, "backfill", "daily", "--start", str(D - dt.timedelta(days=2)), "--end", str(D), "--quiet"]
    assert main(backfill) == 0
    between = dt.datetime.now(UTC)
    spark.createDataFrame([("c1", at(-1, 12), 100.0)], EVENT_SCHEMA).write.mode("append").parquet(str(data))
    assert main(backfill) == 0
    common = [*base, "training-set", "--spine", str(spine_path), "--timestamp", "ts", "--features", "daily"]
    got = {}
    for name, pin in [("v0", "daily=0"), ("v1", "daily=1"), ("t", f"daily={between.isoformat()}")]:
        assert main([*common, "--as-of", pin, "--out", str(tmp_path / name)]) == 0, capsys.readouterr().err
        manifest = json.loads((tmp_path / f"{name}.manifest.json").read_text())
        got[name] = (manifest["views"][0]["delta_version"],
                     [r[-1] for r in sorted(spark.read.parquet(str(tmp_path / name)).collect())])
    assert got["v0"] == (0, [3.0, 0.0, 15.0]) and got["v1"] == (1, [103.0, 0.0, 115.0]) and got["t"] == got["v0"]
    capsys.readouterr()
    assert main([*common, "--features", "live", "--as-of", "live=0", "--out", str(tmp_path / "x")]) == 2
    assert "view 'live' is temporal" in capsys.readouterr().err
    assert main([*common, "--as-of", "daily", "--out", str(tmp_path / "y")]) == 2
    assert "write VIEW=VERSION" in capsys.readouterr().err


@pytest.mark.parametrize("key_type", ["string", "bigint", "int", "date"])
@pytest.mark.parametrize("tolerance_min", [0, 90])
def test_as_of_kernel_equals_pandas_merge_asof_on_random_data(spark, key_type, tolerance_min):
    """String keys go through a hash map of key values; integral ones (bigint, int, date) through a map of longs."""
    import pandas as pd
    from tally import kernels

    rng = np.random.default_rng(3)
    base = midnight(dt.date(2026, 1, 1))
    right = pd.DataFrame({"k": rng.integers(0, 30, 2000), "t": rng.integers(0, 10_000, 2000)})
    right = right.drop_duplicates(["k", "t"]).assign(v=lambda d: rng.normal(size=len(d)))
    left = pd.DataFrame({"k": rng.integers(0, 35, 1500), "t": rng.integers(-50, 10_100, 1500),
                         "row": np.arange(1500)})
    key = {"string": str, "bigint": lambda k: int(k) - 2**40, "int": int,
           "date": lambda k: dt.date(2020, 1, 1) + dt.timedelta(days=int(k))}[key_type]
    to_ts = lambda m: [base + dt.timedelta(minutes=int(x)) for x in m]  # noqa: E731
    rdf = spark.createDataFrame([(key(k), t, float(v)) for k, t, v in zip(right.k, to_ts(right.t), right.v)],
                                f"k {key_type}, ts timestamp, v double")
    ldf = spark.createDataFrame([(key(k), t, int(r)) for k, t, r in zip(left.k, to_ts(left.t), left.row)],
                                f"k {key_type}, ts timestamp, row bigint")
    got = kernels.as_of(spark, ldf, "ts", rdf, "ts", ["k"], ["v"], "f__", tolerance_min * 60_000_000)
    got = got.toPandas().sort_values("row")
    assert list(got.columns) == ["k", "ts", "row", "f__v"]
    assert [key(k) for k in left.sort_values("row").k] == list(got["k"])
    # the kernel's tolerance keeps a right row strictly newer than t - tolerance; pandas' is inclusive
    want = pd.merge_asof(left.sort_values("t"), right.sort_values("t"), on="t", by="k", direction="backward",
                         allow_exact_matches=True, tolerance=tolerance_min - 1 if tolerance_min else None)
    want = want.sort_values("row")
    assert len(got) == len(left)
    assert np.allclose(got["f__v"].to_numpy(dtype=float), want["v"].to_numpy(dtype=float), equal_nan=True)
    assert want["v"].notna().sum() > (1000 if not tolerance_min else 300) and want["v"].isna().sum() > 10


def test_as_of_kernel_refuses_two_feature_rows_of_one_key_at_one_time(spark):
    """Which of two rows is "latest" would be arbitrary: the join stops and names the key instead."""
    from tally import kernels

    t = midnight(dt.date(2026, 1, 2))
    right = spark.createDataFrame([("a", t, 1.0), ("a", t, 2.0), ("b", t, 3.0)], "k string, ts timestamp, v double")
    spine_df = spark.createDataFrame([("a", t + dt.timedelta(hours=1))], "k string, ts timestamp")
    with pytest.raises(Exception, match="two rows for key a at the same time"):
        kernels.as_of(spark, spine_df, "ts", right, "ts", ["k"], ["v"], "f__", 0).collect()
