"""Time in tests is UTC, explicitly: no naive datetime meets the process's local zone.

PySpark turns a naive `datetime` into a timestamp with the process's local zone, and `collect()` returns
timestamps as naive local datetimes (toPandas is the exception: it returns naive UTC, by the session's zone).
Tests build their data with `utc(...)` (aware) and compare collected values through `aware(...)`, so every file
passes under any TZ (the suite is run with TZ=America/New_York, Asia/Kolkata, Europe/Paris).
"""

from __future__ import annotations

import datetime as dt

UTC = dt.timezone.utc


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0) -> dt.datetime:
    """An aware UTC datetime."""
    return dt.datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


def midnight(day: dt.date) -> dt.datetime:
    """00:00 UTC of `day`."""
    return utc(day.year, day.month, day.day)


def aware(value):
    """A timestamp as `collect()` returns it (naive, in the process's local zone) as an aware UTC datetime.

    Aware values are converted to UTC; anything else (None, dates, numbers) is returned as it is.
    """
    if isinstance(value, dt.datetime):
        return value.astimezone(UTC)  # a naive datetime is read as local time, which is what collect() gave
    return value


def row(r) -> tuple:
    """A collected Row as a tuple with its timestamps made aware UTC."""
    return tuple(aware(x) for x in r)
