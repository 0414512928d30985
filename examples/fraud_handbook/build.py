"""Build the Fraud Detection Handbook training set with tally.

    .venv/bin/python examples/fraud_handbook/build.py --data ../shared/data/fraud-handbook --out /tmp/handbook

Reads the transactions where you point it, computes the views of features/handbook.py as of each transaction
(temporal accuracy: exact at the transaction's instant) with the handbook's terminal risk scores (derived features:
frauds / transactions), all named by the feature set `handbook`, writes parquet plus a manifest, and prints a
summary and a spot check against pandas.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder with the handbook's transactions_*.csv.gz")
    parser.add_argument("--out", required=True, help="output folder (parquet); the manifest goes beside it")
    args = parser.parse_args(argv)
    data = Path(args.data).resolve()
    if not any(data.glob("transactions_*.csv*")):
        print(f"error: no transactions_*.csv.gz under {data}", file=sys.stderr)
        return 1
    os.environ["HANDBOOK_DATA"] = str(data)

    import tally as tl
    from pyspark.sql import functions as F
    from tally import manifests, registry, sources, training

    repo = registry.load(HERE / "features")
    spark = tl.session(conf={"spark.driver.memory": "6g"})
    try:
        spine = sources.read(spark, repo.sources["transactions"]).select(
            "TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT", "TX_FRAUD")
        features = ["handbook"]
        df, built = training.build(spark, spine, features, "TX_DATETIME", views=repo.refs)
        df.write.mode("overwrite").parquet(args.out)
        out = spark.read.parquet(args.out)
        out_hash = {**training.content_hash(out), "unhashed": []}
        rows = out_hash["rows"]
        manifest = manifests.make(spine_path=str(data), spine_format="csv", spine_hash=training.content_hash(spine),
                                  built=built, features=features, out=args.out, out_format="parquet",
                                  out_hash=out_hash, warehouse="warehouse")
        written = manifests.write(manifest, args.out)
        print(f"{rows:,} transactions with {len(out.columns) - 6} features -> {args.out}; manifest {written}")
        by_label = out.groupBy("TX_FRAUD").agg(*[F.round(F.avg(c), 3).alias(c.split("__")[-1]) for c in (
            "customer_spending__nb_tx_1d", "customer_spending__avg_amount_7d", "terminal_risk_7d")]).orderBy("TX_FRAUD")
        print("feature means by label (fraud = 1):")
        for r in by_label.collect():
            print("  ", r.asDict())
        # spot check: one customer's 7-day count and mean against pandas' rolling window (right-closed, as in the
        # handbook); equal timestamps are one group in both
        cid = out.groupBy("CUSTOMER_ID").count().orderBy(F.desc("count")).first().CUSTOMER_ID
        mine = out.where(F.col("CUSTOMER_ID") == cid).toPandas().sort_values(["TX_DATETIME", "TRANSACTION_ID"])
        rolled = mine.set_index("TX_DATETIME")["TX_AMOUNT"].rolling("7d")
        counts = rolled.count().groupby(level=0).transform("max").to_numpy()
        means = (rolled.sum().groupby(level=0).transform("max") / counts).to_numpy()
        ok = (abs(counts - mine["customer_spending__nb_tx_7d"].to_numpy()).max() == 0
              and abs(means - mine["customer_spending__avg_amount_7d"].to_numpy()).max() < 1e-6)
        print(f"spot check against pandas rolling('7d') for customer {cid} ({len(mine)} rows): "
              f"{'identical' if ok else 'DIFFERENT'}")
        return 0 if ok else 1
    finally:
        spark.stop()


if __name__ == "__main__":
    sys.exit(main())
