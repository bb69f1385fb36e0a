"""The training job end to end on generated data: every kind trains, beats its baseline, comes near
the truth's ceiling, lands in MLflow with its artifacts, registers, gets aliases and loads back."""

from __future__ import annotations

from pathlib import Path

import mlflow
import mlflow.spark
import pytest
from enrich import models, tables
from enrich.jobs import train as train_job
from mlflow.tracking import MlflowClient
from pipeline import MODELS, SEGMENTS, run
from pyspark.sql import functions as F


def test_every_kind_trains_and_beats_its_baseline(trained):
    _, _, summaries = trained
    assert sorted(summaries) == sorted(MODELS)
    for s in summaries.values():
        margin = s.value - s.baseline if s.metric != "rmse" else s.baseline - s.value
        assert margin > 0.01, (s.name, s.metric, s.value, s.baseline)
        assert s.version == "1" and s.promoted, s


def test_models_come_near_the_truths_ceiling(trained):
    """The generator's true probabilities are the best any model can do; ours stays within a
    stated distance of them on the out-of-time window."""
    _, _, s = trained
    # About 3,000 fitting rows here: the gap is wider than at the demo's size (0.05 AUC there).
    assert s["conversion"].ceiling - 0.15 <= s["conversion"].value <= s["conversion"].ceiling + 0.03
    assert s["churn"].ceiling - 0.15 <= s["churn"].value <= s["churn"].ceiling + 0.03
    assert s["clv"].ceiling <= s["clv"].value <= 1.5 * s["clv"].ceiling  # RMSE: the true expected spend is the floor
    assert s["affinity"].value >= s["affinity"].ceiling - 0.25
    assert s["segments"].ceiling is None


def test_runs_hold_metrics_plots_config_and_the_model(trained):
    client = MlflowClient()
    for name in MODELS:
        version = client.get_model_version_by_alias(name, "champion")
        run = client.get_run(version.run_id)
        assert run.data.tags["promotion.decision"] == "champion"
        assert run.data.params["model.kind"] == name
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "features.json", "training_schema.json"} <= artifacts
        if name in ("conversion", "churn"):
            plots = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "plots")}
            assert plots == {"roc.png", "precision_recall.png", "cumulative_gains.png", "calibration.png",
                             "feature_importances.png"}
            assert {"auc_roc", "auc_pr", "log_loss", "brier", "lift_top_decile", "capture_top_decile",
                    "baseline_auc_roc", "truth_auc_roc"} <= set(run.data.metrics)
        if name == "clv":
            assert {"rmse", "mae", "r2", "spearman", "gini", "baseline_rmse", "truth_rmse"} <= set(run.data.metrics)
            assert "predicted_vs_actual.png" in {Path(a.path).name for a in
                                                 client.list_artifacts(run.info.run_id, "plots")}
        if name == "affinity":
            assert {"precision_at_k", "ndcg_at_k", "baseline_ndcg_at_k"} <= set(run.data.metrics)


def test_champions_load_back_and_score(spark, trained):
    root, _, _ = trained
    features = tables.read(spark, f"{root}/lake/features", "delta").where("as_of_date = DATE'2025-07-01'")
    conversion = mlflow.spark.load_model("models:/conversion@champion")
    scored = conversion.transform(features)
    p = scored.select(models.positive_probability(scored).alias("p"))
    assert p.count() == features.count()
    assert p.where("p IS NULL OR p < 0 OR p > 1").count() == 0
    assert p.agg(F.stddev("p")).first()[0] > 0.01
    segments = mlflow.spark.load_model("models:/segments@champion").transform(features)
    names = {r[0] for r in segments.select("segment_name").distinct().collect()}
    assert 3 <= len(names) <= 4 and None not in names
    assert all("value" in n for n in names)


def test_the_search_is_logged(trained):
    client = MlflowClient()
    run = client.get_run(client.get_model_version_by_alias("conversion", "champion").run_id)
    assert run.data.params["chosen.maxDepth"] in ("2", "4")
    assert run.data.params["model.grid.maxDepth"] == "[2, 4]"


def test_a_version_no_better_than_the_champion_stays_challenger(trained):
    """Same data, same seed: the new version scores what the champion scores on the same window
    (the champion is loaded from the registry and scored again), so it is not promoted."""
    _, args, summaries = trained
    code, out, err = run(train_job, [*args, *SEGMENTS])
    assert code == 0, err
    assert f"does not beat the champion by 0 ({summaries['segments'].value:.4f} vs champion" in out
    client = MlflowClient()
    assert str(client.get_model_version_by_alias("segments", "champion").version) == "1"
    challenger = client.get_model_version_by_alias("segments", "challenger")
    assert str(challenger.version) == "2"
    tags = client.get_run(challenger.run_id).data.tags
    assert tags["promotion.decision"] == "challenger"
    assert float(tags["promotion.champion_score"]) == pytest.approx(summaries["segments"].value, abs=1e-6)


def test_too_few_rows_and_missing_feature_dates_are_clear_errors(trained):
    _, args, _ = trained
    segments = SEGMENTS
    code, _, err = run(train_job, [*args, *segments, "--set", "training.min_positives=1000000"])
    assert code == 3 and "too few labels to train segments model 'segments'" in err
    assert "profiles in fit (training.min_positives 1,000,000)" in err
    code, _, err = run(train_job, [*args, *segments, "--set", "training.as_of_dates=[2025-04-01, 2025-07-01]"])
    assert code == 3 and "no features for as-of 2025-04-01; build them first" in err
