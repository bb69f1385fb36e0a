"""Synthetic data: the XDM contract, determinism, dirty rows, identities and truth that agree."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from enrich import datagen, identity, quality, xdm
from enrich.config import GenerateConfig, IdentityConfig
from frames import as_json_rows, assert_same_rows
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.testing import assertSchemaEqual

CFG = GenerateConfig(profiles=400, start_date=dt.date(2025, 1, 1), end_date=dt.date(2025, 7, 1), seed=11,
                     dirty_fraction=0.05, sessions_per_month=3.0)


@pytest.fixture(scope="module")
def persons(spark):
    return datagen.people(spark, CFG).cache()


@pytest.fixture(scope="module")
def all_events(persons):
    return datagen.events(persons, CFG).cache()


@pytest.fixture(scope="module")
def clean(all_events):
    return all_events.where("dirty_kind IS NULL").drop("dirty_kind")


@pytest.fixture(scope="module")
def truth(persons):
    return datagen.truth(persons, CFG).cache()


def event_identities(events: DataFrame) -> DataFrame:
    """One row per (event, namespace, id)."""
    return events.select("_id", "timestamp", F.explode("identityMap").alias("ns", "ids")).select(
        "_id", "timestamp", "ns", F.explode("ids").alias("identity")
    ).select("_id", "timestamp", "ns", F.col("identity.id").alias("id"))


def test_events_and_snapshot_follow_the_xdm_contract(all_events, persons):
    assertSchemaEqual(all_events.drop("dirty_kind").schema, xdm.EXPERIENCE_EVENT)
    assertSchemaEqual(datagen.snapshot(persons, CFG.seed).schema, xdm.PROFILE_SNAPSHOT)


def test_event_types_form_a_funnel(clean):
    counts = dict(clean.groupBy("eventType").count().collect())
    assert set(counts) == {xdm.EVENT_PAGE_VIEW, xdm.EVENT_PRODUCT_VIEW, xdm.EVENT_CART_ADD,
                           xdm.EVENT_CHECKOUT, xdm.EVENT_PURCHASE}
    assert counts[xdm.EVENT_PAGE_VIEW] > counts[xdm.EVENT_PRODUCT_VIEW] > counts[xdm.EVENT_CART_ADD]
    assert counts[xdm.EVENT_CART_ADD] > counts[xdm.EVENT_CHECKOUT] > counts[xdm.EVENT_PURCHASE] > 0


def test_purchases_carry_an_order_whose_items_add_up(clean):
    purchases = clean.where(F.col("eventType") == xdm.EVENT_PURCHASE).select(
        F.col("commerce.order.priceTotal").alias("total"),
        F.aggregate("productListItems", F.lit(0.0), lambda acc, i: acc + i["priceTotal"]).alias("items"),
        F.size("productListItems").alias("n"),
        F.col("commerce.purchases.value").alias("value"),
    )
    bad = purchases.where("total <= 0 OR n < 1 OR value != 1 OR abs(total - items) > 0.02 * n")
    assert purchases.count() > 0
    assert bad.count() == 0


def test_same_seed_same_data_and_other_seed_other_data(spark, all_events):
    again = datagen.events(datagen.people(spark, CFG), CFG)
    assert_same_rows(again, all_events)
    other = CFG.model_copy(update={"seed": 12})
    other_ids = datagen.events(datagen.people(spark, other), other).select("_id")
    assert other_ids.intersect(all_events.select("_id")).count() == 0


def test_a_person_does_not_depend_on_how_many_others_there_are(spark, all_events):
    # Values are hashes of (seed, person, ...): the same whatever the size and partitioning.
    bigger = CFG.model_copy(update={"profiles": 5200})  # 3 partitions instead of 2
    first = datagen.people(spark, bigger).where("person_id < 400")
    assert first.rdd.getNumPartitions() == 3
    assert_same_rows(datagen.events(first, bigger), all_events)


def test_generation_is_native_spark(all_events):
    plan = all_events._jdf.queryExecution().executedPlan().toString()
    for python_node in ("BatchEvalPython", "ArrowEvalPython", "FlatMapGroupsInPandas", "MapInPandas"):
        assert python_node not in plan


def test_dirty_rows_are_the_configured_share_and_really_dirty(all_events):
    total = all_events.count()
    by_kind = dict(all_events.where("dirty_kind IS NOT NULL").groupBy("dirty_kind").count().collect())
    dirty = sum(by_kind.values())
    f = CFG.dirty_fraction
    tolerance = 4 * math.sqrt(f * (1 - f) / total)
    assert abs(dirty / total - f) < tolerance
    assert set(by_kind) == set(datagen.DIRTY_KINDS)
    for count in by_kind.values():  # equal shares, within 5 sigma of a binomial
        share = dirty / len(datagen.DIRTY_KINDS)
        assert abs(count - share) < 5 * math.sqrt(share) + 5

    ts = F.to_timestamp("timestamp", xdm.TIMESTAMP_FORMAT)
    defects = {
        "null_identity_map": F.col("identityMap").isNull(),
        "empty_identity_map": F.size("identityMap") == 0,
        "unparseable_timestamp": F.col("timestamp").isNotNull() & F.try_to_timestamp("timestamp",
                                                                                      F.lit(xdm.TIMESTAMP_FORMAT)).isNull(),
        "missing_timestamp": F.col("timestamp").isNull(),
        "future_timestamp": ts >= F.lit(dt.datetime(2030, 1, 1)),
        "negative_price": F.col("commerce.order.priceTotal") < 0,
        "null_price": (F.col("eventType") == xdm.EVENT_PURCHASE) & F.col("commerce.order.priceTotal").isNull(),
    }
    dirty_rows = all_events.where("dirty_kind IS NOT NULL")
    for kind, defect in defects.items():
        rows = dirty_rows.where(F.col("dirty_kind") == kind)
        assert rows.where(~F.coalesce(defect, F.lit(False))).count() == 0, kind
    # A duplicate repeats an _id of a clean event exactly.
    dupes = dirty_rows.where("dirty_kind = 'duplicate_id'").drop("dirty_kind")
    clean_rows = all_events.where("dirty_kind IS NULL").drop("dirty_kind")
    assert dupes.count() > 0
    assert as_json_rows(dupes).join(as_json_rows(clean_rows), "row", "left_anti").count() == 0
    # Every other dirty row has an _id of its own.
    others = dirty_rows.where("dirty_kind != 'duplicate_id'").select("_id")
    assert others.intersect(clean_rows.select("_id")).count() == 0
    assert clean_rows.select("_id").distinct().count() == clean_rows.count()


def test_identities_agree_between_events_snapshot_and_truth(clean, persons, truth):
    ids = event_identities(clean)
    owner_by_ecid = truth.select("profile_key", "known", F.explode("ecids").alias("ecid"))
    # Every clean event carries exactly one ECID, and it belongs to exactly one person.
    assert ids.where("ns = 'ECID'").groupBy("_id").count().where("count != 1").count() == 0
    assert owner_by_ecid.groupBy("ecid").count().where("count != 1").count() == 0
    event_owner = ids.where("ns = 'ECID'").join(owner_by_ecid, F.col("id") == F.col("ecid")).select(
        "_id", "profile_key", "known")
    assert event_owner.count() == clean.count()
    # Logged-in identities on an event are the same person's CRMID / hashed Email.
    people_ids = truth.select("profile_key", F.col("crm_id").alias("CRMID"), F.col("email_hash").alias("Email"))
    authenticated = ids.where("ns != 'ECID'").join(event_owner, "_id").join(people_ids, "profile_key")
    assert authenticated.count() > 0
    mismatched = authenticated.where("(ns = 'CRMID' AND id != CRMID) OR (ns = 'Email' AND id != Email)")
    assert mismatched.count() == 0
    # Anonymous visitors never log in and are not in the snapshot; every known person's event
    # identities are in that person's snapshot identityMap.
    assert authenticated.where("NOT known").count() == 0
    snap = datagen.snapshot(persons, CFG.seed)
    snap_ids = snap.select(F.col("identityMap")["CRMID"][0]["id"].alias("CRMID"),
                           F.explode("identityMap").alias("ns", "ids")).select(
        "CRMID", "ns", F.explode("ids.id").alias("id"))
    assert snap.count() == truth.where("known").count()
    known_event_ids = ids.join(event_owner.where("known"), "_id").join(people_ids.select("profile_key", "CRMID"),
                                                                       "profile_key")
    assert known_event_ids.join(snap_ids, ["CRMID", "ns", "id"], "left_anti").count() == 0
    anonymous_ecids = owner_by_ecid.where("NOT known").select(F.col("ecid").alias("id"))
    assert anonymous_ecids.join(snap_ids, "id").count() == 0
    # Some people really use two devices, and both ECIDs show up in their events.
    two = truth.where("size(ecids) = 2").select("profile_key")
    assert event_owner.join(two, "profile_key").join(ids.where("ns='ECID'"), "_id").select(
        "profile_key", "id").distinct().groupBy("profile_key").count().where("count = 2").count() > 0


def test_events_lie_inside_each_persons_active_life(clean, truth):
    ids = event_identities(clean).where("ns = 'ECID'")
    owner = truth.select("profile_key", "start_ts", "churn_ts", "churned", F.explode("ecids").alias("id"))
    timed = ids.join(owner, "id").withColumn("ts", F.to_timestamp("timestamp", xdm.TIMESTAMP_FORMAT))
    end = dt.datetime(2025, 7, 1)
    outside = timed.where((F.col("ts") < F.col("start_ts")) | (F.col("ts") >= F.col("churn_ts")) | (F.col("ts") >= end))
    assert outside.count() == 0
    churned = truth.where("churned").count()
    assert 0 < churned < truth.count()


def test_poisson_sampler_has_the_right_mean_and_variance(spark):
    for mean in (0.3, 4.0, 60.0, 900.0):
        draws = spark.range(40_000).select(
            datagen.poisson(F.lit(mean), datagen.uniform(3, "u", F.col("id")), datagen.normal(3, "z", F.col("id")))
            .alias("n"))
        m, v = draws.select(F.mean("n"), F.var_samp("n")).first()
        assert abs(m - mean) < 5 * math.sqrt(mean / 40_000), mean
        assert abs(v / mean - 1) < 0.05, mean
    zero = spark.range(10).select(datagen.poisson(F.lit(0.0), F.lit(0.5), F.lit(0.0)).alias("n"))
    assert {r.n for r in zero.collect()} == {0}


def test_true_outcomes_by_hand(spark):
    rows = [
        # key, start, churn, rate/day, order value
        ("whole", dt.datetime(2025, 1, 1), dt.datetime(2030, 1, 1), 0.1, 50.0),
        ("churns_mid_window", dt.datetime(2025, 1, 1), dt.datetime(2025, 3, 6), 0.1, 50.0),
        ("churned_before", dt.datetime(2025, 1, 1), dt.datetime(2025, 2, 1), 0.1, 50.0),
        ("arrives_later", dt.datetime(2025, 4, 1), dt.datetime(2030, 1, 1), 0.1, 50.0),
    ]
    truth_df = spark.createDataFrame(rows, "profile_key string, start_ts timestamp, churn_ts timestamp, "
                                           "purchase_rate double, expected_order_value double")
    out = truth_df.transform(datagen.true_outcomes(dt.date(2025, 3, 1), 10, dt.date(2026, 1, 1)))
    got = {r.profile_key: r for r in out.collect()}
    assert got["whole"].active_days_in_window == pytest.approx(10.0)
    assert got["whole"].p_purchase == pytest.approx(1 - math.exp(-1.0))
    assert got["whole"].expected_spend == pytest.approx(50.0)
    assert got["whole"].active_at_as_of
    assert got["churns_mid_window"].expected_purchases == pytest.approx(0.5)
    # Days with a purchase: 10 active days, each with P(any of Poisson(0.1)) = 1 - e^-0.1.
    assert got["whole"].expected_purchase_days == pytest.approx(10 * (1 - math.exp(-0.1)))
    assert got["churns_mid_window"].expected_purchase_days == pytest.approx(5 * (1 - math.exp(-0.1)))
    assert got["churned_before"].p_purchase == 0.0 and not got["churned_before"].active_at_as_of
    assert got["arrives_later"].expected_purchases == 0.0
    # A window that runs past the end of the data is cut there.
    cut = truth_df.transform(datagen.true_outcomes(dt.date(2025, 12, 27), 30, dt.date(2026, 1, 1)))
    assert cut.where("profile_key = 'whole'").first().active_days_in_window == pytest.approx(5.0)


def test_unlisted_second_devices_reach_their_person_only_through_a_login(spark):
    """With `unlisted_device_fraction` 1, the snapshot lists no second device; the events of one
    resolve as `linked` to their person's profile once a login on that device links it, and never
    to anyone else's."""
    cfg = CFG.model_copy(update={"unlisted_device_fraction": 1.0, "dirty_fraction": 0.0})
    persons = datagen.people(spark, cfg)
    events = datagen.events(persons, cfg).drop("dirty_kind")
    snapshot = datagen.snapshot(persons, cfg.seed)
    second = datagen.truth(persons, cfg).where("size(ecids) = 2").select("crm_id", F.col("ecids")[1].alias("ecid"))
    listed = snapshot.select(F.explode("identityMap.ECID.id").alias("ecid"))
    assert second.count() > 0 and listed.join(second, "ecid").count() == 0

    as_of = dt.date(2025, 6, 1)
    valid = events.transform(quality.validate_events(dt.datetime(2025, 7, 1))).where("reason IS NULL")
    priority = IdentityConfig().namespace_priority
    profiles = identity.snapshot_profiles(snapshot, priority)
    resolved, _, _ = identity.resolve(valid, identity.event_links(valid), profiles, as_of, priority)
    on_second = resolved.select("event_id", "profile_id", "resolution").join(
        event_identities(events).where("ns = 'ECID'").select(F.col("_id").alias("event_id"), F.col("id").alias("ecid")),
        "event_id").join(second, "ecid")
    owner = identity.profile_id(F.lit("CRMID"), F.col("crm_id"))
    by = {r.resolution: r for r in on_second.groupBy("resolution").agg(
        F.count(F.lit(1)).alias("events"), F.count_if(F.col("profile_id") == owner).alias("own")).collect()}
    # Logged-in events carry the CRMID or Email: direct; the device's other events are linked.
    assert by["linked"].events > 0 and by["linked"].own == by["linked"].events
    assert by["direct"].own == by["direct"].events
    # A device never logged in on before D stays anonymous, named by its own ECID.
    anonymous = on_second.where("resolution = 'anonymous'")
    assert anonymous.where(F.col("profile_id") != identity.profile_id(F.lit("ECID"), F.col("ecid"))).count() == 0
