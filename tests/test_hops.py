"""Hopped windows (DESIGN.md, "Online serving and streaming"): the start rounds down to a hop boundary of the UTC
epoch, the end is exact, and the offline engine computes them exactly — pinned on hand-computed cases."""

from __future__ import annotations

import datetime as dt

import pytest
import tally as tl
from tally.errors import DefinitionError

UTC = dt.timezone.utc
T = dt.datetime(2026, 3, 1, 12, 30, tzinfo=UTC)  # the query; with w = 3h, t - w = 09:30 rounds down to 09:00
CARD = tl.Entity("card", keys=["card_id"])


def at(h: int, m: int = 0, us: int = 0) -> dt.datetime:
    return dt.datetime(2026, 3, 1, h, m, tzinfo=UTC) + dt.timedelta(microseconds=us)


def counts(spark, events, windows, queries=(T,)):
    df = spark.createDataFrame([("c1", ts) for ts in events], "card_id string, created timestamp")
    view = tl.FeatureView("h", entity=CARD, source=tl.Source("e", dataframe=lambda s: df, timestamp="created"),
                          aggregations=[tl.Aggregation("count", windows=[w], name=f"n{i}") for i, w in enumerate(windows)])
    spine = spark.createDataFrame([("c1", q) for q in queries], "card_id string, ts timestamp")
    out = tl.training_set(spark, spine, [view], timestamp="ts").orderBy("ts").collect()
    return [tuple(r[f"h__n{i}"] for i in range(len(windows))) for r in out]


def test_a_hopped_window_starts_at_the_hop_boundary_below_t_minus_w_inclusive(spark):
    events = [at(8, 59, 59_999_999), at(9), at(9, 15), at(12, 29)]
    # exact [09:30, 12:30): only 12:29; hopped [09:00, 12:30): 09:00, 09:15 and 12:29 — not 08:59:59.999999
    assert counts(spark, events, ["3h", tl.Window("3h", hop="1h")]) == [(1, 3)]


def test_a_hopped_windows_end_is_exact_left_closed_excludes_t(spark):
    assert counts(spark, [at(12, 29, 59_999_999), at(12, 30)], [tl.Window("3h", hop="1h")]) == [(1,)]


def test_right_closed_hopped_window_includes_t_and_still_includes_its_rounded_start(spark):
    events = [at(9), at(12, 30), at(12, 30, 1)]
    assert counts(spark, events, [tl.Window("3h", hop="1h", closed="right"), tl.Window("3h", closed="right")]) == [(2, 1)]


def test_a_delay_moves_both_ends_and_the_start_rounds_down_after_the_shift(spark):
    # d = 1h: exact end t - d = 11:30; start t - d - w = 08:30, rounded down to 08:00
    events = [at(7, 59), at(8), at(11, 29), at(11, 30)]
    assert counts(spark, events, [tl.Window("3h", delay="1h", hop="1h")]) == [(2,)]


def test_ties_at_the_rounded_start_are_all_in_and_just_before_it_all_out(spark):
    events = [at(9)] * 3 + [at(8, 59, 59_999_999)] * 2
    assert counts(spark, events, [tl.Window("3h", hop="1h")]) == [(3,)]


def test_a_query_on_a_hop_boundary_equals_the_exact_window(spark):
    events = [at(8, 59), at(9), at(11, 59)]
    assert counts(spark, events, ["3h", tl.Window("3h", hop="1h")], queries=[at(12)]) == [(2, 2)]


def test_hops_are_validated_and_online_views_get_the_default_hop():
    with pytest.raises(DefinitionError, match="lifetime window takes no hop"):
        tl.Window(None, hop="1h")
    with pytest.raises(DefinitionError, match="hop '2h' is longer than the window"):
        tl.Window("1h", hop="2h")
    with pytest.raises(DefinitionError, match="'7x' is not a duration"):
        tl.Window("1h", hop="7x")
    src = tl.Source("e", path="e", timestamp="created")
    aggs = [tl.Aggregation("count", windows=["10m", "2h", "24h", "30d", None, tl.Window("7d", hop="6h")])]
    offline = tl.FeatureView("v", entity=CARD, source=src, aggregations=aggs)
    online = tl.FeatureView("v", entity=CARD, source=src, aggregations=aggs, online=True)
    assert [f.window.hop for f in offline.features] == [None] * 5 + ["6h"]
    # the largest of 1m, 5m, 1h, 1d that is at most length / 24; lifetime windows need none
    assert [f.window.hop for f in online.features] == ["1m", "5m", "1h", "1d", None, "6h"]
    assert "hop_us" not in offline.spec()["features"][0]["window"]  # exact windows keep their old fingerprints
    assert online.fingerprint != offline.fingerprint
