"""Labels on hand-built event logs: window boundaries at D and D + horizon, goals, eligibility."""

from __future__ import annotations

import datetime as dt

import pytest
from enrich import labels, train
from enrich.config import Config, ModelConfig, load_config
from enrich.errors import ConfigError, InputError
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual
from test_features import events

D1, D2 = dt.date(2025, 3, 1), dt.date(2025, 3, 8)
H = 7

LOG = [
    ("p1", "a", "2025-02-28 23:59", "purchase", 10.0, ["A"]),  # before D1: a feature, never a label
    ("p1", "b", "2025-03-01 00:00", "purchase", 20.0, ["A"]),  # exactly D1: in D1's window
    ("p1", "c", "2025-03-07 23:59", "product", None, ["B"]),  # last minute of D1's window
    ("p1", "d", "2025-03-08 00:00", "purchase", 5.0, ["B"]),  # exactly D1 + 7: D2's window, not D1's
    ("p2", "e", "2025-03-14 23:59", "purchase", 300.0, ["C"]),  # last minute of D2's window
    ("p2", "f", "2025-03-15 00:00", "purchase", 900.0, ["C"]),  # D2 + 7: in no window
    ("p3", "g", "2025-03-03 12:00", "cart", None, ["A", "B"]),
]


def outcomes(spark, model: ModelConfig) -> list[tuple]:
    out = events(spark, LOG).transform(labels.outcomes([D1, D2], H, model.goal))
    return sorted(tuple(r) for r in out.collect())


def test_outcome_windows_are_d_inclusive_and_d_plus_horizon_exclusive(spark):
    assert outcomes(spark, ModelConfig()) == [
        ("p1", D1, 1, 20.0),
        ("p1", D2, 1, 5.0),
        ("p2", D2, 1, 300.0),
    ]


def test_goal_types_and_minimum_order_value(spark):
    cart_or_view = ModelConfig(goal={"event_types": ["commerce.productListAdds", "commerce.productViews"]})
    assert outcomes(spark, cart_or_view) == [("p1", D1, 1, 0.0), ("p3", D1, 1, 0.0)]
    big = ModelConfig(goal={"event_types": ["commerce.purchases"], "min_order_value": 10.0})
    assert outcomes(spark, big) == [("p1", D1, 1, 20.0), ("p2", D2, 1, 300.0)]


def test_goal_days_count_purchase_days_not_events(spark):
    # Two purchases on one day and one on the next: three events, two purchase days (BG/NBD's unit).
    log = [("p1", "a", "2025-03-02 09:00", "purchase", 10.0, ["A"]),
           ("p1", "b", "2025-03-02 18:00", "purchase", 15.0, ["A"]),
           ("p1", "c", "2025-03-03 01:00", "purchase", 5.0, ["A"])]
    out = events(spark, log).transform(labels.outcomes([D1], H, ModelConfig().goal, days=True))
    assert [tuple(r) for r in out.collect()] == [("p1", D1, 3, 2, 30.0)]


def test_previous_outcomes_are_the_window_just_before_d(spark):
    # [D - 7, D): for D1 the purchase a minute before D1; for D2 the one exactly at D1 (not D2's own).
    out = events(spark, LOG).transform(labels.previous_outcomes([D1, D2], H, ModelConfig().goal))
    assert sorted(tuple(r) for r in out.collect()) == [("p1", D1, 1, 10.0), ("p1", D2, 1, 20.0)]


def test_category_outcomes_count_interactions_per_window(spark):
    out = events(spark, LOG).transform(labels.category_outcomes([D1, D2], H))
    assert sorted(tuple(r) for r in out.collect()) == [
        ("p1", D1, "A", 1), ("p1", D1, "B", 1), ("p1", D2, "B", 1), ("p2", D2, "C", 1),
        ("p3", D1, "A", 1), ("p3", D1, "B", 1),
    ]


def feature_rows(spark) -> DataFrame:
    # (profile, as_of, days since last event, days since last purchase)
    return spark.createDataFrame([
        ("p1", D1, 1, 1), ("p2", D1, 50, None), ("p3", D1, 45, 46), ("p4", D1, None, None),
        ("p1", D2, 1, 1), ("p2", D2, 3, 3),
    ], "profile_id string, as_of_date date, days_since_last_event int, days_since_last_purchase int")


@pytest.mark.parametrize(("kind", "require", "expected"), [
    # Eligible: an event in the 45 days before D (45 days ago counts, 50 does not).
    ("conversion", None, [("p1", D1, 1.0), ("p3", D1, 0.0), ("p1", D2, 1.0), ("p2", D2, 1.0)]),
    # Churn: only profiles with a purchase in the look-back; label 1 = no goal event in the window.
    ("churn", None, [("p1", D1, 0.0), ("p1", D2, 0.0), ("p2", D2, 0.0)]),
    ("clv", None, [("p1", D1, 20.0), ("p3", D1, 0.0), ("p1", D2, 5.0), ("p2", D2, 300.0)]),
    ("conversion", "none", [("p1", D1, 1.0), ("p2", D1, 0.0), ("p3", D1, 0.0), ("p4", D1, 0.0),
                            ("p1", D2, 1.0), ("p2", D2, 1.0)]),
    # clv_btyd: every customer (a purchase at any time before D; p3's was 46 days ago), label = revenue.
    ("clv_btyd", None, [("p1", D1, 20.0), ("p3", D1, 0.0), ("p1", D2, 5.0), ("p2", D2, 300.0)]),
])
def test_labels_for_the_eligible_population(spark, kind, require, expected):
    model = ModelConfig(kind=kind, horizon_days=H, eligibility={"lookback_days": 45, "require": require})
    outcome = events(spark, LOG).transform(labels.outcomes([D1, D2], H, model.goal, days=kind == "clv_btyd"))
    rows = labels.labelled(feature_rows(spark), outcome, model)
    actual = rows.select("profile_id", "as_of_date", "label")
    assertDataFrameEqual(actual, spark.createDataFrame(expected, actual.schema))
    if kind == "clv_btyd":  # and the purchase days of the window
        days = {(r["profile_id"], r["as_of_date"]): r["purchases"] for r in rows.collect()}
        assert days == {("p1", D1): 1.0, ("p3", D1): 0.0, ("p1", D2): 1.0, ("p2", D2): 1.0}
    else:
        assert "purchases" not in rows.columns


def test_churn_label_is_one_for_a_buyer_who_stops(spark):
    model = ModelConfig(kind="churn", horizon_days=H)
    features = spark.createDataFrame([("p9", D1, 2, 2)], feature_rows(spark).schema)
    rows = labels.labelled(features, events(spark, LOG).transform(labels.outcomes([D1], H, model.goal)), model)
    assert [tuple(r) for r in rows.select("profile_id", "label").collect()] == [("p9", 1.0)]


def test_out_of_time_split_fits_on_earlier_dates_and_validates_on_the_latest(spark):
    rows = feature_rows(spark)
    fit, valid = train.out_of_time(rows, [D2, D1])
    assert {r[0] for r in fit.select("as_of_date").distinct().collect()} == {D1}
    assert {r[0] for r in valid.select("as_of_date").distinct().collect()} == {D2}
    assert fit.count() + valid.count() == rows.count()
    with pytest.raises(InputError, match="at least two as-of dates"):
        train.split_dates([D1])


def test_latest_window_must_end_before_the_last_event():
    train.check_horizon([D1, D2], 7, dt.date(2025, 3, 15))
    with pytest.raises(InputError, match=r"2025-03-08 needs events until 2025-03-15 .* last event is on 2025-03-14"):
        train.check_horizon([D1, D2], 7, dt.date(2025, 3, 14))


def test_too_few_labels_is_refused_with_the_counts():
    cfg = load_config([], ["model.kind=churn", "training.min_positives=500", "training.min_negatives=20"])
    counts = {"fit_positives": 800, "fit_negatives": 10, "validation_positives": 499, "validation_negatives": 30}
    with pytest.raises(InputError, match=r"10 negative labels in fit \(training.min_negatives 20\); "
                                         r"499 positive labels in validation \(training.min_positives 500\)"):
        train.check_label_counts(counts, cfg)


def test_model_config_refuses_an_algorithm_of_another_kind():
    with pytest.raises(ConfigError, match="algorithm 'als' does not train a churn model"):
        load_config([], ["model.kind=churn", "model.algorithm=als"])
    assert Config().model.estimator == "gbt"
    assert load_config([], ["model.kind=segments"]).model.active_require == "none"


def test_eligible_is_never_null(spark):
    rows = feature_rows(spark).where(F.col("profile_id") == "p4")
    assert rows.where(labels.eligible(ModelConfig())).count() == 0
    assert rows.where(~labels.eligible(ModelConfig())).count() == 1
