"""The rates a generated data set actually has, measured on its public tables (no hidden truth used).

Used by docs/datagen.md (numbers measured, not asserted) and by the tests' plausibility bands.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

BURST_MINUTES = 10
BURST_MIN_CHARGES = 5
BURST_MIN_DECLINED = 0.6


def card_testing_bursts(charges: DataFrame) -> DataFrame:
    """Burst starts: a card's charge opening >= 5 charges within 10 minutes, >= 60 % declined, with no
    charge of the card in the 10 minutes before (so one burst counts once)."""
    secs = F.col("created").cast("double")
    ahead = Window.partitionBy("card_id").orderBy(secs).rangeBetween(0, BURST_MINUTES * 60)
    prev = Window.partitionBy("card_id").orderBy("created", "charge_id")
    declined = (F.col("outcome") == "declined").cast("int")
    df = charges.select(
        "card_id",
        "created",
        F.count(F.lit(1)).over(ahead).alias("n"),
        F.avg(declined).over(ahead).alias("declined_share"),
        F.lag("created").over(prev).alias("previous"),
    )
    gap_ok = F.col("previous").isNull() | (
        F.col("created").cast("double") - F.col("previous").cast("double") > BURST_MINUTES * 60
    )
    return df.where(
        gap_ok & (F.col("n") >= BURST_MIN_CHARGES) & (F.col("declined_share") >= BURST_MIN_DECLINED)
    )


def _rate(df: DataFrame, group: str, top: int | None = None) -> dict[str, float]:
    rows = (
        df.groupBy(group)
        .agg(F.count(F.lit(1)).alias("n"), F.avg((F.col("outcome") == "declined").cast("double")).alias("r"))
        .orderBy(F.desc("n"), group)
    )
    rows = rows.limit(top) if top else rows
    return {r[group]: round(r["r"], 4) for r in rows.collect()}


def describe_authorizations(attempts: DataFrame) -> dict:
    """Approval rates of the attempts: first attempts, retries by number, declines by category and code."""
    approved = F.col("approved").cast("double")
    by_attempt = {
        r["attempt"]: (r["n"], r["rate"])
        for r in attempts.groupBy("attempt").agg(F.count(F.lit(1)).alias("n"), F.avg(approved).alias("rate")).collect()
    }
    first = attempts.where("attempt = 1 AND NOT approved")
    cats = dict(first.groupBy("category").count().collect())
    codes = first.groupBy("code").count().orderBy(F.desc("count"), "code").collect()
    declined = sum(cats.values())
    retried = attempts.where("attempt = 2").count()
    n_first = by_attempt.get(1, (0, 0.0))[0]
    return {
        "attempts": sum(n for n, _ in by_attempt.values()),
        "first_attempt_approval_rate": round(by_attempt.get(1, (0, 0.0))[1] or 0.0, 4),
        "retry_approval_rate_by_attempt": {k: round(v[1], 4) for k, v in sorted(by_attempt.items()) if k > 1},
        "first_declines_hard_share": round(cats.get("hard", 0) / declined, 4) if declined else 0.0,
        "first_declines_retried_share": round(retried / declined, 4) if declined else 0.0,
        "first_decline_codes": {r["code"]: round(r["count"] / declined, 4) for r in codes},
        "attempts_per_charge": round(sum(n for n, _ in by_attempt.values()) / n_first, 4) if n_first else 0.0,
    }


def describe(frames: dict[str, DataFrame]) -> dict:
    """Rates of a generated data set (see docs/datagen.md for their meaning); a dozen small Spark jobs."""
    charges, disputes, refunds = frames["charges"], frames["disputes"], frames["refunds"]
    declined = (F.col("outcome") == "declined").cast("double")
    cross_border = F.col("card_country") != F.col("merchant_country")
    totals = charges.agg(
        F.count(F.lit(1)).alias("n"),
        F.sum(1 - declined).alias("authorized"),
        F.avg(cross_border.cast("double")).alias("cross_share"),
        F.sum(F.when(cross_border, declined)).alias("cross_declined"),
        F.countDistinct("card_id").alias("cards"),
        F.min("created").alias("lo"),
        F.max("created").alias("hi"),
    ).first()
    n, authorized = totals["n"], int(totals["authorized"] or 0)
    by_reason = dict(disputes.groupBy("reason").count().collect())
    fraud, n_refunds = by_reason.get("fraudulent", 0), refunds.count()

    per_merchant = charges.groupBy("merchant_id").agg(F.count(F.lit(1)).alias("n"))
    m = per_merchant.agg(
        F.max("n").alias("top"),
        F.percentile_approx("n", 0.5).alias("median"),
        F.count(F.lit(1)).alias("merchants"),
    ).first()
    top10 = per_merchant.orderBy(F.desc("n")).limit(10).agg(F.sum("n")).first()[0]

    per_customer = charges.groupBy("customer_id").agg(F.countDistinct("card_id").alias("cards"))
    customers = per_customer.agg(
        F.count(F.lit(1)).alias("n"),
        F.avg("cards").alias("mean"),
        F.avg((F.col("cards") >= 2).cast("double")).alias("multi"),
    ).first()
    hourly = charges.groupBy(F.hour("created").alias("h")).count().orderBy("count", "h").collect()

    def share(part: float, whole: float, digits: int = 5) -> float:
        return round(part / whole, digits) if whole else 0.0

    return {
        "charges": n,
        "disputes": sum(by_reason.values()),
        "refunds": n_refunds,
        "created_from": totals["lo"].isoformat() if totals["lo"] else None,
        "created_to": totals["hi"].isoformat() if totals["hi"] else None,
        "merchants": m["merchants"],
        "customers": customers["n"],
        "cards": totals["cards"],
        "decline_rate": round(1 - share(authorized, n, 6), 4),
        "decline_rate_by_channel": _rate(charges, "channel"),
        "decline_rate_by_top_issuers": _rate(charges, "issuer", top=5),
        "decline_rate_by_card_country": _rate(charges, "card_country"),
        "decline_rate_cross_border": share(totals["cross_declined"] or 0, n * totals["cross_share"], 4),
        "cross_border_share": round(totals["cross_share"], 4),
        "fraud_rate": share(fraud, n),
        "fraud_rate_of_authorized": share(fraud, authorized),
        "dispute_rate_of_authorized": share(sum(by_reason.values()), authorized),
        "other_dispute_rate_of_authorized": share(by_reason.get("other", 0), authorized),
        "refund_rate_of_authorized": share(n_refunds, authorized),
        "top_merchant_share": share(m["top"], n, 4),
        "top10_merchant_share": share(top10, n, 4),
        "median_merchant_share": share(m["median"], n, 6),
        "cards_per_customer": round(customers["mean"], 3),
        "customers_with_2plus_cards": round(customers["multi"], 4),
        "card_testing_bursts": card_testing_bursts(charges).count(),
        "busiest_utc_hour": hourly[-1]["h"] if hourly else None,
        "quietest_utc_hour": hourly[0]["h"] if hourly else None,
        **({"authorizations": describe_authorizations(frames["authorizations"])} if "authorizations" in frames else {}),
    }
