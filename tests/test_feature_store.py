"""`tl.FeatureStore` and tally.toml as a user meets them: a project folder with its own parquet files, found from a
subfolder; spines as pandas and Spark DataFrames, parquet and Delta paths, giving the same rows; configuration
typos refused; the CLI is the same object underneath."""

from __future__ import annotations

import datetime as dt
import json
import textwrap

import oracle
import pandas as pd
import pytest
import tally as tl
from click.testing import CliRunner
from tally import config
from tally.cli import cli, main
from tally.errors import DataError, UsageError
from utc import UTC, aware, midnight

D = dt.date(2026, 4, 10)
EVENTS = [("c1", midnight(D) - dt.timedelta(days=3, hours=-10), 1.0), ("c1", midnight(D) - dt.timedelta(microseconds=1), 2.0),
          ("c1", midnight(D) + dt.timedelta(hours=12), 8.0), ("c2", midnight(D) - dt.timedelta(days=20), 16.0),
          ("c3", midnight(D) - dt.timedelta(days=2, hours=1), 32.0)]
REPO = textwrap.dedent('''
    import tally as tl

    card = tl.Entity("card", keys=["card_id"])
    charges = tl.Source("charges", path="charges", format="parquet", timestamp="created")
    card_live = tl.FeatureView(
        "card_live", entity=card, source=charges,
        aggregations=[tl.Aggregation("sum", column="amount", windows=["7d"]), tl.Aggregation("count", windows=["7d"])])
    card_daily = tl.FeatureView(
        "card_daily", entity=card, source=charges, accuracy="snapshot", ttl="30d",
        aggregations=[tl.Aggregation("sum", column="amount", windows=["7d"])])
''')
# (id, card, at, label): at the events, between them, in another zone's afternoon, for a card with no events
SPINE = [(1, "c1", midnight(D) + dt.timedelta(hours=12), 1), (2, "c1", midnight(D) - dt.timedelta(microseconds=1), 0),
         (3, "c2", midnight(D) + dt.timedelta(days=1, hours=3), 0),
         (4, "c3", dt.datetime(2026, 4, 9, 15, 30, tzinfo=dt.timezone(dt.timedelta(hours=-7))), 1), (5, "c9", midnight(D), 0)]


@pytest.fixture(scope="module")
def project(spark, tmp_path_factory):
    """A tally project as a user lays it out: tally.toml, features/, data/charges (parquet), and a subfolder."""
    root = tmp_path_factory.mktemp("project")
    (root / "tally.toml").write_text('warehouse = "wh"\nrepo = "features"\ndata = "data"\n')
    (root / "features").mkdir()
    (root / "features" / "cards.py").write_text(REPO)
    spark.createDataFrame(EVENTS, "card_id string, created timestamp, amount double").write.parquet(str(root / "data" / "charges"))
    (root / "notebooks" / "2026").mkdir(parents=True)
    return root


def want(rows) -> dict[int, tuple]:
    """The oracle's card_live values (sum 7d, count 7d) at each spine row's instant, by id."""
    view = tl.FeatureView("card_live", entity=tl.Entity("card", keys=["card_id"]),
                          source=tl.Source("charges", path="charges", timestamp="created"),
                          aggregations=[tl.Aggregation("sum", column="amount", windows=["7d"]),
                                        tl.Aggregation("count", windows=["7d"])])
    events = [{"card_id": k, "ts": oracle.micros(t), "amount": a} for k, t, a in EVENTS]
    got = oracle.features(view, events, [((r[1],), oracle.micros(r[2])) for r in rows])
    return {r[0]: (g["sum_amount_7d"], g["count_7d"]) for r, g in zip(rows, got)}


def values(df) -> dict[int, tuple]:
    return {r["id"]: (r["card_live__sum_amount_7d"], r["card_live__count_7d"]) for r in df.collect()}


def test_the_project_is_found_from_a_subfolder_and_its_paths_are_its_own(project, monkeypatch):
    monkeypatch.chdir(project / "notebooks" / "2026")
    for key in ("WAREHOUSE", "REPO", "DATA", "MASTER", "ONLINE_STORE"):
        monkeypatch.delenv(f"TALLY_{key}", raising=False)
    cfg = config.load()
    assert (cfg.warehouse, cfg.repo, cfg.data) == (str(project / "wh"), str(project / "features"), str(project / "data"))
    assert cfg.origins["warehouse"] == str(project / "tally.toml")
    assert cfg.online_store == f"sqlite:{project / 'wh' / 'online' / 'tally.db'}"
    # the environment and flags still win, relative to where the user stands
    monkeypatch.setenv("TALLY_WAREHOUSE", "/srv/wh")
    assert config.load().warehouse == "/srv/wh" and config.load(warehouse="mine").warehouse == "mine"


def test_a_typo_in_tally_toml_is_refused_naming_the_file_and_the_key(tmp_path, monkeypatch):
    (tmp_path / "tally.toml").write_text('warehose = "wh"\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=r"tally.toml: unknown setting 'warehose' \(did you mean 'warehouse'\?\)"):
        config.load()
    (tmp_path / "tally.toml").write_text('spark = "fast"\n')
    with pytest.raises(UsageError, match="'spark' must be a table"):
        config.load()
    (tmp_path / "tally.toml").unlink()
    (tmp_path / "pyproject.toml").write_text('[tool.tally]\nrepos = "features"\n')
    with pytest.raises(UsageError, match=r"unknown setting 'repos' in \[tool.tally\]"):
        config.load()
    assert main(["config"]) == 2  # the CLI says so too, as a usage error


def test_a_folder_without_a_project_uses_the_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TALLY_WAREHOUSE", raising=False)
    assert config.project_dir() is None
    assert config.load().warehouse == "warehouse" and config.load().origins["warehouse"] == "default"


def test_spines_as_users_have_them_give_the_same_rows(spark, project, tmp_path):
    fs = tl.FeatureStore(project / "notebooks")  # a folder inside the project: the tally.toml above is found
    assert [v.name for v in fs.list()] == ["card_daily", "card_live"]
    rows = SPINE
    expected = want(rows)
    as_spark = spark.createDataFrame(rows, "id int, card_id string, at timestamp, label int")
    pdf = pd.DataFrame(rows, columns=["id", "card_id", "at", "label"])
    pdf["at"] = pd.to_datetime(pdf["at"], utc=True)  # aware, in UTC
    naive = pdf.assign(at=pdf["at"].dt.tz_localize(None))  # naive: read as UTC
    kolkata = pdf.assign(at=pdf["at"].dt.tz_convert("Asia/Kolkata"))  # the same instants in another zone
    as_spark.write.parquet(str(tmp_path / "spine.parquet"))
    as_spark.write.format("delta").save(str(tmp_path / "spine_delta"))
    for spine in (as_spark, pdf, naive, kolkata, tmp_path / "spine.parquet", str(tmp_path / "spine_delta")):
        df = fs.training_set(spine, ["card_live"], timestamp="at")
        assert values(df) == expected, type(spine)
        assert {r["id"]: r["label"] for r in df.collect()} == {r[0]: r[3] for r in rows}  # labels are kept
        assert {r["id"]: aware(r["at"]) for r in df.collect()} == {r[0]: r[2].astimezone(UTC) for r in rows}


def test_the_store_backfills_joins_snapshots_and_describes(spark, project):
    with tl.FeatureStore(project) as fs:
        done = fs.backfill(["card_daily"], "2026-04-05", "2026-04-11", step_days=7)
        assert [r["status"] for r in done["card_daily"]] == ["written"]
        assert fs.describe("card_daily")["tables"][0]["backfilled"] == {"start": "2026-04-05", "end": "2026-04-11", "days": 7}
        assert {i.view: i.status for i in fs.plan()} == {"card_daily": "unchanged", "card_live": "new_view"}
        df = fs.training_set(pd.DataFrame({"id": [1], "card_id": ["c1"], "at": [pd.Timestamp("2026-04-10 15:00", tz="UTC")]}),
                             ["card_daily:sum_amount_7d"], timestamp="at")
        # the snapshot of 2026-04-09 (as of 04-10 00:00): 1.0 (04-07 10:00) and 2.0 (04-09 23:59:59.999999)
        assert df.collect()[0]["card_daily__sum_amount_7d"] == 3.0
        assert fs.read_features("card_daily").count() > 0


def test_bad_spines_are_refused_by_name(spark, project, tmp_path):
    fs = tl.FeatureStore(project)
    with pytest.raises(DataError, match="does not exist"):
        fs.training_set(tmp_path / "nowhere.parquet", ["card_live"], timestamp="at")
    with pytest.raises(DataError, match="spine column 'x' mixes Python types"):
        fs.training_set(pd.DataFrame({"card_id": ["c1", "c2"], "at": [pd.Timestamp("2026-04-10", tz="UTC")] * 2,
                                      "x": [1, "a"]}), ["card_live"], timestamp="at")
    with pytest.raises(DataError, match="empty pandas DataFrame"):
        fs.training_set(pd.DataFrame({"card_id": [], "at": []}), ["card_live"], timestamp="at")
    with pytest.raises(UsageError, match="not list"):
        fs.training_set([("c1", "2026-04-10")], ["card_live"], timestamp="at")


def test_the_cli_runs_on_the_same_store_and_detects_a_delta_spine(spark, project, tmp_path, monkeypatch):
    monkeypatch.chdir(project / "notebooks")
    spark.createDataFrame(SPINE, "id int, card_id string, at timestamp, label int").write.format("delta").save(
        str(tmp_path / "spine"))
    r = CliRunner().invoke(cli, ["training-set", "--spine", str(tmp_path / "spine"), "--timestamp", "at",
                                 "--features", "card_live", "--out", str(tmp_path / "train")])
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "train.manifest.json").read_text())
    assert manifest["spine"]["format"] == "delta"
    assert values(spark.read.parquet(str(tmp_path / "train"))) == want(SPINE)


def test_repository_files_import_each_other_and_may_not_shadow_installed_modules(tmp_path):
    from tally import registry
    from tally.errors import RegistryError

    repo = tmp_path / "features"
    repo.mkdir()
    (repo / "base.py").write_text('import tally as tl\ncard = tl.Entity("card", keys=["card_id"])\n'
                                  'charges = tl.Source("charges", path="charges", timestamp="created")\n')
    (repo / "cards.py").write_text('import tally as tl\nfrom base import card, charges\n'
                                   'card_live = tl.FeatureView("card_live", entity=card, source=charges,\n'
                                   '    aggregations=[tl.Aggregation("count", windows=["1h"])])\n')
    for _ in range(2):  # a second load (another notebook cell) reads the files again
        loaded = registry.load(repo)
        assert sorted(loaded.views) == ["card_live"] and sorted(loaded.entities) == ["card"]
    (repo / "json.py").write_text("x = 1\n")
    with pytest.raises(RegistryError, match=r"json.py has the name of the module 'json'"):
        registry.load(repo)
