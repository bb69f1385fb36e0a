"""Labels: what happened in the outcome window [D, D + horizon) after each as-of date D.

Features as of D see only events before D; labels for D see only events in [D, D + horizon). A
training set joins the two per (profile_id, as_of_date), for the profiles eligible at D.

Which profile a label event belongs to is decided by the identity graph as of the end of the
latest outcome window (links from the snapshot and from every event before that instant): labels
may use the future, features may not, and the later graph is the better knowledge of who did what.
Known profiles have the same `profile_id` under any graph (it is a hash of their primary
identity), so their features and labels always meet; an anonymous visitor who logs in during the
window has their conversion counted on the customer profile they joined.

Kinds:
- conversion: 1 when the profile has a goal event in the window;
- churn: 1 when an eligible profile (by default: one with a purchase in the look-back) has none;
- clv: the goal events' revenue in the window (0 when none);
- clv_btyd: the same revenue, and `purchases`: the UTC days with a goal event in the window (the
  BG/NBD counts one transaction per purchase day, as the `btyd_*` features do);
- affinity: per (profile, category), the interactions in the window (`category_outcomes`);
- segments: no label.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from enrich import utc, xdm
from enrich.config import AMOUNT_KINDS, GoalConfig, ModelConfig

# eventType values whose flag (set by the event type or by the event's measures) counts as that type.
_FLAGS = {
    xdm.EVENT_PURCHASE: "is_purchase",
    xdm.EVENT_PRODUCT_VIEW: "is_product_view",
    xdm.EVENT_CART_ADD: "is_cart_add",
    xdm.EVENT_CHECKOUT: "is_checkout",
    xdm.EVENT_PAGE_VIEW: "is_page_view",
}


def goal_event(goal: GoalConfig) -> Column:
    """True for a validated event that is a goal event (never null)."""
    hit = F.coalesce(F.col("event_type").isin(*goal.event_types), F.lit(False))
    for event_type in goal.event_types:
        if event_type in _FLAGS:
            hit = hit | F.col(_FLAGS[event_type])
    if goal.min_order_value is not None:
        hit = hit & F.coalesce(F.col("revenue") >= goal.min_order_value, F.lit(False))
    return hit


def _window_starts(dates: Sequence[dt.date], horizon_days: int) -> Column:
    """The as-of dates whose outcome window holds the event (`ts` in [D, D + horizon))."""
    day = F.to_date("ts")
    return F.filter(F.array(*[F.lit(d) for d in dates]),
                    lambda d: (F.datediff(day, d) >= 0) & (F.datediff(day, d) < horizon_days))


def _in_range(dates: Sequence[dt.date], horizon_days: int) -> Column:
    end = max(dates) + dt.timedelta(days=horizon_days)
    return (F.col("ts") >= utc.midnight(min(dates))) & (F.col("ts") < utc.midnight(end))


def outcomes(dates: Sequence[dt.date], horizon_days: int, goal: GoalConfig, *,
             days: bool = False) -> Callable[[DataFrame], DataFrame]:
    """Resolved events -> (profile_id, as_of_date, goal_events, goal_revenue), for profiles with
    any goal event in some window; windows of several dates may overlap, each counts on its own.
    With `days`, also `goal_days`: the distinct UTC days with a goal event (a distinct count, so
    only when asked: it doubles the aggregation's work).

    One pass: each event is paired with the (few) as-of dates whose window holds it.
    """

    def transform(events: DataFrame) -> DataFrame:
        is_goal = goal_event(goal)
        counted = [F.count(F.lit(1)).alias("goal_events"),
                   F.coalesce(F.sum("revenue"), F.lit(0.0)).alias("goal_revenue")]
        if days:
            counted.insert(1, F.count_distinct("day").alias("goal_days"))
        return (
            events.where(_in_range(dates, horizon_days) & is_goal)
            .select("profile_id", F.explode(_window_starts(dates, horizon_days)).alias("as_of_date"), "revenue",
                    F.to_date("ts").alias("day"))
            .groupBy("profile_id", "as_of_date")
            .agg(*counted)
        )

    return transform


def previous_outcomes(dates: Sequence[dt.date], horizon_days: int,
                      goal: GoalConfig) -> Callable[[DataFrame], DataFrame]:
    """Resolved events -> (profile_id, as_of_date, previous_days, previous_revenue): the goal's
    purchase days and revenue in the window of the same length just before each D, [D - horizon, D)
    (a baseline's forecast: only events before D)."""

    def transform(events: DataFrame) -> DataFrame:
        earlier = [d - dt.timedelta(days=horizon_days) for d in dates]
        return events.transform(outcomes(earlier, horizon_days, goal, days=True)).select(
            "profile_id", F.date_add("as_of_date", horizon_days).alias("as_of_date"),
            F.col("goal_days").alias("previous_days"), F.col("goal_revenue").alias("previous_revenue"))

    return transform


def category_outcomes(dates: Sequence[dt.date], horizon_days: int) -> Callable[[DataFrame], DataFrame]:
    """Resolved events -> (profile_id, as_of_date, category, interactions): events that name a
    product category (views, cart adds, purchases) in each window."""

    def transform(events: DataFrame) -> DataFrame:
        return (
            events.where(_in_range(dates, horizon_days) & (F.size("categories") > 0))
            .select("profile_id", F.explode(_window_starts(dates, horizon_days)).alias("as_of_date"),
                    F.explode("categories").alias("category"))
            .groupBy("profile_id", "as_of_date", "category").agg(F.count(F.lit(1)).alias("interactions"))
        )

    return transform


def eligible(model: ModelConfig) -> Column:
    """Feature-table predicate: the profile is in the model's population at its as-of date.

    Active in the `lookback_days` before D means an event in [D - lookback, D), which is exactly
    `days_since_last_event <= lookback` (days are UTC calendar days).
    """
    lookback = model.eligibility.lookback_days
    rule = model.active_require
    if rule == "any_event":
        return F.coalesce(F.col("days_since_last_event") <= lookback, F.lit(False))
    if rule == "purchase":
        return F.coalesce(F.col("days_since_last_purchase") <= lookback, F.lit(False))
    if rule == "customer":
        return F.col("days_since_last_purchase").isNotNull()
    return F.lit(True)


def label(model: ModelConfig) -> Column:
    """The label column of a supervised kind, from the joined outcome columns (nulls: no outcome)."""
    goal_events = F.coalesce(F.col("goal_events"), F.lit(0))
    if model.kind == "conversion":
        return (goal_events > 0).cast("double")
    if model.kind == "churn":
        return (goal_events == 0).cast("double")
    if model.kind in AMOUNT_KINDS:
        return F.coalesce(F.col("goal_revenue"), F.lit(0.0)).cast("double")
    raise ValueError(f"{model.kind} models have no per-profile label")


def labelled(features: DataFrame, outcome: DataFrame, model: ModelConfig,
             previous: DataFrame | None = None) -> DataFrame:
    """Eligible feature rows with their `label` (features of D meet outcomes of [D, D + horizon)).
    clv_btyd rows (`outcome` with `days`) also get `purchases` (purchase days in the window) and,
    given `previous` (`previous_outcomes`), `previous_purchases` and `previous_revenue` for its
    baselines."""
    keys = ["profile_id", "as_of_date"]
    rows = features.where(eligible(model)).join(outcome, keys, "left")
    extra = []
    if model.kind == "clv_btyd":
        extra.append(F.coalesce(F.col("goal_days"), F.lit(0)).cast("double").alias("purchases"))
        if previous is not None:
            rows = rows.join(previous, keys, "left")
            extra += [F.coalesce(F.col("previous_days"), F.lit(0)).cast("double").alias("previous_purchases"),
                      F.coalesce(F.col("previous_revenue"), F.lit(0.0)).cast("double").alias("previous_revenue")]
    return rows.select(*features.columns, label(model).alias("label"), *extra)
