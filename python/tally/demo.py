"""The end-to-end demo (`make demo`, `tally demo`) on the embedded Spark session.

1. Generate about 1 M synthetic charges over 90 days (skipped when the same data already exists).
2. Load the payments feature repository (features/) and print the plan against the warehouse.
3. Backfill every view's daily snapshots over the whole span (one Delta commit per month; --resume semantics).
4. Build a temporal training set: one row per charge, labelled by a later fraud dispute, features as of the charge.
5. Train gradient-boosted trees (Spark MLlib) on the first 60 days, evaluate on the last 30: AUC-PR with tally's
   features against a baseline that sees only the charge's own columns.
6. Serve online: materialize the online views into the embedded store, start `tally serve`, fetch the features of
   a charge of the last day (the newest with the fewest nulls) over HTTP and show they equal its training row.

The warehouse and the data stay in place so the user can explore them with the CLI afterwards.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

START = dt.date(2026, 1, 1)


class Clock:
    def __init__(self, echo):
        self.echo, self.t0 = echo, time.time()

    def step(self, text: str) -> None:
        self.echo(f"[{time.time() - self.t0:6.0f}s] {text}")


def ensure_data(spark, folder: Path, charges: int, days: int, seed: int, clock: Clock) -> None:
    """Generated data in `folder`: reused when it was made with the same parameters, else generated."""
    from tally import datagen

    marker = folder / "_tally_datagen.json"
    params = {"charges": charges, "days": days, "seed": seed, "start": str(START)}
    if marker.exists() and json.loads(marker.read_text()) == params and all((folder / t).is_dir() for t in datagen.TABLES):
        clock.step(f"reusing generated data in {folder} ({charges:,} charges, {days} days, seed {seed})")
        return
    clock.step(f"generating {charges:,} charges over {days} days (seed {seed}) into {folder} ...")
    counts = datagen.write(spark, str(folder), charges=charges, days=days, seed=seed, start=str(START), format="parquet")
    marker.write_text(json.dumps(params))
    clock.step("generated " + ", ".join(f"{n:,} {name}" for name, n in counts.items()))


# Sources of one row per authorization attempt (features/acceptance.py): their views describe attempts for
# acceptance models, with attempt spines; the fraud demo's spine is one row per charge, so it leaves them out.
ATTEMPT_SOURCES = ("authorizations", "authorization_declines")


def charge_views(repository) -> dict:
    """The repository's views the demo backfills and joins: all but those over authorization attempts."""
    return {name: v for name, v in repository.views.items() if v.source.name not in ATTEMPT_SOURCES}


def fraud_spine(spark, data: str):
    """The demo's spine: every charge, labelled 1.0 when it was disputed as fraudulent, with four columns of its own
    a baseline model uses."""
    from pyspark.sql import functions as F

    fraud = (spark.read.parquet(f"{data}/disputes").where("reason = 'fraudulent'")
             .select("charge_id", F.lit(1.0).alias("label")).distinct())
    return (spark.read.parquet(f"{data}/charges").join(fraud, "charge_id", "left").fillna({"label": 0.0})
            .withColumn("amount_major", F.col("amount").cast("double") / 100)
            .withColumn("is_ecommerce", (F.col("channel") == "ecommerce").cast("double"))
            .withColumn("is_foreign", (F.col("card_country") != F.col("merchant_country")).cast("double"))
            .withColumn("hour", F.hour("created").cast("double")))


def _columns(df, views) -> tuple[list[str], object]:
    """Numeric feature columns of the training set; array features become one column per element."""
    from tally.tasks.run import numeric_inputs

    return numeric_inputs(df, [c for v in views for c in df.columns if c.startswith(f"{v.name}__")], fill=None)


def _auc_pr(train, test, columns: list[str], label: str = "label") -> float:
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import GBTClassifier
    from pyspark.ml.evaluation import BinaryClassificationEvaluator
    from pyspark.ml.feature import VectorAssembler

    fill = {c: -1.0 for c in columns}
    pipeline = Pipeline(stages=[
        VectorAssembler(inputCols=columns, outputCol="features", handleInvalid="keep"),
        GBTClassifier(labelCol=label, featuresCol="features", maxIter=25, maxDepth=5, seed=7)])
    model = pipeline.fit(train.fillna(fill))
    scored = model.transform(test.fillna(fill))
    return BinaryClassificationEvaluator(labelCol=label, metricName="areaUnderPR").evaluate(scored)


def run(warehouse: str = "warehouse", echo=print, *, data: str = "demo-data", charges: int = 1_000_000,
        days: int = 90, seed: int = 7, repo: str = "features") -> dict:
    from pyspark.sql import functions as F

    import tally as tl
    from tally import registry, store, training, utc

    clock = Clock(echo)
    spark = tl.session(warehouse=warehouse, conf={"spark.driver.memory": "6g"})
    try:
        ensure_data(spark, Path(data).resolve(), charges, days, seed, clock)
        repository = registry.load(repo)
        views = charge_views(repository)
        clock.step(f"feature repository {repo}: {len(views)} views on charges, "
                   f"{sum(len(v.features) for v in views.values())} features; plan:")
        for v in sorted(views.values(), key=lambda v: v.name):
            echo("    " + registry.plan_view(v, store.stored_versions(spark, warehouse, v.name)).describe())

        end = START + dt.timedelta(days=days - 1)
        test_start = START + dt.timedelta(days=days * 2 // 3)
        for v in sorted(views.values(), key=lambda v: v.name):
            t = time.time()
            results = store.backfill(spark, v, START, end, warehouse=warehouse, step_days=31, resume=True, data=data)
            rows = sum(r.get("rows") or 0 for r in results)
            clock.step(f"backfilled {v.name} v{v.version} {START}..{end}: {len(results)} commit(s), {rows:,} rows "
                       f"({time.time() - t:.0f}s)")

        spine = fraud_spine(spark, data)
        used = sorted(views.values(), key=lambda v: v.name)
        clock.step(f"building the training set: {len(used)} views onto {spine.count():,} charges ...")
        train_set, built = training.build(spark, spine, used, "created", views=views, warehouse=warehouse,
                                          allow_missing=True, data=data)
        path = str(Path(warehouse).resolve() / "training_sets" / "fraud_demo")
        train_set.write.format("delta").mode("overwrite").save(path)
        ts = spark.read.format("delta").load(path).withColumn("day", utc.day_of(F.col("created")))
        clock.step(f"training set written to {path}: {ts.count():,} rows, "
                   f"{len(ts.columns) - len(spine.columns) - 1} feature columns")

        feature_cols, ts = _columns(ts, used)
        baseline_cols = ["amount_major", "is_ecommerce", "is_foreign", "hour"]
        train = ts.where(F.col("day") < F.lit(test_start)).cache()
        test = ts.where(F.col("day") >= F.lit(test_start)).cache()
        n_train, n_test = train.count(), test.count()
        frauds = test.agg(F.sum("label")).first()[0]
        clock.step(f"split by time at {test_start}: train {n_train:,} rows, test {n_test:,} rows "
                   f"({int(frauds):,} fraud, {frauds / n_test:.2%})")

        summary = ts.select([F.round(F.avg(c), 3).alias(c) for c in feature_cols[:12]]).first().asDict()
        echo("    feature means (first 12): " + ", ".join(f"{k.replace('__', '.')}={v}" for k, v in summary.items()))
        base = _auc_pr(train, test, baseline_cols)
        clock.step(f"baseline (charge's own columns only): AUC-PR {base:.3f}")
        full = _auc_pr(train, test, baseline_cols + feature_cols)
        clock.step(f"with tally features ({len(feature_cols)} columns): AUC-PR {full:.3f} "
                   f"({full / base:.1f}x the baseline; a random model scores {frauds / n_test:.3f})")
        served = _serve_one(spark, [v for v in used if v.online], path, warehouse, data, clock, echo)
        echo(f"\nExplore: tally --warehouse {warehouse} list | describe card_velocity | history card_daily | serve")
        return {"baseline_auc_pr": base, "tally_auc_pr": full, "test_fraud_rate": frauds / n_test,
                "training_rows": n_train + n_test, "views": [e["view"] for e in built["views"]], "served": served}
    finally:
        spark.stop()


def _same(a, b) -> bool:
    """Training value and served value agree: equal, doubles to 1e-9 relative (the parity tests' bound)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (a != a and b != b) or abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _serve_one(spark, views, path: str, warehouse: str, data: str, clock: Clock, echo) -> dict:
    """Step 6: materialize, start `tally serve` on a free loopback port, fetch one charge of the last day, compare, stop."""
    import subprocess

    from pyspark.sql import functions as F

    from tally import online, utc

    keys = sorted({k for v in views for k in v.entity.keys})
    columns = [f"{v.name}__{f.name}" for v in views for f in v.features]
    # On the last day, the newest charge with the fewest null features (a card seen before shows values, not a
    # row of nulls); the store then loads the tiles requests from that day on need.
    table = spark.read.format("delta").load(path).withColumn("_day", utc.day_of(F.col("created")))
    last_day = table.agg(F.max("_day")).first()[0]
    nulls = sum(F.col(c).isNull().cast("int") for c in columns)
    row = (table.where(F.col("_day") == F.lit(last_day)).orderBy(nulls, F.desc("created"), F.desc("charge_id"))
           .select("charge_id", F.unix_micros("created").alias("at_us"), *keys, *columns).first())
    for r in online.materialize(spark, views, warehouse=warehouse, data=data, start=last_day):
        clock.step(f"materialized {r['view']} v{r['version']}: {r['events']:,} events, {r['keys']:,} keys, "
                   f"{r['tiles']:,} tiles")
    cmd = online.server_command(store=online.store_url(warehouse=warehouse), views=online.views_dir(warehouse),
                                host="127.0.0.1", port=0, threads=2)
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline().strip()
        if "listening on " not in line:
            raise RuntimeError(f"tally serve did not start: {line or 'no output'}")
        url = line.split("listening on ", 1)[1].split()[0]
        clock.step(line)
        served = online.OnlineClient(url).get([v.name for v in views], {k: row[k] for k in keys}, at=row["at_us"])
    finally:
        server.terminate()
        server.wait(30)
    differ = [c for c in columns if not _same(row[c], served[c.replace("__", ":", 1)])]
    for c in columns[:6]:
        echo(f"    {c.replace('__', ':', 1):40} training {row[c]!s:>22}   served {served[c.replace('__', ':', 1)]!s:>22}")
    for c in differ:
        echo(f"    {c.replace('__', ':', 1):40} training {row[c]!s:>22}   served {served[c.replace('__', ':', 1)]!s:>22}"
             "   DIFFERENT")
    clock.step(f"charge {row['charge_id']} at {served.at.isoformat()}: {len(columns) - len(differ)} of {len(columns)} "
               f"served features equal its training row")
    if differ:
        raise RuntimeError(f"online values differ from the training row for {', '.join(differ)}")
    return {"charge_id": row["charge_id"], "features": len(columns), "equal": len(columns)}
