"""Labels and after-sales events: disputes and refunds, derived from the charges' hidden truth.

A dispute is how a fraud label reaches users: most (not all) fraudulent *authorized* charges are disputed as
`fraudulent` days to weeks later, and a small share of ordinary authorized charges get an `other` dispute.
Declined charges moved no money and are never disputed. Refunds are ordinary authorized charges the merchant
paid back, in full or in part. Disputes and refunds may fall after the last charge day: labels keep arriving.

Every choice is keyed by the charge's row id, so filters on it run before the joins (Spark pushes them down)
and building these tables does not pay for all the charges' columns.
"""

from __future__ import annotations

import math

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from tally.datagen._rng import Rng

DAY = 86_400_000_000
P_DISPUTE_SPREE = 0.9  # stolen-card charges the cardholder notices
P_DISPUTE_QUIET = 0.9  # quiet fraud (structure only): noticed like a spree's charges
P_DISPUTE_CARD_TESTING = 0.55  # small test charges are often missed
P_DISPUTE_OTHER = 0.0015  # "not received", "not as described", ... on ordinary charges
P_REFUND = 0.025
P_REFUND_FULL = 0.75


def _lag(
    rng: Rng, stream: str, row: Column, floor_days: float, median_days: float, cap_days: float
) -> Column:
    days = F.lit(floor_days) + F.exp(F.lit(math.log(median_days)) + F.lit(0.6) * rng.normal(stream, row))
    return F.floor(F.least(days, F.lit(cap_days)) * F.lit(float(DAY))).cast("long")


def _after(ts: Column, micros: Column) -> Column:
    return F.timestamp_micros(F.unix_micros(ts) + micros)


def disputes(truth: DataFrame, seed: int) -> DataFrame:
    rng = Rng(seed)
    row, kind = F.col("_row"), F.col("_kind")
    u = rng.uniform("dispute", row)
    p = (
        F.when(kind == "spree", F.lit(P_DISPUTE_SPREE))
        .when(kind == "quiet", F.lit(P_DISPUTE_QUIET))
        .when(kind == "card_testing", F.lit(P_DISPUTE_CARD_TESTING))
        .otherwise(F.lit(P_DISPUTE_OTHER))
    )
    fraud = F.col("_fraud")
    lag = F.when(fraud, _lag(rng, "dispute.lag", row, 3.0, 14.0, 90.0)).otherwise(
        _lag(rng, "dispute.lag", row, 5.0, 18.0, 110.0)
    )
    return truth.where((u < p) & (F.col("outcome") == "authorized")).select(
        "charge_id",
        F.col("created").alias("charge_created"),
        _after(F.col("created"), lag).alias("dispute_created"),
        F.when(fraud, F.lit("fraudulent")).otherwise(F.lit("other")).alias("reason"),
    )


def refunds(truth: DataFrame, seed: int) -> DataFrame:
    rng = Rng(seed)
    row = F.col("_row")
    ordinary = ~F.col("_fraud")
    not_disputed = rng.uniform("dispute", row) >= F.lit(P_DISPUTE_OTHER)
    chosen = (rng.uniform("refund", row) < F.lit(P_REFUND)) & ordinary & not_disputed
    full = rng.uniform("refund.full", row) < F.lit(P_REFUND_FULL)
    share = F.lit(0.1) + F.lit(0.8) * rng.uniform("refund.share", row)
    partial = F.greatest(F.round(F.col("amount").cast("double") * share), F.lit(1.0)).cast("decimal(18,0)")
    hours = F.exp(F.lit(math.log(72.0)) + F.lit(1.0) * rng.normal("refund.lag", row))
    lag = F.floor(F.least(F.greatest(hours, F.lit(1.0)), F.lit(60 * 24.0)) * F.lit(3_600_000_000.0)).cast(
        "long"
    )
    return truth.where(chosen & (F.col("outcome") == "authorized")).select(
        "charge_id",
        F.col("created").alias("charge_created"),
        _after(F.col("created"), lag).alias("refund_created"),
        F.when(full, F.col("amount")).otherwise(partial).alias("amount"),
    )
