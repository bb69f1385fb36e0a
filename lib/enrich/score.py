"""Scoring: a registered model's output turned into the columns of the scores table.

Every model kind gives rows of one shape (`SCORES`), so the table, the drift check and the
published records treat all models alike:

- conversion / churn: `probability` (of the goal / of churning, calibrated when the model is),
  `score` = round(100 x probability), `percentile` and `decile` of the probability, `factors`;
- clv: `prediction` (currency over the model's horizon, floored at 0), `score` = `percentile`
  (a rank score, 1-100), `decile`, `factors`;
- clv_btyd: `prediction` (discounted lifetime value over `model.clv.months`), `p_alive`,
  `expected_purchases` (purchase days in the model's horizon), `score` = `percentile`, `decile`;
- affinity: `recommendations` (top-k categories, best first, with the model's score; profiles the
  model has not seen get the most popular categories with a null score);
- segments: `segment_id`, `segment_name`.

`percentile` is the percentile rank within this scoring run: ceil(100 x share of scored profiles
whose value is at or below this profile's), so it runs 1-100, ties share one percentile, and the
highest value is always 100. `decile` = ceil(percentile / 10), so decile 10 holds the top scores.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence

from pyspark.ml import PipelineModel
from pyspark.ml.feature import Bucketizer
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    DateType,
    DoubleType,
    IntegerType,
    StringType,
    StructField,
    StructType,
)

from enrich import clv_btyd, explain, models
from enrich import train as training
from enrich.config import AMOUNT_KINDS

KEYS = ("profile_id", "primary_namespace", "primary_id")
FACTOR = StructType([StructField("feature", StringType()), StructField("value", DoubleType()),
                     StructField("importance", DoubleType())])
RECOMMENDATION = StructType([StructField("category", StringType()), StructField("score", DoubleType())])
SCORES = StructType([
    StructField("profile_id", StringType()),
    StructField("primary_namespace", StringType()),
    StructField("primary_id", StringType()),
    StructField("kind", StringType()),
    StructField("probability", DoubleType()),
    StructField("score", IntegerType()),
    StructField("percentile", IntegerType()),
    StructField("decile", IntegerType()),
    StructField("prediction", DoubleType()),
    StructField("recommendations", ArrayType(RECOMMENDATION)),
    StructField("segment_id", IntegerType()),
    StructField("segment_name", StringType()),
    StructField("factors", ArrayType(FACTOR)),
    StructField("p_alive", DoubleType()),
    StructField("expected_purchases", DoubleType()),
    StructField("model_version", StringType()),
    StructField("model_run_id", StringType()),
    StructField("score_date", DateType()),
    StructField("model", StringType()),
])
PARTITIONS = ("score_date", "model")
_BUCKETS = 1000


def with_percentile(value: str, out: str = "percentile", buckets: int = _BUCKETS) -> Callable[[DataFrame], DataFrame]:
    """Add `out`: the percentile rank (1-100) of `value` among the frame's non-null values.

    Exact, and without a global sort into one partition: approximate quantiles cut the values into
    about `buckets` ranges; a row's rank is the count of rows in lower ranges (a small table) plus
    its rank within its own range (a window partitioned by range). Equal values always fall in the
    same range, so ties are counted together. Reads the frame three times: persist it first.
    """

    def transform(df: DataFrame) -> DataFrame:
        v = F.col("_v")
        valid = v.isNotNull() & ~F.isnan(v)
        framed = df.withColumn("_v", F.col(value).cast("double"))
        probs = [i / buckets for i in range(1, buckets)]
        cuts = framed.where(valid).agg(F.percentile_approx(v, probs, 10 * buckets)).first()[0]
        splits = [float("-inf"), *sorted({float(c) for c in (cuts or [])}), float("inf")]
        # Null and NaN go to an extra range that the counts below leave out.
        ranged = Bucketizer(splits=splits, inputCol="_v", outputCol="_range", handleInvalid="keep").transform(framed)
        sizes = sorted(ranged.where(valid).groupBy("_range").count().collect(), key=lambda r: r["_range"])
        below, total = [], 0
        for row in sizes:
            below.append((row["_range"], total))
            total += row["count"]
        offsets = df.sparkSession.createDataFrame(below, "_range double, _below long")
        within = F.count(F.lit(1)).over(Window.partitionBy("_range").orderBy("_v"))  # RANGE frame: ties included
        # ceil(100 * at_or_below / total) in integers.
        rank = F.floor((F.lit(100) * (F.col("_below") + within) + F.lit(total - 1)) / F.lit(max(total, 1)))
        return (ranged.join(F.broadcast(offsets), "_range", "left")
                .withColumn(out, F.when(valid, F.greatest(F.lit(1), rank).cast("int")))
                .drop("_v", "_range", "_below"))

    return transform


def decile(percentile: Column) -> Column:
    """ceil(percentile / 10): 1-10, 10 holding the highest values."""
    return F.floor((percentile + F.lit(9)) / F.lit(10)).cast("int")


def probabilities(model: PipelineModel, rows: DataFrame, tried: Sequence[str], medians: Mapping[str, float],
                  top: int) -> DataFrame:
    """conversion / churn: keys, `probability`, `score` and `factors` (ranks come later, see `ranked`)."""
    out = explain.score_with_factors(model, rows, output=models.positive_probability, keys=KEYS, tried=tried,
                                     medians=medians, top=top)
    return (out.withColumnRenamed(explain.OUTPUT, "probability")
            .withColumn("score", F.round(F.col("probability") * 100).cast("int")))


def predictions(model: PipelineModel, rows: DataFrame, tried: Sequence[str], medians: Mapping[str, float],
                top: int) -> DataFrame:
    """clv: keys, `prediction` (floored at 0: spend is never negative) and `factors`."""
    out = explain.score_with_factors(model, rows, output=lambda df: F.greatest(F.col("prediction"), F.lit(0.0)),
                                     keys=KEYS, tried=tried, medians=medians, top=top)
    return out.withColumnRenamed(explain.OUTPUT, "prediction")


def btyd(model: clv_btyd.BtydModel, rows: DataFrame) -> DataFrame:
    """clv_btyd: keys, `prediction` (lifetime value), `p_alive` and `expected_purchases`."""
    return model.transform(rows.select(*KEYS, *clv_btyd.INPUTS)).select(*KEYS, "prediction", "p_alive",
                                                                        "expected_purchases")


def ranked(kind: str) -> Callable[[DataFrame], DataFrame]:
    """Percentile and decile of the probability (classification) or prediction (clv, clv_btyd); an
    amount's score is its percentile. Reads its input three times (see `with_percentile`): persist it first."""
    amount = kind in AMOUNT_KINDS
    value = "prediction" if amount else "probability"

    def transform(df: DataFrame) -> DataFrame:
        out = df.transform(with_percentile(value)).withColumn("decile", decile(F.col("percentile")))
        return out.withColumn("score", F.col("percentile")) if amount else out

    return transform


def recommendations(model: PipelineModel, rows: DataFrame, categories: Sequence[str], k: int,
                    popular: Sequence[str]) -> DataFrame:
    """affinity: keys and `recommendations` (top-k categories with scores)."""
    recs = training.recommend(model, rows.select(*KEYS), categories, k, popular)
    return recs.drop("items")


def segments(model: PipelineModel, rows: DataFrame) -> DataFrame:
    """segments: keys, `segment_id`, `segment_name`."""
    return model.transform(rows).select(*KEYS, "segment_id", "segment_name")


def conform(kind: str, model: str, version: str, run_id: str, score_date: dt.date) -> Callable[[DataFrame], DataFrame]:
    """Every column of `SCORES`, in order and typed; the ones this kind does not produce are null."""
    constants = {"kind": F.lit(kind), "model": F.lit(model), "model_version": F.lit(version),
                 "model_run_id": F.lit(run_id), "score_date": F.lit(score_date)}

    def transform(df: DataFrame) -> DataFrame:
        columns = []
        for field in SCORES.fields:
            source = constants.get(field.name, F.col(field.name) if field.name in df.columns else F.lit(None))
            columns.append(source.cast(field.dataType).alias(field.name))
        return df.select(*columns)

    return transform
