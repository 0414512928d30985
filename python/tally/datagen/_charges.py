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

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from tally.datagen import _catalog as cat
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


def _local_time(rng: Rng, plan: Plan, ci: Column, row: Column) -> Column:
    """Weekly x diurnal cycle: a day weighted by its weekday, an hour by local hour, then shifted to UTC."""
    weekday0 = date.fromisoformat(plan.start).weekday()
    day_w = [cat.WEEKLY[(weekday0 + d) % 7] for d in range(plan.days)]
    day = rng.choice("t.day", day_w, row).cast("long")
    hour = rng.choice("t.hour", cat.HOURLY, row).cast("long")
    within = F.floor(rng.uniform("t.within", row) * F.lit(HOUR)).cast("long")
    offset = lookup([int(c.utc_offset_h * HOUR) for c in cat.COUNTRIES], ci).cast("long")
    local = day * F.lit(MICROS_PER_DAY) + hour * F.lit(HOUR) + within
    return F.pmod(local - offset, F.lit(plan.span_micros))


def _merchant_in(plan: Plan, ci: Column, u: Column, community: Column | None = None) -> Column:
    """Merchant index of zipf rank drawn from u within country ci; with a `community` (null: any), the rank is
    moved within its block of COMMUNITIES ranks to that community's (so popularity stays zipf-like by block)."""
    offsets, sizes = plan.merchant_offsets(), plan.merchants_by_country
    rank = zipf_rank(u, lookup(sizes, ci), ZIPF_S)
    if community is not None:
        k = F.lit(COMMUNITIES).cast("long")
        moved = rank - F.pmod(rank, k) + community
        moved = F.when(moved >= lookup(sizes, ci), moved - k).otherwise(moved)
        rank = F.when(community.isNull() | (moved < 0), rank).otherwise(moved)
    return F.coalesce(lookup(offsets, ci).cast("long") + rank, F.lit(0).cast("long"))  # non-null join key


def customer_communities(rng: Rng, c: Column) -> tuple[Column, Column]:
    """The customer's primary and (different) secondary merchant community."""
    primary = rng.index("s.primary", COMMUNITIES, c)
    return primary, F.pmod(primary + F.lit(1) + rng.index("s.secondary", COMMUNITIES - 1, c), F.lit(COMMUNITIES))


def foreign_community(rng: Rng, c: Column, row: Column) -> Column:
    """A community other than customer c's two, uniformly (the j-th, skipping theirs)."""
    primary, secondary = customer_communities(rng, c)
    low, high = F.least(primary, secondary), F.greatest(primary, secondary)
    g = rng.index("s.foreign_community", COMMUNITIES - 2, row)
    g = F.when(g >= low, g + F.lit(1)).otherwise(g)
    return F.when(g >= high, g + F.lit(1)).otherwise(g)


def community_merchant(rng: Rng, c: Column, u: Column) -> Column:
    """The community a domestic charge's merchant is drawn in (u uniform): primary, secondary, or null (any)."""
    primary, secondary = customer_communities(rng, c)
    return (F.when(u < F.lit(COMMUNITY_SHARES[0]), primary)
            .when(u < F.lit(sum(COMMUNITY_SHARES)), secondary)
            .otherwise(F.lit(None).cast("long")))


def _with(df: DataFrame, **cols: Column) -> DataFrame:
    """Add columns as one stage: later stages refer to them by name, so each is computed once per row."""
    return df.select("*", *[value.alias(name) for name, value in cols.items()])


def _card_of(rng: Rng, df: DataFrame, c: Column, u_card: Column, skew: float = 1.0) -> DataFrame:
    """Stage the customer `_c`, their home country `_home` and the card slot `_k` (skew > 1: first card)."""
    df = _with(df, _c=c)
    df = _with(df, _home=customer_country(rng, F.col("_c")), _ncards=cards_of(rng, F.col("_c")))
    return _with(df, _k=F.floor(F.pow(u_card, F.lit(skew)) * F.col("_ncards")).cast("long"))


DRAW_COLUMNS = ("id", "_c", "_k", "_home", "_mi", "_t", "_kind")


def ordinary_charges(spark: SparkSession, plan: Plan) -> DataFrame:
    """Ordinary charges (step 1, first kind)."""
    rng = Rng(plan.seed)
    row = F.col("id")
    df = spark.range(0, plan.ordinary_rows, 1, plan.partitions)
    u_c = F.pow(rng.uniform("o.customer", row), F.lit(CUSTOMER_SKEW))
    df = _card_of(rng, df, F.floor(u_c * F.lit(plan.customers)).cast("long"), rng.uniform("o.card", row), 1.8)
    df = _with(df, _regular=rng.uniform("o.regular", row) < F.lit(REGULAR_MERCHANT_SHARE))
    abroad = ~F.col("_regular") & (rng.uniform("o.abroad", row) < F.lit(CROSS_BORDER_SHARE))
    slot = rng.index("o.regular_slot", 5, row)
    df = _with(
        df,
        _ci=F.when(abroad, rng.choice("o.country", _country_weights(), row)).otherwise(F.col("_home")),
        _um=F.when(F.col("_regular"), rng.uniform("o.regular_merchant", F.col("_c"), slot)).otherwise(
            rng.uniform("o.merchant", row)
        ),
    )
    community = None
    if plan.communities:  # a regular merchant's community is fixed per (customer, slot); abroad: any merchant
        u_comm = F.when(F.col("_regular"), rng.uniform("s.regular_community", F.col("_c"), slot)).otherwise(
            rng.uniform("s.community", row))
        community = F.when(F.col("_ci") == F.col("_home"), community_merchant(rng, F.col("_c"), u_comm))
    df = _with(
        df,
        _mi=_merchant_in(plan, F.col("_ci"), F.col("_um"), community),
        _t=_local_time(rng, plan, F.col("_ci"), row),
        _kind=F.lit("ordinary"),
    )
    return df.select(*DRAW_COLUMNS)


def card_testing(spark: SparkSession, plan: Plan) -> DataFrame:
    """Bursts: one card, BURST_LEN small charges 8-60 s apart, each at a random merchant."""
    rng = Rng(plan.seed)
    lo = plan.ordinary_rows
    row = F.col("id")
    df = spark.range(lo, lo + plan.testing_rows, 1, max(1, plan.partitions // 16))
    df = _with(df, _e=F.floor((row - F.lit(lo)) / F.lit(BURST_LEN)).cast("long"))
    burst, pos = F.col("_e"), (row - F.lit(lo)) % F.lit(BURST_LEN)
    df = _card_of(rng, df, rng.index("ct.customer", plan.customers, burst), rng.uniform("ct.card", burst))
    span = float(max(plan.span_micros - HOUR, 1))
    df = _with(
        df,
        _start=F.floor(rng.uniform("ct.start", burst) * F.lit(span)).cast("long"),
        _gap=F.floor((F.lit(8.0) + F.lit(52.0) * rng.uniform("ct.gap", burst)) * F.lit(1e6)).cast("long"),
    )
    jitter = F.floor(rng.uniform("ct.jitter", row) * F.col("_gap").cast("double")).cast("long")
    df = _with(
        df,
        _mi=rng.index("ct.merchant", plan.merchants, row),
        _t=F.col("_start") + pos * F.col("_gap") + jitter,
        _kind=F.lit("card_testing"),
    )
    return df.select(*DRAW_COLUMNS)


def stolen_card_spree(spark: SparkSession, plan: Plan) -> DataFrame:
    """Sprees: the compromise visit (position 0), then SPREE_LEN - 1 fraudulent charges (see module doc)."""
    rng = Rng(plan.seed)
    lo = plan.ordinary_rows + plan.testing_rows
    row = F.col("id")
    span = float(plan.span_micros)
    df = spark.range(lo, plan.spree_end, 1, max(1, plan.partitions // 16))
    df = _with(df, _e=F.floor((row - F.lit(lo)) / F.lit(SPREE_LEN)).cast("long"))
    spree, pos = F.col("_e"), (row - F.lit(lo)) % F.lit(SPREE_LEN)
    df = _card_of(rng, df, rng.index("sp.customer", plan.customers, spree), rng.uniform("sp.card", spree))

    # The compromise: at a compromised merchant during its breach, or (stolen otherwise) anywhere early.
    at_breach = rng.uniform("sp.breached", spree) < F.lit(COMPROMISED_SPREE_SHARE)
    j = rng.index("sp.breach", len(plan.compromised), spree)
    breach_mi = lookup([mi for mi, _ in plan.compromised], j).cast("long")
    breach_t = lookup([s for _, s in plan.compromised], j).cast("long") + F.floor(
        rng.uniform("sp.breach_t", spree) * F.lit(float(plan.breach_micros))
    ).cast("long")
    usual_mi = _merchant_in(plan, F.col("_home"), rng.uniform("sp.usual", spree))
    anytime = F.floor(rng.uniform("sp.t0", spree) * F.lit(0.6 * span)).cast("long")
    df = _with(
        df,
        _t0=F.when(at_breach, breach_t).otherwise(anytime),
        _mi0=F.when(at_breach, breach_mi).otherwise(usual_mi),
        _gap=F.floor(
            F.exp(F.lit(math.log(3.0)) + F.lit(0.8) * rng.normal("sp.gap", spree)) * F.lit(float(HOUR))
        ).cast("long"),
    )

    # The spree: days after the compromise, hours apart, at random (new) merchants, mostly abroad.
    delay = F.floor((F.lit(0.05) + F.lit(0.15) * rng.uniform("sp.delay", spree)) * F.lit(span)).cast("long")
    jitter = F.floor(rng.uniform("sp.jitter", row) * F.col("_gap").cast("double")).cast("long")
    t_fraud = F.col("_t0") + delay + (pos - F.lit(1)) * F.col("_gap") + jitter
    abroad = rng.uniform("sp.abroad", row) < F.lit(0.6)
    df = _with(
        df, _ci=F.when(abroad, rng.index("sp.country", len(cat.COUNTRIES), row)).otherwise(F.col("_home"))
    )
    fraud_mi = lookup(plan.merchant_offsets(), F.col("_ci")).cast("long") + rng.index(
        "sp.merchant", lookup(plan.merchants_by_country, F.col("_ci")), row
    )
    if plan.structure:  # merchants as popular as the card's usual ones, in a community the card never shops in
        fraud_mi = _merchant_in(plan, F.col("_ci"), rng.uniform("s.spree_merchant", row),
                                foreign_community(rng, F.col("_c"), row) if plan.communities else None)
    is_seed = pos == F.lit(0)
    df = _with(
        df,
        _mi=F.when(is_seed, F.col("_mi0")).otherwise(fraud_mi),
        _t=F.pmod(F.when(is_seed, F.col("_t0")).otherwise(t_fraud), F.lit(plan.span_micros)),
        _kind=F.when(is_seed, F.lit("compromise")).otherwise(F.lit("spree")),
    )
    return df.select(*DRAW_COLUMNS)


def quiet_fraud(spark: SparkSession, plan: Plan) -> DataFrame:
    """Quiet fraud: single charges that aggregates cannot tell from ordinary domestic ones (see module doc)."""
    rng = Rng(plan.seed)
    row = F.col("id")
    df = spark.range(plan.spree_end, plan.charges, 1, max(1, plan.partitions // 16))
    u_c = F.pow(rng.uniform("q.customer", row), F.lit(CUSTOMER_SKEW))
    df = _card_of(rng, df, F.floor(u_c * F.lit(plan.customers)).cast("long"), rng.uniform("q.card", row), 1.8)
    community = foreign_community(rng, F.col("_c"), row) if plan.communities else None
    df = _with(
        df,
        _mi=_merchant_in(plan, F.col("_home"), rng.uniform("q.merchant", row), community),
        _t=_local_time(rng, plan, F.col("_home"), row),
        _kind=F.lit("quiet"),
    )
    return df.select(*DRAW_COLUMNS)


def amount_usd(rng: Rng, kind: Column, row: Column) -> Column:
    """Lognormal around the merchant's price level; sprees buy dearer, card testers spend a dollar or two."""
    z = rng.normal("amount", row)
    ordinary = F.exp(F.col("_log_median") + F.col("_sigma") * z)
    spree = F.exp(F.col("_log_median") + F.lit(0.9) + F.col("_sigma") * z)
    testing = F.least(F.greatest(F.exp(F.lit(math.log(1.5)) + F.lit(0.6) * z), F.lit(0.5)), F.lit(20.0))
    return F.when(kind == "card_testing", testing).when(kind == "spree", spree).otherwise(ordinary)


def decline_logit(kind: Column, usd: Column, cross: Column, ecommerce: Column) -> Column:
    """The issuer's model for ordinary charges; stolen cards trip it more; card tests mostly bounce."""
    ordinary = (
        F.col("_iss_base")
        + F.col("_iss_cross") * cross.cast("double")
        + F.col("_iss_amount") * F.log(usd / F.lit(50.0))
        + F.col("_iss_ecom") * ecommerce.cast("double")
    )
    return (
        F.when(kind == "card_testing", F.lit(1.7) + F.lit(0.4) * (F.col("_iss_base") + F.lit(2.6)))
        .when(kind == "spree", ordinary + F.lit(1.2))
        .otherwise(ordinary)
    )


def _decline_code(rng: Rng, kind: Column, cross: Column, row: Column) -> Column:
    def pick(stream, table):
        return lookup(
            [code for code, _ in table], inverse_cdf(rng.uniform(stream, row), [w for _, w in table])
        )

    return (
        F.when(kind == "card_testing", pick("code.testing", cat.DECLINE_CARD_TESTING))
        .when(kind == "spree", pick("code.stolen", cat.DECLINE_STOLEN))
        .when(cross & (rng.uniform("code.cross", row) < F.lit(0.35)), F.lit(cat.DECLINE_CROSS_BORDER))
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

    row, kind = F.col("id"), F.col("_kind")
    card = card_columns(rng, F.col("_c"), F.col("_k"), F.col("_home"))
    df = draws.join(F.broadcast(merchants(spark, plan)), on="_mi", how="inner")
    df = issuer_columns(_with(df, **card), issuers(spark))

    ecommerce = (
        F.when(kind == "card_testing", F.lit(True))
        .when(kind == "spree", rng.uniform("channel", row) < F.greatest(F.col("_ecom_share"), F.lit(0.7)))
        .otherwise(rng.uniform("channel", row) < F.col("_ecom_share"))
    )
    df = _with(
        df,
        _usd=amount_usd(rng, kind, row),
        _ecom=ecommerce,
        _cross=F.col("card_country") != F.col("merchant_country"),
    )
    p_decline = F.lit(1.0) / (
        F.lit(1.0) + F.exp(-decline_logit(kind, F.col("_usd"), F.col("_cross"), F.col("_ecom")))
    )
    df = _with(df, _p_decline=p_decline)
    df = _with(df, _declined=rng.uniform("decline", row) < F.col("_p_decline"))
    declined, cross = F.col("_declined"), F.col("_cross")
    minor = F.greatest(F.round(F.col("_usd") * F.col("_per_usd") * F.col("_minor")), F.lit(1.0))

    derived = {
        "charge_id": F.concat(F.lit("ch_"), scramble_id(row, plan.seed, "charge")),
        "created": F.timestamp_micros(F.lit(plan.start_micros) + F.col("_t")),
        "amount": minor.cast("decimal(18,0)"),
        "channel": F.when(F.col("_ecom"), F.lit("ecommerce")).otherwise(F.lit("card_present")),
        "outcome": F.when(declined, F.lit("declined")).otherwise(F.lit("authorized")),
        "decline_code": F.when(declined, _decline_code(rng, kind, cross, row)),
    }
    return df.select(
        *[derived[name].alias(name) if name in derived else F.col(name) for name in CHARGE_COLUMNS],
        row.alias("_row"),
        kind,
        kind.isin("card_testing", "spree", "quiet").alias("_fraud"),
        # for the authorization attempts (`_auth`): the issuer's decline probability, the card's issuer, USD
        "_p_decline",
        "_issuer_idx",
        "_usd",
    )
