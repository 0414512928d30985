"""Sources as the engine sees them: derived columns and row filters, and the quarantine policy for bad rows."""

from __future__ import annotations

import datetime as dt

import oracle
import pytest
import tally as tl
from tally import store
from tally.errors import DefinitionError
from utc import aware, midnight, utc

CARD = tl.Entity("card", keys=["card_id"])
DAY = dt.date(2026, 7, 1)
SCHEMA = "charge_id string, card_id string, created timestamp, amount_cents bigint, status string"


def t(hours: float) -> dt.datetime:
    return midnight(DAY) + dt.timedelta(hours=hours)


ROWS = [("e1", "c1", t(1), 1000, "ok"), ("e2", "c1", t(2), 250, "declined"), ("e3", "c1", t(3), 125, "ok"),
        ("e4", "c2", t(4), 4000, "ok"), ("e5", "c2", t(5), 99, "refunded"), ("e6", "c1", t(-30), 700, "ok")]


def test_derived_columns_and_a_filter_shape_what_the_views_aggregate(spark):
    df = spark.createDataFrame(ROWS, SCHEMA)
    source = tl.Source("charges", dataframe=lambda s: df, timestamp="created",
                       columns={"amount": "CAST(amount_cents AS DOUBLE) / 100", "big": "amount_cents >= 1000"},
                       filter="status <> 'declined' AND amount_cents > 100")
    v = tl.FeatureView("v", entity=CARD, source=source, aggregations=[
        tl.Aggregation("sum", column="amount", windows=["1d"]), tl.Aggregation("count", windows=["1d", None]),
        tl.Aggregation("sum", column="big", windows=["1d"], name="big_1d")])
    spine = spark.createDataFrame([("c1", t(6)), ("c2", t(6)), ("c1", t(2.5))], "card_id string, ts timestamp")
    got = sorted((r.card_id, aware(r.ts), r.v__sum_amount_1d, r.v__count_1d, r.v__count_lifetime, r.v__big_1d)
                 for r in tl.training_set(spark, spine, [v], timestamp="ts").collect())
    # c1 at 06:00: e1 (10.00) and e3 (1.25) pass the filter, e2 is declined; e6 (30 h earlier) only in lifetime
    # c2 at 06:00: e4 (40.00); e5 (99 cents) is filtered out; c1 at 02:30: e1 only
    assert got == sorted([("c1", t(6), 11.25, 2, 3, 1), ("c2", t(6), 40.0, 1, 1, 1), ("c1", t(2.5), 10.0, 1, 2, 1)])


@pytest.mark.parametrize("kwargs,needle", [
    ({"columns": {"amount": "amount_cents +* 2"}}, "derived column 'amount'"),
    ({"filter": "no_such_column > 1"}, "filter 'no_such_column > 1'"),
])
def test_invalid_derived_column_or_filter_is_refused_naming_it(spark, kwargs, needle):
    df = spark.createDataFrame(ROWS, SCHEMA)
    source = tl.Source("charges", dataframe=lambda s: df, timestamp="created", **kwargs)
    v = tl.FeatureView("v", entity=CARD, source=source, aggregations=[tl.Aggregation("count", windows=["1d"])])
    spine = spark.createDataFrame([("c1", t(6))], "card_id string, ts timestamp")
    with pytest.raises(DefinitionError, match="source 'charges'") as err:
        tl.training_set(spark, spine, [v], timestamp="ts").collect()
    assert needle in str(err.value)


# Good rows, then rows each failing one contract: a null key, a negative amount, and one id used twice.
GOOD = [(f"g{i}", f"c{i % 3}", t(i), 100 * (i + 1), "ok") for i in range(12)]
BAD = [("n1", None, t(2.5), 100, "ok"), ("neg", "c1", t(3.5), -5, "ok"),
       ("dup", "c2", t(4.5), 300, "ok"), ("dup", "c2", t(4.5), 300, "ok")]


def quarantine_view(df):
    source = tl.Source("charges", dataframe=lambda s: df, timestamp="created", id="charge_id", on_invalid="quarantine",
                       checks=[tl.Check.ge("amount_cents", 0)])
    return tl.FeatureView("spend", entity=CARD, source=source, ttl="2d", aggregations=[
        tl.Aggregation("count", windows=["1d"]), tl.Aggregation("sum", column="amount_cents", windows=["1d"])])


def test_quarantine_sets_bad_rows_aside_with_their_reason_and_backfills_the_good_ones(spark, tmp_path):
    """Null keys and failed checks are quarantined row by row; an id used twice cannot say which copy is right,
    so every copy is quarantined. The features are those of the good rows alone."""
    df = spark.createDataFrame(GOOD + BAD, SCHEMA)
    v = quarantine_view(df)
    [result] = store.backfill(spark, v, DAY, DAY, warehouse=tmp_path)
    assert result["status"] == "written" and result["quarantined"] == 4
    held = spark.read.format("delta").load(str(tmp_path / "quarantine" / "charges")).collect()
    reasons = sorted((r.charge_id, r._tally_reason) for r in held)
    assert [c for c, _ in reasons] == ["dup", "dup", "n1", "neg"]
    assert "card_id not_null" in dict(reasons)["n1"] and "amount_cents ge(0)" in dict(reasons)["neg"]
    assert all("charge_id unique" in r for c, r in reasons if c == "dup")
    table = {r.card_id: (r.count_1d, r.sum_amount_cents_1d) for r in store.read_features(spark, v, warehouse=tmp_path).collect()}
    events = [{"card_id": k, "ts": oracle.micros(ts), "amount_cents": a} for _, k, ts, a, _ in GOOD]
    want = oracle.features(v, events, [((c,), oracle.micros(midnight(DAY + dt.timedelta(days=1)))) for c in sorted(table)])
    assert table == {c: (w["count_1d"], w["sum_amount_cents_1d"]) for c, w in zip(sorted(table), want)}
    assert set(table) == {"c0", "c1", "c2"}


def test_quarantine_applies_to_training_sets_too(spark):
    """A temporal view over a quarantining source computes from the good rows, as its backfill does."""
    v = quarantine_view(spark.createDataFrame(GOOD + BAD, SCHEMA))
    spine = spark.createDataFrame([("c1", t(12)), ("c2", t(12))], "card_id string, ts timestamp")
    got = sorted((r.card_id, r.spend__count_1d, r.spend__sum_amount_cents_1d)
                 for r in tl.training_set(spark, spine, [v], timestamp="ts").collect())
    good = {"c1": [a for _, k, ts, a, _ in GOOD if k == "c1" and ts < t(12)],
            "c2": [a for _, k, ts, a, _ in GOOD if k == "c2" and ts < t(12)]}
    assert got == [(k, len(a), sum(a)) for k, a in sorted(good.items())]


def test_quarantine_still_refuses_a_source_of_the_wrong_shape(spark, tmp_path):
    from tally.errors import DataError

    df = spark.createDataFrame([], SCHEMA)
    with pytest.raises(DataError, match="has rows"):
        store.backfill(spark, quarantine_view(df), DAY, DAY, warehouse=tmp_path)
    assert not (tmp_path / "features").exists() and not (tmp_path / "quarantine").exists()


def test_timestamps_given_with_an_offset_are_the_same_instants(spark):
    """The same instant written in UTC and with a +05:30 offset gives the same features (nothing is local)."""
    kolkata = dt.timezone(dt.timedelta(hours=5, minutes=30))
    rows_utc = [("c1", utc(2026, 3, 8, 6, 30), 1.0), ("c1", utc(2026, 3, 8, 7, 30), 2.0)]
    rows_ist = [(k, ts.astimezone(kolkata), a) for k, ts, a in rows_utc]
    out = []
    for rows in (rows_utc, rows_ist):
        df = spark.createDataFrame(rows, "card_id string, created timestamp, amount double")
        v = tl.FeatureView("v", entity=CARD, source=tl.Source("s", dataframe=lambda s, df=df: df, timestamp="created"),
                           aggregations=[tl.Aggregation("sum", column="amount", windows=["1h"])])
        spine = spark.createDataFrame([("c1", utc(2026, 3, 8, 7, 30))], "card_id string, ts timestamp")
        out.append([r.v__sum_amount_1h for r in tl.training_set(spark, spine, [v], timestamp="ts").collect()])
    assert out == [[1.0], [1.0]]
