"""As-of join benchmark: a 2 M-row spine against 9 M snapshot rows (100 k cards x 90 days), in one run.

(a) tally's sort-merge as-of kernel, (b) the Feast Spark offline-store shape (range join, ROW_NUMBER, re-join),
(c) the union + last(ignorenulls) forward-fill idiom, (d) DuckDB ASOF JOIN. All four must agree.

    .venv/bin/python bench/asof.py [--spine 2000000 --cards 100000 --days 90] [--keys string|bigint]
    .venv/bin/python bench/asof.py --keys string|bigint --pairs 5     # tally against the idiom, interleaved

`--pairs N` runs each of tally and the idiom once to warm up, then N pairs alternating which goes first, and prints
each pair's ratio and their median (no README record): on a machine whose speed drifts from minute to minute, the
back-to-back runs of the default mode can catch tally and the idiom in different states.

Card keys are strings ("card123", the default) or bigints (123): hashing and comparing string keys costs the
kernel more than the idiom's window sort, so both are measured; each kind records its own section.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, machine, record, table, timed  # noqa: E402

START = dt.datetime(2026, 1, 1)


def generate(spark, spine_rows: int, cards: int, days: int, keys: str = "string") -> tuple[Path, Path]:
    from pyspark.sql import functions as F

    def card(number):
        return F.concat(F.lit("card"), number.cast("string")) if keys == "string" else number.cast("long")

    folder = OUT / f"asof_{spine_rows}_{cards}_{days}{'' if keys == 'string' else '_' + keys}"
    snap, spine = folder / "snapshots", folder / "spine"
    if not (spine / "_SUCCESS").exists():
        start = F.lit(START)
        (spark.range(cards * days)
         .select(card(F.col("id") % cards).alias("card_id"),
                 (start + F.make_interval(days=(F.col("id") / cards).cast("int") + 1)).alias("snapshot_ts"),
                 (F.abs(F.xxhash64("id", F.lit(1))) % 1000).alias("count_7d"),
                 (F.abs(F.xxhash64("id", F.lit(2))) % 100000 / 100.0).alias("sum_amount_7d"))
         .write.mode("overwrite").parquet(str(snap)))
        seconds = days * 86400
        (spark.range(spine_rows)
         .select(F.col("id").alias("row_id"),
                 card(F.abs(F.xxhash64("id", F.lit(3))) % cards).alias("card_id"),
                 (start + F.make_interval(secs=(F.abs(F.xxhash64("id", F.lit(4))) % seconds).cast("decimal(18,6)")))
                 .alias("ts"))
         .write.mode("overwrite").parquet(str(spine)))
    return snap, spine


def tally_asof(spark, snap, spine):
    from tally import kernels

    out = kernels.as_of(spark, spark.read.parquet(str(spine)), "ts", spark.read.parquet(str(snap)), "snapshot_ts",
                        ["card_id"], ["count_7d", "sum_amount_7d"], "f__", 0)
    return out.selectExpr("row_id", "f__count_7d AS count_7d", "f__sum_amount_7d AS sum_amount_7d")


def feast_shape(spark, snap, spine):
    spark.read.parquet(str(snap)).createOrReplaceTempView("snap")
    spark.read.parquet(str(spine)).createOrReplaceTempView("spine")
    return spark.sql("""
        WITH joined AS (
          SELECT s.row_id, f.snapshot_ts, f.count_7d, f.sum_amount_7d
          FROM spine s JOIN snap f ON s.card_id = f.card_id AND f.snapshot_ts <= s.ts),
        ranked AS (
          SELECT *, ROW_NUMBER() OVER (PARTITION BY row_id ORDER BY snapshot_ts DESC) AS rn FROM joined),
        latest AS (SELECT row_id, count_7d, sum_amount_7d FROM ranked WHERE rn = 1)
        SELECT s.row_id, l.count_7d, l.sum_amount_7d FROM spine s LEFT JOIN latest l ON s.row_id = l.row_id""")


def union_ffill(spark, snap, spine):
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    f = spark.read.parquet(str(snap)).select("card_id", F.col("snapshot_ts").alias("t"), F.lit(0).alias("kind"),
                                             F.lit(None).cast("long").alias("row_id"), "count_7d", "sum_amount_7d")
    s = spark.read.parquet(str(spine)).select("card_id", F.col("ts").alias("t"), F.lit(1).alias("kind"), "row_id",
                                              F.lit(None).cast("long").alias("count_7d"),
                                              F.lit(None).cast("double").alias("sum_amount_7d"))
    w = Window.partitionBy("card_id").orderBy("t", "kind").rowsBetween(Window.unboundedPreceding, 0)
    both = f.unionByName(s)
    return (both.select("row_id", "kind", F.last("count_7d", ignorenulls=True).over(w).alias("count_7d"),
                        F.last("sum_amount_7d", ignorenulls=True).over(w).alias("sum_amount_7d"))
            .where("kind = 1").drop("kind"))


def duckdb_asof(snap, spine):
    import duckdb

    con = duckdb.connect()
    con.execute("SET threads TO 2")
    return con.execute(f"""
        SELECT count(*), sum(f.count_7d), round(sum(f.sum_amount_7d), 2), count(f.count_7d)
        FROM read_parquet('{spine}/*.parquet') s
        ASOF LEFT JOIN read_parquet('{snap}/*.parquet') f ON s.card_id = f.card_id AND f.snapshot_ts <= s.ts""").fetchone()


def checksum(df):
    from pyspark.sql import functions as F

    r = df.agg(F.count("*"), F.sum("count_7d"), F.round(F.sum("sum_amount_7d"), 2), F.count("count_7d")).first()
    return tuple(float(x) if x is not None else None for x in r)


def interleaved(spark, snap, spine, pairs: int) -> None:
    import statistics

    def run(make) -> float:
        t = time.perf_counter()
        make(spark, snap, spine).write.format("noop").mode("overwrite").save()
        return time.perf_counter() - t

    run(tally_asof), run(union_ffill)
    kernel, idiom = [], []
    for p in range(pairs):
        first, second = (tally_asof, union_ffill) if p % 2 == 0 else (union_ffill, tally_asof)
        times = {first: run(first), second: run(second)}
        kernel.append(times[tally_asof])
        idiom.append(times[union_ffill])
        print(f"pair {p + 1}: tally {kernel[-1]:.2f} s, idiom {idiom[-1]:.2f} s, idiom / tally {idiom[-1] / kernel[-1]:.2f}",
              flush=True)
    ratios = sorted(i / k for k, i in zip(kernel, idiom))
    print(f"tally {statistics.median(kernel):.2f} s ({min(kernel):.2f}-{max(kernel):.2f}), idiom "
          f"{statistics.median(idiom):.2f} s ({min(idiom):.2f}-{max(idiom):.2f}); idiom / tally per pair: median "
          f"{statistics.median(ratios):.2f} ({ratios[0]:.2f}-{ratios[-1]:.2f}), {pairs} pairs", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spine", type=int, default=2_000_000)
    parser.add_argument("--cards", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-feast", action="store_true")
    parser.add_argument("--keys", choices=["string", "bigint"], default="string")
    parser.add_argument("--pairs", type=int, default=0, help="interleave tally and the idiom N times; print only")
    args = parser.parse_args()

    import tally as tl

    spark = tl.session(conf={"spark.sql.shuffle.partitions": "8", "spark.driver.memory": "8g"})
    try:
        snap, spine = generate(spark, args.spine, args.cards, args.days, args.keys)
        if args.pairs:
            return interleaved(spark, snap, spine, args.pairs)
        runs = {}
        for name, make, repeat in (("tally as-of kernel", lambda: tally_asof(spark, snap, spine), args.repeat),
                                   ("union + last(ignorenulls)", lambda: union_ffill(spark, snap, spine), args.repeat),
                                   ("Feast shape (range join + ROW_NUMBER)", lambda: feast_shape(spark, snap, spine), 1)):
            if name.startswith("Feast") and args.skip_feast:
                continue
            med, times, _ = timed(lambda m=make: m().write.format("noop").mode("overwrite").save(), repeat)
            runs[name] = (med, times, checksum(make()))
            print(f"{name}: median {med:.1f}s over {[round(t, 1) for t in times]}", flush=True)
        med, times, duck = timed(lambda: duckdb_asof(snap, spine), args.repeat)
        runs["DuckDB ASOF JOIN"] = (med, times, tuple(float(x) for x in duck))
        print(f"DuckDB: median {med:.1f}s", flush=True)
        sums = {name: r[2] for name, r in runs.items()}
        agree = len(set(sums.values())) == 1
        base = runs["tally as-of kernel"][0]
        rows = [[name, f"{med:.2f}", f"{min(times):.2f}–{max(times):.2f}", f"{med / base:.1f}x", len(times)]
                for name, (med, times, _) in runs.items()]
        text = (f"`.venv/bin/python bench/asof.py --keys {args.keys}`: {args.spine:,} spine rows against "
                f"{args.cards * args.days:,} snapshot rows ({args.cards:,} cards x {args.days} days, {args.keys} keys), "
                f"one run on {machine()}; "
                f"times are medians of the runs shown, from parquet to a "
                f"no-op sink (DuckDB: to an aggregate). Results agree: {agree} (row count, sums of both feature "
                f"columns, matched rows: {sums['tally as-of kernel']}).\n\n"
                + table(["engine", "seconds", "spread", "relative to tally", "runs"], rows))
        print(text)
        if not agree:
            print("DISAGREEMENT:", sums)
        record("As-of join: snapshot features onto a spine" + ("" if args.keys == "string" else f" ({args.keys} keys)"), text)
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
