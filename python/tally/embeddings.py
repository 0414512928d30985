"""Embedding views: train with Spark MLlib, align across retrains, store as a snapshot view's table, find neighbours.

The table of an `EmbeddingView` has the layout of a snapshot view's (`store.table_path`, partitioned by `ds`):
the entity key, `ds`, `snapshot_ts` = ds + 1 00:00 UTC, `vector` array<float>, `trained_ds` and `_computed_at`,
one row per entity per day. So `training_set` joins it with the same as-of kernel as any snapshot view: a spine
row on day D reads ds = D - 1, and no new join code exists.

A backfill of days [start, end] (each a `ds`):
1. Retrain days: every day g with (g - 1970-01-01) % cadence == 0 whose step [g, g + cadence) meets [start, end]
   (anchored at the epoch, so the range backfilled never moves the schedule).
2. Retrain g sees exactly the events known before its cutoff g + 1 00:00 UTC: cutoff - lookback <= ts < cutoff,
   and available_at < cutoff when the source has one. Nothing later can reach it.
3. Train (`_train_als`, `_train_word2vec`) on those events, sorted and in one partition, with the view's seed, so a
   rerun gives bit-identical vectors (MLlib's results depend on the input's order and partitioning).
4. Collect the vectors to the driver and rotate them onto the previous retrain's (this run's, else the table's row
   of ds = g - 1) by orthogonal Procrustes (`tally.procrustes`); the residual goes into the commit and the result.
5. Write the vectors for every ds of the step within [start, end] as one Delta commit replacing that ds range,
   with the method, parameters, seed, training window, row counts and alignment in its metadata.

An entity without events in the lookback (or fewer than min_count) has no row: its vector is null (cold start).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import numpy as np

from tally import procrustes, registry, store, utc
from tally.definitions import EmbeddingView
from tally.errors import DataError, UsageError

EPOCH = dt.date(1970, 1, 1)


def is_embedding(view) -> bool:
    return getattr(view, "kind", None) == "embedding"


def retrain_days(view: EmbeddingView, start: dt.date, end: dt.date) -> list[tuple[dt.date, dt.date, dt.date]]:
    """(retrain day g, first ds written, last ds written) for each cadence step meeting [start, end] (step 1)."""
    if end < start:
        raise UsageError(f"backfill range is empty: --end {end} is before --start {start}")
    c = view.cadence_days
    g = start - dt.timedelta(days=(start - EPOCH).days % c)
    out = []
    while g <= end:
        out.append((g, max(g, start), min(g + dt.timedelta(days=c - 1), end)))
        g += dt.timedelta(days=c)
    return out


def training_events(view: EmbeddingView, events, cutoff: dt.datetime):
    """The events retrain `cutoff` may see (step 2)."""
    from pyspark.sql import functions as F

    lo = cutoff - dt.timedelta(microseconds=view.lookback_us)
    ts = F.col(view.source.timestamp)
    known = (ts >= utc.lit(lo)) & (ts < utc.lit(cutoff))
    if view.source.available_at:
        known &= F.col(view.source.available_at) < utc.lit(cutoff)
    return events.where(known).select(view.key, view.context.keys[0], view.source.timestamp)


def _index(df, column: str, name: str):
    """Dense 1-based integer ids for `column`'s values, in sorted order (deterministic)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    return df.select(column).distinct().select(column, F.dense_rank().over(Window.orderBy(column)).alias(name))


def _train_als(view: EmbeddingView, events):
    """Implicit-feedback ALS on the entity x context counts; the entity's factors are its vectors."""
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import functions as F

    key, ctx, p = view.key, view.context.keys[0], view.params
    counts = events.groupBy(key, ctx).agg(F.count(F.lit(1)).cast("float").alias("n"))
    if view.min_count > 1:
        keep = counts.groupBy(key).agg(F.sum("n").alias("_t")).where(F.col("_t") >= view.min_count).select(key)
        counts = counts.join(keep, key)
    entities, contexts = _index(counts, key, "_u"), _index(counts, ctx, "_i")
    ratings = (counts.join(entities, key).join(contexts, ctx).select("_u", "_i", "n")
               .orderBy("_u", "_i").coalesce(1))
    # one block each: ALS sums each normal equation in the order ratings arrive in a block, which across several
    # blocks depends on shuffle fetch order; one block keeps reruns bit-identical (docs/embeddings.md, Limits)
    als = ALS(rank=view.dim, maxIter=int(p["max_iter"]), regParam=float(p["reg_param"]), alpha=float(p["alpha"]),
              implicitPrefs=True, seed=view.seed, userCol="_u", itemCol="_i", ratingCol="n", numUserBlocks=1,
              numItemBlocks=1)
    model = als.fit(ratings)
    return model.userFactors.join(entities, model.userFactors["id"] == entities["_u"]).select(
        key, F.col("features").alias("vector"))


def _train_word2vec(view: EmbeddingView, events):
    """Word2Vec over each context's time-ordered sequence of entity ids (ties by id)."""
    from pyspark.ml.feature import Word2Vec
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    key, ctx, ts, p = view.key, view.context.keys[0], view.source.timestamp, view.params
    key_type = events.schema[key].dataType
    seqs = (events.groupBy(ctx)
            .agg(F.sort_array(F.collect_list(F.struct(F.col(ts), F.col(key).cast("string").alias("w")))).alias("s"))
            .select(ctx, F.col("s").getField("w").alias("words"))
            .orderBy(ctx).coalesce(1))
    w2v = Word2Vec(vectorSize=view.dim, minCount=view.min_count, seed=view.seed, maxIter=int(p["max_iter"]),
                   windowSize=int(p["window_size"]), stepSize=float(p["step_size"]), numPartitions=1,
                   inputCol="words", outputCol="_o")
    vectors = w2v.fit(seqs).getVectors()
    return vectors.select(F.col("word").cast(key_type).alias(key), vector_to_array("vector", "float32").alias("vector"))


TRAINERS = {"als": _train_als, "word2vec": _train_word2vec}


def train(view: EmbeddingView, events) -> tuple[list, np.ndarray]:
    """(entity keys in sorted order, n x dim float32 vectors) trained on `events` (step 3)."""
    rows = TRAINERS[view.method](view, events).orderBy(view.key).collect()
    keys = [r[0] for r in rows]
    matrix = np.array([r[1] for r in rows], dtype=np.float32).reshape(len(rows), view.dim)
    return keys, matrix


def aligned(keys: list, matrix: np.ndarray, previous: dict | None) -> tuple[np.ndarray, procrustes.Alignment | None]:
    """`matrix` rotated onto `previous` (key -> vector) on the shared keys (step 4); unrotated without enough."""
    if not previous:
        return matrix, None
    shared = [i for i, k in enumerate(keys) if k in previous]
    if len(shared) < 2:
        return matrix, None
    fit = procrustes.align(matrix[shared], np.array([previous[keys[i]] for i in shared], dtype=np.float32))
    return (matrix.astype(np.float64) @ fit.rotation).astype(np.float32), fit


def _frame(spark, view: EmbeddingView, key_type, keys, matrix, trained: dt.date, first: dt.date, last: dt.date):
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    schema = T.StructType([T.StructField(view.key, key_type, False),
                           T.StructField("vector", T.ArrayType(T.FloatType(), False), False)])
    vectors = spark.createDataFrame([(k, [float(x) for x in row]) for k, row in zip(keys, matrix)], schema)
    days = spark.range(1).select(F.explode(F.sequence(F.lit(first), F.lit(last))).alias("ds"))
    return vectors.crossJoin(days).select(
        view.key, "ds", utc.day_start(F.col("ds"), 1).alias("snapshot_ts"), "vector",
        F.lit(trained).alias("trained_ds"), F.current_timestamp().alias("_computed_at"))


def stored_vectors(spark, path: Path, view: EmbeddingView, ds: dt.date, *, version: int | None = None) -> dict | None:
    """key -> vector of the table's row of `ds` (None when the table does not cover that day)."""
    if str(ds) not in store.covered_days(spark, path, version=version):
        return None
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    rows = reader.load(str(path)).where(f"ds = '{ds}'").select(view.key, "vector").collect()
    return {r[0]: np.array(r[1], dtype=np.float32) for r in rows}


def backfill(spark, view: EmbeddingView, start: dt.date, end: dt.date, *, warehouse, resume: bool = False,
             data=None, on_chunk=None, **_ignored) -> list[dict]:
    """Backfill days [start, end] of an embedding view: one retrain and one Delta commit per cadence step (see the
    module's steps). Returns one record per step: its days, status, rows, Delta version and what it trained on."""
    from tally import __version__

    path = store.table_path(warehouse, view.name, view.version)
    registry.require_unchanged(registry.plan_view(view, store.stored_versions(spark, warehouse, view.name)))
    steps = retrain_days(view, start, end)
    done = store.covered_days(spark, path) if resume else set()
    todo = [s for s in steps if not store._chunk_days(store.Chunk(s[1], s[2])) <= done]
    results, previous = [], None
    if todo:  # one read and one contract check over every event any retrain will see
        first_cut, last_cut = utc.midnight(todo[0][0] + dt.timedelta(days=1)), utc.midnight(todo[-1][0] + dt.timedelta(days=1))
        lo = first_cut - dt.timedelta(microseconds=view.lookback_us)
        events, _ = store.checked_source(spark, view, lo, last_cut, warehouse=warehouse, data=data)
        key_type = events.schema[view.key].dataType
    for g, first, last in steps:
        chunk = store.Chunk(first, last)
        if (g, first, last) not in todo:
            results.append({"chunk": str(chunk), "status": "skipped"})
            previous = None
            if on_chunk:
                on_chunk(results[-1])
            continue
        cutoff = utc.midnight(g + dt.timedelta(days=1))
        window = training_events(view, events, cutoff)
        n_events = window.count()
        began = time.perf_counter()
        keys, matrix = train(view, window) if n_events else ([], np.zeros((0, view.dim), np.float32))
        trained_s = time.perf_counter() - began
        if previous is None:  # the chain continues from the table's previous step when this run did not compute it
            previous = stored_vectors(spark, path, view, g - dt.timedelta(days=1))
        matrix, fit = aligned(keys, matrix, previous)
        info = {"method": view.method, "dim": view.dim, "seed": view.seed, "min_count": view.min_count,
                "params": dict(view.params), "retrain_ds": str(g), "cutoff": utc.instant(cutoff).isoformat(),
                "training_window": [(cutoff - dt.timedelta(microseconds=view.lookback_us)).isoformat(),
                                    cutoff.isoformat()],
                "events": n_events, "entities": len(keys), "train_seconds": round(trained_s, 3),
                "alignment": None if fit is None else {"previous_ds": str(g - dt.timedelta(days=1)),
                                                       "shared": fit.shared, "residual": fit.residual,
                                                       "raw_residual": fit.raw_residual}}
        meta = {"tally": {"view": view.name, "version": view.version, "fingerprint": view.fingerprint,
                          "range": [str(first), str(last)], "tally_version": __version__, "embedding": info}}
        frame = _frame(spark, view, key_type, keys, matrix, g, first, last)
        existed = store.is_table(path)
        (frame.write.format("delta").mode("overwrite").partitionBy("ds")
         .option("replaceWhere", f"ds >= '{first}' AND ds <= '{last}'")
         .option("userMetadata", json.dumps(meta, sort_keys=True, separators=(",", ":")))
         .save(str(path)))
        if existed and not keys:  # Delta commits nothing for an empty write: record the step's days anyway
            store.record_empty_chunk(spark, path, meta, chunk)
        last_commit = store.commits(spark, path)[-1]
        previous = dict(zip(keys, matrix))
        results.append({"chunk": str(chunk), "status": "written", "rows": last_commit["rows"],
                        "delta_version": last_commit["version"], "retrain_ds": str(g), "events": n_events,
                        "entities": len(keys), "train_seconds": round(trained_s, 3),
                        "residual": None if fit is None else fit.residual})
        if on_chunk:
            on_chunk(results[-1])
    return results


def vectors_at(spark, view: EmbeddingView, at: dt.date, *, warehouse) -> dict:
    """key -> vector that a spine row on day `at` reads (the row of ds = at - 1)."""
    if not is_embedding(view):
        raise UsageError(f"view '{view.name}' is not an embedding view",
                         hint="`tally similar` needs a tl.EmbeddingView")
    path = store.table_path(warehouse, view.name, view.version)
    if not store.is_table(path):
        store.read_features(spark, view, warehouse=warehouse)  # raises naming the view and the backfill to run
    ds = at - dt.timedelta(days=1)
    found = stored_vectors(spark, path, view, ds)
    if found is None:
        raise DataError(f"embedding view '{view.name}' v{view.version} has no snapshot for {at} (row ds = {ds})",
                        hint=f"backfill it: tally backfill {view.name} --start {ds} --end {ds}")
    return found


def similar(spark, view: EmbeddingView, entity_id, *, at: dt.date, k: int = 10, warehouse) -> list[tuple]:
    """The `k` entities nearest to `entity_id` by cosine, in the vectors a spine row on day `at` reads."""
    vectors = vectors_at(spark, view, at, warehouse=warehouse)
    by_text = {str(key): key for key in vectors}
    if str(entity_id) not in by_text:
        raise DataError(f"embedding view '{view.name}': {view.entity.name} '{entity_id}' has no vector at {at} "
                        f"(no events in the {view.lookback} lookback, or fewer than min_count={view.min_count}; "
                        f"{len(vectors)} {view.entity.name}s have one)",
                        hint="check the id, or pick a later date")
    key = by_text[str(entity_id)]
    keys = [x for x in vectors if x != key]
    if not keys:
        return []
    matrix = np.array([vectors[x] for x in keys], dtype=np.float64)
    query = np.asarray(vectors[key], dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=1) * (np.linalg.norm(query) or 1.0)
    cosine = matrix @ query / np.where(norms == 0, 1.0, norms)
    order = sorted(range(len(keys)), key=lambda i: (-cosine[i], str(keys[i])))[:k]
    return [(keys[i], float(cosine[i])) for i in order]


def affinity(spark, spine, view: EmbeddingView, timestamp: str, *, events, k: int = 5, warehouse,
             name: str | None = None):
    """The spine plus `name` (default `{view}__affinity_last_{k}`): the cosine between the vector of the row's
    entity and the mean vector of the entities of its context's last `k` events before the row's time
    (for merchants by card: does this merchant look like where the card usually shops?).

    Point in time: the history is the context's events with ts < t (and available_at < t) in `events` (the view's
    source rows); every vector is the one a spine row on t's day reads (ds = date(t) - 1). Null when the entity
    or every history entity lacks a vector, or the context has no earlier event. The cosine of the sum equals
    the cosine of the mean, so the sum is used.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    key, ctx, ts = view.key, view.context.keys[0], view.source.timestamp
    name = name or f"{view.name}__affinity_last_{k}"
    day = F.date_sub(utc.day_of(F.col("_t")), 1)
    queries = spine.select(F.col(ctx).alias("_c"), F.col(key).alias("_e"), F.col(timestamp).alias("_t")).distinct()
    history = events.select(F.col(ctx).alias("_c"), F.col(key).alias("_h"), F.col(ts).alias("_ht"),
                            *([F.col(view.source.available_at).alias("_ha")] if view.source.available_at else []))
    seen = F.col("_ht") < F.col("_t")
    if view.source.available_at:
        seen &= F.col("_ha") < F.col("_t")
    recent = (queries.join(history, "_c").where(seen)
              .withColumn("_r", F.row_number().over(Window.partitionBy("_c", "_e", "_t")
                                                    .orderBy(F.desc("_ht"), F.desc("_h"))))
              .where(F.col("_r") <= k))
    table = store.read_features(spark, view, warehouse=warehouse).select(
        F.col(key).alias("_k"), F.col("ds").alias("_ds"), "vector")
    summed = (recent.join(table, (F.col("_h") == F.col("_k")) & (F.col("_ds") == day))
              .groupBy("_c", "_e", "_t")
              .agg(F.aggregate(F.collect_list("vector"), F.array_repeat(F.lit(0.0), view.dim),
                               lambda acc, v: F.zip_with(acc, v, lambda a, b: a + b)).alias("_s")))
    current = queries.join(table, (F.col("_e") == F.col("_k")) & (F.col("_ds") == day)).select(
        "_c", "_e", "_t", F.col("vector").alias("_v"))

    def dot(a, b):
        return F.aggregate(F.zip_with(a, b, lambda x, y: x * y), F.lit(0.0), lambda s, x: s + x)

    cosine = dot(F.col("_v"), F.col("_s")) / (F.sqrt(dot(F.col("_v"), F.col("_v"))) * F.sqrt(dot(F.col("_s"), F.col("_s"))))
    scores = current.join(summed, ["_c", "_e", "_t"]).select("_c", "_e", "_t", cosine.alias(name))
    cond = ((spine[ctx] == scores["_c"]) & (spine[key] == scores["_e"]) & (spine[timestamp] == scores["_t"]))
    return spine.join(scores, cond, "left").drop("_c", "_e", "_t")
