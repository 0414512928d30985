"""The py4j crossing: the only module that touches `spark._jvm`.

Python sends a versioned JSON spec and DataFrames; Scala returns DataFrames, or JSON for the online calls
(materialize, fetch, status). Nothing else crosses.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

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


def temporal(spark, spine, parts, spine_time: str, *, partitions: int | None = None):
    """Cross once: the spine plus, per part `(events, view, prefix)` in order, `{prefix}{feature}` columns from the
    Scala sweep (prefix None: `{view}__`). Parts are views with the same keys, swept in one pass."""
    from pyspark.sql import DataFrame

    n = _partitions(spark, partitions)
    jdf = _bridge(spark).temporal(spine._jdf, [events._jdf for events, _, _ in parts],
                                  [view.spec_json() for _, view, _ in parts], spine_time,
                                  [prefix or f"{view.name}__" for _, view, prefix in parts], n)
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


def compiled_classes(spark) -> int:
    """How many classes of generated code this JVM has compiled (Spark's codegen metrics): what the driver's status
    shows, since a plan seen before should compile nothing."""
    return int(spark._jvm.org.apache.spark.metrics.source.CodegenMetrics.METRIC_COMPILATION_TIME().getCount())


# Online serving: tiles in, values out. The store is named by URL (`tally.online.store_url`); Scala opens it.

MIN_US = -(2**63)  # `from_us` meaning "what requests at the source's newest event time need"


def materialize(spark, events, view, store_url: str, from_us: int, stamp: int, *, partitions: int | None = None) -> dict:
    """Cross once: build `view`'s tiles from its source `events` (from `from_us` on) and load them into the store.

    Returns what Scala reports: events, keys, tiles, applied, from_us, watermark_us and the serving spec."""
    import json

    n = _partitions(spark, partitions)
    bridge = _bridge(spark)
    with _store_errors(spark, store_url):
        return json.loads(bridge.materialize(events._jdf, view.spec_json(), store_url, int(from_us), int(stamp), n))


def stream_batch(spark, batch, view, store_url: str, tile_table: str, stream: str, batch_id: int, stamp_base: int,
                 floor_us: int, *, partitions: int | None = None, flags: Sequence[str] = ()) -> dict:
    """Cross once: fold one stream micro-batch of `view`'s source into the store and the Delta tile table at
    `tile_table`, exactly once (StreamJob).

    The batch's tile-table commit runs after this returns, beside the next batch: `stream_flush(spark, tile_table)`
    waits for it.
    `flags`: boolean columns of `batch`, each true for the rows failing one check of the source's contract; counted in
    the batch's one read, and if any row fails nothing is written and `failing` (rows per flag) says so.
    Returns batch_id, skipped, events, late, tiles, applied, newest_us (None without events), horizon_us, failing and
    phases_ms (milliseconds per phase of the batch: build, fold, wait (for the previous batch's commit), close (the
    store's), and tile_table: the previous batch's commit, when this batch waited for it)."""
    import json

    n = _partitions(spark, partitions)
    bridge = _bridge(spark)
    with _store_errors(spark, store_url):
        return json.loads(bridge.streamBatch(batch._jdf, view.spec_json(), store_url, tile_table, stream, int(batch_id),
                                             int(stamp_base), int(floor_us), n, list(flags)))


def stream_catch_up(spark, view, store_url: str, tile_table: str, stream: str, stamp_base: int) -> int | None:
    """Before a stream's first batch: the tile table gets the store's last batch of `stream` if a crash lost its
    commit (StreamJob.catchUp). Returns that batch's id, or None when the table held it already."""
    import json

    bridge = _bridge(spark)
    with _store_errors(spark, store_url):
        return json.loads(bridge.streamCatchUp(spark._jsparkSession, view.spec_json(), store_url, tile_table, stream,
                                               int(stamp_base)))["rewritten"]


def stream_flush(spark, tile_table: str) -> None:
    """Wait for the commit of the last stream batch to `tile_table` (it runs after the batch's close, beside the next
    batch), raising its failure."""
    _bridge(spark).streamFlush(tile_table)


def last_batch(spark, store_url: str, stream: str) -> int | None:
    """The last micro-batch `stream` recorded in the store, or None."""
    import json

    bridge = _bridge(spark)
    with _store_errors(spark, store_url):
        return json.loads(bridge.lastBatch(store_url, stream))["last_batch"]


def fetch(spark, store_url: str, serving_specs: list[dict], request: dict) -> dict:
    """Cross once: the in-process fetch, request and response as the server's POST /features (JSON)."""
    import json

    from tally.errors import BadRequestError

    bridge = _bridge(spark)
    with _store_errors(spark, store_url):
        try:
            answer = bridge.fetch(store_url, json.dumps(serving_specs), json.dumps(request))
        except Exception as exc:
            cause = _java_cause(spark, exc)
            if cause is None or not cause[2]:
                raise
            raise BadRequestError(cause[1]) from None
    return json.loads(answer)


def online_status(spark, store_url: str, view: str, version: int) -> dict:
    """The store's state of one view version: {"watermark_us": int | None}."""
    import json

    bridge = _bridge(spark)
    with _store_errors(spark, store_url):
        return json.loads(bridge.onlineStatus(store_url, view, int(version)))


def _java_cause(spark, exc) -> tuple[str, str, bool] | None:
    """(class, message, is an IllegalArgumentException) of the JVM exception behind `exc`, or None.

    py4j raises Py4JJavaError; PySpark, once its handler is installed, converts it (keeping the JVM exception as
    `_origin` for the classes it knows, only "class: message" text for the others)."""
    from py4j.java_gateway import is_instance_of
    from py4j.protocol import Py4JJavaError

    origin = exc.java_exception if isinstance(exc, Py4JJavaError) else getattr(exc, "_origin", None)
    if origin is not None:
        bad_input = is_instance_of(spark.sparkContext._gateway, origin, "java.lang.IllegalArgumentException")
        return origin.getClass().getName(), origin.getMessage() or "", bad_input
    desc = getattr(exc, "_desc", None)
    if isinstance(desc, str) and desc:
        name, _, message = desc.partition(": ")
        return name, message.strip(), False
    return None


@contextlib.contextmanager
def _store_errors(spark, store_url: str):
    """Turns the store's own failures (unreachable Redis, a SQLite file it cannot open) into ServingError."""
    from tally.errors import ServingError, TallyError

    try:
        yield
    except TallyError:
        raise
    except Exception as exc:
        cause = _java_cause(spark, exc)
        if cause is not None and cause[0].endswith("OnlineStoreException"):
            raise ServingError(f"online store {store_url}: {cause[1]}",
                               hint="`tally config` shows which online store is configured, and where that came from") from None
        raise
