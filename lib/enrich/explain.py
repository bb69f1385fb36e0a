"""Influential factors: which features pushed a profile's score up or down, computed in Spark.

Method (occlusion against the training median). For each of a model's `candidates` (its most
important features), the profile's row is scored a second time with that one feature replaced by
the median the model was trained with (the value its pipeline imputes). The factor's signed
importance is

    importance(feature) = f(profile) - f(profile with feature := training median)

in the model's output units (probability for classification, currency for lifetime value): how
much this profile's own value of the feature moved its score away from what a typical value would
have given, with everything else about the profile held fixed. Positive means the feature pushed
the score up. A factor whose value equals the median (importance 0) is never listed. The top
factors are the largest absolute importances (ties broken by feature name).

It is exact for the model at hand (no surrogate model, so its sign always agrees with the model),
works for any pipeline (trees, linear models, calibrated or not), and costs one more pass of the
model per candidate feature over the scored rows. The variants of a row are generated next to it
(`explode`), scored in the same task, and folded back by profile with a partial aggregation, so
the extra rows never cross the network. It is not SHAP: interactions are not split between
features, so importances need not add up to the score.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from pyspark.ml import PipelineModel
from pyspark.ml.feature import ImputerModel
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

VARIANT = "_variant"
OUTPUT = "_output"


def training_medians(model: PipelineModel) -> dict[str, float]:
    """The medians a fitted supervised pipeline imputes with, by feature name (see `models.supervised`)."""
    for stage in model.stages:
        if isinstance(stage, ImputerModel):
            row = stage.surrogateDF.first()
            return {c[len("f__"):]: float(v) for c, v in row.asDict().items() if c.startswith("f__") and v is not None}
    return {}


def candidates(importances: Mapping[str, float], features: Sequence[str], limit: int) -> list[str]:
    """The `limit` features with the largest absolute global importance (a missing-value
    indicator `<f>_missing` counts for `f`); all features, in order, when there are no importances."""
    ranked = sorted(importances.items(), key=lambda kv: (-abs(kv[1]), kv[0]))
    chosen: list[str] = []
    for name, _ in ranked:
        base = name[: -len("_missing")] if name.endswith("_missing") and name not in features else name
        if base in features and base not in chosen:
            chosen.append(base)
    chosen += [f for f in features if f not in chosen]
    return chosen[:limit]


def score_with_factors(
    model: PipelineModel,
    rows: DataFrame,
    *,
    output: Callable[[DataFrame], Column],
    keys: Sequence[str],
    tried: Sequence[str],
    medians: Mapping[str, float],
    top: int,
) -> DataFrame:
    """`keys`, `_output` (the model's output for the row) and `factors`
    (array<struct<feature, value, importance>>, at most `top`, largest |importance| first).

    `output` reads the model's output from the transformed frame (e.g. the positive-class
    probability). Candidate features without a training median (nothing to compare with) are skipped.
    """
    tried = [c for c in tried if c in medians]
    if top == 0 or not tried:
        scored = model.transform(rows)
        return scored.select(*keys, output(scored).alias(OUTPUT),
                             F.array().cast("array<struct<feature:string,value:double,importance:double>>")
                             .alias("factors"))
    variant = F.col(VARIANT)
    # Variant 0 is the row itself; variant j replaces candidate j by its training median.
    exploded = rows.withColumn(VARIANT, F.explode(F.sequence(F.lit(0), F.lit(len(tried)))))
    position = {c: j for j, c in enumerate(tried, start=1)}
    swapped = exploded.select(*[
        F.when(variant == position[c], F.lit(medians[c])).otherwise(F.col(c).cast("double")).alias(c)
        if c in position else F.col(c) for c in exploded.columns])
    scored = model.transform(swapped)
    out = output(scored)
    folded = scored.groupBy(*keys).agg(
        F.max(F.when(variant == 0, out)).alias(OUTPUT),
        *[F.max(F.when(variant == j, out)).alias(f"_o{j}") for j in range(1, len(tried) + 1)],
        *[F.max(F.when(variant == 0, F.col(c))).alias(f"_x{j}") for j, c in enumerate(tried, start=1)],
    )
    entries = F.array(*[
        F.struct((-F.abs(F.col(OUTPUT) - F.col(f"_o{j}"))).alias("rank"), F.lit(c).alias("feature"),
                 F.col(f"_x{j}").alias("value"), (F.col(OUTPUT) - F.col(f"_o{j}")).alias("importance"))
        for j, c in enumerate(tried, start=1)])
    ranked = F.sort_array(F.filter(entries, lambda e: e["importance"] != 0))
    factors = F.slice(F.transform(ranked, lambda e: F.struct(e["feature"].alias("feature"), e["value"].alias("value"),
                                                             e["importance"].alias("importance"))), 1, top)
    return folded.select(*keys, OUTPUT, factors.alias("factors"))
