"""`tally stream`: online views kept fresh by a Structured Streaming query per view over its Delta source.

How a stream starts (once per view version, recorded in `<warehouse>/checkpoints/<view>/v<version>/bootstrap.json`):
the source's current Delta version V is materialized (every tile requests from its newest event on need), then the
query reads the commits after V (`startingVersion` V + 1), so every row is folded exactly once: by the bootstrap or
by one micro-batch. Each micro-batch goes to Scala (`StreamJob`, through `fold_batch`) with Spark's batch id and the
source's contract as flags, counted in its one read of the batch (a failure stops the stream before any write); it
folds the batch's events into the stored tiles, closes the batch in the store and then appends its tiles to the Delta
tile table (`tile_table`) beside the next batch, recording the id in both (see docs/streaming.md for why a replay or a
lost commit changes nothing).

Spark's own checkpoint lives beside the bootstrap record (`.../spark`); deleting the folder starts the stream over
with a new bootstrap and a new stream name, so its batch ids and stamps never meet the old ones.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path

from tally import definitions, kernels, online, sources, store, utc
from tally.definitions import FeatureView
from tally.errors import DataError, TallyError, UsageError

DEFAULT_TRIGGER = "1s"

# Spark's default checkpoint file manager writes through Hadoop's FileContext, which on the local file system without
# Hadoop's native library (pip's pyspark has none) spawns a `chmod` and a `readlink` process for each file it writes:
# measured on the 2-core machine, the offset and commit logs' writes took ~250 ms of every batch that way and ~50 ms
# with the FileSystem-based manager (bench/README.md, "Streaming freshness"). A local rename is atomic either way.
_CHECKPOINT_MANAGER = ("spark.sql.streaming.checkpointFileManagerClass",
                       "org.apache.spark.sql.execution.streaming.checkpointing.FileSystemBasedCheckpointFileManager")


def checkpoint_dir(warehouse: str | Path, view: FeatureView) -> Path:
    """One checkpoint per view version: a new version (a new definition) streams from its own bootstrap."""
    return Path(warehouse) / "checkpoints" / view.name / f"v{view.version}"


def tile_table(warehouse: str | Path, view: FeatureView) -> Path:
    """The Delta tile table of a view version: every tile each micro-batch wrote to the online store, as folded, with
    its stamp and batch id (one Delta commit per batch, whose commit info names the stream and the batch)."""
    return Path(warehouse).resolve() / "tiles" / view.name / f"v{view.version}"


def _write_json(path: Path, data: dict) -> None:
    """Whole or not at all: a kill mid-write leaves the previous file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, sort_keys=True))
    os.replace(tmp, path)


def require_streamable(view: FeatureView, *, data=None) -> Path:
    """An online view over a Delta table at a path; returns the table's path."""
    online.require_servable(view)
    src = view.source
    if src.format != "delta" or src.path is None:
        what = f"format '{src.format}'" if src.path is not None else ("a table name" if src.table else "a dataframe= function")
        raise UsageError(f"view '{view.name}': source '{src.name}' is {what}; `tally stream` reads Delta tables only",
                         hint="stream from a Delta source (Source(..., path=..., format='delta')), or keep the view "
                              "fresh with `tally materialize` on a schedule")
    path = sources.location(src, data)
    if not store.is_table(path):
        raise DataError(f"view '{view.name}': source '{src.name}' has no Delta table at {path}",
                        hint="write the source's first commit before starting the stream")
    return path


def _bootstrap(spark, view: FeatureView, table: Path, *, warehouse, data, url: str) -> dict:
    """The stream's start, made once: materialize the source as of its latest version and record it."""
    folder = checkpoint_dir(warehouse, view)
    record = folder / "bootstrap.json"
    if record.is_file():
        return json.loads(record.read_text())
    version = store.resolve_version(spark, table)
    report = online.materialize(spark, [view], warehouse=warehouse, data=data, store=url,
                                versions={view.source.name: version})[0]
    # Stamps of this stream are base + batch id: positive (materialize's are negative) and, with the bootstrap's
    # second in the high bits, apart from any earlier stream of this view version.
    base = int(time.time()) << 24
    state = {"delta_version": version, "from_us": report["from_us"], "stamp_base": base,
             "stream": f"{view.name}:v{view.version}:{base}", "store": url}
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(record, state)
    return state


def _has_next_commit(spark, view, table: Path, state: dict, warehouse) -> bool:
    """Whether the query can start: Delta refuses a `startingVersion` that does not exist yet, so before the query's
    first batch (no offsets in its checkpoint) the commit after the bootstrap's must be there."""
    if (checkpoint_dir(warehouse, view) / "spark" / "offsets").is_dir():
        return True
    return store.resolve_version(spark, table) > state["delta_version"]


class _StopRequested(Exception):
    """A micro-batch that began after its query was asked to stop: it ends at once, unwritten (replayed next start)."""


class _Batches:
    """Which views are inside a micro-batch, so that a stop lands between batches. `query.stop()` interrupts the
    query's thread; inside foreachBatch's Python callback that makes Spark match a regular expression over the Py4J
    error text, which overflows the stack (a StackOverflowError printed at every Ctrl-C mid-batch; SPARK-39218,
    SPARK-48717). Between triggers the thread waits for the next one, where an interrupt is clean and the batch before
    is committed in Spark's checkpoint."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy: set[str] = set()
        self.stopping: set[str] = set()

    @contextmanager
    def running(self, name: str):
        with self._lock:
            if name in self.stopping:
                raise _StopRequested(name)
            self._busy.add(name)
        try:
            yield
        finally:
            with self._lock:
                self._busy.discard(name)

    def stop(self, name: str, query, patience_s: float = 60.0) -> None:
        """Stop `query` once its batch in progress (if any) is done; after `patience_s`, at once. A batch that begins
        between the check and the stop raises `_StopRequested` before any work, so it is inside the callback for
        microseconds, not for a batch's length."""
        with self._lock:
            self.stopping.add(name)
        deadline = time.monotonic() + patience_s
        while query.isActive and time.monotonic() < deadline:
            with self._lock:
                idle = name not in self._busy
            # after foreachBatch returns, Spark still writes the batch's commit: wait for the trigger's end too
            if idle and not query.status["isTriggerActive"]:
                break
            time.sleep(0.02)
        if query.isActive:
            query.stop()


def stream(spark, views: Sequence[FeatureView], *, warehouse: str | Path = "warehouse", data=None,
           store_url: str | None = None, trigger: str = DEFAULT_TRIGGER, until_idle: bool = False,
           max_batches: int | None = None, files_per_batch: int | None = None,
           on_batch: Callable[[dict], None] | None = None, stop: threading.Event | None = None) -> list[dict]:
    """Stream each view's source into the online store until stopped (KeyboardInterrupt, or `stop` set by another
    thread), or, with `until_idle`, until every commit there now is folded, or after `max_batches` batches per view.
    Either way each query stops between two batches. Returns each view's last batch report (view, version,
    batch_id, events, tiles, applied, late, newest_us, lag_s, phases_ms)."""
    url = online.store_url(store_url, warehouse=warehouse)
    trigger_us = definitions.parse_duration(trigger, where="--trigger")
    tables = {v.name: require_streamable(v, data=data) for v in views}
    if url.startswith("sqlite:"):
        Path(url[len("sqlite:"):]).parent.mkdir(parents=True, exist_ok=True)
    last: dict[str, dict] = {}
    counts: dict[str, int] = {}
    failures: dict[str, tuple[int, Exception]] = {}
    queries = []
    batches = _Batches()
    states = {v.name: _bootstrap(spark, v, tables[v.name], warehouse=warehouse, data=data, url=url) for v in views}
    for v in views:  # a crash after a batch's close lost its tile-table commit: the table gets it from the store
        kernels.stream_catch_up(spark, v, url, str(tile_table(warehouse, v)), states[v.name]["stream"],
                                states[v.name]["stamp_base"])

    def start(v: FeatureView) -> None:
        state = states[v.name]
        reader = spark.readStream.format("delta").option("startingVersion", state["delta_version"] + 1)
        if files_per_batch:
            reader = reader.option("maxFilesPerTrigger", files_per_batch)
        rows = sources.shape(reader.load(str(tables[v.name])), v.source, scan=False)
        status_path = checkpoint_dir(warehouse, v) / "status.json"

        def fold(batch, batch_id, v=v, state=state, status_path=status_path):
            try:
                with batches.running(v.name):
                    _fold(batch, batch_id, v, state, status_path)
            except _StopRequested:
                raise
            except Exception as exc:  # the query fails with Spark's text of it; the main thread raises it typed
                failures.setdefault(v.name, (batch_id, exc))
                raise

        def _fold(batch, batch_id, v, state, status_path):
            r = fold_batch(spark, batch, v, url, str(tile_table(warehouse, v)), state["stream"], batch_id,
                           state["stamp_base"], state["from_us"])
            now_us = utc.micros(dt.datetime.now(dt.timezone.utc))
            r.update(view=v.name, version=v.version,
                     lag_s=None if r["newest_us"] is None else (now_us - r["newest_us"]) / 1e6)
            if not r["skipped"]:
                _write_json(status_path, {**r, "at_us": now_us, "stream": state["stream"]})
            last[v.name] = r
            counts[v.name] = counts.get(v.name, 0) + 1
            if on_batch is not None:
                on_batch(r)

        writer = (rows.writeStream.foreachBatch(fold).queryName(f"tally_stream_{v.name}_v{v.version}")
                  .option("checkpointLocation", str(checkpoint_dir(warehouse, v) / "spark")))
        every = f"{trigger_us // 1000} milliseconds"
        writer = writer.trigger(availableNow=True) if until_idle else writer.trigger(processingTime=every)
        with _local_checkpoints(spark):  # the query's logs take their manager as it starts
            queries.append((v, writer.start()))

    # A view starts once its source has a commit after its bootstrap; until then it waits (or, until idle, is done)
    # without holding back the others.
    pending = list(views)
    unflushed: Exception | None = None
    try:
        while pending or any(q.isActive for _, q in queries):
            for v in list(pending):
                if _has_next_commit(spark, v, tables[v.name], states[v.name], warehouse):
                    start(v)
                    pending.remove(v)
            if until_idle or (stop is not None and stop.is_set()):
                pending.clear()  # idle: the bootstrap holds every commit; or stopped
            for v, q in queries:
                enough = max_batches is not None and counts.get(v.name, 0) >= max_batches
                if (enough or (stop is not None and stop.is_set())) and q.isActive:
                    batches.stop(v.name, q)
            time.sleep(max(trigger_us / 1e6, 0.1) if pending else 0.1)
        for v, q in queries:
            try:
                q.awaitTermination()  # raises the query's failure, if any
            except Exception as exc:
                if v.name in batches.stopping and v.name not in failures:
                    continue  # a batch begun after the stop ended unwritten: a stop, not a failure
                raise _typed(v, failures.get(v.name), exc) from None
    finally:  # Ctrl-C (KeyboardInterrupt) or a failure: every query stops between two batches
        for v, q in queries:
            batches.stop(v.name, q)
        # The last batch's tile-table commit runs after its foreachBatch returned: wait for it, so a stopped stream
        # leaves its table whole. A failure is raised below, unless another one is on its way already.
        for v in views:
            try:
                kernels.stream_flush(spark, str(tile_table(warehouse, v)))
            except Exception as exc:
                unflushed = unflushed or exc
    if unflushed is not None:
        raise unflushed
    return [last[v.name] for v in views if v.name in last]


@contextmanager
def _local_checkpoints(spark):
    """The FileSystem-based checkpoint manager while a query starts (checkpoints are under the warehouse, a local
    folder), the session's own setting again after."""
    key, manager = _CHECKPOINT_MANAGER
    before = spark.conf.get(key, None)
    spark.conf.set(key, manager)
    try:
        yield
    finally:
        if before is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, before)


def fold_batch(spark, batch, view: FeatureView, store_url: str, table: str, stream: str, batch_id: int, stamp_base: int,
               from_us: int) -> dict:
    """One micro-batch (what foreachBatch runs): checked against the source's contract, folded into the store and
    (beside the next batch) the tile table by StreamJob. Returns StreamJob's report, `check` first in its phases.

    The contract costs no read of its own: its schema checks need none, and its row checks go to StreamJob as one
    boolean column per check (`validation.failing_flags`), counted in the same read that counts the batch's events
    and before anything is written; a failing batch writes nothing and raises here, as `check_batch` would (examples
    are then read for the failing checks). A source with an `id` is checked whole first (`check_batch`): its
    uniqueness is a job of its own that must come before any write."""
    from tally import validation

    started = time.monotonic()
    source = view.source
    what = f"source '{source.name}'{_where(view, batch_id)}"
    checks = validation.source_checks(source, [view])
    flags = []
    if source.id:
        check_batch(batch, view, batch_id)
    else:
        schema = validation.schema_report(batch, checks, what=what, types=source.schema)
        if schema is not None:
            _refuse(schema, view)
        flags = validation.failing_flags(checks)
    checked = time.monotonic()
    with validation.reading(what):
        r = kernels.stream_batch(spark, batch.select("*", *flags) if flags else batch, view, store_url, table, stream,
                                 batch_id, stamp_base, from_us, flags=[f"__tally_fail{i}" for i in range(len(flags))])
    if any(r["failing"]):
        _refuse(validation.row_report(batch, checks, r["events"], r["failing"], what=what, types=source.schema,
                                      allow_empty=True), view)
    r["phases_ms"] = {"check": round((checked - started) * 1000), **r["phases_ms"]}
    return r


def check_batch(batch, view: FeatureView, batch_id: int) -> None:
    """The source's contract on one micro-batch (the checks `materialize` and backfills run: keys and timestamps not
    null, timestamps within the source's bounds, declared types and checks, ids unique within the batch), before
    anything of it is written: a failing batch stops the stream and leaves both stores as they were. One aggregate
    over the batch; examples are fetched only for failing checks. The source's `on_invalid="quarantine"` does not
    apply here: a quarantine append on every replay of the batch would repeat its rows (docs/streaming.md).
    `fold_batch` runs the same checks without the aggregate's read of its own."""
    from tally import validation

    _refuse(validation.source_report(batch, view.source, [view], allow_empty=True, where=_where(view, batch_id)), view)


def _where(view: FeatureView, batch_id: int) -> str:
    return f" for view '{view.name}' in micro-batch {batch_id}"


def _refuse(report, view: FeatureView) -> None:
    """Raises the DataError of a failing contract report (no-op when it passes), with the way out."""
    folder = f"<warehouse>/checkpoints/{view.name}/v{view.version}"
    report.raise_if_failed(hint=f"the stream refuses this batch at every restart (a Delta commit stays in the log): "
                                f"remove the rows from the source (DELETE, a new Delta version), delete {folder} and "
                                f"start the stream again; it bootstraps from the fixed table")


def _typed(view: FeatureView, failure: tuple[int, Exception] | None, query_error: Exception) -> Exception:
    """A failed query as a tally error: the batch's own typed error when it raised one, else a DataError naming the
    view and batch with the first line of the JVM's message (a null key or time in the source, for example)."""
    if failure is not None and isinstance(failure[1], TallyError):
        return failure[1]
    batch = f" in micro-batch {failure[0]}" if failure is not None else ""
    text = str(failure[1] if failure is not None else query_error)
    reason = next((line.strip() for line in text.splitlines() if "IllegalArgumentException" in line),
                  text.strip().splitlines()[0] if text.strip() else type(query_error).__name__)
    return DataError(f"view '{view.name}': the stream stopped{batch}: {reason}",
                     hint="fix or filter the rows the message names in the source (a new commit), then start the "
                          "stream again: it resumes with that batch")


def status(warehouse: str | Path, view: FeatureView) -> dict | None:
    """The stream's last batch as its process recorded it (None: never streamed): what `describe` shows."""
    path = checkpoint_dir(warehouse, view) / "status.json"
    if not path.is_file():
        return None
    st = json.loads(path.read_text())
    st["at"] = utc.from_micros(st["at_us"])
    st["newest"] = None if st.get("newest_us") is None else utc.from_micros(st["newest_us"])
    return st
