"""`tl.FeatureStore`: one object for notebooks and the CLI.

It resolves the configuration once (`tally.toml` found upward from a folder, environment variables, arguments;
see `tally.config`), and owns what every operation needs: the warehouse, the data root, the feature repository
(loaded on first use), the online store's URL and one Spark session (started on first use, stopped by `close()`
if this object started it). Its methods are the operations the CLI commands run; the commands only parse flags
and print.

    import tally as tl
    with tl.FeatureStore() as fs:                  # finds ./tally.toml, or one in a parent folder
        train = fs.training_set(spine_pdf, ["card_velocity", "merchant_risk:dispute_rate_30d"], timestamp="created")
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path

from tally import config as config_module
from tally.errors import DataError, UsageError

_FORMATS = ("parquet", "delta", "csv", "json", "orc")


class FeatureStore:
    """The configuration, warehouse, repository, online store and Spark session of one tally project."""

    def __init__(self, path: str | Path | None = None, *, warehouse: str | None = None, repo: str | None = None,
                 master: str | None = None, data: str | None = None, online_store: str | None = None):
        """`path`: a folder to look for `tally.toml` from (default: the working directory), or the file itself.
        The keyword arguments override the configuration, as the CLI's flags do."""
        where = Path(path) if path is not None else None
        if where is not None and where.is_file():
            where = where.parent
        self.config = config_module.load(where, warehouse=warehouse, repo=repo, master=master, data=data,
                                         online_store=online_store)
        self._spark = None
        self._owns_spark = False
        self._repo = None
        self.long_lived = False  # set before the session starts, by a process that serves many calls (the driver)

    # ---- what it owns ----

    @property
    def spark(self):
        """The Spark session: the one this process already runs (its settings stand), else a new one for the
        configured master (laptop settings only for a local master)."""
        if self._spark is None:
            from tally.spark import running_session, session

            self._owns_spark = running_session() is None
            self._spark = session(self.config.master, self.config.spark_conf, warehouse=self.config.warehouse,
                                  long_lived=self.long_lived)
        return self._spark

    @property
    def repo(self):
        """The feature repository (views, sources, entities), loaded once from the configured folder."""
        if self._repo is None:
            from tally import registry

            self._repo = registry.load(self.config.repo)
        return self._repo

    def close(self) -> None:
        """Stops the Spark session if this store started it."""
        if self._spark is not None and self._owns_spark:
            self._spark.stop()
        self._spark = None

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def __repr__(self) -> str:
        c = self.config
        return f"FeatureStore(warehouse={c.warehouse!r}, repo={c.repo!r}, data={c.data!r}, master={c.master!r})"

    # ---- the repository ----

    def list(self) -> list:
        """The repository's feature views, by name."""
        return sorted(self.repo.views.values(), key=lambda v: v.name)

    def view(self, name: str):
        """One view by name (a RegistryError lists the known ones)."""
        return self.repo.view(name)

    def describe(self, name: str) -> dict:
        """A view's definition, the tables of each stored version with the days they cover, its online state."""
        from tally import reports

        return reports.describe_report(self.spark, self.view(name), warehouse=self.config.warehouse,
                                       online_store=self.config.online_store)

    def plan(self) -> list:
        """Each view against the warehouse (new, new version, unchanged, changed under a stored version) and its
        source's schema. Reports; `backfill` and `materialize` refuse what it flags."""
        from tally import reports

        return reports.plan_items(self.spark, self.repo, data=self.config.data, warehouse=self.config.warehouse)

    def plan_references(self) -> list:
        """Each feature set, derived feature and label against the training sets that used it (new, unchanged,
        changed under a used version: the next training set naming it refuses)."""
        from tally import registry

        return registry.plan_references(self.repo, self.config.warehouse)

    def task(self, name: str):
        """One task of the repository by name (a RegistryError names the closest)."""
        from tally.errors import RegistryError
        from tally.tasks.definition import closest

        if name not in self.repo.tasks:
            raise RegistryError(f"unknown task '{name}' in {self.repo.path}", hint=closest(name, self.repo.tasks))
        return self.repo.tasks[name]

    def run_task(self, name: str, *, out: str | Path | None = None, labels_as_of=None) -> dict:
        """Runs the task: training set and manifest, model, metrics, report, in `out` (default:
        `<warehouse>/tasks/<name>/v<version>/<labels cutoff>/`); see `tally.tasks.run` and docs/tasks.md."""
        from tally.tasks import run

        return run.run(self, self.task(name), out=out, labels_as_of=labels_as_of)

    # ---- offline ----

    def backfill(self, views: Sequence[str], start: dt.date | str, end: dt.date | str, *, step_days: int = 7,
                 resume: bool = False, on_chunk=None, statistics: bool = True) -> dict[str, list[dict]]:
        """Daily snapshots of `views` for days start..end (inclusive), one Delta commit per chunk of `step_days`,
        each with the per-day statistics of every feature unless `statistics=False`. Refuses a view whose
        definition changed under a stored version. Returns each view's chunk results; `on_chunk(result)` is
        called with each as soon as its chunk is committed (or skipped)."""
        from tally import registry, store

        start, end = _day(start, "start"), _day(end, "end")
        targets = [self.view(name) for name in views]
        for v in targets:
            registry.require_unchanged(registry.plan_view(v, store.stored_versions(self.spark, self.config.warehouse, v.name)))
        return {v.name: store.backfill(self.spark, v, start, end, warehouse=self.config.warehouse, step_days=step_days,
                                       resume=resume, data=self.config.data, on_chunk=on_chunk,
                                       statistics=statistics) for v in targets}

    def read_spine(self, spine, *, format: str | None = None):
        """A spine as users have it, as a Spark DataFrame: a Spark DataFrame (as is), a pandas DataFrame (naive
        datetimes read as UTC, as everywhere in tally), or a path to parquet, Delta, CSV, JSON or ORC (the format
        from `format`, else a Delta log, else the file extension, else parquet)."""
        from pyspark.sql import DataFrame

        if isinstance(spine, DataFrame):
            return spine
        if _is_pandas(spine):
            return _from_pandas(self.spark, spine)
        if isinstance(spine, (str, Path)):
            path = Path(spine)
            if not path.exists():
                raise DataError(f"the spine path {path} does not exist")
            fmt = format or format_of(path)
            if fmt not in _FORMATS:
                raise UsageError(f"spine format '{fmt}' is not one of {', '.join(_FORMATS)}")
            reader = self.spark.read.format(fmt)
            if fmt == "csv":
                reader = reader.option("header", "true").option("inferSchema", "true")
            try:
                return reader.load(str(path))
            except Exception as exc:
                raise DataError(f"cannot read the spine at {path} as {fmt}: {str(exc).strip().splitlines()[0]}") from exc
        raise UsageError(f"a spine is a Spark or pandas DataFrame or a path, not {type(spine).__name__}")

    def training_set(self, spine, features: Sequence, timestamp: str, *, as_of: Mapping[str, int | str] | None = None,
                     allow_missing: bool = False, spine_format: str | None = None, labels: Sequence = (),
                     labels_as_of=None):
        """Every selected view's features joined onto `spine`, point-in-time correct at its `timestamp` column.
        `spine`: see `read_spine`. `features`: views, "view" and "view:feature" references, feature sets, derived
        features and `tl.Use`s (docs/feature-sets.md). `as_of` pins a snapshot view's Delta version (or
        timestamp). Columns of the spine (labels included) are kept; `labels` (`tl.Label`s or the repository's
        label names) are joined as known at `labels_as_of` (default: now), by their sources' `available_at`
        (docs/labels.md)."""
        return self.build_training_set(spine, features, timestamp, as_of=as_of, allow_missing=allow_missing,
                                       spine_format=spine_format, labels=labels, labels_as_of=labels_as_of)[0]

    def build_training_set(self, spine, features: Sequence, timestamp: str, *, as_of=None, allow_missing=False,
                           spine_format=None, source_versions=None, pin_sources=False, labels: Sequence = (),
                           labels_as_of=None):
        """`training_set` and what went into it (views, versions, fingerprints, labels, source pins): what a
        manifest records."""
        from tally import registry, training

        out, built = training.build(self.spark, self.read_spine(spine, format=spine_format), list(features), timestamp,
                                    views=self.repo.refs, warehouse=self.config.warehouse, as_of=as_of,
                                    allow_missing=allow_missing, data=self.config.data, source_versions=source_versions,
                                    pin_sources=pin_sources, labels=labels, labels_as_of=labels_as_of,
                                    known_labels=self.repo.labels)
        registry.check_references(self.config.warehouse, built)  # a version names one content, as for views
        registry.record_references(self.config.warehouse, built)
        return out, built

    def write_training_set(self, out: str | Path, *, spine=None, spine_format: str | None = None,
                           timestamp: str | None = None, features: Sequence = (), out_format: str | None = None,
                           as_of: Mapping[str, int | str] | None = None, allow_missing: bool = False,
                           labels: Sequence = (), labels_as_of=None, from_manifest: str | Path | None = None) -> dict:
        """Builds a training set, writes it to `out` (parquet unless `out_format`) with its manifest beside it
        (`<out>.manifest.json`), and returns what `reports.training_report` says of it. `spine` is a path (the
        manifest records it and its content hash). With `from_manifest`, everything comes from that manifest and the
        rows must come out identical: every input is checked before anything is written. What `tally training-set`
        and `tally task run` both do."""
        from tally import manifests, training

        views = self.repo.refs  # views, feature sets and derived features: every name a feature list may use
        recorded, source_versions = None, None
        if from_manifest:
            recorded = manifests.read(from_manifest)
            spine, spine_format = recorded["spine"]["path"], recorded["spine"]["format"]
            timestamp, features = recorded["spine"]["timestamp"], recorded["features"]
            as_of = manifests.pins(recorded, views)
            source_versions = manifests.source_versions(recorded)
            allow_missing = recorded["options"]["allow_missing"]
            out_format = out_format or recorded["output"]["format"]
            labels, labels_as_of = manifests.labels(recorded, self.repo.labels)
        out_format = out_format or "parquet"
        spine_format = spine_format or format_of(spine)
        spine_df = self.read_spine(spine, format=spine_format)
        spine_hash = training.content_hash(spine_df)
        if recorded:
            manifests.require_same(f"the spine {spine}", recorded["spine"], spine_hash,
                                   hint="restore the spine the manifest names, or build a new training set from it")
        features = list(features)
        df, built = self.build_training_set(spine_df, features, timestamp, as_of=as_of, allow_missing=allow_missing,
                                            source_versions=source_versions, pin_sources=True, labels=labels,
                                            labels_as_of=labels_as_of)
        if recorded:  # every input is checked before anything is written
            manifests.require_same_sources(recorded, built["sources"])
        out = str(out)
        df.write.format(out_format).mode("overwrite").save(out)
        # Every column is hashed: sketches give one value per set of events. Manifests of older tallies (whose KLL
        # sketches were random) name the columns they left out, and a rebuild leaves out the same.
        unhashed = recorded["output"].get("unhashed", []) if recorded else []
        written = self.spark.read.format(out_format).load(out)
        out_hash = {**training.content_hash(written, exclude=unhashed), "unhashed": unhashed}
        if recorded:
            manifests.require_same(f"the rebuilt training set at {out}", recorded["output"], out_hash,
                                   hint="the inputs matched the manifest, so this is a tally bug: please report it")
        manifest = manifests.make(spine_path=str(spine), spine_format=spine_format, spine_hash=spine_hash, built=built,
                                  features=features, out=out, out_format=out_format, out_hash=out_hash,
                                  warehouse=self.config.warehouse)
        manifest_path = manifests.write(manifest, out)
        label_nulls = None
        if built.get("labels"):
            from pyspark.sql import functions as F

            names = [e["name"] for e in built["labels"]["labels"]]
            row = written.agg(*[F.count_if(F.col(f"`{n}`").isNull()).alias(n) for n in names]).first()
            label_nulls = {n: int(row[n]) for n in names}
        from tally import reports

        return reports.training_report(rows=out_hash["rows"], out=out, out_format=out_format, out_hash=out_hash,
                                       manifest=manifest_path, spine=str(spine), spine_hash=spine_hash,
                                       features=features, built=built,
                                       reproduced=str(from_manifest) if recorded else None, label_nulls=label_nulls)

    def read_features(self, view: str, *, version: int | None = None):
        """A snapshot view's Delta table (the repository's version unless `version` is given)."""
        from tally import store

        return store.read_features(self.spark, self.view(view), warehouse=self.config.warehouse, version=version)

    def stats(self, view: str, *, version: int | None = None, features: Sequence[str] | None = None,
              start: dt.date | str | None = None, end: dt.date | str | None = None, plot: str | None = None,
              out: str | Path | None = None) -> dict:
        """The per-day feature statistics the backfills of `view`'s table recorded (the newest commit of each day
        wins), days start..end, with the days the drift rule flags; `plot` a feature to the PNG file `out`
        (docs/cli.md, "tally stats")."""
        from tally import reports
        from tally.errors import RegistryError

        if (plot is None) != (out is None):
            raise UsageError("a plot needs both the feature to plot and the PNG file to write (--plot F --out FILE)")
        start = None if start is None else _day(start, "start")
        end = None if end is None else _day(end, "end")
        if start and end and end < start:
            raise UsageError(f"--end {end} is before --start {start}")
        chosen = list(features or [])
        if plot and chosen and plot not in chosen:
            chosen.append(plot)
        report = reports.stats_report(self.spark, self.view(view), version, warehouse=self.config.warehouse,
                                      features=chosen or None, start=start, end=end)
        if plot:
            from tally import plots

            names = [f["name"] for f in report["features"]]
            if plot not in names:
                raise RegistryError(f"view '{view}' v{report['version']} has no statistics of feature '{plot}' to plot",
                                    hint=f"features with statistics: {', '.join(names) or 'none'}")
            report["plot"] = str(plots.feature_plot(report, plot, out))
        return report

    # ---- online ----

    def materialize(self, views: Sequence[str], *, start: dt.date | dt.datetime | str | None = None,
                    store: str | None = None) -> list[dict]:
        """Build the tiles of online `views` and load them into the online store (the configured one unless
        `store` is given); see `tally.online.materialize`."""
        from tally import online

        if isinstance(start, str):
            start = _day(start, "start")
        return online.materialize(self.spark, [self.view(name) for name in views], warehouse=self.config.warehouse,
                                  data=self.config.data, store=store or self.config.online_store, start=start)

    def stream(self, views: Sequence[str], *, store: str | None = None, trigger: str = "1s", until_idle: bool = False,
               max_batches: int | None = None, files_per_batch: int | None = None, on_batch=None) -> list[dict]:
        """Keep online `views` fresh from their Delta sources, one micro-batch at a time, exactly once; see
        `tally.streaming.stream`. Runs until interrupted, or until idle / `max_batches` when asked."""
        from tally import streaming

        return streaming.stream(self.spark, [self.view(name) for name in views], warehouse=self.config.warehouse,
                                data=self.config.data, store_url=store or self.config.online_store, trigger=trigger,
                                until_idle=until_idle, max_batches=max_batches, files_per_batch=files_per_batch,
                                on_batch=on_batch)

    def get_online_features(self, features: Sequence[str], entities: Mapping | None = None, *, rows=None, at=None,
                            store: str | None = None):
        """Online values as `tally serve` answers them, fetched in this process: one lookup (`entities`, `at`;
        default now) or a batch (`rows`)."""
        from tally import online

        return online.get(self.spark, list(features), entities, rows=rows, at=at, warehouse=self.config.warehouse,
                          store=store or self.config.online_store)


def _day(value, what: str) -> dt.date:
    if isinstance(value, dt.datetime):
        raise UsageError(f"{what} is a day (YYYY-MM-DD or a date), not the instant {value.isoformat()}")
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise UsageError(f"{what} '{value}' is not a date (YYYY-MM-DD)") from None


def _is_pandas(obj) -> bool:
    return type(obj).__module__.startswith("pandas") and type(obj).__name__ == "DataFrame"


def format_of(path: str | Path) -> str:
    """A spine path's format when none is given: delta for a Delta table, else the file extension, else parquet."""
    path = Path(path)
    if (path / "_delta_log").is_dir():
        return "delta"
    suffix = path.suffix.lower().lstrip(".")
    return suffix if suffix in _FORMATS else "parquet"


def _from_pandas(spark, pdf):
    """A pandas spine in Spark. Datetime columns cross as epoch microseconds and become timestamps in Spark, so
    neither the process's zone nor the session's can shift them; naive ones are read as UTC."""
    import pandas as pd
    from pyspark.sql import functions as F

    pdf = pdf.copy()
    times = []
    for name in pdf.columns:
        column = pdf[name]
        if isinstance(column.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(column.dtype):
            utc = column.dt.tz_convert("UTC") if isinstance(column.dtype, pd.DatetimeTZDtype) else column.dt.tz_localize("UTC")
            micros = utc.dt.tz_localize(None).astype("datetime64[us]").astype("int64")
            pdf[name] = micros.where(column.notna(), None).astype("Int64")
            times.append(name)
    if any(not isinstance(c, str) for c in pdf.columns):
        raise DataError(f"spine column names must be strings, got {list(pdf.columns)}")
    records = [tuple(None if pd.isna(v) else (int(v) if name in times else v.item() if hasattr(v, "item") else v)
                     for name, v in zip(pdf.columns, row))
               for row in pdf.itertuples(index=False, name=None)]
    if not records:
        raise DataError("the spine is an empty pandas DataFrame: a training set needs at least one row")
    df = spark.createDataFrame(records, schema=_spark_schema(pdf, times))
    for name in times:
        df = df.withColumn(name, F.timestamp_micros(F.col(f"`{name}`")))
    return df


def _spark_schema(pdf, times: Sequence[str]):
    """Spark types for a pandas spine's columns (timestamps as bigint microseconds until converted)."""
    import pandas as pd
    from pyspark.sql import types as T

    fields = []
    for name in pdf.columns:
        dtype = pdf[name].dtype
        if name in times or pd.api.types.is_integer_dtype(dtype):
            kind = T.LongType()
        elif pd.api.types.is_bool_dtype(dtype):
            kind = T.BooleanType()
        elif pd.api.types.is_float_dtype(dtype):
            kind = T.DoubleType()
        elif pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
            values = pdf[name].dropna()
            if len(values) and all(isinstance(v, dt.date) and not isinstance(v, dt.datetime) for v in values):
                kind = T.DateType()
            elif all(isinstance(v, str) for v in values):
                kind = T.StringType()
            else:
                raise DataError(f"spine column '{name}' mixes Python types "
                                f"({sorted({type(v).__name__ for v in values})}); give it one type")
        else:
            raise DataError(f"spine column '{name}' has pandas type {dtype}, which tally cannot take",
                            hint="convert it to int, float, bool, str, date or datetime")
        fields.append(T.StructField(name, kind, True))
    return T.StructType(fields)
