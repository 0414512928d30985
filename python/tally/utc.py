"""Time is UTC, explicitly: instants and days that never meet the process's or the Spark session's zone.

Two traps this module exists for. PySpark turns a naive `datetime` into a timestamp with the *process's* local
zone (`time.mktime`), so a backfill on a laptop in Paris read a different hour than one in a UTC container. And
Spark's `to_date`, `date_add` -> timestamp, casts of `timestamp_ntz` and string parsing use the *session's* zone
at the moment an action runs, which a notebook may change after tally built the plan. Every time expression
tally builds goes through here and works on epoch microseconds and epoch days, which have no zone.
"""

from __future__ import annotations

import datetime as dt

UTC = dt.timezone.utc
DAY_US = 86_400_000_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)


def instant(value: dt.datetime | dt.date | str) -> dt.datetime:
    """An aware UTC datetime. Naive datetimes and ISO strings without an offset are read as UTC (DESIGN.md)."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    elif not isinstance(value, dt.datetime):  # a date: its 00:00 UTC
        value = dt.datetime(value.year, value.month, value.day)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def midnight(day: dt.date) -> dt.datetime:
    """00:00 UTC of `day`."""
    return instant(day)


def micros(value: dt.datetime | dt.date | str) -> int:
    """Epoch microseconds of an instant (exact: no float on the way)."""
    delta = instant(value) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def lit(value: dt.datetime | dt.date | str):
    """A timestamp literal for the instant, built from epoch microseconds so no zone can shift it."""
    from pyspark.sql import functions as F

    return F.timestamp_micros(F.lit(micros(value)))


def day_of(ts):
    """The UTC date of a timestamp column."""
    from pyspark.sql import functions as F

    return F.date_from_unix_date(F.floor(F.unix_micros(ts) / F.lit(DAY_US)).cast("int"))


def day_start(day, offset_days: int = 0):
    """00:00 UTC of a date column (plus `offset_days`), as a timestamp."""
    from pyspark.sql import functions as F

    return F.timestamp_micros((F.unix_date(day) + F.lit(offset_days)).cast("long") * F.lit(DAY_US))


def wall_time_in(ntz, zone: str | None):
    """A `timestamp_ntz` column (a wall-clock reading) as the instant it names in `zone` (None: UTC).

    Spark's cast of `timestamp_ntz` to `timestamp` reads the wall clock in the session's zone; this builds the
    UTC reading from the wall clock's fields instead, then shifts it by `zone` with `to_utc_timestamp`, which
    renders and re-reads in UTC and so does not depend on the session either.
    """
    from pyspark.sql import functions as F

    time_of_day = (F.hour(ntz) * 3600 + F.minute(ntz) * 60).cast("long") * 1_000_000 + \
        (F.date_part(F.lit("SECOND"), ntz) * 1_000_000).cast("long")
    as_utc = F.timestamp_micros(F.unix_date(ntz.cast("date")).cast("long") * F.lit(DAY_US) + time_of_day)
    return as_utc if zone in (None, "UTC") else F.to_utc_timestamp(as_utc, zone)


def from_micros(us: int) -> dt.datetime:
    """The aware UTC datetime of epoch microseconds."""
    return _EPOCH + dt.timedelta(microseconds=int(us))


def as_instant(col, kind: str, zone: str | None = None):
    """A `timestamp`, `timestamp_ntz` (wall clock in `zone`, default UTC) or `date` (its 00:00) column as UTC
    instants; `kind` is the column's Spark type name."""
    from pyspark.sql import functions as F

    if kind == "timestamp_ntz":
        return wall_time_in(col, zone)
    if kind == "date":
        return day_start(col) if zone in (None, "UTC") else F.to_utc_timestamp(day_start(col), zone)
    return col
