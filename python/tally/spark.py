"""SparkSession factory: the embedded default (local Spark with Delta and the tally JAR) or a cluster.

Everything the session needs is on local disk after `make setup`: the tally JAR (`target/tally.jar`) and the
Delta JARs (`.tools/jars/`). Nothing is downloaded at run time (no `spark.jars.packages`).
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


def _embedded_conf(warehouse: str) -> dict[str, str]:
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
        "spark.jars": ",".join(jars),
        # On the driver's own classpath too, so py4j and the Delta catalog see them from the first call.
        "spark.driver.extraClassPath": os.pathsep.join(jars),
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.warehouse.dir": str(Path(warehouse, "spark-warehouse").resolve()),
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": "8",
        "spark.sql.adaptive.enabled": "true",
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.sql.sources.partitionOverwriteMode": "static",
    }


def session(
    master: str | None = None,
    conf: dict[str, str] | None = None,
    *,
    warehouse: str | None = None,
    app_name: str = "tally",
):
    """Start (or return) the SparkSession tally works in, with the `tally_*` SQL functions registered.

    With no arguments: embedded `local[*]` Spark, Delta, the tally JAR, quiet logs, all traffic on loopback.
    `master=` and `conf=` reach a cluster (pass the JAR there with `spark.jars`); `conf` wins over defaults.
    """
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    from tally import kernels

    settings = _embedded_conf(warehouse or os.environ.get("TALLY_WAREHOUSE", "warehouse"))
    settings.update(conf or {})
    builder = SparkSession.builder.appName(app_name).master(master or "local[*]")
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    kernels.register(spark)
    return spark
