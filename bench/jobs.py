"""Where a warm training set's time goes: its Spark jobs and stages, from Spark's status store.

    .venv/bin/python bench/jobs.py userpath [--charges 2000000]     # bench/userpath.py's separate-spine run
    .venv/bin/python bench/jobs.py multiview [--charges 1000000]    # bench/multiview.py's 8 views

One process: a first run (not shown), then `--runs` profiled runs. Per run: wall time, jobs grouped by their call
site with their summed wall time (jobs Spark's adaptive execution starts for a query stage show as "stage (AQE)"),
and with `--stages` every stage's task time, CPU time, rows in and shuffle bytes.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "python"))


def _kind(name: str) -> str:
    if "withThreadLocalCaptured" in name:
        return "stage (AQE)"
    site, _, where = name.partition(" at ")
    return f"{site} at {where.rsplit('/', 1)[-1].split(':')[0]}"


def profile(spark, run, runs: int, stages: bool) -> None:
    sc = spark.sparkContext
    tracker, status = sc.statusTracker(), sc._jsc.sc().statusStore()
    run()
    for i in range(runs):
        before = set(tracker.getJobIdsForGroup(None) or [])
        t0 = time.perf_counter()
        run()
        wall = time.perf_counter() - t0
        jobs = sorted(set(tracker.getJobIdsForGroup(None)) - before)
        count, busy = collections.Counter(), collections.defaultdict(float)
        lines = []
        for j in jobs:
            job = status.job(j)
            seconds = (job.completionTime().get().getTime() - job.submissionTime().get().getTime()) / 1000
            count[_kind(job.name())] += 1
            busy[_kind(job.name())] += seconds
            ids = job.stageIds()
            for k in range(ids.size()):
                s = status.lastStageAttempt(ids.apply(k))
                if s.status().toString() == "COMPLETE":
                    lines.append(f"      stage {s.stageId()}: {s.numTasks()} tasks, task time {s.executorRunTime() / 1000:.1f} s, "
                                 f"cpu {s.executorCpuTime() / 1e9:.1f} s, rows in {s.inputRecords():,}, shuffle write "
                                 f"{s.shuffleWriteBytes() / 1e6:.0f} MB, read {s.shuffleReadBytes() / 1e6:.0f} MB "
                                 f"({_kind(s.name())})")
        print(f"run {i + 1}: {wall:.1f} s, {len(jobs)} jobs, {sum(busy.values()):.1f} s inside jobs")
        for kind, n in count.most_common():
            print(f"  {n:3d} jobs {busy[kind]:6.1f} s  {kind}")
        if stages:
            print("\n".join(lines))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("case", choices=["userpath", "multiview"])
    ap.add_argument("--charges", type=int)
    ap.add_argument("--days", type=int, default=90, help="multiview: days of data")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--stages", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    if args.case == "userpath":
        import engine
        import userpath

        data = engine.generate(args.charges or 2_000_000)
        spine = userpath.spine_file(data)
        spark = userpath.session()
        with_max = engine.tally_has_max(spark)
        run = lambda: userpath.run_tally(spark, data, spine, engine.OUT / "profile_userpath.parquet", with_max)  # noqa: E731
    else:
        import multiview
        import tally as tl

        data, warehouse = multiview.prepare(args.charges or 1_000_000, args.days)
        spark = tl.session(warehouse=str(warehouse), conf={"spark.driver.memory": "6g"})
        run = lambda: multiview.build_once(spark, data, warehouse)  # noqa: E731
    try:
        profile(spark, run, args.runs, args.stages)
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
