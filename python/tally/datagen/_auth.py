"""Authorization attempts: every charge's first attempt, and the merchants' retries of soft declines.

Algorithm (column expressions over the charges' rows, deterministic by seed; see `_rng`):

1. First attempt of each charge, at `created`. It is declined when the charge was (`charges.outcome`, the
   issuer's own model) or when one of the issuer's extra policies fires, each with its own random stream:
   an outage of the card's issuer (`outages`), night in the card's country, a strict BIN, or recent declines
   of the card (its declined charges in the 24 h before). Its approval probability is therefore
   (1 - p_decline) * prod(1 - extra): `approval_probability`. A declined charge keeps its code; an extra
   decline gets try_again_later (outage), card_velocity_exceeded (recent declines) or do_not_honor.
2. Each decline gets a category (hard / soft, `_catalog.HARD_CODES`), and a soft one a latent recovery time
   (`_catalog.RECOVERY`): from then on the issuer would approve at the base rate, before it only at AUTH_LEAK.
   An advice code hints at it (retry after 1 h / 24 h / 2 d / 4 d) for most recoverable declines.
3. Merchants retry soft declines: a fixed schedule (+1 h, +24 h, +72 h), or, for EXPERIMENT_SHARE of them, up
   to three retries at log-uniform random gaps, stopping at the first approval. Retry n of a charge is approved
   when `retry_uniform(row, n)` < `approval_probability` at its time, counting the payment's earlier declines
   of the past 24 h as recent declines (`recent_declines`). Hard declines are never retried.

`retry_probability` and `retry_uniform` are also what `tally.retry` replays, so a policy evaluated offline meets
exactly the generator's issuers, on the same random numbers.
"""

from __future__ import annotations

import math

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from tally.datagen import _catalog as cat
from tally.datagen._plan import MICROS_PER_DAY, Plan
from tally.datagen._rng import Rng, scramble_id, seeded_constants

HOUR = 3_600_000_000
AUTH_COLUMNS = tuple(
    "attempt_id charge_id customer_id card_id merchant_id issuer bin amount currency card_country "
    "merchant_country mcc attempted approved code category advice_code attempt retry_of".split()
)
TRUTH_COLUMNS = ("attempt_id", "approval_probability")
MAX_RETRIES = len(cat.FIXED_RETRY_HOURS)
# Context a retry needs (what `tally.retry` replays): the charge's row and public keys plus hidden columns.
CONTEXT_COLUMNS = (
    "_row", "charge_id", "card_id", "customer_id", "merchant_id", "issuer", "bin", "amount", "currency",
    "card_country", "merchant_country", "mcc", "_t0", "_usd", "_p_decline", "_issuer_idx", "_card_recent",
    "code", "advice_code", "_recover_at",
)  # fmt: skip


# -- the issuers' policies ---------------------------------------------------------------------------------


def outages(plan: Plan) -> tuple[tuple[int, int, int], ...]:
    """(issuer index, start, end) in micros after `start`: OUTAGES_PER_DAY per day, issuers weighted by volume."""
    n = max(2, round(plan.days * cat.OUTAGES_PER_DAY))
    u = seeded_constants(plan.seed, "outages", 4 * n)
    weights = [next(c.weight for c in cat.COUNTRIES if c.code == i.country) for i in cat.ISSUERS]
    per_country = {c: sum(1 for i in cat.ISSUERS if i.country == c) for c in {i.country for i in cat.ISSUERS}}
    weights = [w / per_country[i.country] for w, i in zip(weights, cat.ISSUERS)]
    cum = [sum(weights[: k + 1]) / sum(weights) for k in range(len(weights))]
    out = []
    for j in range(n):
        issuer = next(k for k, c in enumerate(cum) if u[4 * j] < c)
        start = int(u[4 * j + 1] * plan.span_micros)
        z = math.sqrt(-2 * math.log(1 - u[4 * j + 2])) * math.cos(2 * math.pi * u[4 * j + 3])  # Box-Muller
        hours = min(6.0, max(0.25, cat.OUTAGE_MEDIAN_H * math.exp(0.6 * z)))
        out.append((issuer, start, start + int(hours * HOUR)))
    return tuple(out)


def in_outage(plan: Plan, issuer_idx: Column, t: Column) -> Column:
    cond = F.lit(False)
    for issuer, lo, hi in outages(plan):
        cond = cond | ((issuer_idx == F.lit(issuer)) & (t >= F.lit(lo)) & (t < F.lit(hi)))
    return cond


def local_hour(t: Column, country: Column) -> Column:
    """Hour of day in `country` at t (micros since the epoch or since `start`: both are midnight UTC based)."""
    offsets = F.create_map(*[x for c in cat.COUNTRIES for x in (F.lit(c.code), F.lit(int(c.utc_offset_h * HOUR)))])
    return F.floor(F.pmod(t + offsets[country], F.lit(MICROS_PER_DAY)) / F.lit(HOUR)).cast("int")


def _night(plan: Plan, t: Column) -> Column:
    return local_hour(t, F.col("card_country")).isin(*cat.AUTH_NIGHT_HOURS)


def _extra_declines(rng: Rng, plan: Plan, t: Column, recent: Column) -> dict[str, Column]:
    """The issuer's extra decline chances at time t, by cause (in the order a decline code is chosen)."""
    return {
        "outage": F.when(in_outage(plan, F.col("_issuer_idx"), t), F.lit(cat.AUTH_OUTAGE_DECLINE)).otherwise(0.0),
        "recent": F.lit(1.0) - F.pow(F.lit(cat.AUTH_RECENT_FACTOR), recent.cast("double")),
        "bin": F.lit(cat.AUTH_BIN_DECLINE_MAX) * rng.uniform("auth.bin_strict", F.col("bin")),
        "night": F.when(_night(plan, t), F.lit(cat.AUTH_NIGHT_DECLINE)).otherwise(0.0),
    }


def approval_probability(plan: Plan, t: Column, recent: Column, recovered: Column) -> Column:
    """P(approved) of an attempt at t (micros after start) on a context row: the ground truth."""
    rng = Rng(plan.seed)
    p = F.lit(1.0) - F.col("_p_decline")
    for e in _extra_declines(rng, plan, t, recent).values():
        p = p * (F.lit(1.0) - e)
    return p * F.when(recovered, F.lit(1.0)).otherwise(F.lit(cat.AUTH_LEAK))


def recent_declines(prior_times: Column, t: Column) -> Column:
    """The card's declines before the first attempt plus the payment's own declines in the 24 h before t."""
    return F.col("_card_recent") + F.size(F.filter(prior_times, lambda x: x > t - F.lit(MICROS_PER_DAY)))


def retry_probability(plan: Plan, t: Column, prior_times: Column) -> Column:
    """P(approved) of a retry at t of a payment whose attempts at `prior_times` were all declined: the truth."""
    recovered = F.col("_recover_at").isNotNull() & (t >= F.col("_recover_at"))
    return approval_probability(plan, t, recent_declines(prior_times, t), recovered)


def retry_uniform(seed: int, row: Column, n: Column | int) -> Column:
    """The random number deciding retry n (1-based) of charge `row`, whatever its timing: common randomness."""
    return Rng(seed).uniform("auth.retry", row, n)


def retry_code(plan: Plan, t: Column) -> Column:
    """A declined retry's code: try_again_later during an outage of the issuer, else the first decline's."""
    return F.when(in_outage(plan, F.col("_issuer_idx"), t), F.lit("try_again_later")).otherwise(F.col("code"))


def advice_for(code: Column) -> Column:
    return (
        F.when(code == "try_again_later", F.lit(cat.ADVICE_TRY_LATER))
        .when(code == "expired_card", F.lit(cat.ADVICE_NEW_ACCOUNT_INFO))
        .when(code.isin(*cat.HARD_CODES), F.lit(cat.ADVICE_DO_NOT_RETRY))
    )


def category(code: Column) -> Column:
    return F.when(code.isin(*cat.HARD_CODES), F.lit("hard")).when(code.isNotNull(), F.lit("soft"))


def usd(amount: Column, currency: Column) -> Column:
    """An amount in minor units of `currency` as US dollars (the catalog's rates)."""
    rates = {c.currency: c.per_usd * 10**c.exponent for c in cat.COUNTRIES}  # EUR is two countries'
    minor = F.create_map(*[x for cur, r in rates.items() for x in (F.lit(cur), F.lit(r))])
    return amount.cast("double") / minor[currency]


# -- the attempts ------------------------------------------------------------------------------------------


def _with(df: DataFrame, **cols: Column) -> DataFrame:
    return df.select("*", *[v.alias(k) for k, v in cols.items()])


def first_attempts(truth: DataFrame, plan: Plan) -> DataFrame:
    """Step 1 and 2: one row per charge with CONTEXT_COLUMNS, `approved` and `_p` (its approval probability)."""
    rng = Rng(plan.seed)
    row = F.col("_row")
    t0 = F.unix_micros("created") - F.lit(plan.start_micros)
    day = Window.partitionBy("card_id").orderBy("_t0").rangeBetween(-MICROS_PER_DAY, -1)
    df = truth.select("*", t0.alias("_t0"))
    df = _with(df, _card_recent=F.coalesce(F.sum((F.col("outcome") == "declined").cast("int")).over(day), F.lit(0)))
    extra = _extra_declines(rng, plan, F.col("_t0"), F.col("_card_recent"))
    fired = {k: rng.uniform(f"auth.extra.{k}", row) < e for k, e in extra.items()}
    extra_code = (
        F.when(fired["outage"], F.lit("try_again_later"))
        .when(fired["recent"], F.lit("card_velocity_exceeded"))
        .when(fired["bin"] | fired["night"], F.lit("do_not_honor"))
    )
    code = F.when(F.col("outcome") == "declined", F.col("decline_code")).otherwise(extra_code)
    df = _with(df, code=code, _p=approval_probability(plan, F.col("_t0"), F.col("_card_recent"), F.lit(True)))
    df = df.withColumn("approved", F.col("code").isNull())

    # the latent recovery of a soft decline, and the advice the issuer gives
    rec = {r.code: r for r in cat.RECOVERY}
    never = F.lit(1.0)
    median, sigma = F.lit(1.0), F.lit(1.0)
    for c, r in rec.items():
        hit = F.col("code") == c
        never = F.when(hit, F.lit(r.never)).otherwise(never)
        median = F.when(hit, F.lit(math.log(r.median_h))).otherwise(median)
        sigma = F.when(hit, F.lit(r.sigma)).otherwise(sigma)
    hours = F.exp(median + sigma * rng.normal("auth.recovery", row))
    recoverable = (category(F.col("code")) == "soft") & (rng.uniform("auth.never", row) >= never)
    df = _with(df, _recover_h=F.when(recoverable, hours))
    hint_h = F.when(recoverable, F.col("_recover_h")).otherwise(
        F.exp(F.lit(math.log(cat.EXPERIMENT_GAP_H[1])) * rng.uniform("auth.noise_hint", row))
    )
    hint = F.lit(cat.ADVICE_RETRY_AFTER[0][0])
    for advice, after in cat.ADVICE_RETRY_AFTER[1:]:
        hint = F.when(hint_h >= F.lit(after), F.lit(advice)).otherwise(hint)
    hinted = rng.uniform("auth.hint", row) < F.when(recoverable, F.lit(cat.AUTH_ADVICE_SHARE)).otherwise(
        F.lit(cat.AUTH_ADVICE_NOISE)
    )
    soft_hint = F.when((F.col("code") != "try_again_later") & hinted, hint)
    df = _with(
        df,
        advice_code=F.when(category(F.col("code")) == "hard", advice_for(F.col("code"))).otherwise(
            F.coalesce(advice_for(F.col("code")), soft_hint)
        ),
        _recover_at=F.col("_t0") + F.floor(F.col("_recover_h") * F.lit(float(HOUR))).cast("long"),
    )
    return df.select(*CONTEXT_COLUMNS, "approved", "_p")


def _retry_times(rng: Rng, row: Column) -> list[Column]:
    """Step 3: the times of retries 1..MAX_RETRIES, micros after start (fixed schedule or experiment)."""
    experiment = rng.uniform("auth.arm", row) < F.lit(cat.EXPERIMENT_SHARE)
    lo, hi = (math.log(h) for h in cat.EXPERIMENT_GAP_H)
    times, t = [], F.col("_t0")
    for n, fixed_h in enumerate(cat.FIXED_RETRY_HOURS, start=1):
        gap_h = F.exp(F.lit(lo) + F.lit(hi - lo) * rng.uniform("auth.gap", row, n))
        jitter = F.floor(rng.uniform("auth.jitter", row, n) * F.lit(300e6)).cast("long")  # within 5 minutes
        fixed = F.col("_t0") + F.lit(int(fixed_h * HOUR)) + jitter
        t = F.when(experiment, t + F.floor(gap_h * F.lit(float(HOUR))).cast("long")).otherwise(fixed)
        times.append(t)
    return times


def _attempt_id(plan: Plan, n: Column) -> Column:
    return F.concat(F.lit("att_"), scramble_id(F.col("_row") * F.lit(MAX_RETRIES + 1) + n - F.lit(1), plan.seed, "attempt"))


def attempts_with_truth(truth: DataFrame, plan: Plan) -> DataFrame:
    """Every attempt (AUTH_COLUMNS) with `approval_probability`."""
    rng = Rng(plan.seed)
    first = first_attempts(truth, plan)
    firsts = first.select(
        *CONTEXT_COLUMNS, "approved", F.lit(1).alias("attempt"), F.col("_t0").alias("_t"), F.col("_p").alias("_pr")
    )
    chains = first.where(~F.col("approved") & (category(F.col("code")) == "soft"))
    chains = _with(chains, **{f"_t{n}": t for n, t in enumerate(_retry_times(rng, F.col("_row")), start=1)})
    retries, prior, outcomes = [], [F.col("_t0")], []
    for n in range(1, MAX_RETRIES + 1):
        t = F.col(f"_t{n}")
        p = retry_probability(plan, t, F.array(*prior))
        ok = retry_uniform(plan.seed, F.col("_row"), n) < p
        outcomes.append(ok)
        retries.append(F.struct(F.lit(n + 1).alias("attempt"), t.alias("_t"), p.alias("_pr"), ok.alias("approved")))
        prior.append(t)
    stop = F.lit(MAX_RETRIES)
    for n in range(MAX_RETRIES - 1, 0, -1):  # the first approved retry ends the chain
        stop = F.when(outcomes[n - 1], F.lit(n)).otherwise(stop)
    chains = _with(chains, _stop=stop, _r=F.explode(F.array(*retries)))
    retried = chains.where(F.col("_r.attempt") - F.lit(1) <= F.col("_stop")).select(
        *CONTEXT_COLUMNS, "_r.approved", "_r.attempt", "_r._t", "_r._pr"
    )
    both = firsts.unionByName(retried)
    t = F.col("_t")
    declined_code = F.when(F.col("attempt") == 1, F.col("code")).otherwise(retry_code(plan, t))
    code = F.when(~F.col("approved"), declined_code)
    return both.select(
        _attempt_id(plan, F.col("attempt")).alias("attempt_id"),
        "charge_id", "customer_id", "card_id", "merchant_id", "issuer", "bin", "amount", "currency",
        "card_country", "merchant_country", "mcc",
        F.timestamp_micros(F.lit(plan.start_micros) + t).alias("attempted"),
        "approved",
        code.alias("code"),
        category(code).alias("category"),
        F.when(~F.col("approved"), F.when(code == "try_again_later", F.lit(cat.ADVICE_TRY_LATER))
               .otherwise(F.col("advice_code"))).alias("advice_code"),
        F.col("attempt").cast("int").alias("attempt"),
        F.when(F.col("attempt") > 1, _attempt_id(plan, F.col("attempt") - F.lit(1))).alias("retry_of"),
        F.col("_pr").alias("approval_probability"),
    )  # fmt: skip
