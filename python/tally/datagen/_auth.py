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

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from tally.datagen import _catalog as cat
from tally.datagen import _sql as S
from tally.datagen._plan import MICROS_PER_DAY, Plan
from tally.datagen._rng import Rng, scramble_id, seeded_constants
from tally.datagen._sql import Expr

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


def in_outage(plan: Plan, issuer_idx: Expr, t: Expr) -> Expr:
    cond = S.lit(False)
    for issuer, lo, hi in outages(plan):
        cond = cond | ((issuer_idx == S.lit(issuer)) & (t >= S.lit(lo)) & (t < S.lit(hi)))
    return cond


def local_hour(t: Expr, country: Expr) -> Expr:
    """Hour of day in `country` at t (micros since the epoch or since `start`: both are midnight UTC based)."""
    offsets = S.create_map(*[x for c in cat.COUNTRIES for x in (S.lit(c.code), S.lit(int(c.utc_offset_h * HOUR)))])
    return S.floor(S.pmod(t + offsets[country], S.lit(MICROS_PER_DAY)) / S.lit(HOUR)).cast("int")


def _night(plan: Plan, t: Expr) -> Expr:
    return local_hour(t, S.col("card_country")).isin(*cat.AUTH_NIGHT_HOURS)


def _extra_declines(rng: Rng, plan: Plan, t: Expr, recent: Expr) -> dict[str, Expr]:
    """The issuer's extra decline chances at time t, by cause (in the order a decline code is chosen)."""
    return {
        "outage": S.when(in_outage(plan, S.col("_issuer_idx"), t), S.lit(cat.AUTH_OUTAGE_DECLINE)).otherwise(0.0),
        "recent": S.lit(1.0) - S.pow(S.lit(cat.AUTH_RECENT_FACTOR), recent.cast("double")),
        "bin": S.lit(cat.AUTH_BIN_DECLINE_MAX) * rng.uniform("auth.bin_strict", S.col("bin")),
        "night": S.when(_night(plan, t), S.lit(cat.AUTH_NIGHT_DECLINE)).otherwise(0.0),
    }


def approval_probability(plan: Plan, t: Expr, recent: Expr, recovered: Expr) -> Expr:
    """P(approved) of an attempt at t (micros after start) on a context row: the ground truth."""
    rng = Rng(plan.seed)
    p = S.lit(1.0) - S.col("_p_decline")
    for e in _extra_declines(rng, plan, t, recent).values():
        p = p * (S.lit(1.0) - e)
    return p * S.when(recovered, S.lit(1.0)).otherwise(S.lit(cat.AUTH_LEAK))


def recent_declines(prior_times: Expr, t: Expr) -> Expr:
    """The card's declines before the first attempt plus the payment's own declines in the 24 h before t."""
    return S.col("_card_recent") + S.size(S.filter(prior_times, lambda x: x > t - S.lit(MICROS_PER_DAY)))


def retry_probability(plan: Plan, t: Expr, prior_times: Expr) -> Expr:
    """P(approved) of a retry at t of a payment whose attempts at `prior_times` were all declined: the truth."""
    recovered = S.col("_recover_at").isNotNull() & (t >= S.col("_recover_at"))
    return approval_probability(plan, t, recent_declines(prior_times, t), recovered)


def retry_uniform(seed: int, row: Expr, n: Expr | int) -> Expr:
    """The random number deciding retry n (1-based) of charge `row`, whatever its timing: common randomness."""
    return Rng(seed).uniform("auth.retry", row, n)


def retry_code(plan: Plan, t: Expr) -> Expr:
    """A declined retry's code: try_again_later during an outage of the issuer, else the first decline's."""
    return S.when(in_outage(plan, S.col("_issuer_idx"), t), S.lit("try_again_later")).otherwise(S.col("code"))


def advice_for(code: Expr) -> Expr:
    return (
        S.when(code == "try_again_later", S.lit(cat.ADVICE_TRY_LATER))
        .when(code == "expired_card", S.lit(cat.ADVICE_NEW_ACCOUNT_INFO))
        .when(code.isin(*cat.HARD_CODES), S.lit(cat.ADVICE_DO_NOT_RETRY))
    )


def category(code: Expr) -> Expr:
    return S.when(code.isin(*cat.HARD_CODES), S.lit("hard")).when(code.isNotNull(), S.lit("soft"))


def usd(amount: Expr, currency: Expr) -> Expr:
    """An amount in minor units of `currency` as US dollars (the catalog's rates)."""
    rates = {c.currency: c.per_usd * 10**c.exponent for c in cat.COUNTRIES}  # EUR is two countries'
    minor = S.create_map(*[x for cur, r in rates.items() for x in (S.lit(cur), S.lit(r))])
    return amount.cast("double") / minor[currency]


# -- the attempts ------------------------------------------------------------------------------------------


def first_attempts(truth: DataFrame, plan: Plan) -> DataFrame:
    """Step 1 and 2: one row per charge with CONTEXT_COLUMNS, `approved` and `_p` (its approval probability)."""
    rng = Rng(plan.seed)
    row = S.col("_row")
    t0 = S.unix_micros("created") - S.lit(plan.start_micros)
    day = Window.partitionBy("card_id").orderBy("_t0").rangeBetween(-MICROS_PER_DAY, -1)
    df = truth.select("*", t0.alias("_t0"))
    df = S.with_columns(df, _card_recent=F.coalesce(F.sum((F.col("outcome") == "declined").cast("int")).over(day), F.lit(0)))
    extra = _extra_declines(rng, plan, S.col("_t0"), S.col("_card_recent"))
    fired = {k: rng.uniform(f"auth.extra.{k}", row) < e for k, e in extra.items()}
    extra_code = (
        S.when(fired["outage"], S.lit("try_again_later"))
        .when(fired["recent"], S.lit("card_velocity_exceeded"))
        .when(fired["bin"] | fired["night"], S.lit("do_not_honor"))
    )
    code = S.when(S.col("outcome") == "declined", S.col("decline_code")).otherwise(extra_code)
    df = S.with_columns(df, code=code, _p=approval_probability(plan, S.col("_t0"), S.col("_card_recent"), S.lit(True)))
    df = df.withColumn("approved", S.col("code").isNull().column)

    # the latent recovery of a soft decline, and the advice the issuer gives
    rec = {r.code: r for r in cat.RECOVERY}
    never = S.lit(1.0)
    median, sigma = S.lit(1.0), S.lit(1.0)
    for c, r in rec.items():
        hit = S.col("code") == c
        never = S.when(hit, S.lit(r.never)).otherwise(never)
        median = S.when(hit, S.lit(math.log(r.median_h))).otherwise(median)
        sigma = S.when(hit, S.lit(r.sigma)).otherwise(sigma)
    hours = S.exp(median + sigma * rng.normal("auth.recovery", row))
    recoverable = (category(S.col("code")) == "soft") & (rng.uniform("auth.never", row) >= never)
    df = S.with_columns(df, _recover_h=S.when(recoverable, hours))
    hint_h = S.when(recoverable, S.col("_recover_h")).otherwise(
        S.exp(S.lit(math.log(cat.EXPERIMENT_GAP_H[1])) * rng.uniform("auth.noise_hint", row))
    )
    hint = S.lit(cat.ADVICE_RETRY_AFTER[0][0])
    for advice, after in cat.ADVICE_RETRY_AFTER[1:]:
        hint = S.when(hint_h >= S.lit(after), S.lit(advice)).otherwise(hint)
    hinted = rng.uniform("auth.hint", row) < S.when(recoverable, S.lit(cat.AUTH_ADVICE_SHARE)).otherwise(
        S.lit(cat.AUTH_ADVICE_NOISE)
    )
    soft_hint = S.when((S.col("code") != "try_again_later") & hinted, hint)
    df = S.with_columns(
        df,
        advice_code=S.when(category(S.col("code")) == "hard", advice_for(S.col("code"))).otherwise(
            S.coalesce(advice_for(S.col("code")), soft_hint)
        ),
        _recover_at=S.col("_t0") + S.floor(S.col("_recover_h") * S.lit(float(HOUR))).cast("long"),
    )
    return df.select(*CONTEXT_COLUMNS, "approved", "_p")


def _retry_times(rng: Rng, row: Expr) -> list[Expr]:
    """Step 3: the times of retries 1..MAX_RETRIES, micros after start (fixed schedule or experiment)."""
    experiment = rng.uniform("auth.arm", row) < S.lit(cat.EXPERIMENT_SHARE)
    lo, hi = (math.log(h) for h in cat.EXPERIMENT_GAP_H)
    times, t = [], S.col("_t0")
    for n, fixed_h in enumerate(cat.FIXED_RETRY_HOURS, start=1):
        gap_h = S.exp(S.lit(lo) + S.lit(hi - lo) * rng.uniform("auth.gap", row, n))
        jitter = S.floor(rng.uniform("auth.jitter", row, n) * S.lit(300e6)).cast("long")  # within 5 minutes
        fixed = S.col("_t0") + S.lit(int(fixed_h * HOUR)) + jitter
        t = S.when(experiment, t + S.floor(gap_h * S.lit(float(HOUR))).cast("long")).otherwise(fixed)
        times.append(t)
    return times


def _attempt_id(plan: Plan, n: Expr) -> Expr:
    return S.concat(S.lit("att_"), scramble_id(S.col("_row") * S.lit(MAX_RETRIES + 1) + n - S.lit(1), plan.seed, "attempt"))


def attempts_with_truth(truth: DataFrame, plan: Plan) -> DataFrame:
    """Every attempt (AUTH_COLUMNS) with `approval_probability`."""
    rng = Rng(plan.seed)
    first = first_attempts(truth, plan)
    firsts = first.select(
        *CONTEXT_COLUMNS, "approved", S.lit(1).alias("attempt"), S.col("_t0").alias("_t"), S.col("_p").alias("_pr")
    )
    chains = first.where((~S.col("approved") & (category(S.col("code")) == "soft")).column)
    chains = S.with_columns(chains, **{f"_t{n}": t for n, t in enumerate(_retry_times(rng, S.col("_row")), start=1)})
    retries, prior, outcomes = [], [S.col("_t0")], []
    for n in range(1, MAX_RETRIES + 1):
        t = S.col(f"_t{n}")
        p = retry_probability(plan, t, S.array(*prior))
        ok = retry_uniform(plan.seed, S.col("_row"), n) < p
        outcomes.append(ok)
        retries.append(S.struct(attempt=S.lit(n + 1), _t=t, _pr=p, approved=ok))
        prior.append(t)
    stop = S.lit(MAX_RETRIES)
    for n in range(MAX_RETRIES - 1, 0, -1):  # the first approved retry ends the chain
        stop = S.when(outcomes[n - 1], S.lit(n)).otherwise(stop)
    chains = S.with_columns(chains, _stop=stop, _r=S.explode(S.array(*retries)))
    retried = chains.where((S.col("_r.attempt") - S.lit(1) <= S.col("_stop")).column).select(
        *CONTEXT_COLUMNS, "_r.approved", "_r.attempt", "_r._t", "_r._pr"
    )
    both = firsts.unionByName(retried)
    t = S.col("_t")
    declined_code = S.when(S.col("attempt") == 1, S.col("code")).otherwise(retry_code(plan, t))
    code = S.when(~S.col("approved"), declined_code)
    return both.select(
        _attempt_id(plan, S.col("attempt")).alias("attempt_id"),
        "charge_id", "customer_id", "card_id", "merchant_id", "issuer", "bin", "amount", "currency",
        "card_country", "merchant_country", "mcc",
        S.timestamp_micros(S.lit(plan.start_micros) + t).alias("attempted"),
        "approved",
        code.alias("code"),
        category(code).alias("category"),
        S.when(~S.col("approved"), S.when(code == "try_again_later", S.lit(cat.ADVICE_TRY_LATER))
               .otherwise(S.col("advice_code"))).alias("advice_code"),
        S.col("attempt").cast("int").alias("attempt"),
        S.when(S.col("attempt") > 1, _attempt_id(plan, S.col("attempt") - S.lit(1))).alias("retry_of"),
        S.col("_pr").alias("approval_probability"),
    )  # fmt: skip
