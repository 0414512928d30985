"""Crash safety and concurrent writers: a killed or beaten backfill never damages a good table."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from tally import store
from tally.errors import ConcurrentWriteError
from utc import utc

VIEW = """
import tally as tl
card = tl.Entity("card", keys=["card_id"])
charges = tl.Source("charges", path={path!r}, timestamp="created")
card_load = tl.FeatureView(name="card_load", entity=card, source=charges, ttl="3d",
    aggregations=[tl.Aggregation("count", windows=["1h", "1d", "3d"]),
                  tl.Aggregation("sum", column="amount", windows=["1h", "1d", "3d"])])
"""


def write_charges(spark, path: Path, n: int, cards: int, days: int) -> None:
    rng = np.random.default_rng(5)
    base = utc(2026, 6, 1)
    rows = [(f"c{int(k)}", base + dt.timedelta(seconds=int(s)), float(a))
            for k, s, a in zip(rng.integers(0, cards, n), rng.integers(0, days * 86400, n), rng.lognormal(3, 1, n))]
    spark.createDataFrame(rows, "card_id string, created timestamp, amount double").repartition(4).write.parquet(str(path))


def committed_files(table: Path) -> set[str]:
    out = set()
    for log in (table / "_delta_log").glob("*.json"):
        for line in log.read_text().splitlines():
            action = json.loads(line)
            if "add" in action:
                out.add(action["add"]["path"])
    return out


def table_hash(spark, path: Path) -> str:
    df = spark.read.format("delta").load(str(path)).drop("_computed_at")
    rows = sorted(tuple(str(x) for x in r) for r in df.collect())
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def project(spark, tmp_path: Path, n: int, cards: int, days: int) -> Path:
    """Generated charges and a one-view feature repository over them; returns the repository folder."""
    data = tmp_path / "charges"
    write_charges(spark, data, n, cards, days)
    repo = tmp_path / "features"
    repo.mkdir()
    (repo / "cards.py").write_text(VIEW.format(path=str(data)))
    return repo


@pytest.mark.slow
def test_sigkill_during_a_chunk_write_leaves_the_previous_version_and_resume_matches_a_clean_run(spark, tmp_path):
    repo = project(spark, tmp_path, 60_000, 3000, 20)
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    cmd = [sys.executable, "-m", "tally.cli", "--repo", str(repo), "--warehouse", str(tmp_path / "wh"),
           "backfill", "card_load", "--start", "2026-06-02", "--end", "2026-06-19", "--step-days", "6", "--quiet"]
    table = tmp_path / "wh" / "features" / "card_load" / "v1"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    killed_at = None
    deadline = time.time() + 400
    while time.time() < deadline and proc.poll() is None:
        if (table / "_delta_log").is_dir() and store.commits(spark, table):
            on_disk = {str(p.relative_to(table)) for p in table.rglob("*.parquet")}
            if on_disk - committed_files(table):  # data files of chunk 2 written but not yet committed
                os.killpg(proc.pid, signal.SIGKILL)
                killed_at = len(store.commits(spark, table))
                break
        time.sleep(0.005)
    proc.wait(timeout=60)
    assert killed_at is not None, "the backfill finished before it could be killed mid-write"
    # the table reads cleanly at the last committed version: exactly the first chunk
    versions = store.commits(spark, table)
    assert len(versions) == killed_at >= 1
    df = spark.read.format("delta").load(str(table))
    days = sorted({str(r.ds) for r in df.select("ds").distinct().collect()})
    assert days == [str(dt.date(2026, 6, 2) + dt.timedelta(days=i)) for i in range(6 * killed_at)]
    # resume finishes (in this process: the killed one's leftovers are on disk either way); the content equals a
    # clean run's
    from tally import registry

    view = registry.load(repo).views["card_load"]
    resumed = store.backfill(spark, view, dt.date(2026, 6, 2), dt.date(2026, 6, 19), warehouse=tmp_path / "wh",
                             step_days=6, resume=True)
    assert [r["status"] for r in resumed][:killed_at] == ["skipped"] * killed_at
    store.backfill(spark, view, dt.date(2026, 6, 2), dt.date(2026, 6, 19), warehouse=tmp_path / "clean", step_days=6)
    assert table_hash(spark, table) == table_hash(spark, tmp_path / "clean" / "features" / "card_load" / "v1")


GATED_VIEW = """
import tally as tl
from pyspark.sql import functions as F

def gated(spark):
    from gate import gate
    return spark.read.parquet({path!r}).withColumn("amount", gate({gate_dir!r})(F.col("amount")))

card = tl.Entity("card", keys=["card_id"])
charges = tl.Source("charges", dataframe=gated, timestamp="created")
card_load = tl.FeatureView(name="card_load", entity=card, source=charges, ttl="3d",
    aggregations=[tl.Aggregation("count", windows=["1h", "1d", "3d"]),
                  tl.Aggregation("sum", column="amount", windows=["1h", "1d", "3d"])])
"""


def rows_of(spark, path: Path) -> dict[tuple, tuple]:
    """(card, day) -> the row's values, without _computed_at."""
    df = spark.read.format("delta").load(str(path)).drop("_computed_at", "snapshot_ts")
    return {(r.card_id, str(r.ds)): tuple(r) for r in df.collect()}


def uncommitted_days(table: Path) -> set[str]:
    """Days with data files on disk that no commit of the table names."""
    written = {str(p.relative_to(table)) for p in table.rglob("*.parquet")}
    return {f.split("/")[0].removeprefix("ds=") for f in written - committed_files(table)}


def wait_for(condition, what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.02)


@pytest.mark.slow
def test_two_backfills_of_overlapping_days_at_once_never_duplicate_or_lose_rows(spark, tmp_path, monkeypatch):
    """Both writers are held until both have written every data file of their chunk, and only then commit, one
    after the other: Delta's commit lock (held here) stands between writing files and committing them, and the
    source's gate (a file lock the events' Python UDF waits on) makes both writers reach their write jobs before
    either writes. The raced table is then compared, as it is, with an uninterrupted run.

    Adaptive execution is off while they race: with it, the sweep's input stage runs when the frame is planned,
    before the Delta transaction starts, and the gate would hold the writers outside their transactions."""
    import fcntl

    from tally import registry

    data = tmp_path / "charges"
    write_charges(spark, data, 8_000, 300, 12)
    spark.read.parquet(str(data)).coalesce(1).write.parquet(str(tmp_path / "one"))  # one task per writer reads it
    gate_dir = tmp_path / "gate"
    gate_dir.mkdir()
    (gate_dir / "gate.py").write_text(GATE)
    monkeypatch.syspath_prepend(str(gate_dir))
    spark.sparkContext.addPyFile(str(gate_dir / "gate.py"))
    repo = tmp_path / "features"
    repo.mkdir()
    (repo / "cards.py").write_text(GATED_VIEW.format(path=str(tmp_path / "one"), gate_dir=str(gate_dir)))
    view = registry.load(repo).views["card_load"]
    wh = tmp_path / "wh"
    first = (dt.date(2026, 6, 2), dt.date(2026, 6, 3))
    ranges = {"a": (dt.date(2026, 6, 4), dt.date(2026, 6, 9)), "b": (dt.date(2026, 6, 7), dt.date(2026, 6, 11))}
    store.backfill(spark, view, *first, warehouse=wh)  # the table exists
    table = store.table_path(wh, view.name, view.version)

    outcomes: dict[str, object] = {}

    def run(name):
        try:  # no statistics: they are computed before the transaction opens, and the gate must hold the writers
            # inside it (their write jobs); the race between the transactions is the same with statistics
            outcomes[name] = store.backfill(spark, view, *ranges[name], warehouse=wh, step_days=10, statistics=False)
        except Exception as exc:  # noqa: BLE001 - recorded and asserted below
            outcomes[name] = exc

    jvm = spark._jvm
    commit_lock = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, str(table)).snapshotLock()
    gate_lock = open(gate_dir / "lock", "w")
    fcntl.flock(gate_lock, fcntl.LOCK_EX)
    (gate_dir / "armed").touch()
    spark.conf.set("spark.databricks.delta.commitLock.enabled", "true")
    spark.conf.set("spark.sql.adaptive.enabled", "false")
    threads = [threading.Thread(target=run, args=(name,)) for name in ranges]
    locked = False
    try:
        for t in threads:
            t.start()
        # 1. both writers' write jobs are reading events (each blocked at the gate): both transactions are open
        # (only jobs that compute the amounts run the UDF: the write jobs; validation and planning read other columns,
        # and without adaptive execution the sweep's input stage is a stage of the write job)
        wait_for(lambda: len(list(gate_dir.glob("arrived-*"))) >= 2, "both writers' write jobs reach the gate")
        # 2. hold the commit, open the gate: each writer writes all its files, then waits for the commit lock
        commit_lock.lock()
        locked = True
        (gate_dir / "armed").unlink()
        fcntl.flock(gate_lock, fcntl.LOCK_UN)
        wait_for(lambda: commit_lock.getQueueLength() == 2, "both writers wait to commit")
        # 3. the overlap is certain: both writers' data files are on disk (days only a wrote, days only b wrote),
        # and nothing but the first backfill is committed
        pending = uncommitted_days(table)
        arrivals = sorted(p.name for p in gate_dir.glob("arrived-*"))
        assert {"2026-06-04", "2026-06-11"} <= pending, f"uncommitted files of days {pending}; gate: {arrivals}"
        assert len(store.commits(spark, table)) == 1
    finally:
        if locked:
            commit_lock.unlock()
        (gate_dir / "armed").unlink(missing_ok=True)
        fcntl.flock(gate_lock, fcntl.LOCK_UN)
        gate_lock.close()
        for t in threads:
            t.join(timeout=600)
        spark.conf.unset("spark.databricks.delta.commitLock.enabled")
        spark.conf.set("spark.sql.adaptive.enabled", "true")
    assert not any(t.is_alive() for t in threads)

    # exactly one writer won; the other was told another backfill committed first, and that rerunning is safe
    failed = {n: o for n, o in outcomes.items() if isinstance(o, Exception)}
    assert len(failed) == 1, outcomes
    [(loser, error)] = failed.items()
    [winner] = set(ranges) - {loser}
    assert isinstance(error, ConcurrentWriteError), repr(error)
    assert "another backfill committed" in str(error) and "rerun" in str(error)
    assert [r["status"] for r in outcomes[winner]] == ["written"]
    assert [c["tally"]["range"] for c in store.commits(spark, table)] == [[str(d) for d in first],
                                                                   [str(d) for d in ranges[winner]]]

    # the raced table, as it is, equals an uninterrupted run of the same commits: no row lost, none duplicated,
    # none written by the loser
    clean = tmp_path / "clean"
    store.backfill(spark, view, *first, warehouse=clean)
    store.backfill(spark, view, *ranges[winner], warehouse=clean, step_days=10)
    raced, want = rows_of(spark, table), rows_of(spark, store.table_path(clean, view.name, view.version))
    assert sorted(set(want) - set(raced))[:5] == [] and sorted(set(raced) - set(want))[:5] == []
    assert raced == want
    df = spark.read.format("delta").load(str(table))
    assert df.count() == len(raced), "duplicated rows"
    # the loser reruns cleanly; the result equals one sequential backfill of every day
    store.backfill(spark, view, *ranges[loser], warehouse=wh, step_days=10)
    store.backfill(spark, view, *ranges[loser], warehouse=clean, step_days=10)
    assert rows_of(spark, table) == rows_of(spark, store.table_path(clean, view.name, view.version))
    days = {d for _, d in rows_of(spark, table)}
    assert days == {str(dt.date(2026, 6, 2) + dt.timedelta(days=i)) for i in range(10)}


# The gate: a Python UDF over the events' amounts that, while `armed` exists, records which job reached it and
# waits for a shared lock on `lock` (which the test holds exclusively). It returns the amount unchanged.
GATE = """
import fcntl, os
from pyspark import TaskContext
from pyspark.sql import functions as F


def gate(folder):
    armed, lock = os.path.join(folder, "armed"), os.path.join(folder, "lock")

    def pass_through(x):
        if os.path.exists(armed):
            ctx = TaskContext.get()
            name = os.path.join(folder, f"arrived-{ctx.stageId()}-{ctx.partitionId()}")
            with open(name, "w") as fh:
                fh.write(ctx.getLocalProperty("callSite.short") or "?")
            with open(lock) as fh:
                fcntl.flock(fh, fcntl.LOCK_SH)
                fcntl.flock(fh, fcntl.LOCK_UN)
        return x

    return F.udf(pass_through, "double")
"""
