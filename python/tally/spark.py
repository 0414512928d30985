"""SparkSession factory: the embedded default (local Spark with Delta and the tally JAR) or a cluster.

Everything the embedded session needs is on local disk after `make setup`: the tally JAR (`target/tally.jar`)
and the Delta JARs (`.tools/jars/`). Nothing is downloaded at run time (no `spark.jars.packages`).

Three cases, each with its own settings:
- a session is already running (a notebook, a test suite, the CLI called in-process): it is returned as it is,
  with the `tally_*` functions registered; nothing of tally's defaults is applied over the caller's settings;
- a local master (`local`, `local[*]`, `local-cluster[...]`): the laptop settings — the JARs from this checkout
  (checked to exist), traffic on loopback, no UI, few shuffle partitions, the warehouse's spark-warehouse;
- any other master (a cluster): only what tally's semantics need (Delta, UTC); the JAR comes with
  `spark-submit --jars` or `spark.jars` in `conf` (this checkout's JAR is added when it exists).
"""

from __future__ import annotations

import os
from pathlib import Path

from tally.errors import SetupError

_ROOT = Path(__file__).resolve().parents[2]


def jar_path() -> Path:
    """The tally JAR: $TALLY_JAR, else the one `make jar` builds in this checkout."""
    return Path(os.environ.get("TALLY_JAR", _ROOT / "target" / "tally.jar"))


def delta_jars() -> list[Path]:
    """The Delta JARs resolved at setup: $TALLY_DELTA_JARS (a folder), else `.tools/jars` of this checkout."""
    folder = Path(os.environ.get("TALLY_DELTA_JARS", _ROOT / ".tools" / "jars"))
    return sorted(folder.glob("*.jar"))


def class_archive() -> Path:
    """The driver's class-data-sharing archive `make setup` writes (`.tools/tally.jsa`): the JVM maps the classes a
    training set loads from it instead of reading and verifying each from its JAR, which is most of a fresh
    session's start. A JVM or JAR other than the one it was written with makes the JVM ignore it."""
    return Path(os.environ.get("TALLY_CLASS_ARCHIVE", _ROOT / ".tools" / "tally.jsa"))


# The JVM says nothing about the archive: a stale one is skipped, which costs only the time it would have saved.
_QUIET_CDS = "-Xlog:cds=off -Xlog:cds+dynamic=off"


def write_class_archive(path: str | Path) -> None:
    """Runs `representative_workload` in a session whose JVM writes every class it loaded to `path` when it exits.
    Call it in a process of its own (`make setup` does), after the JARs it will be used with are built."""
    import tempfile

    import tally as tl

    with tempfile.TemporaryDirectory() as tmp:
        spark = tl.session(warehouse=tmp, conf={
            "spark.driver.extraJavaOptions": f"-XX:ArchiveClassesAtExit={Path(path).resolve()} {_QUIET_CDS}"})
        try:
            representative_workload(spark, tmp)
        finally:
            spark.stop()


def representative_workload(spark, folder: str) -> None:
    """What a CLI call runs, small, in `folder`: Delta and parquet reads and writes, a training set with a separate
    spine, an as-of join of a backfilled snapshot view. The class archive records the classes it loads; a long-lived
    driver (`tally.driver`) runs it to warm its session before it serves."""
    import datetime as dt

    from pyspark.sql import functions as F

    import tally as tl
    from tally import store

    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    rows = (spark.range(5000).select(F.concat(F.lit("c"), (F.col("id") % 97).cast("string")).alias("card_id"),
                                     (F.lit(start).cast("timestamp") + F.make_interval(
                                         mins=(F.col("id") * 7 % 20160).cast("int"))).alias("created"),
                                     (F.col("id") % 1000).cast("decimal(18,0)").alias("amount")))
    rows.write.format("delta").save(f"{folder}/charges")
    rows.write.parquet(f"{folder}/spine")
    charges = tl.Source("charges", path=f"{folder}/charges", format="delta", timestamp="created")
    card = tl.Entity("card", keys=["card_id"])
    aggregations = [tl.Aggregation("count", windows=["1h", "7d"]), tl.Aggregation("sum", column="amount", windows=["1d"]),
                    tl.Aggregation("approx_distinct", column="amount", windows=["7d"]),
                    tl.Aggregation("approx_percentile", column="amount", windows=["7d"], params={"quantiles": [0.5]})]
    live = tl.FeatureView("live", entity=card, source=charges, aggregations=aggregations)
    daily = tl.FeatureView("daily", entity=card, source=charges, accuracy="snapshot", ttl="30d",
                           aggregations=aggregations[:2])
    store.backfill(spark, daily, start.date(), start.date() + dt.timedelta(days=13), warehouse=folder)
    out = tl.training_set(spark, spark.read.parquet(f"{folder}/spine"), [live, daily], timestamp="created",
                          warehouse=folder, allow_missing=True)
    out.write.format("delta").save(f"{folder}/training_set")
    out.write.parquet(f"{folder}/training_set.parquet")


def is_local(master: str) -> bool:
    """Does `master` run on this machine (local mode, or local-cluster's executor JVMs)?"""
    return master == "local" or master.startswith(("local[", "local-cluster["))


def _semantic_conf() -> dict[str, str]:
    """What tally's results depend on, wherever it runs: Delta, and timestamps read and shown in UTC."""
    return {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.sources.partitionOverwriteMode": "static",
    }


def _embedded_conf(warehouse: str) -> dict[str, str]:
    """Laptop settings: this checkout's JARs (which must exist), loopback, no UI, small shuffles."""
    jar = jar_path()
    if not jar.is_file():
        raise SetupError(f"the tally JAR is missing: {jar}", hint="run `make jar` (or `make setup`) in the tally checkout")
    deltas = delta_jars()
    if not deltas:
        raise SetupError(
            f"no Delta JARs found in {_ROOT / '.tools' / 'jars'}",
            hint="run `make setup`, which resolves them once from Maven Central",
        )
    jars = [str(jar), *map(str, deltas)]
    return {
        **_semantic_conf(),
        "spark.jars": ",".join(jars),
        # On the driver's own classpath too, so py4j and the Delta catalog see them from the first call.
        "spark.driver.extraClassPath": os.pathsep.join(jars),
        "spark.sql.warehouse.dir": str(Path(warehouse, "spark-warehouse").resolve()),
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": "8",
        "spark.sql.adaptive.enabled": "true",
        "spark.databricks.delta.snapshotPartitions": "2",
        **({"spark.driver.extraJavaOptions": f"-XX:SharedArchiveFile={class_archive()} {_QUIET_CDS}"}
           if class_archive().is_file() else {}),
    }


def _cluster_conf() -> dict[str, str]:
    """Cluster settings: tally's semantics only; the cluster decides addresses, UI and parallelism."""
    conf = _semantic_conf()
    if jar_path().is_file():  # a driver with a checkout ships its JAR; otherwise spark-submit --jars does
        conf["spark.jars"] = str(jar_path())
    return conf


def settings(master: str, conf: dict[str, str] | None = None, *, warehouse: str | None = None) -> dict[str, str]:
    """The settings a new session on `master` starts with: tally's for that kind of master, then `conf` over them."""
    if is_local(master):
        out = _embedded_conf(warehouse or os.environ.get("TALLY_WAREHOUSE", "warehouse"))
    else:
        out = _cluster_conf()
    out.update(conf or {})
    return out


def running_session():
    """The SparkSession this process already runs (this thread's active one, else the default one), or None."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    default = SparkSession._instantiatedSession  # PySpark keeps no public accessor that does not create one
    if default is not None and default._sc._jsc is not None:
        return default
    return None


# A session that runs call after call (the driver) keeps 1000 compiled classes of generated code, found again by
# their source text. Spark keeps 100 per JVM, fewer than one backfill compiles (50-75: its plans, Delta's log replay
# and commit), so each call compiled all of them anew. Not for every session: a one-shot CLI call reuses few, and a
# suite of small different plans ran no faster with it (bench/README.md, #17). Static: it counts at the start only.
LONG_LIVED_CONF = {"spark.sql.codegen.cache.maxEntries": "1000"}


def session(
    master: str | None = None,
    conf: dict[str, str] | None = None,
    *,
    warehouse: str | None = None,
    app_name: str = "tally",
    long_lived: bool = False,
):
    """Start (or return) the SparkSession tally works in, with the `tally_*` SQL functions registered.

    With no arguments: embedded `local[*]` Spark, Delta, the tally JAR, quiet logs, all traffic on loopback.
    `master=` and `conf=` reach a cluster (pass the JAR there with `spark.jars`); `conf` wins over defaults.
    `long_lived`: the session will run many calls (`LONG_LIVED_CONF` under `conf`).
    A session that is already running is returned unchanged: its owner's settings stand.
    """
    from pyspark.sql import SparkSession

    from tally import kernels

    spark = running_session()
    if spark is None:
        master = master or "local[*]"
        if is_local(master):
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = SparkSession.builder.appName(app_name).master(master)
        conf = {**(LONG_LIVED_CONF if long_lived else {}), **(conf or {})}
        for key, value in settings(master, conf, warehouse=warehouse).items():
            builder = builder.config(key, value)
        spark = builder.getOrCreate()
        spark.sparkContext.setLogLevel("ERROR")
    kernels.register(spark)
    return spark
