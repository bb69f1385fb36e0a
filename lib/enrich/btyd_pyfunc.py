"""The registered form of a `clv_btyd` model: an MLflow pyfunc that needs numpy, pandas and scipy,
not Spark, so it serves anywhere MLflow does (`mlflow.pyfunc.load_model(...).predict(frame)`).

Its state is one JSON artifact (`btyd.json`): the BG/NBD and Gamma-Gamma parameters, the horizon of
`expected_purchases` and the lifetime value settings. The score job reads the same parameters and
computes the same outputs in Spark (`clv_btyd.BtydModel.transform`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd

from enrich import btyd_math

INPUTS = [btyd_math.FREQUENCY, btyd_math.RECENCY, btyd_math.AGE, btyd_math.MONETARY]
OUTPUTS = ["p_alive", "expected_purchases", "expected_order_value", "clv"]
ARTIFACT = "btyd"


def predict(state: dict[str, Any], frame: pd.DataFrame) -> pd.DataFrame:
    """The outputs for a pandas frame with the `INPUTS` columns, from a model's state (`btyd.json`)."""
    bg, gg, clv = state["bgnbd"], state["gamma_gamma"], state["clv"]
    x, t_x, T, m = (frame[col].to_numpy(dtype=float) for col in INPUTS)
    return pd.DataFrame({
        "p_alive": btyd_math.p_alive(bg, x, t_x, T),
        "expected_purchases": btyd_math.expected_purchases(bg, state["horizon_days"], x, t_x, T),
        "expected_order_value": btyd_math.expected_order_value(gg, x, m),
        "clv": btyd_math.clv(bg, gg, x, t_x, T, m=m, months=clv["months"], monthly_discount=clv["monthly_discount"],
                             margin=clv["margin"], days_per_month=clv["days_per_month"]),
    })


class BtydPyfunc(mlflow.pyfunc.PythonModel):
    """Parameters from the `btyd` artifact, code from this package."""

    def load_context(self, context: Any) -> None:
        self.state = json.loads(Path(context.artifacts[ARTIFACT]).read_text())

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return predict(self.state, model_input)
