"""docs/tutorial.md, followed end to end: its files written, its commands run, its Python run, in a fresh project
holding small generated parquet files; then the training set it builds is checked against the data."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from utc import UTC

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial.md"
START = dt.datetime(2026, 3, 2, tzinfo=UTC)


def generate(spark, data: Path) -> tuple[list, list]:
    """Four weeks of payments of 12 cards at 4 merchants, and chargebacks filed 2 to 30 days after the payment."""
    rng = np.random.default_rng(3)
    pays, cbs = [], []
    for i in range(400):
        created = START + dt.timedelta(microseconds=int(rng.integers(0, 28 * 86_400_000_000)))
        pays.append((f"p{i}", f"c{rng.integers(12)}", f"m{rng.integers(4)}", round(float(rng.gamma(2, 40)), 2), created))
    for p in pays:
        if rng.random() < 0.08:
            cbs.append((p[0], p[1], p[4], p[4] + dt.timedelta(days=float(rng.uniform(2, 30)))))
    spark.createDataFrame(pays, "payment_id string, card_id string, merchant_id string, amount double, created timestamp") \
        .write.parquet(str(data / "payments"))
    spark.createDataFrame(cbs, "payment_id string, card_id string, payment_created timestamp, filed_at timestamp") \
        .write.parquet(str(data / "chargebacks"))
    return pays, cbs


RUNNER = """
import json, re, shlex, sys
from pathlib import Path
from tally.cli import main

text = Path(sys.argv[1]).read_text()
ran = {"files": 0, "commands": 0, "python": 0}
namespace = {}
for m in re.finditer(r"(?:<!-- file: (?P<file>\\S+) -->\\n)?```(?P<lang>\\w*)\\n(?P<body>.*?)```", text, re.S):
    if m["file"]:
        Path(m["file"]).parent.mkdir(parents=True, exist_ok=True)
        Path(m["file"]).write_text(m["body"])
        ran["files"] += 1
    elif m["lang"] == "console":
        for line in m["body"].splitlines():
            if line.startswith("$ tally "):
                code = main(shlex.split(line[len("$ tally "):]))
                if code != 0:
                    sys.exit(f"{line} exited {code}")
                ran["commands"] += 1
    elif m["lang"] == "python":
        exec(compile(m["body"], "tutorial.md", "exec"), namespace)
        ran["python"] += 1
namespace["fs"].close()
print(json.dumps(ran))
"""


def test_the_tutorial_runs_as_written_on_a_users_own_files(spark, tmp_path):
    project = tmp_path / "my-project"
    project.mkdir()
    pays, cbs = generate(spark, project / "data")
    # A fresh process in the project folder, as a user runs it: its own Spark (whose working directory is the
    # project's, as relative paths in the page assume), the page's commands through tally's entry point.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    run = subprocess.run([sys.executable, "-c", RUNNER, str(TUTORIAL)], cwd=project, env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == {"files": 3, "commands": 4, "python": 2}

    # what the page promises about the result
    train = {r["payment_id"]: r for r in spark.read.parquet(str(project / "train")).collect()}
    from_python = {r["payment_id"]: r for r in spark.read.parquet(str(project / "train_from_python")).collect()}
    assert len(train) == len(pays) and train == from_python
    manifest = json.loads((project / "train.manifest.json").read_text())
    assert manifest["spine"]["rows"] == len(pays)
    known_cb = {p for p, *_ in cbs}
    for pid, card, merchant, _amount, created in pays:
        row = train[pid]
        assert row["charged_back"] == (1 if pid in known_cb else 0)
        at = created
        same_card = [q for q in pays if q[1] == card]
        alive = any(at - dt.timedelta(days=30) <= q[4] < at for q in same_card)  # the view's ttl: null without
        assert row["card_activity__count_1h"] == (
            sum(1 for q in same_card if at - dt.timedelta(hours=1) <= q[4] < at) if alive else None)
        # chargebacks count from their filing on, and only within 90 days of the payment they are about
        assert row["card_chargebacks__count_90d"] == sum(
            1 for c in cbs if c[1] == card and c[3] < at and at - dt.timedelta(days=90) <= c[2] < at)
        # snapshot: the merchant's 30 days as of 00:00 UTC of the payment's date
        midnight = dt.datetime.combine(at.astimezone(UTC).date(), dt.time(), UTC)
        month = [q[3] for q in pays if q[2] == merchant and midnight - dt.timedelta(days=30) <= q[4] < midnight]
        if month:
            assert row["merchant_daily__count_30d"] == len(month)
            assert row["merchant_daily__mean_amount_30d"] == pytest.approx(sum(month) / len(month), rel=1e-12)
        else:  # no payment in its 30 days before that midnight: no snapshot row (ttl), so null
            assert row["merchant_daily__count_30d"] is None
    assert any(r["card_chargebacks__count_90d"] for r in train.values())  # the check saw filed chargebacks
