"""Feature families on tiny hand-made event logs, with answers worked out by hand."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from enrich import features, quality, tables
from enrich.config import FeaturesConfig
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

D = dt.date(2025, 3, 1)
CFG = FeaturesConfig(windows_days=[7, 30, 90], session_gap_minutes=30, affinity_half_life_days=30, top_categories=3)

FLAGS = ("page", "product", "cart", "checkout", "purchase")
SCHEMA = ("event_id string, ts timestamp, event_type string, identities array<struct<ns:string,id:string>>, "
          "is_page_view boolean, is_product_view boolean, is_cart_add boolean, is_checkout boolean, "
          "is_purchase boolean, revenue double, order_id string, categories array<string>, profile_key string, "
          "profile_id string, resolution string, anonymous_namespace string, anonymous_id string")


def ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def events(spark, rows: list[tuple]) -> DataFrame:
    """rows: (profile, event_id, 'YYYY-MM-DD HH:MM', kind, revenue, categories[, anonymous id])."""
    data = []
    for row in rows:
        profile, event_id, when, kind, revenue, cats = row[:6]
        anonymous = row[6] if len(row) > 6 else None
        data.append((event_id, ts(when), kind, [("ECID", "x")], *[kind == f for f in FLAGS],
                     revenue, None, cats, f"key-{profile}", profile, "anonymous" if anonymous else "direct",
                     "ECID" if anonymous else None, anonymous))
    return spark.createDataFrame(data, SCHEMA).withColumn("event_key", quality.id_hash(F.col("event_id")))


def keyed(spark, profiles: list[str], anonymous: dict[str, str] | None = None) -> DataFrame:
    """The resolution's profiles (`identity.profile_keys`): snapshot profiles, then anonymous ones
    named by an ECID; a profile's key is not its id, as in the jobs."""
    rows = [(f"key-{p}", p, "CRMID", f"crm-{p}", True) for p in profiles]
    rows += [(f"key-{p}", p, "ECID", ecid, False) for p, ecid in (anonymous or {}).items()]
    return spark.createDataFrame(
        rows, "profile_key string, profile_id string, primary_namespace string, primary_id string, in_snapshot boolean")


def attributes(spark, rows: list[tuple]) -> DataFrame:
    return spark.createDataFrame(rows, "profile_id string, tenure_days int, segment_count int")


LOG = [
    ("p1", "a", "2025-01-01 10:00", "page", None, []),
    ("p1", "b", "2025-01-01 10:10", "purchase", 10.0, ["A"]),  # same visit as a (10 min gap)
    ("p1", "c", "2025-01-01 12:00", "purchase", 30.0, ["B"]),  # 110 min later: a new visit, same day
    ("p1", "d", "2025-02-10 09:00", "product", None, ["A"]),
    ("p1", "e", "2025-02-20 09:00", "purchase", 20.0, ["A"]),
    ("p1", "f", "2025-02-28 23:50", "page", None, []),
    ("p1", "g", "2025-03-01 00:00", "purchase", 100.0, ["B"]),  # exactly at D: must not count
    ("p1", "h", "2025-03-01 00:05", "page", None, []),  # continues f's visit across D: not seen
    ("anon", "z", "2025-02-27 08:00", "page", None, [], "ecid-9"),
]


@pytest.fixture(scope="module")
def built(spark):
    rows = features.build(events(spark, LOG), keyed(spark, ["p1", "p2"], {"anon": "ecid-9", "gone": "ecid-0"}),
                          attributes(spark, [("p1", 400, 2), ("p2", None, 0)]), D, CFG)
    return {r.profile_id: r.asDict() for r in rows.collect()}


def test_activity_windows(built):
    p1 = built["p1"]
    # 7d = [Feb 22, Mar 1): f.  30d = [Jan 30, Mar 1): d, e, f.  90d: a..f.
    assert (p1["events_7d"], p1["events_30d"], p1["events_90d"]) == (1, 3, 6)
    assert (p1["page_views_7d"], p1["page_views_90d"]) == (1, 2)
    assert (p1["product_views_30d"], p1["cart_adds_90d"], p1["checkouts_90d"]) == (1, 0, 0)
    assert (p1["purchases_7d"], p1["purchases_30d"], p1["purchases_90d"]) == (0, 1, 3)
    # UTC calendar days with activity: Jan 1, Feb 10, Feb 20, Feb 28.
    assert (p1["active_days_7d"], p1["active_days_30d"], p1["active_days_90d"]) == (1, 3, 4)
    assert p1["days_since_first_event"] == 59
    assert p1["days_since_last_event"] == 1
    assert p1["days_since_last_purchase"] == 9


def test_monetary(built):
    p1 = built["p1"]
    assert (p1["revenue_30d"], p1["revenue_90d"]) == (20.0, 60.0)
    assert (p1["orders_30d"], p1["orders_90d"]) == (1, 3)
    assert p1["avg_order_value"] == pytest.approx(20.0)
    assert p1["max_order_value"] == 30.0  # the 100.0 at D is not seen


def test_btyd_follows_the_lifetimes_convention(built):
    p1 = built["p1"]
    # Purchase days Jan 1 (two orders) and Feb 20; observation end D - 1 = Feb 28.
    assert p1["btyd_frequency"] == 1.0
    assert p1["btyd_recency"] == 50.0
    assert p1["btyd_T"] == 58.0
    assert p1["btyd_monetary_value"] == 20.0  # mean revenue of repeat purchase days (Feb 20 only)


def test_rhythm_sessions_and_purchase_gaps(built):
    p1 = built["p1"]
    # Visits: {a, b}, {c}, {d}, {e}, {f}; h would have joined f's visit but is at/after D.
    assert (p1["sessions_7d"], p1["sessions_30d"], p1["sessions_90d"]) == (1, 3, 5)
    assert p1["session_duration_mean_minutes"] == pytest.approx(10.0 / 5)
    assert p1["events_per_session_mean"] == pytest.approx(6 / 5)
    assert p1["purchase_gap_mean_days"] == 50.0
    assert p1["purchase_gap_std_days"] is None  # one gap has no spread
    # 30 days before D: d, e, f (3); the 30 before that: a, b, c (3) -> (3 + 1) / (3 + 1).
    assert p1["activity_trend_30d"] == pytest.approx(1.0)


def test_affinity_is_a_recency_weighted_share(built):
    def weight(when: str) -> float:
        age = (dt.datetime(2025, 3, 1) - ts(when)).total_seconds() / 86_400
        return 0.5 ** (age / 30)

    a = weight("2025-01-01 10:10") + weight("2025-02-10 09:00") + weight("2025-02-20 09:00")
    b = weight("2025-01-01 12:00")
    p1 = built["p1"]
    assert p1["category_affinity"] == pytest.approx({"A": a / (a + b), "B": b / (a + b)})
    assert p1["top_categories"] == ["A", "B"]


def test_top_categories_rank_by_share_then_name_and_keep_three(spark):
    # One instant, so every interaction weighs the same: C and E twice, A, B and D once. The
    # names are given in an order that is neither the share order nor the name order.
    rows = [("p9", f"e{i}", "2025-02-27 10:00", "product", None, [c]) for i, c in enumerate("DCEBCAE")]
    top = features.build(events(spark, rows), keyed(spark, ["p9"]), attributes(spark, []), D, CFG).first()
    assert top["top_categories"] == ["C", "E", "A"]
    assert top["category_affinity"] == pytest.approx({"A": 1 / 7, "B": 1 / 7, "C": 2 / 7, "D": 1 / 7, "E": 2 / 7})


def test_profiles_without_events_get_a_row_of_zeros(built):
    p2 = built["p2"]
    assert p2["in_snapshot"] and p2["primary_id"] == "crm-p2"
    assert p2["events_90d"] == 0 and p2["revenue_90d"] == 0.0 and p2["sessions_30d"] == 0
    assert p2["days_since_last_event"] is None
    assert (p2["btyd_frequency"], p2["btyd_recency"], p2["btyd_T"], p2["btyd_monetary_value"]) == (0, 0, 0, 0)
    assert p2["category_affinity"] == {} and p2["top_categories"] == []


def test_snapshot_attributes_and_anonymous_profiles(built):
    assert built["p1"]["tenure_days"] == 400 and built["p1"]["segment_count"] == 2
    anon = built["anon"]
    assert not anon["in_snapshot"]
    assert (anon["primary_namespace"], anon["primary_id"]) == ("ECID", "ecid-9")
    assert anon["events_7d"] == 1 and anon["tenure_days"] is None
    # An anonymous profile without events before D (its events dropped by `unmatched: drop`) has no row.
    assert set(built) == {"p1", "p2", "anon"}


def test_names_follow_measure_window(built):
    expected = set(features.window_columns(CFG.windows_days))
    assert expected <= set(built["p1"])
    assert all(re.fullmatch(r"[a-z_]+_\d+d", name) for name in expected)


def test_snapshot_attributes_known_at_d(spark):
    snap = spark.createDataFrame(
        [("p1", ("2024-01-31T00:00:00.000Z",), {"ups": {"s1": ("realized", "2025-02-01T00:00:00Z"),
                                                        "s2": ("realized", "2025-03-01T00:00:00Z"),
                                                        "s3": ("exited", "2025-01-01T00:00:00Z")}}),
         ("p2", ("2025-03-05T00:00:00.000Z",), None),
         ("p3", None, {"ups": None, "other": {"s9": ("existing", "2025-01-01T00:00:00Z")}})],
        "profile_id string, _repo struct<createDate:string>, "
        "segmentMembership map<string,map<string,struct<status:string,lastQualificationTime:string>>>")
    got = {r.profile_id: r for r in features.snapshot_attributes(snap, D).collect()}
    assert got["p1"].tenure_days == 395  # 2024-01-31 .. 2025-03-01 (2024 is a leap year)
    assert got["p1"].segment_count == 1  # s2 qualified at D, s3 exited
    assert got["p2"].tenure_days is None  # created after D
    assert got["p2"].segment_count == 0
    assert got["p3"].segment_count == 1 and got["p3"].tenure_days is None  # a null namespace hides nothing


def test_snapshot_attributes_of_another_shape_are_absent_not_a_crash(spark):
    snap = spark.createDataFrame(
        [("p1", ("2024-01-31",), {"ups": "s1"})],
        "profile_id string, _repo struct<modifyDate:string>, segmentMembership map<string,string>")
    row = features.snapshot_attributes(snap, D).first()
    assert (row.tenure_days, row.segment_count) == (None, None)


def test_features_shuffle_the_events_once(spark):
    log = events(spark, LOG)
    with tables.spark_conf(spark, {"spark.sql.adaptive.enabled": "false"}):  # the static plan shows exchange reuse
        rows = features.build(log, keyed(spark, ["p1"]), attributes(spark, [("p1", 1, 1)]), D, CFG)
        plan = rows._jdf.queryExecution().executedPlan().toString()
    nodes = [re.sub(r"^\*\(\d+\) ", "", line.lstrip(" :+-")) for line in plan.splitlines()]
    exchanges = [i for i, n in enumerate(nodes) if n.startswith("Exchange ")]
    assert len([i for i in exchanges if "REPARTITION_BY_COL" in nodes[i]]) == 1, plan

    def moves_events(i: int) -> bool:
        """Down the exchange's input: a partial aggregate first means sums, a scan first means rows."""
        for node in nodes[i + 1:]:
            if "partial_" in node:
                return False
            if node.startswith("Scan"):
                return "event_id" in node
        raise AssertionError(plan)

    others = [i for i in exchanges if "REPARTITION_BY_COL" not in nodes[i]]
    assert others and not any(moves_events(i) for i in others), plan
    assert "ArrowEvalPython" not in plan and "BatchEvalPython" not in plan
