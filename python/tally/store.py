"""Delta feature tables: layout, backfills, history, time travel.

One table per view version at `<warehouse>/features/<view>/v<version>`, partitioned by `ds`. A row of day D holds
an entity's features as of the end of D (`snapshot_ts` = D+1 00:00 UTC, computed by the sweep engine at that
instant), for entities with an event within the view's horizon (its ttl, else its longest window).

A backfill of [start, end] writes each chunk of days as one atomic Delta commit that replaces exactly its `ds`
range and carries tally's commit metadata (view, version, fingerprint, range, tally version, and the per-day
statistics of every feature: `tally.stats`). Rerunning
replaces; a failure leaves every earlier commit intact; `resume` skips chunks whose days the table already covers.

History, commit metadata and time travel go through Delta's own API (`DeltaTable.history`, `versionAsOf`), never
the `_delta_log` files: Delta cleans old log files up after a checkpoint. Which days a table covers comes from its
partition values (which checkpoints keep), plus the day ranges of the commits still in the log (a day may have
no rows at all). Every day and instant here is UTC (`tally.utc`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tally import kernels, registry, sources, stats, utc
from tally.definitions import FeatureView
from tally.errors import ConcurrentWriteError, DataError, UsageError

DAY_US = utc.DAY_US


def table_path(warehouse: str | Path, view: str, version: int) -> Path:
    return Path(warehouse).resolve() / "features" / view / f"v{version}"


def is_table(path: str | Path) -> bool:
    return (Path(path) / "_delta_log").is_dir()


def stored_versions(spark, warehouse: str | Path, view: str) -> dict[int, str | None]:
    """Versions of `view` present in the warehouse, each with the fingerprint of its latest tally commit."""
    root = Path(warehouse).resolve() / "features" / view
    out: dict[int, str | None] = {}
    if root.is_dir():
        for child in root.iterdir():
            if child.name.startswith("v") and child.name[1:].isdigit() and is_table(child):
                metas = [c["tally"] for c in commits(spark, child) if c.get("tally")]
                out[int(child.name[1:])] = metas[-1]["fingerprint"] if metas else None
    return out


def commits(spark, path: str | Path) -> list[dict]:
    """The table's commits still in its log, oldest first: version, timestamp (UTC), operation, rows, tally metadata."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    if not is_table(path):
        return []
    try:
        table = DeltaTable.forPath(spark, str(path))
    except Exception as exc:  # the log folder exists before the first commit lands in it
        if "DELTA_TABLE_NOT_FOUND" in str(exc) or "DELTA_MISSING_DELTA_TABLE" in str(exc):
            return []
        raise
    history = table.history().select(
        "version", F.unix_micros("timestamp").alias("us"), "operation", "userMetadata",
        F.col("operationMetrics").getItem("numOutputRows").alias("rows"))
    out = []
    for row in sorted(history.collect(), key=lambda r: r.version):
        try:
            tally_meta = json.loads(row.userMetadata).get("tally") if row.userMetadata else None
        except (ValueError, AttributeError):
            tally_meta = None
        out.append({"version": int(row.version), "timestamp": utc.from_micros(row.us), "operation": row.operation,
                    "rows": None if row.rows is None else int(row.rows), "tally": tally_meta})
    return out


@dataclass(frozen=True)
class Chunk:
    start: dt.date
    end: dt.date

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def __str__(self) -> str:
        return f"{self.start}..{self.end}"


def chunks(start: dt.date, end: dt.date, step_days: int) -> list[Chunk]:
    if end < start:
        raise UsageError(f"backfill range is empty: --end {end} is before --start {start}")
    if step_days < 1:
        raise UsageError(f"--step-days must be at least 1, got {step_days}")
    out, day = [], start
    while day <= end:
        last = min(end, day + dt.timedelta(days=step_days - 1))
        out.append(Chunk(day, last))
        day = last + dt.timedelta(days=1)
    return out


def _extent_us(view: FeatureView) -> int | None:
    """How far before a query the view's windows reach; None when a lifetime window reaches all history."""
    reach = []
    for f in view.features:
        if f.window.length_us is None:
            return None
        reach.append(f.window.length_us + f.window.delay_us + (f.window.hop_us or 0))  # a hop reaches one more back
    if view.ttl_us is not None:
        reach.append(view.ttl_us)
    return max(reach)


def _horizon_us(view: FeatureView) -> int | None:
    """An entity gets a snapshot row on day D if it had an event within this long before D+1 00:00."""
    return view.ttl_us if view.ttl_us is not None else _extent_us(view)


def source_range(view: FeatureView, chunk: Chunk) -> tuple[dt.datetime | None, dt.datetime]:
    """The event-time range a chunk reads: [first query - extent, last query] (None: from the beginning)."""
    first_query = utc.midnight(chunk.start + dt.timedelta(days=1))
    last_query = utc.midnight(chunk.end + dt.timedelta(days=1))
    extent = _extent_us(view)
    return (None if extent is None else first_query - dt.timedelta(microseconds=extent)), last_query


def snapshot_frame(spark, view: FeatureView, chunk: Chunk, events):
    """One row per entity per day of `chunk`: keys, ds, snapshot_ts and the view's features at snapshot_ts."""
    from pyspark.sql import functions as F

    keys = list(view.entity.keys)
    ts = F.col(view.source.timestamp)
    horizon = _horizon_us(view)
    first = F.greatest(utc.day_of(ts), F.lit(chunk.start))
    last_day = F.lit(chunk.end) if horizon is None else F.least(
        F.date_sub(utc.day_of(F.timestamp_micros(F.unix_micros(ts) + F.lit(horizon))), 1), F.lit(chunk.end))
    latest = events.groupBy(*keys, utc.day_of(ts).alias("_d")).agg(F.max(ts).alias(view.source.timestamp))
    spine = (latest.select(*keys, first.alias("_first"), last_day.alias("_last"))
             .where(F.col("_first") <= F.col("_last"))
             .select(*keys, F.explode(F.sequence("_first", "_last")).alias("ds"))
             .distinct()
             .withColumn("snapshot_ts", utc.day_start(F.col("ds"), 1)))
    out = kernels.temporal(spark, spine, [(events, view, None)], "snapshot_ts")
    prefix = f"{view.name}__"
    return out.select(*keys, "ds", "snapshot_ts",
                      *[F.col(f"`{prefix}{f.name}`").alias(f.name) for f in view.features],
                      F.current_timestamp().alias("_computed_at"))


def read_source(spark, view: FeatureView, lo: dt.datetime | None, hi: dt.datetime, *, data=None):
    """The view's source limited to [lo, hi] on its timestamp, so Spark prunes partitions and row groups."""
    from pyspark.sql import functions as F

    df = sources.read(spark, view.source, data=data)
    registry.check_columns(view, df.schema)
    return df.where(_in_range(F.col(view.source.timestamp), lo, hi))


def _in_range(ts, lo, hi):

    cond = ts <= utc.lit(hi)
    return cond if lo is None else cond & (ts >= utc.lit(lo))


def checked_source(spark, view: FeatureView, lo, hi, *, warehouse, data=None) -> tuple[object, int]:
    """The source rows [lo, hi] after the source's contract: raises on failures, or quarantines them."""
    from tally import validation

    events = read_source(spark, view, lo, hi, data=data)
    # Days before the source's first event (or in a quiet spell) read no rows and are legitimately empty; an empty
    # source is still refused, most often a wrong path.
    def source_has_rows() -> bool:
        return bool(sources.read(spark, view.source, data=data).limit(1).take(1))

    return validation.apply_contract(events, view.source, [view], where=f" for view '{view.name}'", warehouse=warehouse,
                                     empty_ok=source_has_rows)


def _check_schema(spark, path: Path, df, view: FeatureView) -> None:
    if not is_table(path):
        return
    existing = spark.read.format("delta").load(str(path)).schema
    # Types compared without nullability: Delta may store an array's element nullability differently from the
    # frame that wrote it.
    want = {f.name: f.dataType.simpleString() for f in df.schema.fields}
    have = {f.name: f.dataType.simpleString() for f in existing.fields}
    if want != have:
        diff = sorted(set(want.items()) ^ set(have.items()), key=str)
        raise DataError(f"view '{view.name}': the Delta table at {path} has a schema tally did not write for this view "
                        f"(differs in {', '.join(str(n) for n, _ in diff[:5])})",
                        hint="move that table away, or bump the view's version to write a fresh table")


def backfill(
    spark,
    view: FeatureView,
    start: dt.date,
    end: dt.date,
    *,
    warehouse: str | Path,
    step_days: int = 7,
    resume: bool = False,
    data: str | Path | None = None,
    on_chunk: Callable[[dict], None] | None = None,
    statistics: bool = True,
) -> list[dict]:
    """Backfill days [start, end] of `view`; returns one record per chunk (chunk, status, rows, delta version).

    `resume` skips the chunks whose every day the table already covers: a table only ever holds one definition
    (a changed one is refused above), so a covered day was computed by this one. `data` is the data root.
    `statistics=False` records no per-day statistics: the chunk is then computed inside its write job, once,
    without caching it first (faster; `tally stats` shows nothing for those days).
    """
    if getattr(view, "kind", None) == "embedding":  # one retrain per cadence step: tally.embeddings
        from tally import embeddings

        return embeddings.backfill(spark, view, start, end, warehouse=warehouse, resume=resume, data=data,
                                   on_chunk=on_chunk)
    from tally import __version__

    path = table_path(warehouse, view.name, view.version)
    registry.require_unchanged(registry.plan_view(view, stored_versions(spark, warehouse, view.name)))
    done: set[str] = covered_days(spark, path) if resume else set()
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    plan = chunks(start, end, step_days)
    todo = [c for c in plan if not _chunk_days(c) <= done]
    if todo:  # one contract check over every row the chunks will read; nothing is written if it fails
        lo, hi = source_range(view, todo[0])[0], source_range(view, todo[-1])[1]
        events, quarantined = checked_source(spark, view, lo, hi, warehouse=warehouse, data=data)
    results, conflicts = [], _conflict_types()
    for chunk in plan:
        if chunk not in todo:
            results.append({"chunk": str(chunk), "status": "skipped"})
            if on_chunk:
                on_chunk(results[-1])
            continue
        lo, hi = source_range(view, chunk)
        frame = snapshot_frame(spark, view, chunk, events.where(_in_range(F.col(view.source.timestamp), lo, hi)))
        _check_schema(spark, path, frame, view)
        # The statistics go into the commit, so they are computed before it: over the cached frame, which the
        # write then reads instead of running the sweep a second time. A failure here writes nothing.
        if statistics:
            frame = frame.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            meta = {"tally": {"view": view.name, "version": view.version, "fingerprint": view.fingerprint,
                              "range": [str(chunk.start), str(chunk.end)], "tally_version": __version__}}
            if statistics:
                meta["tally"]["stats"] = stats.compute(frame, [f.name for f in view.features], sorted(_chunk_days(chunk)))
            writer = (frame.write.format("delta").mode("overwrite").partitionBy("ds")
                      .option("replaceWhere", f"ds >= '{chunk.start}' AND ds <= '{chunk.end}'")
                      .option("userMetadata", json.dumps(meta, sort_keys=True, separators=(",", ":"))))
            # Delta commits nothing for an empty write into an existing table; the log is read around the write
            # only when the chunk may be empty (no statistics to say it is not)
            maybe_empty = is_table(path) and not (statistics and any(d["rows"] for d in meta["tally"]["stats"]["days"].values()))
            before = commits(spark, path)[-1]["version"] if maybe_empty else None
            try:
                writer.save(str(path))
                if before is not None and commits(spark, path)[-1]["version"] == before:
                    record_empty_chunk(spark, path, meta, chunk)
            except conflicts as exc:
                raise ConcurrentWriteError(
                    f"view '{view.name}' v{view.version}: another backfill committed days {chunk} of {path} first",
                    hint="nothing of this chunk was written; rerun (with --resume to skip finished chunks)") from exc
        finally:
            if statistics:
                frame.unpersist()
        last = commits(spark, path)[-1]
        results.append({"chunk": str(chunk), "status": "written", "rows": last["rows"], "delta_version": last["version"],
                        "quarantined": quarantined})
        if on_chunk:
            on_chunk(results[-1])
    return results


def record_empty_chunk(spark, path: Path, meta: dict, chunk: Chunk) -> None:
    """Delta commits nothing for an empty write into an existing table, yet the chunk's days are computed (no entity
    had an event within the horizon: days before the source's first event, a quiet spell). A commit that only sets
    a table property carries the chunk's metadata instead, so its days count as covered."""
    key = "spark.databricks.delta.commitInfo.userMetadata"
    spark.conf.set(key, json.dumps(meta, sort_keys=True, separators=(",", ":")))
    try:
        spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('tally.last_empty_chunk' = '{chunk}')")
    finally:
        spark.conf.unset(key)


def _conflict_types() -> tuple[type[BaseException], ...]:
    """Delta's exceptions for a commit that lost a race (importing them also installs their py4j conversion)."""
    from delta import exceptions as d

    return (d.DeltaConcurrentModificationException, d.ConcurrentWriteException, d.MetadataChangedException,
            d.ProtocolChangedException, d.ConcurrentAppendException, d.ConcurrentDeleteReadException,
            d.ConcurrentDeleteDeleteException, d.ConcurrentTransactionException)


def _chunk_days(chunk: Chunk) -> set[str]:
    return {str(chunk.start + dt.timedelta(days=i)) for i in range(chunk.days)}


def resolve_version(spark, path: str | Path, as_of: int | str | dt.datetime | None = None, *,
                    history: list[dict] | None = None) -> int:
    """The one Delta version a read `as_of` means (None: latest; int: that version; timestamp: the last commit at
    or before it, naive timestamps read as UTC). Reads then use exactly this version, so what a manifest records
    is what was read. `history`: the table's `commits`, when the caller has read them already."""
    entries = commits(spark, path) if history is None else history
    if not entries:
        raise DataError(f"no Delta table at {path}")
    if as_of is None:
        return entries[-1]["version"]
    if isinstance(as_of, int) and not isinstance(as_of, bool):
        if not 0 <= as_of <= entries[-1]["version"]:
            raise DataError(f"{path} has no Delta version {as_of} (versions 0..{entries[-1]['version']})")
        return as_of
    try:
        when = utc.instant(as_of)
    except ValueError:
        raise UsageError(f"as_of {as_of!r} is neither a Delta version nor a timestamp") from None
    before = [e["version"] for e in entries if e["timestamp"] <= when]
    if not before:
        raise DataError(f"{path} has no Delta version at or before {when.isoformat()} (the oldest commit still in "
                        f"its log is version {entries[0]['version']} at {entries[0]['timestamp'].isoformat()})")
    return before[-1]


def read_features(spark, view: FeatureView, *, warehouse: str | Path, version: int | None = None):
    """The view's feature table, at Delta `version` (None: the latest); see `resolve_version`."""
    path = table_path(warehouse, view.name, view.version)
    if not is_table(path):
        raise DataError(f"view '{view.name}' v{view.version} has no table at {path}",
                        hint=f"run `tally backfill {view.name} --start ... --end ...` first")
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    try:
        return reader.load(str(path))
    except Exception as exc:
        if version is None:
            raise
        raise DataError(f"view '{view.name}' v{view.version}: cannot read Delta version {version} of {path}: "
                        f"{str(exc).strip().splitlines()[0]}",
                        hint="the version may be older than the table's log retention (delta.logRetentionDuration)") from exc


def covered_days(spark, path: str | Path, *, version: int | None = None, history: list[dict] | None = None) -> set[str]:
    """Every day the table holds at `version`: its `ds` partition values, plus the ranges of the tally commits
    still in the log (a backfilled day can have no rows). `history` as in `resolve_version`."""
    from pyspark.sql import functions as F

    if not is_table(path):
        return set()
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    days = {str(r.ds) for r in reader.load(str(path)).select(F.col("ds")).distinct().collect()}
    for c in commits(spark, path) if history is None else history:
        if version is not None and c["version"] > version:
            break
        if c.get("tally"):
            a, b = (dt.date.fromisoformat(x) for x in c["tally"]["range"])
            days |= _chunk_days(Chunk(a, b))
    return days
