"""Unfitted Spark MLlib pipelines, one factory per model kind; nothing here fits or reads data.

The supervised pipeline is: typed copies of the features and a missing-value indicator for each
feature that can be null (one SQLTransformer) -> median imputation -> vector assembly -> scaling
(only for the linear models, which need it) -> the estimator. Everything that learns from data
(medians, scales, the model) is fitted once, on training rows only; scoring applies the fitted
`PipelineModel` and never re-fits anything.

Output contract, which scoring relies on:
- classification: `probability` (MLlib's vector) and, when calibrated, `calibrated_probability`;
  `positive_probability` reads whichever the model has;
- regression: `prediction`;
- affinity: `prediction` per (profile_id, category) row;
- segments: `segment_id` and `segment_name`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pyspark.ml import Estimator, Pipeline, PipelineModel, Transformer
from pyspark.ml.classification import GBTClassifier, LogisticRegression, RandomForestClassifier
from pyspark.ml.clustering import KMeans
from pyspark.ml.feature import Imputer, SQLTransformer, StandardScaler, VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.ml.recommendation import ALS
from pyspark.ml.regression import GBTRegressor, GeneralizedLinearRegression, RandomForestRegressor
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import BooleanType, NumericType

from enrich.errors import ConfigError

# Keys, descriptions and training columns: never model inputs.
KEY_COLUMNS = ("profile_id", "as_of_date", "primary_namespace", "primary_id", "label", "weight", "fold")
SCALED = {"logistic", "glm_tweedie"}
_INT_RANGE = 2_147_483_647


def numeric_features(columns: Sequence[tuple[str, Any]]) -> list[str]:
    """Every numeric or boolean column of a feature-table schema (name, type) that is not a key."""
    return [name for name, kind in columns
            if name not in KEY_COLUMNS and isinstance(kind, NumericType | BooleanType)]


def _prepare(features: Sequence[str], nullable: Sequence[str]) -> SQLTransformer:
    typed = [f"CAST(`{c}` AS DOUBLE) AS `f__{c}`" for c in features]
    missing = [f"CAST(`{c}` IS NULL AS DOUBLE) AS `m__{c}`" for c in nullable]
    return SQLTransformer(statement=f"SELECT *, {', '.join([*typed, *missing])} FROM __THIS__")


def assembled_names(features: Sequence[str], nullable: Sequence[str]) -> list[str]:
    """The names of the assembled vector's slots, in order (for importances and explanations)."""
    return [*features, *[f"{c}_missing" for c in nullable]]


def estimator(kind: str, algorithm: str, params: Mapping[str, Any], seed: int) -> Estimator:
    """The MLlib estimator of a supervised kind, with the config's fixed parameters."""
    common: dict[str, Any] = {"featuresCol": "features", "labelCol": "label"}
    classify = kind in ("conversion", "churn")
    if classify and algorithm == "gbt":
        est: Estimator = GBTClassifier(**common, seed=seed, maxIter=40, maxDepth=4, stepSize=0.1)
    elif classify and algorithm == "logistic":
        est = LogisticRegression(**common, maxIter=100, regParam=0.01)
    elif classify and algorithm == "random_forest":
        est = RandomForestClassifier(**common, seed=seed, numTrees=60, maxDepth=6)
    elif kind == "clv" and algorithm == "gbt":
        est = GBTRegressor(**common, seed=seed, maxIter=40, maxDepth=4, stepSize=0.1)
    elif kind == "clv" and algorithm == "glm_tweedie":
        # Spend is zero for most profiles and skewed for the rest: compound Poisson-gamma, log link.
        est = GeneralizedLinearRegression(**common, family="tweedie", variancePower=1.5, linkPower=0.0,
                                          maxIter=50, regParam=0.01)
    elif kind == "clv" and algorithm == "random_forest":
        est = RandomForestRegressor(**common, seed=seed, numTrees=60, maxDepth=6)
    else:
        raise ConfigError(f"model.algorithm: '{algorithm}' does not train a {kind} model")
    return with_params(est, params)


def with_params(est: Estimator, params: Mapping[str, Any]) -> Estimator:
    """Set MLlib parameters by name; an unknown name is a ConfigError that lists the known ones."""
    for name, value in params.items():
        if not est.hasParam(name):
            known = ", ".join(sorted(p.name for p in est.params))
            raise ConfigError(f"model.params/grid: {type(est).__name__} has no parameter '{name}' (it has: {known})")
        est.set(est.getParam(name), value)
    return est


def supervised(features: Sequence[str], nullable: Sequence[str], est: Estimator, algorithm: str) -> Pipeline:
    """prepare -> impute -> assemble -> (scale) -> estimator."""
    typed = [f"f__{c}" for c in features]
    imputed = [f"i__{c}" for c in features]
    vector_inputs = [*imputed, *[f"m__{c}" for c in nullable]]
    stages: list[Any] = [
        _prepare(features, nullable),
        Imputer(inputCols=typed, outputCols=imputed, strategy="median"),
    ]
    if algorithm in SCALED:
        stages += [VectorAssembler(inputCols=vector_inputs, outputCol="raw_features", handleInvalid="keep"),
                   StandardScaler(inputCol="raw_features", outputCol="features", withMean=True, withStd=True)]
    else:
        stages.append(VectorAssembler(inputCols=vector_inputs, outputCol="features", handleInvalid="keep"))
    return Pipeline(stages=[*stages, est])


def positive_probability(predictions: DataFrame) -> Column:
    """P(label = 1) of a classification model's output: calibrated when the model is."""
    if "calibrated_probability" in predictions.columns:
        return F.col("calibrated_probability")
    return vector_to_array(F.col("probability")).getItem(1)


# ------------------------------------------------------------------------------------------
# Affinity: implicit-feedback ALS on profile x category


def item_id(category: Column) -> Column:
    """The ALS item id of a category, as the pipeline computes it."""
    return F.pmod(F.xxhash64(category), F.lit(_INT_RANGE)).cast("int")


def hashed_id(column: str) -> str:
    """SQL for a non-negative int id of a string column (ALS needs int user and item ids).

    A hash, not an index: no table of every profile to build, ship or keep in step. Two profiles
    can share an id (expected pairs about n^2 / 2^32: 0.1 at 20k profiles, 23k at 10M, i.e.
    0.2% of profiles sharing a taste vector), which the README states.
    """
    return f"CAST(pmod(xxhash64(`{column}`), {_INT_RANGE}) AS INT)"


def affinity(params: Mapping[str, Any], seed: int) -> Pipeline:
    """(profile_id, category, rating) rows -> ALS on hashed ids; output `prediction` per row."""
    ids = SQLTransformer(statement=f"SELECT *, {hashed_id('profile_id')} AS user, {hashed_id('category')} AS item "
                                   "FROM __THIS__")
    als = ALS(userCol="user", itemCol="item", ratingCol="rating", implicitPrefs=True, rank=8, maxIter=10,
              regParam=0.05, alpha=10.0, coldStartStrategy="drop", nonnegative=True, seed=seed)
    return Pipeline(stages=[ids, with_params(als, params)])


# ------------------------------------------------------------------------------------------
# Segments: KMeans on scaled RFM and engagement


# (feature column, SQL of the clustered measure). Counts and money are log-scaled so that a few
# heavy spenders do not become clusters of their own; recency is capped at a year.
SEGMENT_INPUTS: dict[str, str] = {
    "recency": "LEAST(COALESCE(days_since_last_event, 366), 366)",
    "frequency": "LN(1 + COALESCE(purchases_365d, 0))",
    "monetary": "LN(1 + COALESCE(revenue_365d, 0))",
    "engagement": "LN(1 + COALESCE(sessions_90d, 0))",
}


SEGMENT_COLUMNS = ("days_since_last_event", "purchases_365d", "revenue_365d", "sessions_90d")


def segments(k: int, params: Mapping[str, Any], seed: int) -> Pipeline:
    """RFM + engagement -> standardized -> KMeans(k); output `prediction` (the segment id; the
    named model adds `segment_id` and `segment_name`, see `with_segment_names`)."""
    measures = ", ".join(f"CAST({sql} AS DOUBLE) AS s__{name}" for name, sql in SEGMENT_INPUTS.items())
    stages = [
        SQLTransformer(statement=f"SELECT *, {measures} FROM __THIS__"),
        VectorAssembler(inputCols=[f"s__{n}" for n in SEGMENT_INPUTS], outputCol="segment_raw"),
        StandardScaler(inputCol="segment_raw", outputCol="segment_features", withMean=True, withStd=True),
        with_params(KMeans(featuresCol="segment_features", predictionCol="prediction", k=k, seed=seed, maxIter=40),
                    params),
    ]
    return Pipeline(stages=stages)


def segment_names(centers: Sequence[Sequence[float]]) -> list[str]:
    """Readable names from standardized centroids: value (monetary) and recency, e.g. "high value, lapsing".

    Centroids are in standard deviations from the mean of the training profiles; a measure more
    than half a deviation away names the segment. Repeated names get a number.
    """
    index = {name: i for i, name in enumerate(SEGMENT_INPUTS)}
    names: list[str] = []
    for center in centers:
        monetary, recency, frequency = center[index["monetary"]], center[index["recency"]], center[index["frequency"]]
        value = "high value" if monetary > 0.5 else "low value" if monetary < -0.5 else "mid value"
        if frequency > 1.0:
            value = "frequent, " + value
        state = "lapsing" if recency > 0.5 else "active" if recency < -0.5 else "steady"
        names.append(f"{value}, {state}")
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if names.count(name) == 1 else f"{name} ({seen[name]})")
    return unique


def with_segment_names(fitted: PipelineModel, names: Sequence[str]) -> PipelineModel:
    """The fitted segments pipeline plus a stage naming each segment id."""
    cases = " ".join(f"WHEN {i} THEN '{name}'" for i, name in enumerate(names))
    naming = SQLTransformer(statement=f"SELECT *, CAST(prediction AS INT) AS segment_id, "
                                      f"CASE prediction {cases} END AS segment_name FROM __THIS__")
    stages: list[Transformer] = [*fitted.stages, naming]
    return PipelineModel(stages=stages)
