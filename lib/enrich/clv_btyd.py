"""The `clv_btyd` model kind: BG/NBD + Gamma-Gamma lifetime value (`btyd_model`) as a model the
training, registry and scoring flow handles like any other.

Fit: on the customers eligible at the latest fitting as-of date (one summary per profile: the
summaries of several dates would count a customer's history more than once). Validation: on the
customers eligible at the validation date, against what they did in [D, D + horizon): purchase days
(`purchases`, the model's unit) and revenue (`label`). The registered model is that fit.

Registered as an MLflow pyfunc (`btyd_pyfunc`): its parameters (`btyd.json`) and this package's
code, so it loads and predicts on pandas anywhere MLflow runs, without Spark. The score job reads
the parameters back and scores in Spark (`BtydModel.transform`: native expressions and one pandas
UDF), never through the pyfunc's row-wise path.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
import scipy
from matplotlib.figure import Figure
from mlflow.models import infer_signature
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from enrich import btyd_math, btyd_model, btyd_pyfunc, evaluate
from enrich.config import ClvConfig, ModelConfig

INPUTS = btyd_pyfunc.INPUTS
OUTPUTS = btyd_pyfunc.OUTPUTS
MAIN_METRIC = "rmse_purchases"
_BUCKETS = 7  # frequency buckets of the calibration plot: 0 .. 6 and "7+"


@dataclass(frozen=True)
class BtydModel:
    """Fitted BG/NBD and Gamma-Gamma parameters with what turns them into the model's outputs."""

    bgnbd: dict[str, float]
    gamma_gamma: dict[str, float]
    horizon_days: int
    clv: ClvConfig

    @classmethod
    def of(cls, bgnbd: btyd_math.Fit, gg: btyd_math.Fit, model: ModelConfig) -> BtydModel:
        return cls(dict(bgnbd.params), dict(gg.params), model.horizon_days, model.clv)

    def to_dict(self) -> dict[str, Any]:
        """The pyfunc's state (`btyd.json`)."""
        return {"bgnbd": self.bgnbd, "gamma_gamma": self.gamma_gamma, "horizon_days": self.horizon_days,
                "clv": self.clv.model_dump(mode="json")}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BtydModel:
        return cls(dict(data["bgnbd"]), dict(data["gamma_gamma"]), int(data["horizon_days"]),
                   ClvConfig.model_validate(data["clv"]))

    @property
    def mlflow_params(self) -> dict[str, float]:
        """The published names: BG/NBD r, alpha (per day), a, b; Gamma-Gamma p, q, gamma."""
        g = self.gamma_gamma
        return {**self.bgnbd, "p": g["p"], "q": g["q"], "gamma": g["v"]}

    def transform(self, rows: DataFrame) -> DataFrame:
        """`rows` with the outputs (`OUTPUTS`) and `prediction` = `clv`, in Spark."""
        c = self.clv
        out = btyd_model.predictions(rows, self.bgnbd, self.gamma_gamma, horizon_days=self.horizon_days,
                                     months=c.months, monthly_discount=c.monthly_discount, margin=c.margin,
                                     days_per_month=c.days_per_month)
        return out.withColumn("prediction", F.col("clv"))

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The outputs for a pandas frame of `INPUTS` (what the registered pyfunc computes)."""
        return btyd_pyfunc.predict(self.to_dict(), frame)


def log_model(model: BtydModel, example: pd.DataFrame, registered_name: str) -> Any:
    """Log (and register) the pyfunc in the active run; the ModelInfo. Its code is this package
    (the pyfunc imports only `btyd_pyfunc` and `btyd_math`), its requirements no Spark."""
    package = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "btyd.json"
        state.write_text(json.dumps(model.to_dict(), indent=2))
        # Requirements given, not inferred (inferring loads the model in a subprocess).
        requirements = [f"mlflow=={mlflow.__version__}", f"numpy=={np.__version__}", f"pandas=={pd.__version__}",
                        f"scipy=={scipy.__version__}"]
        return mlflow.pyfunc.log_model(
            name="model", python_model=btyd_pyfunc.BtydPyfunc(), artifacts={btyd_pyfunc.ARTIFACT: str(state)},
            code_paths=[str(package)], signature=infer_signature(example, model.predict(example)),
            input_example=example, registered_model_name=registered_name, pip_requirements=requirements)


def load(uri: str) -> BtydModel:
    """The `BtydModel` of a logged or registered pyfunc (`models:/name/3`, `runs:/...`)."""
    return BtydModel.from_dict(mlflow.pyfunc.load_model(uri).unwrap_python_model().state)


# ------------------------------------------------------------------------------------------------
# Fit and evaluation


def fit(rows: DataFrame, fitting_date: dt.date, model: ModelConfig
        ) -> tuple[BtydModel, dict[str, float], dict[str, str]]:
    """Fit on the rows of `fitting_date`; the model, its fit metrics (log-likelihoods, convergence,
    iterations, profiles and summaries) and where the likelihood was summed."""
    at = rows.where(F.col("as_of_date") == F.lit(fitting_date))
    bgnbd, gg = btyd_model.fit_profiles(at, model.btyd_param("penalizer"), model.btyd_param("max_summaries"))
    metrics: dict[str, float] = {}
    for prefix, f in (("bgnbd", bgnbd), ("gamma_gamma", gg)):
        metrics.update({f"{prefix}_log_likelihood": f.log_likelihood, f"{prefix}_converged": float(f.converged),
                        f"{prefix}_iterations": float(f.iterations), f"{prefix}_profiles": float(f.profiles),
                        f"{prefix}_summaries": float(f.summaries)})
    return BtydModel.of(bgnbd, gg, model), metrics, {"bgnbd_summed_in": bgnbd.summed_in,
                                                     "gamma_gamma_summed_in": gg.summed_in}


def _frequency_bucket() -> Column:
    x = F.col(btyd_math.FREQUENCY).cast("int")
    return F.when(x >= _BUCKETS, F.lit(f"{_BUCKETS}+")).otherwise(x.cast("string"))


def purchase_error() -> Column:
    """|expected - actual purchase days| of a scored row (the main metric's term)."""
    return F.abs(F.col("expected_purchases") - F.col("purchases"))


def validation_metrics(scored: DataFrame) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Metrics of scored validation rows (outputs, `purchases`, `label`, and the previous window's
    `previous_purchases` and `previous_revenue`: the baseline forecasts the next window repeats the
    last) and the purchases-by-frequency table (one row per bucket: profiles, mean actual and
    expected purchases)."""
    spend = F.col("expected_purchases") * F.col("expected_order_value")
    base = F.col("previous_purchases") - F.col("purchases")
    row = scored.select(
        F.count(F.lit(1)).alias("rows"),
        F.sqrt(F.avg(purchase_error() ** 2)).alias("rmse_purchases"),
        F.avg(purchase_error()).alias("mae_purchases"),
        F.sqrt(F.avg(base**2)).alias("baseline_rmse_purchases"),
        F.avg(F.abs(base)).alias("baseline_mae_purchases"),
        F.avg("expected_purchases").alias("mean_expected_purchases"),
        F.avg("purchases").alias("mean_actual_purchases"),
        F.sqrt(F.avg((spend - F.col("label")) ** 2)).alias("spend_rmse"),
        F.avg(F.abs(spend - F.col("label"))).alias("spend_mae"),
        F.sqrt(F.avg((F.col("previous_revenue") - F.col("label")) ** 2)).alias("baseline_spend_rmse"),
        F.avg("p_alive").alias("mean_p_alive"),
        F.avg("clv").alias("mean_clv"),
    ).first().asDict()
    metrics = {k: float(v) for k, v in row.items()}
    metrics["clv_spearman"] = evaluate.spearman(scored, "clv", "label")
    buckets = (scored.groupBy(_frequency_bucket().alias("frequency"))
               .agg(F.count(F.lit(1)).alias("profiles"), F.avg("purchases").alias("actual"),
                    F.avg("expected_purchases").alias("expected"))
               .collect())  # at most _BUCKETS + 1 rows
    table = sorted((r.asDict() for r in buckets), key=lambda r: int(r["frequency"].rstrip("+")))
    return metrics, table


def frequency_figure(table: Sequence[dict[str, Any]], title: str) -> Figure:
    """Actual vs expected purchases in the holdout window by calibration frequency (the papers' and
    lifetimes' calibration/holdout plot)."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    labels = [r["frequency"] for r in table]
    ax.plot(labels, [r["actual"] for r in table], marker="o", label="actual")
    ax.plot(labels, [r["expected"] for r in table], marker="s", linestyle="--", label="expected (BG/NBD)")
    for i, r in enumerate(table):
        ax.annotate(f"n={r['profiles']}", (i, r["actual"]), textcoords="offset points", xytext=(0, 6),
                    ha="center", fontsize=7)
    ax.set_xlabel("repeat purchase days before the validation date (btyd_frequency)")
    ax.set_ylabel("mean purchase days in the holdout window")
    ax.set_title(f"{title}: actual vs expected purchases")
    ax.legend()
    fig.tight_layout()
    return fig


def main_metric(model: BtydModel, rows: DataFrame) -> float:
    """RMSE of expected vs actual purchase days on validation rows (with `purchases`)."""
    return float(model.transform(rows).agg(F.sqrt(F.avg(purchase_error() ** 2))).first()[0])

