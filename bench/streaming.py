"""Streaming freshness: how long after a Delta commit its events are in the online store, with `tally stream`.

    .venv/bin/python bench/streaming.py [--commits 10] [--rows 1000] [--keys 200] [--trigger 1s] [--store sqlite|redis]

A Delta table of charges (the first commit is the bootstrap's), a card view with count / sum / approx_distinct over
1 h, 24 h and lifetime windows, and one `tally.streaming.stream` running in a thread of this process on the given
trigger. The main thread appends --commits commits of --rows charges stamped with the wall clock, one at a time,
each after the previous one is in the store, and measures commit-to-servable: from the end of the Delta commit to
the end of the micro-batch that wrote its tiles (watermark and batch id recorded). The trigger interval bounds
what waits for the next batch; the rest is the batch's own work. At the end, fetched lifetime counts are checked
against the rows appended. Results go to bench/README.md ("Streaming freshness").
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, record, table  # noqa: E402

SCHEMA = "card_id string, created timestamp, amount double, merchant string"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--commits", type=int, default=10)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--keys", type=int, default=200)
    ap.add_argument("--trigger", default="1s")
    ap.add_argument("--store", choices=["sqlite", "redis"], default="sqlite")
    args = ap.parse_args()

    import tally as tl
    from tally import online, streaming

    root = Path(tempfile.mkdtemp(prefix="tally-bench-stream-"))
    spark = tl.session(conf={"spark.sql.shuffle.partitions": "8"}, warehouse=str(root / "spark"))
    redis = None
    if args.store == "redis":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        import redis_server

        redis = redis_server.start()
    url = redis.url if redis else f"sqlite:{root / 'online' / 'tally.db'}"
    rng = random.Random(1)
    card = tl.Entity("card", keys=["card_id"])
    source = tl.Source("charges", path=str(root / "charges"), format="delta", timestamp="created")
    view = tl.FeatureView("card_fresh", entity=card, source=source, online=True, ttl="7d", aggregations=[
        tl.Aggregation("count", windows=["1h", "24h", None]), tl.Aggregation("sum", column="amount", windows=["1h", "24h"]),
        tl.Aggregation("approx_distinct", column="merchant", windows=["24h"])])

    def append(n: int) -> None:
        now = dt.datetime.now(dt.timezone.utc)
        rows = [(f"c{rng.randrange(args.keys)}", now - dt.timedelta(seconds=rng.uniform(0, 60)),
                 round(rng.uniform(1, 500), 2), f"m{rng.randrange(50)}") for _ in range(n)]
        spark.createDataFrame(rows, SCHEMA).coalesce(1).write.format("delta").mode("append").save(str(root / "charges"))

    append(args.rows)  # the bootstrap's commit
    batches: list[tuple[float, dict]] = []
    done = threading.Condition()

    def on_batch(r: dict) -> None:
        with done:
            batches.append((time.monotonic(), r))
            done.notify_all()

    runner = threading.Thread(target=streaming.stream, args=(spark, [view]), daemon=True, kwargs=dict(
        warehouse=root / "wh", store_url=url, trigger=args.trigger, max_batches=args.commits, on_batch=on_batch))
    runner.start()
    while not streaming.checkpoint_dir(root / "wh", view).joinpath("bootstrap.json").is_file():
        time.sleep(0.1)
    fresh, work = [], []
    try:
        for _ in range(args.commits):
            seen = len(batches)
            append(args.rows)
            committed = time.monotonic()
            with done:
                done.wait_for(lambda seen=seen: len(batches) > seen, timeout=120)
            if len(batches) == seen:
                raise SystemExit("no micro-batch within 120 s of a commit")
            fresh.append(batches[-1][0] - committed)
        runner.join(60)
        total = args.rows * (args.commits + 1)
        got = online.get(spark, ["card_fresh:count_lifetime"], rows=[
            {"entities": {"card_id": f"c{k}"}, "at": dt.datetime.now(dt.timezone.utc)} for k in range(args.keys)],
            warehouse=root / "wh", store=url)
        loaded = sum(r["card_fresh:count_lifetime"] or 0 for r in got)
        assert loaded == total, f"the store counts {loaded} charges, {total} were appended"
        work = [r["events"] for _, r in batches]
    finally:
        if redis:
            redis.stop()
        spark.stop()
    q = statistics.quantiles(fresh, n=10, method="inclusive")
    text = (f"`bench/streaming.py --commits {args.commits} --rows {args.rows} --keys {args.keys} --trigger {args.trigger} "
            f"--store {args.store}`: one `tally stream` in process; each commit's events servable after (seconds, "
            f"commit end to batch end):\n\n"
            + table(["store", "trigger", "commits", "events / batch", "median s", "p90 s", "max s"],
                    [[args.store, args.trigger, args.commits, int(statistics.median(work)) if work else "-",
                      f"{statistics.median(fresh):.2f}", f"{q[-1]:.2f}", f"{max(fresh):.2f}"]])
            + f"\n\nMachine: {machine()}; measured {dt.date.today()}.")
    print(text)
    record("Streaming freshness", text)


if __name__ == "__main__":
    main()
