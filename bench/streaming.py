"""Streaming freshness at a sustained rate: how long after a Delta commit its events are servable, with `tally stream`.

    .venv/bin/python bench/streaming.py [--rates 2000,5000,10000,20000,40000] [--seconds 40] [--runs 3]
                                        [--keys 10000] [--trigger 1s] [--store sqlite|redis] [--no-record]

Per rate and run, in one Spark session (local mode, this machine's cores shared by everything below):
- a Delta table of charges (its first commit is the stream's bootstrap) and a card view with count, sum and
  approx_distinct over 1 h, 24 h and lifetime windows (`--keys` cards);
- `tally.streaming.stream` in a thread at the given trigger (default 1 s, the CLI's default);
- an appender thread committing charges to the table at the target rate for `--seconds`: every `--every` seconds a
  commit of rate x (seconds since the last commit) charges stamped with the wall clock (generated in Spark), so the
  rate holds even when a commit takes longer than the interval (the achieved rate is reported);
- a reader thread polling the in-process fetcher (`tally.online.get`, what `tally serve` answers) every 50 ms for
  one probe card that gets exactly one charge per commit: when its lifetime count reaches k, commits 1..k are
  servable. Freshness of a commit = first poll that sees it - end of its Delta commit.

A rate is **sustained** when every commit became servable (within 30 s of the appender stopping), the appender
achieved >= 90 % of the target, and freshness does not grow over the run: the median of the last third of the
commits is within 1 s of the first third's. Figures per rate are medians over the runs (spread: min-max); the
batch phases (check, build, fold, wait, close, tile_table; see StreamJob: since the tile table's commit runs beside
the next batch, `wait` is that batch's wait for it, `close` the store's close alone and `tile_table` the commit's own
length, off the batch's path) are medians over all batches. Results go to
bench/README.md ("Streaming freshness").
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, record, table  # noqa: E402

PROBE = "probe"


def run(spark, rate: int, args, seed: int) -> dict:
    """One run at `rate` events/s: per-commit freshness, the achieved rate, the batches' reports."""
    import numpy as np
    import pandas as pd
    import tally as tl
    from tally import online, streaming, utc

    root = Path(tempfile.mkdtemp(prefix="tally-bench-stream-"))
    url = args.redis.url if args.redis else f"sqlite:{root / 'online' / 'tally.db'}"
    if args.redis:
        args.redis.command("FLUSHALL")
    path = str(root / "charges")
    source = tl.Source("charges", path=path, format="delta", timestamp="created")
    view = tl.FeatureView("card_fresh", entity=tl.Entity("card", keys=["card_id"]), source=source, online=True,
                          ttl="7d", aggregations=[
                              tl.Aggregation("count", windows=["1h", "24h", None]),
                              tl.Aggregation("sum", column="amount", windows=["1h", "24h"]),
                              tl.Aggregation("approx_distinct", column="merchant", windows=["24h"])])

    schema = "card_id string, created timestamp, amount double, merchant string"

    def append(n: int, salt: int) -> None:
        """n charges (the first for the probe card) within the last second, one Delta commit. Drawn in numpy and handed
        to Spark through Arrow, as an outside producer's rows: a plan built from literals (range, rand seeds, the
        time) would be compiled again at every commit, CPU no real producer spends on the stream's machine."""
        now_us = utc.micros(dt.datetime.now(dt.timezone.utc))
        rng = np.random.default_rng(seed * 1_000_003 + salt)
        n = max(n, 1)
        cards = np.char.add("c", (rng.random(n) * args.keys).astype(np.int64).astype(str)).astype(object)
        cards[0] = PROBE
        rows = pd.DataFrame({
            "card_id": cards,
            "created": pd.to_datetime(now_us - (rng.random(n) * 1e6).astype(np.int64), unit="us", utc=True),
            "amount": np.round(rng.random(n) * 500, 2),
            "merchant": np.char.add("m", (rng.random(n) * 50).astype(np.int64).astype(str)).astype(object)})
        spark.createDataFrame(rows, schema).coalesce(1).write.format("delta").mode("append").save(path)

    append(rate, 0)  # the bootstrap's commit
    batches: list[dict] = []
    stop_streaming = threading.Event()
    runner = threading.Thread(target=streaming.stream, args=(spark, [view]), daemon=True, kwargs=dict(
        warehouse=root / "wh", store_url=url, trigger=args.trigger, on_batch=batches.append, stop=stop_streaming))
    runner.start()
    while not streaming.checkpoint_dir(root / "wh", view).joinpath("bootstrap.json").is_file():
        time.sleep(0.1)

    commits: list[tuple[float, int]] = []  # (end of the Delta commit, events)
    seen: list[tuple[float, int]] = []  # (poll time, probe's lifetime count)
    stop_appending, stop_reading = threading.Event(), threading.Event()

    def appender() -> None:
        last = time.monotonic()
        while not stop_appending.is_set():
            time.sleep(max(0.0, args.every - (time.monotonic() - last)))
            now = time.monotonic()
            n = round(rate * (now - last))
            last = now
            append(n, len(commits) + 1)
            commits.append((time.monotonic(), n))

    def reader() -> None:
        while not stop_reading.is_set():
            got = online.get(spark, ["card_fresh:count_lifetime"], warehouse=root / "wh", store=url, rows=[
                {"entities": {"card_id": PROBE}, "at": dt.datetime.now(dt.timezone.utc)}])
            seen.append((time.monotonic(), got[0]["card_fresh:count_lifetime"] or 0))
            time.sleep(0.05)

    threads = [threading.Thread(target=appender, daemon=True), threading.Thread(target=reader, daemon=True)]
    for t in threads:
        t.start()
    started = time.monotonic()
    time.sleep(args.seconds)
    stop_appending.set()
    threads[0].join(120)
    appended = time.monotonic() - started
    deadline = time.monotonic() + 30
    while (not seen or seen[-1][1] < len(commits) + 1) and time.monotonic() < deadline:
        time.sleep(0.1)
    stop_reading.set()
    threads[1].join(30)
    stop_streaming.set()  # between two batches: a stop inside foreachBatch makes Spark print a StackOverflowError
    runner.join(120)

    fresh = []
    for k, (end, _) in enumerate(commits, start=2):  # the probe counts the bootstrap's charge as 1
        at = next((t for t, c in seen if c >= k), None)
        fresh.append(None if at is None else at - end)
    events = sum(n for _, n in commits)
    return {"fresh": fresh, "rate": events / appended, "commits": len(commits), "batches": batches}


def quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="2000,5000,10000,20000,40000")
    ap.add_argument("--seconds", type=float, default=40)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--every", type=float, default=0.5, help="seconds between the appender's commits")
    ap.add_argument("--trigger", default="1s")
    ap.add_argument("--store", choices=["sqlite", "redis"], default="sqlite")
    ap.add_argument("--no-record", action="store_true", help="print only; do not write bench/README.md")
    args = ap.parse_args()

    import tally as tl

    root = Path(tempfile.mkdtemp(prefix="tally-bench-stream-"))
    spark = tl.session(conf={"spark.sql.shuffle.partitions": "8", "spark.sql.execution.arrow.pyspark.enabled": "true"},
                       warehouse=str(root / "spark"))
    args.redis = None
    if args.store == "redis":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        import redis_server

        args.redis = redis_server.start()
    rows, sustained = [], None
    try:
        for rate in [int(r) for r in args.rates.split(",")]:
            runs = [run(spark, rate, args, seed) for seed in range(args.runs)]
            per_run = []
            for r in runs:
                ok = [f for f in r["fresh"] if f is not None]
                third = max(1, len(r["fresh"]) // 3)
                first, last = r["fresh"][:third], r["fresh"][-third:]
                bounded = (len(ok) == len(r["fresh"]) and r["rate"] >= 0.9 * rate
                           and statistics.median(last) <= statistics.median(first) + 1.0)
                per_run.append({"p50": quantile(ok, 0.5), "p90": quantile(ok, 0.9), "p99": quantile(ok, 0.99),
                                "max": max(ok), "rate": r["rate"], "bounded": bounded,
                                "drift": (statistics.median([f for f in last if f is not None] or [float("inf")])
                                          - statistics.median([f for f in first if f is not None] or [0.0]))})
                print(f"rate {rate}: achieved {r['rate']:.0f} ev/s, {r['commits']} commits, "
                      f"{len(r['batches'])} batches, p50 {per_run[-1]['p50']:.2f} s, p99 {per_run[-1]['p99']:.2f} s, "
                      f"max {per_run[-1]['max']:.2f} s, drift {per_run[-1]['drift']:+.2f} s, "
                      f"bounded {bounded}", flush=True)
            phases: dict[str, list[int]] = {}
            for r in runs:
                for b in r["batches"]:
                    for name, ms in b.get("phases_ms", {}).items():
                        phases.setdefault(name, []).append(ms)

            def med(key: str, fmt: str = "{:.2f}", per_run=per_run) -> str:
                xs = [p[key] for p in per_run]
                return fmt.format(statistics.median(xs)) + (
                    f" ({fmt.format(min(xs))}-{fmt.format(max(xs))})" if len(xs) > 1 else "")

            events = [b["events"] for r in runs for b in r["batches"] if b.get("events")]
            all_bounded = all(p["bounded"] for p in per_run)
            if all_bounded:
                sustained = rate
            rows.append([rate, med("rate", "{:.0f}"), int(statistics.median(events)) if events else "-",
                         med("p50"), med("p90"), med("p99"), med("max"), med("drift", "{:+.2f}"),
                         "yes" if all_bounded else f"no ({sum(p['bounded'] for p in per_run)}/{len(per_run)})",
                         " / ".join(f"{statistics.median(phases[k]):.0f}" for k in
                                    ("check", "build", "fold", "wait", "close", "tile_table") if k in phases)])
    finally:
        if args.redis:
            args.redis.stop()
        spark.stop()
    text = (f"`bench/streaming.py --rates {args.rates} --seconds {args.seconds:g} --runs {args.runs} --keys {args.keys} "
            f"--every {args.every:g} --trigger {args.trigger} --store {args.store}`: one `tally stream` in process at "
            f"a {args.trigger} trigger, an appender committing charges at each target rate for {args.seconds:g} s, a "
            f"reader polling the in-process fetcher; freshness = end of a Delta commit to the first fetch that sees "
            f"it (seconds). Medians of {args.runs} runs (min-max); drift = median of the last third of the commits "
            f"minus the first third's; batch phases are medians over all batches (ms: check / build / fold / "
            f"wait / close / tile_table, the last beside the next batch).\n\n"
            + table(["target ev/s", "achieved ev/s", "events / batch", "p50 s", "p90 s", "p99 s", "max s", "drift s",
                     "sustained", "batch phases ms"], rows)
            + f"\n\nHighest sustained rate: {sustained or 'none'} events/s. Machine: {machine()}; measured "
              f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC.")
    print(text)
    if not args.no_record:
        record("Streaming freshness", text)


if __name__ == "__main__":
    main()
