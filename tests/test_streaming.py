"""`tally stream`: a Delta source folded into the online store micro-batch by micro-batch, exactly once.

- parity under streaming: charges appended in small commits, out of order within minutes; after each commit is
  streamed, fetched values equal the training set's for every function, on SQLite and on Redis;
- exactly once: a `tally stream` process SIGKILLed at random points mid-batch and restarted leaves the store's
  tiles equal to a never-interrupted run's; Ctrl-C stops it cleanly;
- late events: older than the store's horizon, counted and left alone; `tally materialize` heals them.
Data stays tiny: a few seconds of streaming per test (the kill test pays for three fresh JVMs).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import runpy
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis_server
import tally as tl
from tally import kernels, online, sources, store, streaming
from tally.errors import DataError, UsageError
from tally.reports import describe_report, describe_text
from tally.utc import from_micros, micros
from test_online import CARD, CASES, CHARGES_SCHEMA, HOUR, KEYS, MINUTE, T0_US, charges, mismatches, offline_rows

DAY = 24 * HOUR


def append(spark, path: Path, rows) -> None:
    """One Delta commit of one file (so that `files_per_batch=1` makes one micro-batch per commit)."""
    spark.createDataFrame(rows, CHARGES_SCHEMA).coalesce(1).write.format("delta").mode("append").save(str(path))


def arrivals(events, commits: int, seed: int, late_us: int = 4 * MINUTE) -> list[list[tuple]]:
    """The events in arrival order, each up to `late_us` after its time (so shuffled within minutes), cut in commits."""
    rng = random.Random(seed)
    order = sorted(events, key=lambda e: micros(e[1]) + rng.randrange(late_us))
    size = -(-len(order) // commits)
    return [order[i:i + size] for i in range(0, len(order), size)]


def stream_view(tmp: Path, name: str = "card_stream", windows=("1h", "24h", None), cases=CASES) -> tl.FeatureView:
    aggs = [tl.Aggregation(fn, column=case.get("column"), windows=list(windows), params=case.get("params", {}))
            for fn, cs in cases.items() for case in cs]
    source = tl.Source("charges", path=str(tmp / "charges"), format="delta", timestamp="created")
    return tl.FeatureView(name, entity=CARD, source=source, aggregations=aggs, ttl="36h", online=True)


def requests(at_us: int) -> list[tuple]:
    """Every key (and one without events) at the newest event, minutes before it and an hour after it."""
    return [(i, k, from_micros(at)) for i, (k, at) in enumerate(
        (k, at) for k in [*KEYS, "c_none"] for at in (at_us, at_us - 7 * MINUTE - 3, at_us + HOUR))]


def check_parity(spark, view, warehouse, url, rows, offline) -> int:
    fetched = online.get(spark, [view.name], rows=[{"entities": {"card_id": k}, "at": at} for _, k, at in rows],
                         warehouse=warehouse, store=url)
    bad = mismatches(view, offline, fetched, charges())
    assert not bad, f"{len(bad)} of {len(rows) * len(view.features)} values differ at {rows[0][2]}: {bad[:5]}"
    return len(rows) * len(view.features)


def test_parity_under_streaming_every_function_sqlite_and_redis(spark, tmp_path):
    events = charges()
    first, *commits = arrivals(events, 5, seed=3)
    view = stream_view(tmp_path)
    append(spark, tmp_path / "charges", first)
    redis = redis_server.start()
    try:
        stores = {"sqlite": (tmp_path / "wh_sqlite", f"sqlite:{tmp_path / 'sqlite' / 'tally.db'}"),
                  "redis": (tmp_path / "wh_redis", redis.url)}
        seen = [*first]
        compared = 0
        for n, batch in enumerate([[], *commits]):
            if batch:
                append(spark, tmp_path / "charges", batch)
                seen += batch
            rows = requests(max(micros(e[1]) for e in seen))
            offline = offline_rows(spark, view, rows) if batch else None
            for warehouse, url in stores.values():
                reports = []
                streaming.stream(spark, [view], warehouse=warehouse, store_url=url, until_idle=True,
                                 on_batch=reports.append)
                assert sum(r["events"] for r in reports) == len(batch), (n, reports)
                assert all(r["late"] == 0 for r in reports) and all(r["lag_s"] is not None for r in reports if r["events"])
                if batch:  # the first round only bootstraps (materializes what is there)
                    compared += check_parity(spark, view, warehouse, url, rows, offline)
        assert compared > 5_000
        st = streaming.status(stores["sqlite"][0], view)
        assert st["events"] == len(commits[-1]) and st["newest_us"] == max(micros(e[1]) for e in commits[-1])
    finally:
        redis.stop()


REPO = """
import tally as tl
card = tl.Entity("card", keys=["card_id"])
charges = tl.Source("charges", path={path!r}, format="delta", timestamp="created")
card_stream = tl.FeatureView(
    name="card_stream", entity=card, source=charges, ttl="36h", online=True,
    aggregations=[tl.Aggregation("count", windows=["1h", "24h", None]),
                  tl.Aggregation("sum", column="amount", windows=["24h", None]),
                  tl.Aggregation("last_k", column="merchant", windows=["24h"], params={{"k": 3}}),
                  tl.Aggregation("approx_distinct", column="merchant", windows=[None])])
"""


def tiles(store) -> list[tuple]:
    """Every tile's address and content (not its stamp: the bootstrap's second is in it), from a SQLite file or a
    Redis server (its layout: a hash per entity key `tally:{view:version:key}`, a field `length:start` per tile
    holding an 8-byte stamp then the payload)."""
    if isinstance(store, Path):
        with sqlite3.connect(store) as con:
            return con.execute("SELECT view, version, key, length, start, payload FROM tiles ORDER BY 1, 2, 3, 4, 5").fetchall()
    out = []
    for name in store.command("KEYS", "tally:{*}"):
        view, version, key = name.decode()[len("tally:{"):-1].split(":", 2)
        fields = store.command("HGETALL", name)
        for f, value in zip(fields[::2], fields[1::2]):
            length, start = map(int, f.decode().split(":"))
            out.append((view, int(version), key.encode(), length, start, value[8:]))
    return sorted(out)


def last_batch(db: Path) -> int | None:
    with sqlite3.connect(db) as con:
        row = con.execute("SELECT max(batch_id) FROM stream_batches").fetchone()
    return row[0] if row else None


def last_status(warehouse: Path, view) -> int | None:
    """The last batch the stream finished (written to the store and the tile table): its status file's."""
    st = streaming.status(warehouse, view)
    return None if st is None else st["batch_id"]


def tile_table(spark, warehouse: Path, view, path: Path | None = None) -> list[tuple]:
    """The Delta tile table's rows, in order."""
    path = str(path or streaming.tile_table(warehouse, view))
    rows = [tuple(r) for r in spark.read.format("delta").load(path)
            .orderBy("batch_id", "key", "length_us", "start_us").collect()]
    return [(k, n, s, bytes(p), stamp, b) for k, n, s, p, stamp, b in rows]


def latest_tiles(table: list[tuple]) -> dict[tuple, bytes]:
    """What rebuilding a store from the tile table writes: the latest row per address."""
    latest: dict[tuple, bytes] = {}
    for key, length, start, payload, _, _ in table:  # in batch order
        latest[(key.encode(), length, start)] = payload
    return latest


def _env() -> dict:
    return {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYTHONPATH": str(Path(tl.__file__).resolve().parents[1])}


@pytest.fixture(scope="module")
def calm_run(spark, tmp_path_factory):
    """A source of four commits, its repository, and a never-interrupted stream of it on SQLite (store and tile
    table), shared by the kill tests of both stores: tiles are the same bytes whatever store holds them."""
    root = tmp_path_factory.mktemp("killed")
    first, *commits = arrivals(charges(), 4, seed=7)
    for c in [first, *commits]:
        append(spark, root / "charges", c)
    repo = root / "features"
    repo.mkdir()
    (repo / "cards.py").write_text(REPO.format(path=str(root / "charges")))
    view = runpy.run_path(str(repo / "cards.py"))["card_stream"]
    calm = root / "calm.db"
    _bootstrap(spark, view, root / "wh_calm", f"sqlite:{calm}")
    streaming.stream(spark, [view], warehouse=root / "wh_calm", store_url=f"sqlite:{calm}", until_idle=True,
                     files_per_batch=1)
    return {"root": root, "repo": repo, "view": view, "batches": len(commits), "tiles": tiles(calm),
            "table": tile_table(spark, root / "wh_calm", view)}


def _bootstrap(spark, view, warehouse: Path, url: str) -> None:
    """The bootstrap loads the first commit only: the stream folds the three others, one per micro-batch."""
    streaming.checkpoint_dir(warehouse, view).mkdir(parents=True)
    report = online.materialize(spark, [view], warehouse=warehouse, store=url, versions={"charges": 0})[0]
    streaming._write_json(streaming.checkpoint_dir(warehouse, view) / "bootstrap.json",
                          {"delta_version": 0, "from_us": report["from_us"], "stamp_base": 1 << 40,
                           "stream": "card_stream:v1:test", "store": url})


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_sigkilled_mid_batch_twice_and_restarted_the_store_equals_a_never_interrupted_run(spark, calm_run, kind):
    """On SQLite a kill leaves a batch wholly written or not at all; on Redis it can leave one half-written (tiles
    written, batch not recorded), which the replay must complete without folding a tile twice."""
    root, view, batches = calm_run["root"], calm_run["view"], calm_run["batches"]
    redis = redis_server.start() if kind == "redis" else None
    db = root / "killed.db"
    url = redis.url if redis else f"sqlite:{db}"
    wh = root / f"wh_{kind}"
    try:
        _bootstrap(spark, view, wh, url)
        cmd = [sys.executable, "-m", "tally.cli", "--repo", str(calm_run["repo"]), "--warehouse", str(wh),
               "--online-store", url, "stream", "card_stream", "--until-idle", "--files-per-batch", "1"]
        rng = random.Random(11 if redis is None else 12)
        done: list[str] = []
        for attempt in range(3):
            # the last start on SQLite runs without --until-idle, until Ctrl-C; on Redis it ends once idle
            args = cmd if attempt < 2 or redis else [c for c in cmd if c != "--until-idle"]
            errors = root / f"stderr_{kind}_{attempt}.txt"
            with errors.open("w") as err:
                proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, env=_env(), text=True,
                                        start_new_session=True)
            try:
                if attempt < 2:
                    line = proc.stdout.readline()  # the first batch done: the next one is running
                    assert " batch " in line, line
                    done.append(line)
                    time.sleep(rng.uniform(0.0, 0.8))
                    os.killpg(proc.pid, signal.SIGKILL)  # the Python driver and its JVM, as a crash would
                    proc.wait(30)
                elif redis:
                    out, _ = proc.communicate(timeout=180)
                    assert proc.returncode == 0, out
                    done += out.splitlines()
                else:  # runs until Ctrl-C, which stops it cleanly once every batch is in (both stores: the status)
                    deadline = time.monotonic() + 120
                    while last_status(wh, view) != batches - 1 and time.monotonic() < deadline and proc.poll() is None:
                        time.sleep(0.2)
                    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: to the whole foreground group
                    out, _ = proc.communicate(timeout=60)
                    assert proc.returncode == 0 and "stream stopped (Ctrl-C)" in out, out
                    # the stop landed between batches, not inside foreachBatch (SPARK-39218)
                    assert "StackOverflowError" not in errors.read_text()
                    done += out.splitlines()
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
        stored = tiles(redis or db)
    finally:
        if redis:
            redis.stop()
    assert stored == calm_run["tiles"], f"the store after two kills differs from a calm run; batches seen: {done}"
    assert len(stored) > 100
    # The Delta tile table: every batch once (no replay appended twice, none lost), each tile as the store holds it.
    table = tile_table(spark, wh, view)
    assert sorted({r[5] for r in table}) == list(range(batches))
    assert table == calm_run["table"], f"the tile table after two kills differs from a calm run; batches seen: {done}"
    writes = [c for c in store.commits(spark, streaming.tile_table(wh, view)) if c["operation"] == "WRITE"]
    assert len(writes) == batches, writes
    at = {(key, length, start): payload for _, _, key, length, start, payload in stored}
    latest = latest_tiles(table)
    assert latest and all(at[a] == p for a, p in latest.items())


def test_a_batch_recorded_by_only_one_of_the_two_stores_is_completed_by_its_replay(spark, tmp_path):
    """A crash between the store's close and the tile table's commit leaves the batch in the store only (and a table
    written while both ran at once, before that order, may hold a batch the store does not); the replay (same batch,
    id and stamp) must complete the other and change nothing in the first."""
    events = [e for e in charges() if e[0] in ("c0", "c1", "c2")]
    first, second = arrivals(events, 2, seed=5)
    view = stream_view(tmp_path, "card_half", windows=("1h", "24h", None))
    append(spark, tmp_path / "charges", first)
    urls = [f"sqlite:{tmp_path / name}" for name in ("one.db", "two.db")]
    floor = [online.materialize(spark, [view], warehouse=tmp_path / "wh", store=u, versions={"charges": 0})[0]["from_us"]
             for u in urls][0]
    batch = sources.shape(spark.createDataFrame(second, CHARGES_SCHEMA), view.source)
    table_a, table_b = tmp_path / "tiles_a", tmp_path / "tiles_b"

    def fold(url: str, table: Path) -> dict:
        report = kernels.stream_batch(spark, batch, view, url, str(table), "card_half:v1:test", 0, 1 << 40, floor)
        kernels.stream_flush(spark, str(table))  # the table's commit runs after the store's close
        return report

    assert not fold(urls[0], table_a)["skipped"]
    whole, rows = tiles(tmp_path / "one.db"), tile_table(spark, None, view, table_a)
    assert len(rows) > 50
    # the store has the batch, the table (b) not: the table gets the store's tiles of the batch, the store nothing
    assert not fold(urls[0], table_b)["skipped"]
    assert tiles(tmp_path / "one.db") == whole and tile_table(spark, None, view, table_b) == rows
    assert fold(urls[0], table_b)["skipped"]
    # the table (a) has the batch, the store (two) not: the store gets it, the table nothing (Delta skips the append)
    assert not fold(urls[1], table_a)["skipped"]
    assert tiles(tmp_path / "two.db") == whole and tile_table(spark, None, view, table_a) == rows
    assert len(store.commits(spark, table_a)) == 1


def test_on_redis_a_batch_whose_close_died_after_raising_the_watermark_is_replayed_whole(spark, tmp_path):
    """Redis closes a batch in three steps: tiles, watermark, batch record. A crash before the record leaves the batch
    unrecorded under the watermark it raised; where that moved the horizon (its 30-day floor crossed) past some of the
    batch's own events, the replay must neither fold them again nor leave their tiles out of the tile table."""
    month = 30 * DAY
    step = (T0_US // month + 1) * month  # where the horizon's 30-day floor steps
    view = stream_view(tmp_path, "card_edge", windows=("1h", None), cases={"count": [{}], "sum": [{"column": "qty"}]})

    def charge(key: str, at_us: int, qty: int) -> tuple:
        return (key, from_micros(at_us), 1.0, qty, None, "m1", False, None, 0.5)

    append(spark, tmp_path / "charges", [charge("c0", step - 2 * DAY, 1), charge("c1", step - 2 * DAY, 1)])
    # one event a day before the step, one two days after it: its watermark puts the horizon at the step
    batch = sources.shape(spark.createDataFrame([charge("c0", step - DAY, 2), charge("c1", step + 2 * DAY, 3)],
                                                CHARGES_SCHEMA), view.source)
    redis = redis_server.start()
    try:
        floor = online.materialize(spark, [view], warehouse=tmp_path / "wh", store=redis.url,
                                   versions={"charges": 0})[0]["from_us"]

        def fold(table: str) -> dict:
            report = kernels.stream_batch(spark, batch, view, redis.url, str(tmp_path / table), "card_edge:v1:test", 0,
                                          1 << 40, floor)
            kernels.stream_flush(spark, str(tmp_path / table))
            return report

        first = fold("tiles_a")
        assert first["late"] == 0 and first["horizon_us"] <= step - DAY
        whole, rows = tiles(redis), tile_table(spark, None, view, tmp_path / "tiles_a")
        assert any(r[0] == "sc0" and r[2] + r[1] <= step for r in rows)  # a tile of the event before the step
        # the crash: tiles and watermark in the store, the batch unrecorded, the tile table's commit not landed
        redis.command("HDEL", "tally:batches", "card_edge:v1:test")
        replay = fold("tiles_b")
        assert not replay["skipped"] and replay["horizon_us"] == step
        assert tiles(redis) == whole  # nothing folded twice
        assert tile_table(spark, None, view, tmp_path / "tiles_b") == rows  # and nothing left out of the table
    finally:
        redis.stop()


def commit_tags(spark, table: Path) -> list[tuple]:
    """(operation, commit info's userMetadata) of each commit of a Delta table, oldest first."""
    from delta.tables import DeltaTable

    history = DeltaTable.forPath(spark, str(table)).history().orderBy("version").collect()
    return [(h.operation, h.userMetadata) for h in history]


def lose_last_commit(spark, table: Path) -> None:
    """The state of a crash before the table's newest commit landed: its commit file (and checksum) gone, its data
    file left behind unreferenced, as a commit that never happened leaves it."""
    log = table / "_delta_log"
    newest = max(int(f.name[:20]) for f in log.glob("*.json"))
    for name in (f"{newest:020d}.json", f"{newest:020d}.crc"):  # with the local filesystem's checksums of both
        for f in (log / name, log / f".{name}.crc"):
            f.unlink(missing_ok=True)
    spark._jvm.org.apache.spark.sql.delta.DeltaLog.clearCache()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_a_batch_whose_tile_table_commit_a_crash_lost_is_rewritten_from_the_store(spark, tmp_path, kind):
    """A batch's tile-table commit runs after the store's close, beside the next batch. A crash after Spark committed
    the batch in its checkpoint (so no replay comes) but before the table's commit landed leaves the batch in the
    store only; the restart must rewrite it to the table from the store's tiles stamped with it, even when no batch
    follows (`--until-idle` with nothing new), and then go on as usual."""
    events = [e for e in charges() if e[0] in ("c0", "c1", "c2")]
    first, *commits = arrivals(events, 4, seed=9)
    view = stream_view(tmp_path, "card_lost", windows=("1h", None),
                       cases={"count": [{}], "sum": [{"column": "qty"}], "last_k": [{"column": "merchant", "params": {"k": 2}}]})
    append(spark, tmp_path / "charges", first)
    redis = redis_server.start() if kind == "redis" else None
    url = redis.url if redis else f"sqlite:{tmp_path / 'tally.db'}"
    wh = tmp_path / "wh"
    try:
        streaming.stream(spark, [view], warehouse=wh, store_url=url, until_idle=True)  # bootstrap
        for c in commits[:2]:
            append(spark, tmp_path / "charges", c)
        streaming.stream(spark, [view], warehouse=wh, store_url=url, until_idle=True, files_per_batch=1)
        whole, stored = tile_table(spark, wh, view), tiles(redis or tmp_path / "tally.db")
        assert sorted({r[5] for r in whole}) == [0, 1]
        lose_last_commit(spark, streaming.tile_table(wh, view))
        assert sorted({r[5] for r in tile_table(spark, wh, view)}) == [0]  # the crash's state: batch 1 lost
        assert (streaming.checkpoint_dir(wh, view) / "spark" / "commits" / "1").is_file()  # and no replay to come
        assert streaming.stream(spark, [view], warehouse=wh, store_url=url, until_idle=True) == []  # no batch ran
        assert tile_table(spark, wh, view) == whole  # row for row, as the lost commit would have written it
        assert tiles(redis or tmp_path / "tally.db") == stored
        # the same with a batch after it: the lost batch is rewritten before that batch's close replaces its tiles
        lose_last_commit(spark, streaming.tile_table(wh, view))
        append(spark, tmp_path / "charges", commits[2])
        reports = []
        streaming.stream(spark, [view], warehouse=wh, store_url=url, until_idle=True, on_batch=reports.append)
        assert [r["batch_id"] for r in reports] == [2]
        table = tile_table(spark, wh, view)
        assert [r for r in table if r[5] < 2] == whole and sorted({r[5] for r in table}) == [0, 1, 2]
        writes = [c for c in store.commits(spark, streaming.tile_table(wh, view)) if c["operation"] == "WRITE"]
        assert len(writes) == 3, writes
        at = {(key, length, start): payload for _, _, key, length, start, payload in tiles(redis or tmp_path / "tally.db")}
        assert all(at[a] == p for a, p in latest_tiles(table).items())
    finally:
        if redis:
            redis.stop()


def test_a_tile_table_recording_batches_as_delta_transactions_is_still_read_and_a_replay_skipped(spark, tmp_path):
    """Tile tables written before the commit-info tag recorded each batch as Delta's idempotent-write transaction
    (txnAppId = the stream, txnVersion = the batch). Such a table must still count: a restart that replays a batch both
    it and the store record (Spark's checkpoint lost the batch's commit) skips the batch and appends nothing."""
    events = [e for e in charges() if e[0] in ("c0", "c1")]
    first, second = arrivals(events, 2, seed=4)
    view = stream_view(tmp_path, "card_old", windows=("1h", None), cases={"count": [{}], "sum": [{"column": "qty"}]})
    append(spark, tmp_path / "charges", first)
    wh, db = tmp_path / "wh", tmp_path / "tally.db"
    url = f"sqlite:{db}"
    streaming.stream(spark, [view], warehouse=wh, store_url=url, until_idle=True)  # bootstrap
    append(spark, tmp_path / "charges", second)
    streaming.stream(spark, [view], warehouse=wh, store_url=url, until_idle=True)  # batch 0
    path = streaming.tile_table(wh, view)
    rows, stored = tile_table(spark, wh, view), tiles(db)
    assert {r[5] for r in rows} == {0}
    # the table as the old code wrote it: the same rows, the batch as a transaction, no commit info
    shutil.rmtree(path)
    spark._jvm.org.apache.spark.sql.delta.DeltaLog.clearCache()
    stream_name = json.loads((streaming.checkpoint_dir(wh, view) / "bootstrap.json").read_text())["stream"]
    (spark.createDataFrame([(k, n, s, bytearray(p), stamp, b) for k, n, s, p, stamp, b in rows],
                           "key string, length_us long, start_us long, payload binary, stamp long, batch_id long")
     .coalesce(1).write.format("delta").option("txnAppId", stream_name).option("txnVersion", 0).save(str(path)))
    assert commit_tags(spark, path) == [("WRITE", None)]
    assert {"appId": stream_name, "version": 0} == next(
        {k: a["txn"][k] for k in ("appId", "version")} for a in map(json.loads, (path / "_delta_log" / f"{0:020d}.json")
                                                                     .read_text().splitlines()) if "txn" in a)
    # Spark's checkpoint without the batch's commit: the restart replays batch 0
    for f in ("0", ".0.crc"):
        (streaming.checkpoint_dir(wh, view) / "spark" / "commits" / f).unlink(missing_ok=True)
    reports = []
    streaming.stream(spark, [view], warehouse=wh, store_url=url, until_idle=True, on_batch=reports.append)
    assert [(r["batch_id"], r["skipped"]) for r in reports] == [(0, True)]
    assert commit_tags(spark, path) == [("WRITE", None)]  # nothing appended, by the replay or by the catch-up
    assert tile_table(spark, wh, view) == rows and tiles(db) == stored
    # the next batch is recorded the new way, after the old one
    append(spark, tmp_path / "charges", [("c0", from_micros(max(micros(e[1]) for e in events) + MINUTE), 1.0, 1, None,
                                          "m1", False, None, 0.5)])
    streaming.stream(spark, [view], warehouse=wh, store_url=url, until_idle=True)
    assert commit_tags(spark, path) == [("WRITE", None), ("WRITE", f"{stream_name} batch 1")]


def test_events_older_than_the_horizon_are_counted_left_alone_and_healed_by_materialize(spark, tmp_path):
    events = [e for e in charges() if e[0] in ("c0", "c1")]
    view = stream_view(tmp_path, "card_late", windows=("1h", None), cases={"count": [{}], "sum": [{"column": "qty"}]})
    append(spark, tmp_path / "charges", events)
    wh, url = tmp_path / "wh", f"sqlite:{tmp_path / 'tally.db'}"
    streaming.stream(spark, [view], warehouse=wh, store_url=url, until_idle=True)
    old = ("c0", from_micros(T0_US - 60 * DAY), 9.5, 4, None, "m1", False, None, 0.5)  # 60 days before the rest
    fresh = ("c0", from_micros(micros(events[-1][1]) - MINUTE), 1.0, 1, None, "m2", False, None, 0.1)
    append(spark, tmp_path / "charges", [old, fresh])
    reports, managers = [], []

    def slow(report: dict) -> None:  # the batch is still in foreachBatch when max_batches asks its query to stop
        managers.append(spark.streams.active[0]._jsq.streamingQuery().offsetLog().fileManager().getClass().getSimpleName())
        time.sleep(1.0)
        reports.append(report)

    # a running stream (1 s trigger) stopped after its first batch
    streaming.stream(spark, [view], warehouse=wh, store_url=url, trigger="1s", max_batches=1, on_batch=slow)
    assert [(r["events"], r["late"]) for r in reports] == [(2, 1)]
    # its checkpoint went through the FileSystem-based manager, and the session's setting is as it was
    assert managers == ["FileSystemBasedCheckpointFileManager"]
    assert spark.conf.get(streaming._CHECKPOINT_MANAGER[0], None) is None
    # the stop waited for the batch to end (not interrupting foreachBatch): Spark's checkpoint committed it
    assert (streaming.checkpoint_dir(wh, view) / "spark" / "commits" / str(reports[0]["batch_id"])).is_file()
    assert reports[0]["horizon_us"] > micros(old[1])
    text = "\n".join(describe_text(describe_report(spark, view, warehouse=str(wh), online_store=url)))
    assert f"stream: last batch {reports[0]['batch_id']} at " in text and "(2 events, 1 late)" in text, text
    at = max(micros(e[1]) for e in events) + 1
    rows = [(0, "c0", from_micros(at)), (1, "c1", from_micros(at))]
    offline = offline_rows(spark, view, rows)
    got = online.get(spark, [view.name], rows=[{"entities": {"card_id": k}, "at": a} for _, k, a in rows], warehouse=wh, store=url)
    lifetime = "count_lifetime"
    assert got[0][f"card_late:{lifetime}"] == offline[0][f"card_late__{lifetime}"] - 1  # the late event is missing
    assert got[0]["card_late:count_1h"] == offline[0]["card_late__count_1h"]  # the fresh one is in
    online.materialize(spark, [view], warehouse=wh, store=url)
    healed = online.get(spark, [view.name], rows=[{"entities": {"card_id": k}, "at": a} for _, k, a in rows], warehouse=wh, store=url)
    assert not mismatches(view, offline, healed)


def test_a_micro_batch_failing_the_source_contract_stops_the_stream_and_writes_nothing(spark, tmp_path):
    events = [e for e in charges() if e[0] in ("c0", "c1")]
    source = tl.Source("charges", path=str(tmp_path / "charges"), format="delta", timestamp="created",
                       checks=[tl.Check.ge("qty", 1)], timestamp_bounds=("2020-01-01", "2100-01-01"))
    view = tl.FeatureView("card_checked", entity=CARD, source=source, ttl="36h", online=True,
                          aggregations=[tl.Aggregation("count", windows=["1h", None]),
                                        tl.Aggregation("sum", column="qty", windows=["24h"])])
    append(spark, tmp_path / "charges", events[:150])
    wh, db = tmp_path / "wh", tmp_path / "tally.db"
    url = f"sqlite:{db}"
    streaming.stream(spark, [view], warehouse=wh, store_url=url, until_idle=True)  # bootstrap
    append(spark, tmp_path / "charges", events[150:])
    streaming.stream(spark, [view], warehouse=wh, store_url=url, until_idle=True)  # batch 0
    before = (tiles(db), last_batch(db), tile_table(spark, wh, view),
              (streaming.checkpoint_dir(wh, view) / "status.json").read_text())
    at = from_micros(micros(events[-1][1]) + MINUTE)
    good = ("c0", at, 1.0, 2, None, "m2", False, None, 0.1)
    bad = [(None, *good[1:]),                                  # a null key
           ("c1", at, 1.0, 0, None, "m2", False, None, 0.1),   # qty below the declared check
           ("c1", at, 1.0, -3, None, "m2", False, None, 0.1),
           ("c0", from_micros(micros(dt.datetime(2019, 6, 1, tzinfo=dt.timezone.utc))), 1.0, 1, None, "m2", False,
            None, 0.1)]                                        # before the source's timestamp bounds
    append(spark, tmp_path / "charges", [good, *bad])
    for _ in range(2):  # a restart refuses the same batch again
        with pytest.raises(DataError) as err:
            streaming.stream(spark, [view], warehouse=wh, store_url=url, until_idle=True)
        text = str(err.value)
        assert "source 'charges' for view 'card_checked' in micro-batch 1 fails its contract" in text, text
        failures = {f["column"]: (f["check"].split("(")[0], f["rows"], f["examples"]) for f in err.value.details["failures"]}
        assert {c: (check, n) for c, (check, n, _) in failures.items()} == {
            "card_id": ("card_id not_null", 1), "qty": ("qty ge", 2), "created": ("created between", 1)}, failures
        assert failures["qty"][2] and all(e["card_id"] == "c1" for e in failures["qty"][2])
        assert "qty ge(1): 2 row(s) fail, e.g. " in text, text
        assert "delete <warehouse>/checkpoints/card_checked/v1" in err.value.hint and err.value.exit_code == 1
        # nothing of the batch in either store, nor in the status `describe` shows
        assert before == (tiles(db), last_batch(db), tile_table(spark, wh, view),
                          (streaming.checkpoint_dir(wh, view) / "status.json").read_text())

    # what the hint says: delete the rows (a new Delta version) and the checkpoint; the stream bootstraps again
    from delta.tables import DeltaTable
    DeltaTable.forPath(spark, str(tmp_path / "charges")).delete("card_id IS NULL OR qty < 1 OR created < '2020-01-01'")
    shutil.rmtree(streaming.checkpoint_dir(wh, view))
    streaming.stream(spark, [view], warehouse=wh, store_url=url, until_idle=True)
    rows = [(0, "c0", from_micros(micros(at) + 1)), (1, "c1", from_micros(micros(at) + 1))]
    got = online.get(spark, [view.name], rows=[{"entities": {"card_id": k}, "at": a} for _, k, a in rows],
                     warehouse=wh, store=url)
    assert not mismatches(view, offline_rows(spark, view, rows), got)
    assert got[0]["card_checked:count_1h"] >= 1  # the good row of the refused commit is in


def test_a_micro_batch_and_its_contract_are_read_by_one_spark_job_and_a_failing_one_writes_nothing(spark, tmp_path):
    """`fold_batch` (what foreachBatch runs) counts the contract's row checks in StreamJob's one read of the batch: a
    passing batch of two files costs one Spark job in all; a failing one raises the contract's error (the check, its
    count, examples) before anything of it is written."""
    events = [e for e in charges() if e[0] in ("c0", "c1")]
    source = tl.Source("charges", path=str(tmp_path / "charges"), format="delta", timestamp="created",
                       checks=[tl.Check.ge("qty", 1)])
    view = tl.FeatureView("card_once", entity=CARD, source=source, ttl="36h", online=True,
                          aggregations=[tl.Aggregation("count", windows=["1h", None]),
                                        tl.Aggregation("sum", column="qty", windows=["24h"])])
    append(spark, tmp_path / "charges", events[:100])
    db, table = tmp_path / "tally.db", tmp_path / "tiles"
    url = f"sqlite:{db}"
    floor = online.materialize(spark, [view], warehouse=tmp_path / "wh", store=url, versions={"charges": 0})[0]["from_us"]

    def batch(rows, name: str):  # two files, as two source commits
        spark.createDataFrame(rows, CHARGES_SCHEMA).repartition(2).write.parquet(str(tmp_path / name))
        return sources.shape(spark.read.parquet(str(tmp_path / name)), source)

    def fold(df, batch_id: int) -> dict:
        return streaming.fold_batch(spark, df, view, url, str(table), "card_once:v1:test", batch_id, 1 << 40, floor)

    good = batch(events[100:], "good")
    sc = spark.sparkContext
    sc.setJobGroup("tally-test-once", "one read")
    try:
        report = fold(good, 0)
    finally:
        sc._jsc.clearJobGroup()
    kernels.stream_flush(spark, str(table))
    assert len(sc.statusTracker().getJobIdsForGroup("tally-test-once")) == 1
    assert not report["skipped"] and report["events"] == len(events) - 100 and not any(report["failing"]), report
    before = (tiles(db), last_batch(db), tile_table(spark, None, view, table))
    assert before[1] == 0 and before[2]

    last = events[-1]
    bad = batch([(None, *last[1:]), ("c1", last[1], last[2], 0, *last[4:]), last], "bad")
    with pytest.raises(DataError) as err:
        fold(bad, 1)
    text = str(err.value)
    assert "source 'charges' for view 'card_once' in micro-batch 1 fails its contract" in text, text
    assert "card_id not_null: 1 row(s) fail, e.g. {'card_id': None" in text and "qty ge(1): 1 row(s) fail, e.g. " in text
    assert [(f["check"], f["rows"]) for f in err.value.details["failures"]] == [("card_id not_null", 1), ("qty ge(1)", 1)]
    assert "delete <warehouse>/checkpoints/card_once/v1" in err.value.hint
    kernels.stream_flush(spark, str(table))
    assert before == (tiles(db), last_batch(db), tile_table(spark, None, view, table))


def test_only_online_views_over_delta_stream(spark, tmp_path):
    parquet = tl.FeatureView("card_pq", entity=CARD, online=True, aggregations=[tl.Aggregation("count", windows=["1h"])],
                             source=tl.Source("charges", path=str(tmp_path), format="parquet", timestamp="created"))
    with pytest.raises(UsageError, match=r"source 'charges' is format 'parquet'; `tally stream` reads Delta tables only"):
        streaming.stream(spark, [parquet], warehouse=tmp_path / "wh")
    offline_view = tl.FeatureView("card_off", entity=CARD, aggregations=[tl.Aggregation("count", windows=["1h"])],
                                  source=tl.Source("charges", path=str(tmp_path), format="delta", timestamp="created"))
    with pytest.raises(UsageError, match="view 'card_off' is not an online view"):
        streaming.stream(spark, [offline_view], warehouse=tmp_path / "wh")
