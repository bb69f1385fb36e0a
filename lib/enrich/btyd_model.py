"""Buy-till-you-die models on Spark: BG/NBD and Gamma-Gamma (`btyd_math`) fitted from profile
summaries in a DataFrame, and their predictions as columns.

Fitting is maximum likelihood with an optional L2 penalty on the parameters (as `lifetimes`'
`penalizer_coef`). The likelihood depends on a profile only through its summary, so the profiles
are first compressed in Spark to distinct summaries with their counts (`compress`), and the
weighted likelihood of those rows is optimised on the driver: its memory grows with the number of
distinct summaries, not of profiles. When even those are more than `max_summaries` (years of
day-grained history, unrounded spend), the likelihood and its analytic gradient are summed in
Spark over the compressed rows at every iteration instead (`fit_bgnbd_spark`,
`fit_gamma_gamma_spark`): the terms that depend on the frequency alone (the log-gamma functions)
come from a small per-frequency table on the driver, the rest is one aggregation of native
expressions per step. Same optimum, one Spark job per evaluation instead of none.

Predictions are the closed forms of the papers, vectorised in numpy (the Gaussian hypergeometric
function is scipy's `hyp2f1`), to be applied in Spark by a pandas UDF, one Arrow batch at a time.

Time is in the unit of the inputs (days for the `btyd_*` features); `alpha` is per that unit.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from scipy.optimize import minimize
from scipy.special import digamma, gammaln

from enrich.btyd_math import (
    AGE,
    FREQUENCY,
    MONETARY,
    RECENCY,
    Fit,
    clv,
    expected_purchases,
    fit_bgnbd,
    fit_gamma_gamma,
)
from enrich.errors import InputError


def _minimize_with_gradient(objective: Any, size: int) -> Any:
    """BFGS on an objective that returns (value, gradient): each evaluation is a Spark job, so the
    analytic gradient saves 2 x size of them per step."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = minimize(objective, np.full(size, 0.1), jac=True, method="BFGS",
                          options={"gtol": 1e-7, "maxiter": 1000})
    if not np.all(np.isfinite(result.x)) or not math.isfinite(result.fun):
        raise InputError(f"BTYD fit did not converge to finite parameters ({result.message})")
    return result


# ------------------------------------------------------------------------------------------------
# Spark: compression to sufficient statistics, predictions per profile



def compress(rows: DataFrame, columns: Sequence[str], max_rows: int) -> tuple[DataFrame, pd.DataFrame | None]:
    """The distinct summaries of `rows` with how many profiles share each (`weight`): kept in the
    executors (persisted; the caller unpersists), and on the driver too when there are at most
    `max_rows` of them (else None: fit in Spark). They are counted before anything is collected,
    so the driver never holds more than the bound. Their number, not the number of profiles, is
    what the driver holds: with day-grained summaries of a year it stays in the hundreds of
    thousands however many profiles there are."""
    grouped = rows.groupBy(*columns).agg(F.count(F.lit(1)).cast("double").alias("weight")).persist()
    if grouped.limit(max_rows + 1).count() > max_rows:
        return grouped, None
    # In a fixed order: the float sums of the likelihood, hence the fit, are then the same every run.
    return grouped, grouped.toPandas().sort_values(list(columns), ignore_index=True)


def fit_profiles(rows: DataFrame, penalizer: float = 0.0, max_rows: int = 5_000_000) -> tuple[Fit, Fit]:
    """BG/NBD on every profile with a first purchase (T > 0), Gamma-Gamma on its repeat customers.
    Each on compressed summaries on the driver, or summed in Spark when there are more than
    `max_rows` of them. Monetary values are rounded to cents before compressing."""
    bought = rows.where(F.col(AGE) > 0).select(*(F.col(c).cast("double").alias(c) for c in (FREQUENCY, RECENCY, AGE)))
    grouped, local = compress(bought, [FREQUENCY, RECENCY, AGE], max_rows)
    try:
        bgnbd = (fit_bgnbd_spark(grouped, penalizer) if local is None else
                 fit_bgnbd(local[FREQUENCY], local[RECENCY], local[AGE], local["weight"], penalizer))
    finally:
        grouped.unpersist()
    repeat = (rows.where((F.col(FREQUENCY) > 0) & (F.col(MONETARY) > 0))
              .select(F.col(FREQUENCY).cast("double").alias(FREQUENCY),
                      F.round(F.col(MONETARY).cast("double"), 2).alias(MONETARY)))
    grouped, local = compress(repeat, [FREQUENCY, MONETARY], max_rows)
    try:
        gg = (fit_gamma_gamma_spark(grouped, penalizer) if local is None else
              fit_gamma_gamma(local[FREQUENCY], local[MONETARY], local["weight"], penalizer))
    finally:
        grouped.unpersist()
    return bgnbd, gg


def _by_frequency(grouped: DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(distinct frequencies, profiles with each): small, since a frequency is a count of days."""
    table = grouped.groupBy(FREQUENCY).agg(F.sum("weight").alias("n")).toPandas()
    return table[FREQUENCY].to_numpy(dtype=float), table["n"].to_numpy(dtype=float)


def fit_bgnbd_spark(grouped: DataFrame, penalizer: float = 0.0) -> Fit:
    """`fit_bgnbd` with the likelihood summed in Spark at every evaluation (`grouped`: distinct
    `FREQUENCY`, `RECENCY`, `AGE` of profiles with T > 0 and their `weight`, from `compress`).
    Equation 6 of the paper split as ln L = A1(x) + A2(x) + ln(e^A3 + [x > 0] e^A4): A1 and A2
    depend on the frequency alone and come from the per-frequency table; the log-sum-exp and its
    gradient are one aggregation."""
    x, t_x, T = F.col(FREQUENCY), F.col(RECENCY), F.col(AGE)
    bad, longest, n_rows = grouped.select(
        F.sum(F.when((x < 0) | (t_x < 0) | (t_x > T) | ((x == 0) & (t_x != 0)) | (x != F.round(x)),
                     F.col("weight")).otherwise(0.0)),
        F.max(T), F.count(F.lit(1))).first()
    if n_rows == 0:
        raise InputError("BG/NBD: no profiles to fit")
    if bad:
        raise InputError(f"BG/NBD: {int(bad)} summaries are impossible (frequency a whole number >= 0, "
                         "0 <= recency <= T, recency 0 without repeats)")
    xs, ns = _by_frequency(grouped)
    total = float(ns.sum())
    scale = 1.0 / float(longest)

    def evaluate(params: np.ndarray, unit: float) -> tuple[float, np.ndarray]:
        """Sum of ln L over profiles at (r, alpha, a, b) with times multiplied by `unit`, and its
        gradient with respect to (r, alpha, a, b)."""
        r, alpha, a, b = (float(v) for v in params)
        lit = F.lit
        a3 = -(lit(r) + x) * F.log(lit(alpha) + T * unit)
        a4 = (lit(math.log(a)) - F.log(lit(b) + F.greatest(x, lit(1.0)) - 1)
              - (lit(r) + x) * F.log(lit(alpha) + t_x * unit))
        top = F.when(x > 0, F.greatest(a3, a4)).otherwise(a3)
        rest = top + F.log(F.exp(a3 - top) + F.when(x > 0, F.exp(a4 - top)).otherwise(0.0))
        share = F.when(x > 0, F.exp(a4 - rest)).otherwise(0.0)  # weight of A4 in the log-sum-exp
        w = F.col("weight")
        sums = grouped.select(
            F.sum(w * rest),
            F.sum(w * (-(1 - share) * F.log(lit(alpha) + T * unit) - share * F.log(lit(alpha) + t_x * unit))),
            F.sum(w * (-(1 - share) * (lit(r) + x) / (lit(alpha) + T * unit)
                       - share * (lit(r) + x) / (lit(alpha) + t_x * unit))),
            F.sum(w * share / lit(a)),
            F.sum(w * -share / (lit(b) + F.greatest(x, lit(1.0)) - 1)),
        ).first()
        value = float(sums[0]) + float((ns * (gammaln(r + xs) - gammaln(r) + r * math.log(alpha)
                                              + gammaln(a + b) + gammaln(b + xs) - gammaln(b)
                                              - gammaln(a + b + xs))).sum())
        grad = np.array([float(v) for v in sums[1:]]) + np.array([
            (ns * (digamma(r + xs) - digamma(r) + math.log(alpha))).sum(),
            total * r / alpha,
            (ns * (digamma(a + b) - digamma(a + b + xs))).sum(),
            (ns * (digamma(a + b) + digamma(b + xs) - digamma(b) - digamma(a + b + xs))).sum(),
        ])
        return value, grad

    def objective(log_params: np.ndarray) -> tuple[float, np.ndarray]:
        params = np.exp(log_params)
        value, grad = evaluate(params, scale)
        penalty = penalizer * float(np.sum(params**2))
        return -value / total + penalty, -grad * params / total + 2 * penalizer * params**2

    result = _minimize_with_gradient(objective, 4)
    r, alpha, a, b = np.exp(result.x)
    alpha /= scale
    ll, _ = evaluate(np.array([r, alpha, a, b]), 1.0)
    return Fit({"r": float(r), "alpha": float(alpha), "a": float(a), "b": float(b)}, ll, int(total),
               bool(result.success), int(result.nit), str(result.message), int(n_rows), "spark")


def fit_gamma_gamma_spark(grouped: DataFrame, penalizer: float = 0.0) -> Fit:
    """`fit_gamma_gamma` with the likelihood summed in Spark at every evaluation (`grouped`: distinct
    `FREQUENCY`, `MONETARY` of repeat customers and their `weight`, from `compress`). Of note 025's
    ln L, the log-gamma and x ln x terms depend on the frequency alone (per-frequency table),
    (px - 1) ln m is linear in p (two sums taken once), and -(px + q) ln(xm + v) is the one
    aggregation per evaluation."""
    x, m, w = F.col(FREQUENCY), F.col(MONETARY), F.col("weight")
    bad, n_rows, x_log_m, log_m = grouped.select(
        F.sum(F.when((x <= 0) | (m <= 0), w).otherwise(0.0)), F.count(F.lit(1)),
        F.sum(w * x * F.log(m)), F.sum(w * F.log(m))).first()
    if n_rows == 0:
        raise InputError("Gamma-Gamma: no repeat customers to fit")
    if bad:
        raise InputError("Gamma-Gamma: fit on repeat customers only (frequency > 0, monetary value > 0)")
    xs, ns = _by_frequency(grouped)
    total = float(ns.sum())

    def evaluate(params: np.ndarray) -> tuple[float, np.ndarray]:
        p, q, v = (float(val) for val in params)
        lit = F.lit
        log_xm_v = F.log(x * m + lit(v))
        sums = grouped.select(
            F.sum(w * -(lit(p) * x + lit(q)) * log_xm_v),
            F.sum(w * -x * log_xm_v),
            F.sum(w * -log_xm_v),
            F.sum(w * -(lit(p) * x + lit(q)) / (x * m + lit(v))),
        ).first()
        value = float(sums[0]) + p * x_log_m - log_m + float((ns * (
            gammaln(p * xs + q) - gammaln(p * xs) - gammaln(q) + q * math.log(v) + p * xs * np.log(xs))).sum())
        grad = np.array([float(val) for val in sums[1:]]) + np.array([
            (ns * xs * (digamma(p * xs + q) - digamma(p * xs) + np.log(xs))).sum() + x_log_m,
            (ns * (digamma(p * xs + q) - digamma(q) + math.log(v))).sum(),
            total * q / v,
        ])
        return value, grad

    def objective(log_params: np.ndarray) -> tuple[float, np.ndarray]:
        params = np.exp(log_params)
        value, grad = evaluate(params)
        penalty = penalizer * float(np.sum(params**2))
        return -value / total + penalty, -grad * params / total + 2 * penalizer * params**2

    result = _minimize_with_gradient(objective, 3)
    p, q, v = np.exp(result.x)
    ll, _ = evaluate(np.array([p, q, v]))
    return Fit({"p": float(p), "q": float(q), "v": float(v)}, ll, int(total), bool(result.success),
               int(result.nit), str(result.message), int(n_rows), "spark")


def p_alive_column(params: dict[str, float]) -> Column:
    """P(alive) as a native expression (no UDF): 1 without repeat purchases."""
    r, alpha, a, b = (F.lit(params[k]) for k in ("r", "alpha", "a", "b"))
    x, t_x, T = F.col(FREQUENCY), F.col(RECENCY), F.col(AGE)
    log_div = (r + x) * F.log((alpha + T) / (alpha + t_x)) + F.log(a / (b + F.greatest(x, F.lit(1.0)) - 1))
    return F.when(x == 0, F.lit(1.0)).otherwise(1 / (1 + F.exp(log_div)))


def expected_order_value_column(params: dict[str, float]) -> Column:
    """E(mean spend | frequency, monetary value) as a native expression."""
    p, q, v = params["p"], params["q"], params["v"]
    x, m = F.col(FREQUENCY), F.col(MONETARY)
    weight = F.lit(p) * x / (F.lit(p) * x + F.lit(q - 1))
    return (1 - weight) * F.lit(v * p / (q - 1)) + weight * m


def predictions(rows: DataFrame, bgnbd: dict[str, float], gg: dict[str, float], *, horizon_days: float,
                months: int, monthly_discount: float, margin: float = 1.0, days_per_month: float = 30.0) -> DataFrame:
    """`rows` with `p_alive`, `expected_purchases` (next `horizon_days`), `expected_order_value` and
    `clv`. The two that need the Gaussian hypergeometric function come from one pandas UDF (scipy's
    hyp2f1 on whole Arrow batches); the rest are native expressions."""
    bg, spend = dict(bgnbd), dict(gg)

    @F.pandas_udf("expected_purchases double, clv double")
    def hypergeometric(x: pd.Series, t_x: pd.Series, T: pd.Series, m: pd.Series) -> pd.DataFrame:
        xs, txs, ts, ms = (s.to_numpy(dtype=float) for s in (x, t_x, T, m))
        return pd.DataFrame({
            "expected_purchases": expected_purchases(bg, horizon_days, xs, txs, ts),
            "clv": clv(bg, spend, xs, txs, ts, m=ms, months=months, monthly_discount=monthly_discount,
                       margin=margin, days_per_month=days_per_month),
        })

    out = hypergeometric(F.col(FREQUENCY).cast("double"), F.col(RECENCY).cast("double"),
                         F.col(AGE).cast("double"), F.col(MONETARY).cast("double"))
    return (rows.withColumn("_btyd", out)
            .withColumn("p_alive", p_alive_column(bg))
            .withColumn("expected_purchases", F.col("_btyd.expected_purchases"))
            .withColumn("expected_order_value", expected_order_value_column(spend))
            .withColumn("clv", F.col("_btyd.clv"))
            .drop("_btyd"))
