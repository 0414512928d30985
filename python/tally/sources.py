"""Reading a Source into a Spark DataFrame: location, time zone, derived columns, row filter.

Only this module turns a Source into rows, so backfills, training sets and validation read sources alike.
"""

from __future__ import annotations

from pathlib import Path

from tally.definitions import Source
from tally.errors import DataError, DefinitionError


def read(spark, source: Source, *, base: str | Path | None = None):
    """The source's rows with derived columns added, the filter applied and timestamps in UTC."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import TimestampNTZType

    if source.dataframe is not None:
        df = source.dataframe(spark)
    elif source.table is not None:
        df = spark.table(source.table)
    else:
        path = Path(source.path)
        if base is not None and not path.is_absolute():
            path = Path(base) / path
        if not (path.exists() or (any(ch in str(path) for ch in "*?[") and list(path.parent.glob(path.name)))):
            raise DataError(f"source '{source.name}': path {path} does not exist",
                            hint="check the source's path= or run the data generator first")
        reader = spark.read.format(source.format)
        if source.format == "csv":
            reader = reader.option("header", "true").option("inferSchema", "true")
        try:
            df = reader.load(str(path))
        except Exception as exc:  # AnalysisException, corrupt files
            raise DataError(f"source '{source.name}': cannot read {source.format} at {path}: {_first_line(exc)}") from exc

    for name, expr in source.columns.items():
        try:
            df = df.withColumn(name, F.expr(expr))
        except Exception as exc:
            raise DefinitionError(f"source '{source.name}': derived column '{name}' = {expr!r} is invalid: "
                                  f"{_first_line(exc)}") from exc
    for col in filter(None, (source.timestamp, source.available_at)):
        if col not in df.columns:
            raise DataError(f"source '{source.name}': no column '{col}' (columns: {', '.join(df.columns)})")
        dtype = df.schema[col].dataType
        if isinstance(dtype, TimestampNTZType) or (source.timezone and dtype.typeName() == "timestamp_ntz"):
            df = df.withColumn(col, F.to_utc_timestamp(F.col(col).cast("timestamp"), source.timezone or "UTC"))
        elif dtype.typeName() == "string":  # unparseable strings become nulls, which the contract then reports
            parsed = F.try_to_timestamp(F.col(col))
            if source.timezone:
                parsed = F.to_utc_timestamp(parsed, source.timezone)
            df = df.withColumn(col, parsed)
    if source.filter:
        try:
            df = df.where(F.expr(source.filter))
        except Exception as exc:
            raise DefinitionError(f"source '{source.name}': filter {source.filter!r} is invalid: {_first_line(exc)}") from exc
    return df


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
