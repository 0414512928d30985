"""Labels joined onto a spine by the rule features follow: a label row counts only once known (available_at),
as of a training cutoff, with an optional performance window (docs/labels.md).

Values are checked against a brute-force oracle in plain Python on seeded random data with rows placed exactly
on the boundaries (known at the cutoff, known at t + within); errors name the label, source or column before any
row is written; the CLI records labels in the manifest and a rebuild reproduces them or refuses a changed label.
"""

from __future__ import annotations

import datetime as dt
import json
import random

import pytest
import tally as tl
from click.testing import CliRunner
from tally import training
from tally.cli import cli
from tally.errors import DataError, DefinitionError, SpecChangedError, UsageError
from utc import aware, midnight

CARD = tl.Entity("card", keys=["card_id"])
D = dt.date(2026, 5, 1)
CUTOFF = midnight(D + dt.timedelta(days=40))
DAY_US = 86_400_000_000
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def us(t: dt.datetime) -> int:
    return (t - EPOCH) // dt.timedelta(microseconds=1)


def _data(seed: int = 11):
    """Charges over 30 days and their disputes: 0-3 per charge, filed up to 60 days later, a few exactly at the
    cutoff or at the end of a charge's 30-day window, two at the same microsecond."""
    rng = random.Random(seed)
    charges, disputes = [], []
    for i in range(60):
        t = midnight(D) + dt.timedelta(microseconds=rng.randrange(30 * DAY_US))
        charges.append((f"ch{i}", i, f"card{i % 7}", t, float(rng.randint(1, 500))))
        for j in range(rng.choice([0, 0, 1, 1, 2, 3])):
            known = t + dt.timedelta(microseconds=rng.randrange(60 * DAY_US))
            if j == 0 and i % 9 == 0:
                known = CUTOFF
            elif j == 0 and i % 11 == 0:
                known = t + dt.timedelta(days=30)
            disputes.append((f"ch{i}", i, t, known, rng.choice(["fraudulent", "other"]), float(rng.randint(1, 99))))
    t = midnight(D) + dt.timedelta(hours=1)  # two disputes known at one microsecond: `last` takes the larger value
    charges.append(("tie", 60, "card0", t, 10.0))
    disputes += [("tie", 60, t, t + dt.timedelta(days=2), "fraudulent", 5.0), ("tie", 60, t, t + dt.timedelta(days=2), "other", 6.0)]
    return charges, disputes


CHARGE_SCHEMA = "charge_id string, charge_no int, card_id string, created timestamp, amount double"
DISPUTE_SCHEMA = "charge_id string, charge_no int, charge_created timestamp, dispute_created timestamp, reason string, " \
                 "amount double"


def _labels(disputes_source: tl.Source) -> list[tl.Label]:
    return [
        tl.Label("is_fraud", source=disputes_source, on=["charge_id"], filter="reason = 'fraudulent'", default=0,
                 within="30d"),
        tl.Label("n_disputes", source=disputes_source, on={"charge_no": "charge_no"}, reduce="count"),
        tl.Label("last_reason", source=disputes_source, on=["charge_id"], value="reason", reduce="last"),
        tl.Label("disputed_amount", source=disputes_source, on=["charge_id"], value="amount", reduce="sum",
                 within="45d"),
    ]


def _oracle(charges, disputes, cutoff: dt.datetime) -> dict[str, dict]:
    out = {}
    for cid, _, _, t, _ in charges:
        mine = [d for d in disputes if d[0] == cid and us(d[3]) < us(cutoff)]
        fraud = [d for d in mine if d[4] == "fraudulent" and us(d[3]) < us(t) + 30 * DAY_US]
        amount = [d[5] for d in mine if us(d[3]) < us(t) + 45 * DAY_US]
        last = max(((us(d[3]), d[4]) for d in mine), default=(None, None))[1]
        out[cid] = {
            "is_fraud": None if us(t) + 30 * DAY_US > us(cutoff) else int(bool(fraud)),
            "n_disputes": len(mine),
            "last_reason": last,
            "disputed_amount": None if us(t) + 45 * DAY_US > us(cutoff) else float(sum(amount)),
        }
    return out


@pytest.fixture(scope="module")
def world(spark, tmp_path_factory):
    charges, disputes = _data()
    root = tmp_path_factory.mktemp("labels")
    spark.createDataFrame(disputes, DISPUTE_SCHEMA).write.parquet(str(root / "disputes"))
    src = tl.Source("disputes", path=str(root / "disputes"), timestamp="charge_created", available_at="dispute_created")
    events = spark.createDataFrame(charges, CHARGE_SCHEMA)
    view = tl.FeatureView("spend", entity=CARD, source=tl.Source("charges", dataframe=lambda s: events, timestamp="created"),
                          aggregations=[tl.Aggregation("count", windows=["7d"])])
    return charges, disputes, src, view, root


def test_labels_equal_a_brute_force_oracle_known_by_the_cutoff_within_their_windows(spark, world):
    charges, disputes, src, view, root = world
    spine = spark.createDataFrame(charges, CHARGE_SCHEMA)
    for cutoff in (CUTOFF, midnight(D + dt.timedelta(days=75))):
        out, built = training.build(spark, spine, [view], "created", labels=_labels(src), labels_as_of=cutoff,
                                    warehouse=root / "wh", pin_sources=True)
        assert out.columns == [*spine.columns, "spend__count_7d", "is_fraud", "n_disputes", "last_reason",
                               "disputed_amount"]
        got = {r["charge_id"]: r.asDict() for r in out.collect()}
        want = _oracle(charges, disputes, cutoff)
        assert len(got) == len(charges)
        mismatches = [(cid, name, got[cid][name], w) for cid, row in want.items() for name, w in row.items()
                      if got[cid][name] != w]
        assert not mismatches, mismatches[:5]
        assert built["labels"]["as_of"] == cutoff.isoformat().replace("+00:00", "Z")
        assert [e["name"] for e in built["labels"]["labels"]] == ["is_fraud", "n_disputes", "last_reason",
                                                                  "disputed_amount"]
        assert set(built["sources"]["disputes"]) == {"rows", "hash"}  # a parquet label source is pinned by content
    # the boundaries were really exercised: rows known at the cutoff, open windows, mature negatives and positives
    early = _oracle(charges, disputes, CUTOFF)
    assert any(d[3] == CUTOFF for d in disputes)
    assert {r["is_fraud"] for r in early.values()} == {None, 0, 1}
    assert got["tie"]["last_reason"] == "other"  # equal available_at: the larger value, not row order


def test_a_feature_never_sees_a_label_and_labels_are_kept_out_of_features_by_available_at(spark, world):
    """The same disputes source as a feature (count of disputes known before each charge) sees only what was known
    at the charge, while the label sees what was known at the cutoff: the two agree only where they should."""
    charges, disputes, src, _, root = world
    spine = spark.createDataFrame(charges, CHARGE_SCHEMA)
    charge = tl.Entity("charge", keys=["charge_id"])
    known = tl.FeatureView("known_disputes", entity=charge, source=src,
                           aggregations=[tl.Aggregation("count", windows=[None])])
    label = tl.Label("n", source=src, on=["charge_id"], reduce="count")
    rows = training.training_set(spark, spine, [known], "created", labels=[label], labels_as_of=CUTOFF,
                                 warehouse=root / "wh").collect()
    for r in rows:
        t = us(aware(r["created"]))
        assert r["known_disputes__count_lifetime"] == sum(1 for d in disputes if d[0] == r["charge_id"] and us(d[3]) < t)
        assert r["n"] == sum(1 for d in disputes if d[0] == r["charge_id"] and us(d[3]) < us(CUTOFF))


def test_label_mistakes_are_refused_naming_the_label_before_any_row_is_written(spark, world):
    charges, _, src, view, root = world
    spine = spark.createDataFrame(charges, CHARGE_SCHEMA)
    no_avail = tl.Source("disputes2", path=str(root / "disputes"), timestamp="charge_created")
    with pytest.raises(DefinitionError, match="label 'y': source 'disputes2' declares no available_at"):
        tl.Label("y", source=no_avail, on=["charge_id"])
    with pytest.raises(DefinitionError, match="label 'y': unknown reduce 'mean'"):
        tl.Label("y", source=src, on=["charge_id"], reduce="mean")
    with pytest.raises(DefinitionError, match="label 'y': on= must list the join columns"):
        tl.Label("y", source=src, on="charge_id")
    with pytest.raises(DefinitionError, match="label 'y': within: '30 days' is not a duration"):
        tl.Label("y", source=src, on=["charge_id"], within="30 days")

    def build(labels, **kw):
        return training.build(spark, spine, [view], "created", labels=labels, warehouse=root / "wh", **kw)

    good = tl.Label("y", source=src, on=["charge_id"])
    with pytest.raises(UsageError, match="labels_as_of=.* is a naive datetime"):
        build([good], labels_as_of=dt.datetime(2026, 6, 1))
    with pytest.raises(UsageError, match="labels_as_of='June' is not an instant"):
        build([good], labels_as_of="June")
    with pytest.raises(UsageError, match="unknown label 'is_fraud'"):
        build(["is_fraud"], labels_as_of=CUTOFF)
    with pytest.raises(UsageError, match="labels_as_of is set but no labels"):
        build([], labels_as_of=CUTOFF)
    with pytest.raises(DataError, match=r"label 'z': the spine lacks join column\(s\) \['payment_id'\]"):
        build([tl.Label("z", source=src, on={"payment_id": "charge_id"})], labels_as_of=CUTOFF)
    with pytest.raises(UsageError, match="label 'amount' clashes with a spine column"):
        build([tl.Label("amount", source=src, on=["charge_id"])], labels_as_of=CUTOFF)
    with pytest.raises(UsageError, match="label 'spend__count_7d' clashes with a feature column"):
        build([tl.Label("spend__count_7d", source=src, on=["charge_id"])], labels_as_of=CUTOFF)
    with pytest.raises(DataError, match=r"label 'z': source 'disputes' has no column\(s\) \['payment'\]"):
        build([tl.Label("z", source=src, on={"charge_id": "payment"})], labels_as_of=CUTOFF)
    with pytest.raises(DefinitionError, match="label 'z': filter= \"status = 'lost'\" does not work on source 'disputes'"):
        build([tl.Label("z", source=src, on=["charge_id"], filter="status = 'lost'")], labels_as_of=CUTOFF)


def test_a_label_source_with_a_null_available_at_fails_its_contract_naming_the_label(spark, tmp_path, world):
    charges, _, _, view, _ = world
    t = midnight(D)
    spark.createDataFrame([("ch1", 1, t, None, "fraudulent", 1.0), ("ch2", 2, t, t, "other", 1.0)],
                          DISPUTE_SCHEMA).write.parquet(str(tmp_path / "d"))
    src = tl.Source("bad_disputes", path=str(tmp_path / "d"), timestamp="charge_created", available_at="dispute_created")
    spine = spark.createDataFrame(charges, CHARGE_SCHEMA)
    with pytest.raises(DataError, match="source 'bad_disputes' for label 'y' fails its contract") as err:
        training.build(spark, spine, [view], "created", labels=[tl.Label("y", source=src, on=["charge_id"])],
                       labels_as_of=CUTOFF, warehouse=tmp_path / "wh")
    assert "dispute_created" in str(err.value)


def _repo(tmp_path, label_filter: str):
    repo = tmp_path / "features"
    repo.mkdir(exist_ok=True)
    (repo / "views.py").write_text(
        "import tally as tl\n"
        f"charges = tl.Source('charges', path={str(tmp_path / 'charges')!r}, timestamp='created')\n"
        f"disputes = tl.Source('disputes', path={str(tmp_path / 'disputes')!r}, format='delta',\n"
        "                      timestamp='charge_created', available_at='dispute_created')\n"
        "card = tl.Entity('card', keys=['card_id'])\n"
        "spend = tl.FeatureView('spend', entity=card, source=charges, aggregations=[tl.Aggregation('count', windows=['7d'])])\n"
        f"is_fraud = tl.Label('is_fraud', source=disputes, on=['charge_id'], filter={label_filter!r}, default=0,\n"
        "                    within='30d')\n")
    return repo


def test_cli_joins_a_repository_label_records_it_and_a_rebuild_reproduces_or_refuses_a_changed_label(spark, tmp_path):
    charges, disputes = _data(seed=5)
    spark.createDataFrame(charges, CHARGE_SCHEMA).write.parquet(str(tmp_path / "charges"))
    spark.createDataFrame(disputes, DISPUTE_SCHEMA).write.format("delta").save(str(tmp_path / "disputes"))
    repo = _repo(tmp_path, "reason = 'fraudulent'")
    base = ["--repo", str(repo), "--warehouse", str(tmp_path / "wh")]

    def invoke(*args):
        return CliRunner().invoke(cli, [*base, *args], standalone_mode=False)

    listed = json.loads(invoke("list", "--json").output)["labels"]
    assert listed == [{"label": "is_fraud", "version": 1, "source": "disputes", "on": {"charge_id": "charge_id"},
                       "within": "30d", "description": ""}]
    r = invoke("training-set", "--spine", str(tmp_path / "charges"), "--timestamp", "created", "--features", "spend",
               "--label", "is_fraud", "--labels-as-of", "2026-06-10", "--out", str(tmp_path / "train"), "--json")
    assert r.exception is None, r.output
    summary = json.loads(r.output)
    want = _oracle(charges, disputes, CUTOFF)
    immature = sum(1 for w in want.values() if w["is_fraud"] is None)
    assert summary["labels"] == {"as_of": "2026-06-10T00:00:00Z", "labels": [
        {"name": "is_fraud", "version": 1, "source": "disputes", "null_rows": immature}]}
    assert 0 < immature < len(charges)
    got = {row["charge_id"]: row["is_fraud"] for row in spark.read.parquet(str(tmp_path / "train")).collect()}
    assert got == {cid: w["is_fraud"] for cid, w in want.items()}
    manifest = json.loads((tmp_path / "train.manifest.json").read_text())
    assert manifest["labels"]["as_of"] == "2026-06-10T00:00:00Z"
    assert manifest["sources"]["disputes"] == {"delta_version": 0}

    # a dispute filed later lands in the Delta source: the rebuild reads the recorded version and cutoff
    late = [("ch0", 0, charges[0][3], charges[0][3] + dt.timedelta(days=1), "fraudulent", 1.0)]
    spark.createDataFrame(late, DISPUTE_SCHEMA).write.format("delta").mode("append").save(str(tmp_path / "disputes"))
    r = invoke("training-set", "--from-manifest", str(tmp_path / "train.manifest.json"), "--out", str(tmp_path / "same"))
    assert r.exception is None, r.output
    assert "label is_fraud v1 from source 'disputes' as known at 2026-06-10T00:00:00Z" in r.output

    _repo(tmp_path, "reason in ('fraudulent', 'other')")  # the label changes under version 1
    r = invoke("training-set", "--from-manifest", str(tmp_path / "train.manifest.json"), "--out", str(tmp_path / "again"))
    assert isinstance(r.exception, SpecChangedError), r.output
    assert "label 'is_fraud' v1 changed since the manifest was built" in str(r.exception)
    assert not (tmp_path / "again").exists()
    r = invoke("plan", "--json")  # the ledger of what training sets used flags it too
    assert isinstance(r.exception, SpecChangedError)
    [ref] = json.JSONDecoder().raw_decode(r.output)[0]["references"]
    assert (ref["kind"], ref["name"], ref["status"]) == ("label", "is_fraud", "spec_changed")
