"""Training: point-in-time training sets, fitting, out-of-time evaluation against a baseline and
(on generated data) against the truth. No I/O here: the job reads the tables and logs to MLflow.

The latest as-of date is the validation window; every model is fitted on the earlier dates only
and evaluated on the latest one, so validation is always out of time. The registered model is the
one that was validated (it is not re-fitted on the validation date).

Hyperparameter search (a `model.grid` with more than one point) is a CrossValidator whose folds
are the fitting as-of dates (`foldCol`): no date is both fitted and scored within one fold. With a
single fitting date it is a TrainValidationSplit.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pyspark import StorageLevel
from pyspark.ml import Estimator, PipelineModel
from pyspark.ml.evaluation import BinaryClassificationEvaluator, RegressionEvaluator
from pyspark.ml.regression import IsotonicRegression
from pyspark.ml.tuning import CrossValidator, ParamGridBuilder, TrainValidationSplit
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from enrich import clv_btyd, datagen, evaluate, identity, labels, models, xdm
from enrich.config import Config, ModelConfig
from enrich.errors import InputError

log = logging.getLogger(__name__)

CLASSIFICATION = ("conversion", "churn")
# Main metric per kind and whether higher is better: what promotion compares.
MAIN_METRIC: dict[str, tuple[str, bool]] = {
    "conversion": ("auc_roc", True),
    "churn": ("auc_roc", True),
    "clv": ("rmse", False),
    "clv_btyd": (clv_btyd.MAIN_METRIC, False),
    "affinity": ("ndcg_at_k", True),
    "segments": ("silhouette", True),
}
_NEVER = 100_000  # days: "never happened" for recency baselines


@dataclass
class TrainResult:
    """A fitted model with everything the job logs about it."""

    model: PipelineModel | clv_btyd.BtydModel
    metrics: dict[str, float]
    main_metric: str
    higher_is_better: bool
    input_columns: list[str]
    params: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    importances: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    validation: DataFrame | None = None
    """The validation rows (a champion is scored on the same ones)."""
    context: dict[str, Any] = field(default_factory=dict)
    """What `main_metric_of` needs beyond the rows (affinity)."""

    @property
    def main(self) -> float:
        return self.metrics[self.main_metric]

    @property
    def baseline(self) -> float:
        return self.metrics[f"baseline_{self.main_metric}"]

    @property
    def ceiling(self) -> float | None:
        return self.metrics.get(f"truth_{self.main_metric}")


def check_horizon(dates: Sequence[dt.date], horizon_days: int, last_event_day: dt.date) -> None:
    """The latest outcome window must be complete: D + horizon <= the last event date."""
    latest = max(dates)
    if latest + dt.timedelta(days=horizon_days) > last_event_day:
        raise InputError(
            f"training.as_of_dates: the latest as-of date {latest} needs events until "
            f"{latest + dt.timedelta(days=horizon_days)} (horizon {horizon_days} days), but the last event is on "
            f"{last_event_day}; use an earlier date or a shorter model.horizon_days")


def split_dates(dates: Sequence[dt.date]) -> tuple[list[dt.date], dt.date]:
    """(fitting dates, validation date): the latest date validates, the others are fitted on."""
    ordered = sorted(set(dates))
    if len(ordered) < 2:
        raise InputError(f"training.as_of_dates: need at least two as-of dates (fitting, then validation), "
                         f"got {[str(d) for d in ordered]}")
    return ordered[:-1], ordered[-1]


def out_of_time(rows: DataFrame, dates: Sequence[dt.date]) -> tuple[DataFrame, DataFrame]:
    """(fitting rows, validation rows) by as-of date; never a random row split across time."""
    fitting, validation = split_dates(dates)
    return rows.where(F.col("as_of_date").isin(fitting)), rows.where(F.col("as_of_date") == F.lit(validation))


def feature_columns(schema: StructType, model: ModelConfig) -> list[str]:
    """The configured feature list (checked against the table), or every numeric feature."""
    available = models.numeric_features([(f.name, f.dataType) for f in schema.fields])
    if model.features is None:
        return available
    unknown = [c for c in model.features if c not in available]
    if unknown:
        raise InputError(f"model.features: {unknown} are not numeric columns of the feature table "
                         f"(it has: {', '.join(available)})")
    return list(model.features)


def check_label_counts(counts: dict[str, int], cfg: Config) -> None:
    """Refuse to train on too few labels, naming what is missing and where."""
    kind, t = cfg.model.kind, cfg.training
    problems = []
    for part in ("fit", "validation"):
        if kind in CLASSIFICATION:
            if counts[f"{part}_positives"] < t.min_positives:
                problems.append(f"{counts[f'{part}_positives']:,} positive labels in {part} (training.min_positives "
                                f"{t.min_positives:,})")
            if counts[f"{part}_negatives"] < t.min_negatives:
                problems.append(f"{counts[f'{part}_negatives']:,} negative labels in {part} (training.min_negatives "
                                f"{t.min_negatives:,})")
        elif counts[f"{part}_positives"] < t.min_positives:
            what = {"clv": "profiles with revenue", "clv_btyd": "customers with revenue",
                    "affinity": "profiles with interactions"}.get(kind, "profiles")
            problems.append(f"{counts[f'{part}_positives']:,} {what} in {part} (training.min_positives "
                            f"{t.min_positives:,})")
    if problems:
        raise InputError(f"too few labels to train {cfg.model.kind} model '{cfg.model.name or kind}': "
                         + "; ".join(problems))


def _label_counts(fit: DataFrame, valid: DataFrame) -> dict[str, int]:
    counts = {}
    for part, df in (("fit", fit), ("validation", valid)):
        row = df.agg(F.count(F.lit(1)).alias("n"), F.count_if(F.col("label") > 0).alias("pos")).first()
        counts[f"{part}_rows"] = int(row["n"])
        counts[f"{part}_positives"] = int(row["pos"])
        counts[f"{part}_negatives"] = int(row["n"]) - int(row["pos"])
    return counts


def _nullable(fit: DataFrame, features: Sequence[str]) -> list[str]:
    """The features with a null somewhere in the fitting rows (they get a missing indicator)."""
    row = fit.agg(*[F.count_if(F.col(c).isNull()).alias(c) for c in features]).first()
    return [c for c in features if row[c]]


def _grid(est: Estimator, grid: dict[str, list[Any]]) -> list[dict]:
    builder = ParamGridBuilder()
    for name, values in grid.items():
        models.with_params(est, {name: values[0]})  # checks the name
        builder = builder.addGrid(est.getParam(name), values)
    return builder.build()


def _search(pipeline: Any, est: Estimator, evaluator: Any, fit: DataFrame, *,
            fitting_dates: Sequence[dt.date], cfg: Config) -> tuple[PipelineModel, dict[str, Any]]:
    """Fit the pipeline, searching `model.grid` when it has more than one point; the chosen params."""
    grid = cfg.model.grid
    maps = _grid(est, grid)
    if len(maps) <= 1:
        for m in maps:  # a one-point grid is a fixed setting
            for param, value in m.items():
                est.set(param, value)
        return pipeline.fit(fit), {k: v[0] for k, v in grid.items()}
    if len(fitting_dates) >= 2:
        fold = F.array_position(F.array(*[F.lit(d) for d in fitting_dates]), F.col("as_of_date")) - 1
        search = CrossValidator(estimator=pipeline, estimatorParamMaps=maps, evaluator=evaluator,
                                numFolds=len(fitting_dates), foldCol="fold", parallelism=cfg.training.parallelism,
                                seed=cfg.training.seed)
        fitted = search.fit(fit.withColumn("fold", fold.cast("int")))
        scores = fitted.avgMetrics
    else:
        search = TrainValidationSplit(estimator=pipeline, estimatorParamMaps=maps, evaluator=evaluator,
                                      trainRatio=0.75, parallelism=cfg.training.parallelism, seed=cfg.training.seed)
        fitted = search.fit(fit)
        scores = fitted.validationMetrics
    best = max(range(len(maps)), key=lambda i: scores[i] if evaluator.isLargerBetter() else -scores[i])
    chosen = {param.name: value for param, value in maps[best].items()}
    log.info("search: %d candidates, chosen %s (%s %.4f)", len(maps), chosen, evaluator.getMetricName(), scores[best])
    return fitted.bestModel, chosen


def _importances(model: PipelineModel, names: Sequence[str]) -> dict[str, float]:
    """Tree importances, or coefficients (on standardized inputs) for linear models."""
    for stage in reversed(model.stages):
        if hasattr(stage, "featureImportances"):
            values = stage.featureImportances.toArray()
        elif hasattr(stage, "coefficients"):
            values = stage.coefficients.toArray()
        else:
            continue
        return {n: float(v) for n, v in zip(names, values, strict=True)}
    return {}


def truth_profiles(truth: DataFrame) -> DataFrame:
    """The generator's people keyed by the `profile_id` the features job gives them."""
    known = identity.profile_id(F.lit(xdm.NS_CRMID), F.col("crm_id"))
    anonymous = identity.profile_id(F.lit(xdm.NS_ECID), F.get(F.col("ecids"), 0))
    return truth.withColumn("profile_id", F.when(F.col("known"), known).otherwise(anonymous))


def _truth_for(truth: DataFrame, as_of: dt.date, horizon: int) -> DataFrame:
    end = as_of + dt.timedelta(days=horizon)
    keyed = truth_profiles(truth)
    outcomes = keyed.transform(datagen.true_outcomes(as_of, horizon, end))
    return keyed.select("profile_id", "profile_key", "favorite_category", "second_category").join(
        outcomes, "profile_key")


def _truth_models_goal(model: ModelConfig) -> bool:
    """The generator's truth describes purchases of any value: the ceiling exists only for that goal."""
    return model.goal.event_types == [xdm.EVENT_PURCHASE] and model.goal.min_order_value is None


def _classification_baseline(kind: str) -> Column:
    """Recency rank: recently active profiles convert; long-silent buyers churn."""
    if kind == "conversion":
        return -F.coalesce(F.col("days_since_last_event"), F.lit(_NEVER))
    return F.coalesce(F.col("days_since_last_purchase"), F.lit(_NEVER)).cast("double")


def _previous_window_spend(horizon: int, windows: Sequence[int]) -> Column:
    """Spend in the previous window of the horizon's length, from the closest feature window."""
    w = min((w for w in windows if w >= horizon), default=max(windows))
    return F.col(f"revenue_{w}d") * (horizon / w)


def _windows(schema: StructType) -> list[int]:
    return sorted(int(f.name[len("revenue_"):-1]) for f in schema.fields
                  if f.name.startswith("revenue_") and f.name.endswith("d"))


def in_stable_order(rows: DataFrame) -> DataFrame:
    """`rows` partitioned by profile and sorted within each partition: an order fixed by the data.

    Learners add up statistics row by row, and the rows of a shuffle arrive in whatever order the
    blocks were fetched, which differs between runs and between local mode and a cluster. A float
    sum in another order can flip a near-tie between two splits (count features that cut the
    training rows identically) and give a different tree: two local runs of one GBT differed by 0.3%
    in RMSE. In a fixed order each partition's sums are fixed; with the same data, seed and
    `spark.sql.shuffle.partitions` the model is the same on a laptop and on a cluster (tested with
    two partitions). Spark still combines partitions' results in arrival order, so with many
    partitions the last bits, and rarely a tie, can still differ.
    """
    return rows.repartition("profile_id").sortWithinPartitions("profile_id", "as_of_date")


def train_supervised(rows: DataFrame, dates: Sequence[dt.date], cfg: Config,
                     truth: DataFrame | None = None) -> TrainResult:
    """conversion, churn or clv: `rows` are eligible feature rows with `label` (see `labels.labelled`)."""
    model_cfg = cfg.model
    kind, algorithm = model_cfg.kind, model_cfg.estimator
    fitting_dates, validation_date = split_dates(dates)
    fit, valid = out_of_time(rows, dates)
    # Kept: counted, checked for nulls and fitted (once per fold and grid point) after one shuffle.
    fit = in_stable_order(fit).persist(StorageLevel.MEMORY_AND_DISK)
    counts = _label_counts(fit, valid)
    check_label_counts(counts, cfg)
    features = feature_columns(rows.schema, model_cfg)
    nullable = _nullable(fit, features)
    classify = kind in CLASSIFICATION
    est = models.estimator(kind, algorithm, model_cfg.params, cfg.training.seed)
    if classify and model_cfg.class_weight == "balanced":
        n, pos = counts["fit_rows"], counts["fit_positives"]
        fit = fit.withColumn("weight", F.when(F.col("label") > 0, n / (2.0 * pos)).otherwise(n / (2.0 * (n - pos))))
        est.set(est.getParam("weightCol"), "weight")
    calibration = None
    if classify and model_cfg.calibrate:
        # Held out by profile, so a profile's rows of several dates are on one side only.
        bucket = F.pmod(F.xxhash64("profile_id", F.lit(cfg.training.seed)), F.lit(1000))
        held = bucket < cfg.training.calibration_fraction * 1000
        calibration, fit = fit.where(held), fit.where(~held)
    pipeline = models.supervised(features, nullable, est, algorithm)
    evaluator = (BinaryClassificationEvaluator(rawPredictionCol="probability", labelCol="label")
                 if classify else RegressionEvaluator(predictionCol="prediction", labelCol="label", metricName="rmse"))
    fitted, chosen = _search(pipeline, est, evaluator, fit, fitting_dates=fitting_dates, cfg=cfg)
    if calibration is not None:
        iso = IsotonicRegression(featuresCol="probability", featureIndex=1, labelCol="label",
                                 predictionCol="calibrated_probability")
        fitted = PipelineModel(stages=[*fitted.stages, iso.fit(fitted.transform(calibration))])
    metrics, figures = _evaluate_supervised(fitted, valid, validation_date, cfg, truth)
    names = models.assembled_names(features, nullable)
    importances = _importances(fitted, names)
    if importances:
        figures["feature_importances.png"] = evaluate.importance_figure(
            list(importances), list(importances.values()), f"{model_cfg.name or kind} ({validation_date})")
    main, higher = MAIN_METRIC[kind]
    fit.unpersist()
    return TrainResult(model=fitted, metrics=metrics, main_metric=main, higher_is_better=higher,
                       input_columns=features, params=chosen, figures=figures, importances=importances,
                       counts=counts, validation=valid)


def _evaluate_supervised(fitted: PipelineModel, valid: DataFrame, validation_date: dt.date, cfg: Config,
                         truth: DataFrame | None) -> tuple[dict[str, float], dict[str, Any]]:
    """Model metrics on the validation rows, the baseline's, and the truth's (the ceiling)."""
    model_cfg = cfg.model
    kind = model_cfg.kind
    scored = fitted.transform(valid)
    title = f"{model_cfg.name or kind} ({validation_date})"
    truth_valid = (_truth_for(truth, validation_date, model_cfg.horizon_days)
                   if truth is not None and _truth_models_goal(model_cfg) else None)
    if kind in CLASSIFICATION:
        ev = evaluate.classification(scored, models.positive_probability(scored))
        figures = evaluate.classification_figures(ev, title)
        metrics = dict(ev.metrics)
        roc, pr = evaluate.auc(valid, _classification_baseline(kind))
        metrics.update(baseline_auc_roc=roc, baseline_auc_pr=pr)
        if truth_valid is not None:
            p = F.col("p_purchase") if kind == "conversion" else 1 - F.col("p_purchase")
            roc, pr = evaluate.auc(valid.join(truth_valid, "profile_id"), p)
            metrics.update(truth_auc_roc=roc, truth_auc_pr=pr)
    else:
        ev = evaluate.regression(scored)
        figures = evaluate.regression_figures(ev, title)
        metrics = dict(ev.metrics)
        baseline = valid.withColumn("prediction", _previous_window_spend(model_cfg.horizon_days,
                                                                         _windows(valid.schema)))
        metrics.update({f"baseline_{k}": v for k, v in evaluate.regression(baseline).metrics.items() if k != "rows"})
        if truth_valid is not None:
            ceiling = valid.join(truth_valid, "profile_id").withColumn("prediction", F.col("expected_spend"))
            metrics.update({f"truth_{k}": v for k, v in evaluate.regression(ceiling).metrics.items() if k != "rows"})
    return metrics, figures


def main_metric_of(model: PipelineModel, rows: DataFrame, cfg: Config, **context: Any) -> float:
    """The main metric of any fitted model of this kind on validation rows (to compare a champion)."""
    kind = cfg.model.kind
    if kind in CLASSIFICATION:
        scored = model.transform(rows)
        return evaluate.auc(scored, models.positive_probability(scored))[0]
    if kind == "clv":
        return evaluate.regression(model.transform(rows)).metrics["rmse"]
    if kind == "clv_btyd":
        return clv_btyd.main_metric(model, rows)
    if kind == "affinity":
        recs = recommend(model, context["profiles"], context["categories"], cfg.model.top_k, context["popular"])
        return evaluate.ranking(recs, context["relevant"], cfg.model.top_k)["ndcg_at_k"]
    return evaluate.silhouette(model.transform(rows), "segment_features", "prediction")


# ------------------------------------------------------------------------------------------
# Lifetime value, BG/NBD + Gamma-Gamma


def train_btyd(rows: DataFrame, dates: Sequence[dt.date], cfg: Config, truth: DataFrame | None = None) -> TrainResult:
    """clv_btyd: `rows` are eligible customers' feature rows with `label` (revenue), `purchases`
    (purchase days) in the outcome window and the same two of the window before
    (`previous_purchases`, `previous_revenue`: the baseline). Fitted on the latest fitting date
    (see `clv_btyd`), validated on the validation date."""
    model_cfg = cfg.model
    fitting_dates, validation_date = split_dates(dates)
    fit, valid = out_of_time(rows, dates)
    counts = _label_counts(fit.where(F.col("as_of_date") == F.lit(fitting_dates[-1])), valid)
    check_label_counts(counts, cfg)
    model, fit_metrics, where = clv_btyd.fit(rows, fitting_dates[-1], model_cfg)
    valid = valid.persist(StorageLevel.MEMORY_AND_DISK)  # scored for metrics, drift and the champion
    scored = model.transform(valid).persist(StorageLevel.MEMORY_AND_DISK)
    metrics, table = clv_btyd.validation_metrics(scored)
    metrics.update(fit_metrics)
    if truth is not None and _truth_models_goal(model_cfg):
        truth_valid = _truth_for(truth, validation_date, model_cfg.horizon_days)
        error = F.col("expected_purchase_days") - F.col("purchases")  # the generator's expected purchase days
        ceiling = valid.join(truth_valid, "profile_id").agg(
            F.sqrt(F.avg(error**2)).alias("rmse"), F.avg(F.abs(error)).alias("mae"),
            F.sqrt(F.avg((F.col("expected_spend") - F.col("label")) ** 2)).alias("spend")).first()
        metrics.update(truth_rmse_purchases=float(ceiling["rmse"]), truth_mae_purchases=float(ceiling["mae"]),
                       truth_spend_rmse=float(ceiling["spend"]))
    scored.unpersist()
    title = f"{model_cfg.name or model_cfg.kind} ({validation_date})"
    figures = {"purchases_by_frequency.png": clv_btyd.frequency_figure(table, title)}
    main, higher = MAIN_METRIC["clv_btyd"]
    return TrainResult(model=model, metrics=metrics, main_metric=main, higher_is_better=higher,
                       input_columns=list(clv_btyd.INPUTS), params={**model.mlflow_params, **where}, figures=figures,
                       counts=counts, validation=valid, context={"purchases_by_frequency": table})


# ------------------------------------------------------------------------------------------
# Affinity


def interactions(features: DataFrame, windows: Sequence[int]) -> DataFrame:
    """(profile_id, category, rating): recency-weighted category shares (the features' affinity as
    of D) scaled by how active the profile was, as implicit feedback."""
    activity = F.log1p(F.col(f"events_{max(windows)}d").cast("double"))
    return features.select("profile_id", activity.alias("_activity"),
                           F.explode("category_affinity").alias("category", "share")).select(
        "profile_id", "category", (F.col("share") * F.col("_activity")).alias("rating")
    ).where(F.col("rating") > 0)


def recommend(model: PipelineModel, profiles: DataFrame, categories: Sequence[str], k: int,
              popular: Sequence[str]) -> DataFrame:
    """`profiles`' columns, `items` and `recommendations`: each profile's top-k categories, best
    first, as item ids (array<double>, for ranking metrics) and as `{category, score}` structs.

    Scored through the whole fitted pipeline, so the same code serves any version. Profiles the
    model never saw (cold start) get the most popular categories, with a null score.
    """
    pairs = profiles.select("profile_id", F.explode(F.array(*[F.lit(c) for c in categories])).alias("category"))
    scored = model.transform(pairs)
    rank = F.row_number().over(Window.partitionBy("profile_id").orderBy(F.desc("prediction"), "category"))
    top = (scored.where(F.col("prediction") > 0).withColumn("r", rank).where(F.col("r") <= k)
           .groupBy("profile_id").agg(F.sort_array(F.collect_list(F.struct("r", "item", "category", "prediction")))
                                      .alias("_top")))
    fallback = F.array(*[F.struct(models.item_id(F.lit(c)).alias("item"), F.lit(c).alias("category"),
                                  F.lit(None).cast("float").alias("prediction")) for c in popular[:k]])
    chosen = F.coalesce(F.transform("_top", lambda e: F.struct(e["item"].alias("item"), e["category"].alias("category"),
                                                               e["prediction"].alias("prediction"))), fallback)
    return profiles.join(top, "profile_id", "left").select(
        *profiles.columns,
        F.transform(chosen, lambda e: e["item"].cast("double")).alias("items"),
        F.transform(chosen, lambda e: F.struct(e["category"].alias("category"),
                                               e["prediction"].cast("double").alias("score"))).alias("recommendations"))


def relevant_items(outcomes: DataFrame) -> DataFrame:
    """(profile_id, items): the categories each profile interacted with in the window."""
    return outcomes.groupBy("profile_id").agg(
        F.collect_set(models.item_id(F.col("category")).cast("double")).alias("items"))


@dataclass
class AffinityData:
    """What affinity training and evaluation read: fitting interactions, validation profiles and
    their window's interactions, and the category list."""

    fit: DataFrame  # profile_id, category, rating
    profiles: DataFrame  # profile_id of validation profiles (eligible at the validation date)
    relevant: DataFrame  # profile_id, items
    categories: list[str]
    popular: list[str]


def affinity_data(features: DataFrame, outcomes: DataFrame, dates: Sequence[dt.date], cfg: Config) -> AffinityData:
    """Fit on the interactions as of the latest fitting date; validate on the window after the
    validation date, for profiles eligible then. `outcomes` from `labels.category_outcomes`."""
    fitting_dates, validation_date = split_dates(dates)
    windows = _windows(features.schema)
    eligible = features.where(labels.eligible(cfg.model))
    fit = interactions(eligible.where(F.col("as_of_date") == F.lit(fitting_dates[-1])), windows)
    profiles = eligible.where(F.col("as_of_date") == F.lit(validation_date)).select("profile_id")
    relevant = relevant_items(outcomes.where(F.col("as_of_date") == F.lit(validation_date))
                              .join(profiles, "profile_id"))
    popularity = fit.groupBy("category").agg(F.sum("rating").alias("w")).orderBy(F.desc("w"), "category").collect()
    return AffinityData(fit=fit, profiles=profiles, relevant=relevant,
                        categories=[r["category"] for r in popularity], popular=[r["category"] for r in popularity])


def train_affinity(data: AffinityData, cfg: Config, truth: DataFrame | None = None) -> TrainResult:
    """ALS on implicit feedback; precision@k and NDCG@k against the validation window, compared
    with recommending the most popular categories to everyone."""
    k = cfg.model.top_k
    fit_users = data.fit.select("profile_id").distinct().count()
    counts = {"fit_rows": data.fit.count(), "fit_positives": fit_users,
              "validation_rows": data.profiles.count(), "validation_positives": data.relevant.count()}
    check_label_counts(counts, cfg)
    est = models.affinity(cfg.model.params, cfg.training.seed)
    fitted = est.fit(data.fit)
    recs = recommend(fitted, data.profiles, data.categories, k, data.popular)
    metrics = evaluate.ranking(recs, data.relevant, k)
    popular = data.profiles.select("profile_id", F.array(*[models.item_id(F.lit(c)).cast("double")
                                                           for c in data.popular[:k]]).alias("items"))
    metrics.update({f"baseline_{m}": v for m, v in evaluate.ranking(popular, data.relevant, k).items()})
    if truth is not None:
        # The generator's two favourite categories, then the most popular others.
        keyed = truth_profiles(truth)
        rest = [F.lit(c) for c in data.popular]
        ranked = F.slice(F.array_distinct(F.array(F.col("favorite_category"), F.col("second_category"), *rest)), 1, k)
        ideal = data.profiles.join(keyed, "profile_id").select(
            "profile_id", F.transform(ranked, lambda c: models.item_id(c).cast("double")).alias("items"))
        metrics.update({f"truth_{m}": v for m, v in evaluate.ranking(ideal, data.relevant, k).items()})
    metrics["categories"] = float(len(data.categories))
    context = {"profiles": data.profiles, "categories": data.categories, "popular": data.popular,
               "relevant": data.relevant}
    return TrainResult(model=fitted, metrics=metrics, main_metric="ndcg_at_k", higher_is_better=True,
                       input_columns=["profile_id", "category"], params=dict(cfg.model.params), counts=counts,
                       context=context)


# ------------------------------------------------------------------------------------------
# Segments


def train_segments(rows: DataFrame, dates: Sequence[dt.date], cfg: Config) -> TrainResult:
    """KMeans for each k in `model.k_range` on the fitting dates; k chosen by the silhouette on
    the validation date; segments named from their centroids."""
    missing = [c for c in models.SEGMENT_COLUMNS if c not in rows.columns]
    if missing:
        raise InputError(f"segments need feature columns {missing} (features.windows_days must include 90 and 365)")
    fit, valid = out_of_time(rows, dates)
    fit = in_stable_order(fit).persist()
    counts = {"fit_rows": fit.count(), "validation_rows": valid.count()}
    counts["fit_positives"], counts["validation_positives"] = counts["fit_rows"], counts["validation_rows"]
    check_label_counts(counts, cfg)
    low, high = cfg.model.k_range
    silhouettes: dict[int, float] = {}
    fitted_by_k: dict[int, PipelineModel] = {}
    for k in range(low, high + 1):
        fitted_by_k[k] = models.segments(k, cfg.model.params, cfg.training.seed).fit(fit)
        silhouettes[k] = evaluate.silhouette(fitted_by_k[k].transform(valid), "segment_features", "prediction")
        log.info("segments: k=%d silhouette %.4f", k, silhouettes[k])
    best = max(silhouettes, key=lambda k: (silhouettes[k], -k))
    fitted = fitted_by_k[best]
    names = models.segment_names([list(c) for c in fitted.stages[-1].clusterCenters()])
    named = models.with_segment_names(fitted, names)
    scored = fitted.transform(valid)
    # Baseline: the same number of segments assigned at random (by a hash of the profile).
    random = scored.withColumn("prediction", F.pmod(F.xxhash64("profile_id"), F.lit(best)).cast("int"))
    metrics = {"silhouette": silhouettes[best], "k": float(best),
               "baseline_silhouette": evaluate.silhouette(random, "segment_features", "prediction"),
               **{f"silhouette_k{k}": v for k, v in silhouettes.items()}}
    sizes = dict(named.transform(valid).groupBy("segment_name").count().collect())
    metrics.update({f"share_{i}": sizes.get(n, 0) / max(counts["validation_rows"], 1) for i, n in enumerate(names)})
    fit.unpersist()
    return TrainResult(model=named, metrics=metrics, main_metric="silhouette", higher_is_better=True,
                       input_columns=["profile_id", *models.SEGMENT_COLUMNS],
                       params={"k": best, "segment_names": names}, counts=counts, validation=valid)
