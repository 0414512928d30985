"""Data contracts, checked before every backfill and training set.

Contracts come from the definitions: entity keys, timestamps and `available_at` non-null, timestamps within the source's
bounds, declared column types, the source's declared Checks, unique event ids. Column presence and types are read
from the schema (no job); every row-level check is counted in one aggregate pass, and only failing checks fetch a
few examples, so that the message names the source, the column, the check, how many rows and which.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tally import utc
from tally.definitions import Check, FeatureView, Source
from tally.errors import DataError

EXAMPLES = 3


@dataclass(frozen=True)
class Failure:
    check: str
    column: str
    rows: int
    examples: list[dict] = field(default_factory=list)

    def render(self) -> str:
        shown = "; ".join(str(e) for e in self.examples)
        return f"{self.check}: {self.rows} row(s) fail" + (f", e.g. {shown}" if shown else "")


@dataclass(frozen=True)
class Report:
    what: str
    rows: int
    checks: list[str]
    failures: list[Failure]

    @property
    def ok(self) -> bool:
        return not self.failures

    def render(self) -> str:
        lines = [f"{self.what}: {self.rows} rows, {len(self.checks)} checks, {len(self.failures)} failing"]
        failing = {f.check for f in self.failures}
        lines += [f"  ok    {c}" for c in self.checks if c not in failing]
        lines += [f"  FAIL  {f.render()}" for f in self.failures]
        return "\n".join(lines)

    def raise_if_failed(self, hint: str | None = None) -> None:
        if self.failures:
            raise DataError(f"{self.what} fails its contract:\n" + "\n".join(f"  - {f.render()}" for f in self.failures),
                            hint=hint or "fix the data, or set on_invalid='quarantine' on the source to set bad rows aside",
                            details={"failures": [f.__dict__ for f in self.failures]})


def source_checks(source: Source, views: Sequence[FeatureView], keys: Sequence[str] = ()) -> list[Check]:
    """Every row-level check a source must pass for the views that read it (and the labels joining on `keys`)."""
    keys = sorted({k for v in views for k in v.entity.keys} | set(keys))
    low, high = (utc.instant(b) for b in source.timestamp_bounds)
    checks = [Check.not_null(k) for k in keys] + [Check.not_null(source.timestamp),
                                                  Check.between(source.timestamp, low, high)]
    if source.available_at:  # a null would read as "always known": a label leaking into every earlier feature
        checks.append(Check.not_null(source.available_at))
    if source.id:
        checks.append(Check.not_null(source.id))
    return checks + list(source.checks)


def _failing(check: Check):
    """A Spark predicate that is true for the rows failing `check`."""
    from pyspark.sql import functions as F

    c = F.col(f"`{check.column}`")
    if check.kind == "not_null":
        return c.isNull()
    if check.kind == "not_nan":
        return F.isnan(c)
    if check.kind == "ge":
        return c < _lit(check.args[0])
    if check.kind == "le":
        return c > _lit(check.args[0])
    if check.kind == "between":
        return (c < _lit(check.args[0])) | (c > _lit(check.args[1]))
    return ~c.isin(list(check.args[0]))


def _lit(value):
    """A literal; instants through `tally.utc`, so no zone shifts a bound."""
    from pyspark.sql import functions as F

    return utc.lit(value) if isinstance(value, (dt.datetime, dt.date)) else F.lit(value)


def validate(df, checks: Sequence[Check], *, what: str, types: dict[str, str] | None = None,
             unique: str | None = None, allow_empty: bool = False) -> Report:
    """Run the contract on `df`; a Report lists every check and, for failures, counts and examples."""
    with reading(what):
        schema = schema_report(df, checks, what=what, types=types)
        if schema is not None:
            return schema
        # One aggregate pass counts the rows failing each check (a job per check, as a per-column validator runs them,
        # costs seconds on every backfill); examples are fetched only for the checks that fail.
        agg = df.agg(*failing_counts(checks)).first()
        return row_report(df, checks, agg["__rows"], [agg[f"__c{i}"] or 0 for i in range(len(checks))], what=what,
                          types=types, unique=unique, allow_empty=allow_empty)


@contextmanager
def reading(what: str):
    """The first Spark job on a source is where unreadable files surface: as a DataError naming them."""
    try:
        yield
    except DataError:
        raise
    except Exception as exc:
        text = str(exc)
        if any(m in text for m in ("FAILED_READ_FILE", "not a Parquet file", "Could not read footer", "CORRUPT")):
            files = sorted(set(re.findall(r"file:(/[^\s,'\"]+)", text)))
            raise DataError(f"{what}: cannot read file(s) {', '.join(files) or '(unknown)'}: the data is corrupt or "
                            "not in the declared format", hint="replace or remove the file; nothing was written") from exc
        raise


def schema_report(df, checks: Sequence[Check], *, what: str, types: dict[str, str] | None = None) -> Report | None:
    """The failures read from the schema alone (no job): missing columns, wrong types. None when there are none."""
    types = dict(types or {})
    missing = sorted(c for c in {ch.column for ch in checks} | set(types) if c not in df.columns)
    if missing:
        return Report(what, 0, [f"column {c} exists" for c in missing],
                      [Failure(f"column {c} exists", c, 0, [{"columns": ", ".join(df.columns)}]) for c in missing])
    from pyspark.sql.types import _parse_datatype_string

    wrong = {c: t for c, t in types.items() if df.schema[c].dataType != _parse_datatype_string(t)}
    if wrong:  # a schema-level failure: no row needs reading, and value checks on the wrong type mean nothing
        return Report(what, 0, [f"{c} has type {t}" for c, t in types.items()],
                      [Failure(f"{c} has type {t}", c, 0, [{"actual type": df.schema[c].dataType.simpleString()}])
                       for c, t in wrong.items()])
    return None


def failing_counts(checks: Sequence[Check]) -> list:
    """Aggregate columns: the rows (`__rows`) and, per check i, the rows failing it (`__c<i>`)."""
    from pyspark.sql import functions as F

    return [F.count(F.lit(1)).alias("__rows")] + [F.sum(F.when(_failing(c), 1).otherwise(0)).alias(f"__c{i}")
                                                  for i, c in enumerate(checks)]


def failing_flags(checks: Sequence[Check]) -> list:
    """Per check i, a boolean column true for the rows failing it (`__tally_fail<i>`), never null: what
    `failing_counts` sums, for a job that counts them itself (the stream's one read of its batch)."""
    from pyspark.sql import functions as F

    return [F.coalesce(_failing(c), F.lit(False)).alias(f"__tally_fail{i}") for i, c in enumerate(checks)]


def row_report(df, checks: Sequence[Check], rows: int, counts: Sequence[int], *, what: str,
               types: dict[str, str] | None = None, unique: str | None = None, allow_empty: bool = False) -> Report:
    """The Report of `df` given its row count and the rows failing each check (counted by one pass): examples of the
    failing checks, the id's uniqueness (a job of its own), an empty read."""
    failures: list[Failure] = []
    for c, n in zip(checks, counts):
        if n:
            sample = [r.asDict() for r in df.where(_failing(c)).limit(EXAMPLES).collect()]
            failures.append(Failure(c.name, c.column, n, [_short(s) for s in sample]))
    if unique:
        dups = df.groupBy(unique).count().where("count > 1")
        n = dups.count()
        if n:
            ex = [{unique: r[unique], "copies": r["count"]} for r in dups.limit(EXAMPLES).collect()]
            failures.append(Failure(f"{unique} unique", unique, n, ex))
    names = [f"{t_c} has type {t}" for t_c, t in dict(types or {}).items()] + [c.name for c in checks] + (
        [f"{unique} unique"] if unique else [])
    if rows == 0 and not allow_empty:
        failures.append(Failure("has rows", "*", 0, []))
        names.append("has rows")
    return Report(what, rows, names, failures)


def _short(row: dict) -> dict:
    return {k: (str(_utc(v))[:40] if v is not None else None) for k, v in list(row.items())[:8]}


def _utc(value):
    """PySpark collects timestamps as naive datetimes in the process's zone: show them in UTC, marked as such."""
    return value.astimezone(dt.timezone.utc) if isinstance(value, dt.datetime) else value


def source_report(df, source: Source, views: Sequence[FeatureView], *, where: str = "", keys: Sequence[str] = (),
                  allow_empty: bool = False) -> Report:
    return validate(df, source_checks(source, views, keys), what=f"source '{source.name}'{where}", types=source.schema,
                    unique=source.id, allow_empty=allow_empty)


def spine_report(spine, timestamp: str, keys: Sequence[str]) -> Report:
    checks = [Check.not_null(k) for k in keys] + [Check.not_null(timestamp)]
    return validate(spine, checks, what="the spine")


def split_invalid(df, source: Source, views: Sequence[FeatureView], *, quarantine: str | Path, keys: Sequence[str] = ()):
    """Quarantine policy: write failing rows with their reason to a Delta table, return the good rows and counts."""
    from pyspark.sql import functions as F

    checks = source_checks(source, views, keys)
    reasons = [F.when(_failing(c), F.lit(c.name)) for c in checks]
    if source.id:  # an id used twice cannot say which copy is right: every copy goes
        dups = df.groupBy(source.id).count().where("count > 1").select(source.id, F.lit(True).alias("_tally_dup"))
        df = df.join(dups, source.id, "left")
        reasons.append(F.when(F.col("_tally_dup"), F.lit(f"{source.id} unique")))
    tagged = df.withColumn("_tally_reason", F.concat_ws("; ", *reasons))
    if source.id:
        tagged = tagged.drop("_tally_dup")
    bad = tagged.where(F.col("_tally_reason") != "").withColumn("_tally_quarantined_at", F.current_timestamp())
    n_bad = bad.count()
    if n_bad:
        bad.write.format("delta").mode("append").option("mergeSchema", "true").save(str(quarantine))
    good = tagged.where(F.col("_tally_reason") == "").drop("_tally_reason")
    return good, n_bad


def apply_contract(events, source: Source, views: Sequence[FeatureView], *, where: str, warehouse: str | Path,
                   keys: Sequence[str] = (), empty_ok=None):
    """The source's rows after its contract: raises on failures, or with `on_invalid="quarantine"` sets the failing
    rows aside in `<warehouse>/quarantine/<source>` and returns the good ones. Returns (rows, rows quarantined).

    No rows fail the contract ("has rows"), unless `empty_ok()` says an empty read is legitimate (asked only then)."""
    report = source_report(events, source, views, where=where, keys=keys, allow_empty=empty_ok is not None)
    if report.rows == 0 and empty_ok is not None and not empty_ok():
        report = source_report(events, source, views, where=where, keys=keys)
    if report.ok:
        return events, 0
    if source.on_invalid == "quarantine" and all(f.check != "has rows" and "has type" not in f.check
                                                 for f in report.failures):
        return split_invalid(events, source, views, quarantine=Path(warehouse).resolve() / "quarantine" / source.name,
                             keys=keys)
    report.raise_if_failed()
    return events, 0
