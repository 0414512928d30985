"""Stream micro-batches back to back, without Spark's streaming query: per-batch phases and JVM CPU, for A/B runs.

    TALLY_JAR=... .venv/bin/python bench/stream_phases.py [--label new] [--events 31600] [--batches 8] [--keys 10000]

One Spark session; a Delta source whose first commit is materialized (the stream's bootstrap), then `--batches`
batches of `--events` charges (two parquet files each, written before the clock starts) run one after the other as
`foreachBatch` runs them (`streaming.fold_batch`: the contract, then `kernels.stream_batch` into a SQLite store and a
Delta tile table; with an older Python package, `streaming.check_batch` then `kernels.stream_batch`). The view is
bench/streaming.py's (count, sum, approx_distinct over 1 h, 24 h, lifetime). Prints each batch's phases (ms), its
wall time and the JVM's CPU seconds, then medians over the batches after the first two (warm-up), and the wall and
CPU per batch over the whole loop (commits still running after a batch included: `kernels.stream_flush` ends the loop
when the JAR has it).

Run it with the old JAR and the new one in turn (TALLY_JAR), interleaved, on a loaded machine: CPU and the phases on
the batch's path compare; freshness needs bench/streaming.py on a quiet one. Prints only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", default="run")
    ap.add_argument("--events", type=int, default=31_600)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--keys", type=int, default=10_000)
    args = ap.parse_args()

    import tally as tl
    from pyspark.sql import functions as F
    from tally import kernels, online, sources, streaming, utc

    root = Path(tempfile.mkdtemp(prefix="tally-bench-phases-"))
    spark = tl.session(conf={"spark.sql.shuffle.partitions": "8"}, warehouse=str(root / "spark"))
    pid = spark._jvm.java.lang.ProcessHandle.current().pid()

    def cpu() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    path = str(root / "charges")
    view = tl.FeatureView("card_fresh", entity=tl.Entity("card", keys=["card_id"]), online=True, ttl="7d",
                          source=tl.Source("charges", path=path, format="delta", timestamp="created"), aggregations=[
                              tl.Aggregation("count", windows=["1h", "24h", None]),
                              tl.Aggregation("sum", column="amount", windows=["1h", "24h"]),
                              tl.Aggregation("approx_distinct", column="merchant", windows=["24h"])])

    def charges(salt: int):
        now_us = utc.micros(dt.datetime.now(dt.timezone.utc))
        rnd = F.rand(salt)
        return spark.range(args.events).select(
            F.concat(F.lit("c"), (F.rand(salt + 1) * args.keys).cast("int").cast("string")).alias("card_id"),
            F.timestamp_micros(F.lit(now_us) - (rnd * 1e6).cast("long")).alias("created"),
            F.round(rnd * 500, 2).alias("amount"),
            F.concat(F.lit("m"), (F.rand(salt + 7) * 50).cast("int").cast("string")).alias("merchant"))

    try:
        charges(0).coalesce(1).write.format("delta").save(path)
        url = f"sqlite:{root / 'online' / 'tally.db'}"
        (root / "online").mkdir()
        floor = online.materialize(spark, [view], warehouse=root / "wh", store=url, versions={"charges": 0})[0]["from_us"]
        for b in range(args.batches):
            charges(b + 1).coalesce(2).write.parquet(str(root / f"batch{b}"))  # two files, as two source commits
        rows = []
        loop_start, loop_cpu = time.monotonic(), cpu()
        for b in range(args.batches):
            batch = sources.shape(spark.read.parquet(str(root / f"batch{b}")), view.source)
            c0, t0 = cpu(), time.monotonic()
            if hasattr(streaming, "fold_batch"):  # the contract counted in StreamJob's read of the batch
                r = streaming.fold_batch(spark, batch, view, url, str(root / "tiles"), "card_fresh:v1:bench", b, 1 << 40,
                                         floor)
            else:  # older: the contract's own job first
                streaming.check_batch(batch, view, b)
                t1 = time.monotonic()
                r = kernels.stream_batch(spark, batch, view, url, str(root / "tiles"), "card_fresh:v1:bench", b,
                                         1 << 40, floor)
                r["phases_ms"] = {"check": round((t1 - t0) * 1000), **r["phases_ms"]}
            rows.append({**r["phases_ms"],
                         "wall": round((time.monotonic() - t0) * 1000), "cpu_s": round(cpu() - c0, 2),
                         "tiles": r["tiles"]})
            print(args.label, b, rows[-1], flush=True)
        try:
            kernels.stream_flush(spark, str(root / "tiles"))
        except Exception as exc:  # an older JAR commits inside the batch and has no flush
            if "streamFlush" not in str(exc):
                raise
        wall, used = time.monotonic() - loop_start, cpu() - loop_cpu
        steady = rows[2:] or rows
        print(args.label, "medians", {k: statistics.median(r.get(k, 0) for r in steady) for k in rows[-1]})
        print(f"{args.label}: {wall / args.batches:.2f} s wall and {used / args.batches:.2f} s JVM CPU per batch "
              f"over the loop")
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
