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

from pyspark.sql import DataFrame

from tally.datagen import _sql as S
from tally.datagen._rng import Rng
from tally.datagen._sql import Expr

DAY = 86_400_000_000
P_DISPUTE_SPREE = 0.9  # stolen-card charges the cardholder notices
P_DISPUTE_QUIET = 0.9  # quiet fraud (structure only): noticed like a spree's charges
P_DISPUTE_CARD_TESTING = 0.55  # small test charges are often missed
P_DISPUTE_OTHER = 0.0015  # "not received", "not as described", ... on ordinary charges
P_REFUND = 0.025
P_REFUND_FULL = 0.75


def _lag(
    rng: Rng, stream: str, row: Expr, floor_days: float, median_days: float, cap_days: float
) -> Expr:
    days = S.lit(floor_days) + S.exp(S.lit(math.log(median_days)) + S.lit(0.6) * rng.normal(stream, row))
    return S.floor(S.least(days, S.lit(cap_days)) * S.lit(float(DAY))).cast("long")


def _after(ts: Expr, micros: Expr) -> Expr:
    return S.timestamp_micros(S.unix_micros(ts) + micros)


def disputes(truth: DataFrame, seed: int) -> DataFrame:
    rng = Rng(seed)
    row, kind = S.col("_row"), S.col("_kind")
    u = rng.uniform("dispute", row)
    p = (
        S.when(kind == "spree", S.lit(P_DISPUTE_SPREE))
        .when(kind == "quiet", S.lit(P_DISPUTE_QUIET))
        .when(kind == "card_testing", S.lit(P_DISPUTE_CARD_TESTING))
        .otherwise(S.lit(P_DISPUTE_OTHER))
    )
    fraud = S.col("_fraud")
    lag = S.when(fraud, _lag(rng, "dispute.lag", row, 3.0, 14.0, 90.0)).otherwise(
        _lag(rng, "dispute.lag", row, 5.0, 18.0, 110.0)
    )
    return truth.where(((u < p) & (S.col("outcome") == "authorized")).column).select(
        "charge_id",
        S.col("created").alias("charge_created"),
        _after(S.col("created"), lag).alias("dispute_created"),
        S.when(fraud, S.lit("fraudulent")).otherwise(S.lit("other")).alias("reason"),
    )


def refunds(truth: DataFrame, seed: int) -> DataFrame:
    rng = Rng(seed)
    row = S.col("_row")
    ordinary = ~S.col("_fraud")
    not_disputed = rng.uniform("dispute", row) >= S.lit(P_DISPUTE_OTHER)
    chosen = (rng.uniform("refund", row) < S.lit(P_REFUND)) & ordinary & not_disputed
    full = rng.uniform("refund.full", row) < S.lit(P_REFUND_FULL)
    share = S.lit(0.1) + S.lit(0.8) * rng.uniform("refund.share", row)
    partial = S.greatest(S.round(S.col("amount").cast("double") * share), S.lit(1.0)).cast("decimal(18,0)")
    hours = S.exp(S.lit(math.log(72.0)) + S.lit(1.0) * rng.normal("refund.lag", row))
    lag = S.floor(S.least(S.greatest(hours, S.lit(1.0)), S.lit(60 * 24.0)) * S.lit(3_600_000_000.0)).cast(
        "long"
    )
    return truth.where((chosen & (S.col("outcome") == "authorized")).column).select(
        "charge_id",
        S.col("created").alias("charge_created"),
        _after(S.col("created"), lag).alias("refund_created"),
        S.when(full, S.col("amount")).otherwise(partial).alias("amount"),
    )
