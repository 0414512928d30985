"""The py4j crossing: the only module that touches `spark._jvm`.

Python sends a versioned JSON spec and DataFrames; Scala returns DataFrames. Nothing else crosses.
"""

from __future__ import annotations

from tally.errors import SetupError

SPEC_VERSION = 1


def _bridge(spark):
    try:
        bridge = spark._jvm.tally.bridge.Bridge
        jar_version = bridge.specVersion()
    except Exception as exc:  # py4j raises a bare Py4JError when the class is not on the classpath
        raise SetupError(
            "the tally JAR is not on this Spark session's classpath",
            hint="start the session with tally.session(), or pass target/tally.jar in spark.jars",
        ) from exc
    if jar_version != SPEC_VERSION:
        raise SetupError(
            f"the tally JAR reads spec version {jar_version}, this Python package writes {SPEC_VERSION}",
            hint="rebuild the JAR with `make jar` so both sides come from the same checkout",
        )
    return bridge


def _partitions(spark, partitions: int | None) -> int:
    """The sweep's and the join's task count: the caller's, else the session's shuffle partitions."""
    return partitions or int(spark.conf.get("spark.sql.shuffle.partitions"))


def register(spark) -> None:
    """Register the `tally_*` SQL functions in the session."""
    _bridge(spark).register(spark._jsparkSession)


def temporal(spark, spine, events, view, spine_time: str, *, partitions: int | None = None):
    """Cross once: the spine plus `{view}__{feature}` columns from the Scala sweep."""
    from pyspark.sql import DataFrame

    n = _partitions(spark, partitions)
    jdf = _bridge(spark).temporal(spine._jdf, events._jdf, view.spec_json(), spine_time, f"{view.name}__", n)
    return DataFrame(jdf, spark)


def hot_keys(spark, events, view, *, partitions: int | None = None) -> list[dict]:
    """The keys of `events` the sweep would split into time buckets: [{"key": [str, ...], "bucket_us": int}]."""
    import json

    n = _partitions(spark, partitions)
    return json.loads(_bridge(spark).hotKeys(events._jdf, view.spec_json(), n))


def as_of(spark, spine, spine_time: str, right, right_time: str, keys, values, prefix: str, tolerance_us: int,
          *, partitions: int | None = None):
    """Cross once: the spine plus `prefix + value` columns from the latest `right` row at or before each spine time."""
    from pyspark.sql import DataFrame

    n = _partitions(spark, partitions)
    jdf = _bridge(spark).asOf(spine._jdf, spine_time, right._jdf, right_time, list(keys), list(values), prefix,
                              int(tolerance_us), n)
    return DataFrame(jdf, spark)
