"""tally.session(): a running session is used as it is; laptop settings only for local masters."""

from __future__ import annotations

import pytest
import tally as tl
from click.testing import CliRunner
from tally import spark as tally_spark
from tally.cli import cli
from tally.errors import SetupError

LAPTOP_ONLY = ("spark.driver.host", "spark.driver.bindAddress", "spark.driver.extraClassPath",
               "spark.sql.shuffle.partitions", "spark.ui.enabled", "spark.databricks.delta.snapshotPartitions")


def test_a_running_session_is_returned_with_its_settings_untouched(spark):
    before = {k: spark.conf.get(k) for k in ("spark.sql.shuffle.partitions", "spark.sql.adaptive.enabled")}
    assert before["spark.sql.shuffle.partitions"] == "4"  # the test session's, not the embedded default (8)
    again = tl.session(conf={"spark.sql.shuffle.partitions": "8", "spark.sql.adaptive.enabled": "false"})
    assert again is spark or again._jsparkSession.equals(spark._jsparkSession)
    assert {k: spark.conf.get(k) for k in before} == before
    assert spark.sql("SELECT tally_sum(x) AS s FROM VALUES (1), (2) AS t(x)").first().s == 3


def test_the_cli_in_process_keeps_the_callers_session_and_settings(spark, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tally.toml").write_text('[spark]\n"spark.sql.shuffle.partitions" = "13"\n')
    out = tmp_path / "data"
    r = CliRunner().invoke(cli, ["datagen", "--charges", "200", "--days", "2", "--out", str(out)], standalone_mode=False)
    assert r.exception is None, r.output
    assert spark.conf.get("spark.sql.shuffle.partitions") == "4"
    assert spark.range(3).count() == 3  # the CLI did not stop the session it did not start


def test_cluster_masters_get_no_laptop_settings_and_no_local_jar_check(monkeypatch, tmp_path):
    monkeypatch.setenv("TALLY_JAR", str(tmp_path / "missing.jar"))
    conf = tally_spark.settings("spark://10.0.0.5:7077", {"spark.executor.memory": "4g"})
    assert not set(LAPTOP_ONLY) & set(conf), sorted(set(LAPTOP_ONLY) & set(conf))
    assert "spark.jars" not in conf  # the cluster gets the JAR through spark-submit --jars
    assert conf["spark.sql.session.timeZone"] == "UTC" and conf["spark.executor.memory"] == "4g"
    assert conf["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    for master in ("yarn", "k8s://https://kube:6443"):
        assert not set(LAPTOP_ONLY) & set(tally_spark.settings(master))
    with pytest.raises(SetupError, match="missing.jar"):  # a local master needs the JAR on this disk
        tally_spark.settings("local[2]")
    with pytest.raises(SetupError, match="missing.jar"):
        tally_spark.settings("local-cluster[2,1,1024]")


def test_local_masters_get_the_laptop_settings_and_conf_wins(tmp_path):
    conf = tally_spark.settings("local[2]", {"spark.sql.shuffle.partitions": "3"}, warehouse=str(tmp_path))
    assert conf["spark.driver.bindAddress"] == "127.0.0.1" and conf["spark.sql.shuffle.partitions"] == "3"
    assert str(tally_spark.jar_path()) in conf["spark.jars"].split(",")
    assert conf["spark.sql.warehouse.dir"] == str((tmp_path / "spark-warehouse").resolve())


def test_sessions_start_with_the_class_archive_setup_wrote(spark):
    """`make setup` writes the driver's class-data-sharing archive, and an embedded session's JVM maps it."""
    archive = tally_spark.class_archive()
    assert archive.is_file(), f"{archive} is missing: `make setup` writes it"
    jvm_args = list(spark._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
    assert f"-XX:SharedArchiveFile={archive}" in jvm_args


@pytest.mark.slow
def test_a_stale_class_archive_costs_nothing_but_the_time_it_saves(tmp_path):
    """An archive of another JVM or JAR (here: random bytes) is skipped silently: the session starts and works."""
    import os
    import subprocess
    import sys

    stale = tmp_path / "stale.jsa"
    stale.write_bytes(os.urandom(1 << 16))
    done = subprocess.run([sys.executable, "-c", "import tally; s = tally.session(); print(s.range(3).count()); s.stop()"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "TALLY_CLASS_ARCHIVE": str(stale)})
    assert done.returncode == 0 and done.stdout.split() == ["3"], done.stdout + done.stderr[-2000:]
    assert "cds" not in done.stderr.lower() and "shared archive" not in done.stderr.lower(), done.stderr[-2000:]
