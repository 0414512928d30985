"""Training sets: one row per spine row, every spine column kept, `{view}__{feature}` columns added.

Each view joins with its own accuracy:
- temporal: the sweep engine over the view's source, exact at each spine timestamp (one py4j crossing);
- snapshot: an as-of join against the view's Delta table — a spine row at t reads the row of day date(t) - 1,
  whose values are as of 00:00 UTC of t's date (subject to ttl: no row, null features).

`build` also returns a manifest that pins everything needed to rebuild the identical rows later.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping, Sequence
from pathlib import Path

from tally import kernels, sources, store, utc
from tally.definitions import FeatureView
from tally.errors import DataError, DefinitionError, UsageError
from tally.references import Resolved, Selection, check_columns, resolve

SEMANTICS = {
    "temporal": "features exact at the spine timestamp; windows left-closed unless declared; available_at respected",
    "snapshot": "daily snapshot as of 00:00 UTC of the spine timestamp's date (row ds = date - 1); ttl applies",
}


def check_spine(spine, timestamp: str, selections: Sequence[Selection]) -> None:
    """Leakage guards: the spine has its timestamp and every key column the views need (under a key mapping, the
    spine column the key is read from)."""
    if timestamp not in spine.columns:
        raise DataError(f"the spine has no timestamp column '{timestamp}' (columns: {', '.join(spine.columns)})",
                        hint="pass the spine's event-time column as timestamp= (--timestamp)")
    kind = spine.schema[timestamp].dataType.typeName()
    if kind not in ("timestamp", "timestamp_ntz", "date"):
        raise DataError(f"the spine's timestamp column '{timestamp}' is {kind}, not a timestamp",
                        hint=f"cast '{timestamp}' to a timestamp before building the training set")
    for sel in selections:
        missing = [k for k in sel.view.entity.keys if sel.spine_key(k) not in spine.columns]
        if missing and sel.keys:
            wanted = ", ".join(f"'{sel.spine_key(k)}' (read as key '{k}')" for k in missing)
            raise DataError(f"{sel.label}: the spine lacks column(s) {wanted} of entity '{sel.view.entity.name}' "
                            f"(spine columns: {', '.join(spine.columns)})",
                            hint="fix keys= of the use, or add the column to the spine")
        if missing:
            raise DataError(f"view '{sel.view.name}': the spine lacks key column(s) {missing} of entity "
                            f"'{sel.view.entity.name}' (spine columns: {', '.join(spine.columns)})")


def _check_key_types(spine, table, view: FeatureView, what: str, keys: Mapping[str, str] | None = None) -> None:
    for k in view.entity.keys:
        have, want = spine.schema[k].dataType, table.schema[k].dataType
        if have != want:
            col = (keys or {}).get(k, k)
            raise DataError(f"view '{view.name}': spine key '{col}' is {have.simpleString()} but the {what} has "
                            f"{want.simpleString()}", hint=f"cast the spine's '{col}' to {want.simpleString()}")


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


def temporal_features(spark, spine, uses: Sequence[tuple], timestamp: str, *, keys: Mapping[str, str] | None = None):
    """The spine with the features of temporal views that share their key columns, exact at each spine row's
    `timestamp`, in one sweep (the sweep engine). Per use `(view, names, events, prefix)`, in order: columns
    `{prefix}{feature}` for the features in `names` (None: all), with `events` the view's source as
    `checked_sources` returns it. `keys` names the spine columns mapped to the views' keys (for messages; `_mapped`
    does the mapping).
    """
    parts, drop = [], []
    for view, names, events, prefix in uses:
        _check_key_types(spine, events, view, f"source '{view.source.name}'", keys)
        parts.append((events, view, prefix))
        if names is not None:
            drop += [f"{prefix}{f.name}" for f in view.features if f.name not in names]
    return kernels.temporal(spark, spine, parts, timestamp).drop(*drop)


def _sweep_together(selections: Sequence[Selection]) -> dict[int, list[int]]:
    """Temporal uses that one sweep serves, by the position of the first: those whose views have the same key
    columns, read from the same spine columns. One sweep shuffles and sorts the spine once for all of them."""
    groups: dict[tuple, list[int]] = {}
    for i, sel in enumerate(selections):
        if sel.view.accuracy != "snapshot":
            groups.setdefault((tuple(sel.view.entity.keys), tuple(sorted(sel.keys))), []).append(i)
    return {members[0]: members for members in groups.values()}


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
                      as_of=None, allow_missing: bool = False, report: dict | None = None, prefix: str | None = None,
                      keys: Mapping[str, str] | None = None):
    """The spine with `view`'s snapshot features: the row of day date(t) - 1 of the view's Delta table, as columns
    `{prefix}{feature}` (default prefix `{view}__`; `keys` as in `temporal_features`).

    An entity with no row on a day the table covers had no event within the view's horizon. With a ttl, its
    features are null (DESIGN.md, ttl); without one, every window is empty, so it gets exactly what the
    temporal path gives there: 0 for counts and sums, else the feature's default. Days the table does not cover
    are refused, or with `allow_missing` left null.
    """
    from pyspark.sql import functions as F

    path = store.table_path(warehouse, view.name, view.version)
    if not store.is_table(path):
        store.read_features(spark, view, warehouse=warehouse)  # raises naming the view and the backfill to run
    history = store.commits(spark, path)  # read once: the version to read and the days it covers
    version = store.resolve_version(spark, path, as_of, history=history)
    table = store.read_features(spark, view, warehouse=warehouse, version=version)
    covered = store.covered_days(spark, path, version=version, history=history)
    missing = [d for d in needed_days(spine, timestamp) if str(d) not in covered]
    if missing and not allow_missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise DataError(f"view '{view.name}' v{view.version}: the feature table does not cover {len(missing)} day(s) "
                        f"the spine needs: {shown}",
                        hint=f"backfill them (tally backfill {view.name} --start {missing[0]} --end {missing[-1]}) "
                             "or pass allow_missing / --allow-missing to fill nulls")
    _check_key_types(spine, table, view, f"feature table {path}", keys)
    prefix, found = prefix or f"{view.name}__", "_tally_row"
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


def training_set(spark, spine, features: Sequence, timestamp: str, *, views=None,
                 warehouse: str | Path = "warehouse", as_of: Mapping[str, int | str] | None = None,
                 allow_missing: bool = False, data: str | Path | None = None, labels: Sequence = (),
                 labels_as_of=None):
    """Join every selected view's features onto `spine`, point-in-time correct at `timestamp`.

    `features` mixes FeatureViews, "view" / "view:feature" strings, `tl.Use`, `tl.Derived` and `tl.FeatureSet`
    (see `tally.references`); names are resolved in `views`: a repository (`registry.load(...)`: its views, feature
    sets and derived features) or a name -> definition mapping. `as_of` pins the Delta version (int) or timestamp
    read per snapshot view. `data` is the data root relative source paths live under (default: the configured one).
    `labels` (`tl.Label`s) are joined as known at `labels_as_of` (default: now), see `tally.labels`.
    """
    return build(spark, spine, features, timestamp, views=views, warehouse=warehouse, as_of=as_of,
                 allow_missing=allow_missing, data=data, labels=labels, labels_as_of=labels_as_of,
                 known_labels=getattr(views, "labels", None))[0]


def check_derived(spark, resolved: Resolved) -> None:
    """Spark's analyzer checks each derived expression against its inputs alone, before any job runs: an
    expression that names a column outside its inputs (a typo, another view's feature, a spine column), or does
    not parse, is refused naming the derived feature. The inputs are typeless nulls here, which Spark coerces to
    any type, so only references and syntax are judged; types are checked on the joined row (`add_derived`)."""
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F

    for d in resolved.derived:
        probe = spark.range(0).select(*[F.lit(None).alias(c) for c in d.inputs])
        try:
            probe.select(F.expr(d.derived.expr))
        except AnalysisException as exc:
            error = exc.getCondition() or ""
            if error.startswith(("UNRESOLVED_COLUMN", "UNRESOLVED_FIELD", "PARSE_SYNTAX_ERROR")) \
                    or type(exc).__name__ == "ParseException":
                raise DefinitionError(
                    f"derived feature '{d.name}': {_first_line(exc)}",
                    hint=f"its expression may use only its inputs' columns: {', '.join(d.inputs)}; add what it needs "
                         "to inputs=", details={"derived": d.name, "error": error}) from None


def add_derived(out, resolved: Resolved):
    """The joined rows with each derived feature computed (inputs before their users)."""
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F

    for d in resolved.derived:
        try:
            out = out.withColumn(d.name, F.expr(d.derived.expr))
        except AnalysisException as exc:
            types = ", ".join(f"{c} {out.schema[c].dataType.simpleString()}" for c in d.inputs)
            raise DefinitionError(f"derived feature '{d.name}': {_first_line(exc)}",
                                  hint=f"its inputs' types: {types}") from None
    return out


def _first_line(exc) -> str:
    return str(exc).strip().splitlines()[0]


def _mapped(spine, sel: Selection, join):
    """`join(spine)` for a use whose view keys are read from other spine columns: the spine gets the view's key
    columns as copies of the mapped columns (same-named spine columns step aside meanwhile), and the result is the
    original spine's columns, in order, plus the columns the join added."""
    if not sel.keys:
        return join(spine=spine)
    from pyspark.sql import functions as F

    keys = dict(sel.keys)
    aside = {c: f"__tally_aside_{i}" for i, c in enumerate(spine.columns) if c in keys}
    keyed = spine.select(*[F.col(f"`{c}`").alias(aside.get(c, c)) for c in spine.columns],
                         *[F.col(f"`{col}`").alias(k) for k, col in keys.items()])
    out = join(spine=keyed)
    added = [c for c in out.columns if c not in keyed.columns]
    return out.select(*[F.col(f"`{aside.get(c, c)}`").alias(c) for c in spine.columns], *[f"`{c}`" for c in added])


def build(spark, spine, features, timestamp: str, *, views=None, warehouse="warehouse", as_of=None,
          allow_missing: bool = False, data=None, source_versions: Mapping[str, int] | None = None,
          pin_sources: bool = False, labels: Sequence = (), labels_as_of=None, known_labels=None):
    """The training set and what went into it: per use of a view its version, fingerprint, accuracy, prefix, key
    mapping and the Delta version read; per derived feature and feature set its version and fingerprint; per
    label its version and fingerprint, and the labels' cutoff; the options; with `pin_sources`, per temporal
    source and label source what identifies the rows read (its Delta version, else a content hash).
    `source_versions` reads Delta sources at recorded versions (a manifest rebuild).

    `labels` (`tl.Label`s, or names in `known_labels`) are joined as known at `labels_as_of` (default: now,
    to the second; the manifest records it), see `tally.labels`.

    Every check (references, key columns, column clashes, derived expressions, labels) runs before any Spark job.
    """
    from tally import labels as labels_

    resolved = resolve(features, views)
    selections = resolved.selections
    if not selections:
        raise UsageError("a training set needs at least one feature view")
    check_spine(spine, timestamp, selections)
    check_columns(spine.columns, resolved)
    check_derived(spark, resolved)
    wanted_labels = labels_.resolve(labels, known_labels) if labels else []
    if wanted_labels:
        labels_.check(spine.columns, wanted_labels, resolved.output)
        cutoff = labels_.cutoff(labels_as_of if labels_as_of is not None
                                else dt.datetime.now(dt.timezone.utc).replace(microsecond=0))
    elif labels_as_of is not None:
        raise UsageError("labels_as_of is set but no labels are asked for", hint="pass labels= (--label)")
    from tally import validation

    keys = sorted({k for sel in selections for k in sel.spine_keys})
    as_of = dict(as_of or {})
    unknown = set(as_of) - {s.view.name for s in selections}
    if unknown:
        raise UsageError(f"as_of names view(s) not in the training set: {sorted(unknown)}")
    temporal = list({s.view.name: s.view for s in selections if s.view.accuracy != "snapshot"}.values())
    source_pins: dict | None = {} if pin_sources else None
    events = checked_sources(spark, temporal, data=data, versions=source_versions, pins=source_pins, warehouse=warehouse)
    # A spine that is a checked source itself ("as of each charge") passed the same not-null checks just now.
    if not any(spine.sameSemantics(events[v.source.name]) and v.source.timestamp == timestamp
               and set(keys) <= set(v.entity.keys) for v in temporal):
        validation.spine_report(spine, timestamp, keys).raise_if_failed(
            hint="drop or repair spine rows with null keys or timestamps; tally never drops them silently")
    for sel in selections:
        if sel.view.accuracy != "snapshot" and sel.view.name in as_of:
            raise UsageError(f"view '{sel.view.name}' is temporal: it reads its source, so as_of does not apply")
    together = _sweep_together(selections)
    out, report, entries, added = spine, {}, [], {}
    for i, sel in enumerate(selections):
        v, prefix, mapping = sel.view, sel.column_prefix, dict(sel.keys)
        if v.accuracy == "snapshot":
            # two uses of one view read the same Delta version: the first resolves it, the others are pinned to it
            pin = report[v.name]["delta_version"] if v.name in report else as_of.get(v.name)
            join = functools.partial(snapshot_features, spark, view=v, timestamp=timestamp, warehouse=warehouse,
                                     names=sel.features, as_of=pin, allow_missing=allow_missing, report=report,
                                     prefix=prefix, keys=mapping)
            before = set(out.columns)
            out = _mapped(out, sel, join)
            added[i] = [c for c in out.columns if c not in before]
        elif i in together:
            members = [selections[j] for j in together[i]]
            uses = [(m.view, m.features, events[m.view.source.name], m.column_prefix) for m in members]
            out = _mapped(out, sel, functools.partial(temporal_features, spark, uses=uses, timestamp=timestamp,
                                                      keys=mapping))
            for j, m in zip(together[i], members):
                added[j] = [m.column(f.name) for f in m.view.features if f.name in m.features]
        entries.append({"view": v.name, "version": v.version, "fingerprint": v.fingerprint, "accuracy": v.accuracy,
                        "features": list(sel.features), **report.get(v.name, {"delta_version": None}),
                        **({"prefix": sel.prefix} if sel.prefix else {}), **({"keys": mapping} if mapping else {})})
    # columns in the order the uses were asked for, whichever sweep computed them
    out = out.select(*[f"`{c}`" for c in spine.columns], *[f"`{c}`" for i in sorted(added) for c in added[i]])
    out = add_derived(out, resolved)
    # a derived feature's inputs stay only when the feature list asks for them too (columns keep the joins' order)
    keep = set(spine.columns) | set(resolved.output)
    out = out.select(*[f"`{c}`" for c in out.columns if c in keep])
    built = {"views": entries, "timestamp": timestamp, "options": {"allow_missing": allow_missing},
             "semantics": {e["view"]: SEMANTICS[e["accuracy"]] for e in entries}}
    if resolved.derived:
        built["derived"] = [d.content() for d in resolved.derived]
    if resolved.feature_sets:
        built["feature_sets"] = list(resolved.feature_sets)
    if wanted_labels:
        read_at = {**(source_versions or {}), **{n: p["delta_version"] for n, p in (source_pins or {}).items()
                                                  if "delta_version" in p}}
        out, label_report = labels_.join(spark, out, timestamp, wanted_labels, cutoff, data=data, warehouse=warehouse,
                                         versions=read_at, pins=source_pins)
        built["labels"] = {"as_of": cutoff.isoformat().replace("+00:00", "Z"), "labels": list(label_report.values())}
    if source_pins is not None:
        built["sources"] = source_pins
    return out, built
