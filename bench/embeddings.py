"""One embedding snapshot: train merchant vectors by card (ALS, Word2Vec) on N charges and write them to Delta.

    .venv/bin/python bench/embeddings.py [--charges 1000000] [--days 30] [--runs 3] [--methods als,word2vec]
                                         [--dim 16] [--record]

The charges are `tally datagen --structure`'s (seed 7; only the charges table), generated once under
bench/out/ and reused. Each run is a fresh process with a fresh warehouse: one `store.backfill` of the last day
of an embedding view whose lookback covers the whole span, so one retrain sees every charge (the demo's
"1 M charges") and writes one `ds`. Timed: the backfill (read, train, collect, write one Delta commit), and
apart the training alone (`train_seconds`, what MLlib's fit and the collect take); `process` adds the session
start and imports, what a CLI call pays.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import time

T0 = time.perf_counter()  # a process's time counts from here: imports included

from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import OUT, machine, record, spread  # noqa: E402

START = dt.date(2026, 1, 1)
PARAMS = {"als": {"max_iter": 10}, "word2vec": {"max_iter": 1}}


def view(method: str, dim: int, days: int):
    import tally as tl

    return tl.EmbeddingView(
        name=f"bench_{method}", entity=tl.Entity("merchant", keys=["merchant_id"]),
        context=tl.Entity("card", keys=["card_id"]), source=tl.Source("charges", path="charges", timestamp="created"),
        method=method, dim=dim, lookback=f"{days}d", cadence="1d", seed=7, min_count=1, params=PARAMS[method])


def prepare(charges: int, days: int) -> Path:
    import tally as tl
    from tally import datagen

    data = OUT / f"embeddings_{charges}_{days}"
    marker = data / "_generated.json"
    params = json.dumps({"charges": charges, "days": days, "seed": 7, "structure": True})
    if marker.exists() and marker.read_text() == params:
        return data
    spark = tl.session(conf={"spark.driver.memory": "6g"})
    try:
        began = time.perf_counter()
        charges_df = datagen.generate(spark, charges, days, 7, str(START), structure=True)["charges"]
        charges_df.write.mode("overwrite").parquet(str(data / "charges"))
        print(f"generated {charges:,} charges in {time.perf_counter() - began:.0f} s", flush=True)
    finally:
        spark.stop()
    marker.write_text(params)
    return data


def one_run(data: Path, method: str, dim: int, days: int) -> dict:
    import tally as tl
    from tally import store

    warehouse = OUT / f"embeddings_wh_{method}"
    shutil.rmtree(warehouse, ignore_errors=True)
    spark = tl.session(warehouse=str(warehouse), conf={"spark.driver.memory": "6g"})
    try:
        last = START + dt.timedelta(days=days - 1)
        began = time.perf_counter()
        (step,) = store.backfill(spark, view(method, dim, days), last, last, warehouse=str(warehouse),
                                 data=str(data))
        backfill = time.perf_counter() - began
    finally:
        spark.stop()
    shutil.rmtree(warehouse, ignore_errors=True)
    return {"backfill": backfill, "train": step["train_seconds"], "process": time.perf_counter() - T0,
            "events": step["events"], "entities": step["entities"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--charges", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--methods", default="als,word2vec")
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--child", nargs=2, metavar=("DATA", "METHOD"), help=argparse.SUPPRESS)
    ap.add_argument("--record", action="store_true", help="write the table into bench/README.md")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(one_run(Path(args.child[0]), args.child[1], args.dim, args.days)))
        return 0

    data = prepare(args.charges, args.days)
    rows = []
    for method in args.methods.split(","):
        runs = []
        for _ in range(args.runs):
            out = subprocess.run([sys.executable, __file__, "--child", str(data), method, "--dim", str(args.dim),
                                  "--days", str(args.days)], check=True, capture_output=True, text=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"{method}: {json.dumps(runs[-1])}", flush=True)
        rows.append((method, runs))
    lines = ["| method, dim | events / entities | train | backfill (train + write) | process |", "|---|---|---|---|---|"]
    for method, runs in rows:
        lines.append(f"| {method}, {args.dim} | {runs[0]['events']:,} / {runs[0]['entities']:,} | "
                     f"{spread([r['train'] for r in runs], runs=False)} | {spread([r['backfill'] for r in runs], runs=False)} | "
                     f"{spread([r['process'] for r in runs], runs=False)} |")
    text = "\n".join(lines)
    print(text)
    if args.record:
        record(f"Embedding snapshot ({args.charges:,} charges)", (
            f"`.venv/bin/python bench/embeddings.py --charges {args.charges} --days {args.days} --runs {args.runs} "
            f"--record`: one retrain of merchant vectors by card over every charge, written as one `ds` to "
            f"Delta; each run a fresh process and warehouse; median (min–max) of {args.runs}. {machine()}, "
            f"measured {dt.datetime.now(dt.timezone.utc):%Y-%m-%d}.\n\n{text}\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
