"""One SparkSession per pytest session: real Spark, real Delta, the real tally JAR."""

from __future__ import annotations

import os
import sys

import pytest

os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # Python UDFs run in this interpreter (pyarrow and all)
# Test JVMs compile with C1 only: the suite runs hundreds of small Spark jobs whose code C2 would spend more CPU
# optimising than running it saves (bench/README.md, "make test"). Results do not depend on the JIT. Set for this
# session's driver and, through the environment, for every CLI process and executor a test starts; Spark puts the
# `default` options before tally's own (the class archive's), and PYSPARK_SUBMIT_ARGS set by hand wins.
_C1 = "-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=240m"  # C1 alone gets a 48 MB code cache by default, too
# small for Spark: full, the JVM stops compiling
os.environ.setdefault("PYSPARK_SUBMIT_ARGS", f"--conf 'spark.driver.defaultJavaOptions={_C1}' "
                                             f"--conf 'spark.executor.defaultJavaOptions={_C1}' pyspark-shell")


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
