"""Multi-view training set: the demo's 8 views (47 features) onto its spine of every charge, written to Delta.

    .venv/bin/python bench/multiview.py [--charges 1000000] [--days 90] [--runs 3]

The data is `tally datagen`'s (seed 7), generated once under bench/out/ and reused; card_daily, the snapshot
view, is backfilled once before timing. Timed: `training.build` plus the Delta write, as `make demo` does it.
`warm` runs repeat in one process after a first run; `cold` runs are each a fresh process (what a CLI call
pays: session start, imports, the first plans), timed from process start to the written table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time

T0 = time.perf_counter()  # a cold run counts from here: imports included

from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from common import OUT, machine, record, spread  # noqa: E402


def prepare(charges: int, days: int) -> tuple[Path, Path]:
    import tally as tl
    from tally import demo, registry, store

    data, warehouse = OUT / f"multiview_{charges}_{days}", OUT / f"multiview_{charges}_{days}_wh"
    spark = tl.session(warehouse=str(warehouse), conf={"spark.driver.memory": "6g"})
    try:
        demo.ensure_data(spark, data, charges, days, 7, demo.Clock(print))
        views = demo.charge_views(registry.load(str(ROOT / "features")))
        end = demo.START + dt.timedelta(days=days - 1)
        for v in views.values():
            if v.accuracy == "snapshot":
                store.backfill(spark, v, demo.START, end, warehouse=str(warehouse), step_days=31, resume=True,
                               data=str(data))
    finally:
        spark.stop()
    return data, warehouse


def build_once(spark, data: Path, warehouse: Path) -> int:
    """One training set, built and written; returns its feature column count."""
    from tally import demo, registry, training

    views = demo.charge_views(registry.load(str(ROOT / "features")))
    spine = demo.fraud_spine(spark, str(data))
    out, _ = training.build(spark, spine, sorted(views.values(), key=lambda v: v.name), "created", views=views,
                            warehouse=str(warehouse), allow_missing=True, data=str(data))
    out.write.format("delta").mode("overwrite").save(str(warehouse / "training_set"))
    return len(out.columns) - len(spine.columns)


def one_process(data: Path, warehouse: Path, runs: int) -> list[float]:
    """The first run counted from process start, then `runs - 1` warm ones."""
    import tally as tl

    spark = tl.session(warehouse=str(warehouse), conf={"spark.driver.memory": "6g"})
    times = []
    try:
        for i in range(runs):
            t = T0 if i == 0 else time.perf_counter()
            n = build_once(spark, data, warehouse)
            times.append(time.perf_counter() - t)
            print(f"  run {i + 1}: {times[-1]:.1f} s ({n} feature columns)", flush=True)
    finally:
        spark.stop()
    return times


def shape() -> str:
    from tally import demo, registry

    views = demo.charge_views(registry.load(str(ROOT / "features"))).values()
    snapshot = sum(v.accuracy == "snapshot" for v in views)
    return (f"{len(views)} views ({sum(len(v.features) for v in views)} features; {len(views) - snapshot} temporal, "
            f"{snapshot} snapshot)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--charges", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--child", nargs=2, metavar=("DATA", "WAREHOUSE"), help=argparse.SUPPRESS)
    ap.add_argument("--record", action="store_true", help="write the table into bench/README.md")
    args = ap.parse_args()
    if args.child:
        times = one_process(Path(args.child[0]), Path(args.child[1]), args.runs)
        print(json.dumps(times))
        return 0

    data, warehouse = prepare(args.charges, args.days)
    child = [sys.executable, __file__, "--child", str(data), str(warehouse)]
    cold, warm = [], []
    for _ in range(args.runs):
        cold.append(json.loads(subprocess.run([*child, "--runs", "1"], check=True, capture_output=True,
                                              text=True).stdout.strip().splitlines()[-1])[0])
        print(f"cold run: {cold[-1]:.1f} s", flush=True)
    warm = json.loads(subprocess.run([*child, "--runs", str(args.runs + 1)], check=True, capture_output=True,
                                     text=True).stdout.strip().splitlines()[-1])[1:]
    print(f"cold {spread(cold)}; warm {spread(warm)}")
    if args.record:
        record("Multi-view training set", (
            f"`.venv/bin/python bench/multiview.py --charges {args.charges} --days {args.days} --runs {args.runs} "
            f"--record`: the demo's {shape()} onto its spine of "
            f"{args.charges:,} charges over {args.days} days, built and written to Delta. {machine()}, "
            f"measured {dt.datetime.now(dt.timezone.utc):%Y-%m-%d}.\n\n"
            f"| run | time |\n|---|---|\n| cold: a fresh process, from its start | {spread(cold)} |\n"
            f"| warm: the same process after a first run | {spread(warm)} |\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
