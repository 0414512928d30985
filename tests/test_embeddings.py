"""Entity embeddings: the generator's latent structure, EmbeddingView definitions, point-in-time backfills,
alignment across retrains, cold start, the training-set join and `tally similar` (docs/embeddings.md)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tally as tl
from click.testing import CliRunner
from pyspark.sql import Window as W
from pyspark.sql import functions as F
from tally import datagen, embeddings, store
from tally.cli import cli
from test_datagen import content_hashes
from test_datagen_auth import PINNED
from utc import utc


def _top2_shares(frames: dict, merchants) -> dict:
    """Per frame: the share of a customer's charges in their two busiest communities (customers >= 5 charges)."""
    union = None
    for name, charges in frames.items():
        part = charges.select(F.lit(name).alias("t"), "customer_id", "merchant_id")
        union = part if union is None else union.unionByName(part)
    per = union.join(merchants.select("merchant_id", "community"), "merchant_id").groupBy(
        "t", "customer_id", "community").count()
    ranked = per.withColumn("r", F.row_number().over(W.partitionBy("t", "customer_id").orderBy(F.desc("count"),
                                                                                              "community")))
    agg = ranked.groupBy("t", "customer_id").agg(F.sum("count").alias("n"),
                                                 F.sum(F.when(F.col("r") <= 2, F.col("count"))).alias("top"))
    return {r[0]: r[1] for r in agg.where("n >= 5").groupBy("t").agg(F.sum("top") / F.sum("n")).collect()}


def test_structure_off_gives_the_pinned_rows_and_on_concentrates_customers_in_communities(spark):
    off = datagen.generate(spark, 3_000, 14, 7, structure=False)
    on = datagen.generate(spark, 3_000, 14, 7, structure=True)
    hashes = content_hashes({**{name: off[name] for name in PINNED}, "on": on["charges"]})  # one job
    assert {name: hashes[name] for name in PINNED} == PINNED  # the attempts are pinned in test_datagen_auth
    assert hashes["on"][0] == 3_000 and hashes["on"] != PINNED["charges"]
    merchants = datagen.dimensions(spark, 3_000, 14, 7, structure=True)["merchants"]
    shares = _top2_shares({"off": off["charges"], "on": on["charges"]}, merchants)
    assert shares["on"] > 0.85 and shares["on"] - shares["off"] > 0.15, shares


# --- embedding views on a small generated month ----------------------------------------------------------------

D = dt.date(2026, 1, 15)  # the spine day of the point-in-time test: ds = D - 1 is trained before D 00:00 UTC
VIEW = """
import tally as tl

merchant = tl.Entity("merchant", keys=["merchant_id"])
card = tl.Entity("card", keys=["card_id"])
charges = tl.Source("charges", path="charges", timestamp="created", available_at="known_at")
merchant_by_card = tl.EmbeddingView(
    name="merchant_by_card", entity=merchant, context=card, source=charges, method={method!r}, dim=8,
    lookback="30d", cadence="1d", seed=11, params={params!r}, description="merchants that share cards")
"""


def define(method: str = "als", params=None):
    scope: dict = {}
    exec(VIEW.format(method=method, params=params or {"max_iter": 5}), scope)
    return scope["merchant_by_card"]


@pytest.fixture(scope="module")
def month(spark, tmp_path_factory):
    """4 000 structured charges over 21 days, as pandas (created as naive UTC) and as a data root."""
    frames = datagen.generate(spark, 4_000, 21, 7, structure=True)
    pdf = frames["charges"].select("charge_id", "created", "card_id", "merchant_id").toPandas()
    pdf["known_at"] = pdf["created"]
    communities = datagen.dimensions(spark, 4_000, 21, 7, structure=True)["merchants"].select(
        "merchant_id", "community").toPandas().set_index("merchant_id")["community"].to_dict()
    root = tmp_path_factory.mktemp("month")
    write_root(spark, pdf, root)
    return pdf, root, communities


def write_root(spark, pdf: pd.DataFrame, root: Path) -> Path:
    """Write `pdf` (naive UTC times) as `<root>/charges` parquet."""
    df = spark.createDataFrame(pdf.assign(created=pdf["created"].dt.tz_localize("UTC"),
                                          known_at=pdf["known_at"].dt.tz_localize("UTC")))
    df.write.mode("overwrite").parquet(str(root / "charges"))
    return root


def vectors(spark, view, warehouse, ds: dt.date) -> dict:
    return {k: v.tolist() for k, v in (embeddings.stored_vectors(
        spark, store.table_path(warehouse, view.name, view.version), view, ds) or {}).items()}


@pytest.fixture(scope="module")
def backfilled(spark, month, tmp_path_factory):
    """ALS vectors for ds = D - 1 and D (two retrains, the second aligned to the first) in one warehouse."""
    _, root, _ = month
    warehouse = tmp_path_factory.mktemp("wh")
    view = define()
    results = store.backfill(spark, view, D - dt.timedelta(days=1), D, warehouse=warehouse, data=root)
    return view, warehouse, results


def test_embedding_view_definitions_are_checked_when_built():
    m, c = tl.Entity("merchant", keys=["merchant_id"]), tl.Entity("card", keys=["card_id"])
    src = tl.Source("charges", path="charges", timestamp="created")

    def build(**kw):
        return tl.EmbeddingView(**{"name": "emb", "entity": m, "context": c, "source": src, **kw})

    view = build()
    assert isinstance(view, tl.FeatureView) and view.accuracy == "snapshot" and [f.name for f in view.features] == ["vector"]
    assert build(dim=8).fingerprint != view.fingerprint and build(description="x").fingerprint == view.fingerprint
    cases = [({"method": "pca"}, "embedding view 'emb': unknown method 'pca'"),
             ({"dim": 1}, "embedding view 'emb': dim must be an integer >= 2"),
             ({"cadence": "36h"}, "embedding view 'emb': cadence '36h' is not a whole number of days"),
             ({"lookback": "a week"}, "embedding view 'emb': lookback: 'a week' is not a duration"),
             ({"params": {"rank": 3}}, "embedding view 'emb': unknown parameter(s) ['rank'] for method 'als'"),
             ({"context": m}, "embedding view 'emb': entity and context are both keyed by 'merchant_id'"),
             ({"aggregations": [tl.Aggregation("count")]}, "embedding view 'emb': takes no aggregations"),
             ({"source": tl.Source("charges", path="charges", timestamp="created",
                                   schema={"created": "timestamp", "card_id": "string"})},
              "embedding view 'emb': source 'charges' has no entity column 'merchant_id'")]
    for kw, message in cases:
        with pytest.raises(tl.DefinitionError) as err:
            build(**kw)
        assert err.value.message.startswith(message), (kw, err.value.message)


def test_vectors_of_day_d_ignore_every_event_not_known_before_d_and_reruns_are_bit_identical(spark, month, backfilled,
                                                                                               tmp_path):
    pdf, _, _ = month
    view, warehouse, _ = backfilled
    before = vectors(spark, view, warehouse, D - dt.timedelta(days=1))
    assert len(before) > 50 and all(len(v) == 8 for v in before.values())

    def rerun(frame: pd.DataFrame, name: str) -> dict:
        root = write_root(spark, frame, tmp_path / name)
        store.backfill(spark, view, D - dt.timedelta(days=1), D - dt.timedelta(days=1), warehouse=tmp_path / f"wh_{name}",
                       data=root)
        return vectors(spark, view, tmp_path / f"wh_{name}", D - dt.timedelta(days=1))

    midnight = pd.Timestamp(D)
    later = pdf.copy()
    after = later["created"] >= midnight
    assert after.sum() > 100
    later.loc[after, "merchant_id"] = later.loc[after, "merchant_id"].iloc[::-1].to_numpy()  # events on/after D change
    extra = later.head(30).assign(created=midnight, known_at=midnight, merchant_id="mer_new")  # appended at exactly D
    late_label = later[later["created"] < midnight].tail(1).assign(known_at=midnight, merchant_id="mer_late")
    later = pd.concat([later, extra, late_label], ignore_index=True)  # known at D: invisible before D
    assert rerun(later, "later") == before  # so also: a rerun in a fresh warehouse is bit-identical

    changed = pdf.copy()
    i = changed.index[(changed["created"] < midnight) & (changed["created"] >= midnight - pd.Timedelta(days=2))][0]
    changed.loc[i, "card_id"] = changed["card_id"].iloc[0] if changed.loc[i, "card_id"] != changed["card_id"].iloc[0] \
        else changed["card_id"].iloc[1]
    assert rerun(changed, "changed") != before


def test_a_retrain_is_aligned_to_the_previous_one_by_a_rotation(spark, month, backfilled):
    view, warehouse, results = backfilled
    first, second = results
    assert first["residual"] is None and second["residual"] is not None
    meta = [c["tally"]["embedding"] for c in store.commits(spark, store.table_path(warehouse, view.name, view.version))]
    assert meta[0]["alignment"] is None and meta[1]["alignment"]["residual"] == second["residual"]
    assert meta[1]["training_window"] == ["2025-12-17T00:00:00+00:00", "2026-01-16T00:00:00+00:00"]
    assert meta[1]["method"] == "als" and meta[1]["seed"] == 11 and meta[1]["params"]["max_iter"] == 5
    a, b = meta[1]["alignment"]["residual"], meta[1]["alignment"]["raw_residual"]
    # one more day of the same structure: the rotation brings the vectors back toward the previous ones. Measured
    # 0.885 against 1.309 raw: 4 000 charges hold ~80 (country, community) clusters that dim 8 cannot place
    # stably (docs/embeddings.md, "Thin data"); it was 0.03 at 200 000 charges (measured on the looser 70/20/10
    # segments). Before the segments tightened to 80/15/5 and quiet fraud doubled, this asserted a < 0.6
    assert a < 0.9 and a < 0.75 * b, (a, b)
    # the stored vectors are the raw retrain rotated: every pairwise dot product is the raw one
    raw_keys, raw = embeddings.train(view, embeddings.training_events(
        view, spark.read.parquet(str(month[1] / "charges")), utc(2026, 1, 16)))
    stored = vectors(spark, view, warehouse, D)
    assert raw_keys == sorted(stored)
    aligned = np.array([stored[k] for k in raw_keys])
    assert np.allclose(aligned @ aligned.T, raw.astype(np.float64) @ raw.T, atol=1e-4)
    assert not np.allclose(aligned, raw, atol=1e-3)  # ... yet the coordinates moved
    previous = vectors(spark, view, warehouse, D - dt.timedelta(days=1))
    shared = [k for k in raw_keys if k in previous]
    old = np.array([previous[k] for k in shared])
    new = np.array([stored[k] for k in shared])
    assert np.linalg.norm(new - old) / np.linalg.norm(old) == pytest.approx(a, rel=1e-4)


def _same_community_share(found: dict, communities: dict, k: int = 5) -> float:
    keys = sorted(found)
    m = np.array([found[x] for x in keys], dtype=np.float64)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    sims = m @ m.T
    np.fill_diagonal(sims, -np.inf)
    hits = [communities[keys[j]] == communities[keys[i]] for i in range(len(keys)) for j in np.argsort(-sims[i])[:k]]
    return float(np.mean(hits))


def test_both_methods_find_the_planted_communities(spark, month, backfilled, tmp_path):
    _, root, communities = month
    view, warehouse, _ = backfilled
    als = _same_community_share(vectors(spark, view, warehouse, D), communities)
    w2v_view = define("word2vec", {"max_iter": 2, "window_size": 3})
    store.backfill(spark, w2v_view, D, D, warehouse=tmp_path / "w2v", data=root)
    w2v = vectors(spark, w2v_view, tmp_path / "w2v", D)
    assert len(w2v) > 50 and all(len(v) == 8 for v in w2v.values())
    share = _same_community_share(w2v, communities)
    assert als > 0.3 and share > 0.2, (als, share)  # chance: 1 in 8 (measured: 0.40 and 0.25)


def test_training_sets_join_vectors_as_of_the_day_before_and_unseen_merchants_get_null(spark, backfilled):
    view, warehouse, _ = backfilled
    table = store.read_features(spark, view, warehouse=warehouse).select("merchant_id", "ds", "vector").toPandas()
    lookup = {(r.merchant_id, r.ds): list(r.vector) for r in table.itertuples()}
    merchants = sorted(table["merchant_id"].unique())
    times = [utc(2026, 1, 15), utc(2026, 1, 15, 13, 5), utc(2026, 1, 16, 23, 59, 59, 999_999), utc(2026, 1, 16)]
    rows = [(i, merchants[(7 * i) % len(merchants)] if i % 9 else "mer_never_seen", times[i % len(times)])
            for i in range(40)]
    spine = spark.createDataFrame(rows, "row_id long, merchant_id string, ts timestamp")
    got = {r.row_id: r.merchant_by_card__vector for r in
           tl.training_set(spark, spine, [view], "ts", warehouse=warehouse).collect()}
    oracle = {i: lookup.get((m, t.date() - dt.timedelta(days=1))) for i, m, t in rows}
    assert {i: None if v is None else list(v) for i, v in got.items()} == oracle
    # both cases occur: the 5 never-seen ids (and any merchant first seen on the row's day) get null
    assert all(oracle[i] is None for i, m, _ in rows if m == "mer_never_seen"), oracle
    assert sum(v is not None for v in oracle.values()) >= 30, oracle
    late = spark.createDataFrame([(0, merchants[0], utc(2026, 1, 18))], "row_id long, merchant_id string, ts timestamp")
    with pytest.raises(tl.DataError, match="view 'merchant_by_card' v1: the feature table does not cover 1 day"):
        tl.training_set(spark, late, [view], "ts", warehouse=warehouse)


def test_tally_list_describe_and_similar(spark, month, backfilled, tmp_path):
    _, root, _ = month
    view, warehouse, results = backfilled
    repo = tmp_path / "features"
    repo.mkdir()
    (repo / "embeddings.py").write_text(VIEW.format(method="als", params={"max_iter": 5}))

    def run(*args):
        return CliRunner().invoke(cli, ["--repo", str(repo), "--warehouse", str(warehouse), "--data", str(root), *args],
                                  catch_exceptions=True, standalone_mode=False)

    r = run("backfill", "merchant_by_card", "--start", "2026-01-14", "--end", "2026-01-15", "--dry-run")
    assert r.exception is None and "retrain 2026-01-15 (days 2026-01-15..2026-01-15): als on charges created in the " \
        "30d before 2026-01-16 00:00 UTC" in r.output, r.output
    r = run("list")
    assert r.exception is None and "merchant_by_card" in r.output
    r = run("plan")
    assert r.exception is None and "= merchant_by_card v1: unchanged" in r.output, r.output
    r = run("describe", "merchant_by_card")
    assert r.exception is None and "vector" in r.output and "2026-01-14..2026-01-15 (2 days)" in r.output, r.output
    found = vectors(spark, view, warehouse, D)
    me = sorted(found)[0]
    r = run("similar", "merchant", me, "--k", "3", "--at", "2026-01-16", "--json")
    assert r.exception is None, r.output
    doc = json.loads(r.output)
    expected = embeddings.similar(spark, view, me, at=dt.date(2026, 1, 16), k=3, warehouse=warehouse)
    assert [n["id"] for n in doc["neighbours"]] == [k for k, _ in expected] and len(expected) == 3
    assert doc["neighbours"][0]["cosine"] >= doc["neighbours"][2]["cosine"]
    r = run("similar", "merchant", "mer_nobody", "--view", "merchant_by_card", "--at", "2026-01-16")
    assert isinstance(r.exception, tl.DataError) and "merchant 'mer_nobody' has no vector at 2026-01-16" in str(r.exception)
    r = run("similar", "merchant", me, "--at", "2026-01-20")
    assert isinstance(r.exception, tl.DataError) and "has no snapshot for 2026-01-20 (row ds = 2026-01-19)" in str(r.exception)
    r = run("similar", "merchant", me, "--view", "nope", "--at", "2026-01-16")
    assert isinstance(r.exception, tl.RegistryError) and "unknown feature view 'nope'" in str(r.exception)


def test_affinity_of_a_merchant_to_the_cards_last_merchants_matches_a_pandas_oracle(spark, month, backfilled):
    pdf, root, _ = month
    view, warehouse, _ = backfilled
    events = spark.read.parquet(str(root / "charges"))
    picked = pdf[(pdf["created"] >= pd.Timestamp(D)) & (pdf["created"] < pd.Timestamp(D) + pd.Timedelta(days=2))]
    picked = picked.sort_values("charge_id").head(60)
    spine = events.where(F.col("charge_id").isin(list(picked["charge_id"]))).select(
        "charge_id", "card_id", "merchant_id", "created")
    got = {r.charge_id: r.merchant_by_card__affinity_last_3 for r in
           embeddings.affinity(spark, spine, view, "created", events=events, k=3, warehouse=warehouse).collect()}
    table = store.read_features(spark, view, warehouse=warehouse).select("merchant_id", "ds", "vector").toPandas()
    vec = {(r.merchant_id, r.ds): np.array(r.vector, dtype=np.float64) for r in table.itertuples()}
    oracle = {}
    for row in picked.itertuples():
        ds = row.created.date() - dt.timedelta(days=1)
        before = pdf[(pdf["card_id"] == row.card_id) & (pdf["created"] < row.created) & (pdf["known_at"] < row.created)]
        last = before.sort_values(["created", "merchant_id"], ascending=False).head(3)["merchant_id"]
        hist = [vec[(m, ds)] for m in last if (m, ds) in vec]
        cur = vec.get((row.merchant_id, ds))
        if cur is None or not hist:
            oracle[row.charge_id] = None
        else:
            s = np.sum(hist, axis=0)
            oracle[row.charge_id] = float(cur @ s / (np.linalg.norm(cur) * np.linalg.norm(s)))
    assert got.keys() == oracle.keys() and len(got) == 60
    assert sum(v is not None for v in oracle.values()) >= 10 and sum(v is None for v in oracle.values()) >= 5
    for cid, want in oracle.items():
        assert (got[cid] is None) == (want is None), cid
        assert want is None or got[cid] == pytest.approx(want, abs=1e-5), cid


# --- the control: the signal comes from the planted communities, and only from them ------------------------------

CONTROL_VIEW = tl.EmbeddingView(
    name="merchant_by_card", entity=tl.Entity("merchant", keys=["merchant_id"]), context=tl.Entity("card", keys=["card_id"]),
    source=tl.Source("charges", path="charges", timestamp="created"), method="als", dim=16, lookback="21d",
    cadence="7d", seed=11, params={"max_iter": 8})


def _auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """AUC-ROC by brute force: the share of (positive, negative) pairs the score orders right (ties count half)."""
    pos, neg = scores[positive], scores[~positive]
    return float(((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg)))


def _low_affinity_aucs(spark, structure, root: Path, warehouse: Path) -> dict:
    """AUC-ROC of -affinity over the domestic charges of days 23..29 at merchants new to the customer, from one ALS
    retrain of 2026-01-22: `community` for charges outside the customer's two communities against those inside
    (the assignment of `structure=True`, also where it was not planted: a placebo in the control), `fraud` for
    charges later disputed as fraudulent against the others; with the number of positives and negatives."""
    frames = datagen.generate(spark, 40_000, 29, 7, structure=structure)
    frames["charges"].select("charge_id", "created", "customer_id", "card_id", "merchant_id", "card_country",
                             "merchant_country").write.parquet(str(root / "charges"))
    fraud = {r[0] for r in frames["disputes"].where("reason = 'fraudulent'").select("charge_id").collect()}
    dims = datagen.dimensions(spark, 40_000, 29, 7, structure=True)
    community = dims["merchants"].select("merchant_id", "community").toPandas().set_index("merchant_id")["community"]
    own = dims["customers"].select("customer_id", "primary_community", "secondary_community").toPandas().set_index(
        "customer_id")
    store.backfill(spark, CONTROL_VIEW, dt.date(2026, 1, 22), dt.date(2026, 1, 28), warehouse=warehouse, data=root)
    events = spark.read.parquet(str(root / "charges"))
    spine = events.where(F.col("created") >= F.lit(utc(2026, 1, 23)))
    scored = embeddings.affinity(spark, spine, CONTROL_VIEW, "created", events=events, k=5, warehouse=warehouse,
                                 name="a").toPandas()
    pdf = events.toPandas().sort_values(["created", "charge_id"])
    # brute force: the customer never paid there before (a customer's cards share their regular merchants, which
    # vectors find in the control too, and a count per customer and merchant tells anyway)
    new = set(pdf.loc[~pdf.duplicated(["customer_id", "merchant_id"]), "charge_id"])
    rows = scored[scored["charge_id"].isin(new) & scored["a"].notna()
                  & (scored["card_country"] == scored["merchant_country"])]
    c, mine = rows["merchant_id"].map(community), own.loc[rows["customer_id"]]
    outside = ((c.to_numpy() != mine["primary_community"].to_numpy())
               & (c.to_numpy() != mine["secondary_community"].to_numpy()))
    positive = rows["charge_id"].isin(fraud).to_numpy()
    score = -rows["a"].to_numpy()
    return {"community": (_auc(score, outside), int(outside.sum()), int((~outside).sum())),
            "fraud": (_auc(score, positive), int(positive.sum()), int((~positive).sum()))}


def test_the_affinity_tells_fraud_from_legitimate_charges_only_when_communities_are_planted(spark, tmp_path):
    # Among domestic charges at merchants new to the customer, the vectors place merchants outside the card's
    # communities far from its history with structure=True, where quiet fraud and sprees go; in the control
    # ("control": the same fraud mix and rates, no communities) there is nothing for them to find.
    on = _low_affinity_aucs(spark, True, tmp_path / "on", tmp_path / "wh_on")
    off = _low_affinity_aucs(spark, "control", tmp_path / "off", tmp_path / "wh_off")
    # measured (seeds 7 and 11, 40 000 charges): community 0.716 on (343 outside, 1 639 inside) against 0.478 in
    # the control (2 725 / 885), a standard error of about 0.017; fraud 0.731 (78 frauds) against 0.563 (54)
    assert min(on["community"][1:] + off["community"][1:]) >= 300, (on, off)  # enough charges to read an AUC
    assert on["community"][0] > 0.65 and abs(off["community"][0] - 0.5) < 0.04, (on, off)
    assert on["fraud"][1] >= 40 and off["fraud"][1] >= 40, (on, off)
    assert on["fraud"][0] > off["fraud"][0] + 0.10, (on, off)  # few frauds: the gap, not a level
