"""Every line of DESIGN.md "Time semantics", pinned on hand-computed cases through the real engine."""

from __future__ import annotations

import datetime as dt

import pytest
import tally as tl
from tally import kernels
from tally.errors import DefinitionError
from utc import row, utc

# 2026-03-01: the process's zone (TZ=America/New_York, Europe/Paris) changes offset within a few weeks of T0, so
# a naive datetime reaching Spark anywhere would shift the cases that reach across it (400 days, 10 days).
T0 = utc(2026, 3, 1, 12)


def at(**delta) -> dt.datetime:
    return T0 + dt.timedelta(**delta)


CARD = tl.Entity("card", keys=["card_id"])
SPLIT_CONF = ("spark.tally.sweep.split", "spark.tally.sweep.splitSample")


@pytest.fixture(autouse=True)
def whole_keys(spark):
    """Keys are swept whole unless a case asks for the split (the default `auto` decides by sampling)."""
    spark.conf.set("spark.tally.sweep.split", "off")
    yield
    for key in SPLIT_CONF:
        spark.conf.unset(key)


@pytest.fixture(params=["whole-keys", "split-keys"])
def sweep(request, spark, whole_keys):
    """Cases whose events span several windows run twice: keys swept whole, and every key split into time
    buckets (the hot-key path). In the split run `features` checks that the plan really split the key."""
    split = request.param == "split-keys"
    if split:
        spark.conf.set("spark.tally.sweep.split", "always")
        spark.conf.set("spark.tally.sweep.splitSample", "1.0")
    return split


def view(spark, events, aggregations, *, available_at=None, ttl=None, entity=CARD, schema=None):
    schema = schema or "card_id string, created timestamp, amount double" + (", known timestamp" if available_at else "")
    df = spark.createDataFrame(events, schema)
    source = tl.Source("charges", dataframe=lambda s: df, timestamp="created", available_at=available_at)
    return tl.FeatureView("v", entity=entity, source=source, aggregations=aggregations, ttl=ttl)


def features(spark, v, queries, columns, spine_schema="card_id string, ts timestamp", *, split=False):
    if split:  # the case ran on the split path: the plan put the key in more than one time bucket
        hot = kernels.hot_keys(spark, v.source.dataframe(spark), v)
        assert hot and all(h["bucket_us"] > 0 for h in hot), f"the sweep did not split any key of view '{v.name}'"
    spine = spark.createDataFrame(queries, spine_schema)
    out = tl.training_set(spark, spine, [v], timestamp="ts").orderBy(*spine.columns).collect()
    return [tuple(r[f"v__{c}"] for c in columns) for r in out]


EVENTS = [("c1", at(hours=-2), 1.0), ("c1", at(hours=-1), 2.0), ("c1", at(), 4.0), ("c1", at(hours=1), 8.0)]


def test_left_closed_window_excludes_event_at_query_time_and_includes_start(spark, sweep):
    v = view(spark, EVENTS, [tl.Aggregation("sum", column="amount", windows=["1h"])])
    # window [t-1h, t): at T0 holds the event at T0-1h (start included) but not the one at T0 (end excluded)
    assert features(spark, v, [("c1", at())], ["sum_amount_1h"], split=sweep) == [(2.0,)]


def test_right_closed_window_includes_event_at_query_time_and_excludes_start(spark, sweep):
    v = view(spark, EVENTS, [tl.Aggregation("sum", column="amount", windows=[tl.Window("1h", closed="right")])])
    # window (t-1h, t]: holds T0 (the query's own row) but not T0-1h
    assert features(spark, v, [("c1", at())], ["sum_amount_1h"], split=sweep) == [(4.0,)]


def test_delay_shifts_the_window_into_the_past(spark, sweep):
    v = view(spark, EVENTS, [tl.Aggregation("sum", column="amount", windows=[tl.Window("1h", delay="1h")])])
    # [t-2h, t-1h) at T0: only the event at T0-2h
    assert features(spark, v, [("c1", at())], ["sum_amount_1h_delay_1h"], split=sweep) == [(1.0,)]


def test_right_closed_delay_includes_t_minus_d(spark, sweep):
    v = view(spark, EVENTS, [tl.Aggregation("sum", column="amount", windows=[tl.Window("1h", delay="1h", closed="right")])])
    # (t-2h, t-1h] at T0: only the event at T0-1h
    assert features(spark, v, [("c1", at())], ["sum_amount_1h_delay_1h"], split=sweep) == [(2.0,)]


def test_lifetime_window_counts_every_event_before_t(spark):
    v = view(spark, EVENTS, [tl.Aggregation("count", windows=[None]),
                             tl.Aggregation("count", windows=[tl.Window(None, closed="right")], name="count_incl")])
    assert features(spark, v, [("c1", at()), ("c1", at(days=400))], ["count_lifetime", "count_incl"]) == [(2, 3), (4, 4)]


def test_lifetime_window_with_delay_counts_events_before_t_minus_d(spark):
    v = view(spark, EVENTS, [tl.Aggregation("count", windows=[tl.Window(None, delay="1h")])])
    assert features(spark, v, [("c1", at())], ["count_lifetime_delay_1h"]) == [(1,)]


def test_available_at_hides_events_until_they_are_known(spark):
    events = [("c1", at(days=-10), 1.0, at(days=-1)), ("c1", at(days=-10), 2.0, at()), ("c1", at(days=-9), 4.0, at(days=-9))]
    v = view(spark, events, [tl.Aggregation("sum", column="amount", windows=["30d"])], available_at="known")
    # at T0 (left): the label known at T0 is not yet visible; an event known when it happened is
    assert features(spark, v, [("c1", at()), ("c1", at(seconds=1))], ["sum_amount_30d"]) == [(5.0,), (7.0,)]


def test_available_at_right_closed_sees_labels_known_at_exactly_t(spark):
    events = [("c1", at(days=-10), 2.0, at())]
    v = view(spark, events, [tl.Aggregation("sum", column="amount", windows=[tl.Window("30d", closed="right")])],
             available_at="known")
    assert features(spark, v, [("c1", at())], ["sum_amount_30d"]) == [(2.0,)]


def test_available_at_after_window_end_never_enters(spark):
    # the event leaves the 1d window at day -9, its label arrives at day -1: it is never in the window
    events = [("c1", at(days=-10), 2.0, at(days=-1))]
    v = view(spark, events, [tl.Aggregation("count", windows=["1d"])], available_at="known")
    assert features(spark, v, [("c1", at(days=-9, hours=-12)), ("c1", at())], ["count_1d"]) == [(0,), (0,)]


# Events of the same card far outside a case's windows: they change none of its values, but make the card span
# several time buckets, so that the split run of the case is a real split.
FAR = [("c1", at(hours=-10), 1000.0), ("c1", at(hours=10), 1000.0)]


def test_ties_at_a_window_boundary_are_all_in_or_all_out(spark, sweep):
    events = [("c1", at(hours=-1), 1.0), ("c1", at(hours=-1), 2.0), ("c1", at(hours=-1), 4.0), ("c1", at(), 8.0),
              ("c1", at(), 16.0), *FAR]
    v = view(spark, events, [tl.Aggregation("sum", column="amount", windows=["1h"]),
                             tl.Aggregation("sum", column="amount", windows=[tl.Window("1h", closed="right")], name="r")])
    # left [t-1h, t): all three at t-1h in, both at t out; right (t-1h, t]: the reverse
    assert features(spark, v, [("c1", at())], ["sum_amount_1h", "r"], split=sweep) == [(7.0, 24.0)]


def test_empty_window_gives_zero_count_and_sum_and_default_elsewhere(spark, sweep):
    amount = {"column": "amount", "windows": ["1m"]}
    v = view(spark, EVENTS, [
        tl.Aggregation("count", windows=["1m"]), tl.Aggregation("sum", **amount),
        tl.Aggregation("mean", **amount), tl.Aggregation("max", **amount), tl.Aggregation("last", **amount),
        tl.Aggregation("variance", **amount),
        tl.Aggregation("mean", **amount, name="mean_d", default=-1.0),
        tl.Aggregation("max", **amount, name="max_d", default=-2.0),
        tl.Aggregation("last", **amount, name="last_d", default=-3.0),
        tl.Aggregation("sum", **amount, name="sum_d", default=-4.0),  # a sum is never empty: 0, not the default
    ])
    columns = ["count_1m", "sum_amount_1m", "mean_amount_1m", "max_amount_1m", "last_amount_1m",
               "variance_amount_1m", "mean_d", "max_d", "last_d", "sum_d"]
    got = features(spark, v, [("c1", at(minutes=30)), ("c1", at(hours=1, seconds=30))], columns, split=sweep)
    # 12:30: nothing in [t-1m, t); 13:00:30: the event of 13:00 (8.0) alone, where a default must not apply
    assert got == [(0, 0.0, None, None, None, None, -1.0, -2.0, -3.0, 0.0),
                   (1, 8.0, 8.0, 8.0, 8.0, None, 8.0, 8.0, 8.0, 8.0)]


def test_null_values_are_skipped_and_all_null_window_is_empty(spark):
    events = [("c1", at(hours=-1), None), ("c1", at(minutes=-30), 3.0), ("c2", at(minutes=-30), None)]
    v = view(spark, events, [tl.Aggregation("count", column="amount", windows=["1h"], name="n_amount"),
                             tl.Aggregation("count", windows=["1h"])])
    assert features(spark, v, [("c1", at()), ("c2", at())], ["n_amount", "count_1h"]) == [(1, 2), (0, 1)]


def test_ttl_nulls_features_of_entities_without_recent_events(spark):
    v = view(spark, EVENTS, [tl.Aggregation("count", windows=[None])], ttl="1d")
    assert features(spark, v, [("c1", at(hours=2)), ("c1", at(days=2))], ["count_lifetime"]) == [(4,), (None,)]


def test_composite_entity_keys(spark):
    pair = tl.Entity("issuer_mcc", keys=["issuer", "mcc"])
    events = [("i1", "5411", at(hours=-1), 1.0), ("i1", "5999", at(hours=-1), 2.0), ("i2", "5411", at(hours=-1), 4.0)]
    v = view(spark, events, [tl.Aggregation("sum", column="amount", windows=["1d"])], entity=pair,
             schema="issuer string, mcc string, created timestamp, amount double")
    got = features(spark, v, [("i1", "5411", at()), ("i1", "5999", at()), ("i2", "5999", at())], ["sum_amount_1d"],
                   spine_schema="issuer string, mcc string, ts timestamp")
    assert got == [(1.0,), (2.0,), (0.0,)]


def test_spine_key_absent_from_source_gets_empty_features(spark):
    v = view(spark, EVENTS, [tl.Aggregation("count", windows=["1d"])])
    assert features(spark, v, [("nobody", at())], ["count_1d"]) == [(0,)]


def test_spine_times_before_first_and_after_last_event(spark):
    v = view(spark, EVENTS, [tl.Aggregation("count", windows=["1d"]), tl.Aggregation("count", windows=[None])])
    got = features(spark, v, [("c1", at(days=-5)), ("c1", at(days=5))], ["count_1d", "count_lifetime"])
    assert got == [(0, 0), (0, 4)]


def test_microsecond_precision_at_the_boundary(spark, sweep):
    events = [("c1", at(hours=-1, microseconds=1), 1.0), ("c1", at(hours=-1), 2.0), ("c1", at(hours=-1, microseconds=-1), 4.0),
              ("c1", at(microseconds=-1), 8.0), ("c1", at(), 16.0), *FAR]
    v = view(spark, events, [tl.Aggregation("sum", column="amount", windows=["1h"])])
    # [t-1h, t): the events at t-1h and t-1h+1us and t-1us; not t-1h-1us, not t
    assert features(spark, v, [("c1", at())], ["sum_amount_1h"], split=sweep) == [(11.0,)]


def test_output_keeps_every_spine_column_and_one_row_per_spine_row(spark):
    v = view(spark, EVENTS, [tl.Aggregation("count", windows=["1d"])])
    rows = [("c1", at(), "a", 1), ("c1", at(), "a", 1), ("c9", at(), None, 2), ("c1", at(hours=2), "b", None)]
    spine = spark.createDataFrame(rows, "card_id string, ts timestamp, label string, n int")
    out = tl.training_set(spark, spine, [v], timestamp="ts")
    assert out.columns == ["card_id", "ts", "label", "n", "v__count_1d"]
    # duplicated spine rows stay two rows; every spine value comes back unchanged beside its features
    got = sorted((row(r) for r in out.collect()), key=repr)
    assert got == sorted([("c1", at(), "a", 1, 2), ("c1", at(), "a", 1, 2), ("c9", at(), None, 2, 0),
                          ("c1", at(hours=2), "b", None, 4)], key=repr)


def test_spine_may_be_the_source_itself(spark, sweep):
    events = [*EVENTS, ("c1", at(minutes=30), 16.0)]
    v = view(spark, events, [tl.Aggregation("count", windows=[tl.Window("1h", closed="right")]),
                             tl.Aggregation("sum", column="amount", windows=[tl.Window("1h", closed="right")])])
    if sweep:
        assert kernels.hot_keys(spark, v.source.dataframe(spark), v), "the sweep did not split the card"
    spine = v.source.dataframe(spark)  # the source's own plan: every row is both an event and a query
    got = [(r.v__count_1h, r.v__sum_amount_1h)
           for r in tl.training_set(spark, spine, [v], timestamp="created").orderBy("created").collect()]
    # (t-1h, t] holds the row itself and the events of the hour before it, not the one exactly 1h earlier
    assert got == [(1, 1.0), (1, 2.0), (1, 4.0), (2, 20.0), (2, 24.0)]


def test_bad_window_string_is_refused_naming_it():
    with pytest.raises(DefinitionError, match="7x"):
        tl.Aggregation("count", windows=["7x"])


def test_negative_delay_is_refused():
    with pytest.raises(DefinitionError, match="negative"):
        tl.Window("1d", delay="-7d")
