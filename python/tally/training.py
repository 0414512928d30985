"""Training sets: one row per spine row, every spine column kept, `{view}__{feature}` columns added.

Each view joins with its own accuracy:
- temporal: the sweep engine over the view's source, exact at each spine timestamp (one py4j crossing);
- snapshot: an as-of join against the view's Delta table — a spine row at t reads the row of day date(t) - 1,
  whose values are as of 00:00 UTC of t's date (subject to ttl: no row, null features).

`build` also returns a manifest that pins everything needed to rebuild the identical rows later.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tally import kernels, sources, store
from tally.definitions import FeatureView
from tally.errors import DataError, RegistryError, UsageError

SEMANTICS = {
    "temporal": "features exact at the spine timestamp; windows left-closed unless declared; available_at respected",
    "snapshot": "daily snapshot as of 00:00 UTC of the spine timestamp's date (row ds = date - 1); ttl applies",
}


@dataclass(frozen=True)
class Selection:
    """A view and the features of it a training set takes."""

    view: FeatureView
    features: tuple[str, ...]


def resolve(features: Sequence[FeatureView | str], views: Mapping[str, FeatureView] | None = None) -> list[Selection]:
    """Views and "view" / "view:feature" references -> one Selection per view, in first-mention order."""
    chosen: dict[str, tuple[FeatureView, list[str] | None]] = {}
    for item in features:
        if isinstance(item, FeatureView):
            view, feature = item, None
        elif isinstance(item, str):
            name, _, feature = item.partition(":")
            if views is None or name not in views:
                known = ", ".join(sorted(views or {})) or "none loaded"
                raise RegistryError(f"unknown feature view '{name}' in '{item}'", hint=f"known views: {known}")
            view, feature = views[name], feature or None
            if feature:
                view.feature(feature)  # raises naming the view and its features
        else:
            raise UsageError(f"features must be FeatureViews or 'view[:feature]' strings, got {type(item).__name__}")
        prev = chosen.get(view.name)
        if prev is not None and prev[0] != view:
            raise UsageError(f"two different definitions of view '{view.name}' were passed")
        if prev is None:
            chosen[view.name] = (view, None if feature is None else [feature])
        elif feature is not None and prev[1] is not None and feature not in prev[1]:
            prev[1].append(feature)
        elif feature is None:
            chosen[view.name] = (view, None)
    return [Selection(v, tuple(fs) if fs else tuple(f.name for f in v.features)) for v, fs in chosen.values()]


def check_spine(spine, timestamp: str, selections: Sequence[Selection]) -> None:
    """Leakage guards: the spine has its timestamp and every key column the views need."""
    if timestamp not in spine.columns:
        raise DataError(f"the spine has no timestamp column '{timestamp}' (columns: {', '.join(spine.columns)})",
                        hint="pass the spine's event-time column as timestamp= (--timestamp)")
    kind = spine.schema[timestamp].dataType.typeName()
    if kind not in ("timestamp", "timestamp_ntz", "date"):
        raise DataError(f"the spine's timestamp column '{timestamp}' is {kind}, not a timestamp",
                        hint=f"cast '{timestamp}' to a timestamp before building the training set")
    for sel in selections:
        missing = [k for k in sel.view.entity.keys if k not in spine.columns]
        if missing:
            raise DataError(f"view '{sel.view.name}': the spine lacks key column(s) {missing} of entity "
                            f"'{sel.view.entity.name}' (spine columns: {', '.join(spine.columns)})")


def _check_key_types(spine, table, view: FeatureView, what: str) -> None:
    for k in view.entity.keys:
        have, want = spine.schema[k].dataType, table.schema[k].dataType
        if have != want:
            raise DataError(f"view '{view.name}': spine key '{k}' is {have.simpleString()} but the {what} has "
                            f"{want.simpleString()}", hint=f"cast the spine's '{k}' to {want.simpleString()}")


def checked_sources(spark, views: Sequence[FeatureView]) -> dict[str, object]:
    """Each source the temporal views read, read once and checked once against its contract for all of them."""
    from tally import registry, validation

    out = {}
    for name in dict.fromkeys(v.source.name for v in views):
        users = [v for v in views if v.source.name == name]
        events = sources.read(spark, users[0].source)
        for v in users:
            registry.check_columns(v, events.schema)
        where = f" for view(s) {', '.join(repr(v.name) for v in users)}"
        validation.source_report(events, users[0].source, users, where=where).raise_if_failed()
        out[name] = events
    return out


def temporal_features(spark, spine, view: FeatureView, timestamp: str, *, names: Sequence[str] | None = None,
                      source_df=None):
    """The spine with `view`'s features exact at each spine row's `timestamp` (the sweep engine).

    `source_df` is the view's source as `checked_sources` returns it; without it the source is read and checked here.
    """
    events = source_df if source_df is not None else checked_sources(spark, [view])[view.source.name]
    _check_key_types(spine, events, view, f"source '{view.source.name}'")
    out = kernels.temporal(spark, spine, events, view, timestamp)
    if names is not None:
        drop = [f"{view.name}__{f.name}" for f in view.features if f.name not in names]
        out = out.drop(*drop)
    return out


def needed_days(spine, timestamp: str) -> list[dt.date]:
    from pyspark.sql import functions as F

    rows = spine.select(F.date_sub(F.to_date(F.col(timestamp)), 1).alias("d")).distinct().collect()
    return sorted(r.d for r in rows if r.d is not None)


def snapshot_features(spark, spine, view: FeatureView, timestamp: str, *, warehouse, names: Sequence[str],
                      as_of=None, allow_missing: bool = False, report: dict | None = None):
    """The spine with `view`'s snapshot features: the row of day date(t) - 1 of the view's Delta table."""
    table = store.read_features(spark, view, warehouse=warehouse, as_of=as_of)
    path = store.table_path(warehouse, view.name, view.version)
    version = store.version_as_of(path, as_of)
    covered = set(store.backfilled_days(path, up_to=version))
    missing = [d for d in needed_days(spine, timestamp) if str(d) not in covered]
    if missing and not allow_missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise DataError(f"view '{view.name}' v{view.version}: the feature table does not cover {len(missing)} day(s) "
                        f"the spine needs: {shown}",
                        hint=f"backfill them (tally backfill {view.name} --start {missing[0]} --end {missing[-1]}) "
                             "or pass allow_missing / --allow-missing to fill nulls")
    _check_key_types(spine, table, view, f"feature table {path}")
    out = kernels.as_of(spark, spine, timestamp, table, "snapshot_ts", view.entity.keys, list(names),
                        f"{view.name}__", store.DAY_US)
    if report is not None:
        report[view.name] = {"delta_version": version, "missing_days": [str(d) for d in missing]}
        if missing:
            from pyspark.sql import functions as F

            gaps = spine.where(F.date_sub(F.to_date(F.col(timestamp)), 1).isin([str(d) for d in missing])).count()
            report[view.name]["rows_in_missing_days"] = gaps
    return out


def training_set(spark, spine, features: Sequence[FeatureView | str], timestamp: str, *, views=None,
                 warehouse: str | Path = "warehouse", as_of: Mapping[str, int | str] | None = None,
                 allow_missing: bool = False):
    """Join every selected view's features onto `spine`, point-in-time correct at `timestamp`.

    `features` mixes FeatureViews and "view" / "view:feature" strings (resolved in `views`, a name -> view
    mapping such as `registry.load(...).views`). `as_of` pins the Delta version (int) or timestamp read per
    snapshot view.
    """
    return build(spark, spine, features, timestamp, views=views, warehouse=warehouse, as_of=as_of,
                 allow_missing=allow_missing)[0]


def build(spark, spine, features, timestamp: str, *, views=None, warehouse="warehouse", as_of=None,
          allow_missing: bool = False):
    """The training set and what went into it (per view: version, fingerprint, accuracy, Delta version read)."""
    selections = resolve(features, views)
    if not selections:
        raise UsageError("a training set needs at least one feature view")
    check_spine(spine, timestamp, selections)
    from tally import validation

    keys = sorted({k for sel in selections for k in sel.view.entity.keys})
    as_of = dict(as_of or {})
    unknown = set(as_of) - {s.view.name for s in selections}
    if unknown:
        raise UsageError(f"as_of names view(s) not in the training set: {sorted(unknown)}")
    temporal = [s.view for s in selections if s.view.accuracy != "snapshot"]
    events = checked_sources(spark, temporal)
    # A spine that is a checked source itself ("as of each charge") passed the same not-null checks just now.
    if not any(spine.sameSemantics(events[v.source.name]) and v.source.timestamp == timestamp
               and set(keys) <= set(v.entity.keys) for v in temporal):
        validation.spine_report(spine, timestamp, keys).raise_if_failed(
            hint="drop or repair spine rows with null keys or timestamps; tally never drops them silently")
    out, report, entries = spine, {}, []
    for sel in selections:
        v = sel.view
        if v.accuracy == "snapshot":
            out = snapshot_features(spark, out, v, timestamp, warehouse=warehouse, names=sel.features,
                                    as_of=as_of.get(v.name), allow_missing=allow_missing, report=report)
        else:
            if v.name in as_of:
                raise UsageError(f"view '{v.name}' is temporal: it reads its source, so as_of does not apply")
            out = temporal_features(spark, out, v, timestamp, names=sel.features, source_df=events[v.source.name])
        entries.append({"view": v.name, "version": v.version, "fingerprint": v.fingerprint, "accuracy": v.accuracy,
                        "features": list(sel.features), **report.get(v.name, {"delta_version": None})})
    return out, {"views": entries, "timestamp": timestamp,
                 "semantics": {e["view"]: SEMANTICS[e["accuracy"]] for e in entries}}
