"""The retry evaluator's rules, checked on its output, and the learned policy against the fixed schedule."""

from __future__ import annotations

import pytest
from pyspark.sql import Window
from pyspark.sql import functions as F
from tally import datagen, retry
from tally.datagen._plan import MICROS_PER_DAY, make_plan
from test_datagen import content_hash

N, DAYS, SEED, TRAIN_DAYS = 8_000, 21, 7, 14


@pytest.fixture(scope="module")
def setup(spark):
    plan = make_plan(N, DAYS, SEED, "2026-01-01", None)
    attempts = datagen.generate(spark, N, DAYS, SEED)["authorizations"].cache()
    pending = retry.declines(spark, plan, TRAIN_DAYS).localCheckpoint()
    model = retry.learn(retry.payments_before(attempts, plan, TRAIN_DAYS), seed=SEED).observing(attempts)
    runs = {
        "fixed": retry.replay(spark, plan, pending, retry.fixed_policy).localCheckpoint(),
        "learned": retry.replay(spark, plan, pending, model.policy).localCheckpoint(),
    }
    yield plan, pending, model, runs, attempts
    attempts.unpersist()


def _eager(pending, n):
    """A greedy policy to stress the caps: retry every 30 minutes."""
    return pending.withColumn("_next", F.col("_t_last") + F.lit(1_800_000_000))


def test_hard_declines_are_never_retried(setup):
    _, pending, _, runs, _ = setup
    hard = pending.where(F.col("code").isin(*datagen._catalog.HARD_CODES)).select("_row")
    assert hard.count() > 0
    for name, out in runs.items():
        assert out.join(hard, "_row").count() == 0, name


def test_caps_per_card_hold_on_the_output(spark, setup):
    plan, pending, _, runs, _ = setup
    tight = retry.Caps(per_24h=1, per_30d=2)
    eager = retry.replay(spark, plan, pending, _eager, tight).localCheckpoint()
    assert eager.count() > 0
    for out, caps in ((eager, tight), (runs["fixed"], retry.Caps()), (runs["learned"], retry.Caps())):
        for width, cap in ((MICROS_PER_DAY, caps.per_24h), (30 * MICROS_PER_DAY, caps.per_30d)):
            w = Window.partitionBy("card_id").orderBy("_t").rangeBetween(-(width - 1), 0)
            worst = out.select(F.count(F.lit(1)).over(w).alias("n")).agg(F.max("n")).first()[0]
            assert worst <= cap, (caps, width, worst)
    per_payment = eager.groupBy("_row").agg(F.count(F.lit(1)).alias("n"), F.max("retry").alias("last"))
    assert per_payment.where(f"n > {retry.MAX_RETRIES} OR last > {retry.MAX_RETRIES}").count() == 0
    late = eager.join(pending.select("_row", "_t0"), "_row").where(
        F.col("_t") - F.col("_t0") > F.lit(retry.HORIZON_H * 3_600_000_000))
    assert late.count() == 0


def test_the_same_policy_twice_gives_identical_results(spark, setup):
    plan, pending, model, runs, _ = setup
    again = retry.replay(spark, plan, pending, model.policy)
    assert content_hash(again) == content_hash(runs["learned"])


def test_the_forest_learned_from_the_same_rows_in_other_partitions_is_the_same(setup):
    plan, _, model, _, attempts = setup
    again = retry.learn(retry.payments_before(attempts, plan, TRAIN_DAYS).repartition(5), seed=SEED)

    def trees(m):  # the forest's text, less its first line (the model's random uid)
        return m.model.stages[-1].toDebugString.split("\n", 1)[1]

    assert trees(again) == trees(model)


def test_the_learned_policy_recovers_more_with_no_more_attempts(setup):
    _, pending, _, runs, _ = setup
    fixed, learned = (retry.summarize(runs[k], pending) for k in ("fixed", "learned"))
    assert fixed["recovered"] > 0
    assert learned["retries"] <= fixed["retries"], (fixed, learned)
    assert learned["recovered_usd"] >= 1.1 * fixed["recovered_usd"], (fixed, learned)
