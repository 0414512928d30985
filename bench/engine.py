"""Engine benchmark: tally's sweep vs Spark SQL and DuckDB window functions on the anchor workload.

N charges over 90 days, card ids zipf(1.6) over N/20 cards (one card holds ~44% of the rows), lognormal
amounts, timestamps on whole seconds (so a hot card has many ties). Per card and as of each charge, strictly
before it (left-closed): count, sum and max of amount over 1h, 24h, 7d and 30d.

    .venv/bin/python bench/engine.py --sizes 200000,2000000,8000000 [--skewed] [--runs 3]

Every engine writes its result to parquet under bench/out/ (git-ignored); the three results are joined on the
charge id and must agree (counts exactly, sums and max within 1e-6 relative). An engine whose estimated time
at a size exceeds --budget seconds (default 15 minutes) is skipped and the estimate printed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
WINDOWS = {"1h": 3_600, "24h": 86_400, "7d": 7 * 86_400, "30d": 30 * 86_400}  # seconds
DAY_US = 86_400_000_000
# Growth exponents used to extrapolate a skipped engine from its largest measured size: tally's sweep and
# DuckDB's segment trees are ~n log n; Spark's sliding RANGE frame re-aggregates its whole frame whenever the
# lower bound moves, so its cost is rows x frame size, and frame sizes grow with N (same 90 days): ~N^2.
GROWTH = {"tally": 1.1, "duckdb": 1.1, "spark_sql": 2.0}


# ---- workload ----

def generate(n: int, *, skewed: bool = False, hot_share: float = 0.5, seed: int = 42) -> Path:
    """Write the anchor workload (or its single-hot-card variant: card 0 with `hot_share` of the charges, the
    rest uniform over the others) to parquet once; reuse it afterwards."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    suffix = "" if not skewed else "_skewed" if hot_share == 0.5 else f"_hot{hot_share:g}"
    path = OUT / f"charges_{n}{suffix}.parquet"
    if path.exists():
        return path
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_cards = max(n // 20, 1)
    if skewed:
        cards = np.where(rng.random(n) < hot_share, 0, rng.integers(1, n_cards, n))
    else:
        cards = (rng.zipf(1.6, n) - 1) % n_cards
    start = 1_735_689_600_000_000  # 2025-01-01 00:00 UTC
    created = start + rng.integers(0, 90 * 86_400, n) * 1_000_000  # whole seconds: frequent ties
    amount = np.round(rng.lognormal(mean=3.5, sigma=1.2, size=n), 2)
    table = pa.table({
        "charge_id": pa.array(np.arange(n, dtype=np.int64)),
        "card_id": pa.array(cards.astype(np.int64)),
        "created": pa.array(created, type=pa.timestamp("us", tz="UTC")),
        "amount": pa.array(amount),
    })
    pq.write_table(table, path, row_group_size=1 << 20)
    return path


def feature_columns(with_max: bool) -> list[str]:
    cols = []
    for w in WINDOWS:
        cols += [f"count_{w}", f"sum_amount_{w}"] + ([f"max_amount_{w}"] if with_max else [])
    return cols


# ---- engines ----

def tally_view(data: Path, with_max: bool):
    import tally as tl

    card = tl.Entity("card", keys=["card_id"])
    charges = tl.Source("charges", path=str(data), format="parquet", timestamp="created")
    functions = [("count", None), ("sum", "amount")] + ([("max", "amount")] if with_max else [])
    return tl.FeatureView(name="bench", entity=card, source=charges, aggregations=[
        tl.Aggregation(fn, column=col, windows=list(WINDOWS)) for fn, col in functions])


def run_tally(spark, data: Path, out: Path, with_max: bool) -> None:
    import tally as tl

    view = tally_view(data, with_max)
    spine = spark.read.parquet(str(data))
    train = tl.training_set(spark, spine, [view], timestamp="created")
    renamed = train.select("charge_id", *[train[f"bench__{c}"].alias(c) for c in feature_columns(with_max)])
    renamed.write.mode("overwrite").parquet(str(out))


def _window_sql(ts: str, table: str, with_max: bool, coalesce_sum: bool) -> str:
    """One SELECT, a RANGE frame per window: events with t - w <= ts <= t - 1us, i.e. strictly before t."""
    selects, windows = [], []
    for name, seconds in WINDOWS.items():
        w = f"w_{name}"
        windows.append(f"{w} AS (PARTITION BY card_id ORDER BY {ts} "
                       f"RANGE BETWEEN {seconds * 1_000_000} PRECEDING AND 1 PRECEDING)")
        total = f"sum(amount) OVER {w}"
        selects += [f"count(*) OVER {w} AS count_{name}",
                    f"{'coalesce(' + total + ', 0.0)' if coalesce_sum else total} AS sum_amount_{name}"]
        if with_max:
            selects.append(f"max(amount) OVER {w} AS max_amount_{name}")
    return f"SELECT charge_id, {', '.join(selects)} FROM {table} WINDOW {', '.join(windows)}"


def run_spark_sql(spark, data: Path, out: Path, with_max: bool) -> None:
    charges = spark.read.parquet(str(data)).selectExpr("*", "unix_micros(created) AS ts_us")
    charges.createOrReplaceTempView("charges")
    result = spark.sql(_window_sql("ts_us", "charges", with_max, coalesce_sum=True))
    result.write.mode("overwrite").parquet(str(out))


def run_duckdb(data: Path, out: Path, with_max: bool) -> None:
    import duckdb

    con = duckdb.connect()
    con.execute("SET threads = 2")
    con.execute(f"CREATE VIEW charges AS SELECT *, epoch_us(created) AS ts_us "
                f"FROM read_parquet('{data}')")
    sql = _window_sql("ts_us", "charges", with_max, coalesce_sum=True)
    con.execute(f"COPY ({sql}) TO '{out}' (FORMAT parquet)")
    con.close()


def check(outputs: dict[str, Path], with_max: bool) -> list[str]:
    """Join every engine's output on charge_id; return a description of each disagreement (empty = agree)."""
    import duckdb

    names = list(outputs)
    if len(names) < 2:
        return []
    def files(p: Path) -> str:
        return f"{p}/**/*.parquet" if p.is_dir() else str(p)

    con = duckdb.connect()
    base = names[0]
    problems = []
    for other in names[1:]:
        conds = []
        for c in feature_columns(with_max):
            a, b = f"a.{c}", f"b.{c}"
            if c.startswith("count"):
                conds.append(f"{a} IS DISTINCT FROM {b}")
            else:
                conds.append(f"(({a} IS NULL) <> ({b} IS NULL) "
                             f"OR abs({a} - {b}) > 1e-6 * greatest(abs({a}), abs({b}), 1e-9))")
        fa, fb = files(outputs[base]), files(outputs[other])
        q = (f"SELECT count(*) FILTER (WHERE {' OR '.join(conds)}) AS bad, count(*) AS n, "
             f"(SELECT count(*) FROM read_parquet('{fa}')) AS n_a, "
             f"(SELECT count(*) FROM read_parquet('{fb}')) AS n_b "
             f"FROM read_parquet('{fa}') a JOIN read_parquet('{fb}') b USING (charge_id)")
        bad, n, n_a, n_b = con.execute(q).fetchone()
        if bad or n != n_a or n != n_b:
            problems.append(f"{base} vs {other}: {bad} of {n} rows differ (rows: {n_a} vs {n_b})")
    con.close()
    return problems


def tally_has_max(spark) -> bool:
    """max lands with the kernels branch; until then the benchmark runs count and sum only."""
    try:
        return bool(spark._jvm.tally.agg.Aggregators.functions().contains("max"))
    except Exception:
        return False


# ---- driver ----

def cpu_seconds(spark) -> float:
    """CPU time of the Spark JVM plus this process (DuckDB runs in-process): on a shared machine this is
    steadier than wall time."""
    import resource

    pid = spark._jvm.java.lang.ProcessHandle.current().pid()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    jvm = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    me = resource.getrusage(resource.RUSAGE_SELF)
    return jvm + me.ru_utime + me.ru_stime


def timed(fn, runs: int, spark) -> list[tuple[float, float]]:
    """(wall, cpu) seconds of each run."""
    out = []
    for _ in range(runs):
        c0, t0 = cpu_seconds(spark), time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0, cpu_seconds(spark) - c0))
    return out


def machine() -> str:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{os.cpu_count()} cores, {mem:.0f} GiB RAM, {platform.system()} {platform.machine()}, "
            f"Python {platform.python_version()}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="200000,2000000,8000000")
    ap.add_argument("--engines", default="tally,spark_sql,duckdb")
    ap.add_argument("--runs", type=int, default=3,
                    help="runs per engine and size (median); 1 when a run exceeds --one-run")
    ap.add_argument("--one-run", type=float, default=60.0, help="seconds above which a single run is enough")
    ap.add_argument("--budget", type=float, default=900.0,
                    help="skip an engine whose estimated run (seconds) exceeds this")
    ap.add_argument("--skewed", action="store_true", help="single hot card with half of the charges")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    engines = args.engines.split(",")

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    sys.path.insert(0, str(ROOT / "python"))
    import tally as tl

    spark = tl.session(conf={"spark.driver.memory": "8g", "spark.sql.shuffle.partitions": "8"})
    with_max = tally_has_max(spark)
    print(f"machine: {machine()}; Spark {spark.version} local[*]; shuffle partitions 8")
    print(f"features: count, sum{', max' if with_max else ''} x {', '.join(WINDOWS)} "
          f"({'max not in this tally build yet' if not with_max else 'all three'})", flush=True)

    if "tally" in engines:  # JIT and first-job costs out of the first timed run
        run_tally(spark, generate(min(sizes[0], 20_000)), OUT / "warmup.parquet", with_max)

    results = []
    measured: dict[str, list[tuple[int, float]]] = {}
    for n in sizes:
        data = generate(n, skewed=args.skewed)
        if "tally" in engines:
            from tally import kernels
            plan = kernels.hot_keys(spark, spark.read.parquet(str(data)), tally_view(data, with_max))
            print(f"  n={n:>9,} tally hot-key split (auto, on {spark.sparkContext.defaultParallelism} task slots): "
                  f"{plan or 'none'}", flush=True)
        row = {"n": n, "skewed": args.skewed, "times": {}, "cpu": {}, "estimated": {}}
        outputs = {}
        for engine in engines:
            if engine in measured:
                (n0, t0), growth = measured[engine][-1], GROWTH[engine]
                if len(measured[engine]) > 1:  # fitted from the last two sizes when it grows faster
                    (n1, t1) = measured[engine][-2]
                    growth = max(growth, math.log(t0 / t1) / math.log(n0 / n1))
                est = t0 * (n / n0) ** growth
                if est > args.budget:
                    row["estimated"][engine] = est
                    print(f"  n={n:>9,} {engine:<9} skipped: estimated {est:,.0f} s "
                          f"from {t0:,.1f} s at {n0:,} "
                          f"(x(n/n0)^{growth:.2f}), over the {args.budget:.0f} s budget", flush=True)
                    continue
            out = OUT / f"result_{engine}_{n}{'_skewed' if args.skewed else ''}.parquet"
            shutil.rmtree(out, ignore_errors=True) if out.is_dir() else out.unlink(missing_ok=True)
            run = {"tally": partial(run_tally, spark, data, out, with_max),
                   "spark_sql": partial(run_spark_sql, spark, data, out, with_max),
                   "duckdb": partial(run_duckdb, data, out, with_max)}[engine]
            runs = timed(run, 1, spark)
            if runs[0][0] < args.one_run and args.runs > 1:
                runs += timed(run, args.runs - 1, spark)
            t = statistics.median(w for w, _ in runs)
            cpu = statistics.median(c for _, c in runs)
            measured.setdefault(engine, []).append((n, t))
            row["times"][engine] = t
            row["cpu"][engine] = cpu
            outputs[engine] = out
            print(f"  n={n:>9,} {engine:<9} {t:8.2f} s wall, {cpu:8.2f} s cpu "
                  f"(runs: {', '.join(f'{w:.2f}/{c:.2f}' for w, c in runs)})", flush=True)
        problems = check(outputs, with_max)
        row["agree"] = not problems
        for p in problems:
            print(f"  DISAGREE n={n}: {p}", flush=True)
        if not problems and len(outputs) > 1:
            print(f"  n={n:>9,} results agree: {', '.join(outputs)}", flush=True)
        results.append(row)

    print()
    print(table(results, machine(), with_max))
    if args.json:
        report = {"machine": machine(), "with_max": with_max, "results": results}
        args.json.write_text(json.dumps(report, indent=2))
    spark.stop()
    return 0 if all(r["agree"] for r in results) else 1


def table(results: list[dict], machine_text: str, with_max: bool) -> str:
    """Markdown: wall seconds (median), CPU seconds, and how many times longer each engine took than tally."""
    def cell(row, engine):
        if engine in row["times"]:
            return f"{row['times'][engine]:.1f} s ({row['cpu'][engine]:.1f} s cpu)"
        if engine in row["estimated"]:
            return f"skipped, est. {row['estimated'][engine]:,.0f} s"
        return "-"

    def ratio(row, engine):
        t, other = row["times"].get("tally"), row["times"].get(engine) or row["estimated"].get(engine)
        if not t or not other:
            return "-"
        text = f"{other / t:,.1f}x"
        if engine in row["cpu"]:
            text += f" ({row['cpu'][engine] / row['cpu']['tally']:,.1f}x cpu)"
        return text + ("" if engine in row["times"] else " (est.)")

    lines = ["| rows | tally | Spark SQL windows | DuckDB windows | Spark SQL / tally | DuckDB / tally "
             "| agree |",
             "|---:|---:|---:|---:|---:|---:|:---:|"]
    for r in results:
        rows = f"{r['n']:,}{' (one hot card)' if r['skewed'] else ''}"
        cells = [cell(r, "tally"), cell(r, "spark_sql"), cell(r, "duckdb"),
                 ratio(r, "spark_sql"), ratio(r, "duckdb")]
        lines.append(f"| {rows} | {' | '.join(cells)} | {'yes' if r['agree'] else 'NO'} |")
    base = next((r for r in results if "tally" in r["times"]), None)
    if base:
        lines.append("")
        lines.append("tally scaling: " + ", ".join(
            f"{r['n'] / base['n']:.0f}x rows -> {r['times']['tally'] / base['times']['tally']:.1f}x wall, "
            f"{r['cpu']['tally'] / base['cpu']['tally']:.1f}x cpu"
            for r in results if r is not base and "tally" in r["times"]))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
