"""The engine as a user meets it: the spine is its own file, the result goes to parquet, the first call counts.

    .venv/bin/python bench/userpath.py [--charges 2000000] [--runs 3] [--record]

The charges are bench/engine.py's anchor workload (same generator, same 12 features: count, sum and max of
amount per card over 1h, 24h, 7d and 30d, strictly before each charge). The spine is a separate parquet file of
(charge_id, card_id, created) — the same rows, written apart, so tally cannot recognise it as its source and
takes the general path (a union of spine and events, the spine's columns carried through the sweep).

- **tally warm**: `tl.training_set` with that spine, written to parquet, in one process after a first run;
- **tally cold**: the same in a fresh Python process per run, timed from the process's start (imports, the JVM,
  the session, the first plans: what every `tally training-set` call pays);
- **the CLI**: `tally training-set` as a user types it, timed from outside: each call a process of its own, then
  each through a driver (`tally driver start` keeps a warm session for the project; the first call after its start
  apart from the later ones);
- **DuckDB**: the same windows over the charges, joined to the spine on charge_id, written to parquet.

Every result is checked against DuckDB's (bench/engine.py's `check`).
"""

from __future__ import annotations

import time

T0 = time.perf_counter()  # a cold run counts from here: imports included

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "python"))
from common import OUT, machine, record, spread  # noqa: E402


def spine_file(data: Path) -> Path:
    """The spine, written once beside the charges: their ids, keys and times, nothing else."""
    import pyarrow.parquet as pq

    path = data.with_name(data.stem + "_spine.parquet")
    if not path.exists():
        pq.write_table(pq.read_table(data, columns=["charge_id", "card_id", "created"]), path)
    return path


def run_tally(spark, data: Path, spine: Path, out: Path, with_max: bool) -> None:
    import engine
    import tally as tl

    view = engine.tally_view(data, with_max)
    train = tl.training_set(spark, spark.read.parquet(str(spine)), [view], timestamp="created")
    train.select("charge_id", *[train[f"bench__{c}"].alias(c) for c in engine.feature_columns(with_max)]) \
        .write.mode("overwrite").parquet(str(out))


def run_duckdb(data: Path, spine: Path, out: Path, with_max: bool) -> None:
    import duckdb
    import engine

    con = duckdb.connect()
    con.execute("SET threads = 2")
    con.execute(f"CREATE VIEW charges AS SELECT *, epoch_us(created) AS ts_us FROM read_parquet('{data}')")
    features = engine._window_sql("ts_us", "charges", with_max, coalesce_sum=True)
    con.execute(f"COPY (SELECT f.* FROM read_parquet('{spine}') s JOIN ({features}) f USING (charge_id)) "
                f"TO '{out}' (FORMAT parquet)")
    con.close()


def session():
    import tally as tl

    return tl.session(conf={"spark.driver.memory": "8g", "spark.sql.shuffle.partitions": "8"})


def child(data: Path, spine: Path, out: Path) -> None:
    """One cold run: a fresh process's first training set; prints seconds since the process started, in all and
    up to each phase (imports, a session, the result written)."""
    import engine
    import tally  # noqa: F401  (what a CLI call imports before its session)

    imported = time.perf_counter() - T0
    spark = session()
    try:
        started = time.perf_counter() - T0
        run_tally(spark, data, spine, out, engine.tally_has_max(spark))
        total = time.perf_counter() - T0
        print(json.dumps({"total": total, "imports": imported, "session": started - imported,
                          "training set": total - started}))
    finally:
        spark.stop()


PROJECT_FEATURES = """import tally as tl

card = tl.Entity("card", keys=["card_id"])
charges = tl.Source("charges", path={data!r}, format="parquet", timestamp="created")
bench = tl.FeatureView(name="bench", entity=card, source=charges, aggregations=[
    tl.Aggregation(fn, column=col, windows={windows!r}) for fn, col in {functions!r}])
"""


def run_cli(data: Path, spine: Path, out: Path, with_max: bool, runs: int) -> dict:
    """`tally training-set` of the bench view as a user types it, each call a fresh process timed from outside:
    `runs` calls on their own (TALLY_DRIVER=off), then `tally driver start` and `runs` + 1 calls through it (its
    log gives each call's time inside the driver). The last output is copied to `out`, renamed as `run_tally`
    names its columns."""
    import re

    import engine
    import pyarrow.parquet as pq

    project = OUT / "userpath_project"
    shutil.rmtree(project, ignore_errors=True)
    (project / "features").mkdir(parents=True)
    functions = [("count", None), ("sum", "amount")] + ([("max", "amount")] if with_max else [])
    (project / "features" / "bench.py").write_text(
        PROJECT_FEATURES.format(data=str(data), windows=list(engine.WINDOWS), functions=functions))
    (project / "tally.toml").write_text('warehouse = "warehouse"\nrepo = "features"\n[spark]\n'
                                        '"spark.driver.memory" = "8g"\n"spark.sql.shuffle.partitions" = "8"\n')
    tally = [str(Path(sys.executable).with_name("tally"))]
    result = project / "train.parquet"
    command = [*tally, "training-set", "--spine", str(spine), "--timestamp", "created", "--features", "bench",
               "--out", str(result)]

    def call(label: str, env: dict) -> float:
        t = time.perf_counter()
        done = subprocess.run(command, cwd=project, capture_output=True, text=True, env={**os.environ, **env})
        took = time.perf_counter() - t
        if done.returncode:
            raise RuntimeError(f"{label} failed:\n{done.stderr}")
        print(f"{label}: {took:.1f} s", flush=True)
        return took

    alone = [call("tally training-set, a process of its own", {"TALLY_DRIVER": "off"}) for _ in range(runs)]
    t = time.perf_counter()
    started = subprocess.run([*tally, "driver", "start"], cwd=project, check=True, capture_output=True, text=True)
    start_s = time.perf_counter() - t
    try:
        through = [call("tally training-set through the driver", {}) for _ in range(runs + 1)]
    finally:
        subprocess.run([*tally, "driver", "stop"], cwd=project, check=True, capture_output=True)
    log = Path(re.search(r"log (\S+);", started.stdout)[1]).read_text()
    inside = [float(s) for s in re.findall(r"tally training-set .*: exit 0 in ([0-9.]+) s", log)][-(runs + 1):]
    table = pq.read_table(result)
    pq.write_table(table.rename_columns([c.removeprefix("bench__") for c in table.column_names]), out)
    return {"alone": alone, "start": start_s, "through": through, "inside": inside}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--charges", type=int, default=2_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--record", action="store_true", help="write the table into bench/README.md")
    ap.add_argument("--child", nargs=3, metavar=("DATA", "SPINE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    if args.child:
        child(*map(Path, args.child))
        return 0
    import engine

    data = engine.generate(args.charges)
    spine = spine_file(data)
    outs = {name: OUT / f"userpath_{name}_{args.charges}.parquet" for name in ("tally", "tally_cold", "tally_driver", "duckdb")}
    for p in outs.values():
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)

    cold, phases = [], []
    for _ in range(args.runs):
        done = subprocess.run([sys.executable, __file__, "--child", str(data), str(spine), str(outs["tally_cold"])],
                              check=True, capture_output=True, text=True)
        phases.append(json.loads(done.stdout.strip().splitlines()[-1]))
        cold.append(phases[-1]["total"])
        print(f"tally cold: {cold[-1]:.1f} s ({', '.join(f'{k} {v:.1f} s' for k, v in phases[-1].items())})", flush=True)

    spark = session()
    try:
        with_max = engine.tally_has_max(spark)
        run_tally(spark, data, spine, outs["tally"], with_max)  # the first call: its costs belong to the cold rows
        warm = []
        for _ in range(args.runs):
            t = time.perf_counter()
            run_tally(spark, data, spine, outs["tally"], with_max)
            warm.append(time.perf_counter() - t)
            print(f"tally warm: {warm[-1]:.1f} s", flush=True)
    finally:
        spark.stop()
    cli = run_cli(data, spine, outs["tally_driver"], with_max, args.runs)
    duck = []
    for _ in range(args.runs):
        t = time.perf_counter()
        run_duckdb(data, spine, outs["duckdb"], with_max)
        duck.append(time.perf_counter() - t)
        print(f"duckdb: {duck[-1]:.1f} s", flush=True)
    problems = engine.check({"duckdb": outs["duckdb"], "tally": outs["tally"], "tally cold": outs["tally_cold"],
                             "tally training-set through the driver": outs["tally_driver"]}, with_max)
    d = statistics.median(duck)
    text = (f"`.venv/bin/python bench/userpath.py --charges {args.charges} --runs {args.runs}`: {args.charges:,} charges "
            f"(bench/engine.py's workload, {12 if with_max else 8} features), the spine a separate parquet file of "
            f"the same rows, results written to parquet; {machine()}. Results agree: "
            f"{'yes' if not problems else 'NO: ' + '; '.join(problems)}.\n\n"
            "| run | time | DuckDB / tally |\n|---|---|---|\n"
            f"| tally warm (one process, after a first call) | {spread(warm)} | {d / statistics.median(warm):.1f}x |\n"
            f"| tally cold (a fresh process, from its start) | {spread(cold)} | {d / statistics.median(cold):.1f}x |\n"
            f"| `tally training-set`, a process of its own (writes the manifest: hashes the spine and the output) "
            f"| {spread(cli['alone'])} | {d / statistics.median(cli['alone']):.1f}x |\n"
            f"| the same through a driver, first call after `tally driver start` ({cli['start']:.1f} s) "
            f"| {cli['through'][0]:.1f} s | {d / cli['through'][0]:.1f}x |\n"
            f"| the same through the driver, later calls | {spread(cli['through'][1:])} "
            f"| {d / statistics.median(cli['through'][1:]):.1f}x |\n"
            f"| DuckDB (windows over the charges, joined to the spine) | {spread(duck)} | 1.0x |\n\n"
            "Where a cold run's time goes (medians): "
            + ", ".join(f"{k} {statistics.median(p[k] for p in phases):.1f} s" for k in phases[0] if k != "total")
            + f"; the warm run's {statistics.median(warm):.1f} s is what the training set itself costs once the JVM "
            f"has run it. A `tally training-set` call through the driver spent "
            f"{statistics.median(cli['inside'][1:]):.1f} s in it (median of the later calls; the first "
            f"{cli['inside'][0]:.1f} s): the client's own cost is "
            f"{statistics.median(t - i for t, i in zip(cli['through'], cli['inside'])):.1f} s, against "
            f"{statistics.median(cli['alone']) - statistics.median(cli['through'][1:]):.1f} s more for a process of "
            "its own.\n")
    print(text)
    if args.record:
        record("The user's path: a separate spine, a fresh process", text)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
