"""Online serving under load: `tally materialize` of the demo's charges, then `tally serve` with SQLite and with Redis.

    .venv/bin/python bench/serving.py [--charges 1000000] [--rate 1000] [--seconds 30] [--repeat 3]

The path users take, each step a fresh `tally` process: generate the payments data (reused when present),
`tally materialize card_velocity merchant_risk issuer_acceptance` (timed, --repeat times), `tally serve` on a free
loopback port, then a fraud-scoring request per charge — the three views' features (about 30, windows up to
30 days) for the charge's card, merchant and issuer, as of the charge's own time — sent at a fixed rate by
--threads client threads over keep-alive connections. Latency is measured from each request's *scheduled* send
time (so a stalled server cannot hide its backlog: no coordinated omission) into an HDR histogram; the run is
bounded (rate x seconds requests) and stops by itself. Redis: a `redis-server` started on a free loopback port in a
temporary directory and stopped at the end. Results go to bench/README.md ("Online serving").
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import OUT, machine, record, table

ROOT = Path(__file__).resolve().parent.parent
TALLY = str(Path(sys.executable).parent / "tally")
VIEWS = ["card_velocity", "merchant_risk", "issuer_acceptance"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tally(args: list[str], env: dict, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([TALLY, *args], env=env, cwd=ROOT, text=True, capture_output=True, check=True, **kw)


def data(folder: Path, charges: int, env: dict) -> None:
    marker = folder / "_bench.json"
    params = {"charges": charges, "days": 90, "seed": 7}
    if marker.exists() and json.loads(marker.read_text()) == params:
        return
    shutil.rmtree(folder, ignore_errors=True)
    print(f"generating {charges:,} charges into {folder} ...", flush=True)
    tally(["datagen", "--charges", str(charges), "--days", "90", "--seed", "7", "--out", str(folder)], env)
    marker.write_text(json.dumps(params))


def requests_from(folder: Path, n: int, seed: int, days: int = 7) -> list[bytes]:
    """`n` request bodies: random charges of the newest `days` days (what a live service scores; `tally materialize`
    loads what requests from the newest event time on need), their card, merchant and issuer as of the charge's time."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    table_ = ds.dataset(str(folder / "charges"), format="parquet").to_table(
        columns=["card_id", "merchant_id", "issuer", "created"])
    newest = pc.max(table_.column("created")).as_py()
    table_ = table_.filter(pc.greater_equal(table_.column("created"), newest - dt.timedelta(days=days)))
    rng = random.Random(seed)
    rows = [rng.randrange(table_.num_rows) for _ in range(n)]
    cols = {c: table_.column(c) for c in ["card_id", "merchant_id", "issuer", "created"]}
    out = []
    for i in rows:
        at = cols["created"][i].as_py()
        out.append(json.dumps({
            "features": VIEWS,
            "entities": {k: cols[k][i].as_py() for k in ["card_id", "merchant_id", "issuer"]},
            "at": at.isoformat().replace("+00:00", "Z") if at.tzinfo else at.isoformat() + "Z",
        }).encode())
    return out


class Server:
    """`tally serve` in its own process; stopped with SIGTERM."""

    def __init__(self, env: dict, threads: int):
        self.proc = subprocess.Popen([TALLY, "serve", "--port", "0", "--threads", str(threads)], env=env, cwd=ROOT,
                                     stdout=subprocess.PIPE, text=True, start_new_session=True)
        line = self.proc.stdout.readline()
        if "listening on http://" not in line:
            self.stop()
            raise RuntimeError(f"tally serve did not start: {line!r}")
        self.port = int(line.split("http://", 1)[1].split()[0].rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def load(port: int, bodies: list[bytes], rate: float, threads: int):
    """Send `bodies` at `rate` per second from `threads` threads; latencies (µs) from the scheduled send times."""
    from hdrh.histogram import HdrHistogram

    hist = HdrHistogram(1, 60_000_000, 3)
    lock = threading.Lock()
    errors: list[str] = []
    start = time.perf_counter() + 0.2
    interval = 1.0 / rate

    def worker(w: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        for i in range(w, len(bodies), threads):
            due = start + i * interval
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            conn.request("POST", "/features", bodies[i], {"Content-Type": "application/json"})
            resp = conn.getresponse()
            payload = resp.read()
            done = time.perf_counter()
            if resp.status != 200:
                errors.append(f"{resp.status}: {payload[:200]!r}")
            mine.append(int((done - due) * 1e6))
        conn.close()
        with lock:
            for us in mine:
                hist.record_value(max(1, us))

    pool = [threading.Thread(target=worker, args=(w,)) for w in range(threads)]
    t0 = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - t0 - 0.2
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, e.g. {errors[0]}")
    return hist, len(bodies) / elapsed


def redis_server(folder: Path):
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
                             "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def flush_redis(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"*1\r\n$8\r\nFLUSHALL\r\n")
        if not s.recv(64).startswith(b"+OK"):
            raise RuntimeError("FLUSHALL failed")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--charges", type=int, default=1_000_000)
    p.add_argument("--rate", type=float, default=1000.0, help="requests per second")
    p.add_argument("--seconds", type=float, default=30.0, help="per measured run")
    p.add_argument("--threads", type=int, default=8, help="client threads")
    p.add_argument("--server-threads", type=int, default=4, help="`tally serve --threads`")
    p.add_argument("--warmup", type=float, default=30.0, help="seconds at the full rate before each measured run")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()

    work = OUT / "serving"
    folder = work / "data"
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TALLY_DATA": str(folder), "TALLY_REPO": str(ROOT / "features"), "SPARK_LOCAL_IP": "127.0.0.1"}
    data(folder, args.charges, env)

    n = int(args.rate * args.seconds)
    bodies = requests_from(folder, n, seed=1)
    warm = requests_from(folder, int(args.rate * args.warmup), seed=2)
    rows, notes, verdicts = [], [], []
    tmp = Path(tempfile.mkdtemp(prefix="tally-bench-serving-"))
    redis = None
    try:
        redis, redis_port = redis_server(tmp)
        for store, url in [("SQLite", None), ("Redis", f"redis://127.0.0.1:{redis_port}")]:
            store_env = {**env, "TALLY_WAREHOUSE": str(work / f"warehouse-{store.lower()}")}
            if url:
                store_env["TALLY_ONLINE_STORE"] = url
            mat = []
            for _ in range(args.repeat):  # each run loads an empty store: a rerun would find every tile stamped
                shutil.rmtree(store_env["TALLY_WAREHOUSE"], ignore_errors=True)
                if url:
                    flush_redis(redis_port)
                t = time.perf_counter()
                out = tally(["materialize", *VIEWS], store_env)
                mat.append(time.perf_counter() - t)
            notes.append(f"{store} materialize output (last run):\n\n```\n{out.stdout.strip()}\n```")
            runs = []
            for _ in range(args.repeat):
                server = Server(store_env, args.server_threads)
                try:  # the JIT compiles the fetch path during the warm-up, as in any long-running service
                    load(server.port, warm, args.rate, args.threads)
                    runs.append(load(server.port, bodies, args.rate, args.threads))
                finally:
                    server.stop()
            pct = {q: [h.get_value_at_percentile(q) / 1000 for h, _ in runs] for q in (50, 99, 99.9)}
            rps = [r for _, r in runs]

            def cell(xs, fmt="{:.2f}"):
                return f"{fmt.format(statistics.median(xs))} ({fmt.format(min(xs))}–{fmt.format(max(xs))})"

            rows.append([store, cell(mat, "{:.1f}"), cell(pct[50]), cell(pct[99]), cell(pct[99.9]), cell(rps, "{:.0f}"),
                         f"{n:,}"])
            verdicts.append(f"{store}: p99 {statistics.median(pct[99]):.2f} ms at {statistics.median(rps):.0f} requests/s "
                            f"({'met' if statistics.median(pct[99]) <= 5 else 'missed'}), materialize "
                            f"{statistics.median(mat):.1f} s ({'met' if statistics.median(mat) < 60 else 'missed'})")
            print(rows[-1], flush=True)
    finally:
        if redis is not None:
            redis.terminate()
            redis.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)

    text = f"""`.venv/bin/python bench/serving.py --charges {args.charges} --rate {args.rate:.0f} --seconds {args.seconds:.0f} \
--threads {args.threads} --server-threads {args.server_threads} --warmup {args.warmup:.0f} --repeat {args.repeat}`. Machine: \
{machine()}; client, server (and Redis) share it.

Each request scores one charge of the newest 7 days: {", ".join(VIEWS)} for its card, merchant and issuer (all their
features) as of the charge's time, JSON over HTTP/1.1 keep-alive on loopback, sent at a fixed rate by {args.threads} client
threads to `tally serve --threads {args.server_threads}`. Each measured run follows {args.warmup:.0f} s at the same rate on a fresh
server (other requests). Median of {args.repeat} runs (min–max); latency in ms from the scheduled send time;
materialize is the wall time of a fresh `tally materialize` process into an empty store (JVM start and the
source's contract check included).

{table(["store", "materialize s", "p50 ms", "p99 ms", "p99.9 ms", "requests/s", "requests per run"], rows)}

Targets (issue #13: p99 ≤ 5 ms at 1,000 requests/s on each store; materialize of 1 M charges < 60 s): {"; ".join(verdicts)}.

For context, **Feast's published figures (theirs, not measured here)**: the Go feature server with Redis, p99 about
3.9 ms for a single-row fetch (Feast blog, "Go feature server benchmarks", July 2022: 16-vCPU EC2 host, 250 features
in 25 views, 1 M entities).

""" + "\n\n".join(notes)
    record("Online serving", text)
    print(text)


if __name__ == "__main__":
    main()
