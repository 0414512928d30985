"""Feature statistics: recorded per day in each backfill commit, read back by `tally stats`, drift flagged.

The recorded numbers are checked against pandas on the backfilled table itself; drift against planted days."""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import pytest
import tally as tl
from tally import drift, stats, store
from tally.cli import main
from utc import utc

START, END = dt.date(2026, 2, 1), dt.date(2026, 2, 14)
JUMP, SPARSE, ORDINARY, AFTER_JUMP = "2026-02-10", "2026-02-12", "2026-02-08", "2026-02-11"

VIEWS = """
import tally as tl

card = tl.Entity("card", keys=["card_id"])
charges = tl.Source("charges", path={path!r}, format="parquet", timestamp="created")
card_day = tl.FeatureView(
    name="card_day", entity=card, source=charges, version=1, ttl="7d",
    aggregations=[tl.Aggregation("count", windows=["1d"]), tl.Aggregation("sum", column="amount", windows=["1d"]),
                  tl.Aggregation("mean", column="amount", windows=["1d"]),
                  tl.Aggregation("last_k", column="merchant_id", windows=["1d"], params={{"k": 2}})])
card_never = tl.FeatureView(
    name="card_never", entity=card, source=charges, version=1, aggregations=[tl.Aggregation("count", windows=["1d"])])
"""


def charge_rows() -> list[tuple]:
    """150 cards, ~300 charges a day from 2026-01-25; on JUMP amounts are x10, on SPARSE only 6 cards pay, and
    three charges on 2026-02-05 carry NaN or infinity."""
    rng = np.random.default_rng(18)
    rows = []
    for day in range(21):
        date = dt.date(2026, 1, 25) + dt.timedelta(days=day)
        n, cards = (12, 6) if str(date) == SPARSE else (300, 150)
        for i in range(n):
            amount = float(round(rng.lognormal(3, 1), 2)) * (10 if str(date) == JUMP else 1)
            if str(date) == "2026-02-05" and i < 3:
                amount = [float("nan"), float("inf"), float("-inf")][i]
            at = utc(date.year, date.month, date.day) + dt.timedelta(seconds=int(rng.integers(0, 86400)))
            rows.append((f"c{int(rng.integers(0, cards))}", at, amount, f"m{int(rng.integers(0, 20))}"))
    return rows


def tally(root, *args):
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--repo", str(root / "features"), "--warehouse", str(root / "wh"), *args])
    text = out.getvalue()
    return code, (json.loads(text) if "--json" in args and text.strip() else text), err.getvalue()


@pytest.fixture(scope="module")
def project(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("stats")
    data = root / "charges"
    spark.createDataFrame(charge_rows(), "card_id string, created timestamp, amount double, merchant_id string") \
        .write.parquet(str(data))
    (root / "features").mkdir()
    (root / "features" / "cards.py").write_text(VIEWS.format(path=str(data)))
    code, _, err = tally(root, "backfill", "card_day", "--start", str(START), "--end", str(END), "--quiet")
    assert code == 0, err
    return root


@pytest.fixture(scope="module")
def fs(project, spark):
    return tl.FeatureStore(repo=str(project / "features"), warehouse=str(project / "wh"))


def test_recorded_statistics_equal_pandas_on_the_backfilled_table(fs):
    report = fs.stats("card_day")
    df = fs.read_features("card_day")
    # pandas reads a null double as NaN, so which values are null travels beside them
    table = df.select("*", *[df[c].isNull().alias(f"{c}__null") for c in df.columns]).toPandas()
    table["ds"] = table["ds"].astype(str)
    assert [f["name"] for f in report["features"]] == ["count_1d", "sum_amount_1d", "mean_amount_1d", "last_k_merchant_id_1d"]
    kinds = {f["name"]: f["kind"] for f in report["features"]}
    assert kinds == {"count_1d": "integral", "sum_amount_1d": "fractional", "mean_amount_1d": "fractional",
                     "last_k_merchant_id_1d": "array"}
    checked_nan = 0
    for f in report["features"]:
        assert [d["day"] for d in f["days"]] == [str(START + dt.timedelta(days=i)) for i in range(14)]
        for d in f["days"]:
            col = table.loc[table["ds"] == d["day"], f["name"]]
            assert d["rows"] == len(col) > 0
            nulls = table.loc[table["ds"] == d["day"], f"{f['name']}__null"]
            assert d["null_share"] == pytest.approx(nulls.mean(), abs=1e-12), (f["name"], d["day"])
            if not f["numeric"]:
                assert d["mean"] is None and d["nan_share"] is None
                continue
            values = col[~nulls].astype(float)
            finite = np.sort(values[np.isfinite(values)].to_numpy())
            assert d["nan_share"] == pytest.approx((len(values) - len(finite)) / len(col), abs=1e-12)
            checked_nan += d["nan_share"] > 0
            assert d["mean"] == pytest.approx(finite.mean(), rel=1e-5)
            assert d["min"] == pytest.approx(finite.min(), rel=1e-5) and d["max"] == pytest.approx(finite.max(), rel=1e-5)
            if f["kind"] == "integral":
                assert (d["min"], d["max"]) == (int(finite.min()), int(finite.max()))  # integers are exact
            for p, q in zip(stats.QUANTILES, (d["p01"], d["p50"], d["p99"])):
                assert_rank_within_accuracy(finite, p, q, (f["name"], d["day"], p))
    assert checked_nan == 2  # sum and mean of the cards that paid NaN or infinity on 2026-02-05


def assert_rank_within_accuracy(sorted_values, p: float, q: float, where) -> None:
    """`q` is a p-quantile up to percentile_approx's rank error n / accuracy (at least one rank), and rounding."""
    n = len(sorted_values)
    tol = max(1.0, n / stats.ACCURACY)
    below = np.searchsorted(sorted_values, q - 1e-5 * abs(q), side="left")
    at_or_below = np.searchsorted(sorted_values, q + 1e-5 * abs(q), side="right")
    assert below <= p * n + tol and at_or_below >= p * n - tol, (where, q, below, at_or_below, n)


def test_drift_flags_the_tenfold_day_and_the_mostly_null_day_not_ordinary_days(fs):
    report = fs.stats("card_day")
    flags = {(x["feature"], x["day"], x["metric"]) for x in report["flagged"]}
    assert ("sum_amount_1d", JUMP, "mean") in flags and ("mean_amount_1d", JUMP, "mean") in flags
    assert ("mean_amount_1d", SPARSE, "null_share") in flags
    assert not [x for x in flags if x[1] in (ORDINARY, AFTER_JUMP)], flags  # the median shrugs off one bad day
    assert not [x for x in flags if x[0] == "count_1d" and x[1] == JUMP]  # x10 amounts, as many charges
    by_day = {d["day"]: d for d in report["features"][2]["days"]}
    why = by_day[SPARSE]["drift"][0] if by_day[SPARSE]["drift"][0]["metric"] == "null_share" else by_day[SPARSE]["drift"][1]
    assert why["value"] > 0.8 and why["median"] < 0.5 and why["threshold"] == pytest.approx(
        drift.K * max(drift.MAD_SCALE * why["mad"], drift.SHARE_FLOOR), rel=1e-4)


def test_stats_json_is_one_document_with_days_and_flags(project):
    code, doc, err = tally(project, "stats", "card_day", "--feature", "sum_amount_1d", "--start", "2026-02-09",
                           "--end", "2026-02-11", "--json")
    assert code == 0, err
    assert [f["name"] for f in doc["features"]] == ["sum_amount_1d"]
    days = doc["features"][0]["days"]
    assert [d["day"] for d in days] == ["2026-02-09", "2026-02-10", "2026-02-11"] and doc["start"] == "2026-02-09"
    assert {"rows", "null_share", "nan_share", "mean", "min", "max", "p01", "p50", "p99", "delta_version", "drift"} <= set(days[0])
    assert [(x["day"], x["metric"]) for x in doc["flagged"]] == [(JUMP, "mean")]  # judged on the week before --start
    assert doc["rule"]["window_days"] == 7 and doc["quantile_accuracy"] == stats.ACCURACY
    code, text, _ = tally(project, "stats", "card_day", "--feature", "mean_amount_1d")
    assert code == 0 and f"{SPARSE}" in text and "! null_share" in text and "drift flag(s)" in text


def test_plot_writes_a_png_of_one_feature(project, tmp_path):
    out = tmp_path / "plots" / "sum.png"
    code, doc, err = tally(project, "stats", "card_day", "--plot", "sum_amount_1d", "--out", str(out), "--json")
    assert code == 0, err
    assert doc["plot"] == str(out) and out.stat().st_size > 1000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, doc, _ = tally(project, "stats", "card_day", "--plot", "sum_amount_1d", "--json")  # no --out
    assert code == 2 and "--out" in doc["error"]["message"]


def test_bad_input_names_the_view_or_feature(project):
    code, doc, _ = tally(project, "stats", "nope", "--json")
    assert code == 1 and "unknown feature view 'nope'" in doc["error"]["message"]
    code, doc, _ = tally(project, "stats", "card_day", "--feature", "count_99d", "--json")
    assert code == 1 and "count_99d" in doc["error"]["message"] and "count_1d" in doc["error"]["hint"]
    code, doc, _ = tally(project, "stats", "card_day", "--plot", "nah", "--out", "x.png", "--json")
    assert code == 1 and "'nah'" in doc["error"]["message"]
    code, doc, _ = tally(project, "stats", "card_never", "--json")
    assert code == 2 and "card_never" in doc["error"]["message"] and "has no table" in doc["error"]["message"]


HOLDER: dict = {}


def test_rebackfilled_day_replaces_its_statistics_and_a_failed_computation_writes_nothing(spark, tmp_path, monkeypatch):
    rows = [(f"c{i % 5}", utc(2026, 3, 1) + dt.timedelta(hours=7 * i), float(i % 9)) for i in range(60)]
    HOLDER["df"] = spark.createDataFrame(rows, "card_id string, created timestamp, amount double")
    view = tl.FeatureView("small", entity=tl.Entity("card", keys=["card_id"]), version=1, ttl="3d",
                          source=tl.Source("charges", dataframe=lambda s: HOLDER["df"], timestamp="created"),
                          aggregations=[tl.Aggregation("sum", column="amount", windows=["1d"])])
    store.backfill(spark, view, dt.date(2026, 3, 2), dt.date(2026, 3, 6), warehouse=tmp_path, step_days=5)
    path = store.table_path(tmp_path, "small", 1)
    before = stats.recorded(store.commits(spark, path))
    HOLDER["df"] = HOLDER["df"].withColumn("amount", HOLDER["df"]["amount"] * 100)
    store.backfill(spark, view, dt.date(2026, 3, 4), dt.date(2026, 3, 4), warehouse=tmp_path)
    after = stats.recorded(store.commits(spark, path))
    assert after["2026-03-04"]["delta_version"] == 1 and after["2026-03-03"]["delta_version"] == 0
    assert after["2026-03-03"] == before["2026-03-03"]
    new_mean = after["2026-03-04"]["features"]["sum_amount_1d"]["mean"]
    table = store.read_features(spark, view, warehouse=tmp_path).where("ds = '2026-03-04'").toPandas()
    assert new_mean == pytest.approx(table["sum_amount_1d"].mean(), rel=1e-5)
    assert math.isclose(new_mean, 100 * before["2026-03-04"]["features"]["sum_amount_1d"]["mean"], rel_tol=1e-4)

    compute = stats.compute

    def boom(frame, *args):
        compute(frame, *args)  # the chunk is cached by now
        raise RuntimeError("statistics failed")

    cached = set(spark.sparkContext._jsc.getPersistentRDDs().keys())
    monkeypatch.setattr(stats, "compute", boom)
    with pytest.raises(RuntimeError, match="statistics failed"):
        store.backfill(spark, view, dt.date(2026, 3, 5), dt.date(2026, 3, 5), warehouse=tmp_path)
    assert [c["version"] for c in store.commits(spark, path)] == [0, 1]
    assert set(spark.sparkContext._jsc.getPersistentRDDs().keys()) == cached  # the cached chunk was let go

    # statistics=False (`--no-stats`) skips them (the failing pass is not even called) and commits the day; its
    # older statistics are then stale and no longer shown
    store.backfill(spark, view, dt.date(2026, 3, 5), dt.date(2026, 3, 5), warehouse=tmp_path, statistics=False)
    assert [c["version"] for c in store.commits(spark, path)] == [0, 1, 2]
    latest = stats.recorded(store.commits(spark, path))
    assert "2026-03-05" not in latest and latest["2026-03-04"] == after["2026-03-04"]


def test_drift_rule_median_and_mad_with_a_floor():
    days = [f"2026-01-{d:02d}" for d in range(1, 15)]
    flat = {d: 10.0 for d in days}
    assert drift.check(flat, "mean") == {}
    assert list(drift.check({**flat, days[9]: 12.0}, "mean")) == []  # 20 %: under the floor of a flat week
    assert list(drift.check({**flat, days[9]: 13.0}, "mean")) == [days[9]]
    noisy = dict(zip(days, [10.0, 13.0, 8.0, 11.0, 7.0, 12.0, 9.0, 14.0, 10.0, 8.0, 11.0, 13.0, 9.0, 10.0]))
    assert list(drift.check({**noisy, days[9]: 16.0}, "mean")) == []  # within 5 MADs of a noisy week
    assert list(drift.check({**noisy, days[9]: 100.0}, "mean")) == [days[9]]
    assert list(drift.check({days[0]: 1.0, days[1]: 1.0, days[2]: 50.0}, "mean")) == []  # two days: no verdict
    assert list(drift.check({**{d: 0.01 for d in days}, days[5]: 0.05}, "null_share")) == []
    assert list(drift.check({**{d: 0.01 for d in days}, days[5]: 0.2}, "null_share")) == [days[5]]
    assert list(drift.check({**flat, days[4]: None}, "mean")) == []


def test_recorded_values_are_rounded_to_six_significant_digits_and_integers_kept():
    assert stats._round(1234.56789) == 1234.57 and stats._round(7) == 7 and stats._round(float("nan")) is None
    assert json.dumps(stats._round(0.000123456789)) == "0.000123457"
