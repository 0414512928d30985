"""The demo that `make demo` runs on the embedded default session."""

from __future__ import annotations

from pathlib import Path


def run(warehouse: str = "warehouse", echo=print) -> None:
    from pyspark.sql import functions as F

    import tally as tl

    spark = tl.session(warehouse=warehouse)
    try:
        charges = spark.createDataFrame(
            [("card_1", 12.50), ("card_1", 80.00), ("card_2", 3.20), ("card_2", None), ("card_3", 999.99)],
            "card_id string, amount double",
        )
        totals = charges.groupBy("card_id").agg(F.expr("tally_sum(amount)").alias("sum_amount")).orderBy("card_id")
        path = str(Path(warehouse, "demo", "card_totals").resolve())
        totals.write.format("delta").mode("overwrite").save(path)
        echo(f"tally_sum per card, written to Delta at {path}:")
        for row in spark.read.format("delta").load(path).orderBy("card_id").collect():
            echo(f"  {row.card_id}: {row.sum_amount:.2f}")
        last = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").orderBy("version", ascending=False).first()
        echo(f"Delta version {last.version} ({last.operation}) at {last.timestamp}")
    finally:
        spark.stop()
