"""Online serving (issue #13, DESIGN.md "Online serving and streaming"), from Python.

The parity contract first: for an online view, the value fetched for (key, at) equals the training-set value of
a spine row (key, at), for every aggregation function, on SQLite and on a real Redis. Then available_at, an
idempotent `materialize` and `--start`, `tally serve` with `OnlineClient`, the CLI, and time given in any zone
meaning one instant. One materialized store per backend is shared by the module (fixture `world`).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zoneinfo
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
import redis_server
import tally as tl
from click.testing import CliRunner
from pyspark.sql import Row
from tally import online, registry
from tally.cli import cli
from tally.definitions import FUNCTIONS
from tally.errors import BadRequestError, ServingError, SpecChangedError, UsageError
from tally.utc import from_micros, micros
from utc import aware, utc

MINUTE = 60_000_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
T0 = utc(2026, 3, 1)
T0_US = micros(T0)
DAYS = 3
CARD = tl.Entity("card", keys=["card_id"])
KEYS = ["c0", "c1", "c2", "c3"]
MERCHANTS = [f"m{i}" for i in range(8)]

WINDOWS = [tl.Window("1h"), tl.Window("24h"), tl.Window("24h", delay="1h"), tl.Window("6h", closed="right"),
           tl.Window(None)]
# Every function tally registers, with the columns (types) it is fetched on. Sketches run both inside their exact
# regimes (8 merchants) and past them (~110 distinct amounts per key: HLL at lg_k 4 in HLL mode, quantiles in
# buckets past k = 8, frequent items purging at k = 1): online and offline estimates are equal either way.
CASES: dict[str, list[dict]] = {
    "count": [{}],
    "sum": [{"column": "amount"}, {"column": "qty"}, {"column": "fee"}, {"column": "score"}],
    "mean": [{"column": "amount"}, {"column": "fee"}],
    "min": [{"column": "qty"}, {"column": "merchant"}, {"column": "authorized"}, {"column": "declined"}],
    "max": [{"column": "fee"}, {"column": "score"}],
    "variance": [{"column": "amount"}],
    "variance_pop": [{"column": "qty"}],
    "stddev": [{"column": "amount"}],
    "stddev_pop": [{"column": "fee"}],
    "first": [{"column": "merchant"}, {"column": "authorized"}],
    "last": [{"column": "amount"}, {"column": "declined"}],
    "last_k": [{"column": "merchant", "params": {"k": 3}}, {"column": "authorized", "params": {"k": 2}}],
    "time_since_last": [{}],
    "approx_distinct": [{"column": "merchant"}, {"column": "amount", "params": {"lg_k": 4}}],
    "approx_percentile": [{"column": "amount", "params": {"quantiles": [0.0, 0.25, 0.5, 0.9, 1.0]}},
                          {"column": "score", "params": {"quantiles": [0.1, 0.5, 0.99], "k": 8}}],
    "top_k": [{"column": "merchant", "params": {"k": 3}}, {"column": "amount", "params": {"k": 1}}],
    "decayed_sum": [{"column": "amount", "params": {"half_life": "6h"}}],
    "decayed_count": [{"params": {"half_life": "2h"}}],
}


def charges(seed: int = 13) -> list[tuple]:
    """Seeded charges over three days: ties, events exactly on hop boundaries, nulls, NaN and infinities, and a key
    (c3) that stops on the first day, so the view's ttl empties it."""
    rng = np.random.default_rng(seed)
    rows = []
    for key, n in zip(KEYS, [110, 90, 60, 12]):
        span = DAY if key == "c3" else DAYS * DAY
        ts = sorted(int(x) for x in rng.integers(0, span, n))
        ts[5] = ts[4]  # a tie
        ts[7] = ts[7] // HOUR * HOUR  # on a 1h (and 5m, 1m) boundary
        ts[9] = ts[9] // (5 * MINUTE) * 5 * MINUTE
        for i, t in enumerate(ts):
            def maybe(value):
                return None if rng.random() < 0.05 else value
            score = float(rng.normal())
            if key == "c0" and i == 50:
                score = math.inf
            if key == "c2" and i == 30:
                score = -math.inf
            if key == "c1" and i == 70:
                score = math.nan
            rows.append((key, from_micros(T0_US + t), maybe(round(float(rng.gamma(2.0, 30.0)), 2)),
                         maybe(int(rng.integers(1, 6))), maybe(Decimal(int(rng.integers(0, 50_000))).scaleb(-2)),
                         maybe(str(rng.choice(MERCHANTS))), maybe(bool(rng.random() < 0.2)),
                         maybe(from_micros(T0_US + t + int(rng.integers(0, 10 * MINUTE)))), score))
    return rows


CHARGES_SCHEMA = ("card_id string, created timestamp, amount double, qty bigint, fee decimal(12,2), merchant string, "
                  "declined boolean, authorized timestamp, score double")


def labels(seed: int = 17) -> list[tuple]:
    """Fraud labels that become known later: available_at is the dispute's filing, hours to two days after the charge
    (some at the charge's own instant)."""
    rng = np.random.default_rng(seed)
    rows = []
    for key in KEYS[:3]:
        for t in sorted(int(x) for x in rng.integers(0, DAYS * DAY, 40)):
            lag = 0 if rng.random() < 0.1 else int(rng.integers(MINUTE, 2 * DAY))
            rows.append((key, from_micros(T0_US + t), from_micros(T0_US + t + lag),
                         round(float(rng.gamma(2.0, 40.0)), 2), bool(rng.random() < 0.3)))
    return rows


def spine(events: list[tuple], n: int = 2000, seed: int = 5) -> list[tuple]:
    """(i, card_id, at): random microseconds (not hop-aligned), some exactly at event times, some on hop boundaries;
    a key that has no events; times before, inside and after the data."""
    rng = np.random.default_rng(seed)
    keys = [*KEYS, "c_none"]
    out = []
    for _ in range(n * 3 // 4):
        out.append((str(rng.choice(keys)), int(rng.integers(T0_US - 2 * HOUR, T0_US + DAYS * DAY + 6 * HOUR))))
    for _ in range(n // 8):
        e = events[int(rng.integers(0, len(events)))]
        out.append((e[0], micros(e[1])))
    while len(out) < n:
        out.append((str(rng.choice(keys)), T0_US + int(rng.integers(-2, DAYS * 24 * 12 + 3)) * 5 * MINUTE))
    return [(i, k, from_micros(at)) for i, (k, at) in enumerate(out)]


@dataclass
class World:
    root: Path
    warehouse: Path
    stores: dict[str, str]
    view: tl.FeatureView
    avail: tl.FeatureView
    spine: list[tuple]
    avail_spine: list[tuple]
    offline: list[dict]
    avail_offline: list[dict]
    loaded: dict[str, list[dict]]


def offline_rows(spark, view, rows):
    df = spark.createDataFrame(rows, "i int, card_id string, at timestamp")
    return [r.asDict() for r in tl.training_set(spark, df, [view], timestamp="at").orderBy("i").collect()]


def online_rows(spark, w: World, store: str, view, rows):
    return online.get(spark, [view.name], rows=[{"entities": {"card_id": k}, "at": at} for _, k, at in rows],
                      warehouse=w.warehouse, store=w.stores[store])


@pytest.fixture(scope="module")
def world(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("online")
    events = charges()
    df = spark.createDataFrame(events, CHARGES_SCHEMA)
    aggs = [tl.Aggregation(fn, column=case.get("column"), windows=WINDOWS, params=case.get("params", {}))
            for fn, cases in CASES.items() for case in cases]
    view = tl.FeatureView("card_online", entity=CARD, source=tl.Source("charges", dataframe=lambda s: df, timestamp="created"),
                          aggregations=aggs, ttl="36h", online=True)
    label_df = spark.createDataFrame(labels(), "card_id string, charged timestamp, disputed timestamp, amount double, fraud boolean")
    avail = tl.FeatureView(
        "card_labels", entity=CARD, online=True,
        source=tl.Source("disputes", dataframe=lambda s: label_df, timestamp="charged", available_at="disputed"),
        aggregations=[tl.Aggregation("count", windows=["24h", tl.Window("2d", closed="right"), None]),
                      tl.Aggregation("sum", column="amount", windows=["24h", None]),
                      tl.Aggregation("last", column="fraud", windows=[None]),
                      tl.Aggregation("approx_distinct", column="amount", windows=["2d"])])
    redis = redis_server.start()
    try:
        stores = {"sqlite": f"sqlite:{root / 'tiles' / 'online.db'}", "redis": redis.url}
        start = T0.date() - dt.timedelta(days=1)  # before the data: every tile, so every request is covered
        loaded = {name: online.materialize(spark, [view, avail], warehouse=root / "wh", store=url, start=start)
                  for name, url in stores.items()}
        rows = spine(events)
        avail_rows = spine([(k, c) for k, c, *_ in labels()], n=600, seed=9)
        yield World(root, root / "wh", stores, view, avail, rows, avail_rows, offline_rows(spark, view, rows),
                    offline_rows(spark, avail, avail_rows), loaded)
    finally:
        redis.stop()


def norm(v):
    """A value as both paths should give it: Rows as dicts, timestamps aware UTC, NaN comparable, decimals with
    their scale (Decimal("1.20") != Decimal("1.2") here)."""
    if isinstance(v, Row):
        v = v.asDict(recursive=True)
    if isinstance(v, dict):
        return {k: norm(x) for k, x in v.items()}
    if isinstance(v, list):
        return [norm(x) for x in v]
    if isinstance(v, float) and math.isnan(v):
        return "NaN"
    if isinstance(v, dt.datetime):
        return aware(v)
    if isinstance(v, Decimal):
        return ("decimal", str(v))
    return v


# Doubles. The sweep adds each event as it enters a window and removes it as it leaves; the fetcher merges tiles in
# time order. Where that reorders floating-point work the last bits may differ, so each function is held to the
# tightest bound its arithmetic allows, and WORST records what was seen (printed by the parity test):
# - everything but the functions below compares exactly, doubles included: compensated sums, min/max, first/last,
#   last_k, percentiles and time_since_last agree to the bit;
# - mean, decayed_sum, decayed_count: relative difference <= 1e-12 (seen: up to 7.5e-14);
# - variance and stddev (compared squared): Welford's remove step leaves the sweep's m2 with an absolute error of
#   about eps * sum(x^2) over the values that passed through the window (Moments.scala; FetchParitySuite and
#   SweepOracleSuite allow it too), so a short window after large values reads e.g. 0.03920000000471191 offline
#   and 0.03920000000000032 online (relative 1.2e-10). The bound is 4 * eps * sum(x^2) of the key's values up to
#   the request (seen: 0.52 * eps * sum(x^2)).
EPS = sys.float_info.epsilon
ROUNDED = {"mean", "decayed_sum", "decayed_count"}
MOMENTS = {"variance", "variance_pop", "stddev", "stddev_pop"}
WORST: dict[str, float] = {}
COLUMNS = {"amount": 2, "qty": 3, "fee": 4}  # in a charges() tuple


def sum_squares(events, key: str, at_us: int, column: str) -> float:
    """sum(x^2) of the key's finite `column` values with time <= at: what the sweep's running state has seen."""
    i = COLUMNS[column]
    return sum(float(e[i]) ** 2 for e in events
               if e[0] == key and micros(e[1]) <= at_us and e[i] is not None and math.isfinite(float(e[i])))


def same(a, b, function: str, scale) -> bool:
    if not (isinstance(a, float) and isinstance(b, float)) or a == b or function not in ROUNDED | MOMENTS:
        return a == b and type(a) is type(b)
    if math.isinf(a) or math.isinf(b):
        return False
    if function in ROUNDED:
        d, bound = abs(a - b) / max(abs(a), abs(b)), 1e-12
    else:
        sq = (lambda x: x * x) if function.startswith("stddev") else (lambda x: x)
        d, bound = abs(sq(a) - sq(b)) / (EPS * scale()), 4.0
    WORST[function] = max(WORST.get(function, 0.0), d)
    return d <= bound


def mismatches(view, offline, fetched, events=None) -> list[tuple]:
    assert len(offline) == len(fetched)
    out = []
    for off, on in zip(offline, fetched):
        assert aware(off["at"]) == on.at, (off, on.at)
        for f in view.features:
            a, b = norm(off[f"{view.name}__{f.name}"]), norm(on[f"{view.name}:{f.name}"])
            scale = lambda f=f, off=off: sum_squares(events, off["card_id"], micros(aware(off["at"])), f.column)  # noqa: E731
            if not same(a, b, f.function, scale):
                out.append((off["i"], off["card_id"], aware(off["at"]).isoformat(), f.name, a, b))
    return out


def test_every_registered_function_is_fetched():
    assert sorted(CASES) == sorted(FUNCTIONS)


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_parity_every_function_every_window_thousands_of_random_requests(spark, world, store):
    started = time.monotonic()
    fetched = online_rows(spark, world, store, world.view, world.spine)
    took = time.monotonic() - started
    bad = mismatches(world.view, world.offline, fetched, charges())
    assert not bad, f"{len(bad)} of {len(world.spine) * len(world.view.features)} values differ, first: {bad[:5]}"
    # the comparison saw real values: non-empty windows, each kind of Python value, and the ttl's nulls
    values = [v for row in fetched for v in row.values()]
    assert any(isinstance(v, Decimal) for v in values) and any(isinstance(v, bool) for v in values)
    assert any(isinstance(v, dt.datetime) and v.tzinfo is not None for v in values)
    assert any(isinstance(v, float) and math.isnan(v) for v in values) and math.inf in values and -math.inf in values
    assert sum(1 for row in fetched if row[f"{world.view.name}:count_1h"]) > 300
    # ... and sketches past their exact regimes: HLL (lg_k 4) counting more than its coupon modes hold, quantiles
    # (k 8) reported from buckets, values that are no score at all
    of = lambda fn, **p: [row[f"{world.view.name}:{f.name}"] for f in world.view.features for row in fetched  # noqa: E731
                          if f.function == fn and all(f.params.get(k) == v for k, v in p.items())]
    assert max(v or 0 for v in of("approx_distinct", lg_k=4)) >= 40
    scores = {e[8] for e in charges()}
    assert any(q not in scores for qs in of("approx_percentile", k=8) if qs for q in qs[1:2])
    seen = ", ".join(f"{fn} {d:.2g}" + ("" if fn in ROUNDED else " eps*sum(x^2)") for fn, d in sorted(WORST.items()))
    print(f"{store}: {len(fetched)} rows x {len(world.view.features)} features fetched in {took:.2f} s; "
          f"doubles that differ, the largest difference: {seen or 'none'}")


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_parity_with_available_at_after_everything_available_is_loaded(spark, world, store):
    fetched = online_rows(spark, world, store, world.avail, world.avail_spine)
    bad = mismatches(world.avail, world.avail_offline, fetched)
    assert not bad, f"{len(bad)} values differ, first: {bad[:5]}"
    # the requests fall where availability matters: a label charged before the request, filed after it
    filed = [(k, micros(c), micros(d)) for k, c, d, *_ in labels()]
    assert sum(any(k == key and c < micros(at) <= d for k, c, d in filed) for _, key, at in world.avail_spine) > 100


def test_materialize_reports_what_it_loaded_and_writes_serving_specs(world):
    for name, results in world.loaded.items():
        by_view = {r["view"]: r for r in results}
        r = by_view["card_online"]
        assert r["events"] == len(charges()) and r["keys"] == len(KEYS), (name, r)
        assert r["tiles"] > 0 and r["applied"] == r["tiles"] and r["version"] == 1
        assert r["from_us"] <= micros(T0 - dt.timedelta(days=1))  # rounded down to whole 30-day tiles
        assert r["watermark_us"] == max(micros(c[1]) for c in charges())
        assert r["store"] == world.stores[name]
    spec = online.read_spec(world.warehouse, "card_online", 1)
    assert spec["spec"]["view"] == "card_online" and spec["fingerprint"] == world.view.fingerprint
    assert spec["key_types"] == {"card_id": "string"}
    assert not list(online.views_dir(world.warehouse).glob(".*"))  # no temporary file left behind


def dump(url: str) -> list[tuple]:
    with sqlite3.connect(f"file:{url[len('sqlite:'):]}?mode=ro", uri=True) as db:
        return (db.execute("SELECT view, version, key, length, start, stamp, payload FROM tiles ORDER BY 1, 2, 3, 4, 5").fetchall()
                + db.execute("SELECT * FROM watermarks ORDER BY 1, 2").fetchall())


def test_materialize_twice_applies_nothing_and_leaves_the_store_unchanged(spark, world):
    before = dump(world.stores["sqlite"])
    start = T0.date() - dt.timedelta(days=1)
    for name in ("sqlite", "redis"):
        again = online.materialize(spark, [world.view, world.avail], warehouse=world.warehouse,
                                   store=world.stores[name], start=start)
        assert [r["applied"] for r in again] == [0, 0], (name, again)
        assert [r["tiles"] for r in again] == [r["tiles"] for r in world.loaded[name]]
    assert dump(world.stores["sqlite"]) == before


def test_only_temporal_online_views_materialize_and_a_changed_definition_needs_a_new_version(spark, world):
    offline_view = tl.FeatureView("card_offline", entity=CARD, source=world.view.source,
                                  aggregations=[tl.Aggregation("count", windows=["1h"])])
    with pytest.raises(UsageError, match=r"view 'card_offline' is not an online view[\s\S]*online=True"):
        online.materialize(spark, [offline_view], warehouse=world.warehouse, store=world.stores["sqlite"])
    snapshot = tl.FeatureView("card_daily", entity=CARD, source=world.view.source, accuracy="snapshot", online=True,
                              aggregations=[tl.Aggregation("count", windows=["1h"])])
    with pytest.raises(UsageError, match=r"view 'card_daily' is a snapshot view"):
        online.materialize(spark, [snapshot], warehouse=world.warehouse, store=world.stores["sqlite"])
    changed = tl.FeatureView("card_labels", entity=CARD, source=world.avail.source, online=True,
                             aggregations=[tl.Aggregation("count", windows=["1h"])])
    with pytest.raises(SpecChangedError, match=r"'card_labels' version 1 was materialized with a different definition"):
        online.materialize(spark, [changed], warehouse=world.warehouse, store=world.stores["sqlite"])


def test_a_long_batch_is_fetched_in_parts_and_comes_back_whole_in_order(spark, world, monkeypatch):
    rows = world.spine[:50]
    whole = online_rows(spark, world, "sqlite", world.view, rows)
    monkeypatch.setattr(online, "IN_PROCESS_ROWS", 16)
    parts = online_rows(spark, world, "sqlite", world.view, rows)
    assert [(r.at, norm(dict(r))) for r in parts] == [(r.at, norm(dict(r))) for r in whole]


def test_bad_requests_in_process_name_the_culprit(spark, world):
    def get(features, entities, **kw):
        return online.get(spark, features, entities, at=T0, warehouse=world.warehouse, store=world.stores["sqlite"], **kw)

    with pytest.raises(BadRequestError, match="unknown view 'nope'"):
        get(["nope"], {"card_id": "c0"})
    with pytest.raises(BadRequestError, match="view 'card_online' has no feature 'nope'"):
        get(["card_online:nope"], {"card_id": "c0"})
    with pytest.raises(BadRequestError, match="card_id"):
        get(["card_online"], {"merchant_id": "m0"})
    with pytest.raises(UsageError, match="not both"):
        get(["card_online"], {"card_id": "c0"}, rows=[])


# --- time semantics: an instant is an instant, whatever zone it is written in ------------------------------------

def test_request_times_in_any_zone_mean_the_same_instant_and_naive_ones_are_refused(spark, world):
    instant = utc(2026, 3, 2, 17, 42, 13, 123_456)
    forms = [instant, instant.astimezone(zoneinfo.ZoneInfo("Asia/Kolkata")),
             instant.astimezone(zoneinfo.ZoneInfo("America/Los_Angeles")), "2026-03-02T23:12:13.123456+05:30",
             "2026-03-02T17:42:13.123456Z", micros(instant)]
    got = [online.get(spark, ["card_online"], {"card_id": "c1"}, at=at, warehouse=world.warehouse,
                      store=world.stores["sqlite"]) for at in forms]
    assert all(g.at == instant and g.at.tzinfo is not None for g in got)
    assert all(norm(dict(g)) == norm(dict(got[0])) for g in got)
    assert got[0]["card_online:count_24h"] > 0
    with pytest.raises(UsageError, match="naive datetime"):
        online.get(spark, ["card_online"], {"card_id": "c1"}, at=dt.datetime(2026, 3, 2, 17),
                   warehouse=world.warehouse, store=world.stores["sqlite"])
    with pytest.raises(UsageError, match="no UTC offset"):
        online.get(spark, ["card_online"], {"card_id": "c1"}, at="2026-03-02T17:00:00",
                   warehouse=world.warehouse, store=world.stores["sqlite"])
    # the client refuses before sending anything: no server listens here
    with pytest.raises(UsageError, match="naive datetime"):
        tl.OnlineClient("http://127.0.0.1:9").get(["card_online"], {"card_id": "c1"}, at=dt.datetime(2026, 3, 2))


# --- tally serve and OnlineClient --------------------------------------------------------------------------------

def _wait_for(proc, pattern: str, timeout: float = 120):
    """The match of the first stdout line of `proc` matching `pattern`; fails (never hangs) when none comes."""
    import selectors

    seen, deadline = [], time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if sel.select(timeout=1):
                line = proc.stdout.readline().decode()
                if not line:
                    break
                seen.append(line)
                if match := re.search(pattern, line):
                    return match
    raise AssertionError(f"no line matching {pattern!r}; exit code {proc.poll()}; stdout: {seen}")


def _env() -> dict:
    return {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYTHONPATH": str(Path(tl.__file__).resolve().parents[1])}


@pytest.mark.slow
@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_tally_serve_answers_as_the_in_process_fetch_and_stops_on_sigterm(spark, world, store, monkeypatch):
    cmd = [sys.executable, "-m", "tally.cli", "--warehouse", str(world.warehouse), "--online-store", world.stores[store],
           "serve", "--port", "0", "--threads", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, bufsize=0, env=_env())  # unbuffered: select sees every line
    try:
        match = _wait_for(proc, r"tally serve: listening on (http://127\.0\.0\.1:(\d+)) \((\d+) views: (.*)\)")
        assert match.group(4) == "card_labels, card_online" and int(match.group(3)) == 2
        client = tl.OnlineClient(match.group(1))
        health = client.health()
        assert health["status"] == "ok"
        assert {(v["view"], v["version"]) for v in health["views"]} == {("card_labels", 1), ("card_online", 1)}
        rows = world.spine[:300]
        monkeypatch.setattr(online, "CLIENT_ROWS", 128)  # long batches go in several requests: here three
        served = client.get_rows(["card_online"], [{"entities": {"card_id": k}, "at": at} for _, k, at in rows])
        local = online_rows(spark, world, store, world.view, rows)
        assert [norm(dict(r)) for r in served] == [norm(dict(r)) for r in local]
        assert [r.at for r in served] == [at for *_, at in rows] and served[0].types == local[0].types
        one = client.get(["card_online:count_24h", "card_labels:sum_amount_lifetime"], {"card_id": rows[7][1]}, at=rows[7][2])
        assert list(one) == ["card_online:count_24h", "card_labels:sum_amount_lifetime"]
        assert one["card_online:count_24h"] == local[7]["card_online:count_24h"]
        j = next(i for i, row in enumerate(local) if row["card_online:sum_fee_24h"])  # a key with fees that day
        at = f"{rows[j][2]:%Y-%m-%dT%H:%M:%S.%fZ}"
        r = CliRunner().invoke(cli, ["--warehouse", str(world.warehouse), "online-get", "card_online:count_24h",
                                     "card_online:sum_fee_24h", "--key", f"card_id={rows[j][1]}", "--at", at,
                                     "--url", match.group(1)], standalone_mode=False)
        assert r.exception is None, r.output
        assert r.output.splitlines() == [f"at {at}",
                                         f"  card_online:count_24h    {local[j]['card_online:count_24h']:<24}  bigint",
                                         f"  card_online:sum_fee_24h  {local[j]['card_online:sum_fee_24h']!s:<24}  decimal(38,2)"]
        with pytest.raises(BadRequestError, match="unknown view 'nope'") as err:
            client.get(["nope"], {"card_id": "c0"})
        assert 400 <= err.value.details["status"] < 500
        with pytest.raises(BadRequestError, match="no feature 'nope'"):
            client.get(["card_online:nope"], {"card_id": "c0"})
        with pytest.raises(BadRequestError, match="card_id"):
            client.get(["card_online"], {"merchant_id": "m0"})
        with pytest.raises(urllib.error.HTTPError) as raw:  # malformed JSON: a 4xx with a JSON message, no trace
            urllib.request.urlopen(urllib.request.Request(match.group(1) + "/features", data=b"{", method="POST"), timeout=10)
        assert 400 <= raw.value.code < 500 and "error" in json.loads(raw.value.read())
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    assert code == 0
    with pytest.raises(ServingError, match="cannot reach the tally server"):
        client.health()


def test_serve_without_materialized_views_says_to_materialize_first(tmp_path):
    r = CliRunner().invoke(cli, ["--warehouse", str(tmp_path / "wh"), "serve", "--port", "0"], standalone_mode=False)
    assert isinstance(r.exception, UsageError) and "run `tally materialize VIEW...` first" in str(r.exception)


# --- the CLI on a feature repository ------------------------------------------------------------------------------

REPO = """
import tally as tl

card = tl.Entity("card", keys=["card_id"])
charges = tl.Source("charges", path={path!r}, format="parquet", timestamp="created")
card_recent = tl.FeatureView(
    name="card_recent", entity=card, source=charges, online=True, description="recent activity",
    aggregations=[tl.Aggregation("count", windows=["1h", "24h"]), tl.Aggregation("sum", column="amount", windows=["24h"])])
card_batch = tl.FeatureView(name="card_batch", entity=card, source=charges, aggregations=[tl.Aggregation("count", windows=["1d"])])
card_life = tl.FeatureView(name="card_life", entity=card, source=charges, online=True,
                           aggregations=[tl.Aggregation("count", windows=[None])])
"""


def test_cli_materialize_start_online_get_and_describe(spark, tmp_path):
    rows = [(f"c{i % 3}", T0 + dt.timedelta(minutes=113 * i, microseconds=i), float(i)) for i in range(900)]  # 70 days
    spark.createDataFrame(rows, "card_id string, created timestamp, amount double").write.parquet(str(tmp_path / "charges"))
    (tmp_path / "features").mkdir()
    (tmp_path / "features" / "cards.py").write_text(REPO.format(path=str(tmp_path / "charges")))

    def run(*args):
        r = CliRunner().invoke(cli, ["--repo", str(tmp_path / "features"), "--warehouse", str(tmp_path / "wh"), *args],
                               standalone_mode=False)
        assert r.exception is None, (args, r.output, r.exception)
        return r.output

    out = run("materialize", "card_recent")
    first = re.search(r"card_recent v1: (\d+) events, 3 keys, (\d+) tiles \((\d+) applied\) from (\S+); watermark (\S+)", out)
    assert first and 0 < int(first.group(1)) < len(rows) and first.group(2) == first.group(3), out
    newest = f"{rows[-1][1]:%Y-%m-%dT%H:%M:%S.%fZ}"
    assert first.group(5) == newest and first.group(4) > "2026-03-02", out
    # An old request (day 2): the default load starts 24h (+ a hop) before the newest event, rounded down to whole
    # 30-day tiles, so day 2 is not covered yet.
    old = T0 + dt.timedelta(days=1, hours=13, minutes=7, microseconds=5)
    spine_df = spark.createDataFrame([(0, "c1", old)], "i int, card_id string, at timestamp")
    view = registry.load(tmp_path / "features").views["card_recent"]
    expected = tl.training_set(spark, spine_df, [view], timestamp="at").first()
    assert expected["card_recent__count_24h"] > 0

    out = run("materialize", "card_recent", "--start", "2026-03-01")
    more = re.search(r"card_recent v1: 900 events, 3 keys, (\d+) tiles \((\d+) applied\) from (\S+);", out)
    # the newer tiles are the same tiles with the same stamp: only the older ones are applied
    assert more and int(more.group(2)) == int(more.group(1)) - int(first.group(2)) > 0, out
    assert more.group(3) <= "2026-03-01T00:00:00.000000Z", out
    out = run("online-get", "card_recent", "--key", "card_id=c1", "--at", old.isoformat().replace("+00:00", "Z"))
    assert out.splitlines()[0] == "at 2026-03-02T13:07:00.000005Z"
    got = dict(re.findall(r"^\s+card_recent:(\S+)\s+(\S+)\s+\S+$", out, re.M))
    assert got == {"count_1h": str(expected["card_recent__count_1h"]), "count_24h": str(expected["card_recent__count_24h"]),
                   "sum_amount_24h": str(expected["card_recent__sum_amount_24h"])}, out
    assert "(0 applied)" in run("materialize", "card_recent", "--start", "2026-03-01")
    # --start DAY serves requests from DAY on: the tiles their windows reach back to come too. 2026-03-08 is a
    # boundary of the 30-day ladder, so tiles from DAY alone would miss the evening of 03-07.
    fresh = f"sqlite:{tmp_path / 'second.db'}"
    run("materialize", "card_recent", "--start", "2026-03-08", "--online-store", fresh)
    morning = utc(2026, 3, 8, 9, 30)
    spine_df = spark.createDataFrame([(0, "c1", morning)], "i int, card_id string, at timestamp")
    expected = tl.training_set(spark, spine_df, [view], timestamp="at").first()
    out = run("online-get", "card_recent", "--key", "card_id=c1", "--at", "2026-03-08T09:30:00Z", "--online-store", fresh)
    got = dict(re.findall(r"^\s+card_recent:(\S+)\s+(\S+)\s+\S+$", out, re.M))
    assert expected["card_recent__count_24h"] > expected["card_recent__count_1h"], expected
    assert got == {"count_1h": str(expected["card_recent__count_1h"]), "count_24h": str(expected["card_recent__count_24h"]),
                   "sum_amount_24h": str(expected["card_recent__sum_amount_24h"])}, out

    out = run("describe", "card_recent")
    assert re.search(rf"online v1: store sqlite:\S+/wh/online/tally\.db; newest event loaded {re.escape(newest)}; "
                     r"\S+/wh/online/views/card_recent\.v1\.json", out), out
    assert not re.search(r"^  online ", run("describe", "card_batch"), re.M)
    r = CliRunner().invoke(cli, ["--repo", str(tmp_path / "features"), "--warehouse", str(tmp_path / "wh"),
                                 "materialize", "card_batch"], standalone_mode=False)
    assert isinstance(r.exception, UsageError) and "not an online view" in str(r.exception)
    # A lifetime window needs every event, but the history beyond its bounded windows only as 30-day tiles.
    out = run("materialize", "card_life")
    assert "card_life v1: 900 events, 3 keys, " in out and "(before it, 30-day tiles for the lifetime windows)" in out, out


# --- configuration ------------------------------------------------------------------------------------------------

def test_the_online_store_is_configured_like_the_other_settings(tmp_path, monkeypatch):
    from tally import config

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TALLY_ONLINE_STORE", raising=False)
    monkeypatch.delenv("TALLY_WAREHOUSE", raising=False)
    cfg = config.load()
    assert cfg.online_store == f"sqlite:{tmp_path.resolve()}/warehouse/online/tally.db"
    assert cfg.origins["online_store"].startswith("default")
    assert config.load(warehouse="/srv/wh").online_store == "sqlite:/srv/wh/online/tally.db"  # it follows the warehouse
    (tmp_path / "tally.toml").write_text('online_store = "redis://10.0.0.5:6379/fraud"\n')
    assert (config.load().online_store, config.load().origins["online_store"]) == ("redis://10.0.0.5:6379/fraud", "tally.toml")
    monkeypatch.setenv("TALLY_ONLINE_STORE", "redis-cluster://a:7000,b:7001")
    assert config.load().origins["online_store"] == "env TALLY_ONLINE_STORE"
    cfg = config.load(online_store="sqlite:/tmp/x.db")
    assert (cfg.online_store, cfg.origins["online_store"]) == ("sqlite:/tmp/x.db", "flag --online-store")
    r = CliRunner().invoke(cli, ["--online-store", "redis://127.0.0.1:6390", "config"])
    assert re.search(r"^online_store = redis://127\.0\.0\.1:6390 +\(flag --online-store\)$", r.output, re.M), r.output


def test_store_urls_are_checked_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert online.store_url("sqlite:rel/tally.db") == f"sqlite:{tmp_path.resolve()}/rel/tally.db"
    assert online.store_url("redis-cluster://a:7000,b:7001") == "redis-cluster://a:7000,b:7001"
    with pytest.raises(UsageError, match="'nohost' is not host:port"):
        online.store_url("redis://nohost")
    with pytest.raises(UsageError, match="'mysql://db' is not a store URL"):
        online.store_url("mysql://db")


def test_an_unreachable_store_is_a_serving_error_and_describe_says_so(spark, world):
    down = f"redis://127.0.0.1:{redis_server.free_port()}"
    with pytest.raises(ServingError, match=r"online store redis://127\.0\.0\.1:\d+: cannot reach"):
        online.get(spark, ["card_online"], {"card_id": "c0"}, at=T0, warehouse=world.warehouse, store=down)
    st = online.status(spark, world.view, warehouse=world.warehouse, store=down)
    assert st["watermark"] is None and "cannot reach" in st["problem"], st
    ok = online.status(spark, world.view, warehouse=world.warehouse, store=world.stores["redis"])
    assert ok["watermark"] == max(c[1] for c in charges()) and ok["spec_path"] and ok["problem"] is None
