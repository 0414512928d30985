"""`make bench`: every side-by-side benchmark in turn; each records its table in bench/README.md.

    .venv/bin/python bench/run.py [--quick]

--quick runs small sizes (a smoke run); the defaults are the sizes the issues name. The 50 M-charge load run is
separate: `.venv/bin/python bench/backfill.py --charges 50000000 --training-set`. The streaming benchmark prints
its table without recording it (its README section carries analysis a rewrite would drop): copy the figures in.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

FULL = [
    ["engine.py"],
    ["skew.py"],
    ["userpath.py", "--record"],
    ["asof.py"],
    ["asof.py", "--keys", "bigint"],
    ["kernels.py"],
    ["backfill.py"],
    ["serving.py"],
    ["streaming.py", "--rates", "2000,5000,10000,20000", "--seconds", "30", "--no-record"],
    ["multiview.py", "--record"],
    ["embeddings.py", "--record"],
]
QUICK = [
    ["engine.py", "--sizes", "200000"],
    ["skew.py", "--charges", "200000", "--repeat", "1"],
    ["userpath.py", "--charges", "200000", "--runs", "1"],
    ["asof.py", "--spine", "200000", "--cards", "10000", "--repeat", "1"],
    ["asof.py", "--spine", "200000", "--cards", "10000", "--repeat", "1", "--keys", "bigint"],
    ["kernels.py", "--rows", "1000000", "--keys", "10000", "--repeat", "1"],
    ["backfill.py", "--charges", "200000", "--days", "30"],
    ["serving.py", "--charges", "100000", "--seconds", "5", "--repeat", "1"],
    ["streaming.py", "--rates", "5000", "--seconds", "10", "--runs", "1", "--no-record"],
    ["multiview.py", "--charges", "200000", "--days", "30", "--runs", "1"],
]


def main() -> int:
    plan = QUICK if "--quick" in sys.argv else FULL
    failed = []
    for args in plan:
        print(f"== bench/{' '.join(args)}", flush=True)
        if subprocess.run([sys.executable, str(HERE / args[0]), *args[1:]]).returncode != 0:
            failed.append(args[0])
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
