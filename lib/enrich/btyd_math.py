"""Buy-till-you-die models in numpy: BG/NBD (Fader, Hardie & Lee 2005, "Counting your customers the
easy way") and the Gamma-Gamma spend model (Fader, Hardie & Lee 2005, "RFM and CLV"; Hardie's note 025).

Maximum-likelihood fits with an optional L2 penalty on the parameters (as `lifetimes`'
`penalizer_coef`) on (weighted) summaries, and the closed-form predictions: P(alive), expected
purchases (the Gaussian hypergeometric function is scipy's `hyp2f1`), expected order value and
discounted CLV. No Spark here: the registered pyfunc (`btyd_pyfunc`) serves with this module alone;
`btyd_model` applies it to DataFrames.

Time is in the unit of the inputs (days for the `btyd_*` features); `alpha` is per that unit.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, gammaln, hyp2f1

from enrich.errors import InputError

# The summary columns (the features job's names).
FREQUENCY, RECENCY, AGE, MONETARY = "btyd_frequency", "btyd_recency", "btyd_T", "btyd_monetary_value"


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
