"""Labels: training targets joined onto a spine by the rule features follow — a row counts only once it is known.

A fraud label is a dispute filed weeks after the charge. Features are exact at each spine row's time; a label is
what was known at the training cutoff (`labels_as_of`, "when the model is trained"): a label row counts for a
spine row when its keys match and its `available_at` < the cutoff. With `within`, the label has a fixed
performance window: only rows known within that time after the spine row's timestamp count
(available_at < t + within), and a spine row whose window has not closed by the cutoff (t + within > cutoff)
gets a null label — not yet known — instead of a premature negative. So a label never depends on when a
training set happens to be built, only on the cutoff a manifest records.

Several matching rows combine with `reduce`; with none, `count` and `sum` give 0 (as an empty window does) and
the others `default`. Like `definitions`, the declaration knows nothing of Spark; `join` does the work.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tally.definitions import Source, _check_name, parse_duration
from tally.errors import DataError, DefinitionError, UsageError
from tally.references import _check_version, _hash

REDUCERS = ("max", "min", "sum", "count", "last")


@dataclass(frozen=True)
class Label:
    """A training target: `value` (a Spark SQL expression over a row of `source`, default `1`: "a row exists")
    for the spine rows whose `on` columns match, counting only rows known before the cutoff.

    `on` maps spine columns to source columns (a list: the same names on both sides). `reduce` combines several
    known rows: max (default), min, sum, count, or last (the value of the row known last). `default` is the value
    of a mature row with no known row (0 for "no fraudulent dispute"). `within` ("60d") fixes the performance
    window; see the module docstring.

        fraud = tl.Label("is_fraud", source=disputes, on=["charge_id"], filter="reason = 'fraudulent'",
                         default=0, within="60d")
    """

    name: str
    source: Source
    on: Mapping[str, str] | Sequence[str]
    value: str = "1"
    filter: str | None = None
    reduce: str = "max"
    default: Any = None
    within: str | None = None
    version: int = 1
    description: str = ""
    within_us: int | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        _check_name(self.name, "label")
        where = f"label '{self.name}'"
        if not isinstance(self.source, Source):
            raise DefinitionError(f"{where}: source must be a tl.Source, got {type(self.source).__name__}")
        if not self.source.available_at:
            raise DefinitionError(f"{where}: source '{self.source.name}' declares no available_at, so when its rows "
                                  "became known is unknown and any of them could leak into training",
                                  hint=f"declare available_at= on source '{self.source.name}' (for example the "
                                       "dispute's creation time)")
        on = {c: c for c in self.on} if not isinstance(self.on, Mapping) and not isinstance(self.on, str) else self.on
        if isinstance(on, str) or not on or not all(isinstance(k, str) and isinstance(v, str) for k, v in on.items()):
            raise DefinitionError(f"{where}: on= must list the join columns (or map spine columns to source columns)",
                                  hint="on=['charge_id'] or on={'charge_id': 'disputed_charge'}")
        object.__setattr__(self, "on", dict(on))
        for attr in ("value", "filter"):
            text = getattr(self, attr)
            if (attr == "value" or text is not None) and (not isinstance(text, str) or not text.strip()):
                raise DefinitionError(f"{where}: {attr}= must be a Spark SQL expression string")
        if self.reduce not in REDUCERS:
            raise DefinitionError(f"{where}: unknown reduce '{self.reduce}'", hint=f"use one of {', '.join(REDUCERS)}")
        if self.within is not None:
            object.__setattr__(self, "within_us", parse_duration(self.within, where=f"{where}: within"))
        _check_version(self.version, where)

    @property
    def fingerprint(self) -> str:
        """A hash of what determines the values: the source's reading rules, the join, value, filter, reduce,
        default and window (not the description)."""
        content = {"name": self.name, "version": self.version, "source": self.source.spec(), "on": self.on,
                   "value": self.value.strip(), "filter": self.filter, "reduce": self.reduce,
                   "default": self.default, "within": self.within_us}
        return _hash(content)

    def content(self) -> dict:
        """What a manifest records of the label."""
        return {"name": self.name, "version": self.version, "fingerprint": self.fingerprint,
                "source": self.source.name}


def resolve(labels: Sequence, known: Mapping[str, Label] | None) -> list[Label]:
    """`Label`s and names of the repository's labels, as Labels; refuses unknown names and two labels of one name."""
    known = dict(known or {})
    out: dict[str, Label] = {}
    for item in ([labels] if isinstance(labels, (str, Label)) else list(labels)):
        if isinstance(item, str):
            if item not in known:
                raise UsageError(f"unknown label '{item}'", hint=f"labels of the repository: {', '.join(sorted(known)) or 'none'}")
            item = known[item]
        elif not isinstance(item, Label):
            raise UsageError(f"{item!r} is not a label", hint="pass tl.Label objects or the names of the repository's labels")
        if item.name in out and out[item.name] != item:
            raise UsageError(f"two different labels are named '{item.name}'")
        out[item.name] = item
    return list(out.values())


def cutoff(labels_as_of) -> dt.datetime:
    """The labels' cutoff as an aware UTC instant: an ISO string (no offset: UTC), a date (its 00:00 UTC) or an
    aware datetime. A naive datetime is refused: it would be read in some process's zone."""
    from tally import utc

    if isinstance(labels_as_of, dt.datetime) and labels_as_of.tzinfo is None:
        raise UsageError(f"labels_as_of={labels_as_of!r} is a naive datetime",
                         hint="pass an aware datetime (tzinfo=datetime.timezone.utc) or an ISO string such as "
                              "2026-03-01T00:00:00Z")
    try:
        return utc.instant(labels_as_of)
    except (TypeError, ValueError):
        raise UsageError(f"labels_as_of={labels_as_of!r} is not an instant",
                         hint="write an ISO timestamp (2026-03-01T00:00:00Z) or a day (2026-03-01)") from None


def check(spine_columns: Sequence[str], labels: Sequence[Label], taken: Sequence[str]) -> None:
    """Before any job: each label's spine columns exist, and its column clashes with no spine or feature column."""
    for label in labels:
        missing = [c for c in label.on if c not in spine_columns]
        if missing:
            raise DataError(f"label '{label.name}': the spine lacks join column(s) {missing} "
                            f"(spine columns: {', '.join(spine_columns)})",
                            hint="add them to the spine, or map spine columns to the source's with on={spine: source}")
        if label.name in spine_columns or label.name in taken:
            owner = "a spine column" if label.name in spine_columns else "a feature column"
            raise UsageError(f"label '{label.name}' clashes with {owner} of the same name",
                             hint="rename the label (or drop the spine column)")


def join(spark, spine, timestamp: str, labels: Sequence[Label], cutoff_at: dt.datetime, *, data=None,
         warehouse="warehouse", versions: Mapping[str, int] | None = None, pins: dict | None = None):
    """`spine` with one column per label, and per label what a manifest records. Sources are read at `versions`
    where given and checked against their contract; `pins` gets what identifies the rows read, as for feature
    sources."""
    from tally import utc

    out, report, cutoff_us, versions = spine, {}, utc.micros(cutoff_at), dict(versions or {})
    for label in labels:
        known, version = _known(spark, label, cutoff_us, data=data, warehouse=warehouse,
                                version=versions.get(label.source.name), pins=pins)
        out = _attach(out, timestamp, label, known, cutoff_us)
        report[label.name] = {**label.content(), "delta_version": version}
    return out, report


def _known(spark, label: Label, cutoff_us: int, *, data, warehouse, version, pins):
    """The label source's rows known before the cutoff, as (_k0.., _v value, _a available_at µs), and the Delta
    version read."""
    from pyspark.sql import functions as F

    from tally import sources, store, validation
    from tally.training import content_hash

    src = label.source
    if version is None and src.format == "delta" and src.path is not None:
        table = sources.location(src, data)
        version = store.resolve_version(spark, table) if store.is_table(table) else None
    rows = sources.read(spark, src, data=data, version=version)
    missing = [c for c in label.on.values() if c not in rows.columns]
    if missing:
        raise DataError(f"label '{label.name}': source '{src.name}' has no column(s) {missing} "
                        f"(columns: {', '.join(rows.columns)})", hint="fix on= of the label")
    rows, _ = validation.apply_contract(rows, src, [], where=f" for label '{label.name}'", warehouse=warehouse,
                                        keys=list(label.on.values()))
    if pins is not None:
        pins[src.name] = {"delta_version": version} if version is not None else content_hash(rows)
    if label.filter:
        rows = _checked(rows, label, "filter", lambda r: r.where(F.expr(label.filter)))
    keyed = _checked(rows, label, "value", lambda r: r.select(
        *[F.col(f"`{c}`").alias(f"_k{i}") for i, c in enumerate(label.on.values())],
        F.expr(label.value).alias("_v"), F.unix_micros(F.col(f"`{src.available_at}`")).alias("_a")))
    return keyed.where(F.col("_a") < F.lit(cutoff_us)), version


def _attach(spine, timestamp: str, label: Label, known, cutoff_us: int):
    """`spine` with the label's column. The known rows meet the spine's distinct (keys, t) — not its rows, which
    may repeat — and the reduced values join back on them."""
    from pyspark.sql import functions as F

    from tally import utc

    kind = spine.schema[timestamp].dataType.typeName()
    t_us = F.unix_micros(utc.as_instant(F.col(f"`{timestamp}`"), kind))
    keys = [f"_k{i}" for i in range(len(label.on))]
    probe = spine.select(*[F.col(f"`{c}`").alias(k) for c, k in zip(label.on, keys)], t_us.alias("_t")).distinct()
    matched = probe.join(known, keys)
    if label.within_us is not None:
        matched = matched.where(F.col("_a") < F.col("_t") + F.lit(label.within_us))
    reduced = matched.groupBy(*keys, "_t").agg(_reduce(label.reduce).alias("_label"))
    kind_out = reduced.schema["_label"].dataType
    joined = spine.select("*", *[F.col(f"`{c}`").alias(k) for c, k in zip(label.on, keys)], t_us.alias("_t")) \
        .join(reduced, [*keys, "_t"], "left")
    empty = F.lit(0 if label.reduce in ("count", "sum") else label.default).cast(kind_out)
    value = F.coalesce(F.col("_label"), empty)
    if label.within_us is not None:  # the window is still open at the cutoff: not yet known
        value = F.when(F.col("_t") + F.lit(label.within_us) > F.lit(cutoff_us), F.lit(None).cast(kind_out)).otherwise(value)
    return joined.withColumn(label.name, value).drop("_label", "_t", *keys)


def _reduce(name: str):
    from pyspark.sql import functions as F

    if name == "count":
        return F.count(F.lit(1))
    if name == "last":  # the row known last; rows known at the same microsecond: the largest value, so no order decides
        return F.max(F.struct("_a", "_v"))["_v"]
    return {"max": F.max, "min": F.min, "sum": F.sum}[name](F.col("_v"))


def _checked(rows, label: Label, attr: str, build):
    from pyspark.errors import AnalysisException

    try:
        return build(rows)
    except AnalysisException as exc:
        raise DefinitionError(f"label '{label.name}': {attr}= {getattr(label, attr)!r} does not work on source "
                              f"'{label.source.name}': {str(exc).strip().splitlines()[0]}",
                              hint=f"its columns: {', '.join(rows.columns)}") from None
