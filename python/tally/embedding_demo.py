"""The embeddings lift demo (`python -m tally.embedding_demo`): do merchant embeddings add to aggregates?

1. Generate the charges twice: with the generator's latent structure (`structure=True`: merchant communities,
   and quiet fraud at merchants outside the customer's) and its control (`structure="control"`: the same fraud
   mix and rates, no communities).
2. Backfill an ALS embedding view of merchants by customer over the span (one retrain per cadence step).
3. Build a training set per charge: aggregates of the card and the merchant (temporal, the sweep engine), how
   often the card and its customer paid this merchant before (30d), the charge's own columns, and the
   affinity of the charge's merchant to the customer's last 20 merchants (`embeddings.affinity`); label: the
   charge is later disputed as fraudulent.
4. Train gradient-boosted trees (Spark MLlib, fixed seed) on the first 2/3 of the days, evaluate on the rest:
   AUC-PR with aggregates only, and with aggregates + affinity. The lift should come from the planted
   communities, so in the control it should vanish.
5. After every seed, print the lifts per seed with their mean and range (structure and control).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from pathlib import Path

import tally as tl

START = dt.date(2026, 1, 1)
HISTORY = 20  # the customer's last merchants the affinity compares with (20 reads better than 5: fewer, noisier)
AGGREGATES = ["card__count_1h", "card__count_24h", "card__sum_amount", "card__distinct_merchants",
              "card__count_7d", "merchant__count_7d", "merchant__decline_rate", "pair__count_30d",
              "customer_pair__count_30d", "log_amount", "cross_border", "ecommerce"]


def views():
    card, merchant = tl.Entity("card", keys=["card_id"]), tl.Entity("merchant", keys=["merchant_id"])
    charges = tl.Source("charges", path="charges", timestamp="created",
                        columns={"amount_d": "cast(amount as double)",
                                 "is_declined": "cast(outcome = 'declined' as double)"})
    card_view = tl.FeatureView(name="card", entity=card, source=charges, aggregations=[
        tl.Aggregation("count", windows=["1h", "24h", "7d"]),
        tl.Aggregation("sum", column="amount_d", windows=["24h"], name="sum_amount"),
        tl.Aggregation("approx_distinct", column="merchant_id", windows=["7d"], name="distinct_merchants")])
    # has the card (its customer) paid this merchant before? Without them the affinity would win in the control
    # too, by recognising the card's regular merchants (shared by the customer's cards), which counts tell
    pair = tl.FeatureView(name="pair", entity=tl.Entity("card_merchant", keys=["card_id", "merchant_id"]),
                          source=charges, aggregations=[tl.Aggregation("count", windows=["30d"])])
    customer_pair = tl.FeatureView(
        name="customer_pair", entity=tl.Entity("customer_merchant", keys=["customer_id", "merchant_id"]),
        source=charges, aggregations=[tl.Aggregation("count", windows=["30d"])])
    merchant_view = tl.FeatureView(name="merchant", entity=merchant, source=charges, aggregations=[
        tl.Aggregation("count", windows=["7d"]),
        tl.Aggregation("mean", column="is_declined", windows=["7d"], name="decline_rate")])
    # by customer, not card: a customer's cards share their communities, and a customer has more events in the
    # lookback than any one card (denser rows, steadier vectors); dim 64 leaves room for 10 countries x 8
    # communities, which dim 32 merges (docs/embeddings.md, "The lift demo")
    emb = tl.EmbeddingView(name="merchant_by_customer", entity=merchant, context=tl.Entity("customer", keys=["customer_id"]),
                           source=charges, method="als", dim=64, lookback="28d", cadence="7d", seed=7, min_count=3,
                           params={"max_iter": 10})
    return card_view, merchant_view, pair, customer_pair, emb


def run(spark, folder: Path, *, charges: int, days: int, structure: bool | str, seed: int = 7, echo=print) -> dict:
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import GBTClassifier
    from pyspark.ml.evaluation import BinaryClassificationEvaluator
    from pyspark.ml.feature import VectorAssembler
    from pyspark.sql import functions as F

    from tally import datagen, embeddings, sources, store

    t0 = time.time()
    data, warehouse = folder / "data", folder / "warehouse"
    marker = folder / "_generated.json"
    params = json.dumps({"charges": charges, "days": days, "structure": structure, "seed": seed})
    if not marker.exists() or marker.read_text() != params:
        datagen.write(spark, str(data), charges, days, seed, str(START), structure=structure)
        marker.write_text(params)
    card_view, merchant_view, pair, customer_pair, emb = views()
    end = START + dt.timedelta(days=days - 1)
    t1 = time.time()
    store.backfill(spark, emb, START, end, warehouse=warehouse, data=data, resume=True)
    backfill_s = time.time() - t1
    events = sources.read(spark, emb.source, data=data)
    fraud = spark.read.parquet(str(data / "disputes")).where("reason = 'fraudulent'").select(
        "charge_id", F.lit(1.0).alias("label")).distinct()
    spine = (events.join(fraud, "charge_id", "left").fillna(0.0, ["label"])
             .select("charge_id", "customer_id", "card_id", "merchant_id", "created", "label",
                     F.log1p("amount_d").alias("log_amount"),
                     (F.col("card_country") != F.col("merchant_country")).cast("double").alias("cross_border"),
                     (F.col("channel") == "ecommerce").cast("double").alias("ecommerce")))
    train = tl.training_set(spark, spine, [card_view, merchant_view, pair, customer_pair], "created", warehouse=warehouse, data=data)
    train = embeddings.affinity(spark, train, emb, "created", events=events, k=HISTORY, warehouse=warehouse,
                                name="affinity")
    # trees take no nulls: an empty window's null (a first charge) and a missing vector get out-of-range values
    train = (train.withColumn("has_affinity", F.col("affinity").isNotNull().cast("double"))
             .select(*[F.col(c).cast("double").alias(c) if c in AGGREGATES else F.col(c) for c in train.columns],
                     "has_affinity")
             .fillna(-1.0, subset=AGGREGATES).fillna({"affinity": -2.0}).cache())
    split = F.lit(str(START + dt.timedelta(days=2 * days // 3)))
    fit_on, test_on = train.where(F.col("created") < split.cast("timestamp")), train.where(
        F.col("created") >= split.cast("timestamp"))
    result = {"structure": structure, "seed": seed, "charges": charges, "days": days,
              "backfill_seconds": round(backfill_s, 1)}
    for label, cols in (("aggregates", AGGREGATES), ("aggregates+embeddings", [*AGGREGATES, "affinity", "has_affinity"])):
        model = Pipeline(stages=[VectorAssembler(inputCols=cols, outputCol="features", handleInvalid="keep"),
                                 GBTClassifier(maxIter=40, maxDepth=5, seed=7)]).fit(fit_on)
        auc = BinaryClassificationEvaluator(metricName="areaUnderPR").evaluate(model.transform(test_on))
        result[label] = round(auc, 4)
    result["relative_lift"] = round(result["aggregates+embeddings"] / result["aggregates"] - 1, 4)
    counts = test_on.agg(F.count(F.lit(1)), F.sum("label")).first()
    result["test_charges"], result["test_frauds"] = counts[0], int(counts[1])
    result["seconds"] = round(time.time() - t0, 1)
    train.unpersist()
    echo(json.dumps(result))
    return result


def summary(results: list[dict]) -> str:
    """The relative lifts per seed, structure and control, with their mean and range."""
    lines = []
    for label, structure in (("structure", True), ("control", "control")):
        lifts = [r["relative_lift"] for r in results if r["structure"] == structure]
        if lifts:
            mean = sum(lifts) / len(lifts)
            lines.append(f"{label:9} lifts {', '.join(f'{x:+.1%}' for x in lifts)}: mean {mean:+.1%}, "
                         f"range {min(lifts):+.1%} .. {max(lifts):+.1%}")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    charges = int(argv[0]) if argv else 300_000
    days = int(argv[1]) if len(argv) > 1 else 42
    folder = Path(argv[2]) if len(argv) > 2 else Path("embedding-demo")
    seeds = [int(x) for x in argv[3].split(",")] if len(argv) > 3 else [7, 8, 9]
    spark = tl.session()
    results = []
    try:
        for seed in seeds:
            for structure in (True, "control"):
                results.append(run(spark, folder / f"{'structure' if structure is True else 'control'}-{seed}",
                                   charges=charges, days=days, structure=structure, seed=seed))
            print(summary(results), flush=True)
    finally:
        spark.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
