"""The synthetic payments generator: exact schemas and counts, determinism, plausible and visible patterns."""

from __future__ import annotations

import pytest
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from tally import datagen
from tally.errors import UsageError

N, DAYS, SEED = 20_000, 30, 7

SCHEMAS = {
    "charges": [
        ("charge_id", "string"), ("created", "timestamp"), ("customer_id", "string"), ("card_id", "string"),
        ("bin", "string"), ("issuer", "string"), ("card_country", "string"), ("card_brand", "string"),
        ("merchant_id", "string"), ("mcc", "string"), ("merchant_country", "string"),
        ("amount", "decimal(18,0)"), ("currency", "string"), ("channel", "string"), ("outcome", "string"),
        ("decline_code", "string"),
    ],
    "disputes": [
        ("charge_id", "string"), ("charge_created", "timestamp"), ("dispute_created", "timestamp"),
        ("reason", "string"),
    ],
    "refunds": [
        ("charge_id", "string"), ("charge_created", "timestamp"), ("refund_created", "timestamp"),
        ("amount", "decimal(18,0)"),
    ],
    "authorizations": [
        ("attempt_id", "string"), ("charge_id", "string"), ("customer_id", "string"), ("card_id", "string"),
        ("merchant_id", "string"), ("issuer", "string"), ("bin", "string"), ("amount", "decimal(18,0)"),
        ("currency", "string"), ("card_country", "string"), ("merchant_country", "string"), ("mcc", "string"),
        ("attempted", "timestamp"), ("approved", "boolean"), ("code", "string"), ("category", "string"),
        ("advice_code", "string"), ("attempt", "int"), ("retry_of", "string"),
    ],
    "authorization_truth": [("attempt_id", "string"), ("approval_probability", "double")],
}  # fmt: skip


@pytest.fixture(scope="module")
def frames(spark):
    out = {name: df.cache() for name, df in datagen.generate(spark, N, DAYS, SEED).items()}
    yield out
    for df in out.values():
        df.unpersist()


@pytest.fixture(scope="module")
def rates(frames):
    return datagen.describe(frames)


def content_hash(df: DataFrame) -> tuple[int, str]:
    """Order-independent fingerprint of a table's rows: (count, sum of row hashes)."""
    return tuple(df.agg(*_hash_aggregates(df)).first())


def _hash_aggregates(df: DataFrame):
    h = F.xxhash64(*[F.col(c) for c in df.columns]).cast("decimal(38,0)")
    return F.count(F.lit(1)), F.sum(h).cast("string")


def content_hashes(frames: dict[str, DataFrame]) -> dict[str, tuple]:
    """content_hash of every table in one Spark job (tests share two cores)."""
    parts = [
        df.select(F.lit(name).alias("t"), F.xxhash64(*df.columns).alias("h")) for name, df in frames.items()
    ]
    union = parts[0]
    for part in parts[1:]:
        union = union.unionByName(part)
    rows = union.groupBy("t").agg(F.count(F.lit(1)), F.sum(F.col("h").cast("decimal(38,0)")).cast("string"))
    return {r[0]: (r[1], r[2]) for r in rows.collect()}


def test_schemas_are_exactly_the_documented_ones(frames):
    for name, expected in SCHEMAS.items():
        assert [(f.name, f.dataType.simpleString()) for f in frames[name].schema.fields] == expected, name


def test_charges_has_exactly_the_requested_rows_with_unique_ids(frames):
    got = frames["charges"].agg(F.count(F.lit(1)), F.countDistinct("charge_id")).first()
    assert tuple(got) == (N, N)


# The same rows under any partitioning, for every table: test_datagen_auth (which also pins the charges, disputes
# and refunds rows as they were before the attempts existed).

def test_another_seed_gives_other_rows(spark):
    one, other = (content_hash(datagen.generate(spark, 3_000, 10, seed, partitions=3)["charges"]) for seed in (SEED, SEED + 1))
    assert one[0] == other[0] == 3_000 and one[1] != other[1]


def test_values_are_well_formed(frames):
    c = frames["charges"]
    bad = c.where(
        ~F.col("bin").rlike("^[0-9]{6}$")
        | ~F.col("mcc").rlike("^[0-9]{4}$")
        | ~F.col("card_country").rlike("^[A-Z]{2}$")
        | ~F.col("merchant_country").rlike("^[A-Z]{2}$")
        | ~F.col("currency").rlike("^[A-Z]{3}$")
        | ~F.col("channel").isin("card_present", "ecommerce")
        | ~F.col("outcome").isin("authorized", "declined")
        | ((F.col("outcome") == "declined") != F.col("decline_code").isNotNull())
        | (F.col("amount") < 1)
        | (F.col("created") < F.lit("2026-01-01").cast("timestamp"))
        | (F.col("created") >= F.lit("2026-01-31").cast("timestamp"))
    )
    assert bad.count() == 0, bad.limit(5).collect()
    nulls = c.where(
        F.greatest(*[F.col(x).isNull().cast("int") for x in c.columns if x != "decline_code"]) == 1
    )
    assert nulls.count() == 0


def test_rates_are_plausible(rates):
    assert 0.002 <= rates["fraud_rate"] <= 0.05
    assert 0.03 <= rates["decline_rate"] <= 0.25
    assert rates["decline_rate_by_channel"]["ecommerce"] > rates["decline_rate_by_channel"]["card_present"]
    by_issuer = list(rates["decline_rate_by_top_issuers"].values())
    assert max(by_issuer) > 1.5 * min(by_issuer), "issuers should decline at visibly different rates"
    assert rates["top_merchant_share"] > 20 * rates["median_merchant_share"]
    assert rates["customers_with_2plus_cards"] > 0.2
    assert 0.001 <= rates["other_dispute_rate_of_authorized"] <= 0.01
    assert rates["refund_rate_of_authorized"] > 0.01


def test_declines_depend_on_country_and_amount(frames):
    c = frames["charges"].withColumn("declined", (F.col("outcome") == "declined").cast("double"))
    cross = {
        r["x"]: r["r"]
        for r in c.groupBy((F.col("card_country") != F.col("merchant_country")).alias("x"))
        .agg(F.avg("declined").alias("r"))
        .collect()
    }
    assert cross[True] > 1.5 * cross[False]
    us = c.where("currency = 'USD' and card_country = 'US'")
    small = us.where("amount < 2000").agg(F.avg("declined")).first()[0]
    large = us.where("amount > 30000").agg(F.avg("declined")).first()[0]
    assert large > small


def test_created_follows_a_weekly_cycle(frames):
    # 2026-01-01 is a Thursday: 30 days hold 4 or 5 of each weekday, so compare volume per day.
    per_day = frames["charges"].groupBy(F.to_date("created").alias("d")).count()
    by_weekday = dict(
        per_day.groupBy(F.dayofweek("d")).agg(F.avg("count")).collect()
    )  # 1 = Sunday, 7 = Saturday
    assert by_weekday[7] > 1.2 * by_weekday[1]


def test_created_follows_a_daily_cycle(frames):
    # US is 40 % of volume: US local night (UTC 07-10) is far quieter than US evening (UTC 22-01).
    by_hour = dict(
        frames["charges"].where("merchant_country = 'US'").groupBy(F.hour("created")).count().collect()
    )
    night = sum(by_hour.get(h, 0) for h in (7, 8, 9, 10))
    evening = sum(by_hour.get(h, 0) for h in (22, 23, 0, 1))
    assert evening > 5 * night


def test_disputes_reference_charges_and_come_later(frames):
    d, c = frames["disputes"], frames["charges"]
    joined = d.join(c.select("charge_id", "created", "outcome"), "charge_id", "left")
    assert d.count() == joined.count() > 0
    assert joined.where(F.col("created").isNull()).count() == 0
    assert joined.where(F.col("created") != F.col("charge_created")).count() == 0
    assert joined.where(F.col("outcome") != "authorized").count() == 0
    assert d.select("charge_id").distinct().count() == d.count()
    lag_days = (
        d.select(
            ((F.unix_micros("dispute_created") - F.unix_micros("charge_created")) / 86_400e6).alias("days")
        )
        .agg(F.min("days"), F.max("days"))
        .first()
    )
    assert lag_days[0] >= 1 and lag_days[1] <= 120
    assert {r.reason for r in d.select("reason").distinct().collect()} == {"fraudulent", "other"}


def test_refunds_reference_authorized_charges_and_never_exceed_them(frames):
    r, c = frames["refunds"], frames["charges"]
    joined = r.join(
        c.select("charge_id", "created", "outcome", F.col("amount").alias("charged")), "charge_id"
    )
    assert joined.count() == r.count() > 0
    assert (
        joined.where(
            (F.col("outcome") != "authorized")
            | (F.col("amount") > F.col("charged"))
            | (F.col("refund_created") <= F.col("charge_created"))
        ).count()
        == 0
    )


def test_card_testing_bursts_are_visible(frames, rates):
    # Some card has >= 5 charges within 10 minutes, mostly declined, at several merchants.
    bursts = datagen._describe.card_testing_bursts(frames["charges"])
    assert bursts.count() >= 3 and rates["card_testing_bursts"] == bursts.count()
    card = bursts.first()["card_id"]
    start = bursts.first()["created"]
    window = frames["charges"].where(
        (F.col("card_id") == card)
        & (F.col("created") >= F.lit(start))
        & (F.col("created") <= F.lit(start) + F.expr("INTERVAL 10 MINUTES"))
    )
    stats = window.agg(
        F.count(F.lit(1)),
        F.avg((F.col("outcome") == "declined").cast("double")),
        F.countDistinct("merchant_id"),
    ).first()
    assert stats[0] >= 5 and stats[1] >= 0.6 and stats[2] >= 3


def test_compromised_merchants_have_cards_later_disputed_as_fraud(spark, frames):
    """Common point of compromise: of the cards that visited a compromised merchant before their first fraud,
    a far larger share later has fraud than of the cards visiting other merchants."""
    merchants = datagen.dimensions(spark, N, DAYS, SEED)["merchants"].select("merchant_id", "compromised")
    charges = frames["charges"]
    first_fraud = (
        frames["disputes"]
        .where("reason = 'fraudulent'")
        .join(charges.select("charge_id", "card_id"), "charge_id")
        .groupBy("card_id")
        .agg(F.min("charge_created").alias("first_fraud"))
    )
    visits = (
        charges.join(first_fraud, "card_id", "left")
        .where(F.col("first_fraud").isNull() | (F.col("created") < F.col("first_fraud")))
        .select("merchant_id", "card_id", F.col("first_fraud").isNotNull().cast("double").alias("fraud"))
        .distinct()
        .join(merchants, "merchant_id")
    )
    share = dict(visits.groupBy("compromised").agg(F.avg("fraud")).collect())
    assert share[True] > 5 * share[False]


def test_cards_dimension_agrees_with_charges(spark, frames):
    dims = datagen.dimensions(spark, N, DAYS, SEED)
    used = frames["charges"].select("card_id", "customer_id", "bin", "issuer", "card_country", "card_brand")
    assert used.distinct().join(dims["cards"], list(used.columns), "left_anti").count() == 0
    assert dims["customers"].where("cards >= 2").count() > 0


def test_write_round_trips_to_parquet_and_delta(spark, tmp_path):
    expected = content_hashes(datagen.generate(spark, 1_000, 7, SEED))
    for fmt in ("parquet", "delta"):
        out = tmp_path / fmt
        counts = datagen.write(spark, str(out), 1_000, 7, SEED, format=fmt)
        back = {name: spark.read.format(fmt).load(str(out / name)) for name in datagen.TABLES}
        assert content_hashes(back) == expected, fmt
        assert counts == {name: n for name, (n, _) in expected.items()}
        for name, df in back.items():
            assert [(f.name, f.dataType.simpleString()) for f in df.schema.fields] == SCHEMAS[name], (
                fmt,
                name,
            )


def test_bad_arguments_are_usage_errors(spark, tmp_path):
    with pytest.raises(UsageError, match="charges must be a positive integer, got 0"):
        datagen.generate(spark, 0, 30, SEED)
    with pytest.raises(UsageError, match="start must be an ISO date like 2026-01-01, got 'January'"):
        datagen.generate(spark, 100, 30, SEED, start="January")
    with pytest.raises(UsageError, match="unknown format 'csv'"):
        datagen.write(spark, str(tmp_path), 100, 30, SEED, format="csv")
    assert not any(tmp_path.iterdir()), "nothing is written for bad arguments"


def test_expressions_as_columns_give_the_rows_of_expressions_as_sql_text(spark, monkeypatch):
    """`_sql` renders shallow expressions as SQL text and combines deeper ones as Columns: every operation and
    function the generator uses gives the same values both ways (all text, all Columns)."""
    from tally.datagen import _sql as S
    from tally.datagen._auth import local_hour, usd
    from tally.datagen._rng import Rng, scramble_id, zipf_rank

    def expressions():
        rng, row = Rng(SEED), S.col("id")
        u = rng.uniform("u", row)
        return {
            "normal": rng.normal("n", row),
            "choice": rng.choice("c", [0.5, 0.2, 0.2, 0.1], row),
            "index": rng.index("i", row % 7 + 1, row),
            "zipf": zipf_rank(u, S.lit(90), 1.15),
            "ident": S.lpad(S.concat(S.lit("x'\\"), scramble_id(row, SEED, "t")), 16, "0"),
            "case": S.when(u < 0.3, "low").when(u.isNull() | (u >= 2.0), S.lit(None).cast("string")).otherwise("hi"),
            "logic": ~(row.isin(1, 2, 3) & row.isNotNull()) | (row != 4) & (-row <= -2),
            "math": S.round(S.exp(S.log(u + 1.0)) * S.sqrt(u) - S.cos(u) / 2.0 + S.pmod(row, 3) % 2),
            "bits": S.shiftright(row.bitwiseAND(1023).bitwiseXOR(77), 2) + S.shiftrightunsigned(row, 1),
            "bounds": S.least(S.greatest(S.floor(u * 10.0), S.lit(2)), S.coalesce(S.lit(None).cast("long"), row)),
            "array": S.element_at(S.array(S.lit(1), row, S.lit(3)), S.size(S.array(row, row)).cast("int")),
            "filter": S.size(S.filter(S.array(row, row + 5, row - 5), lambda x: x > row)),
            "struct": S.struct(a=row, b=u).cast("struct<a:bigint,b:double>"),
            "time": S.unix_micros(S.timestamp_micros(row * 3_000_000_000_000 + 1)),
            "hour": local_hour(row * 3_600_000_000, S.lit("JP")),
            "literals": (S.lit(0.1) + S.lit(0.2)) * (row + 1) + S.lit(3_000_000_000) - S.lit(-2),
            "usd": usd(row * 100, S.lit("USD")) + usd(row, S.when(u < 0.5, "EUR").otherwise("JPY")),
        }

    def rows():
        exprs = expressions()
        return spark.range(0, 500, 1, 2).select("id", *[e.alias(name) for name, e in exprs.items()]).orderBy("id").collect()

    monkeypatch.setattr(S, "MAX_DEPTH", 1000)
    as_text = rows()
    monkeypatch.setattr(S, "MAX_DEPTH", 0)
    assert rows() == as_text
