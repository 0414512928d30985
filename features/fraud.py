"""The fraud task: will this charge be disputed as fraudulent within 60 days? (`tally task run fraud`)

Spine: every charge, with the columns a model has without tally (amount, channel, abroad, hour) as its
baseline. Label: a `fraudulent` dispute filed within 60 days of the charge, as known at the labels' cutoff.
Features: the payments views (features/payments.py), named, so this file imports only the spine's source.
"""

import tally as tl
from payments import charges

disputes = tl.Source("disputes", path="disputes", format="parquet", timestamp="charge_created",
                     available_at="dispute_created", description="Every dispute, known from the day it was filed.")

is_fraud = tl.Label("is_fraud", source=disputes, on=["charge_id"], filter="reason = 'fraudulent'", default=0,
                    within="60d", description="a fraudulent dispute filed within 60 days of the charge")

fraud = tl.Task(
    name="fraud", version=1,
    description="Card fraud: a charge later disputed as fraudulent, scored at authorization time.",
    spine=tl.Spine(charges, columns={
        "amount_major": "CAST(amount AS DOUBLE) / 100",
        "is_ecommerce": "CAST(channel = 'ecommerce' AS DOUBLE)",
        "abroad": "CAST(card_country <> merchant_country AS DOUBLE)",
        "hour": "CAST(hour(created) AS DOUBLE)",
    }),
    label=is_fraud,
    features=["card_velocity", "customer_profile", "merchant_risk", "merchant_disputes", "card_disputes",
              "issuer_acceptance", "issuer_mcc_acceptance", "card_daily"],
    split=tl.Split(test_fraction=1 / 3),
    model="gbt", params={"maxIter": 25, "maxDepth": 5}, seed=7,
    lift_at=[0.01, 0.05],
    segments=["channel"],
)
