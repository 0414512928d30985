"""The acceptance feature pack: issuer, BIN, issuer x category and card features over authorization attempts.

For models of an attempt's approval (routing, retry timing): the spine is one row per attempt (`authorizations`
from `tally datagen`, keyed by attempt, with card, issuer, bin and mcc columns). Every window is left-closed,
so an attempt never sees its own outcome. Issuer and BIN rates have 1-hour windows: an issuer outage shows
within the hour. These views read attempts, not charges, so the fraud demo (one row per charge) leaves them out.
The generator's `authorization_truth` is evaluation data and never a source here.
"""

import tally as tl
from payments import card, issuer, issuer_mcc

bin_range = tl.Entity("bin", keys=["bin"], description="A BIN: the first six digits of the card number.")

_columns = {
    "is_approved": "CAST(approved AS INT)",
    "is_declined": "CAST(NOT approved AS INT)",
    "is_try_again_later": "CAST(coalesce(code = 'try_again_later', false) AS INT)",
    "is_retry": "CAST(attempt > 1 AS INT)",
}
_checks = [tl.Check.ge("attempt", 1), tl.Check.ge("amount", 0)]

authorizations = tl.Source(
    "authorizations", path="authorizations", format="parquet", timestamp="attempted", id="attempt_id",
    columns=_columns, checks=_checks,
    description="Every authorization attempt: first attempts of charges and the merchants' retries.",
)
authorization_declines = tl.Source(
    "authorization_declines", path="authorizations", format="parquet", timestamp="attempted", id="attempt_id",
    columns=_columns, checks=_checks, filter="NOT approved",
    description="Declined authorization attempts, with their code, category (hard/soft) and advice code.",
)


def _approval(windows, description="share of attempts approved"):
    return tl.Aggregation("mean", column="is_approved", windows=windows, name="approval_rate", description=description)


auth_issuer = tl.FeatureView(
    name="auth_issuer", entity=issuer, source=authorizations, version=1, ttl="7d", owner="auth-rate",
    tags={"domain": "acceptance"},
    description="An issuer's approval rate at hourly resolution (outages show within the hour), and its volume.",
    aggregations=[
        _approval(["1h", "24h", "7d"]),
        tl.Aggregation("count", windows=["1h", "24h"], description="attempts"),
        tl.Aggregation("sum", column="is_try_again_later", windows=["1h"], name="try_again_later",
                       description="try_again_later declines: the issuer or its processor is unavailable"),
    ],
)

auth_bin = tl.FeatureView(
    name="auth_bin", entity=bin_range, source=authorizations, version=1, ttl="7d", owner="auth-rate",
    tags={"domain": "acceptance"},
    description="A BIN's approval rate at hourly resolution: issuers apply stricter rules to some ranges.",
    aggregations=[_approval(["1h", "24h", "7d"]), tl.Aggregation("count", windows=["1h", "24h"], description="attempts")],
)

auth_issuer_mcc = tl.FeatureView(
    name="auth_issuer_mcc", entity=issuer_mcc, source=authorizations, version=1, ttl="30d", owner="auth-rate",
    tags={"domain": "acceptance"},
    description="An issuer's approval rate within a merchant category.",
    aggregations=[_approval(["24h", "7d", "30d"]), tl.Aggregation("count", windows=["7d"], description="attempts")],
)

auth_card = tl.FeatureView(
    name="auth_card", entity=card, source=authorizations, version=1, ttl="30d", owner="auth-rate",
    tags={"domain": "acceptance"},
    description="A card's recent attempts and its approval rate across merchants.",
    aggregations=[
        tl.Aggregation("count", windows=["1h", "6h", "24h", "72h"], name="attempts",
                       description="attempts on the card, retries included"),
        tl.Aggregation("sum", column="is_retry", windows=["24h"], name="retries", description="retries on the card"),
        _approval(["30d"], "share of the card's attempts approved, all merchants"),
        tl.Aggregation("approx_distinct", column="merchant_id", windows=["30d"], description="distinct merchants"),
    ],
)

auth_card_last_decline = tl.FeatureView(
    name="auth_card_last_decline", entity=card, source=authorization_declines, version=1, ttl="90d",
    owner="auth-rate", tags={"domain": "acceptance"},
    description="The card's last decline: how long ago, its code, category and advice code.",
    aggregations=[
        tl.Aggregation("time_since_last", windows=[None], name="seconds_since_decline",
                       description="seconds since the card's last declined attempt"),
        tl.Aggregation("last", column="code", windows=[None], name="last_code", description="its decline code"),
        tl.Aggregation("last", column="category", windows=[None], name="last_category", description="hard or soft"),
        tl.Aggregation("last", column="advice_code", windows=[None], name="last_advice_code",
                       description="its merchant advice code"),
        tl.Aggregation("count", windows=["24h"], name="declines", description="declined attempts"),
    ],
)
