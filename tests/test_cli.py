"""The `tally` CLI: in-process with click's runner, and once end to end as a subprocess."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from tally.cli import cli, main
from utc import utc

VIEW = """
import tally as tl

card = tl.Entity("card", keys=["card_id"])
charges = tl.Source("charges", path={path!r}, format="parquet", timestamp="created")
card_activity = tl.FeatureView(
    name="card_activity", entity=card, source=charges, version={version}, ttl="7d",
    description="how busy a card is",
    aggregations=[tl.Aggregation("count", windows={windows}), tl.Aggregation("sum", column="amount", windows=["1d"])])
"""


@pytest.fixture()
def project(spark, tmp_path):
    rows = [(f"c{i % 7}", utc(2026, 1, 1) + dt.timedelta(hours=5 * i), float(i)) for i in range(200)]
    data = tmp_path / "charges"
    spark.createDataFrame(rows, "card_id string, created timestamp, amount double").write.parquet(str(data))
    repo = tmp_path / "features"
    repo.mkdir()
    write_view(repo, data, 1, ["1d", "7d"])
    return tmp_path, repo, data


def write_view(repo: Path, data: Path, version: int, windows) -> None:
    (repo / "cards.py").write_text(VIEW.format(path=str(data), version=version, windows=list(windows)))


def run(tmp_path, *args):
    result = CliRunner().invoke(cli, ["--repo", str(tmp_path / "features"), "--warehouse", str(tmp_path / "wh"), *args],
                                catch_exceptions=True, standalone_mode=False)
    return result


def test_plan_backfill_history_describe_flow(project):
    tmp_path, repo, data = project
    r = run(tmp_path, "plan")
    assert r.exception is None and "+ card_activity v1: new view" in r.output
    r = run(tmp_path, "backfill", "card_activity", "--start", "2026-01-10", "--end", "2026-01-13", "--step-days", "2",
            "--dry-run")
    assert "chunk 2026-01-10..2026-01-11: reads charges created in [2026-01-04 00:00:00, 2026-01-12 00:00:00]" in r.output
    assert not (tmp_path / "wh").exists()
    r = run(tmp_path, "backfill", "card_activity", "--start", "2026-01-10", "--end", "2026-01-13", "--step-days", "2")
    assert r.exception is None, r.output
    assert r.output.count(": written") == 2
    r = run(tmp_path, "history", "card_activity")
    assert "days 2026-01-10..2026-01-11" in r.output and "days 2026-01-12..2026-01-13" in r.output
    r = run(tmp_path, "describe", "card_activity")
    assert "2026-01-10..2026-01-13 (4 days)" in r.output and "count_7d" in r.output
    r = run(tmp_path, "plan")
    assert "= card_activity v1: unchanged" in r.output


def test_changed_spec_plan_exits_1_and_says_bump_the_version(project, monkeypatch, capsys):
    tmp_path, repo, data = project
    assert run(tmp_path, "backfill", "card_activity", "--start", "2026-01-10", "--end", "2026-01-10").exception is None
    write_view(repo, data, 1, ["1d", "30d"])
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    code = main(["--repo", str(repo), "--warehouse", str(tmp_path / "wh"), "plan"])
    out = capsys.readouterr()
    assert code == 1
    assert "! card_activity v1: definition changed since it was backfilled" in out.out, out.out
    assert "view 'card_activity' version 1 was backfilled with a different definition" in out.err, out.err
    assert "bump version= of 'card_activity' to 2" in out.err, out.err
    # with the version bumped, the plan is clean again and names the new version
    write_view(repo, data, 2, ["1d", "30d"])
    assert main(["--repo", str(repo), "--warehouse", str(tmp_path / "wh"), "plan"]) == 0
    assert "+ card_activity v2: new version" in capsys.readouterr().out


def test_usage_errors_name_the_thing_and_bad_flags_exit_2(project, capsys):
    tmp_path, repo, _ = project
    assert main(["--repo", str(repo), "--warehouse", str(tmp_path / "wh"), "describe", "nope"]) == 1
    assert "unknown feature view 'nope'" in capsys.readouterr().err
    assert main(["--repo", str(repo), "backfill", "card_activity", "--start", "2026-13-01", "--end", "2026-01-02"]) == 2
    assert "'2026-13-01' is not a date (YYYY-MM-DD)" in capsys.readouterr().err


def test_config_shows_origins_and_redacts_secrets(tmp_path, monkeypatch):
    (tmp_path / "tally.toml").write_text('warehouse = "/data/wh"\n[spark]\n"spark.hadoop.fs.s3a.secret.key" = "hunter2"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TALLY_MASTER", "local[2]")
    r = CliRunner().invoke(cli, ["config"])
    assert "/data/wh" in r.output and "(tally.toml)" in r.output
    assert "local[2]" in r.output and "env TALLY_MASTER" in r.output
    assert "hunter2" not in r.output and "***" in r.output


def test_every_command_has_help_with_an_example():
    for name in cli.commands:
        r = CliRunner().invoke(cli, [name, "--help"])
        assert r.exit_code == 0 and "Example" in r.output, name


@pytest.mark.slow
def test_cli_end_to_end_as_a_subprocess(project):
    tmp_path, repo, _ = project
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    args = [sys.executable, "-m", "tally.cli", "--repo", str(repo), "--warehouse", str(tmp_path / "wh2")]
    out = subprocess.run([*args, "backfill", "card_activity", "--start", "2026-01-05", "--end", "2026-01-06", "--quiet"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    # what the process committed, read back by another (in-process: a third JVM would add only its start-up)
    history = CliRunner().invoke(cli, [*args[3:], "history", "card_activity"], standalone_mode=False)
    assert history.exception is None and "days 2026-01-05..2026-01-06" in history.output, history.output
    out = subprocess.run([*args, "describe", "missing"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 1 and "unknown feature view" in out.stderr


def test_datagen_command_writes_the_three_tables(spark, tmp_path):
    out = tmp_path / "data"
    r = CliRunner().invoke(cli, ["datagen", "--charges", "3000", "--days", "5", "--seed", "3", "--out", str(out)],
                           standalone_mode=False)
    assert r.exception is None, r.output
    assert "charges: 3000 rows" in r.output
    assert spark.read.parquet(str(out / "charges")).count() == 3000
    assert {p.name for p in out.iterdir()} >= {"charges", "disputes", "refunds"}


def test_datagen_structure_control_writes_the_controls_rows_and_refuses_structure_with_it(spark, tmp_path):
    from tally import datagen
    from tally.errors import UsageError
    from test_datagen import content_hashes

    out = tmp_path / "data"
    r = CliRunner().invoke(cli, ["datagen", "--charges", "2000", "--days", "5", "--seed", "3", "--structure-control",
                                 "--out", str(out)], standalone_mode=False)
    assert r.exception is None, r.output
    control = datagen.generate(spark, 2_000, 5, 3, structure="control")
    plain = datagen.generate(spark, 2_000, 5, 3)
    hashes = content_hashes({"cli": spark.read.parquet(str(out / "charges")), "control": control["charges"],
                             "plain": plain["charges"]})
    assert hashes["cli"] == hashes["control"] != hashes["plain"], hashes  # the control's rows (quiet fraud and all)
    both = CliRunner().invoke(cli, ["datagen", "--charges", "2000", "--structure", "--structure-control", "--out",
                                    str(tmp_path / "x")], standalone_mode=False)
    assert isinstance(both.exception, UsageError) and "exclude each other" in str(both.exception)
