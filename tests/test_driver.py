"""The long-lived driver (`tally driver`): a real driver process with its own Spark session, real `tally` client
processes talking to it over its Unix socket, compared with the same commands run in this process."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from tally.cli import main
from utc import utc

VIEW = """
import tally as tl

card = tl.Entity("card", keys=["card_id"])
charges = tl.Source("charges", path={path!r}, format="parquet", timestamp="created")
card_activity = tl.FeatureView(
    name="card_activity", entity=card, source=charges, ttl="7d",
    aggregations=[tl.Aggregation("count", windows=["1d", "7d"]), tl.Aggregation("sum", column="amount", windows=["1d"])])
"""


@pytest.fixture(scope="module")
def project(spark, tmp_path_factory):
    """A project (tally.toml, a view over 90 days of charges, a spine) and the environment its clients run in."""
    root = tmp_path_factory.mktemp("driver_project")
    rows = [(f"c{i % 7}", utc(2026, 1, 1) + dt.timedelta(hours=3 * i), float(i)) for i in range(720)]
    spark.createDataFrame(rows, "card_id string, created timestamp, amount double").write.parquet(str(root / "charges"))
    spark.createDataFrame(rows[::5], "card_id string, created timestamp, amount double").write.parquet(
        str(root / "spine"))
    (root / "features").mkdir()
    (root / "features" / "cards.py").write_text(VIEW.format(path=str(root / "charges")))
    (root / "tally.toml").write_text('warehouse = "warehouse"\nrepo = "features"\n')
    runtime = tmp_path_factory.mktemp("rt")
    runtime.chmod(0o700)
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "TALLY_RUNTIME_DIR": str(runtime)}
    env.pop("TALLY_DRIVER", None)
    return root, env


def tally(project, *args, env=None, cwd=None, timeout=300):
    root, base = project
    return subprocess.run([sys.executable, "-m", "tally.cli", *args], cwd=cwd or root, env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def status(project) -> dict:
    out = tally(project, "driver", "status", "--json", timeout=60)
    return {**json.loads(out.stdout), "exit": out.returncode}


@pytest.fixture(scope="module")
def driver(project):
    """A driver for the project, started without its warm-up (a test needs the serving, not the speed) in another
    time zone than the clients', and stopped after the module."""
    started = tally(project, "driver", "start", "--no-warm-up", env={"TZ": "America/Los_Angeles"})
    assert started.returncode == 0, started.stderr[-3000:]
    assert "driver serves" in started.stdout
    yield status(project)
    stopped = tally(project, "driver", "stop", timeout=180)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stderr


def test_commands_run_in_the_driver_with_the_output_and_exit_codes_of_a_local_run(project, driver, monkeypatch):
    root, _ = project
    assert driver["running"] and driver["exit"] == 0
    before = driver["commands"]
    backfill = tally(project, "backfill", "card_activity", "--start", "2026-01-10", "--end", "2026-01-20",
                     "--step-days", "5")
    assert backfill.returncode == 0, backfill.stderr[-3000:]
    assert backfill.stdout.count(": written") == 3, backfill.stdout
    built = tally(project, "training-set", "--spine", "spine", "--timestamp", "created", "--features",
                  "card_activity", "--out", "through_driver")
    assert built.returncode == 0, built.stderr[-3000:]
    after = status(project)
    assert after["commands"] == before + 2  # both ran there, not in the client
    # relative paths resolve against the client's folder, not the driver's (a project's subfolder finds its toml)
    (root / "sub").mkdir()
    inside = tally(project, "training-set", "--spine", "../spine", "--timestamp", "created", "--features",
                   "card_activity", "--out", "out", cwd=root / "sub")
    assert inside.returncode == 0, inside.stderr[-3000:]
    # the same backfill again compiles only its plans with new literals (its commit time): the driver keeps what it
    # compiled (with Spark's default of 100 classes, one backfill's chunks evicted each other's)
    compiled = status(project)["compiled_classes"]
    again = tally(project, "backfill", "card_activity", "--start", "2026-01-10", "--end", "2026-01-20", "--step-days", "5")
    assert again.returncode == 0, again.stderr[-3000:]
    assert status(project)["compiled_classes"] - compiled <= 30  # 14 here; 97 with Spark's default
    assert (root / "sub" / "out" / "_SUCCESS").exists() and (root / "sub" / "out.manifest.json").exists()
    assert not (root / "out").exists()

    # the same training set in this process (its own session), and what each client said
    monkeypatch.setenv("TALLY_DRIVER", "off")
    assert main(["--repo", str(root / "features"), "--warehouse", str(root / "warehouse"), "training-set", "--spine",
                 str(root / "spine"), "--timestamp", "created", "--features", "card_activity", "--out",
                 str(root / "here")]) == 0
    c = pd.read_parquet(root / "sub" / "out").sort_values(["card_id", "created"]).reset_index(drop=True)
    a = pd.read_parquet(root / "through_driver").sort_values(["card_id", "created"]).reset_index(drop=True)
    b = pd.read_parquet(root / "here").sort_values(["card_id", "created"]).reset_index(drop=True)
    assert len(a) == 144 and a["card_activity__count_7d"].notna().sum() > 130
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(a, c)
    assert "144 rows -> through_driver (parquet); content hash" in built.stdout
    assert json.loads((root / "through_driver.manifest.json").read_text())["output"]["hash"] == \
        json.loads((root / "here.manifest.json").read_text())["output"]["hash"]

    # errors keep their messages and exit codes: data 1, usage 2 (with the usage text naming `tally`)
    missing = tally(project, "describe", "nope")
    assert missing.returncode == 1 and "unknown feature view 'nope'" in missing.stderr, missing.stderr
    bad = tally(project, "backfill", "card_activity", "--start", "2026-13-01", "--end", "2026-01-02")
    assert bad.returncode == 2 and "'2026-13-01' is not a date" in bad.stderr, bad.stderr
    assert "Usage: tally backfill" in tally(project, "backfill", "--bogus").stderr
    log = Path(driver["log"]).read_text()
    assert "tally describe nope: exit 1" in log and "tally backfill card_activity" in log


def commits(root: Path) -> int:
    return len(list((root / "warehouse").glob("**/card_activity*/**/_delta_log/*.json")))


def test_ctrl_c_cancels_the_command_and_a_waiting_client_runs_next(project, driver):
    root, env = project
    before = commits(root)
    client = subprocess.Popen(
        [sys.executable, "-m", "tally.cli", "backfill", "card_activity", "--start", "2026-02-01", "--end",
         "2026-03-31", "--step-days", "1"], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while commits(root) == before and time.monotonic() < deadline:  # a day is committed: the backfill runs
            time.sleep(0.1)
        waiting = subprocess.Popen([sys.executable, "-m", "tally.cli", "history", "card_activity"], cwd=root, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        told = waiting.stderr.readline()  # it connected while the backfill runs, and was told to wait
        assert "waiting for the driver, busy with: tally backfill card_activity" in told, told
        assert status(project)["busy"][:2] == ["backfill", "card_activity"]
        client.send_signal(signal.SIGINT)
        shown, err = client.communicate(timeout=120)
    finally:
        client.kill()
    assert client.returncode == 130 and "aborted" in err, err
    out, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0 and "days 2026-02-01..2026-02-01" in out, err
    written = commits(root) - before
    assert 1 <= written < 59, f"{written} days committed: the backfill was not cancelled"
    # what was committed is whole: the history the waiting client read lists exactly those days, one commit each
    days = [line for line in out.splitlines() if "WRITE" in line and ("days 2026-02" in line or "days 2026-03" in line)]
    assert len(days) == written, out
    # and the interrupted client had shown each day as it was committed (the last perhaps not yet when cancelled)
    assert written - 1 <= shown.count(": written") <= written and shown.count(": written") >= 1, shown
    assert "(the client went away: cancelled)" in Path(driver["log"]).read_text()


def test_a_driver_of_other_settings_or_a_dead_one_leaves_the_command_to_its_own_process(project, driver, tmp_path):
    other = tally(project, "--master", "local[1]", "config")
    assert other.returncode == 0 and "local[1]" in other.stdout
    assert "runs with another master; running this command in its own process" in other.stderr
    off = tally(project, "config", env={"TALLY_DRIVER": "off"})
    assert off.returncode == 0 and off.stderr == ""

    # a driver that died left its socket and info: commands run here, silently; status says none runs (exit 3)
    runtime = tmp_path / "rt"
    runtime.mkdir(mode=0o700)
    env = {"TALLY_RUNTIME_DIR": str(runtime)}
    from tally import driver as driver_module

    os.environ["TALLY_RUNTIME_DIR"] = str(runtime)
    try:
        p = driver_module.paths(str(project[0] / "warehouse"))
    finally:
        del os.environ["TALLY_RUNTIME_DIR"]
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(p.socket))
    dead.close()
    p.info.write_text(json.dumps({**json.loads(Path(driver["log"]).with_suffix(".json").read_text()), "pid": 1}))
    alone = tally(project, "config", env=env)
    assert alone.returncode == 0 and alone.stderr == "", alone.stderr
    none = tally(project, "driver", "status", env=env)
    assert none.returncode == 3 and "no driver serves" in none.stdout


def test_the_driver_folder_must_be_private(project, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    out = tally(project, "driver", "status", env={"TALLY_RUNTIME_DIR": str(shared)})
    assert out.returncode == 2 and f"driver folder {shared} is not private" in out.stderr, out.stderr


def test_an_idle_driver_stops_by_itself_and_leaves_nothing_behind(spark, tmp_path, monkeypatch):
    """In this process (its session stands in for the driver's own): no command for the idle timeout, and it stops."""
    import threading

    from tally import driver as driver_module
    from tally.feature_store import FeatureStore

    runtime = tmp_path / "rt"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("TALLY_RUNTIME_DIR", str(runtime))
    store = FeatureStore(tmp_path, warehouse=str(tmp_path / "wh"))
    p = driver_module.paths(store.config.warehouse)
    d = driver_module.Driver(store, p, driver_module.idle_seconds("2s"))
    served = threading.Thread(target=d.serve, args=(False, lambda info: None))
    began = time.monotonic()
    served.start()
    try:
        deadline = time.monotonic() + 30
        while driver_module.ask(p, "status") is None and time.monotonic() < deadline:
            time.sleep(0.1)
        answer = driver_module.ask(p, "status")  # asking is not a command: it keeps no driver alive
        assert answer["idle_timeout_s"] == 2.0 and answer["busy"] is None
    finally:
        served.join(timeout=30)
    assert not served.is_alive(), "an idle driver kept serving"
    assert time.monotonic() - began >= 2.0, "it stopped before its idle timeout"
    assert not p.socket.exists() and not p.info.exists()
    assert driver_module.ask(p, "status") is None
    with pytest.raises(Exception, match="'soon' is not a duration"):
        driver_module.idle_seconds("soon")
    assert driver_module.idle_seconds("never") is None and driver_module.idle_seconds("30m") == 1800
