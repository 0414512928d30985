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
import tally as tl
from tally import store
from tally.errors import ConcurrentWriteError

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
    base = dt.datetime(2026, 6, 1)
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
    # resume finishes; the content equals a clean run's
    out = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    from tally import registry

    view = registry.load(repo).views["card_load"]
    store.backfill(spark, view, dt.date(2026, 6, 2), dt.date(2026, 6, 19), warehouse=tmp_path / "clean", step_days=6)
    assert table_hash(spark, table) == table_hash(spark, tmp_path / "clean" / "features" / "card_load" / "v1")


def test_two_backfills_of_overlapping_days_at_once_never_duplicate_or_lose_rows(spark, tmp_path):
    from tally import registry

    view = registry.load(project(spark, tmp_path, 8_000, 300, 12)).views["card_load"]
    wh = tmp_path / "wh"
    store.backfill(spark, view, dt.date(2026, 6, 2), dt.date(2026, 6, 3), warehouse=wh)  # the table exists
    outcomes: dict[str, object] = {}
    barrier = threading.Barrier(2)

    def run(name, start, end):
        barrier.wait()
        try:
            outcomes[name] = store.backfill(spark, view, start, end, warehouse=wh, step_days=10)
        except Exception as exc:  # noqa: BLE001 - recorded and asserted below
            outcomes[name] = exc

    threads = [threading.Thread(target=run, args=("a", dt.date(2026, 6, 4), dt.date(2026, 6, 9))),
               threading.Thread(target=run, args=("b", dt.date(2026, 6, 7), dt.date(2026, 6, 11)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failures = [o for o in outcomes.values() if isinstance(o, Exception)]
    assert len(failures) <= 1
    for f in failures:
        assert isinstance(f, ConcurrentWriteError), repr(f)
        assert "retry" in str(f) or "rerun" in str(f)
    table = store.table_path(wh, view.name, view.version)
    df = spark.read.format("delta").load(str(table))
    assert df.count() == df.select("card_id", "ds").distinct().count(), "duplicated rows"
    # whatever lost the race reruns cleanly; the result equals one sequential backfill of every day
    store.backfill(spark, view, dt.date(2026, 6, 4), dt.date(2026, 6, 11), warehouse=wh, step_days=10)
    clean = tmp_path / "clean"
    store.backfill(spark, view, dt.date(2026, 6, 2), dt.date(2026, 6, 11), warehouse=clean, step_days=10)
    assert table_hash(spark, table) == table_hash(spark, store.table_path(clean, view.name, view.version))
    assert tl.read_features(spark, view, warehouse=wh).count() > 0
