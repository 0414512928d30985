"""Synthetic payments: charges, disputes, refunds and authorization attempts, with the patterns fraud and
authorization models learn.

    frames = generate(spark, charges=200_000, days=30, seed=7)     # {"charges", "disputes", "refunds", ...}
    counts = write(spark, "data", charges=1_000_000, days=90, seed=7, format="delta")
    rates = describe(frames)

Built in Spark from `spark.range` ids (nothing large is collected), so it scales to tens of millions of
charges on a laptop; deterministic by seed: the same arguments give the same rows under any partitioning.
What it models and the rates it produces: docs/datagen.md.

Modules: `_plan` sizes, `_rng` counter-based randomness, `_catalog` reference data, `_dims` issuers,
merchants, customers and cards, `_charges` the charges and their outcomes, `_labels` disputes and refunds,
`_auth` authorization attempts and retries (with their ground truth), `_describe` rates; their column
expressions are `_sql.Expr`s (mostly SQL text: few py4j calls), which become Columns where a DataFrame takes them.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession

from tally.datagen import _dims
from tally.datagen import _sql as S
from tally.datagen._auth import AUTH_COLUMNS, TRUTH_COLUMNS, attempts_with_truth
from tally.datagen._charges import CHARGE_COLUMNS, COMMUNITIES, charges_with_truth, customer_communities
from tally.datagen._describe import describe
from tally.datagen._labels import disputes, refunds
from tally.datagen._plan import make_plan
from tally.datagen._rng import Rng
from tally.errors import UsageError

__all__ = ["FORMATS", "TABLES", "describe", "dimensions", "generate", "write"]

TABLES = ("charges", "disputes", "refunds", "authorizations", "authorization_truth")
FORMATS = ("parquet", "delta")


def generate(
    spark: SparkSession,
    charges: int,
    days: int,
    seed: int,
    start: str = "2026-01-01",
    *,
    partitions: int | None = None,
    structure: bool | str = False,
) -> dict[str, DataFrame]:
    """The `charges`, `disputes`, `refunds`, `authorizations` and `authorization_truth` DataFrames (lazy).

    `authorization_truth` (attempt id -> approval probability) is the generator's ground truth, for evaluation
    only: never a feature source. `charges` rows exactly, created in [start, start + days) UTC. `partitions`
    sets the parallelism of the charge id ranges (default: one per million charges, at least 2); it never
    changes the rows. `structure=True` plants latent merchant communities and quiet fraud outside them
    (docs/datagen.md, "Latent structure"); `structure="control"` the same fraud mix and rates without the
    communities (the control of the embeddings lift demo); off (the default) gives exactly the rows generated
    before the switch existed.
    """
    plan = make_plan(charges, days, seed, start, partitions, structure)
    truth = charges_with_truth(spark, plan)
    return _tables(truth, attempts_with_truth(truth, plan), plan)


def _tables(truth: DataFrame, attempts: DataFrame, plan) -> dict[str, DataFrame]:
    return {
        "charges": truth.select(*CHARGE_COLUMNS),
        "disputes": disputes(truth, plan.seed),
        "refunds": refunds(truth, plan.seed),
        "authorizations": attempts.select(*AUTH_COLUMNS),
        "authorization_truth": attempts.select(*TRUTH_COLUMNS),
    }


def dimensions(
    spark: SparkSession, charges: int, days: int, seed: int, start: str = "2026-01-01", *,
    structure: bool | str = False
) -> dict[str, DataFrame]:
    """The dimension tables behind `generate` with the same arguments: issuers, merchants, customers, cards.

    Customers and cards hold everyone who could pay, not only those who did in the generated charges. With
    `structure=True`, merchants carry their `community` and customers their `primary_community` and
    `secondary_community` (the generator's hidden truth, for evaluation only).
    """
    plan = make_plan(charges, days, seed, start, None, structure)
    merchants = _dims.merchants(spark, plan).select(
        "merchant_id", "mcc", "merchant_country", "currency", "compromised",
        *([_community_of_merchant(plan).alias("community")] if plan.communities else []))
    customers = _dims.customers(spark, plan)
    if plan.communities:
        primary, secondary = customer_communities(Rng(plan.seed), S.col("id"))
        customers = spark.range(0, plan.customers, 1, plan.partitions).select(
            _dims.customer_id(Rng(plan.seed), S.col("id")).alias("customer_id"),
            primary.alias("primary_community"), secondary.alias("secondary_community")).join(customers, "customer_id")
    return {
        "issuers": _dims.issuers(spark).select("issuer", "card_country", "card_brand"),
        "merchants": merchants,
        "customers": customers,
        "cards": _dims.cards(spark, plan),
    }


def _community_of_merchant(plan):
    """A merchant's community: its rank within its country modulo COMMUNITIES (`_charges._merchant_in`)."""
    offsets = plan.merchant_offsets()
    mi = S.col("_mi")
    offset = S.lit(0)
    for o in offsets[1:]:
        offset = S.when(mi >= S.lit(o), S.lit(o)).otherwise(offset)
    return S.pmod(mi - offset, S.lit(COMMUNITIES))


def write(
    spark: SparkSession,
    out: str,
    charges: int,
    days: int,
    seed: int,
    start: str = "2026-01-01",
    format: str = "parquet",
    *,
    partitions: int | None = None,
    structure: bool | str = False,
) -> dict[str, int]:
    """Generate and write `<out>/<table>` for every table of TABLES (overwriting); return row counts."""
    if format not in FORMATS:
        raise UsageError(f"datagen: unknown format {format!r}", hint=f"use one of {', '.join(FORMATS)}")
    from pyspark import StorageLevel

    # Every table derives from the charges with their hidden truth, and two from the attempts: computed once each
    # (spilling to disk at scale), not once per table written.
    plan = make_plan(charges, days, seed, start, partitions, structure)
    truth = charges_with_truth(spark, plan).persist(StorageLevel.MEMORY_AND_DISK)
    attempts = attempts_with_truth(truth, plan).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        frames = _tables(truth, attempts, plan)
        counts = {}
        for name in TABLES:
            path = f"{out.rstrip('/')}/{name}"
            writer = frames[name].write.format(format).mode("overwrite")
            if format == "delta":
                writer = writer.option("overwriteSchema", "true")
            writer.save(path)
            counts[name] = spark.read.format(format).load(path).count()
        return counts
    finally:
        attempts.unpersist()
        truth.unpersist()
