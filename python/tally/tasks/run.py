"""`tally task run`: a task's training set, model, metrics and report, written into one run folder.

1. Resolve the task against the repository (label, features) and the labels' cutoff (default: now, to the second).
2. Read the spine (source, filter, extra columns); refuse segment or label columns it lacks, and a split that
   leaves the train or test period empty (with both row counts) — before anything is written or trained.
3. Backfill the days the snapshot views lack over the spine's days (days already covered are reused).
4. Write the spine and build the training set through the FeatureStore's training-set + manifest machinery, so
   `tally training-set --from-manifest <run>/training_set.manifest.json` rebuilds the identical rows.
5. Drop rows whose label is not yet known at the cutoff (null), put the rows in an order that depends on their
   content only, train on the earlier period, score the later one.
6. Write metrics.json, the plots, report.md and the MLlib model.

The run folder is `<warehouse>/tasks/<name>/v<version>/<cutoff as YYYYMMDDTHHMMSSZ>/`: a rerun at the same cutoff
overwrites it with identical metrics (the model is seeded; row order cannot change a metric, see `metrics`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
from pathlib import Path

from tally.errors import DataError, DefinitionError, TallyError
from tally.tasks import definition, metrics, report
from tally.tasks.definition import Task, closest

SCORE = "_tally_score"
# The training rows' partitions are part of what a seeded MLlib model sees (GBT samples split candidates per
# partition), so their number is fixed here rather than taken from the session: the same rows give the same model
# on a laptop and on a cluster.
PARTITIONS = 4


def run_dir(warehouse, task: Task, cutoff: dt.datetime) -> Path:
    return Path(warehouse) / "tasks" / task.name / f"v{task.version}" / cutoff.strftime("%Y%m%dT%H%M%SZ")


def spine_frame(spark, task: Task, *, data):
    """The task's spine as a Spark DataFrame: the source's rows passing the filter, with the extra columns."""
    from pyspark.sql import functions as F

    from tally import sources

    spine = task.spine
    df = sources.read(spark, spine.source, data=data)
    try:
        if spine.filter:
            df = df.where(F.expr(spine.filter))
        for name, expr in spine.columns.items():
            df = df.withColumn(name, F.expr(expr))
    except Exception as exc:  # AnalysisException, ParseException
        raise DataError(f"task '{task.name}': the spine's filter or columns do not work on source "
                        f"'{spine.source.name}': {str(exc).strip().splitlines()[0]}",
                        hint=f"its columns: {', '.join(df.columns)}") from None
    return df


def checked_spine(spark, task: Task, label, *, data):
    """The spine, refused when it lacks a segment column or a join column of the label (naming the task)."""
    from tally import labels as labels_

    spine = spine_frame(spark, task, data=data)
    for s in task.segments:
        if s not in spine.columns:
            raise DefinitionError(f"task '{task.name}': segment column '{s}' is not a spine column",
                                  hint=f"{closest(s, spine.columns)}; add it with Spine(columns={{...}})")
    try:
        labels_.check(spine.columns, [label], [])
    except TallyError as exc:  # the same check a training set makes, said of the task
        raise type(exc)(f"task '{task.name}': {exc.message}", hint=exc.hint) from None
    return spine


def split_at(spine, task: Task) -> tuple[dt.datetime, int, int]:
    """The split instant and the spine rows before and from it; refuses an empty period."""
    from pyspark.sql import functions as F

    from tally import utc

    ts = task.spine.timestamp
    t = F.unix_micros(utc.as_instant(F.col(f"`{ts}`"), spine.schema[ts].dataType.typeName()))
    lo, hi = spine.agg(F.min(t), F.max(t)).first()
    if lo is None:
        raise DataError(f"task '{task.name}': the spine (source '{task.spine.source.name}'"
                        + (f", filter {task.spine.filter!r}" if task.spine.filter else "") + ") has no rows")
    if task.split.train_until is not None:
        at = utc.instant(task.split.train_until)
    else:
        cut = utc.from_micros(int(lo + (hi - lo) * (1 - task.split.test_fraction)))
        at = utc.midnight(cut.date())
    row = spine.agg(F.count_if(t < F.lit(utc.micros(at))).alias("train"),
                    F.count_if(t >= F.lit(utc.micros(at))).alias("test")).first()
    train, test = int(row.train), int(row.test)
    if train == 0 or test == 0:
        raise DataError(f"task '{task.name}': the split at {at.isoformat()} leaves the "
                        f"{'train' if train == 0 else 'test'} period empty ({train} train rows, {test} test rows; "
                        f"the spine spans {utc.from_micros(lo).isoformat()} .. {utc.from_micros(hi).isoformat()})",
                        hint="move train_until= inside the spine's time range, or use test_fraction=",
                        details={"train_rows": train, "test_rows": test})
    return at, train, test


def backfill_snapshots(fs, names: list[str], spine, timestamp: str) -> list[dict]:
    """Backfills, for each snapshot view the features use, the runs of consecutive days the spine needs and its
    table lacks; covered days are left as they are, so a rerun backfills nothing."""
    from tally import references, store, training

    views = {s.view.name: s.view for s in references.resolve(names, fs.repo.refs).selections
             if s.view.accuracy == "snapshot"}
    if not views:
        return []
    needed = training.needed_days(spine, timestamp)
    done = []
    for v in views.values():
        covered = store.covered_days(fs.spark, store.table_path(fs.config.warehouse, v.name, v.version))
        missing = [d for d in needed if str(d) not in covered]
        for start, end in _runs(missing):
            fs.backfill([v.name], start, end, step_days=31, resume=True)
            done.append({"view": v.name, "version": v.version, "start": str(start), "end": str(end)})
    return done


def _runs(days: list[dt.date]) -> list[tuple[dt.date, dt.date]]:
    runs: list[list[dt.date]] = []
    for d in days:
        if runs and (d - runs[-1][1]).days == 1:
            runs[-1][1] = d
        else:
            runs.append([d, d])
    return [(a, b) for a, b in runs]


def run(fs, task: Task, *, out: str | Path | None = None, labels_as_of=None) -> dict:
    """Runs `task` on the FeatureStore `fs` (its repository, warehouse, data and Spark); returns metrics.json's
    content with where everything went."""
    from tally import labels as labels_

    label, names = definition.check(task, fs.repo)
    cutoff = labels_.cutoff(labels_as_of if labels_as_of is not None
                            else dt.datetime.now(dt.timezone.utc).replace(microsecond=0))
    folder = Path(out) if out is not None else run_dir(fs.config.warehouse, task, cutoff)
    spark, ts = fs.spark, task.spine.timestamp
    spine = checked_spine(spark, task, label, data=fs.config.data)
    at, _, _ = split_at(spine, task)

    backfilled = backfill_snapshots(fs, names, spine, ts)
    with _removed_on_failure(folder):
        return _train_and_report(fs, task, label, names, spine, at, cutoff, folder, backfilled)


@contextlib.contextmanager
def _removed_on_failure(folder: Path):
    """A run that fails leaves no folder behind that could pass for a finished run: the folders it created go
    (one that was there stays)."""
    top = next((p for p in reversed([folder, *folder.parents]) if not p.exists()), None)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        if top is not None:
            shutil.rmtree(top, ignore_errors=True)
        raise


def _train_and_report(fs, task: Task, label, names: list[str], spine, at: dt.datetime, cutoff: dt.datetime,
                      folder: Path, backfilled) -> dict:
    from pyspark.sql import functions as F

    from tally import references

    ts = task.spine.timestamp
    spark = fs.spark
    spine.write.mode("overwrite").parquet(str(folder / "spine"))
    built = fs.write_training_set(folder / "training_set", spine=str(folder / "spine"), spine_format="parquet",
                                  timestamp=ts, features=names, out_format="parquet", labels=[label],
                                  labels_as_of=utc_text(cutoff))
    data = spark.read.parquet(str(folder / "training_set"))
    known = data.where(F.col(f"`{label.name}`").isNotNull())
    inputs, data = model_inputs(known, task, references.resolve(names, fs.repo.refs).output)
    if not inputs:
        raise DataError(f"task '{task.name}': no numeric feature or spine column to train on")
    train, test, counts = periods(content_order(data, spine.columns), task, label.name, at, cutoff)
    model = fit(train, inputs, label.name, task)
    model.write().overwrite().save(str(folder / "model"))
    scored = score(model, test).select(F.col(f"`{label.name}`").cast("double").alias("y"), SCORE,
                                       *[F.col(f"`{s}`").cast("string").alias(s) for s in task.segments]).toPandas()
    y, s = scored["y"].to_numpy(), scored[SCORE].to_numpy()
    result = {
        "task": task.name, "version": task.version, "description": task.description,
        "labels_as_of": utc_text(cutoff), "label": label.content(), "model": {"kind": task.model,
                                                                             "params": dict(task.params),
                                                                             "seed": task.seed},
        "features": names, "inputs": inputs,
        "split": {"at": utc_text(at), "rule": task.split.describe(), "train_rows": counts["train"],
                  "test_rows": counts["test"], "train_positives": counts["train_positives"],
                  "unknown_label_rows": built["rows"] - counts["train"] - counts["test"]},
        "test": metrics.summary(y, s, lift_at=task.lift_at, metrics=task.metrics),
        "segments": {seg: _segments(scored, seg, task) for seg in task.segments},
        "importance": importance(model, inputs, train),
        "backfilled": backfilled,
        "paths": {"run": str(folder), "training_set": built["output"]["path"], "manifest": built["manifest"],
                  "model": str(folder / "model")},
    }
    train.unpersist()
    test.unpersist()
    (folder / "metrics.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    report.write(folder, result, metrics.pr_curve(y, s))
    return result


def periods(data, task: Task, label: str, at: dt.datetime, cutoff: dt.datetime):
    """The train and test rows (cached: the model and the metrics read them) and their counts; refuses a period
    without a row whose label is known at the cutoff."""
    from pyspark.sql import functions as F

    from tally import utc

    ts = task.spine.timestamp
    t = F.unix_micros(utc.as_instant(F.col(f"`{ts}`"), data.schema[ts].dataType.typeName()))
    before = t < F.lit(utc.micros(at))
    row = data.agg(F.count_if(before).alias("train"), F.count_if(~before).alias("test"),
                   F.sum(F.when(before, F.col(f"`{label}`"))).alias("positives")).first()
    counts = {"train": int(row.train), "test": int(row.test), "train_positives": int(row.positives or 0)}
    for period in ("train", "test"):
        if counts[period] == 0:
            raise DataError(f"task '{task.name}': no {period} row has a known label at the cutoff "
                            f"{utc_text(cutoff)} ({counts['train']} train, {counts['test']} test rows with labels)",
                            hint="a label's window must close before the cutoff: pass a later --labels-as-of")
    return data.where(before).cache(), data.where(~before).cache(), counts


def utc_text(instant: dt.datetime) -> str:
    return instant.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def model_inputs(df, task: Task, feature_columns) -> tuple[list[str], object]:
    """The model's input columns as doubles: the spine's numeric extra columns (the baseline) and the features, as
    `numeric_inputs` makes them. Nulls and NaNs become 0 (an empty window, a ttl passed), so both models take every
    row."""
    columns = [*task.spine.columns, *[c for c in feature_columns if c not in task.spine.columns]]
    return numeric_inputs(df, columns, fill=0.0)


def numeric_inputs(df, columns: list[str], *, fill: float | None) -> tuple[list[str], object]:
    """`columns` as model inputs, all doubles: numeric and boolean columns cast, each element of a numeric array
    (approx_percentile's quantiles, an embedding's vector) a column `{name}_{i}`; other types (top_k's strings) left
    out. Nulls become `fill` unless it is None."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, NumericType

    arrays = [c for c in columns if isinstance(df.schema[c].dataType, ArrayType)
              and isinstance(df.schema[c].dataType.elementType, NumericType)]
    sizes = {}
    if arrays:
        row = df.select(*[F.max(F.size(F.col(f"`{c}`"))).alias(c) for c in arrays]).first()
        sizes = {c: int(row[c] or 0) for c in arrays}
    out, inputs = df, []
    for c in columns:
        dtype = df.schema[c].dataType
        if c in sizes:
            for i in range(sizes[c]):
                out = out.withColumn(f"{c}_{i}", F.col(f"`{c}`")[i].cast("double"))
                inputs.append(f"{c}_{i}")
        elif isinstance(dtype, NumericType) or dtype.typeName() == "boolean":
            out = out.withColumn(c, F.col(f"`{c}`").cast("double"))
            inputs.append(c)
    return inputs, out.fillna(fill, subset=inputs) if inputs and fill is not None else out


def content_order(df, columns: list[str]):
    """The rows in an order that depends on their content alone (hash partitions, sorted within), so the seeded
    model sees the same partitions on every run however the training set's files were laid out."""
    from pyspark.sql import functions as F

    cols = [F.col(f"`{c}`") for c in columns]
    return df.repartition(PARTITIONS, F.xxhash64(*cols)).sortWithinPartitions(*cols)


def fit(train, inputs: list[str], label: str, task: Task):
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import GBTClassifier, LogisticRegression
    from pyspark.ml.feature import VectorAssembler

    if task.model == "gbt":
        clf = GBTClassifier(labelCol="_tally_label", featuresCol="_tally_features", seed=task.seed, **task.params)
    else:  # deterministic: no seed to set
        clf = LogisticRegression(labelCol="_tally_label", featuresCol="_tally_features", **task.params)
    from pyspark.sql import functions as F

    pipeline = Pipeline(stages=[VectorAssembler(inputCols=inputs, outputCol="_tally_features"), clf])
    return pipeline.fit(train.withColumn("_tally_label", F.col(f"`{label}`").cast("double")))


def score(model, df):
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    return model.transform(df).withColumn(SCORE, vector_to_array(F.col("probability"))[1])


def importance(model, inputs: list[str], train) -> list[dict]:
    """GBT: MLlib's feature importances (total gain, normalized). Logistic regression: |coefficient| times the
    input's standard deviation on the training rows (the effect of one standard deviation), normalized."""
    from pyspark.sql import functions as F

    clf = model.stages[-1]
    if hasattr(clf, "featureImportances"):
        weights = clf.featureImportances.toArray().tolist()
    else:
        sd = train.agg(*[F.stddev(F.col(f"`{c}`")).alias(str(i)) for i, c in enumerate(inputs)]).first()
        weights = [abs(w) * float(sd[str(i)] or 0.0) for i, w in enumerate(clf.coefficients.toArray().tolist())]
    total = sum(weights) or 1.0
    ranked = sorted(zip(inputs, weights), key=lambda p: (-p[1], p[0]))
    return [{"input": name, "importance": w / total} for name, w in ranked]


def _segments(scored, column: str, task: Task) -> list[dict]:
    rows = []
    for value, group in sorted(scored.groupby(column, dropna=False), key=lambda p: str(p[0])):
        y, s = group["y"].to_numpy(), group[SCORE].to_numpy()
        one = metrics.summary(y, s, lift_at=task.lift_at[:1], metrics=[m for m in task.metrics if m != "calibration"])
        rows.append({"value": None if value != value else value, **one})
    return rows
