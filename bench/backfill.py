"""Backfill benchmark: 90 days of a card view and a merchant view over generated charges, with peak memory.

    .venv/bin/python bench/backfill.py [--charges 10000000 --days 90 --step-days 30]

Also the load run of issue 8 with `--charges 50000000 --training-set`: a backfill and a temporal training set on
50 M charges on one machine, reporting time and the JVM's peak resident memory.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, machine, record, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class PeakRss:
    """Samples the resident memory of the driver JVM (where local-mode executors run) and of this process."""

    def __init__(self, pids):
        self.pids, self.peak, self._stop = pids, dict.fromkeys(pids, 0), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for pid in self.pids:
                try:
                    with open(f"/proc/{pid}/status") as fh:
                        for line in fh:
                            if line.startswith("VmHWM:"):
                                self.peak[pid] = max(self.peak[pid], int(line.split()[1]) * 1024)
                except OSError:
                    pass
            self._stop.wait(0.5)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--charges", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--step-days", type=int, default=30)
    parser.add_argument("--views", default="card_velocity,merchant_risk")
    parser.add_argument("--training-set", action="store_true", help="also build a temporal training set")
    parser.add_argument("--driver-memory", default="12g")
    args = parser.parse_args()

    data = OUT / f"payments_{args.charges}_{args.days}"
    os.environ["TALLY_DATA"] = str(data)
    import tally as tl
    from tally import datagen, registry, store, training

    spark = tl.session(conf={"spark.driver.memory": args.driver_memory, "spark.sql.shuffle.partitions": "16"})
    jvm_pid = spark._jvm.java.lang.ProcessHandle.current().pid()
    rows_out = []
    try:
        start = dt.date(2026, 1, 1)
        if not (data / "charges" / "_SUCCESS").exists():
            t = time.time()
            datagen.write(spark, str(data), charges=args.charges, days=args.days, seed=7, start=str(start))
            rows_out.append(["generate charges", f"{time.time() - t:.0f}", f"{args.charges:,} charges", "-"])
        repo = registry.load(ROOT / "features")
        warehouse = OUT / f"warehouse_{args.charges}"
        shutil.rmtree(warehouse, ignore_errors=True)
        end = start + dt.timedelta(days=args.days - 1)
        with PeakRss([jvm_pid, os.getpid()]) as rss:
            for name in args.views.split(","):
                view = repo.views[name]
                t = time.time()
                results = store.backfill(spark, view, start, end, warehouse=warehouse, step_days=args.step_days)
                written = sum(r["rows"] or 0 for r in results)
                rows_out.append([f"backfill {name} ({len(view.features)} features, {args.days} days)",
                                 f"{time.time() - t:.0f}", f"{written:,} rows in {len(results)} commits",
                                 f"{rss.peak[jvm_pid] / 2**30:.1f} GiB"])
                print(rows_out[-1], flush=True)
            if args.training_set:
                view = repo.views["card_velocity"]
                spine = spark.read.parquet(str(data / "charges")).select("charge_id", "card_id", "created")
                t = time.time()
                out = training.training_set(spark, spine, [view], "created")
                target = warehouse / "training_set"
                out.write.mode("overwrite").parquet(str(target))
                n = spark.read.parquet(str(target)).count()
                rows_out.append([f"temporal training set, card_velocity ({len(view.features)} features)",
                                 f"{time.time() - t:.0f}", f"{n:,} rows", f"{rss.peak[jvm_pid] / 2**30:.1f} GiB"])
                print(rows_out[-1], flush=True)
        text = (f"{args.charges:,} generated charges over {args.days} days, one run on {machine()}, driver JVM with "
                f"-Xmx{args.driver_memory} (local mode: executors share it); peak = the JVM's peak resident memory.\n\n"
                + table(["step", "seconds", "output", "peak JVM RSS"], rows_out))
        print(text)
        record("Backfill" if not args.training_set else f"Load: {args.charges:,} charges", text)
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
