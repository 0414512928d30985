"""Charges: who pays whom, when, how much, and whether the issuer says yes.

Algorithm (every step is a column expression over `spark.range` ids, so it runs in parallel and is
deterministic by seed; see `_rng`):

1. Draw, per segment of the id space (see `_plan`), a customer `c`, a card slot `k`, a merchant index `mi`, a
   time `t` (microseconds after `start`) and the kind of charge:
   - ordinary: customer with a skewed activity level, one of their cards (the first most often), a merchant
     of their country (a few are abroad), half the time one of their five regular merchants, ranks zipf-like
     (`ordinary_charges`), time on a weekly x diurnal cycle in the merchant's local time; with the plan's
     `structure` switch (`_plan.STRUCTURES`), the merchant of a domestic charge is moved to one of the
     customer's two communities (`community_merchant`), and a spree's merchants are drawn like ordinary ones
     (zipf) but from a community that is not the card's (`foreign_community`); "control" keeps the zipf draw
     and drops the communities;
   - card testing (`card_testing`): one card, BURST_LEN charges seconds apart at random merchants;
   - stolen-card spree (`stolen_card_spree`): the card's visit to the place it was stolen (a compromised
     merchant, within its breach window, for most sprees), then fraudulent charges days later at merchants
     new to the card, mostly abroad, with high amounts, hours apart;
   - quiet fraud (`quiet_fraud`, with `structure` only): one charge on a card whose details were stolen, drawn
     like an ordinary domestic charge (customer, time, merchant popularity, and below amount, channel and
     decline model), but at a merchant outside the card's communities ("control": anywhere).
2. Join the merchant (broadcast): category, country, currency, price level; evaluate the card's attributes and
   join its issuer (broadcast).
3. Amount: lognormal around the merchant's price level (`amount_usd`), converted to the merchant's currency in
   minor units.
4. Outcome: the issuer's logistic decline model (`decline_logit`), a fixed high decline rate for card testing;
   a decline code drawn for the context.

The fraud truth `_fraud` is an internal column: labels reach users only as disputes (`_labels`).
"""

from __future__ import annotations

import math
from datetime import date

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from tally.datagen import _catalog as cat
from tally.datagen import _sql as S
from tally.datagen._dims import (
    card_columns,
    cards_of,
    customer_country,
    issuer_columns,
    issuers,
    lookup,
    merchants,
)
from tally.datagen._plan import BURST_LEN, COMPROMISED_SPREE_SHARE, MICROS_PER_DAY, SPREE_LEN, Plan
from tally.datagen._rng import Rng, inverse_cdf, scramble_id, zipf_rank
from tally.datagen._sql import Expr

# The public schema of `charges`, in order (types: docs/datagen.md, pinned by tests/test_datagen.py).
CHARGE_COLUMNS = tuple(
    "charge_id created customer_id card_id bin issuer card_country card_brand merchant_id mcc "
    "merchant_country amount currency channel outcome decline_code".split()
)
HOUR = 3_600_000_000
ZIPF_S = 1.15  # merchant size exponent within a country
CROSS_BORDER_SHARE = 0.06  # ordinary charges at a merchant abroad
REGULAR_MERCHANT_SHARE = 0.5
CUSTOMER_SKEW = 1.3  # c = n * u^skew: low ids are the heavy users
# Latent structure (plan.communities): a merchant's community is its zipf rank within its country modulo
# COMMUNITIES, so community is independent of category, price and size; each customer (their segment) has a
# primary and a secondary community, and a domestic charge goes to the primary one with COMMUNITY_SHARES[0], to
# the secondary one with COMMUNITY_SHARES[1], else anywhere.
COMMUNITIES = 8
COMMUNITY_SHARES = (0.8, 0.15)


def _country_weights() -> list[float]:
    return [c.weight for c in cat.COUNTRIES]


def _local_time(rng: Rng, plan: Plan, ci: Expr, row: Expr) -> Expr:
    """Weekly x diurnal cycle: a day weighted by its weekday, an hour by local hour, then shifted to UTC."""
    weekday0 = date.fromisoformat(plan.start).weekday()
    day_w = [cat.WEEKLY[(weekday0 + d) % 7] for d in range(plan.days)]
    day = rng.choice("t.day", day_w, row).cast("long")
    hour = rng.choice("t.hour", cat.HOURLY, row).cast("long")
    within = S.floor(rng.uniform("t.within", row) * S.lit(HOUR)).cast("long")
    offset = lookup([int(c.utc_offset_h * HOUR) for c in cat.COUNTRIES], ci).cast("long")
    local = day * S.lit(MICROS_PER_DAY) + hour * S.lit(HOUR) + within
    return S.pmod(local - offset, S.lit(plan.span_micros))


def _merchant_in(plan: Plan, ci: Expr, u: Expr, community: Expr | None = None) -> Expr:
    """Merchant index of zipf rank drawn from u within country ci; with a `community` (null: any), the rank is
    moved within its block of COMMUNITIES ranks to that community's (so popularity stays zipf-like by block)."""
    offsets, sizes = plan.merchant_offsets(), plan.merchants_by_country
    rank = zipf_rank(u, lookup(sizes, ci), ZIPF_S)
    if community is not None:
        k = S.lit(COMMUNITIES).cast("long")
        moved = rank - S.pmod(rank, k) + community
        moved = S.when(moved >= lookup(sizes, ci), moved - k).otherwise(moved)
        rank = S.when(community.isNull() | (moved < 0), rank).otherwise(moved)
    return S.coalesce(lookup(offsets, ci).cast("long") + rank, S.lit(0).cast("long"))  # non-null join key


def customer_communities(rng: Rng, c: Expr) -> tuple[Expr, Expr]:
    """The customer's primary and (different) secondary merchant community."""
    primary = rng.index("s.primary", COMMUNITIES, c)
    return primary, S.pmod(primary + S.lit(1) + rng.index("s.secondary", COMMUNITIES - 1, c), S.lit(COMMUNITIES))


def foreign_community(rng: Rng, c: Expr, row: Expr) -> Expr:
    """A community other than customer c's two, uniformly (the j-th, skipping theirs)."""
    primary, secondary = customer_communities(rng, c)
    low, high = S.least(primary, secondary), S.greatest(primary, secondary)
    g = rng.index("s.foreign_community", COMMUNITIES - 2, row)
    g = S.when(g >= low, g + S.lit(1)).otherwise(g)
    return S.when(g >= high, g + S.lit(1)).otherwise(g)


def community_merchant(rng: Rng, c: Expr, u: Expr) -> Expr:
    """The community a domestic charge's merchant is drawn in (u uniform): primary, secondary, or null (any)."""
    primary, secondary = customer_communities(rng, c)
    return (S.when(u < S.lit(COMMUNITY_SHARES[0]), primary)
            .when(u < S.lit(sum(COMMUNITY_SHARES)), secondary)
            .otherwise(S.lit(None).cast("long")))


def _card_of(rng: Rng, df: DataFrame, c: Expr, u_card: Expr, skew: float = 1.0) -> DataFrame:
    """Stage the customer `_c`, their home country `_home` and the card slot `_k` (skew > 1: first card)."""
    df = S.with_columns(df, _c=c)
    df = S.with_columns(df, _home=customer_country(rng, S.col("_c")), _ncards=cards_of(rng, S.col("_c")))
    return S.with_columns(df, _k=S.floor(S.pow(u_card, S.lit(skew)) * S.col("_ncards")).cast("long"))


DRAW_COLUMNS = ("id", "_c", "_k", "_home", "_mi", "_t", "_kind")


def ordinary_charges(spark: SparkSession, plan: Plan) -> DataFrame:
    """Ordinary charges (step 1, first kind)."""
    rng = Rng(plan.seed)
    row = S.col("id")
    df = spark.range(0, plan.ordinary_rows, 1, plan.partitions)
    u_c = S.pow(rng.uniform("o.customer", row), S.lit(CUSTOMER_SKEW))
    df = _card_of(rng, df, S.floor(u_c * S.lit(plan.customers)).cast("long"), rng.uniform("o.card", row), 1.8)
    df = S.with_columns(df, _regular=rng.uniform("o.regular", row) < S.lit(REGULAR_MERCHANT_SHARE))
    abroad = ~S.col("_regular") & (rng.uniform("o.abroad", row) < S.lit(CROSS_BORDER_SHARE))
    slot = rng.index("o.regular_slot", 5, row)
    df = S.with_columns(
        df,
        _ci=S.when(abroad, rng.choice("o.country", _country_weights(), row)).otherwise(S.col("_home")),
        _um=S.when(S.col("_regular"), rng.uniform("o.regular_merchant", S.col("_c"), slot)).otherwise(
            rng.uniform("o.merchant", row)
        ),
    )
    community = None
    if plan.communities:  # a regular merchant's community is fixed per (customer, slot); abroad: any merchant
        u_comm = S.when(S.col("_regular"), rng.uniform("s.regular_community", S.col("_c"), slot)).otherwise(
            rng.uniform("s.community", row))
        community = S.when(S.col("_ci") == S.col("_home"), community_merchant(rng, S.col("_c"), u_comm))
    df = S.with_columns(
        df,
        _mi=_merchant_in(plan, S.col("_ci"), S.col("_um"), community),
        _t=_local_time(rng, plan, S.col("_ci"), row),
        _kind=S.lit("ordinary"),
    )
    return df.select(*DRAW_COLUMNS)


def card_testing(spark: SparkSession, plan: Plan) -> DataFrame:
    """Bursts: one card, BURST_LEN small charges 8-60 s apart, each at a random merchant."""
    rng = Rng(plan.seed)
    lo = plan.ordinary_rows
    row = S.col("id")
    df = spark.range(lo, lo + plan.testing_rows, 1, max(1, plan.partitions // 16))
    df = S.with_columns(df, _e=S.floor((row - S.lit(lo)) / S.lit(BURST_LEN)).cast("long"))
    burst, pos = S.col("_e"), (row - S.lit(lo)) % S.lit(BURST_LEN)
    df = _card_of(rng, df, rng.index("ct.customer", plan.customers, burst), rng.uniform("ct.card", burst))
    span = float(max(plan.span_micros - HOUR, 1))
    df = S.with_columns(
        df,
        _start=S.floor(rng.uniform("ct.start", burst) * S.lit(span)).cast("long"),
        _gap=S.floor((S.lit(8.0) + S.lit(52.0) * rng.uniform("ct.gap", burst)) * S.lit(1e6)).cast("long"),
    )
    jitter = S.floor(rng.uniform("ct.jitter", row) * S.col("_gap").cast("double")).cast("long")
    df = S.with_columns(
        df,
        _mi=rng.index("ct.merchant", plan.merchants, row),
        _t=S.col("_start") + pos * S.col("_gap") + jitter,
        _kind=S.lit("card_testing"),
    )
    return df.select(*DRAW_COLUMNS)


def stolen_card_spree(spark: SparkSession, plan: Plan) -> DataFrame:
    """Sprees: the compromise visit (position 0), then SPREE_LEN - 1 fraudulent charges (see module doc)."""
    rng = Rng(plan.seed)
    lo = plan.ordinary_rows + plan.testing_rows
    row = S.col("id")
    span = float(plan.span_micros)
    df = spark.range(lo, plan.spree_end, 1, max(1, plan.partitions // 16))
    df = S.with_columns(df, _e=S.floor((row - S.lit(lo)) / S.lit(SPREE_LEN)).cast("long"))
    spree, pos = S.col("_e"), (row - S.lit(lo)) % S.lit(SPREE_LEN)
    df = _card_of(rng, df, rng.index("sp.customer", plan.customers, spree), rng.uniform("sp.card", spree))

    # The compromise: at a compromised merchant during its breach, or (stolen otherwise) anywhere early.
    at_breach = rng.uniform("sp.breached", spree) < S.lit(COMPROMISED_SPREE_SHARE)
    j = rng.index("sp.breach", len(plan.compromised), spree)
    breach_mi = lookup([mi for mi, _ in plan.compromised], j).cast("long")
    breach_t = lookup([s for _, s in plan.compromised], j).cast("long") + S.floor(
        rng.uniform("sp.breach_t", spree) * S.lit(float(plan.breach_micros))
    ).cast("long")
    usual_mi = _merchant_in(plan, S.col("_home"), rng.uniform("sp.usual", spree))
    anytime = S.floor(rng.uniform("sp.t0", spree) * S.lit(0.6 * span)).cast("long")
    df = S.with_columns(
        df,
        _t0=S.when(at_breach, breach_t).otherwise(anytime),
        _mi0=S.when(at_breach, breach_mi).otherwise(usual_mi),
        _gap=S.floor(
            S.exp(S.lit(math.log(3.0)) + S.lit(0.8) * rng.normal("sp.gap", spree)) * S.lit(float(HOUR))
        ).cast("long"),
    )

    # The spree: days after the compromise, hours apart, at random (new) merchants, mostly abroad.
    delay = S.floor((S.lit(0.05) + S.lit(0.15) * rng.uniform("sp.delay", spree)) * S.lit(span)).cast("long")
    jitter = S.floor(rng.uniform("sp.jitter", row) * S.col("_gap").cast("double")).cast("long")
    t_fraud = S.col("_t0") + delay + (pos - S.lit(1)) * S.col("_gap") + jitter
    abroad = rng.uniform("sp.abroad", row) < S.lit(0.6)
    df = S.with_columns(
        df, _ci=S.when(abroad, rng.index("sp.country", len(cat.COUNTRIES), row)).otherwise(S.col("_home"))
    )
    fraud_mi = lookup(plan.merchant_offsets(), S.col("_ci")).cast("long") + rng.index(
        "sp.merchant", lookup(plan.merchants_by_country, S.col("_ci")), row
    )
    if plan.structure:  # merchants as popular as the card's usual ones, in a community the card never shops in
        fraud_mi = _merchant_in(plan, S.col("_ci"), rng.uniform("s.spree_merchant", row),
                                foreign_community(rng, S.col("_c"), row) if plan.communities else None)
    is_seed = pos == S.lit(0)
    df = S.with_columns(
        df,
        _mi=S.when(is_seed, S.col("_mi0")).otherwise(fraud_mi),
        _t=S.pmod(S.when(is_seed, S.col("_t0")).otherwise(t_fraud), S.lit(plan.span_micros)),
        _kind=S.when(is_seed, S.lit("compromise")).otherwise(S.lit("spree")),
    )
    return df.select(*DRAW_COLUMNS)


def quiet_fraud(spark: SparkSession, plan: Plan) -> DataFrame:
    """Quiet fraud: single charges that aggregates cannot tell from ordinary domestic ones (see module doc)."""
    rng = Rng(plan.seed)
    row = S.col("id")
    df = spark.range(plan.spree_end, plan.charges, 1, max(1, plan.partitions // 16))
    u_c = S.pow(rng.uniform("q.customer", row), S.lit(CUSTOMER_SKEW))
    df = _card_of(rng, df, S.floor(u_c * S.lit(plan.customers)).cast("long"), rng.uniform("q.card", row), 1.8)
    community = foreign_community(rng, S.col("_c"), row) if plan.communities else None
    df = S.with_columns(
        df,
        _mi=_merchant_in(plan, S.col("_home"), rng.uniform("q.merchant", row), community),
        _t=_local_time(rng, plan, S.col("_home"), row),
        _kind=S.lit("quiet"),
    )
    return df.select(*DRAW_COLUMNS)


def amount_usd(rng: Rng, kind: Expr, row: Expr) -> Expr:
    """Lognormal around the merchant's price level; sprees buy dearer, card testers spend a dollar or two."""
    z = rng.normal("amount", row)
    ordinary = S.exp(S.col("_log_median") + S.col("_sigma") * z)
    spree = S.exp(S.col("_log_median") + S.lit(0.9) + S.col("_sigma") * z)
    testing = S.least(S.greatest(S.exp(S.lit(math.log(1.5)) + S.lit(0.6) * z), S.lit(0.5)), S.lit(20.0))
    return S.when(kind == "card_testing", testing).when(kind == "spree", spree).otherwise(ordinary)


def decline_logit(kind: Expr, usd: Expr, cross: Expr, ecommerce: Expr) -> Expr:
    """The issuer's model for ordinary charges; stolen cards trip it more; card tests mostly bounce."""
    ordinary = (
        S.col("_iss_base")
        + S.col("_iss_cross") * cross.cast("double")
        + S.col("_iss_amount") * S.log(usd / S.lit(50.0))
        + S.col("_iss_ecom") * ecommerce.cast("double")
    )
    return (
        S.when(kind == "card_testing", S.lit(1.7) + S.lit(0.4) * (S.col("_iss_base") + S.lit(2.6)))
        .when(kind == "spree", ordinary + S.lit(1.2))
        .otherwise(ordinary)
    )


def _decline_code(rng: Rng, kind: Expr, cross: Expr, row: Expr) -> Expr:
    def pick(stream, table):
        return lookup(
            [code for code, _ in table], inverse_cdf(rng.uniform(stream, row), [w for _, w in table])
        )

    return (
        S.when(kind == "card_testing", pick("code.testing", cat.DECLINE_CARD_TESTING))
        .when(kind == "spree", pick("code.stolen", cat.DECLINE_STOLEN))
        .when(cross & (rng.uniform("code.cross", row) < S.lit(0.35)), S.lit(cat.DECLINE_CROSS_BORDER))
        .otherwise(pick("code.ordinary", cat.DECLINE_ORDINARY))
    )


def charges_with_truth(spark: SparkSession, plan: Plan) -> DataFrame:
    """All charge columns plus internal `_row`, `_kind`, `_fraud`, `_p_decline`, `_issuer_idx`, `_usd` (steps 2-4)."""
    rng = Rng(plan.seed)
    draws = ordinary_charges(spark, plan)
    if plan.testing_rows:
        draws = draws.unionByName(card_testing(spark, plan))
    if plan.spree_rows:
        draws = draws.unionByName(stolen_card_spree(spark, plan))
    if plan.quiet_rows:
        draws = draws.unionByName(quiet_fraud(spark, plan))

    row, kind = S.col("id"), S.col("_kind")
    card = card_columns(rng, S.col("_c"), S.col("_k"), S.col("_home"))
    df = draws.join(F.broadcast(merchants(spark, plan)), on="_mi", how="inner")
    df = issuer_columns(S.with_columns(df, **card), issuers(spark))

    ecommerce = (
        S.when(kind == "card_testing", S.lit(True))
        .when(kind == "spree", rng.uniform("channel", row) < S.greatest(S.col("_ecom_share"), S.lit(0.7)))
        .otherwise(rng.uniform("channel", row) < S.col("_ecom_share"))
    )
    df = S.with_columns(
        df,
        _usd=amount_usd(rng, kind, row),
        _ecom=ecommerce,
        _cross=S.col("card_country") != S.col("merchant_country"),
    )
    p_decline = S.lit(1.0) / (
        S.lit(1.0) + S.exp(-decline_logit(kind, S.col("_usd"), S.col("_cross"), S.col("_ecom")))
    )
    df = S.with_columns(df, _p_decline=p_decline)
    df = S.with_columns(df, _declined=rng.uniform("decline", row) < S.col("_p_decline"))
    declined, cross = S.col("_declined"), S.col("_cross")
    minor = S.greatest(S.round(S.col("_usd") * S.col("_per_usd") * S.col("_minor")), S.lit(1.0))

    derived = {
        "charge_id": S.concat(S.lit("ch_"), scramble_id(row, plan.seed, "charge")),
        "created": S.timestamp_micros(S.lit(plan.start_micros) + S.col("_t")),
        "amount": minor.cast("decimal(18,0)"),
        "channel": S.when(S.col("_ecom"), S.lit("ecommerce")).otherwise(S.lit("card_present")),
        "outcome": S.when(declined, S.lit("declined")).otherwise(S.lit("authorized")),
        "decline_code": S.when(declined, _decline_code(rng, kind, cross, row)),
    }
    return df.select(
        *[derived[name].alias(name) if name in derived else name for name in CHARGE_COLUMNS],
        row.alias("_row"),
        "_kind",
        kind.isin("card_testing", "spree", "quiet").alias("_fraud"),
        # for the authorization attempts (`_auth`): the issuer's decline probability, the card's issuer, USD
        "_p_decline",
        "_issuer_idx",
        "_usd",
    )
