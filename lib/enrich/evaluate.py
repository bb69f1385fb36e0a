"""Model evaluation computed in Spark; only small summaries (bins, deciles) reach the driver.

Classification: AUC-ROC and AUC-PR (MLlib's evaluator), log loss and Brier score (aggregates),
lift and capture rate of the top decile (its threshold from `approxQuantile`), and a 1,000-bin
summary of the scores from which the ROC, precision-recall, gains and calibration plots are drawn.
Regression: RMSE, MAE, R2 (MLlib), Spearman rank correlation (MLlib's `Correlation`), normalized
Gini from 100 quantile bins, and predicted vs actual by decile. Ranking: precision@k and NDCG@k
(MLlib's `RankingEvaluator`). Clustering: silhouette.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")  # files only, never a display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from pyspark.ml.evaluation import (
    BinaryClassificationEvaluator,
    ClusteringEvaluator,
    RankingEvaluator,
    RegressionEvaluator,
)
from pyspark.ml.feature import Bucketizer, VectorAssembler
from pyspark.ml.stat import Correlation
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

_EPS = 1e-15
_BINS = 1000


@dataclass
class Evaluation:
    """Metrics of one scored validation set, and the small tables its plots are drawn from."""

    metrics: dict[str, float]
    bins: pd.DataFrame | None = None
    deciles: pd.DataFrame | None = None
    figures: dict[str, Figure] = field(default_factory=dict)


def auc(scored: DataFrame, score: Column | str, label: str = "label") -> tuple[float, float]:
    """(AUC-ROC, AUC-PR) of any real-valued score (higher = more likely positive)."""
    frame = scored.select(F.col(score).cast("double") if isinstance(score, str) else score.cast("double"),
                          F.col(label).cast("double").alias("label")).toDF("raw", "label")
    roc = BinaryClassificationEvaluator(rawPredictionCol="raw", labelCol="label", metricName="areaUnderROC")
    pr = BinaryClassificationEvaluator(rawPredictionCol="raw", labelCol="label", metricName="areaUnderPR")
    return roc.evaluate(frame), pr.evaluate(frame)


def classification(scored: DataFrame, probability: Column, label: str = "label") -> Evaluation:
    """Metrics of predicted probabilities against 0/1 labels."""
    df = scored.select(probability.cast("double").alias("p"), F.col(label).cast("double").alias("y"))
    roc, pr = auc(df, "p", "y")
    p = F.least(F.greatest(F.col("p"), F.lit(_EPS)), F.lit(1 - _EPS))
    row = df.agg(
        F.count(F.lit(1)).alias("n"), F.sum("y").alias("positives"),
        F.avg(-(F.col("y") * F.log(p) + (1 - F.col("y")) * F.log(1 - p))).alias("log_loss"),
        F.avg((F.col("p") - F.col("y")) ** 2).alias("brier"),
    ).first()
    n, positives = int(row["n"]), float(row["positives"] or 0)
    threshold = df.approxQuantile("p", [0.9], 0.001)[0]
    top = df.where(F.col("p") >= threshold).agg(F.count(F.lit(1)).alias("n"), F.sum("y").alias("pos")).first()
    base_rate = positives / n if n else 0.0
    top_rate = float(top["pos"] or 0) / top["n"] if top["n"] else 0.0
    bins = (
        df.groupBy(F.least(F.floor(F.col("p") * _BINS), F.lit(_BINS - 1)).cast("int").alias("bin"))
        .agg(F.count(F.lit(1)).alias("n"), F.sum("y").alias("positives"), F.sum("p").alias("sum_p"))
        .orderBy("bin").toPandas()
    )
    metrics = {
        "auc_roc": roc, "auc_pr": pr, "log_loss": float(row["log_loss"]), "brier": float(row["brier"]),
        "lift_top_decile": top_rate / base_rate if base_rate else 0.0,
        "capture_top_decile": float(top["pos"] or 0) / positives if positives else 0.0,
        "rows": float(n), "positive_rate": base_rate,
    }
    return Evaluation(metrics=metrics, bins=bins)


def _quantile_buckets(df: DataFrame, column: str, buckets: int) -> list[float]:
    cuts = sorted(set(df.approxQuantile(column, [i / buckets for i in range(1, buckets)], 0.001)))
    return [-math.inf, *cuts, math.inf]


def spearman(rows: DataFrame, a: str, b: str) -> float:
    """Spearman rank correlation of two numeric columns (MLlib ranks them distributed; NaN when one
    is constant; rows with a null are left out)."""
    df = rows.select(F.col(a).cast("double").alias("_a"), F.col(b).cast("double").alias("_b"))
    vectors = VectorAssembler(inputCols=["_a", "_b"], outputCol="_v", handleInvalid="skip").transform(df)
    return float(Correlation.corr(vectors, "_v", "spearman").first()[0][0, 1])


def regression(scored: DataFrame, prediction: str = "prediction", label: str = "label") -> Evaluation:
    """Metrics of predicted amounts against actual amounts."""
    df = scored.select(F.col(prediction).cast("double").alias("pred"), F.col(label).cast("double").alias("y"))
    metrics = {m: RegressionEvaluator(predictionCol="pred", labelCol="y", metricName=m).evaluate(df)
               for m in ("rmse", "mae", "r2")}
    metrics["spearman"] = spearman(df, "pred", "y")
    # Deciles of the prediction: mean predicted vs mean actual.
    decile_cuts = _quantile_buckets(df, "pred", 10)
    deciles = (
        Bucketizer(splits=decile_cuts, inputCol="pred", outputCol="decile").transform(df)
        .groupBy("decile").agg(F.avg("pred").alias("predicted"), F.avg("y").alias("actual"),
                               F.count(F.lit(1)).alias("n"))
        .orderBy("decile").toPandas()
    )
    metrics["gini"] = _normalized_gini(df)
    metrics["rows"] = float(df.count())
    return Evaluation(metrics=metrics, deciles=deciles)


def _cap_area(df: DataFrame, order: str) -> float:
    """Area under the cumulative-accuracy curve of `y` with rows sorted by `order`, descending,
    from 100 quantile bins of `order`."""
    cuts = _quantile_buckets(df, order, 100)
    table = (Bucketizer(splits=cuts, inputCol=order, outputCol="bucket").transform(df)
             .groupBy("bucket").agg(F.count(F.lit(1)).alias("n"), F.sum("y").alias("y"))
             .orderBy(F.desc("bucket")).toPandas())
    total_n, total_y = table["n"].sum(), table["y"].sum()
    if total_y <= 0 or total_n == 0:
        return 0.5
    x = np.concatenate([[0.0], table["n"].cumsum() / total_n])
    y = np.concatenate([[0.0], table["y"].cumsum() / total_y])
    return float(np.trapezoid(y, x))


def _normalized_gini(df: DataFrame) -> float:
    """Gini of the predicted order divided by the Gini of the perfect order (1 = perfect ranking)."""
    model = 2 * _cap_area(df, "pred") - 1
    perfect = 2 * _cap_area(df, "y") - 1
    return model / perfect if perfect > 0 else 0.0


def ranking(recommended: DataFrame, relevant: DataFrame, k: int) -> dict[str, float]:
    """precision@k and NDCG@k of `recommended` (profile_id, items array<double>, best first)
    against `relevant` (profile_id, items array<double>), over the profiles in `relevant`."""
    df = relevant.select("profile_id", F.col("items").alias("label")).join(
        recommended.select("profile_id", F.col("items").alias("prediction")), "profile_id", "left"
    ).select(F.coalesce("prediction", F.array().cast("array<double>")).alias("prediction"), "label")
    out = {}
    for metric, name in (("precisionAtK", "precision_at_k"), ("ndcgAtK", "ndcg_at_k")):
        out[name] = RankingEvaluator(predictionCol="prediction", labelCol="label", metricName=metric, k=k).evaluate(df)
    return out


def silhouette(clustered: DataFrame, features: str, prediction: str) -> float:
    """Silhouette (squared Euclidean) of a clustering."""
    return ClusteringEvaluator(featuresCol=features, predictionCol=prediction).evaluate(clustered)


# ------------------------------------------------------------------------------------------
# Plots (drawn from the binned tables above)


def _curves(bins: pd.DataFrame) -> dict[str, np.ndarray]:
    """Cumulative counts from the highest-score bin down."""
    ordered = bins.sort_values("bin", ascending=False)
    pos = ordered["positives"].to_numpy(dtype=float)
    neg = ordered["n"].to_numpy(dtype=float) - pos
    tp, fp = np.cumsum(pos), np.cumsum(neg)
    total_pos, total_neg = max(tp[-1], 1.0), max(fp[-1], 1.0)
    return {"tpr": tp / total_pos, "fpr": fp / total_neg, "precision": tp / np.maximum(tp + fp, 1.0),
            "share": (tp + fp) / max(tp[-1] + fp[-1], 1.0)}


def classification_figures(ev: Evaluation, title: str) -> dict[str, Figure]:
    """ROC, precision-recall, cumulative gains and calibration plots."""
    c = _curves(ev.bins)
    figs: dict[str, Figure] = {}
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(np.concatenate([[0], c["fpr"]]), np.concatenate([[0], c["tpr"]]),
            label=f"model (AUC {ev.metrics['auc_roc']:.3f})")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="random")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{title}: ROC")
    ax.legend(loc="lower right")
    figs["roc.png"] = fig
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(c["tpr"], c["precision"], label=f"model (AUC-PR {ev.metrics['auc_pr']:.3f})")
    ax.axhline(ev.metrics["positive_rate"], ls="--", color="grey", label="base rate")
    ax.set(xlabel="recall", ylabel="precision", title=f"{title}: precision-recall")
    ax.legend(loc="upper right")
    figs["precision_recall.png"] = fig
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(np.concatenate([[0], c["share"]]), np.concatenate([[0], c["tpr"]]), label="model")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="random")
    ax.set(xlabel="share of profiles (highest scores first)", ylabel="share of positives captured",
           title=f"{title}: cumulative gains (top-decile lift {ev.metrics['lift_top_decile']:.2f})")
    ax.legend(loc="lower right")
    figs["cumulative_gains.png"] = fig
    ten = ev.bins.assign(decile=(ev.bins["bin"] * 10 // _BINS)).groupby("decile")[["n", "positives", "sum_p"]].sum()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(ten["sum_p"] / ten["n"], ten["positives"] / ten["n"], "o-", label="model")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
    ax.set(xlabel="mean predicted probability", ylabel="observed positive rate", title=f"{title}: calibration")
    ax.legend(loc="upper left")
    figs["calibration.png"] = fig
    return figs


def regression_figures(ev: Evaluation, title: str) -> dict[str, Figure]:
    """Predicted vs actual by decile of the prediction."""
    d = ev.deciles
    fig, ax = plt.subplots(figsize=(6, 4))
    x = np.arange(len(d))
    ax.bar(x - 0.2, d["predicted"], width=0.4, label="mean predicted")
    ax.bar(x + 0.2, d["actual"], width=0.4, label="mean actual")
    ax.set(xlabel="decile of prediction (lowest first)", ylabel="amount", title=f"{title}: predicted vs actual")
    ax.legend(loc="upper left")
    return {"predicted_vs_actual.png": fig}


def importance_figure(names: Sequence[str], values: Sequence[float], title: str, top: int = 20) -> Figure:
    """Horizontal bars of the largest absolute importances."""
    order = np.argsort(np.abs(np.asarray(values)))[::-1][:top][::-1]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(order) + 1.2))
    ax.barh([names[i] for i in order], [values[i] for i in order])
    ax.set(xlabel="importance", title=f"{title}: feature importances")
    fig.tight_layout()
    return fig
