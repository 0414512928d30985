"""The bad-input matrix: each case gets a message naming the thing, exit code 1 from the CLI, and no write."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from tally.cli import main
from utc import utc

BASE = utc(2026, 5, 1)
GOOD_ROWS = [(f"e{i}", f"c{i % 5}", BASE + dt.timedelta(hours=3 * i), 100 + i, "USD") for i in range(40)]
SCHEMA = "charge_id string, card_id string, created timestamp, amount bigint, currency string"

VIEW = """
import tally as tl
card = tl.Entity("card", keys=["card_id"])
charges = tl.Source("charges", path={path!r}, format={fmt!r}, timestamp="created", id="charge_id",
                    schema={schema}, checks=[tl.Check.ge("amount", 0), tl.Check.isin("currency", ["USD", "EUR"])])
card_spend = tl.FeatureView(name="card_spend", entity=card, source=charges, ttl="30d",
    aggregations=[tl.Aggregation({function!r}, column={column!r}, windows={windows})])
"""


def make(spark, tmp_path: Path, rows=GOOD_ROWS, schema=SCHEMA, *, fmt="parquet", declared=None, function="sum",
         column="amount", windows='["1d", "7d"]', write=True) -> tuple[Path, list[str]]:
    data = tmp_path / "charges"
    if write:
        spark.createDataFrame(rows, schema).write.format(fmt).mode("overwrite").save(str(data))
    repo = tmp_path / "features"
    repo.mkdir(exist_ok=True)
    (repo / "cards.py").write_text(VIEW.format(path=str(data), fmt=fmt, schema=declared or {"amount": "bigint"},
                                               function=function, column=column, windows=windows))
    return data, ["--repo", str(repo), "--warehouse", str(tmp_path / "wh")]


def backfill(args):
    return main([*args, "backfill", "card_spend", "--start", "2026-05-02", "--end", "2026-05-04", "--quiet"])


def assert_refused(code, capsys, tmp_path, *needles):
    captured = capsys.readouterr()
    err = captured.err + captured.out
    assert code == 1, err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    assert not (tmp_path / "wh" / "features" / "card_spend").exists(), "something was written"


def test_missing_column(spark, tmp_path, capsys):
    _, args = make(spark, tmp_path, column="fee")
    assert_refused(backfill(args), capsys, tmp_path, "card_spend", "sum_fee", "no column 'fee'")


def test_wrong_column_type(spark, tmp_path, capsys):
    _, args = make(spark, tmp_path, declared={"amount": "decimal(18,0)"})
    assert_refused(backfill(args), capsys, tmp_path, "source 'charges'", "amount has type decimal(18,0)", "actual type': 'bigint")


def test_null_keys(spark, tmp_path, capsys):
    rows = GOOD_ROWS + [("x1", None, BASE, 5, "USD"), ("x2", None, BASE, 6, "USD")]
    _, args = make(spark, tmp_path, rows)
    assert_refused(backfill(args), capsys, tmp_path, "card_id not_null: 2 row(s) fail", "x1")


def test_null_timestamps(spark, tmp_path, capsys):
    _, args = make(spark, tmp_path, GOOD_ROWS + [("x1", "c1", None, 5, "USD")])
    # a null timestamp is outside every range the backfill reads, so validate the whole source
    assert_refused(main([*args, "validate", "--source", "charges"]), capsys, tmp_path, "created not_null: 1 row(s)", "x1")


def test_unparseable_timestamp_strings(spark, tmp_path, capsys):
    # naive strings, read as UTC; one that is no timestamp at all
    rows = [(a, b, c.strftime("%Y-%m-%d %H:%M:%S"), d, e) for a, b, c, d, e in GOOD_ROWS]
    rows.append(("x9", "c1", "31/02/2026 25:00", 5, "USD"))
    _, args = make(spark, tmp_path, rows, SCHEMA.replace("created timestamp", "created string"))
    assert_refused(main([*args, "validate"]), capsys, tmp_path,
                   "column 'created' holds strings that are not timestamps in 1 row(s)", "31/02/2026 25:00")


def test_duplicated_event_ids(spark, tmp_path, capsys):
    _, args = make(spark, tmp_path, GOOD_ROWS + [GOOD_ROWS[10]])
    assert_refused(backfill(args), capsys, tmp_path, "charge_id unique: 1 row(s)", "e10")


def test_negative_amounts(spark, tmp_path, capsys):
    _, args = make(spark, tmp_path, GOOD_ROWS + [("neg", "c1", BASE + dt.timedelta(days=1), -5, "USD")])
    assert_refused(backfill(args), capsys, tmp_path, "amount ge(0): 1 row(s)", "neg")


def test_currency_outside_the_declared_set(spark, tmp_path, capsys):
    _, args = make(spark, tmp_path, GOOD_ROWS + [("odd", "c1", BASE + dt.timedelta(days=1), 5, "XXX")])
    assert_refused(backfill(args), capsys, tmp_path, "currency isin", "odd")


def test_empty_source(spark, tmp_path, capsys):
    _, args = make(spark, tmp_path, [])
    assert_refused(backfill(args), capsys, tmp_path, "source 'charges'", "has rows")


def test_timestamps_outside_bounds(spark, tmp_path, capsys):
    _, args = make(spark, tmp_path, GOOD_ROWS + [("old", "c1", utc(1901, 1, 1), 5, "USD")])
    assert_refused(main([*args, "validate"]), capsys, tmp_path, "created between", "old")


def spine_args(spark, tmp_path, args, rows, schema):
    spine = tmp_path / "spine"
    spark.createDataFrame(rows, schema).write.mode("overwrite").parquet(str(spine))
    return [*args, "training-set", "--spine", str(spine), "--timestamp", "ts", "--features", "card_spend",
            "--out", str(tmp_path / "train")]


def test_spine_without_its_timestamp_column(spark, tmp_path, capsys):
    _, args = make(spark, tmp_path, write=False)  # refused from the spine's schema: the source is never read
    code = main(spine_args(spark, tmp_path, args, [("c1", BASE)], "card_id string, when timestamp"))
    assert_refused(code, capsys, tmp_path, "no timestamp column 'ts'")
    assert not (tmp_path / "train").exists()


def test_spine_keys_of_the_wrong_type(spark, tmp_path, capsys):
    _, args = make(spark, tmp_path)
    code = main(spine_args(spark, tmp_path, args, [(1, BASE)], "card_id int, ts timestamp"))
    assert_refused(code, capsys, tmp_path, "spine key 'card_id' is int")
    assert not (tmp_path / "train").exists()


def test_spine_with_null_keys(spark, tmp_path, capsys):
    _, args = make(spark, tmp_path)
    code = main(spine_args(spark, tmp_path, args, [(None, BASE), ("c1", BASE)], "card_id string, ts timestamp"))
    assert_refused(code, capsys, tmp_path, "the spine", "card_id not_null: 1 row(s)")
    assert not (tmp_path / "train").exists()


@pytest.mark.parametrize("features,needle", [("nope", "unknown feature view 'nope'"),
                                             ("card_spend:count_99d", "has no feature 'count_99d'")])
def test_unknown_view_or_feature_in_features(spark, tmp_path, capsys, features, needle):
    _, args = make(spark, tmp_path, write=False)  # refused while resolving names: no data is read
    argv = spine_args(spark, tmp_path, args, [("c1", BASE)], "card_id string, ts timestamp")
    argv[argv.index("card_spend")] = features
    assert_refused(main(argv), capsys, tmp_path, needle)


def test_window_7x(spark, tmp_path, capsys):
    _, args = make(spark, tmp_path, windows='["7x"]', write=False)  # refused while loading the repository
    assert_refused(backfill(args), capsys, tmp_path, "cards.py", "'7x' is not a duration")


def test_negative_delay(spark, tmp_path, capsys):
    _, args = make(spark, tmp_path, windows='[tl.Window("1d", delay="-7d")]', write=False)
    assert_refused(backfill(args), capsys, tmp_path, "cards.py", "delay '-7d' is negative")


def test_path_that_does_not_exist(spark, tmp_path, capsys):
    _, args = make(spark, tmp_path, write=False)
    assert_refused(backfill(args), capsys, tmp_path, "source 'charges'", "does not exist")


def test_corrupt_parquet_file(spark, tmp_path, capsys):
    data, args = make(spark, tmp_path)
    victim = sorted(data.glob("part-*.parquet"))[-1]
    victim.write_bytes(b"PAR1 this is not parquet at all PAR1")
    code = backfill(args)
    assert_refused(code, capsys, tmp_path, "cannot read", victim.name)


def test_delta_table_with_an_incompatible_schema_at_the_feature_path(spark, tmp_path, capsys):
    _, args = make(spark, tmp_path)
    target = tmp_path / "wh" / "features" / "card_spend" / "v1"
    spark.createDataFrame([(1, "x")], "a int, b string").write.format("delta").save(str(target))
    code = backfill(args)
    err = capsys.readouterr().err
    assert code == 1 and "schema tally did not write" in err and str(target) in err
    assert spark.read.format("delta").load(str(target)).columns == ["a", "b"]
    assert spark.sql(f"DESCRIBE HISTORY delta.`{target}`").count() == 1


def test_spec_changed_under_an_existing_version(spark, tmp_path, capsys):
    _, args = make(spark, tmp_path)
    assert backfill(args) == 0
    _, args = make(spark, tmp_path, windows='["1d", "14d"]', write=False)
    path = tmp_path / "wh" / "features" / "card_spend" / "v1" / "_delta_log"
    before = sorted(p.name for p in path.glob("*.json"))
    code = backfill(args)
    err = capsys.readouterr().err
    assert code == 1 and "bump version" in err and "card_spend" in err
    assert sorted(p.name for p in path.glob("*.json")) == before


def test_duplicate_view_names_in_the_repository(spark, tmp_path, capsys):
    _, args = make(spark, tmp_path, write=False)
    src = (tmp_path / "features" / "cards.py").read_text().replace('ttl="30d"', 'ttl="60d"')
    (tmp_path / "features" / "cards_copy.py").write_text(src)
    assert_refused(main([*args, "plan"]), capsys, tmp_path, "two FeatureViews are named 'card_spend'")
