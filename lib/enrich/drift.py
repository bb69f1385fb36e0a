"""Population stability: how far a scoring population has moved from the model's training data.

At training time each model stores a *reference* with its version (`reference.json`): for every
numeric input, quantile bin edges and the share of rows in each bin (nulls are a bin of their
own); for its output, the same (or, for a categorical output such as a recommended category, the
share of each value). At scoring time the same bins are counted on the scored population and the
population stability index is

    PSI = sum over bins of (actual - expected) * ln(actual / expected)

with both shares floored at 0.0001 so that an empty bin does not make it infinite. The usual
reading: below 0.1 stable, 0.1-0.25 moderate shift, above 0.25 a shift worth acting on
(`scoring.max_psi`). Counting is one pass: every row's (input, bin) pairs are exploded and
aggregated, so only a few hundred counts reach the driver.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from enrich.config import AMOUNT_KINDS

MISSING_BIN = -1  # null (numeric) or null / unseen value (categorical)
OUTPUT = "model_output"  # the name the model's output goes by among the inputs
_FLOOR = 1e-4


def watched(kind: str) -> Column:
    """The output whose distribution is watched, from scores-shaped rows (`enrich.score`): the
    probability, the predicted value, the segment, or the first recommended category."""
    if kind == "affinity":
        return F.col("recommendations")[0]["category"]
    if kind == "segments":
        return F.col("segment_id").cast("string")
    return F.col("prediction" if kind in AMOUNT_KINDS else "probability")


def categorical(kind: str) -> bool:
    """Whether the watched output is a category (binned by value) rather than a number."""
    return kind in ("affinity", "segments")


def bin_of(value: Column, spec: Mapping[str, Any]) -> Column:
    """The bin of `value` under one input's reference: for numeric edges e1 < e2 < ..., bin i is
    (e_i, e_i+1] (0 is at or below e1); for categories, the value's position; -1 for null/unseen."""
    if "categories" in spec:
        position = F.array_position(F.array(*[F.lit(c) for c in spec["categories"]]), value.cast("string"))
        return F.coalesce(position.cast("int") - 1, F.lit(MISSING_BIN))
    edges = F.array(*[F.lit(float(e)) for e in spec["edges"]]) if spec["edges"] else F.array().cast("array<double>")
    x = value.cast("double")
    return F.when(x.isNull() | F.isnan(x), F.lit(MISSING_BIN)).otherwise(F.size(F.filter(edges, lambda e: e < x)))


def _shares(df: DataFrame, specs: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[int, float]]:
    """Share of rows per bin, for every input, in one aggregation."""
    pairs = F.array(*[F.struct(F.lit(name).alias("input"), bin_of(F.col(name), spec).alias("bin"))
                      for name, spec in specs.items()])
    counts = df.select(F.explode(pairs).alias("p")).groupBy("p.input", "p.bin").count().collect()
    totals: dict[str, int] = {}
    for row in counts:
        totals[row["input"]] = totals.get(row["input"], 0) + row["count"]
    shares: dict[str, dict[int, float]] = {name: {} for name in specs}
    for row in counts:
        shares[row["input"]][int(row["bin"])] = row["count"] / totals[row["input"]]
    return shares


def reference(df: DataFrame, numeric: Sequence[str], categorical: Sequence[str] = (), bins: int = 10,
              max_categories: int = 100) -> dict[str, Any]:
    """The reference of `df`'s numeric columns (quantile edges) and categorical columns (values).

    Edges are approximate deciles (for `bins=10`) with duplicates removed, so a mostly-zero count
    gets few bins rather than many empty ones.
    """
    specs: dict[str, dict[str, Any]] = {}
    if numeric:
        probs = [i / bins for i in range(1, bins)]
        row = df.agg(*[F.percentile_approx(F.col(c).cast("double"), probs, 10_000).alias(c) for c in numeric]).first()
        for c in numeric:
            specs[c] = {"edges": sorted({float(e) for e in (row[c] or []) if e is not None and not math.isnan(e)})}
    for c in categorical:
        top = (df.where(F.col(c).isNotNull()).groupBy(c).count().orderBy(F.desc("count"), c)
               .limit(max_categories).collect())
        specs[c] = {"categories": [str(r[c]) for r in top]}
    if not specs:
        return {}
    for name, share in _shares(df, specs).items():
        specs[name]["shares"] = {str(b): s for b, s in sorted(share.items())}
    return specs


def psi(expected: Mapping[Any, float], actual: Mapping[Any, float]) -> float:
    """Population stability index of two share distributions over the same bins."""
    total = 0.0
    for b in set(expected) | set(actual):
        e = max(expected.get(b, 0.0), _FLOOR)
        a = max(actual.get(b, 0.0), _FLOOR)
        total += (a - e) * math.log(a / e)
    return total


def stability(df: DataFrame, ref: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """PSI of each referenced column of `df` against the reference (one pass over `df`)."""
    present = {name: spec for name, spec in ref.items() if name in df.columns}
    if not present:
        return {}
    actual = _shares(df, present)
    return {name: psi({int(b): s for b, s in spec["shares"].items()}, actual[name]) for name, spec in present.items()}


def figure(values: Mapping[str, float], limit: float, title: str, top: int = 25) -> Figure:
    """Horizontal bars of the largest PSIs, with the blocking threshold."""
    ranked = sorted(values.items(), key=lambda kv: kv[1], reverse=True)[:top][::-1]
    fig = Figure(figsize=(7, 0.3 * len(ranked) + 1.5))
    ax = fig.subplots()
    ax.barh([k for k, _ in ranked], [v for _, v in ranked],
            color=["tab:red" if v > limit else "tab:blue" for _, v in ranked])
    ax.axvline(limit, color="black", linestyle="--", label=f"scoring.max_psi = {limit:g}")
    ax.set_xlabel("population stability index")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig
