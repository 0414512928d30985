"""The sweep job's two paths give DuckDB's answers: the spine *is* the source (one row = event and query, no
union) and a separate spine (events and queries unioned). Ties on a coarse time grid, a hot key, left- and
right-closed windows, spine rows at times and for keys the source never saw."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest
import tally as tl

HOUR_US = 3_600_000_000
WINDOWS = {"30m": HOUR_US // 2, "2h": 2 * HOUR_US}


@pytest.fixture(scope="module")
def charges():
    rng = np.random.default_rng(7)
    n = 3000
    start = pd.Timestamp("2025-01-01", tz="UTC")
    return pd.DataFrame({
        "charge_id": np.arange(n),
        "card_id": np.where(rng.random(n) < 0.5, 0, rng.integers(1, 40, n)),  # card 0 is hot
        # a 10-minute grid: ties; a third of the rows a fraction of a second later (several times per sort block)
        "created": start + pd.to_timedelta(rng.integers(0, 48 * 6, n) * 600, unit="s")
        + pd.to_timedelta(np.where(rng.random(n) < 0.3, rng.integers(0, 1_000_000, n), 0), unit="us"),
        "amount": np.round(rng.lognormal(3, 1, n), 2),
    })


def _view(source):
    return tl.FeatureView(name="v", entity=tl.Entity("card", keys=["card_id"]), source=source, aggregations=[
        tl.Aggregation("count", windows=list(WINDOWS)),
        tl.Aggregation("sum", column="amount", windows=list(WINDOWS)),
        tl.Aggregation("count", windows=[tl.Window("30m", closed="right")], name="count_right"),
    ])


def _duckdb(events: pd.DataFrame, spine: pd.DataFrame) -> pd.DataFrame:
    """The same features by brute force: per spine row, every event of its card tested against the window."""
    con = duckdb.connect()
    con.register("ev", events.assign(ts=events.created.astype("int64") // 1000))
    con.register("sp", spine.assign(ts=spine.created.astype("int64") // 1000))
    cols = []
    for name, w in WINDOWS.items():
        inside = f"e.ts >= s.ts - {w} AND e.ts < s.ts"
        cols += [f"count(e.ts) FILTER (WHERE {inside}) AS v__count_{name}",
                 f"coalesce(sum(e.amount) FILTER (WHERE {inside}), 0) AS v__sum_amount_{name}"]
    cols.append(f"count(e.ts) FILTER (WHERE e.ts > s.ts - {HOUR_US // 2} AND e.ts <= s.ts) AS v__count_right")
    q = (f"SELECT s.row_id, {', '.join(cols)} FROM sp s LEFT JOIN ev e ON e.card_id = s.card_id "
         f"GROUP BY s.row_id ORDER BY s.row_id")
    return con.execute(q).df()


def _compare(got: pd.DataFrame, want: pd.DataFrame) -> None:
    got = got.sort_values("row_id").reset_index(drop=True)
    assert len(got) == len(want)
    for c in want.columns:
        if "sum" in c:
            np.testing.assert_allclose(got[c].to_numpy(float), want[c].to_numpy(float), rtol=1e-9, err_msg=c)
        else:
            assert (got[c].to_numpy() == want[c].to_numpy()).all(), c


SWEEP_CONFS = {
    "defaults": {},
    # 1 bit of key hash in the sort prefix: every key shares its group with half the others, so the sweep
    # interleaves many keys' rows (normally only keys whose hashes collide)
    "shared-groups": {"spark.tally.sweep.hashBits": "1"},
    # every key above an average task's rows swept in time buckets (card 0: 4 buckets of 12 h)
    "split": {"spark.tally.sweep.split": "always", "spark.tally.sweep.splitSample": "1.0"},
}


@pytest.fixture(params=list(SWEEP_CONFS))
def sweep_conf(spark, request):
    conf = SWEEP_CONFS[request.param]
    for k, v in conf.items():
        spark.conf.set(k, v)
    yield request.param
    for k in conf:
        spark.conf.unset(k)


def test_spine_is_the_source(spark, charges, sweep_conf):
    df = spark.createDataFrame(charges.assign(row_id=charges.charge_id))
    view = _view(tl.Source("charges", dataframe=lambda _: df, timestamp="created"))
    got = tl.training_set(spark, df, [view], timestamp="created").toPandas()
    _compare(got, _duckdb(charges, charges.assign(row_id=charges.charge_id)))


def test_separate_spine_with_new_keys_and_times(spark, charges, sweep_conf):
    rng = np.random.default_rng(8)
    m = 1500
    spine = pd.DataFrame({
        "row_id": np.arange(m),
        "card_id": np.concatenate([charges.card_id.to_numpy()[:m - 100], rng.integers(1000, 1010, 100)]),
        "created": np.concatenate([
            charges.created.to_numpy()[:m // 2],  # at event times: ties
            (pd.Timestamp("2024-12-31", tz="UTC")  # from before the first event to after the last
             + pd.to_timedelta(rng.integers(0, 60 * 60 * 60, m - m // 2), unit="s")).to_numpy()]),
    })
    spine["created"] = pd.to_datetime(spine.created, utc=True)
    events = spark.createDataFrame(charges)
    view = _view(tl.Source("charges", dataframe=lambda _: events, timestamp="created"))
    got = tl.training_set(spark, spark.createDataFrame(spine), [view], timestamp="created").toPandas()
    assert list(got.columns[:3]) == ["row_id", "card_id", "created"]
    _compare(got, _duckdb(charges, spine))


def test_hot_key_split_plan(spark, charges):
    """Which keys the sweep splits, with 4 shuffle partitions: card 0 (half of the rows) in 24 h buckets (48 h of
    events over 2 average tasks' worth of rows; never shorter than the 2 h the windows look back) — by cost
    only when more than 2 tasks run at once (on 2, a key must hold well over half of the rows to gain) — and
    never for a view with a lifetime window."""
    from tally import kernels

    df = spark.createDataFrame(charges)
    view = _view(tl.Source("charges", dataframe=lambda _: df, timestamp="created"))
    spark.conf.set("spark.tally.sweep.splitSample", "1.0")
    try:
        spark.conf.set("spark.tally.sweep.slots", "2")
        assert kernels.hot_keys(spark, df, view, partitions=4) == []
        spark.conf.set("spark.tally.sweep.slots", "16")
        [hot] = kernels.hot_keys(spark, df, view, partitions=4)
        assert hot["key"] == ["0"] and 23 * HOUR_US < hot["bucket_us"] <= 24 * HOUR_US
        spark.conf.set("spark.tally.sweep.slots", "2")
        spark.conf.set("spark.tally.sweep.split", "always")
        assert kernels.hot_keys(spark, df, view, partitions=4) == [hot]
        lifetime = tl.FeatureView(name="v", entity=view.entity, source=view.source,
                                  aggregations=[tl.Aggregation("count", windows=[tl.Window(None)])])
        assert kernels.hot_keys(spark, df, lifetime) == []
    finally:
        for k in ("split", "splitSample", "slots"):
            spark.conf.unset(f"spark.tally.sweep.{k}")
