"""The rates a generated data set actually has, measured on its three tables (no hidden truth used).

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


def describe(frames: dict[str, DataFrame]) -> dict:
    charges, disputes, refunds = frames["charges"], frames["disputes"], frames["refunds"]
    n = charges.count()
    authorized = charges.where(F.col("outcome") == "authorized").count()
    by_reason = {
        r["reason"]: r["n"] for r in disputes.groupBy("reason").agg(F.count(F.lit(1)).alias("n")).collect()
    }
    fraud = by_reason.get("fraudulent", 0)

    per_merchant = charges.groupBy("merchant_id").agg(F.count(F.lit(1)).alias("n"))
    m = per_merchant.agg(
        F.max("n").alias("top"),
        F.percentile_approx("n", 0.5).alias("median"),
        F.count(F.lit(1)).alias("merchants"),
    ).first()
    top10 = per_merchant.orderBy(F.desc("n")).limit(10).agg(F.sum("n")).first()[0]

    per_customer = charges.groupBy("customer_id").agg(F.countDistinct("card_id").alias("cards"))
    cards = per_customer.agg(
        F.avg("cards").alias("mean"), F.avg((F.col("cards") >= 2).cast("double")).alias("multi")
    ).first()

    t = charges.agg(F.min("created").alias("lo"), F.max("created").alias("hi")).first()
    hourly = charges.groupBy(F.hour("created").alias("h")).count().orderBy("count").collect()
    return {
        "charges": n,
        "disputes": disputes.count(),
        "refunds": refunds.count(),
        "created_from": t["lo"].isoformat() if t["lo"] else None,
        "created_to": t["hi"].isoformat() if t["hi"] else None,
        "merchants": m["merchants"],
        "customers": per_customer.count(),
        "cards": charges.select("card_id").distinct().count(),
        "decline_rate": round(1 - authorized / n, 4),
        "decline_rate_by_channel": _rate(charges, "channel"),
        "decline_rate_by_top_issuers": _rate(charges, "issuer", top=5),
        "decline_rate_by_card_country": _rate(charges, "card_country"),
        "decline_rate_cross_border": _rate(
            charges.withColumn("cross_border", F.col("card_country") != F.col("merchant_country")),
            "cross_border",
        ).get(True),
        "cross_border_share": round(
            charges.where(F.col("card_country") != F.col("merchant_country")).count() / n, 4
        ),
        "fraud_rate": round(fraud / n, 5),
        "fraud_rate_of_authorized": round(fraud / max(authorized, 1), 5),
        "dispute_rate_of_authorized": round(sum(by_reason.values()) / max(authorized, 1), 5),
        "other_dispute_rate_of_authorized": round(by_reason.get("other", 0) / max(authorized, 1), 5),
        "refund_rate_of_authorized": round(refunds.count() / max(authorized, 1), 5),
        "top_merchant_share": round(m["top"] / n, 4),
        "top10_merchant_share": round(top10 / n, 4),
        "median_merchant_share": round(m["median"] / n, 6),
        "cards_per_customer": round(cards["mean"], 3),
        "customers_with_2plus_cards": round(cards["multi"], 4),
        "card_testing_bursts": card_testing_bursts(charges).count(),
        "busiest_utc_hour": hourly[-1]["h"] if hourly else None,
        "quietest_utc_hour": hourly[0]["h"] if hourly else None,
    }
