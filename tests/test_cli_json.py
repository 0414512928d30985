"""`--json` on the inspecting commands, errors as JSON, `tally --version` and shell completion (docs/cli.md, Scripting).

Every command runs through `main`, the console script's entry, so stdout is exactly what a script reads; one
backfill serves the whole module.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from tally.cli import cli, main
from utc import utc

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]

VIEWS = """
import tally as tl

card = tl.Entity("card", keys=["card_id"])
charges = tl.Source("charges", path={path!r}, format="parquet", timestamp="created")
card_activity = tl.FeatureView(
    name="card_activity", entity=card, source=charges, version=1, ttl="7d", description="how busy a card is",
    aggregations=[tl.Aggregation("count", windows=["1d", "7d"]), tl.Aggregation("sum", column="amount", windows=["1d"])])
card_daily = tl.FeatureView(
    name="card_daily", entity=card, source=charges, version=1, accuracy="snapshot", owner="fraud-ml",
    tags={{"domain": "fraud"}}, aggregations=[tl.Aggregation("count", windows={windows})])
card_online = tl.FeatureView(
    name="card_online", entity=card, source=charges, version=1, online=True, aggregations=[tl.Aggregation("count", windows=["1d"])])
"""


@pytest.fixture(scope="module")
def project(spark, tmp_path_factory):
    """A repository of three views over 200 charges, and `card_daily` backfilled for 2026-01-10..13 in two commits."""
    root = tmp_path_factory.mktemp("cli_json")
    rows = [(f"c{i % 7}", utc(2026, 1, 1) + dt.timedelta(hours=5 * i), float(i)) for i in range(200)]
    data = root / "charges"
    spark.createDataFrame(rows, "card_id string, created timestamp, amount double").write.parquet(str(data))
    repo = root / "features"
    repo.mkdir()
    (repo / "cards.py").write_text(VIEWS.format(path=str(data), windows=["7d"]))
    code, _ = tally(root, "backfill", "card_daily", "--start", "2026-01-10", "--end", "2026-01-13", "--step-days", "2",
                    "--quiet")
    assert code == 0
    return root


def tally(root: Path, *args: str, repo: str = "features", capture=None):
    """Run `main` like the console script; returns (exit code, the JSON document on stdout or None if empty)."""
    import contextlib
    import io

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["--repo", str(root / repo), "--warehouse", str(root / "wh"), *args])
    if capture is not None:
        capture["stderr"] = stderr.getvalue()
    text = stdout.getvalue()
    return code, (json.loads(text) if text.strip() and "--json" in args else text)


def aware(value: str) -> dt.datetime:
    """An instant as printed: ISO-8601 UTC with a Z, never naive."""
    assert value.endswith("Z"), value
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert parsed.utcoffset() == dt.timedelta(0)
    return parsed


def test_list_json_names_each_view_with_its_features(project):
    code, doc = tally(project, "list", "--json")
    assert code == 0
    assert [v["view"] for v in doc["views"]] == ["card_activity", "card_daily", "card_online"]
    activity, daily, online = doc["views"]
    assert activity["feature_count"] == 3 and activity["features"] == ["count_1d", "count_7d", "sum_amount_1d"]
    assert (activity["version"], activity["entity"], activity["keys"]) == (1, "card", ["card_id"])
    assert (daily["accuracy"], daily["owner"], daily["tags"]) == ("snapshot", "fraud-ml", {"domain": "fraud"})
    assert online["online"] is True and online["feature_count"] == 1


def test_describe_json_has_the_backfilled_range_and_the_definition(project):
    code, doc = tally(project, "describe", "card_daily", "--json")
    assert code == 0
    assert (doc["view"], doc["version"], doc["accuracy"]) == ("card_daily", 1, "snapshot")
    assert doc["features"][0]["name"] == "count_7d"
    assert doc["features"][0]["window"] == {"length": "7d", "delay": None, "closed": "left", "hop": None}
    [table] = doc["tables"]
    assert table["backfilled"] == {"start": "2026-01-10", "end": "2026-01-13", "days": 4}
    assert table["version"] == 1 and table["fingerprint"] == doc["fingerprint"]
    assert table["path"] == doc["table_path"] and Path(table["path"], "_delta_log").is_dir()
    assert doc["online"] is False and doc["online_state"] is None
    # a view never backfilled: no tables, and the path its table will have
    code, doc = tally(project, "describe", "card_activity", "--json")
    assert code == 0 and doc["tables"] == [] and doc["table_path"].endswith("card_activity/v1")
    assert doc["ttl"] == "7d" and doc["source"] == {"name": "charges", "timestamp": "created", "available_at": None}


def test_describe_json_of_an_online_view_has_its_store_and_watermark(project):
    code, doc = tally(project, "describe", "card_online", "--json")
    assert code == 0 and doc["online_state"]["watermark"] is None and doc["online_state"]["serving_spec"] is None
    assert doc["features"][0]["window"]["hop"] == "1h"  # the online default hop of a 1d window
    code, _ = tally(project, "materialize", "card_online")
    assert code == 0
    code, doc = tally(project, "describe", "card_online", "--json")
    state = doc["online_state"]
    assert state["store"].startswith("sqlite:") and Path(state["serving_spec"]).is_file() and state["problem"] is None
    newest = utc(2026, 1, 1) + dt.timedelta(hours=5 * 199)  # the last charge
    assert aware(state["watermark"]) == newest


def test_history_json_lists_each_commit_with_its_days_and_utc_time(project):
    code, doc = tally(project, "history", "card_daily", "--json")
    assert code == 0 and (doc["view"], doc["version"]) == ("card_daily", 1)
    commits = doc["commits"]
    assert [c["delta_version"] for c in commits] == [0, 1]
    assert [c["days"] for c in commits] == [{"start": "2026-01-10", "end": "2026-01-11"},
                                           {"start": "2026-01-12", "end": "2026-01-13"}]
    _, described = tally(project, "describe", "card_daily", "--json")
    assert {c["fingerprint"] for c in commits} == {described["fingerprint"]}
    assert {c["tally_version"] for c in commits} == {importlib.metadata.version("tally")}
    now = dt.datetime.now(dt.timezone.utc)
    for c in commits:
        assert now - dt.timedelta(hours=1) < aware(c["timestamp"]) <= now


def test_plan_json_and_a_changed_definition_keeps_the_plan_beside_the_error(project):
    code, doc = tally(project, "plan", "--json")
    assert code == 0 and doc["ok"] is True
    assert {v["view"]: v["status"] for v in doc["views"]} == {
        "card_activity": "new_view", "card_daily": "unchanged", "card_online": "new_view"}
    # the same warehouse seen from a repository where card_daily changed under version 1: exit 1, as in text
    changed = project / "changed"
    changed.mkdir(exist_ok=True)
    data = project / "charges"
    (changed / "cards.py").write_text(VIEWS.format(path=str(data), windows=["30d"]))
    captured: dict = {}
    code, doc = tally(project, "plan", "--json", repo="changed", capture=captured)
    assert code == 1
    daily = next(v for v in doc["views"] if v["view"] == "card_daily")
    assert daily["status"] == "spec_changed" and daily["ok"] is False and doc["ok"] is False
    assert daily["stored_fingerprint"] != daily["fingerprint"]
    assert doc["error"]["kind"] == "SPEC_CHANGED" and doc["error"]["exit_code"] == 1
    assert "bump version=" in doc["error"]["hint"]
    assert "error: [SPEC_CHANGED]" in captured["stderr"]  # humans still read it on stderr


def test_training_set_json_counts_the_rows_it_wrote(project, spark):
    spine = project / "spine"
    times = [utc(2026, 1, 11, 12), utc(2026, 1, 12, 8), utc(2026, 1, 14, 1)]
    spark.createDataFrame([(f"c{i}", t) for i in range(5) for t in times], "card_id string, created timestamp") \
        .write.mode("overwrite").parquet(str(spine))
    out = project / "train"
    code, doc = tally(project, "training-set", "--spine", str(spine), "--timestamp", "created",
                      "--features", "card_activity,card_daily", "--out", str(out), "--json")
    assert code == 0
    written = spark.read.parquet(str(out))
    assert doc["rows"] == doc["spine"]["rows"] == written.count() == 15
    assert doc["output"] == {"path": str(out), "format": "parquet", "hash": doc["output"]["hash"]}
    manifest = json.loads(Path(doc["manifest"]).read_text())
    assert manifest["output"]["hash"] == doc["output"]["hash"]
    views = {v["view"]: v for v in doc["views"]}
    assert views["card_daily"]["accuracy"] == "snapshot" and views["card_daily"]["delta_version"] == 1
    assert views["card_activity"]["delta_version"] is None and views["card_activity"]["features"] == [
        "count_1d", "count_7d", "sum_amount_1d"]
    assert "card_daily__count_7d" in written.columns


def test_config_json_gives_each_value_its_origin_and_hides_secrets(tmp_path, monkeypatch):
    (tmp_path / "tally.toml").write_text('data = "/data/payments"\n[spark]\n"spark.hadoop.fs.s3a.secret.key" = "hunter2"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TALLY_MASTER", "local[2]")
    code, doc = tally(tmp_path, "config", "--json")
    assert code == 0
    assert doc["settings"]["warehouse"] == {"value": str(tmp_path / "wh"), "origin": "flag --warehouse"}
    assert doc["settings"]["master"] == {"value": "local[2]", "origin": "env TALLY_MASTER"}
    assert doc["settings"]["data"] == {"value": "/data/payments", "origin": "tally.toml"}
    assert doc["spark"] == [{"key": "spark.hadoop.fs.s3a.secret.key", "value": "***", "origin": "tally.toml"}]


def test_errors_under_json_are_one_error_object_and_keep_their_exit_codes(project):
    code, doc = tally(project, "describe", "nope", "--json")
    assert code == 1 and list(doc) == ["error"]
    assert doc["error"]["kind"] == "REGISTRY" and "unknown feature view 'nope'" in doc["error"]["message"]
    code, doc = tally(project, "history", "card_activity", "--json")  # never backfilled
    assert code == 2 and doc["error"]["kind"] == "USAGE" and "has no table" in doc["error"]["message"]
    code, doc = tally(project, "history", "card_daily", "--version", "one", "--json")  # click rejects it first
    assert code == 2 and doc["error"]["kind"] == "USAGE" and "'one' is not a valid integer" in doc["error"]["message"]
    code, text = tally(project, "describe", "nope")  # without --json stdout stays empty
    assert code == 1 and text == ""


def _env() -> dict:
    import tally

    return {**os.environ, "PYTHONPATH": str(Path(tally.__file__).parents[1]), "SPARK_LOCAL_IP": "127.0.0.1"}


def test_version_reads_package_spec_and_jar_without_starting_a_jvm():
    from tally.definitions import SPEC_VERSION
    from tally.spark import jar_path

    check = ("import sys; from tally.cli import main; code = main(['--version']); "
             "from pyspark import SparkContext; assert SparkContext._gateway is None, 'a JVM started'; sys.exit(code)")
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, env=_env(), timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    first, second = out.stdout.splitlines()
    assert first == f"tally {importlib.metadata.version('tally')}"
    assert second.startswith(f"spec version {SPEC_VERSION}; ")
    if jar_path().is_file():
        assert f"JAR 0.1.0 ({jar_path()})" in second  # build.sbt's version, from the JAR's manifest


def test_json_stdout_is_clean_in_a_real_process(project):
    """No log line or banner shares stdout with the document (list needs no Spark)."""
    args = ["--repo", str(project / "features"), "--warehouse", str(project / "wh"), "list", "--json"]
    out = subprocess.run([sys.executable, "-m", "tally.cli", *args], capture_output=True, text=True, env=_env(), timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert [v["view"] for v in json.loads(out.stdout)["views"]] == ["card_activity", "card_daily", "card_online"]


def test_shell_completion_scripts_and_answers():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["tally"] == "tally.cli:main"  # _TALLY_COMPLETE and the docs assume the command is `tally`
    expect = {"bash_source": "complete -o nosort -F _tally_completion tally", "zsh_source": "#compdef tally",
              "fish_source": "complete --no-files --command tally"}
    for instruction, line in expect.items():
        r = CliRunner().invoke(cli, [], prog_name="tally", env={"_TALLY_COMPLETE": instruction})
        assert r.exit_code == 0 and line in r.output, (instruction, r.output)
    r = CliRunner().invoke(cli, [], prog_name="tally",
                           env={"_TALLY_COMPLETE": "bash_complete", "COMP_WORDS": "tally hist", "COMP_CWORD": "1"})
    assert r.output.split() == ["plain,history"]
    r = CliRunner().invoke(cli, [], prog_name="tally",
                           env={"_TALLY_COMPLETE": "bash_complete", "COMP_WORDS": "tally describe --j", "COMP_CWORD": "2"})
    assert r.output.split() == ["plain,--json"]


def test_the_installed_console_script_prints_its_completion():
    script = Path(sys.executable).with_name("tally")
    if not script.is_file():
        pytest.skip(f"no console script beside {sys.executable} (package not installed)")
    out = subprocess.run([str(script)], capture_output=True, text=True, timeout=120,
                         env={**_env(), "_TALLY_COMPLETE": "bash_source"})
    assert out.returncode == 0 and "_tally_completion()" in out.stdout, out.stderr[-2000:]
