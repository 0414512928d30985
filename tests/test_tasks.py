"""tl.Task and `tally task`: definition errors name the task and the culprit; a run writes a reproducible report."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tally as tl
from click.testing import CliRunner
from tally import registry
from tally.cli import cli, main
from tally.errors import DataError, DefinitionError, RegistryError
from tally.tasks import metrics

CUTOFF = "2026-12-01"

charges = tl.Source("charges", path="charges", timestamp="created")
disputes = tl.Source("disputes", path="disputes", timestamp="charge_created", available_at="dispute_created")
is_fraud = tl.Label("is_fraud", source=disputes, on=["charge_id"], filter="reason = 'fraudulent'", default=0)


def task(**overrides) -> tl.Task:
    kwargs = {"name": "fraud", "spine": tl.Spine(charges), "label": is_fraud, "features": ["card_velocity"],
              "split": tl.Split(test_fraction=0.3)}
    return tl.Task(**{**kwargs, **overrides})


# --- definition errors: refused when the task is built ----------------------------------------------------------

@pytest.mark.parametrize("overrides, culprit", [
    ({"model": "random_forest"}, "unknown model 'random_forest'"),
    ({"params": {"max_depth": 3}}, "max_depth"),
    ({"seed": "7"}, "seed"),
    ({"metrics": ["auc_pr", "f1"]}, "unknown metric 'f1'"),
    ({"lift_at": [5]}, "lift_at"),
    ({"segments": [""]}, "segments"),
    ({"features": []}, "features="),
    ({"features": [tl.Use("card_velocity", keys={"card_id": "payee"}, prefix="payee")]}, "tl.Use"),
    ({"label": 3}, "label="),
])
def test_a_task_refuses_a_bad_definition_naming_the_task_and_the_culprit(overrides, culprit):
    with pytest.raises(DefinitionError) as err:
        task(**overrides)
    assert "task 'fraud'" in err.value.message and culprit in err.value.message + (err.value.hint or "")


def test_an_unknown_model_or_parameter_hints_the_closest_names():
    with pytest.raises(DefinitionError, match="closest: gbt"):
        task(model="gbts")
    with pytest.raises(DefinitionError, match="closest: maxDepth"):
        task(params={"maxDeph": 3})


def test_a_split_is_one_of_train_until_or_a_test_fraction_and_never_naive():
    import datetime as dt

    for bad in ({}, {"train_until": "2026-01-10", "test_fraction": 0.2}, {"test_fraction": 1.0},
                {"train_until": dt.datetime(2026, 1, 10)}, {"train_until": "soon"}):
        with pytest.raises(DefinitionError, match="split"):
            tl.Split(**bad)


def test_a_label_whose_source_has_no_available_at_is_refused_by_the_label_and_by_the_task():
    no_time = tl.Source("disputes", path="disputes", timestamp="charge_created")
    with pytest.raises(DefinitionError, match="declares no available_at"):
        tl.Label("is_fraud", source=no_time, on=["charge_id"])
    # a label that reached the task without its own check (its source swapped after it was built)
    sneaky = dataclasses.replace(is_fraud)
    object.__setattr__(sneaky, "source", no_time)
    with pytest.raises(DefinitionError, match="task 'fraud': label 'is_fraud' reads source 'disputes', which "
                                              "declares no available_at"):
        task(label=sneaky)


REPO = '''
import tally as tl

card = tl.Entity("card", keys=["card_id"])
merchant = tl.Entity("merchant", keys=["merchant_id"])
charges = tl.Source("charges", path="charges", timestamp="created",
                    columns={"amount_major": "CAST(amount AS DOUBLE) / 100",
                             "is_declined": "CAST(outcome = 'declined' AS INT)"})
disputes = tl.Source("disputes", path="disputes", timestamp="charge_created", available_at="dispute_created")

card_velocity = tl.FeatureView(name="card_velocity", entity=card, source=charges, version=1, aggregations=[
    tl.Aggregation("count", windows=["1h", "24h", "7d"]),
    tl.Aggregation("sum", column="amount_major", windows=["24h"]),
    tl.Aggregation("approx_percentile", column="amount_major", windows=["7d"], name="ticket",
                   params={"quantiles": [0.5, 0.9]})])
merchant_daily = tl.FeatureView(name="merchant_daily", entity=merchant, source=charges, version=1,
                                accuracy="snapshot", ttl="30d", aggregations=[
    tl.Aggregation("mean", column="is_declined", windows=["7d"], name="decline_rate"),
    tl.Aggregation("count", windows=["7d"])])

is_fraud = tl.Label("is_fraud", source=disputes, on=["charge_id"], filter="reason = 'fraudulent'", default=0,
                    within="30d")
spine = tl.Spine(charges, columns={"amount_usd": "CAST(amount AS DOUBLE) / 100",
                                   "is_ecommerce": "CAST(channel = 'ecommerce' AS DOUBLE)"})
fraud = tl.Task(name="fraud", spine=spine, label=is_fraud, features=["card_velocity", "merchant_daily:decline_rate"],
                split=tl.Split(test_fraction=0.34), params={"maxIter": 4, "maxDepth": 3},
                lift_at=[0.05, 0.2], segments=["channel"], description="fraud on a small repository")
'''


def write_repo(folder: Path, extra: str = "", files: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "payments.py").write_text(REPO + textwrap.dedent(extra))
    for name, text in (files or {}).items():
        (folder / name).write_text(textwrap.dedent(text))
    return folder


def test_an_unknown_feature_or_label_is_refused_when_the_repository_loads_naming_the_task_and_the_closest(tmp_path):
    repo = write_repo(tmp_path / "a", files={"other.py": """
        import tally as tl
        from payments import spine, is_fraud
        typo = tl.Task(name="typo", spine=spine, label=is_fraud, features=["card_velocty"],
                       split=tl.Split(test_fraction=0.3))
    """})
    with pytest.raises(RegistryError) as err:
        registry.load(repo)
    assert "task 'typo': unknown feature 'card_velocty'" in err.value.message and "other.py" in err.value.message
    assert "closest: card_velocity" in err.value.hint
    (repo / "other.py").write_text(textwrap.dedent("""
        import tally as tl
        from payments import spine
        typo = tl.Task(name="typo", spine=spine, label="is_frau", features=["card_velocity:count_2h"],
                       split=tl.Split(test_fraction=0.3))
    """))
    with pytest.raises(RegistryError, match="task 'typo': unknown label 'is_frau'") as err:
        registry.load(repo)
    assert "is_fraud" in err.value.hint
    (repo / "other.py").write_text((repo / "other.py").read_text().replace('"is_frau"', '"is_fraud"'))
    with pytest.raises(RegistryError, match="task 'typo': view 'card_velocity' has no feature 'count_2h'") as err:
        registry.load(repo)
    assert "count_24h" in err.value.hint


def test_two_tasks_of_one_name_are_refused_naming_both_files(tmp_path):
    repo = write_repo(tmp_path / "b", files={"again.py": """
        import tally as tl
        from payments import spine, is_fraud
        fraud2 = tl.Task(name="fraud", spine=spine, label=is_fraud, features=["card_velocity"],
                         split=tl.Split(test_fraction=0.5))
    """})
    with pytest.raises(RegistryError, match="two Tasks are named 'fraud'") as err:
        registry.load(repo)
    assert "again.py" in err.value.message and "payments.py" in err.value.message


def test_metrics_do_not_depend_on_row_order_and_count_ties_pro_rata():
    y = np.array([1, 0, 1, 0, 0, 0, 1, 0])
    s = np.array([0.9, 0.8, 0.8, 0.3, 0.3, 0.1, 0.5, 0.5])
    flip = np.arange(len(y))[::-1]
    assert metrics.summary(y, s) == metrics.summary(y[flip], s[flip])
    assert metrics.auc_roc(y, s) == pytest.approx(13 / 15)  # pairs won: 5 + 4.5 + 3.5 of 15
    assert metrics.auc_pr(np.array([1, 0]), np.array([0.9, 0.1])) == 1.0
    top = metrics.lift(y, s, 0.25)  # top 2 rows: 0.9 (positive) and one of the two 0.8s (half a positive)
    assert top["positives"] == 1.5 and top["lift"] == pytest.approx(0.75 / (3 / 8))


# --- runs on generated data -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def project(spark, tmp_path_factory):
    from tally import datagen

    root = tmp_path_factory.mktemp("tasks")
    datagen.write(spark, str(root / "data"), charges=3000, days=20, seed=11)
    repo = write_repo(root / "features", extra='''
        early = tl.Task(name="early", spine=spine, label=is_fraud, features=["card_velocity"],
                        split=tl.Split(train_until="2025-06-01"))
        by_typo = tl.Task(name="by_typo", spine=spine, label=is_fraud, features=["card_velocity"],
                          split=tl.Split(test_fraction=0.3), segments=["chanel"])
        by_ref = tl.Label("by_ref", source=disputes, on={"charge_ref": "charge_id"})
        no_key = tl.Task(name="no_key", spine=spine, label=by_ref, features=["card_velocity"],
                         split=tl.Split(test_fraction=0.3))
    ''')
    return root, repo


def store(project) -> tl.FeatureStore:
    root, repo = project
    return tl.FeatureStore(root, repo=str(repo), warehouse=str(root / "wh"), data=str(root / "data"))


def test_an_empty_split_an_unknown_segment_or_a_missing_label_key_is_refused_before_anything_is_written(project, capsys):
    fs = store(project)
    with pytest.raises(DataError) as err:
        fs.run_task("early", labels_as_of=CUTOFF)
    assert "task 'early'" in err.value.message and "leaves the train period empty (0 train rows, 3000 test rows" \
        in err.value.message
    with pytest.raises(DefinitionError, match="task 'by_typo': segment column 'chanel'") as err:
        fs.run_task("by_typo", labels_as_of=CUTOFF)
    assert "closest: channel" in err.value.hint
    with pytest.raises(DataError, match=r"task 'no_key': label 'by_ref': the spine lacks join column\(s\) \['charge_ref'\]"):
        fs.run_task("no_key", labels_as_of=CUTOFF)
    with pytest.raises(RegistryError, match="unknown task 'fraudd'"):
        fs.run_task("fraudd")
    # the CLI maps them to exit codes in its one place: definition and data errors 1, usage errors 2
    root, repo = project
    base = ["--repo", str(repo), "--warehouse", str(root / "wh"), "--data", str(root / "data"), "task", "run"]
    assert main([*base, "early", "--labels-as-of", CUTOFF]) == 1
    assert "leaves the train period empty" in capsys.readouterr().err
    assert main([*base, "by_typo", "--labels-as-of", CUTOFF]) == 1
    assert main([*base, "fraud", "--labels-as-of", "someday"]) == 2
    assert main(base) == 2
    assert not (Path(fs.config.warehouse) / "tasks").exists()


def test_a_run_writes_report_plots_model_and_manifest_and_a_rerun_reproduces_its_metrics(project, spark):
    from pyspark.ml import PipelineModel

    root, repo = project
    result = store(project).run_task("fraud", labels_as_of=CUTOFF)
    folder = Path(result["paths"]["run"])
    assert folder == root / "wh" / "tasks" / "fraud" / "v1" / "20261201T000000Z"
    for name in ("report.md", "pr_curve.png", "calibration.png", "importance.png", "metrics.json",
                 "training_set.manifest.json"):
        assert (folder / name).is_file(), name
    test = result["test"]
    assert 0 < test["positives"] < test["rows"]
    for value in (test["auc_pr"], test["auc_roc"], test["positive_rate"], *[b["observed_rate"] for b in
                                                                           test["calibration"]]):
        assert 0 <= value <= 1
    assert [x["k"] for x in test["lift"]] == [0.05, 0.2]
    assert {s["value"] for s in result["segments"]["channel"]} == {"card_present", "ecommerce"}
    assert "card_velocity__ticket_0" in result["inputs"] and "amount_usd" in result["inputs"]
    assert result["backfilled"] and result["backfilled"][0]["view"] == "merchant_daily"
    assert abs(sum(x["importance"] for x in result["importance"]) - 1) < 1e-9
    manifest = json.loads((folder / "training_set.manifest.json").read_text())
    assert manifest["labels"]["as_of"] == "2026-12-01T00:00:00Z" and manifest["features"] == result["features"]
    report = (folder / "report.md").read_text()
    assert "AUC-PR" in report and "![calibration](calibration.png)" in report and "### By `channel`" in report
    model = PipelineModel.load(str(folder / "model"))
    assert model.stages[-1].numFeatures == len(result["inputs"])
    first = (folder / "metrics.json").read_text()

    # the CLI: list, then the same run again at the same cutoff: nothing backfilled, identical metrics
    base = ["--repo", str(repo), "--warehouse", str(root / "wh"), "--data", str(root / "data")]
    listed = CliRunner().invoke(cli, [*base, "task", "list", "--json"], standalone_mode=False)
    assert listed.exception is None, listed.output
    assert [t["task"] for t in json.loads(listed.output)["tasks"]] == ["by_typo", "early", "fraud", "no_key"]
    rerun = CliRunner().invoke(cli, [*base, "task", "run", "fraud", "--labels-as-of", CUTOFF, "--json"],
                               standalone_mode=False)
    assert rerun.exception is None, rerun.output
    again = json.loads(rerun.output)
    assert again["backfilled"] == [] and again["test"] == test
    assert json.loads((folder / "metrics.json").read_text()) == {**json.loads(first), "backfilled": []}

    # a run that fails once its folder exists (here: no label is known yet at the cutoff) removes what it wrote
    with pytest.raises(DataError, match="task 'fraud': no train row has a known label at the cutoff"):
        store(project).run_task("fraud", labels_as_of="2020-01-01T00:00:00Z")
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]


def test_logistic_regression_trains_scores_and_ranks_its_inputs_by_standardized_coefficients(spark):
    from tally.tasks import run

    rows = [(float(i % 7), float(i % 3), 1 if i % 7 > 4 else 0) for i in range(60)]
    df = spark.createDataFrame(rows, "a double, b double, y int")
    lr = task(model="logistic_regression", params={"maxIter": 20, "regParam": 0.01})
    model = run.fit(df, ["a", "b"], "y", lr)
    scores = [r[run.SCORE] for r in run.score(model, df).select(run.SCORE).collect()]
    assert all(0 <= s <= 1 for s in scores)
    ranked = run.importance(model, ["a", "b"], df)
    assert ranked[0]["input"] == "a" and abs(sum(x["importance"] for x in ranked) - 1) < 1e-9
