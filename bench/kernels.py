"""Benchmark: tally's sketch kernels against Spark's built-ins on the same generated data, in one session.

    .venv/bin/python bench/kernels.py [--rows N --keys K --repeat R]

Rows are (key, item, amount): `key` in [0, K), `item` drawn from ~rows/10 ids (so a key sees repeats),
`amount` log-normal like payment amounts. The data is generated once and cached in memory; each timing is a
full aggregation by key written to the `noop` sink (no collect), median of R runs. Errors are against exact
values: distinct counts as mean |estimate - exact| / exact over keys; percentiles as mean and max
|rank(estimate) - q|, the rank measured in the key's own values.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

import tally as tl  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

QS = (0.5, 0.99)


def timed(df, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        df.write.format("noop").mode("overwrite").save()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def distinct_error(data, est_expr: str) -> float:
    got = data.groupBy("key").agg(F.expr(est_expr).alias("est"), F.countDistinct("item").alias("exact"))
    return got.select(F.avg(F.abs(F.col("est") - F.col("exact")) / F.col("exact"))).first()[0]


def rank_error(data, est_expr: str) -> tuple[float, float]:
    est = data.groupBy("key").agg(F.expr(est_expr).alias("est"))
    est = est.select("key", *[F.col("est")[i].alias(f"q{i}") for i in range(len(QS))])
    joined = data.join(est, "key")
    ranks = joined.groupBy("key").agg(
        *[F.avg((F.col("amount") <= F.col(f"q{i}")).cast("double")).alias(f"r{i}") for i in range(len(QS))])
    errs = [F.abs(F.col(f"r{i}") - F.lit(q)) for i, q in enumerate(QS)]
    row = ranks.select(F.avg(sum(errs) / len(QS)).alias("mean"), F.max(F.greatest(*errs)).alias("max"))
    row = row.first()
    return row["mean"], row["max"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    spark = tl.session(conf={"spark.driver.memory": "6g", "spark.sql.shuffle.partitions": "8"})
    data = (
        spark.range(args.rows, numPartitions=8)
        .select(
            (F.xxhash64("id") % args.keys).cast("long").alias("key"),
            (F.abs(F.xxhash64(F.col("id") * 7)) % max(args.rows // 10, 1)).alias("item"),
            F.exp(F.randn(seed=1) * 1.2 + 3.0).alias("amount"),
        )
        .cache()
    )
    data.count()

    pct = ", ".join(map(str, QS))
    cases = [
        ("distinct count", "tally_approx_distinct(item)", "lg_k=12 (RSE 1.6 %)",
         "approx_count_distinct(item)", "rsd=0.05 (default)", distinct_error),
        ("distinct count", "tally_approx_distinct(item, 9)", "lg_k=9 (RSE 4.6 %)",
         "approx_count_distinct(item)", "rsd=0.05 (default)", distinct_error),
        ("percentiles 0.5, 0.99", f"tally_approx_percentile(amount, array({pct}))", "k=200",
         f"percentile_approx(amount, array({pct}))", "accuracy=10000 (default)", rank_error),
        ("percentiles 0.5, 0.99", f"tally_approx_percentile(amount, array({pct}), 200)", "k=200",
         f"percentile_approx(amount, array({pct}), 100)", "accuracy=100", rank_error),
    ]
    rows = []
    for what, tally_expr, tally_cfg, spark_expr, spark_cfg, error in cases:
        t_tally = timed(data.groupBy("key").agg(F.expr(tally_expr)), args.repeat)
        t_spark = timed(data.groupBy("key").agg(F.expr(spark_expr)), args.repeat)
        e_tally, e_spark = error(data, tally_expr), error(data, spark_expr)
        rows.append((what, tally_cfg, spark_cfg, t_tally, t_spark, e_tally, e_spark))
        print(rows[-1], flush=True)

    def fmt_err(e):
        return f"{e * 100:.2f} %" if isinstance(e, float) else f"{e[0] * 100:.2f} % / {e[1] * 100:.2f} %"

    print(f"\n{args.rows:,} rows, {args.keys:,} keys, median of {args.repeat}, "
          f"{spark.sparkContext.defaultParallelism} cores, Spark {spark.version}\n")
    print("| aggregation | tally (config) | Spark built-in (config) | tally s | Spark s | tally / Spark | "
          "tally error | Spark error |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for what, tc, sc, tt, ts, et, es in rows:
        errors = f"{fmt_err(et)} | {fmt_err(es)}"
        print(f"| {what} | {tc} | {sc} | {tt:.1f} | {ts:.1f} | {tt / ts:.2f} | {errors} |")
    print("\nerror: distinct = mean relative error over keys; percentiles = mean / max rank error over keys")
    spark.stop()


if __name__ == "__main__":
    main()
