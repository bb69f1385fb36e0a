"""BG/NBD and Gamma-Gamma: the published CDNOW fits, `lifetimes`' predictions for the same parameters,
and the Spark side (compressed fitting, native expressions and the pandas UDF) against numpy."""

from __future__ import annotations

from pathlib import Path

import lifetimes
import numpy as np
import pandas as pd
import pytest
from enrich import btyd_math as bm
from enrich import btyd_model as btyd
from enrich.errors import InputError
from lifetimes import BetaGeoFitter, GammaGammaFitter

DATA = Path(lifetimes.__file__).parent / "datasets"
# Fader, Hardie & Lee (2005) on CDNOW (weeks), and Hardie's note 025 for the spend model.
BGNBD_PUBLISHED = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
GG_PUBLISHED = {"p": 6.25, "q": 3.74, "v": 15.44}
BG = {"r": 0.2426, "alpha": 4.4135, "a": 0.7929, "b": 2.4258}
GG = {"p": 6.2488, "q": 3.7446, "v": 15.4477}


def test_bgnbd_reproduces_the_published_cdnow_fit():
    s = pd.read_csv(DATA / "cdnow_customers_summary.csv")
    assert len(s) == 2357
    fit = bm.fit_bgnbd(s["frequency"], s["recency"], s["T"])
    for name, published in BGNBD_PUBLISHED.items():
        assert fit[name] == pytest.approx(published, rel=0.01), name
    assert fit.log_likelihood == pytest.approx(-9582.4, rel=0.01) and fit.converged
    # The same fit from the distinct summaries and their counts (what the Spark side sends the driver).
    c = s.groupby(["frequency", "recency", "T"]).size().reset_index(name="n")
    assert len(c) < len(s)
    weighted = bm.fit_bgnbd(c["frequency"], c["recency"], c["T"], c["n"])
    assert weighted.params == pytest.approx(fit.params, rel=1e-5)
    assert weighted.log_likelihood == pytest.approx(fit.log_likelihood, rel=1e-9)
    assert weighted.profiles == 2357 and weighted.summaries == len(c) == 1016


def test_gamma_gamma_reproduces_the_published_cdnow_fit():
    s = pd.read_csv(DATA / "cdnow_customers_summary_with_transactions.csv")
    repeat = s[s["x"] > 0]
    assert len(repeat) == 946
    fit = bm.fit_gamma_gamma(repeat["x"], repeat["zbar"])
    for name, published in GG_PUBLISHED.items():
        assert fit[name] == pytest.approx(published, rel=0.01), name
    assert fit.converged


def test_a_penalty_shrinks_the_parameters_like_lifetimes():
    s = pd.read_csv(DATA / "cdnow_customers_summary.csv")
    ours = bm.fit_bgnbd(s["frequency"], s["recency"], s["T"], penalizer=0.1)
    theirs = BetaGeoFitter(penalizer_coef=0.1).fit(s["frequency"], s["recency"], s["T"])
    for name in ("r", "alpha", "a", "b"):
        assert ours[name] == pytest.approx(theirs.params_[name], rel=1e-3), name
    assert sum(v**2 for v in ours.params.values()) < sum(v**2 for v in bm.fit_bgnbd(
        s["frequency"], s["recency"], s["T"]).params.values())


def profiles(n: int = 3000, seed: int = 5) -> pd.DataFrame:
    """Day-grained summaries, with the edge cases: no repeats, recency = T, a very long T."""
    rng = np.random.default_rng(seed)
    T = rng.integers(1, 400, n).astype(float)
    x = rng.poisson(2.0, n).astype(float)
    t_x = np.where(x > 0, np.floor(rng.uniform(0, 1, n) * (T + 1)), 0.0)
    m = np.where(x > 0, rng.gamma(3.0, 20.0, n).round(2) + 1, 0.0)
    edges = pd.DataFrame({"x": [0.0, 0.0, 3.0, 1.0, 12.0, 40.0, 5.0, 1.0],
                          "t_x": [0.0, 0.0, 200.0, 1.0, 5000.0, 20000.0, 0.0 + 30, 364.0],
                          "T": [1.0, 9000.0, 200.0, 1.0, 5000.0, 25000.0, 400.0, 364.0],
                          "m": [0.0, 0.0, 35.5, 12.0, 80.0, 20.0, 5.0, 100.0]})
    return pd.concat([pd.DataFrame({"x": x, "t_x": t_x, "T": T, "m": m}), edges], ignore_index=True)


def _lifetimes_models():
    bgf, ggf = BetaGeoFitter(), GammaGammaFitter()
    bgf.params_, ggf.params_ = pd.Series(BG), pd.Series(GG)
    bgf.predict = bgf.conditional_expected_number_of_purchases_up_to_time  # what fit() would set
    return bgf, ggf


def test_predictions_equal_lifetimes_for_the_same_parameters():
    p = profiles()
    bgf, ggf = _lifetimes_models()
    np.testing.assert_allclose(bm.p_alive(BG, p.x, p.t_x, p["T"]),
                               bgf.conditional_probability_alive(p.x, p.t_x, p["T"]), rtol=1e-6)
    for t in (1.0, 30.0, 365.0):
        np.testing.assert_allclose(
            bm.expected_purchases(BG, t, p.x, p.t_x, p["T"]),
            bgf.conditional_expected_number_of_purchases_up_to_time(t, p.x, p.t_x, p["T"]), rtol=1e-6)
    np.testing.assert_allclose(bm.expected_order_value(GG, p.x, p.m),
                               ggf.conditional_expected_average_profit(p.x, p.m), rtol=1e-6)
    ours = bm.clv(BG, GG, p.x, p.t_x, p["T"], m=p.m, months=12, monthly_discount=0.01)
    theirs = ggf.customer_lifetime_value(bgf, p.x, p.t_x, p["T"], p.m, time=12, discount_rate=0.01, freq="D")
    np.testing.assert_allclose(ours, theirs.to_numpy(), rtol=1e-6)
    assert np.all(np.isfinite(ours)) and (ours >= 0).all()
    # a margin scales the value; no repeats means alive
    assert bm.clv(BG, GG, p.x, p.t_x, p["T"], m=p.m, months=12, monthly_discount=0.01, margin=0.3) == \
        pytest.approx(0.3 * ours)
    assert (bm.p_alive(BG, p.x, p.t_x, p["T"])[p.x == 0] == 1.0).all()


def test_spark_predictions_equal_numpy(spark):
    p = profiles(500)
    rows = spark.createDataFrame(p.rename(columns={"x": btyd.FREQUENCY, "t_x": btyd.RECENCY, "T": btyd.AGE,
                                                   "m": btyd.MONETARY}).assign(id=range(len(p))))
    out = btyd.predictions(rows, BG, GG, horizon_days=30, months=6, monthly_discount=0.01).toPandas()
    out = out.sort_values("id")
    np.testing.assert_allclose(out.p_alive, bm.p_alive(BG, p.x, p.t_x, p["T"]), rtol=1e-9)
    np.testing.assert_allclose(out.expected_purchases, bm.expected_purchases(BG, 30, p.x, p.t_x, p["T"]),
                               rtol=1e-9)
    np.testing.assert_allclose(out.expected_order_value, bm.expected_order_value(GG, p.x, p.m), rtol=1e-9)
    np.testing.assert_allclose(out.clv, bm.clv(BG, GG, p.x, p.t_x, p["T"], m=p.m, months=6,
                                                 monthly_discount=0.01), rtol=1e-9)


def test_fitting_from_spark_compresses_and_equals_the_row_by_row_fit(spark):
    s = pd.read_csv(DATA / "cdnow_customers_summary_with_transactions.csv")
    frame = pd.DataFrame({btyd.FREQUENCY: s["x"].astype(float), btyd.RECENCY: s["t_x"], btyd.AGE: s["T"],
                          btyd.MONETARY: np.where(s["x"] > 0, s["zbar"], 0.0)})
    bgnbd, gg = btyd.fit_profiles(spark.createDataFrame(frame))
    direct = bm.fit_bgnbd(s["x"], s["t_x"], s["T"])
    assert bgnbd.params == pytest.approx(direct.params, rel=1e-5) and bgnbd.profiles == 2357
    repeat = s[s["x"] > 0]
    assert gg.params == pytest.approx(bm.fit_gamma_gamma(repeat["x"], repeat["zbar"]).params, rel=1e-5)
    assert gg.profiles == 946
    assert (bgnbd.summed_in, gg.summed_in) == ("driver", "driver")
    # The same fit to the last bit whatever the partitioning (a re-trained model ties its champion).
    again, gg_again = btyd.fit_profiles(spark.createDataFrame(frame).repartition(7))
    assert (again.params, gg_again.params) == (bgnbd.params, gg.params)


def test_too_many_summaries_are_summed_in_spark_to_the_same_optimum(spark):
    """Above `max_rows` distinct summaries nothing is collected: the likelihood and its gradient are
    aggregated in Spark per step. Same CDNOW optimum and log-likelihood, also with a penalty."""
    s = pd.read_csv(DATA / "cdnow_customers_summary_with_transactions.csv")
    frame = spark.createDataFrame(pd.DataFrame({
        btyd.FREQUENCY: s["x"].astype(float), btyd.RECENCY: s["t_x"], btyd.AGE: s["T"],
        btyd.MONETARY: np.where(s["x"] > 0, s["zbar"], 0.0)}))
    repeat = s[s["x"] > 0]
    for penalizer in (0.0, 0.05):
        bgnbd, gg = btyd.fit_profiles(frame, penalizer, max_rows=10)
        assert (bgnbd.summed_in, gg.summed_in) == ("spark", "spark")
        direct = bm.fit_bgnbd(s["x"], s["t_x"], s["T"], penalizer=penalizer)
        assert bgnbd.params == pytest.approx(direct.params, rel=1e-4), penalizer
        assert bgnbd.log_likelihood == pytest.approx(direct.log_likelihood, rel=1e-7)
        assert bgnbd.profiles == 2357 and bgnbd.summaries == 1016 and bgnbd.converged
        spend = bm.fit_gamma_gamma(repeat["x"], repeat["zbar"], penalizer=penalizer)
        assert gg.params == pytest.approx(spend.params, rel=1e-4), penalizer
        assert gg.log_likelihood == pytest.approx(spend.log_likelihood, rel=1e-7)
        assert gg.profiles == 946 and gg.converged
    with pytest.raises(InputError, match="1 summaries are impossible"):
        bad = spark.createDataFrame([(2.0, 5.0, 3.0, 1.0)], [btyd.FREQUENCY, btyd.RECENCY, btyd.AGE, btyd.MONETARY])
        btyd.fit_profiles(bad, max_rows=0)


def test_impossible_summaries_are_named():
    with pytest.raises(InputError, match=r"1 summaries are impossible.*frequency=2.0, recency=5.0, T=3.0"):
        bm.fit_bgnbd(np.array([1.0, 2.0]), np.array([1.0, 5.0]), np.array([3.0, 3.0]))
    with pytest.raises(InputError, match="repeat customers only"):
        bm.fit_gamma_gamma(np.array([0.0, 2.0]), np.array([0.0, 5.0]))
    with pytest.raises(InputError, match="no profiles"):
        bm.fit_bgnbd(np.array([]), np.array([]), np.array([]))
