"""Reading a Source into a Spark DataFrame: location, time zone, derived columns, row filter.

Only this module turns a Source into rows, so backfills, training sets and validation read sources alike.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from tally import config, utc
from tally.definitions import Source
from tally.errors import DataError, DefinitionError


def read(spark, source: Source, *, data: str | Path | None = None, version: int | None = None, scan: bool = True):
    """The source's rows with derived columns added, the filter applied and timestamps in UTC.

    A relative `path` lives under the data root `data` (default: the configured one, `data` in tally.toml or
    $TALLY_DATA), so where the data lives stays configuration and out of the view's fingerprint. A callable
    source that takes two parameters gets the data root as its second. `version` reads a Delta source as of
    that Delta version (what a training-set manifest pins). `scan=False` runs no Spark job (for the schema only).
    """

    root = Path(data if data is not None else config.load().data)
    if source.dataframe is not None:
        required = [p for p in inspect.signature(source.dataframe).parameters.values()
                    if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        takes_root = len(required) >= 2  # `lambda s, df=df: df` (a captured default) does not ask for the root
        try:
            df = source.dataframe(spark, root) if takes_root else source.dataframe(spark)
        except Exception as exc:
            raise DataError(f"source '{source.name}': its dataframe= function failed: {_first_line(exc)}",
                            hint="the function gets the Spark session" + (f" and the data root {root}" if takes_root else ""),
                            ) from exc
    elif source.table is not None:
        df = spark.table(source.table)
    else:
        path = location(source, root)
        if not (path.exists() or (any(ch in str(path) for ch in "*?[") and list(path.parent.glob(path.name)))):
            raise DataError(f"source '{source.name}': path {path} does not exist",
                            hint="check the source's path= and the data root (data in tally.toml, or $TALLY_DATA), "
                                 "or run the data generator first")
        reader = spark.read.format(source.format)
        if source.format == "csv":
            reader = reader.option("header", "true").option("inferSchema", "true")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        try:
            df = reader.load(str(path))
        except Exception as exc:  # AnalysisException, corrupt files
            raise DataError(f"source '{source.name}': cannot read {source.format} at {path}: {_first_line(exc)}") from exc
    return shape(df, source, scan=scan)


def shape(df, source: Source, *, scan: bool = True):
    """A source's raw rows as the views read them: derived columns, timestamps as UTC instants, the filter. Why
    apart from `read`: a stream (`tally.streaming`) reads the same Delta table with `readStream` and must see the
    rows a batch read sees; a streaming DataFrame cannot be scanned, so it passes `scan=False`."""
    from pyspark.sql import functions as F

    for name, expr in source.columns.items():
        try:
            df = df.withColumn(name, F.expr(expr))
        except Exception as exc:
            raise DefinitionError(f"source '{source.name}': derived column '{name}' = {expr!r} is invalid: "
                                  f"{_first_line(exc)}") from exc
    for col in filter(None, (source.timestamp, source.available_at)):
        if col not in df.columns:
            raise DataError(f"source '{source.name}': no column '{col}' (columns: {', '.join(df.columns)})")
        df = df.withColumn(col, _as_instant(df, source, col, scan))
    if source.filter:
        try:
            df = df.where(F.expr(source.filter))
        except Exception as exc:
            raise DefinitionError(f"source '{source.name}': filter {source.filter!r} is invalid: {_first_line(exc)}") from exc
    return df


def location(source: Source, data: str | Path | None = None) -> Path:
    """Where a path source's files are: its path, under the data root when relative."""
    path = Path(source.path)
    return path if path.is_absolute() else Path(data if data is not None else config.load().data) / path


_OFFSET = r"(?i)(z|[+-][0-9]{2}(:?[0-9]{2})?|utc|gmt)$"


def _as_instant(df, source: Source, col: str, scan: bool):
    """The column as UTC instants, whatever the process's or the session's zone (see `tally.utc`).

    `timestamp` columns are instants already. `timestamp_ntz` is a wall clock in the source's `timezone` (UTC by
    default). Strings with an offset (`...Z`, `...+05:30`) name their instant; strings without one are wall clocks
    like `timestamp_ntz`. A string that is not a timestamp is refused here, naming the column and showing examples:
    left as null it would only surface later as a puzzling contract failure.
    """
    from pyspark.sql import functions as F

    kind = df.schema[col].dataType.typeName()
    c = F.col(f"`{col}`")
    if kind != "string":
        return utc.as_instant(c, kind, source.timezone)
    text = F.trim(c)
    parsed = F.when(text.rlike(_OFFSET), text.try_cast("timestamp")).otherwise(
        utc.wall_time_in(text.try_cast("timestamp_ntz"), source.timezone))
    bad = df.where(c.isNotNull() & parsed.isNull())
    examples = [r.asDict() for r in bad.select(c, *[x for x in df.columns if x != col][:5]).limit(3).collect()] if scan else []
    if examples:
        raise DataError(f"source '{source.name}': column '{col}' holds strings that are not timestamps in "
                        f"{bad.count()} row(s), e.g. {'; '.join(str(e) for e in examples)}",
                        hint="store ISO-8601 timestamps ('2024-07-01 23:30:00', optionally with an offset such as 'Z'), "
                             f"or derive a timestamp column with columns={{...: \"to_timestamp({col}, 'MM/dd/yyyy HH:mm')\"}}",
                        details={"source": source.name, "column": col, "examples": examples})
    return parsed


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
