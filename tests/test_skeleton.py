"""The walking skeleton: a Scala kernel, through the Spark layer and py4j, into a Delta table and back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import Row
from pyspark.sql import functions as F


def test_tally_sum_matches_spark_sum_per_group(spark):
    df = spark.createDataFrame(
        [("a", 1.5), ("a", 2.5), ("b", None), ("b", 4.0), ("c", None)], "card_id string, amount double"
    )
    got = df.groupBy("card_id").agg(F.expr("tally_sum(amount)").alias("total")).orderBy("card_id")
    expected = spark.createDataFrame([("a", 4.0), ("b", 4.0), ("c", 0.0)], "card_id string, total double")
    assert_df_equality(got, expected, ignore_nullable=True)


def test_tally_sum_result_round_trips_through_delta_with_history(spark, tmp_path):
    path = str(tmp_path / "sums")
    df = spark.createDataFrame([("a", 1.0), ("a", 2.0), ("b", 5.0)], "card_id string, amount double")
    sums = df.groupBy("card_id").agg(F.expr("tally_sum(amount)").alias("total"))
    sums.write.format("delta").save(path)
    sums.write.format("delta").mode("overwrite").save(path)

    back = spark.read.format("delta").load(path).orderBy("card_id")
    assert_df_equality(back, sums.orderBy("card_id"), ignore_nullable=True)
    history = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").orderBy("version").collect()
    assert [h.version for h in history] == [0, 1]
    assert [h.operation for h in history] == ["WRITE", "WRITE"]
    v0 = spark.read.format("delta").option("versionAsOf", 0).load(path)
    assert sorted(v0.collect()) == [Row(card_id="a", total=3.0), Row(card_id="b", total=5.0)]


def test_missing_jar_error_names_the_file_and_the_command(monkeypatch, tmp_path):
    from tally import spark as tally_spark
    from tally.errors import SetupError

    monkeypatch.setenv("TALLY_JAR", str(tmp_path / "nope.jar"))
    try:
        tally_spark._embedded_conf(str(tmp_path))
    except SetupError as err:
        assert "nope.jar" in str(err) and "make jar" in str(err)
    else:
        raise AssertionError("expected a SetupError")


@pytest.mark.slow
def test_executor_in_separate_jvm_loads_the_jar_on_local_cluster(tmp_path):
    # A second SparkContext cannot live in this JVM, so the local-cluster session runs in a child process.
    script = textwrap.dedent(
        """
        import json, tally as tl
        from pyspark.sql import functions as F
        spark = tl.session("local-cluster[2,1,1024]", conf={"spark.executor.memory": "512m"})
        try:
            df = spark.range(0, 1000, numPartitions=4).select((F.col("id") % 3).alias("k"), F.col("id").cast("double").alias("v"))
            rows = df.groupBy("k").agg(F.expr("tally_sum(v)").alias("s")).orderBy("k").collect()
            pids = df.rdd.mapPartitions(lambda _: [__import__("os").getppid()]).distinct().count()
            print(json.dumps({"sums": [r.s for r in rows], "executor_jvms": pids}))
        finally:
            spark.stop()
        """
    )
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    expected = [float(sum(i for i in range(1000) if i % 3 == k)) for k in range(3)]
    assert result["sums"] == expected
    assert result["executor_jvms"] == 2


def test_delta_rows_equal_what_was_written(spark, tmp_path):
    path = str(tmp_path / "rows")
    spark.createDataFrame([Row(k="x", v=1)]).write.format("delta").save(path)
    assert spark.read.format("delta").load(path).collect() == [Row(k="x", v=1)]
