"""When to retry a soft decline: an offline evaluator on the generator's ground truth, a fixed schedule and a
learned policy (docs/retry.md).

    result = retry.evaluate(spark, charges=50_000, days=30, seed=7)   # {"fixed": {...}, "learned": {...}, ...}

The evaluator (`replay`) starts from the soft-declined first attempts of a generated data set and asks a policy,
after each decline, when to retry (or to stop). Each retry's outcome is drawn from the generator's own approval
model at the retry's time (`datagen._auth.retry_probability`) with the generator's random number for that
charge's n-th retry, so two policies meet the same issuers and the same luck, and the only difference is their
timing. Rules, checked on the output by tests/test_retry.py:

1. Hard declines are never retried (they are not even offered to the policy).
2. At most MAX_RETRIES retries per payment, none later than HORIZON_H after its first attempt.
3. Network caps per card (`Caps`): a retry is admitted only if the card's retries in any 24 h (and 30 days)
   window holding it stay within the cap, counting retries of all the card's payments.

A policy is a function (pending declines, retry number n) -> the same rows with `_next`, the time of the next
retry in micros after the data's start (null: stop). `fixed_policy` is the merchants' schedule (+1 h, +24 h,
+72 h after the first attempt); `learn` trains a Spark MLlib model on observed retries (mostly the randomised
delay experiment) and `RetryModel.policy` retries at the delay it predicts best, when that is likely enough.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import RandomForestClassifier
from pyspark.ml.feature import VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from tally.datagen import _auth
from tally.datagen import _catalog as cat
from tally.datagen import _sql as S
from tally.datagen._charges import charges_with_truth
from tally.datagen._plan import MICROS_PER_DAY, Plan, make_plan
from tally.errors import UsageError

HOUR = 3_600_000_000
MAX_RETRIES = 3
HORIZON_H = 7 * 24  # no retry later than a week after the first attempt
CANDIDATE_DELAYS_H = (0.25, 1.0, 2.0, 4.0, 8.0, 12.0, 24.0, 36.0, 48.0, 72.0, 96.0, 120.0)
FEATURES = ("code_idx", "advice_idx", "retry", "log_since_prev_h", "log_since_first_h", "local_hour", "log_usd",
            "issuer_rate")  # fmt: skip
_ADVICE = (cat.ADVICE_TRY_LATER,) + tuple(a for a, _ in cat.ADVICE_RETRY_AFTER)


@dataclass(frozen=True)
class Caps:
    """Modeled network caps on retries per card (after Visa's 15 reattempts in 30 days and Mastercard's
    excessive-retry rules): values of this simulation, not the networks' legal terms."""

    per_24h: int = 4
    per_30d: int = 15


# -- features shared by training rows and candidate retries ------------------------------------------------


def issuer_hourly_rates(attempts: DataFrame) -> DataFrame:
    """Approval rate per (issuer, UTC clock hour) of the observed attempts: what a merchant sees of an outage."""
    return attempts.groupBy("issuer", F.floor(F.unix_micros("attempted") / F.lit(HOUR)).alias("_hour")).agg(
        F.avg(F.col("approved").cast("double")).alias("issuer_rate")
    )


def _features(df: DataFrame, rates: DataFrame, start_us: int) -> DataFrame:
    """FEATURES of a retry at `_next` (micros after `start_us`) decided at `_t_last`, first attempt `_t0`.

    Inputs: code and advice_code of the first decline, `retry` (1-based), card_country, amount, currency,
    issuer. The issuer's rate is that of the last complete clock hour before the decision (no look-ahead)."""
    decided = F.floor((F.lit(start_us) + F.col("_t_last")) / F.lit(HOUR)) - F.lit(1)
    df = df.join(rates.withColumnRenamed("_hour", "_rate_hour"),
                 (df["issuer"] == rates["issuer"]) & (decided == F.col("_rate_hour")), "left")
    df = df.drop(rates["issuer"]).drop("_rate_hour")

    def index(values, col: str) -> Column:
        return F.coalesce(F.array_position(F.array(*map(F.lit, values)), F.col(col)).cast("double"), F.lit(0.0))

    return df.select(
        "*",
        index(cat.SOFT_CODES, "code").alias("code_idx"),
        index(_ADVICE, "advice_code").alias("advice_idx"),
        F.log1p((F.col("_next") - F.col("_t_last")) / F.lit(float(HOUR))).alias("log_since_prev_h"),
        F.log1p((F.col("_next") - F.col("_t0")) / F.lit(float(HOUR))).alias("log_since_first_h"),
        _auth.local_hour(S.col("_next"), S.col("card_country")).cast("double").alias("local_hour"),
        S.log(_auth.usd(S.col("amount"), S.col("currency"))).alias("log_usd"),
    ).fillna({"issuer_rate": -1.0})


def training_rows(attempts: DataFrame, start_us: int) -> DataFrame:
    """The observed retries of `authorizations` as (FEATURES, label): each retry with its payment's first decline."""
    first = attempts.where("attempt = 1 AND NOT approved").select(
        "charge_id", "code", "advice_code", F.unix_micros("attempted").alias("_first_abs"))
    prev = attempts.select(F.col("attempt_id").alias("retry_of"), F.unix_micros("attempted").alias("_prev_abs"))
    retries = attempts.where("attempt > 1").drop("code", "advice_code").join(first, "charge_id").join(prev, "retry_of")
    rows = retries.select(
        "charge_id", "issuer", "card_country", "amount", "currency", "code", "advice_code",
        (F.col("attempt") - 1).alias("retry"),
        (F.col("_first_abs") - F.lit(start_us)).alias("_t0"),
        (F.col("_prev_abs") - F.lit(start_us)).alias("_t_last"),
        (F.unix_micros("attempted") - F.lit(start_us)).alias("_next"),
        F.col("approved").cast("double").alias("label"),
    )  # fmt: skip
    return _features(rows, issuer_hourly_rates(attempts), start_us)


# -- the learner -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryModel:
    """A fitted model of P(retry approved | first decline, delays, hour, amount, issuer rate) and its policy."""

    model: PipelineModel
    rates: DataFrame
    start_us: int
    min_probability: float = 0.1

    def observing(self, attempts: DataFrame) -> RetryModel:
        """The same model reading issuer rates from these attempts (e.g. all traffic up to the replayed days:
        a decision only reads the hour before it)."""
        return replace(self, rates=issuer_hourly_rates(attempts))

    def predict(self, candidates: DataFrame) -> DataFrame:
        scored = self.model.transform(_features(candidates, self.rates, self.start_us))
        return scored.withColumn("_p_hat", vector_to_array("probability")[1])

    def policy(self, pending: DataFrame, n: int) -> DataFrame:
        """Retry at the candidate delay with the highest predicted approval (the earliest among equals), if
        that is at least `min_probability`; never after HORIZON_H."""
        grid = pending.sparkSession.createDataFrame([(d,) for d in CANDIDATE_DELAYS_H], "_delay_h double")
        cand = pending.crossJoin(grid).withColumn(
            "_next", F.col("_t_last") + (F.col("_delay_h") * F.lit(float(HOUR))).cast("long")
        ).withColumn("retry", F.lit(n))
        cand = cand.where(F.col("_next") - F.col("_t0") <= F.lit(HORIZON_H * HOUR))
        best = Window.partitionBy("_row").orderBy(F.desc("_p_hat"), "_delay_h")
        picked = self.predict(cand).withColumn("_rank", F.row_number().over(best)).where("_rank = 1")
        chosen = picked.select("_row", F.when(F.col("_p_hat") >= F.lit(self.min_probability), F.col("_next")).alias("_next"))
        return pending.join(chosen, "_row", "left")


def learn(attempts: DataFrame, start: str = "2026-01-01", *, seed: int = 7, min_probability: float = 0.1) -> RetryModel:
    """Fit the retry model on the observed retries of an `authorizations` DataFrame (Spark MLlib random forest).

    `start` is the data's first day (only a time origin for the features). The randomised-delay experiment is
    what lets the model see how approval depends on the delay; the fixed schedule alone shows three delays."""
    start_us = make_plan(1, 1, seed, start, None).start_micros
    rows = training_rows(attempts, start_us)
    if rows.limit(1).count() == 0:
        raise UsageError("retry.learn: the attempts hold no retries to learn from",
                         hint="generate authorizations with soft declines (tally datagen) and pass them all")
    pipeline = Pipeline(stages=[
        VectorAssembler(inputCols=list(FEATURES), outputCol="features"),
        RandomForestClassifier(labelCol="label", featuresCol="features", numTrees=40, maxDepth=7, seed=seed,
                               minInstancesPerNode=5),
    ])  # fmt: skip
    # MLlib's forest samples per partition: rows in an order of their content alone give the same model every run
    from tally.tasks.run import content_order

    return RetryModel(pipeline.fit(content_order(rows, ["charge_id", "retry"])), issuer_hourly_rates(attempts),
                      start_us, min_probability)


# -- the evaluator -----------------------------------------------------------------------------------------


def fixed_policy(pending: DataFrame, n: int) -> DataFrame:
    """The merchants' schedule: retry n at FIXED_RETRY_HOURS[n - 1] after the first attempt."""
    if n > len(cat.FIXED_RETRY_HOURS):
        return pending.withColumn("_next", F.lit(None).cast("long"))
    return pending.withColumn("_next", F.col("_t0") + F.lit(int(cat.FIXED_RETRY_HOURS[n - 1] * HOUR)))


def payments_before(attempts: DataFrame, plan: Plan, day: int) -> DataFrame:
    """The attempts (retries included) of the payments first attempted before `day`: what a learner may see
    when the replay starts at `day` (see `declines`)."""
    first = attempts.where("attempt = 1").select("charge_id", F.unix_micros("attempted").alias("_first"))
    cutoff = F.lit(plan.start_micros + day * MICROS_PER_DAY)
    return attempts.join(first, "charge_id").where(F.col("_first") < cutoff).drop("_first")


def declines(spark: SparkSession, plan: Plan, from_day: int = 0) -> DataFrame:
    """First attempts declined on or after day `from_day`, with the generator's hidden context."""
    first = _auth.first_attempts(charges_with_truth(spark, plan), plan)
    return first.where(~F.col("approved") & (F.col("_t0") >= F.lit(from_day * MICROS_PER_DAY)))


def _admit(proposals: DataFrame, ledger: DataFrame, caps: Caps) -> DataFrame:
    """Proposals within the caps, judged against the ledger (within +-window of it: a later retry already
    admitted counts too) and the proposals of this round before it (conservatively, admitted or not)."""
    windows = {"24h": (MICROS_PER_DAY, caps.per_24h), "30d": (30 * MICROS_PER_DAY, caps.per_30d)}
    near = proposals.select("_row", "card_id", "_next").join(ledger.select("card_id", "_t"), "card_id", "left")
    held = near.groupBy("_row").agg(*[
        F.sum(F.when(F.abs(F.col("_t") - F.col("_next")) < F.lit(w), 1).otherwise(0)).alias(f"_ledger_{k}")
        for k, (w, _) in windows.items()
    ])  # fmt: skip
    out = proposals.join(held, "_row")
    ok = F.lit(True)
    for k, (w, cap) in windows.items():
        before = Window.partitionBy("card_id").orderBy("_next").rangeBetween(-(w - 1), 0)
        out = out.withColumn(f"_round_{k}", F.count(F.lit(1)).over(before))  # counts itself
        ok = ok & (F.col(f"_ledger_{k}") + F.col(f"_round_{k}") <= F.lit(cap))
    return out.where(ok).drop(*[c for c in out.columns if c.startswith(("_ledger_", "_round_"))])


def replay(spark: SparkSession, plan: Plan, pending: DataFrame, policy, caps: Caps = Caps()) -> DataFrame:
    """The retries a policy makes on `pending` declines (see `declines`), with their outcomes.

    One row per retry: _row, charge_id, card_id, retry (1-based), _t (micros after start), attempted, p (the
    truth), approved, usd."""
    pending = pending.where((_auth.category(S.col("code")) == "soft").column).select(
        "*", F.col("_t0").alias("_t_last"), F.array(F.col("_t0")).alias("_prior"))
    ledger = spark.createDataFrame([], "card_id string, _t long")
    done = []
    for n in range(1, MAX_RETRIES + 1):
        proposed = policy(pending, n).where(F.col("_next").isNotNull() & (F.col("_next") > F.col("_t_last")))
        proposed = proposed.where(F.col("_next") - F.col("_t0") <= F.lit(HORIZON_H * HOUR))
        admitted = _admit(proposed, ledger, caps).localCheckpoint()
        t = F.col("_next")
        p = _auth.retry_probability(plan, S.col("_next"), S.col("_prior"))
        tried = admitted.select(
            "*", F.lit(n).alias("retry"), p.alias("p"),
            (_auth.retry_uniform(plan.seed, S.col("_row"), n) < p).alias("approved_now"),
        ).localCheckpoint()  # fmt: skip
        done.append(tried.select(
            "_row", "charge_id", "card_id", "retry", t.alias("_t"),
            F.timestamp_micros(F.lit(plan.start_micros) + t).alias("attempted"), "p",
            F.col("approved_now").alias("approved"), _auth.usd(S.col("amount"), S.col("currency")).alias("usd"),
        ))  # fmt: skip
        ledger = ledger.unionByName(tried.select("card_id", t.alias("_t"))).localCheckpoint()
        base = [c for c in pending.columns if c not in ("_t_last", "_prior")]
        pending = tried.where(~F.col("approved_now")).select(
            *base, t.alias("_t_last"), F.concat("_prior", F.array(t)).alias("_prior"))
    out = done[0]
    for d in done[1:]:
        out = out.unionByName(d)
    return out


def summarize(retries: DataFrame, pending: DataFrame) -> dict:
    """Recovered payments and USD, and retries made, of one replay."""
    r = retries.agg(
        F.count(F.lit(1)).alias("retries"),
        F.sum(F.col("approved").cast("int")).alias("recovered"),
        F.sum(F.when(F.col("approved"), F.col("usd"))).alias("usd"),
    ).first()
    return {"retries": int(r["retries"]), "recovered": int(r["recovered"] or 0),
            "recovered_usd": round(float(r["usd"] or 0.0), 2)}


def evaluate(spark: SparkSession, charges: int = 50_000, days: int = 30, seed: int = 7, start: str = "2026-01-01",
             *, train_days: int | None = None, caps: Caps = Caps(), min_probability: float = 0.1) -> dict:
    """Generate data, learn on the retries of the first `train_days` (default 2/3 of the span), and replay the
    soft declines of the remaining days under the fixed schedule and under the learned policy."""
    from tally import datagen

    plan = make_plan(charges, days, seed, start, None)
    train_days = days * 2 // 3 if train_days is None else train_days
    if not 0 < train_days < days:
        raise UsageError(f"retry: train_days must be within 1..{days - 1}, got {train_days}")
    attempts = datagen.generate(spark, charges, days, seed, start)["authorizations"].cache()
    train = payments_before(attempts, plan, train_days)
    # the policy reads the issuers' hourly rates of all observed traffic: the hour before each decision
    model = learn(train, start, seed=seed, min_probability=min_probability).observing(attempts)
    pending = declines(spark, plan, train_days).cache()
    counts = pending.agg(
        F.count(F.lit(1)).alias("declines"),
        F.sum((_auth.category(S.col("code")) == "soft").cast("int").column).alias("soft"),
        F.sum(S.when(_auth.category(S.col("code")) == "soft", _auth.usd(S.col("amount"), S.col("currency"))).column)
        .alias("usd"),
    ).first()
    out = {"data": {"charges": charges, "days": days, "seed": seed, "start": start, "train_days": train_days,
                    "declines": int(counts["declines"]), "soft_declines": int(counts["soft"] or 0),
                    "hard_declines": int(counts["declines"]) - int(counts["soft"] or 0),
                    "soft_declined_usd": round(float(counts["usd"] or 0.0), 2),
                    "training_retries": train.where("attempt > 1").count()},
           "caps": {"per_24h": caps.per_24h, "per_30d": caps.per_30d}}
    for name, policy in (("fixed", fixed_policy), ("learned", model.policy)):
        out[name] = summarize(replay(spark, plan, pending, policy, caps), pending)
    fixed, learned = out["fixed"], out["learned"]
    out["volume_lift"] = round(learned["recovered_usd"] / fixed["recovered_usd"] - 1, 4) if fixed["recovered_usd"] else None
    out["attempts_ratio"] = round(learned["retries"] / fixed["retries"], 4) if fixed["retries"] else None
    pending.unpersist()
    attempts.unpersist()
    return out



def report(result: dict) -> list[str]:
    """`evaluate`'s result as text lines (the CLI's output)."""
    d, f, lrn = result["data"], result["fixed"], result["learned"]
    lines = [
        f"data: {d['charges']:,} charges over {d['days']} days (seed {d['seed']}); learned on the first "
        f"{d['train_days']} days ({d['training_retries']:,} observed retries), replayed on the rest",
        f"declined first attempts: {d['declines']:,} ({d['soft_declines']:,} soft, {d['hard_declines']:,} hard, "
        f"never retried); soft-declined volume {d['soft_declined_usd']:,.2f} USD",
        f"caps per card: {result['caps']['per_24h']} retries per 24 h, {result['caps']['per_30d']} per 30 days",
    ]
    for name, r in (("fixed +1h/+24h/+72h", f), ("learned", lrn)):
        lines.append(f"{name:>20}: {r['retries']:,} retries, {r['recovered']:,} payments recovered, "
                     f"{r['recovered_usd']:,.2f} USD")
    if result["volume_lift"] is not None:
        lines.append(f"learned vs fixed: {result['volume_lift']:+.1%} recovered volume with "
                     f"{result['attempts_ratio']:.2f}x the retries")
    return lines
