"""Scoring transforms on hand-made frames: percentiles, factors, drift."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from enrich import drift, explain, models, score
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.ml.classification import LogisticRegression
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual


def _percentiles(spark, values, buckets=1000):
    df = spark.createDataFrame([(i, v) for i, v in enumerate(values)], "id int, v double")
    out = df.transform(score.with_percentile("v", buckets=buckets)).orderBy("id")
    return [r["percentile"] for r in out.collect()]


def _expected(values):
    """ceil(100 * share of values at or below), by brute force."""
    present = [v for v in values if v is not None]
    return [None if v is None else math.ceil(100 * sum(w <= v for w in present) / len(present)) for v in values]


def test_percentiles_of_small_populations_and_ties(spark):
    assert _percentiles(spark, [0.42]) == [100]
    assert _percentiles(spark, [0.1, 0.2, 0.2]) == [34, 100, 100]
    assert _percentiles(spark, [0.3, 0.1, 0.2, 0.4]) == [75, 25, 50, 100]
    assert _percentiles(spark, [0.5] * 7) == [100] * 7
    assert _percentiles(spark, [None, 0.1, float("nan"), 0.9]) == [None, 50, None, 100]


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.one_of(st.integers(0, 12).map(float), st.floats(0, 1)), min_size=1, max_size=120),
       buckets=st.sampled_from([2, 7, 1000]))
def test_percentiles_equal_the_brute_force_rank_for_any_values(spark, values, buckets):
    """Few ranges or many, ties or not: the bucketed computation is exact."""
    assert _percentiles(spark, values, buckets) == _expected(values)


def test_deciles_and_clv_score(spark):
    df = spark.createDataFrame([(p,) for p in (1, 10, 11, 55, 91, 100)], "percentile int")
    assert [r[0] for r in df.select(score.decile(F.col("percentile"))).collect()] == [1, 1, 2, 6, 10, 10]
    clv = spark.createDataFrame([("a", 5.0), ("b", 1.0), ("c", 3.0), ("d", 3.0)],
                                "profile_id string, prediction double")
    ranked = clv.transform(score.ranked("clv")).select("profile_id", "percentile", "decile", "score")
    assertDataFrameEqual(ranked, spark.createDataFrame(
        [("a", 100, 10, 100), ("b", 25, 3, 25), ("c", 75, 8, 75), ("d", 75, 8, 75)],
        "profile_id string, percentile int, decile int, score int"))


def test_conform_gives_every_scores_column_typed(spark):
    df = spark.createDataFrame([("p1", "CRMID", "c1", 0.25)], "profile_id string, primary_namespace string, "
                                                              "primary_id string, probability double")
    out = df.transform(score.conform("conversion", "conv", "3", "run9", dt.date(2026, 1, 1)))
    assert [(f.name, f.dataType) for f in out.schema] == [(f.name, f.dataType) for f in score.SCORES]
    row = out.first()
    assert (row["model"], row["model_version"], row["model_run_id"], row["kind"]) == ("conv", "3", "run9", "conversion")
    assert row["prediction"] is None and row["segment_name"] is None


# ------------------------------------------------------------------------------------------
# Factors


@pytest.fixture(scope="module")
def logistic(spark):
    """A logistic model where x raises the probability and z lowers it (hand-made data)."""
    rows = [(f"p{i}", float(i % 10), float((i * 7) % 5), 1.0 if (i % 10) - (i * 7) % 5 + (i % 3) > 4 else 0.0)
            for i in range(200)]
    train = spark.createDataFrame(rows, "profile_id string, x double, z double, label double")
    est = LogisticRegression(featuresCol="features", labelCol="label", regParam=0.0, maxIter=200)
    return models.supervised(["x", "z"], [], est, "logistic").fit(train)


def test_training_medians_come_from_the_fitted_imputer(logistic):
    medians = explain.training_medians(logistic)
    assert medians == {"x": 4.0, "z": 2.0}  # median of 0..9 repeated (Spark's lower median) and of 0..4


def test_factors_agree_in_sign_and_size_with_the_model(spark, logistic):
    """Hand check: with the fitted coefficients, p = sigmoid(b0 + bx*(x-mx)/sx + bz*(z-mz)/sz); the
    importance of x is p(x, z) - p(median x, z), and its sign is the sign of bx * (x - median)."""
    scaler, lr = logistic.stages[-2], logistic.stages[-1]
    bx, bz = lr.coefficients.toArray()
    assert bx > 0 > bz  # the data was made so
    (mx, mz), (sx, sz) = scaler.mean.toArray(), scaler.std.toArray()

    def p(x, z):
        return 1 / (1 + math.exp(-(lr.intercept + bx * (x - mx) / sx + bz * (z - mz) / sz)))

    profiles = spark.createDataFrame([("high", "CRMID", "c1", 9.0, 2.0), ("low", "CRMID", "c2", 0.0, 4.0),
                                      ("typical", "CRMID", "c3", 4.0, 2.0)],
                                     "profile_id string, primary_namespace string, primary_id string, "
                                     "x double, z double")
    out = {r["profile_id"]: r for r in score.probabilities(logistic, profiles, ["x", "z"], {"x": 4.0, "z": 2.0},
                                                           top=3).collect()}
    high = {f["feature"]: f for f in out["high"]["factors"]}
    assert set(high) == {"x"}  # z is at its median: no push either way
    assert high["x"]["value"] == 9.0
    assert high["x"]["importance"] == pytest.approx(p(9, 2) - p(4, 2), abs=1e-9)
    assert high["x"]["importance"] > 0
    low = out["low"]["factors"]
    assert [f["feature"] for f in low] == sorted(["x", "z"], key=lambda f: -abs({"x": p(0, 4) - p(4, 4),
                                                                                "z": p(0, 4) - p(0, 2)}[f]))
    by_name = {f["feature"]: f["importance"] for f in low}
    assert by_name["x"] == pytest.approx(p(0, 4) - p(4, 4), abs=1e-9) and by_name["x"] < 0
    assert by_name["z"] == pytest.approx(p(0, 4) - p(0, 2), abs=1e-9) and by_name["z"] < 0
    assert out["typical"]["factors"] == []
    assert out["high"]["probability"] == pytest.approx(p(9, 2), abs=1e-9)
    assert out["high"]["score"] == round(100 * p(9, 2))


def test_factors_are_capped_and_follow_importance_order(spark, logistic):
    profiles = spark.createDataFrame([("a", "ECID", "e", 9.0, 0.0)], "profile_id string, primary_namespace string, "
                                                                    "primary_id string, x double, z double")
    one = score.probabilities(logistic, profiles, ["x", "z"], {"x": 4.0, "z": 2.0}, top=1).first()
    both = score.probabilities(logistic, profiles, ["x", "z"], {"x": 4.0, "z": 2.0}, top=3).first()
    assert len(one["factors"]) == 1 and one["factors"][0] == both["factors"][0]
    assert abs(both["factors"][0]["importance"]) >= abs(both["factors"][1]["importance"])
    none = score.probabilities(logistic, profiles, ["x", "z"], {"x": 4.0, "z": 2.0}, top=0).first()
    assert none["factors"] == [] and none["probability"] == pytest.approx(both["probability"])


def test_candidates_take_the_most_important_features():
    importances = {"a": 0.1, "b_missing": -0.5, "c": 0.3, "b": 0.01}
    assert explain.candidates(importances, ["a", "b", "c", "d"], 3) == ["b", "c", "a"]
    assert explain.candidates({}, ["a", "b"], 5) == ["a", "b"]


# ------------------------------------------------------------------------------------------
# Drift


def test_psi_of_known_distributions():
    assert drift.psi({0: 0.5, 1: 0.5}, {0: 0.5, 1: 0.5}) == 0.0
    expected = sum((a - 0.25) * math.log(a / 0.25) for a in (0.1, 0.2, 0.3, 0.4))
    assert expected == pytest.approx(0.2282, abs=1e-4)  # worked by hand
    assert drift.psi({0: 0.25, 1: 0.25, 2: 0.25, 3: 0.25}, {0: 0.1, 1: 0.2, 2: 0.3, 3: 0.4}) == pytest.approx(expected)
    # An empty bin is floored, not infinite.
    assert 0 < drift.psi({0: 1.0}, {1: 1.0}) < 20


def test_stability_against_a_reference_in_spark(spark):
    """Reference: 1,000 uniform values in 4 quartile bins. Current: shares 0.1/0.2/0.3/0.4 of those bins."""
    base = spark.createDataFrame([(float(i), str(i % 2)) for i in range(1000)], "x double, c string")
    ref = drift.reference(base, ["x"], ["c"], bins=4)
    assert len(ref["x"]["edges"]) == 3
    assert ref["c"]["categories"] == ["0", "1"]
    assert drift.stability(base, ref) == {"x": pytest.approx(0.0, abs=1e-6), "c": pytest.approx(0.0, abs=1e-6)}
    edges = ref["x"]["edges"]
    inside = [edges[0] - 1, (edges[0] + edges[1]) / 2, (edges[1] + edges[2]) / 2, edges[2] + 1]
    shifted = [(inside[b], "2" if b == 3 else "0") for b, n in enumerate((10, 20, 30, 40)) for _ in range(n)]
    current = spark.createDataFrame(shifted, "x double, c string")
    psi = drift.stability(current, ref)
    shares = [float(ref["x"]["shares"][str(b)]) for b in range(4)]
    assert psi["x"] == pytest.approx(drift.psi(dict(enumerate(shares)), {0: 0.1, 1: 0.2, 2: 0.3, 3: 0.4}))
    assert psi["x"] == pytest.approx(0.2282, abs=0.01)
    # Category "2" was never seen: it counts in the missing/unseen bin, and "1" vanished.
    assert psi["c"] == pytest.approx(drift.psi({0: 0.5, 1: 0.5}, {0: 0.6, -1: 0.4}))
    nulls = spark.createDataFrame([(None, None)] * 10, "x double, c string")
    assert drift.stability(nulls, ref)["x"] > 5  # everything moved to the (empty) null bin
