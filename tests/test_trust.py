"""No silent wrong values, and rebuilds that really rebuild (issue #12): one test per way tally used to mislead.

Every datetime here is aware (UTC): a naive one would meet the process's zone, which is what case 1 is about.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tally as tl
from click.testing import CliRunner
from tally import store, training
from tally.cli import cli, main
from tally.definitions import FUNCTIONS
from tally.errors import DataError

UTC = dt.timezone.utc
CARD = tl.Entity("card", keys=["card_id"])


def utc(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


@pytest.fixture
def process_zone():
    """Switches this Python process's local zone (what PySpark uses for naive datetimes) and restores it."""
    before = os.environ.get("TZ")

    def switch(zone: str) -> None:
        os.environ["TZ"] = zone
        time.tzset()

    yield switch
    if before is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = before
    time.tzset()


# --- 1. UTC everywhere -------------------------------------------------------------------------------------------

def one_event_view(spark):
    df = spark.createDataFrame([("c1", utc(2024, 1, 7, 23, 30), 5.0)], "card_id string, created timestamp, amount double")
    source = tl.Source("charges", dataframe=lambda s: df, timestamp="created")
    return tl.FeatureView("one", entity=CARD, source=source, accuracy="snapshot",
                          aggregations=[tl.Aggregation("count", windows=["1d"])])


@pytest.mark.parametrize("zone", ["Europe/Paris", "America/Los_Angeles", "Asia/Kolkata"])
def test_a_backfill_in_a_non_utc_process_keeps_the_event_of_the_last_evening(spark, tmp_path, process_zone, zone):
    v = one_event_view(spark)
    process_zone(zone)
    store.backfill(spark, v, dt.date(2024, 1, 1), dt.date(2024, 1, 8), warehouse=tmp_path)
    rows = {str(r.ds): r.count_1d for r in store.read_features(spark, v, warehouse=tmp_path).collect()}
    # the event at 23:30 UTC on the 7th is in day 7's row (values as of the 8th, 00:00 UTC), and only there
    assert rows == {"2024-01-07": 1}


def test_changing_the_session_time_zone_after_the_fact_changes_no_value(spark, tmp_path):
    v = one_event_view(spark)
    spine = spark.createDataFrame([("c1", utc(2024, 1, 8, 0, 10)), ("c1", utc(2024, 1, 7, 23, 59))],
                                  "card_id string, ts timestamp")
    temporal = tl.FeatureView("live", entity=CARD, source=v.source, aggregations=[tl.Aggregation("count", windows=["1d"])])

    def values(zone: str) -> list:
        spark.conf.set("spark.sql.session.timeZone", zone)
        try:
            store.backfill(spark, v, dt.date(2024, 1, 6), dt.date(2024, 1, 8), warehouse=tmp_path / zone.replace("/", "_"))
            out = tl.training_set(spark, spine, [v, temporal], timestamp="ts", warehouse=tmp_path / zone.replace("/", "_"))
            return sorted((r.one__count_1d, r.live__count_1d, r.ts.isoformat()) for r in out.collect())
        finally:
            spark.conf.set("spark.sql.session.timeZone", "UTC")

    # snapshot: 00:10 on the 8th reads day 7 (count 1); 23:59 on the 7th reads day 6 (0); temporal: 1 at both
    assert values("America/New_York") == values("Asia/Kathmandu") == values("UTC")
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    assert sorted((r[0], r[1]) for r in values("UTC")) == [(0, 1), (1, 1)]


@pytest.mark.parametrize("kind,value", [("timestamp_ntz", "timestamp_ntz'2024-01-07 23:30:00'"),
                                        ("string", "'2024-01-07 23:30:00'"),
                                        ("string with offset", "'2024-01-08T05:00:00+05:30'"),
                                        ("date", "date'2024-01-07'")])
def test_naive_source_times_are_utc_whatever_the_session_zone(spark, kind, value):
    from tally import sources

    src = tl.Source("s", dataframe=lambda s: s.sql(f"SELECT 'c1' AS card_id, {value} AS created"), timestamp="created")
    want = {"date": utc(2024, 1, 7)}.get(kind, utc(2024, 1, 7, 23, 30))
    for zone in ("UTC", "America/New_York", "Asia/Kolkata"):
        spark.conf.set("spark.sql.session.timeZone", zone)
        try:
            us = sources.read(spark, src).selectExpr("unix_micros(created) AS us").first().us
        finally:
            spark.conf.set("spark.sql.session.timeZone", "UTC")
        assert us == int(want.timestamp()) * 1_000_000, (kind, zone)


# --- 2. snapshot and temporal: one definition, one answer ------------------------------------------------------

def every_function_view(df, *, accuracy: str, ttl: str | None):
    aggs = []
    for fn, (needs_column, _) in FUNCTIONS.items():
        column = ("amount" if fn not in ("approx_distinct", "top_k", "last_k") else "merchant") if needs_column else None
        aggs.append(tl.Aggregation(fn, column=column, windows=["1d", "3d"], name=f"{fn}_x"))
        if fn not in ("count", "sum", "decayed_sum", "decayed_count", "last_k", "top_k", "approx_percentile"):
            aggs.append(tl.Aggregation(fn, column=column, windows=["2d"], name=f"{fn}_dflt", default=-1))
    source = tl.Source("charges", dataframe=lambda s: df, timestamp="created")
    return tl.FeatureView("v", entity=CARD, source=source, aggregations=aggs, accuracy=accuracy, ttl=ttl)


@pytest.mark.parametrize("ttl", [None, "2d"])
def test_a_snapshot_read_at_midnight_equals_the_temporal_value_for_every_function(spark, tmp_path, ttl):
    rng = np.random.default_rng(3)
    start = utc(2026, 5, 1)
    rows = [(f"c{int(k)}", start + dt.timedelta(seconds=int(s)), float(a), f"m{int(m)}")
            for k, s, a, m in zip(rng.integers(0, 12, 400), rng.integers(0, 10 * 86400, 400),
                                  rng.lognormal(3, 1, 400).round(2), rng.integers(0, 6, 400))]
    rows += [("c_old", start, 1.0, "m0")]  # one event on the first day, then silence: empty windows later
    df = spark.createDataFrame(rows, "card_id string, created timestamp, amount double, merchant string")
    snap = every_function_view(df, accuracy="snapshot", ttl=ttl)
    live = every_function_view(df, accuracy="temporal", ttl=ttl)
    store.backfill(spark, snap, dt.date(2026, 4, 30), dt.date(2026, 5, 14), warehouse=tmp_path, step_days=15)
    keys = [f"c{i}" for i in range(12)] + ["c_old", "never_seen"]
    spine = spark.createDataFrame([(k, utc(2026, 5, d)) for k in keys for d in range(1, 16)],
                                  "card_id string, ts timestamp")
    names = [f.name for f in snap.features]

    def table(view):
        out = tl.training_set(spark, spine, [view], timestamp="ts", warehouse=tmp_path)
        return {(r.card_id, r.ts): tuple(r[f"v__{n}"] for n in names) for r in out.collect()}

    got, want = table(snap), table(live)
    assert len(got) == len(want) == len(keys) * 15
    mismatches = [(k, n, got[k][i], want[k][i]) for k in want for i, n in enumerate(names) if got[k][i] != want[k][i]]
    assert mismatches == []
    never = [got[k] for k in got if k[0] == "never_seen"]
    if ttl is None:  # never seen: counts and sums 0, defaults where declared, else null — as the temporal path
        assert all(v[names.index("count_x_1d")] == 0 and v[names.index("max_dflt")] == -1 for v in never)
    else:  # ttl: null features
        assert all(x is None for v in never for x in v)


# --- 3. fingerprints: what determines the values, not where the data lives ---------------------------------------

def test_the_fingerprint_ignores_the_data_location_but_sees_a_callable_sources_code():
    def view(source):
        return tl.FeatureView("v", entity=CARD, source=source, aggregations=[tl.Aggregation("count", windows=["1d"])])

    here = view(tl.Source("charges", path="/data/a/charges", timestamp="created"))
    there = view(tl.Source("charges", path="/mnt/b/charges", timestamp="created"))
    assert here.fingerprint == there.fingerprint

    def read_v1(spark):
        return spark.read.parquet("x").where("amount > 0")

    def read_v2(spark):
        return spark.read.parquet("x").where("amount > 10")

    read_v2.__qualname__ = read_v1.__qualname__  # same name, other code: the old fingerprint hashed only the name
    assert view(tl.Source("c", dataframe=read_v1, timestamp="t")).fingerprint != \
        view(tl.Source("c", dataframe=read_v2, timestamp="t")).fingerprint
    different = view(tl.Source("charges", path="/data/a/charges", timestamp="created", filter="amount > 0"))
    assert different.fingerprint != here.fingerprint


@pytest.mark.slow
def test_the_demo_flow_then_plan_reports_every_view_unchanged(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TALLY_DATA"}
    root = Path(__file__).resolve().parents[1]
    demo = subprocess.run([sys.executable, "-m", "tally.cli", "--warehouse", str(tmp_path / "wh"),
                           "--repo", str(root / "features"), "--data", str(tmp_path / "data"),
                           "demo", "--charges", "3000", "--days", "14"],
                          capture_output=True, text=True, env=env, timeout=900)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    # a fresh process, another working directory, the data root given relatively: configuration, not definition
    plan = subprocess.run([sys.executable, "-m", "tally.cli", "--warehouse", "wh", "--repo", str(root / "features"),
                           "--data", "data", "plan"], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    lines = [line for line in plan.stdout.splitlines() if line.strip()]
    views = [line for line in lines if not line[2:].startswith(("feature set ", "derived feature ", "label "))]
    views = [line for line in views if not line[2:].startswith("auth_")]  # the acceptance pack: not in the demo
    assert len(views) == 8 and all(line.startswith("= ") and line.endswith("unchanged") for line in views), plan.stdout
    assert not any(line.startswith("!") for line in lines), plan.stdout


# --- 4. manifests rebuild exactly, or refuse saying what changed ------------------------------------------------

D = dt.date(2026, 3, 10)


def write_project(tmp_path: Path, source_format: str) -> list[str]:
    repo = tmp_path / "features"
    repo.mkdir()
    (repo / "v.py").write_text(
        "import tally as tl\n"
        f"src = tl.Source('charges', path='charges', format={source_format!r}, timestamp='created')\n"
        "card = tl.Entity('card', keys=['card_id'])\n"
        "daily = tl.FeatureView('daily', entity=card, source=src, accuracy='snapshot', ttl='30d',\n"
        "    aggregations=[tl.Aggregation('sum', column='amount', windows=['7d'])])\n"
        "live = tl.FeatureView('live', entity=card, source=src,\n"
        "    aggregations=[tl.Aggregation('count', windows=['1d']), tl.Aggregation('max', column='amount', windows=['2d'])])\n")
    return ["--repo", str(repo), "--warehouse", str(tmp_path / "wh"), "--data", str(tmp_path / "data")]


def charges(spark, day_offsets, seed):
    rng = np.random.default_rng(seed)
    base = utc(D.year, D.month, D.day)
    return spark.createDataFrame(
        [(f"c{int(rng.integers(0, 3))}", base + dt.timedelta(days=int(d), seconds=int(rng.integers(0, 86400))),
          float(rng.integers(1, 100))) for d in day_offsets],
        "card_id string, created timestamp, amount double")


def invoke(*args) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), standalone_mode=False)
    if result.exception is not None and not isinstance(result.exception, DataError):
        raise result.exception
    return (0 if result.exception is None else 1), result.output + (str(result.exception) if result.exception else "")


@pytest.mark.parametrize("source_format", ["delta", "parquet"])
def test_a_manifest_rebuild_reproduces_the_rows_or_refuses_naming_what_changed(spark, tmp_path, source_format):
    base = write_project(tmp_path, source_format)
    data = tmp_path / "data" / "charges"
    charges(spark, [-3, -2, -2, -1, 0, 1], seed=1).write.format(source_format).save(str(data))
    code, out = invoke(*base, "backfill", "daily", "--start", str(D - dt.timedelta(days=3)), "--end", str(D))
    assert code == 0, out
    spine = tmp_path / "spine"
    spark.createDataFrame([("c0", utc(2026, 3, 10, 6)), ("c1", utc(2026, 3, 11, 1)), ("c2", utc(2026, 3, 14, 1))],
                          "card_id string, ts timestamp").write.parquet(str(spine))
    first = tmp_path / "train"
    # day 13 is not backfilled: --allow-missing is part of what determines the rows, so the manifest records it
    code, out = invoke(*base, "training-set", "--spine", str(spine), "--timestamp", "ts", "--features", "daily,live",
                       "--out", str(first), "--allow-missing")
    assert code == 0, out
    manifest = json.loads((tmp_path / "train.manifest.json").read_text())
    assert manifest["options"] == {"allow_missing": True}
    assert manifest["spine"]["rows"] == 3 and manifest["output"]["rows"] == 3
    pin = manifest["sources"]["charges"]
    assert ("delta_version" in pin) if source_format == "delta" else (pin["rows"] == 6 and "hash" in pin)

    charges(spark, [0, 1, 2], seed=2).write.format(source_format).mode("append").save(str(data))  # the source grows
    again = tmp_path / "again"
    code, out = invoke(*base, "training-set", "--from-manifest", str(tmp_path / "train.manifest.json"), "--out", str(again))
    if source_format == "delta":  # read at the recorded version: the same rows, checked and said
        assert code == 0, out
        assert f"reproduced {tmp_path / 'train.manifest.json'}: same 3 rows and content hash {manifest['output']['hash']}" in out
        cols = ["card_id", "ts", "daily__sum_amount_7d", "live__count_1d", "live__max_amount_2d"]
        assert sorted(spark.read.parquet(str(again)).select(cols).collect()) == \
            sorted(spark.read.parquet(str(first)).select(cols).collect())
    else:  # a parquet source cannot be read as it was: refused before anything is written
        assert code == 1 and "source 'charges' changed since the manifest" in out and "6 rows" in out and "9 rows" in out
        assert not again.exists()

    spark.createDataFrame([("c0", utc(2026, 3, 12, 6))], "card_id string, ts timestamp").write.mode("append").parquet(str(spine))
    code, out = invoke(*base, "training-set", "--from-manifest", str(tmp_path / "train.manifest.json"),
                       "--out", str(tmp_path / "third"))
    assert code == 1 and "the spine" in out and "changed since the manifest" in out and "now 4 rows" in out
    assert not (tmp_path / "third").exists()


# --- 5. Delta's own API: history past a checkpoint and log cleanup ----------------------------------------------

def test_coverage_resume_and_time_travel_survive_delta_log_cleanup(spark, tmp_path):
    df = charges(spark, list(range(-10, 1)) * 3, seed=4)
    v = tl.FeatureView("kept", entity=CARD, source=tl.Source("charges", dataframe=lambda s: df, timestamp="created"),
                       aggregations=[tl.Aggregation("count", windows=["2d"])], accuracy="snapshot")
    path = store.table_path(tmp_path, v.name, v.version)
    store.backfill(spark, v, D - dt.timedelta(days=8), D - dt.timedelta(days=5), warehouse=tmp_path, step_days=1)
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('delta.checkpointInterval' = '2', "
              "'delta.logRetentionDuration' = 'interval 7 days')")
    old = time.time() - 40 * 86400
    for f in (path / "_delta_log").glob("*.json"):
        os.utime(f, (old, old))
    store.backfill(spark, v, D - dt.timedelta(days=4), D - dt.timedelta(days=1), warehouse=tmp_path, step_days=2)
    assert not (path / "_delta_log" / f"{0:020d}.json").exists(), "Delta should have cleaned up the oldest log files"
    assert min(c["version"] for c in store.commits(spark, path)) > 0
    days = {str(D - dt.timedelta(days=i)) for i in range(1, 9)}
    assert store.covered_days(spark, path) >= days  # from the partition values: the old commits are gone
    resumed = store.backfill(spark, v, D - dt.timedelta(days=8), D - dt.timedelta(days=1), warehouse=tmp_path,
                             step_days=2, resume=True)
    assert {r["status"] for r in resumed} == {"skipped"}
    spine = spark.createDataFrame([("c0", utc(2026, 3, 4, 12)), ("c1", utc(2026, 3, 9, 12))], "card_id string, ts timestamp")
    out = tl.training_set(spark, spine, [v], timestamp="ts", warehouse=tmp_path)
    want = {r.card_id: r.count_2d for r in store.read_features(spark, v, warehouse=tmp_path)
            .where("(card_id = 'c0' AND ds = '2026-03-03') OR (card_id = 'c1' AND ds = '2026-03-08')").collect()}
    assert {r.card_id: r.kept__count_2d for r in out.collect()} == want and len(want) == 2
    with pytest.raises(DataError, match="has no Delta version at or before"):
        tl.training_set(spark, spine, [v], timestamp="ts", warehouse=tmp_path, as_of={"kept": "2001-01-01"})


def test_as_of_a_timestamp_resolves_once_to_the_version_the_manifest_records(spark, tmp_path):
    df = charges(spark, [-3, -2, -1], seed=5)
    v = tl.FeatureView("pinned", entity=CARD, source=tl.Source("charges", dataframe=lambda s: df, timestamp="created"),
                       aggregations=[tl.Aggregation("count", windows=["3d"])], accuracy="snapshot")
    store.backfill(spark, v, D - dt.timedelta(days=3), D - dt.timedelta(days=1), warehouse=tmp_path, step_days=3)
    path = store.table_path(tmp_path, v.name, v.version)
    first = store.commits(spark, path)[-1]
    time.sleep(1.1)
    store.backfill(spark, v, D - dt.timedelta(days=3), D - dt.timedelta(days=1), warehouse=tmp_path, step_days=3)
    assert store.resolve_version(spark, path, first["timestamp"]) == first["version"]
    assert store.resolve_version(spark, path, first["timestamp"].replace(tzinfo=None).isoformat()) == first["version"]
    spine = spark.createDataFrame([("c0", utc(2026, 3, 10, 1))], "card_id string, ts timestamp")
    _, built = training.build(spark, spine, [v], "ts", warehouse=tmp_path, as_of={"pinned": first["timestamp"].isoformat()})
    assert built["views"][0]["delta_version"] == first["version"]


# --- 6. labels cannot leak through a null available_at ----------------------------------------------------------

def label_view(spark, on_invalid: str):
    rows = [("c1", utc(2026, 3, 1), utc(2026, 3, 5), 1.0), ("c1", utc(2026, 3, 2), None, 1.0)]
    df = spark.createDataFrame(rows, "card_id string, created timestamp, known timestamp, amount double")
    source = tl.Source("labels", dataframe=lambda s: df, timestamp="created", available_at="known", on_invalid=on_invalid)
    return tl.FeatureView("fraud", entity=CARD, source=source, aggregations=[tl.Aggregation("count", windows=["30d"])])


def test_a_null_available_at_is_refused_naming_the_source_and_column(spark, tmp_path):
    spine = spark.createDataFrame([("c1", utc(2026, 3, 3))], "card_id string, ts timestamp")
    refused = r"(?s)source 'labels'.*known not_null: 1 row\(s\) fail.*'created': '2026-03-02 00:00:00\+00:00'"
    with pytest.raises(DataError, match=refused):
        tl.training_set(spark, spine, [label_view(spark, "fail")], timestamp="ts")
    v = label_view(spark, "quarantine")
    store.backfill(spark, v, dt.date(2026, 3, 1), dt.date(2026, 3, 6), warehouse=tmp_path)
    quarantined = spark.read.format("delta").load(str(tmp_path / "quarantine" / "labels")) \
        .selectExpr("unix_micros(created) AS us", "_tally_reason").collect()
    assert [(r.us, r._tally_reason) for r in quarantined] == [(int(utc(2026, 3, 2).timestamp()) * 1_000_000, "known not_null")]
    assert [r.count_30d for r in store.read_features(spark, v, warehouse=tmp_path).where("ds = '2026-03-05'").collect()] == [1]


# --- 8. errors that say what is wrong ---------------------------------------------------------------------------

def test_a_timestamp_column_of_other_strings_is_refused_with_examples(spark):
    df = spark.createDataFrame([("c1", "07/01/2024 23:30", 1.0), ("c1", "2024-07-02 10:00:00", 2.0)],
                               "card_id string, created string, amount double")
    v = tl.FeatureView("strs", entity=CARD, source=tl.Source("charges", dataframe=lambda s: df, timestamp="created"),
                       aggregations=[tl.Aggregation("count", windows=["1d"])])
    spine = spark.createDataFrame([("c1", utc(2024, 7, 3))], "card_id string, ts timestamp")
    with pytest.raises(DataError, match=r"source 'charges': column 'created' holds strings that are not timestamps in "
                                        r"1 row\(s\), e\.g\. \{'created': '07/01/2024 23:30'"):
        tl.training_set(spark, spine, [v], timestamp="ts")


def test_plan_reads_each_source_schema_and_reports_missing_or_mistyped_columns(spark, tmp_path, capsys):
    data = tmp_path / "data"
    spark.createDataFrame([("c1", utc(2026, 1, 1), "12.5")], "card_id string, created timestamp, amount string") \
        .write.parquet(str(data / "charges"))
    repo = tmp_path / "features"
    repo.mkdir()
    (repo / "v.py").write_text(
        "import tally as tl\n"
        "src = tl.Source('charges', path='charges', timestamp='created')\n"
        "card = tl.Entity('card', keys=['card_id'])\n"
        "ok = tl.FeatureView('ok', entity=card, source=src, aggregations=[tl.Aggregation('count', windows=['1d'])])\n"
        "typo = tl.FeatureView('typo', entity=card, source=src,\n"
        "    aggregations=[tl.Aggregation('max', column='amout', windows=['1d'])])\n"
        "typed = tl.FeatureView('typed', entity=card, source=src,\n"
        "    aggregations=[tl.Aggregation('sum', column='amount', windows=['1d'])])\n")
    code = main(["--repo", str(repo), "--warehouse", str(tmp_path / "wh"), "--data", str(data), "plan"])
    out = capsys.readouterr()
    assert code == 1
    assert "+ ok v1: new view" in out.out
    assert "feature 'max_amout_1d': source 'charges' has no column 'amout'" in out.out
    assert "feature 'sum_amount_1d': sum does not take column 'amount' of type string" in out.out
    assert "2 view(s) cannot be computed from their sources: typed, typo" in out.err
