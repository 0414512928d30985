"""Authorization attempts from the generator: determinism, documented rates, retry rules, outages, ground truth."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import functions as F
from tally import datagen
from tally.datagen import _auth
from tally.datagen._plan import make_plan
from test_datagen import content_hashes

N, DAYS, SEED = 12_000, 3, 7  # dense enough that the span's two outages hold a few dozen attempts
# The charges, disputes and refunds of generate(3_000, 14, 7) as they were before authorizations existed
# (count, sum of row hashes): adding the attempts must not move a single row.
PINNED = {
    "charges": (3000, "70586664600812264506"),
    "disputes": (15, "2131740743771816999"),
    "refunds": (48, "-31773268609028218768"),
}


@pytest.fixture(scope="module")
def frames(spark):
    out = datagen.generate(spark, N, DAYS, SEED)
    out = {name: out[name].cache() for name in ("authorizations", "authorization_truth")}
    yield out
    for df in out.values():
        df.unpersist()


def test_attempts_are_deterministic_under_any_partitioning_and_charges_do_not_move(spark):
    def hashes(partitions, shuffle_partitions):
        spark.conf.set("spark.sql.shuffle.partitions", str(shuffle_partitions))
        return content_hashes(datagen.generate(spark, 3_000, 14, SEED, partitions=partitions))

    before = spark.conf.get("spark.sql.shuffle.partitions")
    try:
        one, other = hashes(1, 2), hashes(5, 7)
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", before)
    assert one == other
    assert {name: one[name] for name in PINNED} == PINNED
    assert one["authorizations"][0] == one["authorization_truth"][0] > 3_000


def test_rates_are_in_the_documented_ranges(frames):
    r = datagen._describe.describe_authorizations(frames["authorizations"])
    assert 0.80 <= r["first_attempt_approval_rate"] <= 0.90
    assert 0.05 <= r["first_declines_hard_share"] <= 0.25
    assert 0.70 <= r["first_declines_retried_share"] <= 0.95  # the soft ones
    assert all(0.02 <= rate <= 0.40 for rate in r["retry_approval_rate_by_attempt"].values()), r
    assert set(r["retry_approval_rate_by_attempt"]) == {2, 3, 4}
    assert 1.1 <= r["attempts_per_charge"] <= 1.6


def test_hard_declines_are_never_retried_and_retries_chain_up(frames):
    a = frames["authorizations"]
    prev = a.select(
        F.col("attempt_id").alias("retry_of"), F.col("charge_id").alias("prev_charge"),
        F.col("attempt").alias("prev_attempt"), F.col("approved").alias("prev_approved"),
        F.col("category").alias("prev_category"), F.col("attempted").alias("prev_attempted"),
    )  # fmt: skip
    retries = a.where("attempt > 1")
    joined = retries.join(prev, "retry_of", "left")
    assert joined.count() == retries.count() > 0
    bad = joined.where(
        F.col("prev_charge").isNull()
        | (F.col("prev_charge") != F.col("charge_id"))
        | (F.col("prev_attempt") != F.col("attempt") - 1)
        | F.col("prev_approved")
        | (F.col("prev_category") != "soft")
        | (F.col("attempted") <= F.col("prev_attempted"))
    )
    assert bad.count() == 0, bad.limit(3).collect()
    assert a.where("attempt = 1 AND retry_of IS NOT NULL").count() == 0
    # declines carry a code, a category and (hard ones always) an advice code; approvals none of them
    shape = a.where(
        (F.col("approved") & (F.col("code").isNotNull() | F.col("category").isNotNull()))
        | (~F.col("approved") & (F.col("code").isNull() | ~F.col("category").isin("hard", "soft")))
        | ((F.col("category") == "hard") & F.col("advice_code").isNull())
    )
    assert shape.count() == 0


def test_an_issuer_outage_shows_as_an_hourly_drop(frames):
    plan = make_plan(N, DAYS, SEED, "2026-01-01", None)
    t = F.unix_micros("attempted") - F.lit(plan.start_micros)
    hour = F.floor(t / F.lit(_auth.HOUR))
    names = [iss.name for iss in datagen._catalog.ISSUERS]
    inside, hours = F.lit(False), F.lit(False)
    for issuer, lo, hi in _auth.outages(plan):
        mine = F.col("issuer") == names[issuer]
        inside = inside | (mine & (t >= lo) & (t < hi))
        hours = hours | (mine & (hour >= lo // _auth.HOUR) & (hour <= (hi - 1) // _auth.HOUR))  # clock hours it touches
    rows = frames["authorizations"].where("attempt = 1").groupBy(inside.alias("inside"), hours.alias("hours")).agg(
        F.count(F.lit(1)).alias("n"), F.sum(F.col("approved").cast("int")).alias("ok")).collect()  # fmt: skip

    def rate(keep):
        n = sum(r["n"] for r in rows if keep(r))
        return n, sum(r["ok"] for r in rows if keep(r)) / max(n, 1)

    during, clock_hours, elsewhere = rate(lambda r: r["inside"]), rate(lambda r: r["hours"]), rate(lambda r: not r["hours"])
    assert during[0] >= 10 and during[1] < 0.3  # first attempts: retries are declined more anyway, (during, clock_hours, elsewhere)
    assert clock_hours[1] < 0.6 and elsewhere[1] > 0.8, (during, clock_hours, elsewhere)


def test_truth_joins_one_to_one_and_is_calibrated(frames):
    a, truth = frames["authorizations"], frames["authorization_truth"]
    joined = a.join(truth, "attempt_id")
    assert joined.count() == a.count() == truth.count() == truth.select("attempt_id").distinct().count()
    stats = joined.groupBy(F.col("attempt") == 1).agg(
        F.count(F.lit(1)).alias("n"),
        F.avg(F.col("approved").cast("double")).alias("observed"),
        F.avg("approval_probability").alias("expected"),
        F.min("approval_probability").alias("lo"),
        F.max("approval_probability").alias("hi"),
    )
    for r in stats.collect():
        assert 0.0 <= r["lo"] and r["hi"] <= 1.0
        assert abs(r["observed"] - r["expected"]) < 3 * (r["expected"] * (1 - r["expected"]) / r["n"]) ** 0.5 + 0.005, r


def test_the_acceptance_pack_sees_last_declines_and_outages(spark, frames, tmp_path):
    """features/acceptance.py on the generated attempts: a retry's card features name the card's last decline
    (brute force), and the issuer's 1-hour approval rate drops within an outage."""
    import tally as tl
    from tally import registry

    a = frames["authorizations"]
    a.write.parquet(str(tmp_path / "authorizations"))
    views = registry.load(Path(__file__).resolve().parents[1] / "features").views
    plan = make_plan(N, DAYS, SEED, "2026-01-01", None)
    names = [iss.name for iss in datagen._catalog.ISSUERS]
    t = F.unix_micros("attempted") - F.lit(plan.start_micros)
    settled = F.lit(False)  # first attempts at least 20 minutes into an outage of their issuer
    for issuer, lo, hi in _auth.outages(plan):
        settled = settled | ((F.col("issuer") == names[issuer]) & (t >= lo + 1_200_000_000) & (t < hi))
    spine = a.select(
        "attempt_id", "card_id", "issuer", "attempted", "attempt", "retry_of", (settled & (F.col("attempt") == 1)).alias("outage")
    )
    out = tl.training_set(spark, spine, [views["auth_card_last_decline"], views["auth_issuer"]], "attempted",
                          warehouse=tmp_path / "wh", data=tmp_path)
    # brute force: the card's latest declined attempt strictly before the retry
    declines = a.where("NOT approved").select("card_id", F.col("attempted").alias("d_at"), F.col("code").alias("d_code"))
    retries = out.where("attempt > 1")
    expected = retries.join(declines, "card_id").where("d_at < attempted").groupBy("attempt_id").agg(
        F.max_by("d_code", "d_at").alias("exp_code"), F.max("d_at").alias("exp_at"))
    check = retries.join(expected, "attempt_id", "left").agg(
        F.count(F.lit(1)),
        F.sum((F.col("auth_card_last_decline__last_code") != F.col("exp_code")).cast("int")),
        F.sum((F.abs(F.col("auth_card_last_decline__seconds_since_decline")
                     - (F.unix_micros("attempted") - F.unix_micros("exp_at")) / 1e6) > 1e-3).cast("int")),
        F.sum(F.col("exp_code").isNull().cast("int")),
    ).first()  # fmt: skip
    assert check[0] > 0 and tuple(check[1:]) == (0, 0, 0), check  # every retry follows a decline of its card
    rates = dict(out.where("attempt = 1").groupBy("outage").agg(F.avg("auth_issuer__approval_rate_1h")).collect())
    assert rates[True] < 0.5 and rates[True] < 0.4 * rates[False], rates  # the rate counts retries: ~0.73 outside
