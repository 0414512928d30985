"""Feature references beyond views: derived features, key-mapped uses of a view, named feature sets.

Each is checked on values against an independent computation (pandas, or the plain path on a reshaped spine),
and each error names its culprit before any Spark job runs.
"""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
import tally as tl
from click.testing import CliRunner
from tally import registry, store, training
from tally.cli import cli
from tally.errors import DataError, DefinitionError, RegistryError, SpecChangedError, UsageError
from utc import aware, midnight

CARD = tl.Entity("card", keys=["card_id"])
D = dt.date(2026, 4, 10)


def at(day: int, hour: int = 0) -> dt.datetime:
    return midnight(D + dt.timedelta(days=day)) + dt.timedelta(hours=hour)


EVENTS = [("c1", at(-3, 10), 1.0), ("c1", at(-1, 23), 2.0), ("c1", at(0, 0), 4.0), ("c1", at(0, 12), 8.0),
          ("c2", at(-2, 5), 16.0), ("c2", at(0, 3), 32.0), ("c3", at(-9, 5), 64.0)]
EVENT_SCHEMA = "card_id string, created timestamp, amount double"
# payer and payee cards of each spine row; c9 has no events, c3 only old ones
SPINE = [(1, "c1", "c2", at(0, 6), 0), (2, "c2", "c1", at(0, 13), 1), (3, "c1", "c3", at(1, 0), 0),
         (4, "c3", "c9", at(-2, 12), 0), (5, "c2", "c2", at(-1, 1), 1), (6, "c9", "c1", at(-3, 11), 0)]
SPINE_SCHEMA = "id int, card_id string, payee_card_id string, ts timestamp, label int"


@pytest.fixture(scope="module")
def views(spark, tmp_path_factory):
    df = spark.createDataFrame(EVENTS, EVENT_SCHEMA)
    src = tl.Source("charges", dataframe=lambda s: df, timestamp="created")
    aggs = [tl.Aggregation("sum", column="amount", windows=["7d"]), tl.Aggregation("count", windows=["7d"])]
    live = tl.FeatureView("live", entity=CARD, source=src, aggregations=aggs)
    daily = tl.FeatureView("daily", entity=CARD, source=src, aggregations=aggs, accuracy="snapshot", ttl="7d")
    wh = tmp_path_factory.mktemp("wh")
    store.backfill(spark, daily, D - dt.timedelta(days=4), D, warehouse=wh)  # the days the spine reads
    return {"live": live, "daily": daily}, wh


@pytest.fixture()
def spine(spark):
    return spark.createDataFrame(SPINE, SPINE_SCHEMA)


def by_id(df) -> dict[int, dict]:
    return {r["id"]: {k: aware(v) for k, v in r.asDict().items()} for r in df.collect()}


# --- derived features ---------------------------------------------------------------------------------------------

AVG = tl.Derived("avg_amount_7d", "try_divide(live__sum_amount_7d, live__count_7d)",
                 inputs=["live:sum_amount_7d", "live:count_7d"], description="mean ticket over 7 days")


def test_a_derived_ratio_equals_the_ratio_of_the_joined_columns_computed_in_pandas(spark, views, spine):
    refs, wh = views
    alone = training.training_set(spark, spine, [AVG], "ts", views=refs, warehouse=wh)
    # inputs pulled in only by a derived feature are not kept: the list asked for the ratio alone
    assert alone.columns == [*spine.columns, "avg_amount_7d"]
    both = training.training_set(spark, spine, ["live", AVG], "ts", views=refs, warehouse=wh)
    assert both.columns == [*spine.columns, "live__sum_amount_7d", "live__count_7d", "avg_amount_7d"]
    pdf = both.toPandas().set_index("id").sort_index()
    want = (pdf["live__sum_amount_7d"] / pdf["live__count_7d"]).where(pdf["live__count_7d"] > 0)
    got = alone.toPandas().set_index("id").sort_index()["avg_amount_7d"]
    assert got.isna().tolist() == want.isna().tolist() == [False, False, False, True, False, True]
    assert got.dropna().tolist() == pytest.approx(want.dropna().tolist())
    assert pdf["avg_amount_7d"].dropna().tolist() == pytest.approx(want.dropna().tolist())


def test_a_derived_feature_over_another_derived_one_and_two_views_is_computed_in_dependency_order(spark, views, spine):
    refs, wh = views
    gap = tl.Derived("gap_to_daily", "avg_amount_7d - try_divide(daily__sum_amount_7d, daily__count_7d)",
                     inputs=[AVG, "daily"])
    out = by_id(training.training_set(spark, spine, [gap, "live", "daily"], "ts", views=refs, warehouse=wh))
    for r in out.values():
        if r["live__count_7d"] and r["daily__count_7d"]:
            want = r["live__sum_amount_7d"] / r["live__count_7d"] - r["daily__sum_amount_7d"] / r["daily__count_7d"]
            assert r["gap_to_daily"] == pytest.approx(want)
        else:
            assert r["gap_to_daily"] is None
    assert "avg_amount_7d" not in out[1]  # pulled in as an input only
    assert out[1]["gap_to_daily"] == pytest.approx(7 / 3 - 3 / 2)  # c1 at D 06:00: exact vs as of 00:00


def test_a_derived_expression_naming_a_column_outside_its_inputs_is_refused_before_any_job(spark, views, spine):
    refs, wh = views
    sloppy = tl.Derived("sloppy", "live__sum_amount_7d / live__count_7d", inputs=["live:sum_amount_7d"])
    group = "tally-test-derived-check"
    spark.sparkContext.setJobGroup(group, "must stay empty")
    try:
        with pytest.raises(DefinitionError, match=r"derived feature 'sloppy'.*live__count_7d") as err:
            training.training_set(spark, spine, [sloppy], "ts", views=refs, warehouse=wh)
    finally:
        spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)
    assert spark.sparkContext.statusTracker().getJobIdsForGroup(group) == []
    assert "live__sum_amount_7d" in err.value.hint  # what it may use
    # a spine column is not an input either: derived features are functions of versioned features only
    with pytest.raises(DefinitionError, match=r"derived feature 'labelled'.*label"):
        training.training_set(spark, spine, [tl.Derived("labelled", "label + live__count_7d", inputs=["live:count_7d"])],
                              "ts", views=refs, warehouse=wh)
    with pytest.raises(DefinitionError, match="derived feature 'broken'"):
        training.training_set(spark, spine, [tl.Derived("broken", "live__count_7d + (", inputs=["live:count_7d"])],
                              "ts", views=refs, warehouse=wh)


def test_a_derived_feature_with_an_unknown_input_or_a_clashing_name_is_refused_naming_it(spark, views, spine):
    refs, wh = views
    with pytest.raises(RegistryError, match="derived feature 'odd': unknown feature view 'nope'"):
        training.training_set(spark, spine, [tl.Derived("odd", "nope__x", inputs=["nope:x"])], "ts", views=refs)
    with pytest.raises(RegistryError, match="derived feature 'odd': view 'live' has no feature 'count_9d'"):
        training.training_set(spark, spine, [tl.Derived("odd", "1", inputs=["live:count_9d"])], "ts", views=refs)
    twice = tl.Derived("live__count_7d", "live__sum_amount_7d * 2", inputs=["live:sum_amount_7d"])
    with pytest.raises(DefinitionError, match="derived feature 'live__count_7d' clashes with a feature of view 'live'"):
        training.training_set(spark, spine, ["live", twice], "ts", views=refs)
    with pytest.raises(DefinitionError, match="derived feature 'label' clashes with a spine column"):
        training.training_set(spark, spine, [tl.Derived("label", "live__count_7d", inputs=["live:count_7d"])],
                              "ts", views=refs)
    with pytest.raises(DefinitionError, match="derived feature 'x': inputs must name at least one feature"):
        tl.Derived("x", "1", inputs=[])


def test_a_derived_fingerprint_covers_its_expression_and_its_inputs_views():
    live = tl.FeatureView("live", entity=CARD, source=tl.Source("s", path="p", timestamp="t"),
                          aggregations=[tl.Aggregation("count", windows=["7d"])])
    live2 = tl.FeatureView("live", entity=CARD, source=tl.Source("s", path="p", timestamp="t"), version=2,
                           aggregations=[tl.Aggregation("count", windows=["7d", "1d"], name="count")])
    d = tl.Derived("twice", "live__count_7d * 2", inputs=["live:count_7d"])

    def fp(derived, view):
        return training.resolve([derived], {"live": view}).derived[0].fingerprint

    base = fp(d, live)
    assert fp(tl.Derived("twice", "live__count_7d * 2", inputs=["live:count_7d"], description="doc"), live) == base
    assert fp(tl.Derived("twice", "live__count_7d * 3", inputs=["live:count_7d"]), live) != base
    assert fp(d, live2) != base  # same column, another definition of the view


# --- key mapping --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def payee_reference(spark, views):
    """Both views joined plainly on a spine whose payee column was renamed to the key: what a payee use must give."""
    refs, wh = views
    renamed = spark.createDataFrame(SPINE, SPINE_SCHEMA).drop("card_id").withColumnRenamed("payee_card_id", "card_id")
    return by_id(training.training_set(spark, renamed, ["live", "daily"], "ts", views=refs, warehouse=wh))


@pytest.mark.parametrize("name", ["live", "daily"])
def test_a_key_mapped_use_equals_a_plain_use_on_a_spine_whose_key_column_was_renamed(spark, views, spine, name,
                                                                                     payee_reference):
    refs, wh = views
    view = refs[name]
    payee = tl.Use(view, keys={"card_id": "payee_card_id"}, prefix="payee")
    out = training.training_set(spark, spine, [view, payee], "ts", views=refs, warehouse=wh)
    assert out.columns == [*spine.columns, f"{name}__sum_amount_7d", f"{name}__count_7d",
                           f"payee__{name}__sum_amount_7d", f"payee__{name}__count_7d"]
    got = by_id(out)
    want = {r[0]: {"card_id": r[1], "payee_card_id": r[2], "ts": r[3], "label": r[4]} for r in SPINE}
    for i, r in got.items():
        assert {c: r[c] for c in spine.columns if c != "id"} == want[i]  # the spine is intact
        for f in ("sum_amount_7d", "count_7d"):
            assert r[f"payee__{name}__{f}"] == payee_reference[i][f"{name}__{f}"]
    # the plain use reads card_id: where payer and payee are one card, the two uses agree, elsewhere they differ
    assert got[5][f"payee__{name}__count_7d"] == got[5][f"{name}__count_7d"] == 1
    assert (got[1][f"{name}__count_7d"], got[1][f"payee__{name}__count_7d"]) == ((3, 2) if name == "live" else (2, 1))


def test_a_mapped_use_alone_keeps_plain_names_and_a_derived_feature_may_compare_two_uses(spark, views, spine,
                                                                                        payee_reference):
    refs, _ = views
    alone = by_id(training.training_set(spark, spine, [tl.Use("live", keys={"card_id": "payee_card_id"})], "ts",
                                        views=refs))
    payee = tl.Use("live:count_7d", keys={"card_id": "payee_card_id"}, prefix="payee")
    gap = tl.Derived("count_gap", "live__count_7d - payee__live__count_7d", inputs=["live:count_7d", payee])
    gaps = by_id(training.training_set(spark, spine, [gap, "live:count_7d"], "ts", views=refs))
    for i, r in alone.items():
        assert set(r) == {"id", "card_id", "payee_card_id", "ts", "label", "live__sum_amount_7d", "live__count_7d"}
        assert (r["live__sum_amount_7d"], r["live__count_7d"]) == \
            (payee_reference[i]["live__sum_amount_7d"], payee_reference[i]["live__count_7d"])
        assert set(gaps[i]) == {"id", "card_id", "payee_card_id", "ts", "label", "live__count_7d", "count_gap"}
        assert gaps[i]["count_gap"] == gaps[i]["live__count_7d"] - payee_reference[i]["live__count_7d"]
    assert [gaps[i]["count_gap"] for i in sorted(gaps)] == [1, -2, 4, 0, 0, -1]


def test_key_mapping_errors_name_the_use_and_the_column(spark, views, spine):
    refs, wh = views
    with pytest.raises(DataError, match=r"view 'live' \(prefix 'payee'\): the spine lacks column\(s\) 'payer_id'"):
        training.training_set(spark, spine, [tl.Use("live", keys={"card_id": "payer_id"}, prefix="payee")], "ts",
                              views=refs)
    with pytest.raises(UsageError, match="two uses of view 'live' with prefix 'p' read different keys"):
        training.training_set(spark, spine, [tl.Use("live", prefix="p"),
                                             tl.Use("live", keys={"card_id": "payee_card_id"}, prefix="p")],
                              "ts", views=refs)
    with pytest.raises(UsageError, match="two uses of view 'live' with no prefix"):
        training.training_set(spark, spine, ["live", tl.Use("live", keys={"card_id": "payee_card_id"})], "ts",
                              views=refs)
    with pytest.raises(DefinitionError, match=r"keys maps \['merchant_id'\], which are not key columns of entity 'card'"):
        training.training_set(spark, spine, [tl.Use("live", keys={"merchant_id": "payee_card_id"}, prefix="m")],
                              "ts", views=refs)
    with pytest.raises(DefinitionError, match="prefix 'a__b' may not contain '__'"):
        tl.Use("live", prefix="a__b")
    wrong = spine.withColumn("payee_card_id", spine["id"])
    with pytest.raises(DataError, match="spine key 'payee_card_id' is int"):
        training.training_set(spark, wrong, [tl.Use("daily", keys={"card_id": "payee_card_id"}, prefix="p")], "ts",
                              views=refs, warehouse=wh)


# --- feature sets -------------------------------------------------------------------------------------------------

def test_a_feature_set_gives_the_same_frame_as_its_explicit_list(spark, views, spine):
    refs, wh = views
    payee = tl.Use("daily:count_7d", keys={"card_id": "payee_card_id"}, prefix="payee")
    listed = ["live:count_7d", "daily", payee, AVG]
    fraud = tl.FeatureSet("fraud", features=listed, version=3, description="card risk")
    explicit = training.training_set(spark, spine, listed, "ts", views=refs, warehouse=wh)
    named, built = training.build(spark, spine, ["fraud"], "ts", views={**refs, "fraud": fraud}, warehouse=wh)
    assert named.columns == explicit.columns == [*spine.columns, "live__count_7d", "daily__sum_amount_7d",
                                                 "daily__count_7d", "payee__daily__count_7d", "avg_amount_7d"]
    assert by_id(named) == by_id(explicit)
    [entry] = built["feature_sets"]
    assert (entry["name"], entry["version"]) == ("fraud", 3)
    assert entry["fingerprint"] == training.resolve([fraud], refs).feature_sets[0]["fingerprint"]
    edited = tl.FeatureSet("fraud", features=listed[:-1], version=3)
    assert training.resolve([edited], refs).feature_sets[0]["fingerprint"] != entry["fingerprint"]
    with pytest.raises(RegistryError, match="'fraud' is a feature set, not a view: it takes no ':feature'"):
        training.resolve(["fraud:count_7d"], {**refs, "fraud": fraud})
    loop = tl.FeatureSet("loop", features=["live", "loop"])
    with pytest.raises(DefinitionError, match="feature set 'loop' includes itself"):
        training.resolve(["loop"], {**refs, "loop": loop})


def _repo(tmp_path, set_features: str, *, clash: bool = False):
    repo = tmp_path / "features"
    repo.mkdir(exist_ok=True)
    data = tmp_path / "charges"
    (repo / "views.py").write_text(
        "import tally as tl\n"
        f"src = tl.Source('charges', path={str(data)!r}, timestamp='created')\n"
        "card = tl.Entity('card', keys=['card_id'])\n"
        "live = tl.FeatureView('live', entity=card, source=src,\n"
        "    aggregations=[tl.Aggregation('count', windows=['1d']), tl.Aggregation('sum', column='amount', windows=['1d'])])\n")
    (repo / "sets.py").write_text(  # string references: feature files need not import each other
        "import tally as tl\n"
        "avg = tl.Derived('avg_1d', 'try_divide(live__sum_amount_1d, live__count_1d)',\n"
        "                 inputs=['live:sum_amount_1d', 'live:count_1d'])\n"
        f"fraud = tl.FeatureSet({'live' if clash else 'fraud'!r}, features={set_features}, version=1)\n")
    return repo, data


def test_feature_sets_and_derived_features_are_discovered_and_share_the_views_namespace(tmp_path):
    repo, _ = _repo(tmp_path, "['live:count_1d', 'avg_1d']")
    loaded = registry.load(repo)
    assert set(loaded.feature_sets) == {"fraud"} and set(loaded.derived) == {"avg_1d"}
    assert set(loaded.refs) == {"live", "fraud", "avg_1d"}
    resolved = training.resolve(["fraud"], loaded)
    assert resolved.output == ("live__count_1d", "avg_1d")
    # `tally list` shows them beside the views, as text and as JSON
    r = CliRunner().invoke(cli, ["--repo", str(repo), "list", "--json"])
    doc = json.loads(r.output)
    assert [(s["feature_set"], s["version"], s["references"]) for s in doc["feature_sets"]] == [
        ("fraud", 1, ["live:count_1d", "avg_1d"])]
    assert [(d["derived"], d["inputs"]) for d in doc["derived"]] == [("avg_1d", ["live:sum_amount_1d", "live:count_1d"])]
    text = CliRunner().invoke(cli, ["--repo", str(repo), "list"]).output
    assert re.search(r"^fraud +v1 +set +2 refs", text, re.M) and re.search(r"^avg_1d +v1 +derived +2 inputs", text, re.M)
    _repo(tmp_path, "['live']", clash=True)
    with pytest.raises(RegistryError, match=r"the feature set 'live' \(.*sets.py\) has the name of the view 'live'"):
        registry.load(repo)
    _repo(tmp_path, "['live:count_99d']")  # references resolve when the repository loads, naming the file
    with pytest.raises(RegistryError, match=r"sets.py: feature set 'fraud': view 'live' has no feature 'count_99d'"):
        registry.load(repo)


def _cli_project(spark, tmp_path):
    """A repository with the set `fraud` v1, its events and a spine on disk, and a CLI call in that project."""
    repo, data = _repo(tmp_path, "['live:count_1d', 'avg_1d']")
    spark.createDataFrame(EVENTS, EVENT_SCHEMA).write.parquet(str(data))
    spine_path = tmp_path / "spine"
    spark.createDataFrame(SPINE, SPINE_SCHEMA).write.parquet(str(spine_path))
    base = ["--repo", str(repo), "--warehouse", str(tmp_path / "wh")]
    return repo, spine_path, lambda *args: CliRunner().invoke(cli, [*base, *args], standalone_mode=False)


def test_cli_names_a_feature_set_and_a_rebuild_refuses_a_set_changed_under_the_same_version(spark, tmp_path):
    repo, spine_path, invoke = _cli_project(spark, tmp_path)

    r = invoke("training-set", "--spine", str(spine_path), "--timestamp", "ts", "--features", "fraud",
               "--out", str(tmp_path / "train"))
    assert r.exception is None, r.output
    manifest = json.loads((tmp_path / "train.manifest.json").read_text())
    assert manifest["features"] == ["fraud"]
    [entry] = manifest["feature_sets"]
    assert (entry["name"], entry["version"]) == ("fraud", 1) and len(entry["fingerprint"]) == 16
    assert [d["name"] for d in manifest["derived"]] == ["avg_1d"]
    assert spark.read.parquet(str(tmp_path / "train")).columns[-2:] == ["live__count_1d", "avg_1d"]
    r = invoke("training-set", "--from-manifest", str(tmp_path / "train.manifest.json"), "--out", str(tmp_path / "same"))
    assert r.exception is None, r.output  # the set resolves to what it did: the identical rows
    _repo(tmp_path, "['live', 'avg_1d']")  # the set now takes every feature of live, still as version 1
    r = invoke("training-set", "--from-manifest", str(tmp_path / "train.manifest.json"), "--out", str(tmp_path / "again"))
    assert isinstance(r.exception, SpecChangedError), r.output
    assert "feature set 'fraud' v1 changed since the manifest was built" in str(r.exception)
    assert "bump version=" in str(r.exception) and not (tmp_path / "again").exists()


def test_plan_and_the_next_training_set_refuse_a_feature_set_changed_under_a_version_a_training_set_used(spark, tmp_path):
    repo, spine_path, invoke = _cli_project(spark, tmp_path)

    def build(out):
        return invoke("training-set", "--spine", str(spine_path), "--timestamp", "ts", "--features", "fraud",
                      "--out", str(tmp_path / out))

    def references():
        r = invoke("plan", "--json")
        doc = json.JSONDecoder().raw_decode(r.output)[0]  # the plan; an error may follow it
        return {(x["kind"], x["name"], x["version"]): x["status"] for x in doc["references"]}, r.exception

    assert references() == ({("feature set", "fraud", 1): "new", ("derived feature", "avg_1d", 1): "new"}, None)
    assert build("train").exception is None
    assert references() == ({("feature set", "fraud", 1): "unchanged", ("derived feature", "avg_1d", 1): "unchanged"}, None)
    _repo(tmp_path, "['live', 'avg_1d']")  # the list changes, still as version 1
    statuses, error = references()
    assert statuses[("feature set", "fraud", 1)] == "spec_changed" and isinstance(error, SpecChangedError)
    assert "feature set 'fraud' v1 changed since a training set used it" in str(error)
    r = build("train2")
    assert isinstance(r.exception, SpecChangedError) and "bump version= of 'fraud'" in r.exception.hint
    assert not (tmp_path / "train2").exists()
    (repo / "sets.py").write_text((repo / "sets.py").read_text().replace("version=1", "version=2"))
    assert build("train3").exception is None  # a new version names the new content
    assert references()[0][("feature set", "fraud", 2)] == "unchanged"
