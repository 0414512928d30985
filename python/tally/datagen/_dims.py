"""Dimension tables: issuers, merchants, customers, cards.

Every attribute is a pure function of the entity's key (see `_rng`), written once here as column
expressions. The small dimensions (issuers, merchants: at most 200 k rows) are materialised with
`spark.range` and broadcast into the charges. Customers and cards can number in the millions, so charges do
not join them: they evaluate the same expressions inline on the (customer, card slot) they drew, which is
why `customers()`, `cards()` and the charges can never disagree.
"""

from __future__ import annotations

import math

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from tally.datagen import _catalog as cat
from tally.datagen import _sql as S
from tally.datagen._plan import Plan
from tally.datagen._rng import Rng, inverse_cdf, scramble_id
from tally.datagen._sql import Expr

MAX_CARDS = len(cat.CARDS_PER_CUSTOMER)
COUNTRY_CODES = [c.code for c in cat.COUNTRIES]


def lookup(values, index: Expr) -> Expr:
    """values[index] for a small Python list and a 0-based index column."""
    return S.element_at(S.array(*[S.lit(v) for v in values]), index.cast("int") + S.lit(1))


def _issuer_blocks() -> tuple[list[int], list[int]]:
    """Issuers are listed grouped by country, in COUNTRIES order: (offset, count) per country."""
    offsets, counts = [], []
    for code in COUNTRY_CODES:
        idx = [i for i, iss in enumerate(cat.ISSUERS) if iss.country == code]
        if not idx or idx != list(range(idx[0], idx[0] + len(idx))):
            raise RuntimeError(f"catalog: issuers of {code} must be listed together and exist")
        offsets.append(idx[0])
        counts.append(len(idx))
    return offsets, counts


ISSUER_OFFSETS, ISSUER_COUNTRY_COUNTS = _issuer_blocks()


# -- customers and cards: inline expressions ---------------------------------------------------------------


def customer_country(rng: Rng, c: Expr) -> Expr:
    return rng.choice("customer.country", [x.weight for x in cat.COUNTRIES], c)


def cards_of(rng: Rng, c: Expr) -> Expr:
    """How many cards customer c holds (1..4)."""
    return rng.choice("customer.cards", cat.CARDS_PER_CUSTOMER, c) + S.lit(1)


def customer_id(rng: Rng, c: Expr) -> Expr:
    return S.concat(S.lit("cus_"), scramble_id(c, rng.seed, "customer"))


def card_key(c: Expr, k: Expr) -> Expr:
    return c * S.lit(MAX_CARDS) + k


def card_columns(rng: Rng, c: Expr, k: Expr, home: Expr | None = None) -> dict[str, Expr]:
    """Card k of customer c: its fingerprint and the issuer index (an issuer of the customer's country).

    `home` may pass the customer's country when the caller has it staged already.
    """
    key = card_key(c, k)
    home = customer_country(rng, c) if home is None else home
    issuer_idx = lookup(ISSUER_OFFSETS, home) + rng.index(
        "card.issuer", lookup(ISSUER_COUNTRY_COUNTS, home), key
    )
    return {
        "card_id": S.concat(S.lit("card_"), scramble_id(key, rng.seed, "card")),
        "customer_id": customer_id(rng, c),
        # coalesce: a non-null join key, so Spark adds no `isnotnull` filter that recomputes it
        "_issuer_idx": S.coalesce(issuer_idx.cast("int"), S.lit(0)),
        "_bin_u": rng.uniform("card.bin", key),
    }


def issuer_columns(df: DataFrame, issuers: DataFrame) -> DataFrame:
    """Attach issuer, bin, card_country, card_brand and the issuer's decline parameters (broadcast join)."""
    joined = df.join(F.broadcast(issuers), on="_issuer_idx", how="inner")
    bin_ = S.element_at(S.col("_bins"), S.floor(S.col("_bin_u") * S.size("_bins")).cast("int") + S.lit(1))
    return joined.withColumn("bin", bin_.column).drop("_bins", "_bin_u")


def customers(spark: SparkSession, plan: Plan) -> DataFrame:
    rng = Rng(plan.seed)
    c = S.col("id")
    return spark.range(0, plan.customers, 1, plan.partitions).select(
        customer_id(rng, c).alias("customer_id"),
        lookup(COUNTRY_CODES, customer_country(rng, c)).alias("country"),
        cards_of(rng, c).cast("int").alias("cards"),
    )


def cards(spark: SparkSession, plan: Plan) -> DataFrame:
    rng = Rng(plan.seed)
    slots = spark.range(0, plan.customers * MAX_CARDS, 1, plan.partitions).select(
        S.floor(S.col("id") / MAX_CARDS).cast("long").alias("c"), (S.col("id") % MAX_CARDS).alias("k")
    )
    held = slots.where((S.col("k") < cards_of(rng, S.col("c"))).column)
    cols = card_columns(rng, S.col("c"), S.col("k"))
    with_card = held.select(*[v.alias(n) for n, v in cols.items()])
    return issuer_columns(with_card, issuers(spark)).select(
        "card_id", "customer_id", "bin", "issuer", "card_country", "card_brand"
    )


# -- issuers and merchants: small, broadcast -------------------------------------------------------------


def issuers(spark: SparkSession) -> DataFrame:
    rows = [
        (
            i,
            iss.name,
            iss.country,
            iss.brand,
            list(iss.bins),
            iss.base,
            iss.cross_border,
            iss.amount,
            iss.ecommerce,
        )
        for i, iss in enumerate(cat.ISSUERS)
    ]
    schema = (
        "_issuer_idx int, issuer string, card_country string, card_brand string, _bins array<string>, "
        "_iss_base double, _iss_cross double, _iss_amount double, _iss_ecom double"
    )
    return spark.createDataFrame(rows, schema)


def merchants(spark: SparkSession, plan: Plan) -> DataFrame:
    """One row per merchant index `_mi`; countries hold contiguous index blocks, rank 0 being the biggest.

    Each merchant has a category (mcc) and its own price level (a lognormal factor on the category's median).
    """
    rng = Rng(plan.seed)
    m = S.col("id")
    ci = inverse_cdf(
        (m.cast("double") + S.lit(0.5)) / S.lit(float(plan.merchants)), plan.merchants_by_country
    )
    cat_idx = rng.choice("merchant.mcc", [x.weight for x in cat.CATEGORIES], m)
    log_median = lookup([math.log(x.median_usd) for x in cat.CATEGORIES], cat_idx) + S.lit(0.3) * rng.normal(
        "merchant.price", m
    )
    compromised = [mi for mi, _ in plan.compromised]
    return spark.range(0, plan.merchants, 1, max(1, plan.partitions // 8)).select(
        m.alias("_mi"),
        S.concat(S.lit("mer_"), scramble_id(m, plan.seed, "merchant")).alias("merchant_id"),
        lookup([x.mcc for x in cat.CATEGORIES], cat_idx).alias("mcc"),
        lookup(COUNTRY_CODES, ci).alias("merchant_country"),
        lookup([x.currency for x in cat.COUNTRIES], ci).alias("currency"),
        lookup([x.per_usd for x in cat.COUNTRIES], ci).alias("_per_usd"),
        lookup([float(10**x.exponent) for x in cat.COUNTRIES], ci).alias("_minor"),
        lookup([x.ecommerce for x in cat.CATEGORIES], cat_idx).alias("_ecom_share"),
        log_median.alias("_log_median"),
        lookup([x.sigma for x in cat.CATEGORIES], cat_idx).alias("_sigma"),
        m.isin(compromised).alias("compromised"),
    )
