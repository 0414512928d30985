"""Call after call in one session, as `tally driver` runs them: the demo's 8 backfills over small data, round after
round, with Spark's code cache at a given size.

    .venv/bin/python bench/calls.py [--charges 3000 --days 14 --rounds 4] --code-cache 100|1000

Per round: wall time, the JVM's CPU time (from /proc) and the classes of generated code it compiled. Run it once per
cache size, alternating, to compare (bench/README.md, "Call after call").
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--charges", type=int, default=3000)
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--code-cache", type=int, required=True, help="spark.sql.codegen.cache.maxEntries")
    args = ap.parse_args()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

    import tally as tl
    from tally import demo, kernels, registry, store

    root = OUT / f"calls_{args.charges}_{args.days}"
    spark = tl.session("local[2]", conf={"spark.sql.codegen.cache.maxEntries": str(args.code_cache)},
                       warehouse=str(root / "warehouse"))
    try:
        demo.ensure_data(spark, root / "data", args.charges, args.days, 7, demo.Clock(print))
        views = sorted(demo.charge_views(registry.load(str(ROOT / "features"))).values(), key=lambda v: v.name)
        end = demo.START + dt.timedelta(days=args.days - 1)
        pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()

        def cpu_s() -> float:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        for r in range(args.rounds):
            c0, n0, t0 = cpu_s(), kernels.compiled_classes(spark), time.perf_counter()
            for v in views:
                store.backfill(spark, v, demo.START, end, warehouse=str(root / "warehouse"), step_days=31,
                               data=str(root / "data"))
            print(f"code cache {args.code_cache}, round {r + 1}: {time.perf_counter() - t0:.1f} s, JVM CPU "
                  f"{cpu_s() - c0:.1f} s, {kernels.compiled_classes(spark) - n0} classes compiled", flush=True)
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
