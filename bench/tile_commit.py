"""The tile table's Delta commit alone: how its batch record changes the commit's time and Spark jobs.

    .venv/bin/python bench/tile_commit.py [--rows 20000] [--commits 13]

One Spark session; per variant a fresh Delta table with the tile table's columns, `--commits` appends of `--rows`
driver-local rows each (`coalesce(1)`, as StreamJob writes them), the variants interleaved commit by commit so that
they share the machine's load. Variants:
- `txn`: the batch recorded as Delta's idempotent-write transaction (`txnAppId`/`txnVersion`), checkpoint every 10;
- `tag`: the batch in the commit info (`userMetadata`), checkpoint every 10 (Delta's default);
- `tag_ci100`: the same with `delta.checkpointInterval` = 100, what StreamJob writes now.
Prints per variant the median and max seconds of the commits after the first, and the Spark jobs each ran.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

VARIANTS = ("txn", "tag", "tag_ci100")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--commits", type=int, default=13)
    args = ap.parse_args()

    import tally as tl
    from pyspark.sql import functions as F

    spark = tl.session(warehouse=tempfile.mkdtemp(prefix="tally-bench-commit-"))
    jobs = spark.sparkContext._jsc.sc().statusStore()
    rows = spark.createDataFrame([(f"k{i}", 3_600_000_000, 1_700_000_000_000_000 + i, bytes(60), 5, 0)
                                  for i in range(args.rows)],
                                 "key string, length_us long, start_us long, payload binary, stamp long, batch_id long")
    rows = rows.cache()
    rows.count()
    paths = {v: tempfile.mkdtemp(prefix=f"tally-bench-commit-{v}-") + "/t" for v in VARIANTS}
    took: dict[str, list[float]] = {v: [] for v in VARIANTS}
    ran: dict[str, list[int]] = {v: [] for v in VARIANTS}
    try:
        for batch in range(args.commits):
            for v in VARIANTS:
                w = rows.withColumn("batch_id", F.lit(batch).cast("long")).coalesce(1).write.format("delta").mode("append")
                if v == "txn":
                    w = w.option("txnAppId", "bench").option("txnVersion", batch)
                else:
                    w = w.option("userMetadata", f"bench batch {batch}")
                if v == "tag_ci100" and batch == 0:
                    w = w.option("delta.checkpointInterval", "100")
                before, start = jobs.jobsList(None).size(), time.monotonic()
                w.save(paths[v])
                took[v].append(time.monotonic() - start)
                ran[v].append(jobs.jobsList(None).size() - before)
    finally:
        spark.stop()
    for v in VARIANTS:
        xs = took[v][1:]
        print(f"{v:10s} median {statistics.median(xs):.2f} s, max {max(xs):.2f} s; Spark jobs per commit {ran[v]}")


if __name__ == "__main__":
    main()
