"""Buy-till-you-die models: BG/NBD (Fader, Hardie & Lee 2005, "Counting your customers the easy way")
and the Gamma-Gamma spend model (Fader, Hardie & Lee 2005, "RFM and CLV"; Hardie's note 025).

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
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from scipy.optimize import minimize
from scipy.special import digamma, expit, gammaln, hyp2f1

from enrich.errors import InputError


@dataclass(frozen=True)
class Fit:
    """A fitted model: parameters by name, the (unpenalised) log-likelihood summed over the profiles,
    and how the optimiser ended."""

    params: dict[str, float]
    log_likelihood: float
    profiles: int
    converged: bool
    iterations: int
    message: str
    summaries: int
    """Rows the likelihood was computed over (distinct summaries when compressed)."""
    summed_in: str = "driver"
    """Where the likelihood was summed: `driver` (compressed summaries collected) or `spark`."""

    def __getitem__(self, name: str) -> float:
        return self.params[name]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _arrays(*values: Any) -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(v, dtype=float) for v in values)


def _weights(weights: np.ndarray | None, n: int) -> np.ndarray:
    return np.ones(n) if weights is None else np.asarray(weights, dtype=float)


# ------------------------------------------------------------------------------------------------
# BG/NBD


def bgnbd_log_likelihood(params: Sequence[float], x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Each profile's log-likelihood at (r, alpha, a, b) (equation 6 of the paper, in the stable form
    of section 7)."""
    r, alpha, a, b = params
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
    a3 = -(r + x) * np.log(alpha + T)
    a4 = np.log(a) - np.log(b + np.maximum(x, 1) - 1) - (r + x) * np.log(alpha + t_x)
    top = np.maximum(a3, a4)
    return a1 + a2 + top + np.log(np.exp(a3 - top) + (x > 0) * np.exp(a4 - top))


def fit_bgnbd(x: np.ndarray, t_x: np.ndarray, T: np.ndarray, weights: np.ndarray | None = None,
              penalizer: float = 0.0) -> Fit:
    """r, alpha, a, b by maximum likelihood; `weights` count the profiles of each row."""
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    w = _weights(weights, len(x))
    _check_bgnbd_inputs(x, t_x, T, w)
    # Times scaled so that the longest is 1, as lifetimes does: a well-conditioned search, and the
    # penalty applies to the same (scaled) alpha, so penalised fits agree with lifetimes' too.
    scale = 1.0 / float(T.max())

    def objective(log_params: np.ndarray) -> float:
        ll = bgnbd_log_likelihood(np.exp(log_params), x, t_x * scale, T * scale)
        return -(w * ll).sum() / w.sum() + penalizer * float(np.sum(np.exp(log_params) ** 2))

    result = _minimize(objective, 4)
    r, alpha, a, b = np.exp(result.x)
    alpha /= scale
    ll = float((w * bgnbd_log_likelihood((r, alpha, a, b), x, t_x, T)).sum())
    return Fit({"r": float(r), "alpha": float(alpha), "a": float(a), "b": float(b)}, ll, int(w.sum()),
               bool(result.success), int(result.nit), str(result.message), len(x))


def _check_bgnbd_inputs(x: np.ndarray, t_x: np.ndarray, T: np.ndarray, w: np.ndarray) -> None:
    if len(x) == 0 or w.sum() <= 0:
        raise InputError("BG/NBD: no profiles to fit")
    bad = (x < 0) | (t_x < 0) | (t_x > T) | ((x == 0) & (t_x != 0)) | (x != np.round(x))
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(f"BG/NBD: {int(bad.sum())} summaries are impossible (frequency a whole number >= 0, "
                         f"0 <= recency <= T, recency 0 without repeats); first: frequency={x[i]}, "
                         f"recency={t_x[i]}, T={T[i]}")
    if float(T.max()) <= 0:
        raise InputError("BG/NBD: every profile has T = 0 (no time observed since the first purchase)")


def p_alive(params: dict[str, float], x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """P(still alive | history): 1 without repeat purchases (Hardie's note 021)."""
    r, alpha, a, b = (params[k] for k in ("r", "alpha", "a", "b"))
    x, t_x, T = _arrays(x, t_x, T)
    log_div = (r + x) * np.log((alpha + T) / (alpha + t_x)) + np.log(a / (b + np.maximum(x, 1) - 1))
    return np.where(x == 0, 1.0, expit(-log_div))


def expected_purchases(params: dict[str, float], t: float | np.ndarray, x: np.ndarray, t_x: np.ndarray,
                       T: np.ndarray) -> np.ndarray:
    """Expected repeat purchases in the next `t` (equation 10), with the Euler transform of 2F1
    where the direct series overflows."""
    r, alpha, a, b = (params[k] for k in ("r", "alpha", "a", "b"))
    x, t_x, T = _arrays(x, t_x, T)
    t = np.asarray(t, dtype=float)
    _a, _b, _c = r + x, b + x, a + b + x - 1
    z = t / (alpha + T + t)
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ln_hyp = np.log(hyp2f1(_a, _b, _c, z))
        ln_alt = np.log(hyp2f1(_c - _a, _c - _b, _c, z)) + (_c - _a - _b) * np.log1p(-z)
    ln_hyp = np.where(np.isfinite(ln_hyp), ln_hyp, ln_alt)
    first = (a + b + x - 1) / (a - 1)
    second = 1 - np.exp(ln_hyp + (r + x) * np.log((alpha + T) / (alpha + t + T)))
    denominator = 1 + (x > 0) * (a / (b + x - 1)) * ((alpha + T) / (alpha + t_x)) ** (r + x)
    return first * second / denominator


# ------------------------------------------------------------------------------------------------
# Gamma-Gamma


def gamma_gamma_log_likelihood(p: float, q: float, v: float, x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Each repeat customer's log-likelihood of their mean spend per repeat purchase (note 025, 1a)."""
    return (gammaln(p * x + q) - gammaln(p * x) - gammaln(q) + q * np.log(v) + (p * x - 1) * np.log(m)
            + (p * x) * np.log(x) - (p * x + q) * np.log(x * m + v))


def fit_gamma_gamma(x: np.ndarray, m: np.ndarray, weights: np.ndarray | None = None,
                    penalizer: float = 0.0) -> Fit:
    """p, q, v (`gamma` in the published tables) on repeat customers (x > 0, m > 0)."""
    x, m = np.asarray(x, dtype=float), np.asarray(m, dtype=float)
    w = _weights(weights, len(x))
    if len(x) == 0 or w.sum() <= 0:
        raise InputError("Gamma-Gamma: no repeat customers to fit")
    if ((x <= 0) | (m <= 0)).any():
        raise InputError("Gamma-Gamma: fit on repeat customers only (frequency > 0, monetary value > 0)")

    def objective(log_params: np.ndarray) -> float:
        p, q, v = np.exp(log_params)
        return (-(w * gamma_gamma_log_likelihood(p, q, v, x, m)).sum() / w.sum()
                + penalizer * float(np.sum(np.exp(log_params) ** 2)))

    result = _minimize(objective, 3)
    p, q, v = np.exp(result.x)
    ll = float((w * gamma_gamma_log_likelihood(p, q, v, x, m)).sum())
    return Fit({"p": float(p), "q": float(q), "v": float(v)}, ll, int(w.sum()), bool(result.success),
               int(result.nit), str(result.message), len(x))


def expected_order_value(params: dict[str, float], x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """E(mean spend | x, m) (note 025, equation 5): a weighted mean of the profile's own mean and the
    population's; the population mean for profiles without repeat purchases."""
    p, q, v = params["p"], params["q"], params["v"]
    x, m = _arrays(x, m)
    weight = p * x / (p * x + q - 1)
    return (1 - weight) * (v * p / (q - 1)) + weight * m


def clv(bgnbd: dict[str, float], gg: dict[str, float], x: np.ndarray, t_x: np.ndarray, T: np.ndarray, *,
        m: np.ndarray, months: int, monthly_discount: float, margin: float = 1.0,
        days_per_month: float = 30.0) -> np.ndarray:
    """Discounted value of the expected purchases over `months`: each month's expected purchases
    times the expected order value (times `margin`), discounted monthly (as `lifetimes`)."""
    x, t_x, T, m = _arrays(x, t_x, T, m)
    value = expected_order_value(gg, x, m) * margin
    total = np.zeros(len(x))
    before = np.zeros(len(x))
    for month in range(1, months + 1):
        upto = expected_purchases(bgnbd, month * days_per_month, x, t_x, T)
        total += value * (upto - before) / (1 + monthly_discount) ** month
        before = upto
    return total


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


def _minimize(objective: Any, size: int) -> Any:
    start = np.full(size, 0.1)  # exp(0.1): lifetimes' start
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = minimize(objective, start, method="BFGS", tol=1e-7, options={"maxiter": 2000})
        if not result.success:  # BFGS can stop on a flat, precision-limited tail: polish derivative-free
            polished = minimize(objective, result.x, method="Nelder-Mead",
                                options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 4000})
            if polished.fun <= result.fun:
                polished.nit += result.nit
                result = polished
    if not np.all(np.isfinite(result.x)) or not math.isfinite(result.fun):
        raise InputError(f"BTYD fit did not converge to finite parameters ({result.message})")
    return result


# ------------------------------------------------------------------------------------------------
# Spark: compression to sufficient statistics, predictions per profile

FREQUENCY, RECENCY, AGE, MONETARY = "btyd_frequency", "btyd_recency", "btyd_T", "btyd_monetary_value"


def compress(rows: DataFrame, columns: Sequence[str], max_rows: int) -> pd.DataFrame | None:
    """The distinct summaries of `rows` with how many profiles share each (`weight`), on the driver;
    None when there are more than `max_rows` (fit in Spark then). Their number, not the number of
    profiles, bounds the driver's memory: with day-grained summaries of a year it stays in the
    hundreds of thousands however many profiles there are."""
    grouped = rows.groupBy(*columns).agg(F.count(F.lit(1)).alias("weight"))
    summaries = grouped.limit(max_rows + 1).toPandas()  # one pass; never more than the bound collected
    if len(summaries) > max_rows:
        return None
    # In a fixed order: the float sums of the likelihood, hence the fit, are then the same every run.
    return summaries.sort_values(list(columns), ignore_index=True)


def fit_profiles(rows: DataFrame, penalizer: float = 0.0, max_rows: int = 5_000_000) -> tuple[Fit, Fit]:
    """BG/NBD on every profile with a first purchase (T > 0), Gamma-Gamma on its repeat customers.
    Each on compressed summaries on the driver, or summed in Spark when there are more than
    `max_rows` of them. Monetary values are rounded to cents before compressing."""
    bought = rows.where(F.col(AGE) > 0).select(*(F.col(c).cast("double").alias(c) for c in (FREQUENCY, RECENCY, AGE)))
    summaries = compress(bought, [FREQUENCY, RECENCY, AGE], max_rows)
    if summaries is None:
        bgnbd = fit_bgnbd_spark(bought, penalizer)
    else:
        bgnbd = fit_bgnbd(summaries[FREQUENCY], summaries[RECENCY], summaries[AGE], summaries["weight"], penalizer)
    repeat = (rows.where((F.col(FREQUENCY) > 0) & (F.col(MONETARY) > 0))
              .select(F.col(FREQUENCY).cast("double").alias(FREQUENCY),
                      F.round(F.col(MONETARY).cast("double"), 2).alias(MONETARY)))
    spend = compress(repeat, [FREQUENCY, MONETARY], max_rows)
    if spend is None:
        gg = fit_gamma_gamma_spark(repeat, penalizer)
    else:
        gg = fit_gamma_gamma(spend[FREQUENCY], spend[MONETARY], spend["weight"], penalizer)
    return bgnbd, gg


def _by_frequency(grouped: DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(distinct frequencies, profiles with each): small, since a frequency is a count of days."""
    table = grouped.groupBy(FREQUENCY).agg(F.sum("weight").alias("n")).toPandas()
    return table[FREQUENCY].to_numpy(dtype=float), table["n"].to_numpy(dtype=float)


def _grouped(rows: DataFrame, columns: Sequence[str]) -> DataFrame:
    """Distinct summaries with their counts, kept in the executors for the iterations."""
    return rows.groupBy(*columns).agg(F.count(F.lit(1)).cast("double").alias("weight")).persist()


def fit_bgnbd_spark(rows: DataFrame, penalizer: float = 0.0) -> Fit:
    """`fit_bgnbd` with the likelihood summed in Spark at every evaluation (rows: `FREQUENCY`,
    `RECENCY`, `AGE` of profiles with T > 0). Equation 6 of the paper split as
    ln L = A1(x) + A2(x) + ln(e^A3 + [x > 0] e^A4): A1 and A2 depend on the frequency alone and
    come from the per-frequency table; the log-sum-exp and its gradient are one aggregation."""
    grouped = _grouped(rows, [FREQUENCY, RECENCY, AGE])
    try:
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
    finally:
        grouped.unpersist()


def fit_gamma_gamma_spark(rows: DataFrame, penalizer: float = 0.0) -> Fit:
    """`fit_gamma_gamma` with the likelihood summed in Spark at every evaluation (rows: `FREQUENCY`,
    `MONETARY` of repeat customers). Of note 025's ln L, the log-gamma and x ln x terms depend on
    the frequency alone (per-frequency table), (px - 1) ln m is linear in p (two sums taken once),
    and -(px + q) ln(xm + v) is the one aggregation per evaluation."""
    grouped = _grouped(rows, [FREQUENCY, MONETARY])
    try:
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
    finally:
        grouped.unpersist()


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
