"""The acceptance task: will the issuer approve this authorization attempt? (`tally task run acceptance`)

Spine: every attempt, first attempts and the merchants' retries, with what the merchant knows before sending it
(amount, cross-border, hour of day in UTC, which attempt) as the baseline. Label: the attempt's own outcome, known when
the issuer answers; the generator models no reporting delay, so it is available at the attempt's time. Features:
the acceptance pack (features/acceptance.py), every window strictly before the attempt.
"""

import tally as tl
from acceptance import authorizations

outcomes = tl.Source("authorization_outcomes", path="authorizations", format="parquet", timestamp="attempted",
                     available_at="attempted", id="attempt_id",
                     description="Each attempt's outcome, known when the issuer answers.")

approval = tl.Label("approval", source=outcomes, on=["attempt_id"], value="CAST(approved AS INT)", default=0,
                    description="the issuer approved the attempt")

acceptance = tl.Task(
    name="acceptance", version=1,
    description="Authorization rate: the approval of an attempt, scored before it is sent (routing, retry timing).",
    spine=tl.Spine(authorizations, columns={
        "amount_major": "CAST(amount AS DOUBLE) / 100",
        "abroad": "CAST(card_country <> merchant_country AS DOUBLE)",
        "hour": "CAST(hour(attempted) AS DOUBLE)",
        "attempt_number": "CAST(attempt AS DOUBLE)",
        "kind": "CASE WHEN attempt = 1 THEN 'first attempt' ELSE 'retry' END",
    }),
    label=approval,
    features=["auth_issuer", "auth_bin", "auth_issuer_mcc", "auth_card", "auth_card_last_decline"],
    split=tl.Split(test_fraction=1 / 3),
    model="gbt", params={"maxIter": 25, "maxDepth": 5}, seed=7,
    lift_at=[0.01, 0.05],
    segments=["kind"],
)
