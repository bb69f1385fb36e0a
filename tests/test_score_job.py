"""Scoring and publishing end to end: the champions of the shared trained pipeline score a date
whose features do not exist yet, drift is checked and logged, and the scores are published."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from aep import FAST
from enrich import clv_btyd, labels, publish, tables
from enrich.aep.sandbox import Sandbox
from enrich.config import load_config
from enrich.jobs import ingest as ingest_job
from enrich.jobs import publish as publish_job
from enrich.jobs import score as score_job
from enrich.jobs import setup_aep as setup_job
from pipeline import DAY, FEWER, MODELS, ROOT, run
from pyspark.sql import Window
from pyspark.sql import functions as F


def _eligible(spark, root, name):
    model = load_config([ROOT / "conf" / "models" / f"{name}.yaml"]).model
    features = tables.read(spark, f"{root}/lake/features", "delta").where(F.col("as_of_date") == F.lit(DAY))
    return features.where(labels.eligible(model))


def test_every_champion_scores_exactly_its_eligible_profiles(spark, scored):
    root, _, _, client, scores = scored
    assert {r["model"] for r in scores.select("model").distinct().collect()} == set(MODELS)
    for name in MODELS:
        rows = scores.where(F.col("model") == name)
        eligible = _eligible(spark, root, name)
        assert rows.count() == eligible.count() > 100, name
        assert rows.join(eligible, "profile_id", "left_anti").count() == 0
        champion = client.get_model_version_by_alias(name, "champion")
        versions = rows.select("model_version", "model_run_id", "kind").distinct().collect()
        assert [tuple(v) for v in versions] == [(str(champion.version), champion.run_id, name)]


def test_probabilities_scores_percentiles_and_deciles_agree(scored):
    *_, scores = scored
    for name in ("conversion", "churn"):
        rows = scores.where(F.col("model") == name)
        bad = rows.where(~F.col("probability").between(0, 1) | (F.col("score") != F.round(F.col("probability") * 100))
                         | ~F.col("percentile").between(1, 100)
                         | (F.col("decile") != F.ceil(F.col("percentile") / 10)))
        assert bad.count() == 0, bad.limit(3).collect()
        assert rows.agg(F.max("percentile")).first()[0] == 100
        # Percentiles follow the probability: each percentile's values lie above the previous one's.
        spans = rows.groupBy("percentile").agg(F.min("probability").alias("lo"), F.max("probability").alias("hi"))
        previous = F.lag("hi").over(Window.orderBy("percentile"))
        assert spans.withColumn("previous", previous).where(F.col("lo") <= F.col("previous")).count() == 0
    clv = scores.where(F.col("model") == "clv")
    assert clv.where((F.col("prediction") < 0) | (F.col("score") != F.col("percentile"))).count() == 0
    assert clv.select("decile").distinct().count() >= 5


def test_btyd_scores_are_the_closed_forms_of_its_registered_parameters(spark, scored):
    """clv_btyd: `prediction` is the discounted CLV, with `p_alive` and `expected_purchases`, each equal
    to the numpy closed forms for the registered parameters; ranked like clv; no other model has them."""
    root, *_, scores = scored
    model = clv_btyd.load("models:/clv_btyd@champion")
    rows = scores.where(F.col("model") == "clv_btyd")
    features = tables.read(spark, f"{root}/lake/features", "delta").where(F.col("as_of_date") == F.lit(DAY))
    got = rows.join(features.select("profile_id", *clv_btyd.INPUTS), "profile_id").toPandas()
    expected = model.predict(got[clv_btyd.INPUTS])
    np.testing.assert_allclose(got["prediction"], expected["clv"], rtol=1e-9)
    np.testing.assert_allclose(got["p_alive"], expected["p_alive"], rtol=1e-9)
    np.testing.assert_allclose(got["expected_purchases"], expected["expected_purchases"], rtol=1e-9)
    assert len(got) == rows.count() > 100
    assert (got["score"] == got["percentile"]).all() and got["decile"].between(1, 10).all()
    assert rows.where(F.col("factors").isNotNull() | F.col("probability").isNotNull()).count() == 0
    others = scores.where(F.col("model") != "clv_btyd")
    assert others.where(F.col("p_alive").isNotNull() | F.col("expected_purchases").isNotNull()).count() == 0


def test_factors_are_ranked_nonzero_features_of_the_model(spark, scored):
    root, *_, scores = scored
    features = set(tables.read(spark, f"{root}/lake/features", "delta").columns)
    rows = scores.where(F.col("model").isin("conversion", "churn", "clv"))
    exploded = rows.select("model", "profile_id", F.posexplode("factors").alias("i", "f"))
    assert rows.where(F.size("factors") > 3).count() == 0
    assert exploded.where(F.col("f.importance") == 0).count() == 0
    assert {r[0] for r in exploded.select("f.feature").distinct().collect()} <= features
    worse = F.lag(F.abs("f.importance")).over(Window.partitionBy("model", "profile_id").orderBy("i"))
    assert exploded.withColumn("worse", worse).where(F.abs("f.importance") > F.col("worse")).count() == 0
    # Of 5 candidates (FEWER), a profile can have all at their medians or in a flat part of the
    # trees: no factor. Most profiles have some (86% on this data).
    assert rows.where(F.size("factors") > 0).count() > 0.75 * rows.count()


def test_affinity_and_segments_outputs(scored):
    *_, scores = scored
    affinity = scores.where(F.col("model") == "affinity")
    assert affinity.where(F.size("recommendations") != 3).count() == 0
    assert affinity.where(F.size(F.array_distinct(F.transform("recommendations", lambda r: r["category"]))) != 3
                          ).count() == 0
    segments = scores.where(F.col("model") == "segments")
    assert segments.where(F.col("segment_name").isNull() | F.col("segment_id").isNull()).count() == 0


def test_drift_is_stored_and_logged(spark, scored):
    root, _, out, client, _ = scored
    drift = tables.read(spark, f"{root}/lake/drift", "delta").where(F.col("score_date") == F.lit(DAY))
    for name in MODELS:
        rows = {r["input"]: r["psi"] for r in drift.where(F.col("model") == name).collect()}
        assert "model_output" in rows and all(v >= 0 for v in rows.values()), name
        if name != "affinity":
            assert len(rows) > 1, name  # the inputs too
        experiment = client.get_experiment_by_name(f"/profile-enrichment/{name}")
        runs = client.search_runs([experiment.experiment_id], "tags.job = 'score'")
        assert runs and runs[0].data.tags["score_date"] == str(DAY)
        assert runs[0].data.metrics["psi_max"] == pytest.approx(max(rows.values()))
        assert "plots/drift.png" in {a.path for a in client.list_artifacts(runs[0].info.run_id, "plots")}
    assert "conversion by decile:" in out and "segments by segment:" in out


def test_rescoring_one_model_replaces_exactly_its_partition(spark, scored):
    root, args, _, _, scores = scored
    before = {r["model"]: r["count"] for r in scores.groupBy("model").count().collect()}
    code, _, err = run(score_job, [*args, "--set", f"as_of={DAY}", "--model", "churn", *FEWER])
    assert code == 0, err
    table = tables.read(spark, f"{root}/lake/scores", "delta").where(F.col("score_date") == F.lit(DAY))
    assert {r["model"]: r["count"] for r in table.groupBy("model").count().collect()} == before
    last = spark.sql(f"DESCRIBE HISTORY delta.`{root}/lake/scores` LIMIT 1").first()
    assert "churn" in last["operationParameters"]["predicate"]
    assert int(last["operationMetrics"]["numOutputRows"]) == before["churn"]


def test_publish_the_scored_date_and_ingest_it(spark, scored, tmp_path, monkeypatch):
    _, args, _, _, scores = scored
    outbox = tmp_path / "outbox"
    code, out, err = run(publish_job, [*args, "--set", f"as_of={DAY}", "--set", f"publish.outbox={outbox}",
                                       "--allow-drift"])
    assert code == 0, err
    manifest_path = Path(out.split("manifest: ")[1].strip().removeprefix("file:"))
    manifest = json.loads(manifest_path.read_text())
    assert manifest["rows"] == scores.select("profile_id").distinct().count()
    assert {m["name"] for m in manifest["models"]} == set(MODELS)
    records = spark.read.parquet(*[str(manifest_path.parent / f["name"]) for f in manifest["files"]])
    insights = records.select("_acme.insights.*")
    assert set(insights.columns) == {publish.field_name(m) for m in MODELS}
    churners = scores.where(F.col("model") == "churn").count()
    assert insights.where(F.col("churn").isNotNull()).count() == churners
    assert insights.where(F.col("segments.segmentName").isNull()).count() == 0
    btyd = insights.where(F.col("clvBtyd").isNotNull())
    assert btyd.count() == scores.where(F.col("model") == "clv_btyd").count()
    assert btyd.where(~F.col("clvBtyd.pAlive").between(0, 1) | (F.col("clvBtyd.expectedPurchases") < 0)
                      | F.col("clvBtyd.prediction").isNull()).count() == 0

    # The folder as it is goes to the platform (the loopback sandbox): set-up from its field group,
    # then every file delivered, and the platform reads as many records as the manifest lists.
    with Sandbox() as box:
        monkeypatch.setenv("AEP_CLIENT_SECRET", box.secret)
        cfg = load_config(overrides=[*box.settings(), *FAST, f"publish.outbox={outbox}"])
        made = setup_job.run(cfg)
        assert made.created == ["field group", "schema", "Profile enablement of the schema", "dataset"]
        cfg = load_config(overrides=[*box.settings(made.dataset), *FAST, f"publish.outbox={outbox}"])
        delivered = ingest_job.run(cfg)
        assert delivered.status == "success" and delivered.manifest == str(manifest_path)
        assert delivered.metrics["recordsWritten"] == manifest["rows"]
        stored = box.batches[delivered.batch].files
        assert {n: hashlib.sha256(d).hexdigest() for n, d in stored.items()} == {
            f["name"]: f["sha256"] for f in manifest["files"]}


def test_unknown_models_and_missing_dates_are_clear_errors(scored):
    _, args, *_ = scored
    code, _, err = run(score_job, [*args, "--set", f"as_of={DAY}", "--set", "scoring.models={nope: champion}"])
    assert code == 3 and "model 'nope@champion' is not in the registry" in err
    assert "jobs/train.py --model conf/models/nope.yaml" in err
    code, _, err = run(score_job, [*args, "--set", "as_of=2025-03-01", "--set", "scoring.build_missing_features=false"])
    assert code == 3 and "no features as of 2025-03-01; build them first" in err
