"""Hot keys: the sweep with and without the hot-key split, on one card that holds most of the charges.

    .venv/bin/python bench/skew.py [--charges 2000000 --hot-share 0.8 --repeat 3]

N charges over 90 days, card 0 with `--hot-share` of them, the rest uniform over N/20 cards (the engine
benchmark's generator). Per card and as of each charge: count, sum and max of amount over 1 h and 24 h. The
same job runs with `spark.tally.sweep.split` off and auto (interleaved, median of the runs); for each, the
sweep stage's wall time and its longest task, read from Spark's status API. Both must give the same features.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, record, table  # noqa: E402
from engine import generate  # noqa: E402

WINDOWS = ["1h", "24h"]


def _api(spark, path: str):
    sc = spark.sparkContext
    return json.load(urllib.request.urlopen(f"{sc.uiWebUrl}/api/v1/applications/{sc.applicationId}/{path}"))


def _seconds(text: str) -> float:  # "2026-11-29T21:37:18.001GMT"
    return dt.datetime.strptime(text.replace("GMT", ""), "%Y-%m-%dT%H:%M:%S.%f").timestamp()


def sweep_stage(spark, before: set[int]) -> tuple[float, float, int]:
    """(stage seconds, longest task seconds, tasks) of the busiest stage since `before`: the sweep."""
    stages = [s for s in _api(spark, "stages?status=complete") if s["stageId"] not in before]
    sweep = max(stages, key=lambda s: s["executorRunTime"])
    tasks = _api(spark, f"stages/{sweep['stageId']}/{sweep['attemptId']}/taskList?length=10000")
    wall = _seconds(sweep["completionTime"]) - _seconds(sweep["submissionTime"])
    return wall, max(t["duration"] for t in tasks) / 1000, len(tasks)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--charges", type=int, default=2_000_000)
    parser.add_argument("--hot-share", type=float, default=0.8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import tally as tl
    from pyspark.sql import functions as F
    from tally import kernels

    spark = tl.session(conf={"spark.driver.memory": "8g", "spark.sql.shuffle.partitions": "8",
                             "spark.ui.enabled": "true", "spark.ui.port": "4090"})
    try:
        data = generate(args.charges, skewed=True, hot_share=args.hot_share)
        charges = spark.read.parquet(str(data))
        card = tl.Entity("card", keys=["card_id"])
        source = tl.Source("charges", path=str(data), format="parquet", timestamp="created")
        view = tl.FeatureView(name="skew", entity=card, source=source, aggregations=[
            tl.Aggregation(fn, column=col, windows=WINDOWS)
            for fn, col in (("count", None), ("sum", "amount"), ("max", "amount"))])
        features = [f"skew__{f.name}" for f in view.features]
        plan = kernels.hot_keys(spark, charges, view)
        print(f"hot keys (auto): {plan}", flush=True)

        def run(mode: str):
            spark.conf.set("spark.tally.sweep.split", mode)
            before = {s["stageId"] for s in _api(spark, "stages")}
            start = time.perf_counter()  # the split's sample job runs inside training_set: counted
            out = tl.training_set(spark, charges, [view], timestamp="created")
            sums = out.agg(*[F.sum(c).alias(c) for c in features]).first()
            return time.perf_counter() - start, sweep_stage(spark, before), [sums[c] for c in features]

        runs = {"off": [], "auto": []}
        for _ in range(args.repeat):
            for mode in runs:
                runs[mode].append(run(mode))
                print(mode, runs[mode][-1][:2], flush=True)
        first = runs["off"][0][2]  # counts exactly; sums of doubles to 1e-9 relative (summation order differs)
        agree = all(abs(a - b) <= 1e-9 * max(abs(a), abs(b), 1.0) for rs in runs.values() for r in rs
                    for a, b in zip(first, r[2]))
        if not agree:
            print("DISAGREE", {m: [r[2] for r in rs] for m, rs in runs.items()})
        rows = []
        for mode, rs in runs.items():
            wall = statistics.median(r[0] for r in rs)
            stage = statistics.median(r[1][0] for r in rs)
            longest = statistics.median(r[1][1] for r in rs)
            rows.append([f"split {mode}", f"{wall:.1f}", f"{stage:.1f}", f"{longest:.1f}", rs[0][1][2]])
        off, auto = (statistics.median(r[0] for r in runs[m]) for m in ("off", "auto"))
        text = (f"{args.charges:,} charges over 90 days, card 0 with {args.hot_share:.0%} of them, the rest uniform over "
                f"{args.charges // 20:,} cards; count, sum and max over {' and '.join(WINDOWS)} as of each charge; "
                f"one run on {machine()}, local[*], 8 shuffle partitions; medians of {args.repeat} interleaved runs "
                f"(job = features summed, so no write). Auto split plan: {plan}. Features agree: {agree}.\n\n"
                + table(["sweep", "job s", "sweep stage s", "longest task s", "tasks"], rows)
                + f"\n\nsplit auto / off: {auto / off:.2f}x the time.")
        print(text)
        record("Hot keys: the split", text)
    finally:
        spark.conf.unset("spark.tally.sweep.split")
        spark.stop()


if __name__ == "__main__":
    main()
