"""One SparkSession per pytest session: real Spark, real Delta, the real tally JAR."""

from __future__ import annotations

import os
import sys

import pytest

os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # Python UDFs run in this interpreter (pyarrow and all)


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    import tally as tl

    warehouse = tmp_path_factory.mktemp("warehouse")
    session = tl.session(
        "local[2]",
        conf={"spark.sql.shuffle.partitions": "4", "spark.default.parallelism": "4"},
        warehouse=str(warehouse),
    )
    yield session
    session.stop()
