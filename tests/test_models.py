"""Pipelines on small synthetic training rows: imputation with indicators, class weights,
isotonic calibration, the Tweedie regressor, segment names."""

from __future__ import annotations

import datetime as dt

import pytest
from enrich import models, train
from enrich.config import load_config
from enrich.errors import ConfigError
from pyspark.ml.regression import IsotonicRegressionModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

DATES = [dt.date(2025, 1, 1), dt.date(2025, 2, 1), dt.date(2025, 3, 1)]


def rows(spark, n: int = 1500) -> DataFrame:
    """Per date, n profiles: `signal` drives a rare positive label (about 20%); `gappy` is null for
    a third of the rows; `revenue_30d` is last window's spend; `days_since_last_event` is noise
    (so the recency baseline is near random)."""
    u = lambda salt: (F.pmod(F.xxhash64(F.col("id"), F.col("as_of_date"), F.lit(salt)), F.lit(10_000)) / 10_000.0)  # noqa: E731
    base = spark.range(n).crossJoin(spark.createDataFrame([(d,) for d in DATES], "as_of_date date"))
    return base.select(
        "id", F.format_string("p%05d", "id").alias("profile_id"), "as_of_date",
        u("signal").alias("signal"),
        F.when(u("gap") > 0.33, u("gappy") * 10).alias("gappy"),
        (u("spend") * 100).alias("revenue_30d"),
        F.floor(u("recency") * 60).cast("int").alias("days_since_last_event"),
    ).select(
        "*",
        (F.col("signal") + 0.3 * u("noise") > 1.02).cast("double").alias("label"),
    ).drop("id")


def config(*overrides: str):
    return load_config([], ["training.min_positives=20", "training.min_negatives=20",
                            f"training.as_of_dates=[{', '.join(str(d) for d in DATES)}]", *overrides])


def test_balanced_weights_shift_probabilities_and_isotonic_calibration_brings_them_back(spark):
    data = rows(spark).persist()
    weighted = train.train_supervised(data, DATES, config("model.algorithm=logistic", "model.class_weight=balanced"))
    calibrated = train.train_supervised(data, DATES, config("model.algorithm=logistic", "model.class_weight=balanced",
                                                            "model.calibrate=true"))
    assert isinstance(calibrated.model.stages[-1], IsotonicRegressionModel)
    valid = data.where(F.col("as_of_date") == DATES[-1])
    base_rate = valid.agg(F.avg("label")).first()[0]

    def mean_probability(result) -> float:
        scored = result.model.transform(valid)
        return scored.select(F.avg(models.positive_probability(scored))).first()[0]

    # Balanced weights make the classes look equally common: probabilities shift up.
    assert 0.1 < base_rate < 0.3
    assert mean_probability(weighted) > 1.5 * base_rate
    # Calibrated on held-out rows, the probabilities average to the base rate again.
    assert mean_probability(calibrated) == pytest.approx(base_rate, abs=0.04)
    assert calibrated.metrics["auc_roc"] > calibrated.metrics["baseline_auc_roc"] + 0.2


def test_nullable_features_get_a_missing_indicator_and_median_imputation(spark):
    result = train.train_supervised(rows(spark, 800), DATES, config("model.algorithm=random_forest"))
    assert result.input_columns == ["signal", "gappy", "revenue_30d", "days_since_last_event"]
    assert list(result.importances) == ["signal", "gappy", "revenue_30d", "days_since_last_event", "gappy_missing"]
    assert max(result.importances, key=result.importances.get) == "signal"


def test_tweedie_regression_predicts_spend_better_than_last_window(spark):
    data = rows(spark, 800).withColumn("label", F.col("revenue_30d") * 0.5 + F.col("signal") * 40)
    result = train.train_supervised(data, DATES, config("model.kind=clv", "model.algorithm=glm_tweedie",
                                                        "model.horizon_days=30"))
    assert result.main_metric == "rmse" and not result.higher_is_better
    assert result.metrics["rmse"] < result.metrics["baseline_rmse"]
    assert result.metrics["spearman"] > 0.8


def test_unknown_estimator_parameter_names_the_known_ones(spark):
    with pytest.raises(ConfigError, match=r"GBTClassifier has no parameter 'depth' .*maxDepth"):
        train.train_supervised(rows(spark, 200), DATES, config("model.params.depth=3", "training.min_positives=1",
                                                               "training.min_negatives=1"))


def test_segment_names_read_the_centroids():
    # Columns: recency, frequency, monetary, engagement (standardized).
    names = models.segment_names([[1.2, -0.8, -0.9, -1.0], [-0.9, 1.5, 1.4, 1.2], [0.0, 0.0, 0.1, 0.0],
                                  [-0.9, 1.6, 1.3, 1.0]])
    assert names == ["low value, lapsing", "frequent, high value, active (1)", "mid value, steady",
                     "frequent, high value, active (2)"]


def test_affinity_recommends_a_profiles_categories_and_popular_ones_when_cold(spark):
    interactions = spark.createDataFrame(
        [(f"p{i}", c, 3.0) for i in range(20) for c in (("A", "B") if i % 2 else ("C", "D"))]
        + [("p0", "E", 0.5)], "profile_id string, category string, rating double")
    fitted = models.affinity({"rank": 4, "maxIter": 15}, seed=1).fit(interactions)
    profiles = spark.createDataFrame([("p1",), ("p2",), ("cold",)], "profile_id string")
    recs = {r["profile_id"]: r for r in train.recommend(fitted, profiles, ["A", "B", "C", "D", "E"], 2,
                                                        popular=["C", "A"]).collect()}
    assert {e["category"] for e in recs["p1"]["recommendations"]} == {"A", "B"}
    assert {e["category"] for e in recs["p2"]["recommendations"]} == {"C", "D"}
    assert all(e["score"] > 0 for e in recs["p1"]["recommendations"])
    scores = [e["score"] for e in recs["p1"]["recommendations"]]
    assert scores == sorted(scores, reverse=True)
    assert [(e["category"], e["score"]) for e in recs["cold"]["recommendations"]] == [("C", None), ("A", None)]
    ids = dict(spark.range(1).select(*[models.item_id(F.lit(c)).alias(c) for c in "CA"]).first().asDict())
    assert recs["cold"]["items"] == [float(ids["C"]), float(ids["A"])]
