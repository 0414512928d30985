"""The payments feature repository: card, customer, merchant and issuer features for fraud and acceptance models.

Sources read the generated payments data (`tally datagen`) under the data root (`data` in tally.toml, or
$TALLY_DATA): where the data lives is configuration, not part of any view's fingerprint. Fraud labels come
from disputes and are visible only from `dispute_created` on, so no feature leaks a label before it was known.
"""

from pathlib import Path

import tally as tl

# --- entities -----------------------------------------------------------------------------------------------
card = tl.Entity("card", keys=["card_id"], description="A payment card, by its fingerprint.")
customer = tl.Entity("customer", keys=["customer_id"], description="A customer, who may hold several cards.")
merchant = tl.Entity("merchant", keys=["merchant_id"], description="A merchant account.")
issuer = tl.Entity("issuer", keys=["issuer"], description="The bank that issued the card (by BIN range).")
issuer_mcc = tl.Entity("issuer_mcc", keys=["issuer", "mcc"], description="An issuer within a merchant category.")

# --- sources ------------------------------------------------------------------------------------------------
charges = tl.Source(
    "charges", path="charges", format="parquet", timestamp="created", id="charge_id",
    columns={
        "is_declined": "CAST(outcome = 'declined' AS INT)",
        "is_authorized": "CAST(outcome = 'authorized' AS INT)",
        "is_foreign": "CAST(card_country <> merchant_country AS INT)",
        "amount_major": "CAST(amount AS DOUBLE) / 100",
    },
    checks=[tl.Check.ge("amount", 0), tl.Check.isin("outcome", ["authorized", "declined"]),
            tl.Check.isin("channel", ["card_present", "ecommerce"])],
    description="Every authorization attempt, authorized or declined.",
)


def _fraud_disputes(spark, data: Path):
    """Fraud disputes with the disputed charge's card and merchant (disputes carry only the charge id)."""
    disputes = spark.read.parquet(str(data / "disputes")).where("reason = 'fraudulent'")
    charge_keys = spark.read.parquet(str(data / "charges")).select("charge_id", "card_id", "merchant_id", "amount")
    return disputes.join(charge_keys, "charge_id")


fraud_disputes = tl.Source(
    "fraud_disputes", dataframe=_fraud_disputes, timestamp="charge_created", available_at="dispute_created",
    columns={"amount_major": "CAST(amount AS DOUBLE) / 100"},
    description="Charges later disputed as fraud; each is known only from the day the dispute was filed.",
)

# --- views --------------------------------------------------------------------------------------------------
card_velocity = tl.FeatureView(
    name="card_velocity", entity=card, source=charges, version=2, online=True, ttl="30d", owner="fraud-ml",
    tags={"domain": "fraud"},
    description="How fast and how widely a card is being used: card testing and stolen-card sprees.",
    aggregations=[
        tl.Aggregation("count", windows=["5m", "1h", "24h", "7d", "30d"], description="charges on the card"),
        tl.Aggregation("sum", column="amount_major", windows=["1h", "24h", "7d"], description="spend in major units"),
        tl.Aggregation("sum", column="is_declined", windows=["5m", "1h", "24h"], name="declines",
                       description="declined attempts"),
        tl.Aggregation("approx_distinct", column="merchant_id", windows=["1h", "24h", "30d"],
                       description="distinct merchants"),
        tl.Aggregation("approx_distinct", column="merchant_country", windows=["24h", "30d"],
                       description="distinct merchant countries"),
        tl.Aggregation("sum", column="is_foreign", windows=["24h"], name="foreign_charges",
                       description="charges abroad"),
        tl.Aggregation("time_since_last", windows=[None], description="seconds since the card's previous charge"),
    ],
)

customer_profile = tl.FeatureView(
    name="customer_profile", entity=customer, source=charges, version=2, ttl="90d", owner="fraud-ml",
    tags={"domain": "fraud"},
    description="A customer's usual spending, to spot charges out of character.",
    aggregations=[
        tl.Aggregation("mean", column="amount_major", windows=["30d"], description="mean ticket"),
        tl.Aggregation("stddev", column="amount_major", windows=["30d"], description="ticket standard deviation"),
        tl.Aggregation("approx_percentile", column="amount_major", windows=["30d"], name="amount_p50_p90_p99",
                       params={"quantiles": [0.5, 0.9, 0.99]}, description="ticket percentiles"),
        tl.Aggregation("approx_distinct", column="card_id", windows=["30d"], description="cards used"),
        tl.Aggregation("count", windows=["30d"], description="charges"),
    ],
)

merchant_risk = tl.FeatureView(
    name="merchant_risk", entity=merchant, source=charges, version=3, online=True, ttl="30d", owner="fraud-ml",
    tags={"domain": "fraud"},
    description="Merchant volume, declines and cards: compromised merchants and card-testing targets.",
    aggregations=[
        tl.Aggregation("count", windows=["1h", "24h", "7d"], description="charges"),
        tl.Aggregation("mean", column="is_declined", windows=["24h", "7d"], name="decline_rate",
                       description="share of declined attempts"),
        tl.Aggregation("approx_distinct", column="card_id", windows=["24h", "7d"], description="distinct cards"),
        tl.Aggregation("approx_percentile", column="amount_major", windows=["7d"], name="ticket_p50_p95",
                       params={"quantiles": [0.5, 0.95]}, description="ticket-size percentiles"),
        tl.Aggregation("decayed_sum", column="amount_major", windows=[None], params={"half_life": "7d"},
                       name="decayed_volume", description="volume with a 7-day half-life"),
    ],
)

merchant_disputes = tl.FeatureView(
    name="merchant_disputes", entity=merchant, source=fraud_disputes, version=1, owner="fraud-ml",
    tags={"domain": "fraud"},
    description="Fraud disputes on a merchant's charges, counted only once filed: no label leakage.",
    aggregations=[
        tl.Aggregation("count", windows=["30d", "90d"], name="fraud_disputes",
                       description="charges of the window later disputed as fraud, among disputes filed by t"),
        tl.Aggregation("sum", column="amount_major", windows=["90d"], name="fraud_dispute_amount",
                       description="disputed amount"),
    ],
)

card_disputes = tl.FeatureView(
    name="card_disputes", entity=card, source=fraud_disputes, version=1, owner="fraud-ml", tags={"domain": "fraud"},
    description="Fraud disputes already filed on the card.",
    aggregations=[tl.Aggregation("count", windows=[None], name="fraud_disputes", description="filed fraud disputes")],
)

issuer_acceptance = tl.FeatureView(
    name="issuer_acceptance", entity=issuer, source=charges, version=2, online=True, ttl="30d", owner="auth-rate",
    tags={"domain": "acceptance"},
    description="Authorization rate by issuer: the acceptance problem.",
    aggregations=[
        tl.Aggregation("mean", column="is_authorized", windows=["1h", "24h", "7d"], name="auth_rate",
                       description="share of attempts authorized"),
        tl.Aggregation("count", windows=["24h"], description="attempts"),
    ],
)

issuer_mcc_acceptance = tl.FeatureView(
    name="issuer_mcc_acceptance", entity=issuer_mcc, source=charges, version=1, ttl="30d", owner="auth-rate",
    tags={"domain": "acceptance"},
    description="Authorization rate by issuer within a merchant category.",
    aggregations=[
        tl.Aggregation("mean", column="is_authorized", windows=["7d", "30d"], name="auth_rate",
                       description="share of attempts authorized"),
        tl.Aggregation("count", windows=["7d"], description="attempts"),
    ],
)

card_daily = tl.FeatureView(
    name="card_daily", entity=card, source=charges, version=1, ttl="30d", accuracy="snapshot", owner="fraud-ml",
    tags={"domain": "fraud"},
    description="Daily card aggregates served from the snapshot table (as of midnight UTC).",
    aggregations=[
        tl.Aggregation("count", windows=["7d", "30d"], description="charges"),
        tl.Aggregation("sum", column="amount_major", windows=["30d"], description="spend"),
        tl.Aggregation("mean", column="is_declined", windows=["30d"], name="decline_rate", description="declines"),
    ],
)
