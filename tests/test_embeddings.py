"""Entity embeddings: the generator's latent structure, EmbeddingView definitions, point-in-time backfills,
alignment across retrains, cold start, the training-set join and `tally similar` (docs/embeddings.md)."""

from __future__ import annotations

from pyspark.sql import Window as W
from pyspark.sql import functions as F
from tally import datagen
from test_datagen import content_hashes
from test_datagen_auth import PINNED


def _top2_share(charges, merchants) -> float:
    """Share of a customer's charges in their two busiest communities (customers with >= 5 charges)."""
    per = charges.join(merchants.select("merchant_id", "community"), "merchant_id").groupBy(
        "customer_id", "community").count()
    ranked = per.withColumn("r", F.row_number().over(W.partitionBy("customer_id").orderBy(F.desc("count"), "community")))
    agg = ranked.groupBy("customer_id").agg(F.sum("count").alias("n"), F.sum(F.when(F.col("r") <= 2, F.col("count")))
                                            .alias("top"))
    return agg.where("n >= 5").agg(F.sum("top") / F.sum("n")).first()[0]


def test_structure_off_gives_the_pinned_rows_and_on_concentrates_customers_in_communities(spark):
    off = datagen.generate(spark, 3_000, 14, 7, structure=False)
    assert content_hashes({name: off[name] for name in PINNED}) == PINNED  # the attempts are pinned elsewhere
    on = datagen.generate(spark, 3_000, 14, 7, structure=True)
    on_hashes = content_hashes({"charges": on["charges"]})
    assert on_hashes["charges"][0] == 3_000 and on_hashes["charges"] != PINNED["charges"]
    merchants = datagen.dimensions(spark, 3_000, 14, 7, structure=True)["merchants"]
    share_off, share_on = _top2_share(off["charges"], merchants), _top2_share(on["charges"], merchants)
    assert share_on > 0.85 and share_on - share_off > 0.15, (share_off, share_on)
