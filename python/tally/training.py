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

from tally import kernels, sources, store, utc
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


def checked_sources(spark, views: Sequence[FeatureView], *, data=None, versions: Mapping[str, int] | None = None,
                    pins: dict | None = None, warehouse="warehouse") -> dict[str, object]:
    """Each source the temporal views read, read once and checked once against its contract for all of them
    (a quarantining source sets its failing rows aside, as in a backfill).

    A Delta source is read at one resolved version (`versions[name]`, else its latest). With `pins`, each source
    also records what identifies the rows read: `{"delta_version": v}` for a Delta source, else a content hash.
    """
    from tally import registry, validation

    versions = dict(versions or {})
    out = {}
    for name in dict.fromkeys(v.source.name for v in views):
        users = [v for v in views if v.source.name == name]
        source = users[0].source
        version = versions.get(name)
        if version is None and source.format == "delta" and source.path is not None:
            table = sources.location(source, data)
            version = store.resolve_version(spark, table) if store.is_table(table) else None
        events = sources.read(spark, source, data=data, version=version)
        for v in users:
            registry.check_columns(v, events.schema)
        where = f" for view(s) {', '.join(repr(v.name) for v in users)}"
        events, _ = validation.apply_contract(events, source, users, where=where, warehouse=warehouse)
        out[name] = events
        if pins is not None:
            pins[name] = {"delta_version": version} if version is not None else content_hash(events)
    return out


def content_hash(df, exclude: Sequence[str] = ()) -> dict:
    """Row count and an order-independent hash of every row's values (but the `exclude`d columns): what says two
    reads saw the same rows."""
    from pyspark.sql import functions as F

    cols = [F.col(f"`{c}`") for c in df.columns if c not in exclude]
    row = df.agg(F.count(F.lit(1)).alias("n"),
                 F.sum(F.xxhash64(*cols).cast("decimal(38,0)")).alias("h")).first()
    return {"rows": int(row.n), "hash": format(int(row.h or 0) % (1 << 64), "016x")}


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


def spine_day_before(spine, timestamp: str):
    """The UTC date before each spine row's date: the snapshot row (ds) a spine row reads."""
    from pyspark.sql import functions as F

    kind = spine.schema[timestamp].dataType.typeName()
    return F.date_sub(utc.day_of(utc.as_instant(F.col(f"`{timestamp}`"), kind)), 1)


def needed_days(spine, timestamp: str) -> list[dt.date]:
    rows = spine.select(spine_day_before(spine, timestamp).alias("d")).distinct().collect()
    return sorted(r.d for r in rows if r.d is not None)


_ZERO_WHEN_EMPTY = ("count", "sum", "decayed_sum", "decayed_count")


def empty_value(feature, dtype):
    """What the engine returns for `feature` over an empty window: 0 for counts and sums, else its default."""
    from pyspark.sql import functions as F

    value = 0 if feature.function in _ZERO_WHEN_EMPTY else feature.default
    return None if value is None else F.lit(value).cast(dtype)


def snapshot_features(spark, spine, view: FeatureView, timestamp: str, *, warehouse, names: Sequence[str],
                      as_of=None, allow_missing: bool = False, report: dict | None = None):
    """The spine with `view`'s snapshot features: the row of day date(t) - 1 of the view's Delta table.

    An entity with no row on a day the table covers had no event within the view's horizon. With a ttl, its
    features are null (DESIGN.md, ttl); without one, every window is empty, so it gets exactly what the
    temporal path gives there: 0 for counts and sums, else the feature's default. Days the table does not cover
    are refused, or with `allow_missing` left null.
    """
    from pyspark.sql import functions as F

    path = store.table_path(warehouse, view.name, view.version)
    if not store.is_table(path):
        store.read_features(spark, view, warehouse=warehouse)  # raises naming the view and the backfill to run
    version = store.resolve_version(spark, path, as_of)
    table = store.read_features(spark, view, warehouse=warehouse, version=version)
    covered = store.covered_days(spark, path, version=version)
    missing = [d for d in needed_days(spine, timestamp) if str(d) not in covered]
    if missing and not allow_missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise DataError(f"view '{view.name}' v{view.version}: the feature table does not cover {len(missing)} day(s) "
                        f"the spine needs: {shown}",
                        hint=f"backfill them (tally backfill {view.name} --start {missing[0]} --end {missing[-1]}) "
                             "or pass allow_missing / --allow-missing to fill nulls")
    _check_key_types(spine, table, view, f"feature table {path}")
    prefix, found = f"{view.name}__", "_tally_row"
    out = kernels.as_of(spark, spine, timestamp, table.withColumn(found, F.lit(True)), "snapshot_ts",
                        view.entity.keys, [*names, found], prefix, store.DAY_US)
    in_missing_day = spine_day_before(spine, timestamp).isin(missing)
    if view.ttl is None:
        no_row = F.col(prefix + found).isNull() & ~in_missing_day
        for name in names:
            empty = empty_value(view.feature(name), out.schema[prefix + name].dataType)
            if empty is not None:
                out = out.withColumn(prefix + name, F.when(no_row, empty).otherwise(F.col(prefix + name)))
    out = out.drop(prefix + found)
    if report is not None:
        report[view.name] = {"delta_version": version, "missing_days": [str(d) for d in missing]}
        if missing:
            report[view.name]["rows_in_missing_days"] = spine.where(in_missing_day).count()
    return out


def training_set(spark, spine, features: Sequence[FeatureView | str], timestamp: str, *, views=None,
                 warehouse: str | Path = "warehouse", as_of: Mapping[str, int | str] | None = None,
                 allow_missing: bool = False, data: str | Path | None = None):
    """Join every selected view's features onto `spine`, point-in-time correct at `timestamp`.

    `features` mixes FeatureViews and "view" / "view:feature" strings (resolved in `views`, a name -> view
    mapping such as `registry.load(...).views`). `as_of` pins the Delta version (int) or timestamp read per
    snapshot view. `data` is the data root relative source paths live under (default: the configured one).
    """
    return build(spark, spine, features, timestamp, views=views, warehouse=warehouse, as_of=as_of,
                 allow_missing=allow_missing, data=data)[0]


def build(spark, spine, features, timestamp: str, *, views=None, warehouse="warehouse", as_of=None,
          allow_missing: bool = False, data=None, source_versions: Mapping[str, int] | None = None,
          pin_sources: bool = False):
    """The training set and what went into it: per view its version, fingerprint, accuracy and the Delta version
    read; the options; with `pin_sources`, per temporal source what identifies the rows read (its Delta version,
    else a content hash). `source_versions` reads Delta sources at recorded versions (a manifest rebuild)."""
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
    source_pins: dict | None = {} if pin_sources else None
    events = checked_sources(spark, temporal, data=data, versions=source_versions, pins=source_pins, warehouse=warehouse)
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
    built = {"views": entries, "timestamp": timestamp, "options": {"allow_missing": allow_missing},
             "semantics": {e["view"]: SEMANTICS[e["accuracy"]] for e in entries}}
    if source_pins is not None:
        built["sources"] = source_pins
    return out, built
