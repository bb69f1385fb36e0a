"""Identity resolution: the ECID -> CRMID chain, shared devices, point in time, order independence."""

from __future__ import annotations

import datetime as dt
import functools
import logging

import pytest
from enrich import identity, tables
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

PRIORITY = ["CRMID", "Email", "ECID"]
EVENT_SCHEMA = "event_id string, ts timestamp, identities array<struct<ns:string,id:string>>"
SNAPSHOT_SCHEMA = "identityMap map<string, array<struct<id:string, authenticatedState:string, primary:boolean>>>"


def ev(spark, rows: list[tuple[str, str, list[tuple[str, str]]]]) -> DataFrame:
    return spark.createDataFrame([(i, dt.datetime.fromisoformat(t), ids) for i, t, ids in rows], EVENT_SCHEMA)


def snap(spark, profiles: list[dict[str, list[str]]]) -> DataFrame:
    rows = [({ns: [(i, "authenticated", False) for i in ids] for ns, ids in p.items()},) for p in profiles]
    return spark.createDataFrame(rows, SNAPSHOT_SCHEMA)


def resolve(spark, events: DataFrame, snapshot: DataFrame, as_of: dt.date) -> dict[str, tuple[str, str]]:
    """event_id -> (primary identity of its profile, resolution), named through the resolution's
    `profile_keys`: one key per profile, every snapshot profile listed, each event's key naming its
    own profile_id."""
    profiles = identity.snapshot_profiles(snapshot, PRIORITY)
    resolved, keyed, _ = identity.resolve(events, identity.event_links(events), profiles, as_of,
                                          PRIORITY, 20)
    keys = keyed.collect()
    assert len({k.profile_key for k in keys}) == len({k.profile_id for k in keys}) == len(keys)
    assert {k.profile_id for k in keys if k.in_snapshot} == {p.profile_id for p in profiles.collect()}
    named = resolved.join(keyed.withColumnRenamed("profile_id", "keyed_id"), "profile_key", "left").select(
        "event_id", F.col("primary_id").alias("who"), "resolution",
        F.coalesce(F.col("keyed_id") == F.col("profile_id"), F.lit(False)).alias("named"))
    rows = named.collect()
    got = {r.event_id: (r.who, r.resolution) for r in rows}
    assert len(got) == len(rows), "an event resolved to more than one profile"
    assert all(r.named for r in rows), "an event's profile_key names another profile"
    return got


def test_an_ecid_seen_once_with_a_crmid_brings_all_its_events(spark):
    events = ev(spark, [
        ("e1", "2025-01-01 10:00:00", [("ECID", "A")]),  # anonymous browsing
        ("e2", "2025-01-05 10:00:00", [("ECID", "A"), ("CRMID", "C")]),  # logs in once
        ("e3", "2025-01-09 10:00:00", [("ECID", "A")]),  # anonymous again
    ])
    snapshot = snap(spark, [{"CRMID": ["C"]}])  # the platform never listed ECID A
    after = resolve(spark, events, snapshot, dt.date(2025, 2, 1))
    assert after == {"e1": ("C", "linked"), "e2": ("C", "direct"), "e3": ("C", "linked")}
    # Point in time: before the login was seen, A is nobody's; events at/after D are not resolved.
    before = resolve(spark, events, snapshot, dt.date(2025, 1, 5))
    assert before == {"e1": ("A", "anonymous")}


def test_a_shared_device_is_split_by_each_events_own_identity(spark):
    events = ev(spark, [
        ("e1", "2025-01-01 10:00:00", [("ECID", "S"), ("CRMID", "C1")]),
        ("e2", "2025-01-02 10:00:00", [("ECID", "S"), ("CRMID", "C2")]),
        ("e3", "2025-01-03 10:00:00", [("ECID", "S")]),
    ])
    snapshot = snap(spark, [{"CRMID": ["C1"], "ECID": ["S"]}, {"CRMID": ["C2"], "ECID": ["S"]}])
    got = resolve(spark, events, snapshot, dt.date(2025, 2, 1))
    assert got["e1"] == ("C1", "direct")
    assert got["e2"] == ("C2", "direct")
    # S alone is listed by both profiles: it goes to the smaller profile_id (documented rule).
    ids = {c: identity_profile_id(spark, c) for c in ("C1", "C2")}
    assert got["e3"] == (min(ids, key=ids.get), "direct")


def identity_profile_id(spark, crm: str) -> str:
    return spark.range(1).select(identity.profile_id(F.lit("CRMID"), F.lit(crm))).first()[0]


def test_a_component_reaching_two_profiles_goes_to_the_best_primary_identity(spark):
    events = ev(spark, [
        ("e1", "2025-01-01 10:00:00", [("ECID", "X"), ("CRMID", "C2")]),
        ("e2", "2025-01-02 10:00:00", [("ECID", "X"), ("CRMID", "C1")]),
        ("e3", "2025-01-03 10:00:00", [("ECID", "X")]),
    ])
    snapshot = snap(spark, [{"CRMID": ["C1"]}, {"CRMID": ["C2"]}])
    got = resolve(spark, events, snapshot, dt.date(2025, 2, 1))
    assert got == {"e1": ("C2", "direct"), "e2": ("C1", "direct"), "e3": ("C1", "linked")}


def test_profiles_whose_keys_collide_are_numbered_apart(spark, monkeypatch):
    """Features group events by profile_key, a hash of profile_id: if two profiles of a resolution
    ever shared one, the resolution numbers its profiles anew rather than merge them."""
    monkeypatch.setattr(identity, "_profile_key", lambda profile: F.lit(7).cast("long"))
    events = ev(spark, [
        ("e1", "2025-01-01 10:00:00", [("ECID", "X"), ("CRMID", "C2")]),
        ("e2", "2025-01-02 10:00:00", [("ECID", "X"), ("CRMID", "C1")]),
        ("e3", "2025-01-03 10:00:00", [("ECID", "X")]),
        ("e4", "2025-01-04 10:00:00", [("ECID", "Y")]),
        ("e5", "2025-01-05 10:00:00", [("ECID", "Z")]),
    ])
    snapshot = snap(spark, [{"CRMID": ["C1"]}, {"CRMID": ["C2"]}, {"CRMID": ["C3"]}])
    # `resolve` checks one key per profile and that each event's key names its own profile.
    got = resolve(spark, events, snapshot, dt.date(2025, 2, 1))
    assert got == {"e1": ("C2", "direct"), "e2": ("C1", "direct"), "e3": ("C1", "linked"),
                   "e4": ("Y", "anonymous"), "e5": ("Z", "anonymous")}


def test_profiles_sharing_an_identity_no_event_carries_are_one_component(spark):
    """Two profiles both list one Email: the graph joins them through it even though no event
    carries it, so a device linked to C2 lands in a component whose best primary is C1."""
    events = ev(spark, [
        ("e1", "2025-01-01 10:00:00", [("ECID", "D"), ("CRMID", "C2")]),
        ("e2", "2025-01-02 10:00:00", [("ECID", "D")]),
        ("e3", "2025-01-03 10:00:00", [("ECID", "Z")]),
    ])
    snapshot = snap(spark, [{"CRMID": ["C1"], "Email": ["m"]}, {"CRMID": ["C2"], "Email": ["m"]}])
    got = resolve(spark, events, snapshot, dt.date(2025, 2, 1))
    assert got == {"e1": ("C2", "direct"), "e2": ("C1", "linked"), "e3": ("Z", "anonymous")}


def test_an_events_own_listed_identity_wins_over_its_best_identitys_component(spark):
    events = ev(spark, [
        ("e1", "2025-01-01 10:00:00", [("CRMID", "Cx"), ("ECID", "E")]),  # Cx unknown, E listed by C2
        ("e2", "2025-01-02 10:00:00", [("CRMID", "Cx"), ("ECID", "F")]),
        ("e3", "2025-01-03 10:00:00", [("ECID", "F"), ("CRMID", "C1")]),
    ])
    # One component holds C1 and C2; its best primary is C1, but e1 carries E, which C2 lists.
    snapshot = snap(spark, [{"CRMID": ["C1"]}, {"CRMID": ["C2"], "ECID": ["E"]}])
    got = resolve(spark, events, snapshot, dt.date(2025, 2, 1))
    assert got == {"e1": ("C2", "direct"), "e2": ("C1", "linked"), "e3": ("C1", "direct")}


def test_snapshot_rows_sharing_a_primary_identity_are_one_profile_whatever_their_order(spark):
    schema = SNAPSHOT_SCHEMA + ", label string"
    rows = [({"CRMID": [("C", None, None)], "ECID": [("A", None, None)]}, "first"),
            ({"CRMID": [("C", None, None)], "ECID": [("B", None, None)]}, "second")]
    seen = set()
    for order in (rows, rows[::-1]):
        for partitions in (1, 2):
            got = identity.snapshot_profiles(spark.createDataFrame(order, schema).repartition(partitions),
                                             PRIORITY).collect()
            assert len(got) == 1
            seen.add((tuple(got[0].nodes), got[0].label))
    assert len(seen) == 1
    nodes, _ = seen.pop()
    assert nodes == ("CRMID:C", "ECID:A", "ECID:B")  # primary first, then by priority and id


def test_unmatched_components_are_anonymous_profiles_or_dropped(spark):
    events = ev(spark, [
        ("e1", "2025-01-01 10:00:00", [("ECID", "Q"), ("Email", "h1")]),
        ("e2", "2025-01-02 10:00:00", [("ECID", "Q")]),
    ])
    snapshot = snap(spark, [{"CRMID": ["C1"]}])
    profiles = identity.snapshot_profiles(snapshot, PRIORITY)
    resolved, _, _ = identity.resolve(events, identity.event_links(events), profiles,
                                      dt.date(2025, 2, 1), PRIORITY, 20)
    kept = {(r.anonymous_namespace, r.anonymous_id) for r in identity.apply_unmatched(resolved, "keep").collect()}
    assert kept == {("Email", "h1")}  # one profile, named by its best identity
    assert identity.apply_unmatched(resolved, "drop").count() == 0


def test_snapshot_profile_id_is_stable_and_primary_is_the_best_identity(spark):
    snapshot = snap(spark, [{"ECID": ["E9"], "Email": ["m"], "CRMID": ["C7"]}, {"ECID": ["E1"], "Email": ["k"]}])
    rows = {r.primary_id: r for r in identity.snapshot_profiles(snapshot, PRIORITY).collect()}
    assert set(rows) == {"C7", "k"}
    assert rows["C7"].primary_namespace == "CRMID" and rows["k"].primary_namespace == "Email"
    assert rows["C7"].profile_id == identity_profile_id(spark, "C7")
    assert sorted(rows["C7"].nodes) == ["CRMID:C7", "ECID:E9", "Email:m"]


def test_label_propagation_joins_a_long_chain_and_warns_at_its_bound(spark, caplog):
    chain = spark.createDataFrame([(f"n{i:02d}", f"n{i + 1:02d}") for i in range(40)], "src string, dst string")
    components, rounds, nodes = identity.connected_components(chain, 20)
    assert {r.component for r in components.collect()} == {"n00"}
    assert nodes == components.count() == 41
    assert rounds < 20  # pointer jumping converges in about log2(40) rounds
    with caplog.at_level(logging.WARNING, logger="enrich.identity"):
        partial, used, _ = identity.connected_components(chain, 1)
    assert used == 1 and "identity.max_iterations=1" in caplog.text
    assert partial.select("component").distinct().count() > 1


def test_a_kept_table_is_counted_by_the_job_that_keeps_it(spark):
    """kept_counted runs the jobs a plain localCheckpoint runs, no count after them."""
    frame = spark.range(1000).groupBy((F.col("id") % 7).alias("k")).count()

    def jobs(group: str, action) -> tuple[int, object]:
        spark.sparkContext.setJobGroup(group, group)
        try:
            result = action()
        finally:
            spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)
        return len(spark.sparkContext.statusTracker().getJobIdsForGroup(group)), result

    plain, _ = jobs("plain-checkpoint", frame.localCheckpoint)
    counted, (kept, rows) = jobs("kept-counted", lambda: tables.kept_counted(frame))
    assert rows == 7 and kept.count() == 7
    assert counted == plain


def test_kept_profiles_are_not_spread_over_the_sessions_partitions(spark):
    """The kept profiles' aggregation is sized by adaptive execution (a few profiles: one partition),
    where a cached plan would otherwise keep the session's count; the setting is given back."""
    snapshot = snap(spark, [{"CRMID": [f"C{i}"]} for i in range(20)])
    with tables.spark_conf(spark, {"spark.sql.shuffle.partitions": "8", "spark.sql.adaptive.enabled": "true"}):
        kept, profiles = identity.kept_profiles(snapshot, PRIORITY)
        # Another snapshot: the same one would share the kept profiles' cache.
        other = snap(spark, [{"CRMID": [f"D{i}"]} for i in range(20)])
        plain = identity.snapshot_profiles(other, PRIORITY).persist()
        try:
            assert plain.rdd.getNumPartitions() == 8
            assert kept.rdd.getNumPartitions() == 1
            assert profiles.count() == kept.count() == 20
            assert spark.conf.get("spark.sql.optimizer.canChangeCachedPlanOutputPartitioning") == "false"
        finally:
            kept.unpersist()
            plain.unpersist()


def test_identity_shuffles_are_sized_to_the_sets_not_the_session(spark, monkeypatch):
    """About SETS_PER_PARTITION sets per partition, at least one per core, at most the session's count."""
    cores = spark.sparkContext.defaultParallelism
    monkeypatch.setattr(identity, "SETS_PER_PARTITION", 10)
    with tables.spark_conf(spark, {"spark.sql.shuffle.partitions": str(cores + 5)}):
        assert identity._partitions_for(spark.range(5)) == cores
        assert identity._partitions_for(spark.range(10 * (cores + 2) - 3)) == cores + 2
        assert identity._partitions_for(spark.range(10_000)) == cores + 5
        kept = spark.range(10 * (cores + 2) - 3, numPartitions=cores + 4).persist()
        table, partitions = identity.coalesced(kept)
        assert table.rdd.getNumPartitions() == partitions == cores + 2
        assert table.count() == 10 * (cores + 2) - 3
        kept.unpersist()
    # The resolution runs under that size and gives the session's setting back.
    before = spark.conf.get("spark.sql.shuffle.partitions")
    got = resolve(spark, ev(spark, GRAPH_EVENTS), snap(spark, [{"CRMID": ["C1"]}]), dt.date(2025, 2, 1))
    assert got["e2"][1] == "direct" and got["e1"][1] == "linked"
    assert spark.conf.get("spark.sql.shuffle.partitions") == before


GRAPH_EVENTS = [
    ("e1", "2025-01-01 10:00:00", [("ECID", "A")]),
    ("e2", "2025-01-02 10:00:00", [("ECID", "A"), ("CRMID", "C1")]),
    ("e3", "2025-01-03 10:00:00", [("ECID", "B"), ("Email", "m2")]),
    ("e4", "2025-01-04 10:00:00", [("ECID", "S"), ("CRMID", "C1")]),
    ("e5", "2025-01-05 10:00:00", [("ECID", "S"), ("CRMID", "C2")]),
    ("e6", "2025-01-06 10:00:00", [("ECID", "S")]),
    ("e7", "2025-01-07 10:00:00", [("ECID", "Z")]),
    ("e8", "2025-01-08 10:00:00", [("Email", "m2"), ("CRMID", "C3")]),
]
GRAPH_SNAPSHOT = [{"CRMID": ["C1"], "ECID": ["S"]}, {"CRMID": ["C2"], "ECID": ["S"]}, {"CRMID": ["C3"]}]
ORDERINGS = st.tuples(st.permutations(range(len(GRAPH_EVENTS))), st.permutations(range(len(GRAPH_SNAPSHOT))),
                      st.integers(1, 4))


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(orderings=st.lists(ORDERINGS, min_size=2, max_size=4))
def test_resolution_does_not_depend_on_input_order(spark, orderings):
    """Copies of the graph, each in its own row order and partitioning and with identities tagged so
    that no two copies meet, resolve in one run exactly as the copy in the listed order does."""
    listed = (range(len(GRAPH_EVENTS)), range(len(GRAPH_SNAPSHOT)), 1)
    copies, profiles = [], []
    for copy, (order, profile_order, partitions) in enumerate([listed, *orderings]):
        rows = [(f"{copy}|{event_id}", ts, [(ns, f"{copy}|{v}") for ns, v in ids])
                for event_id, ts, ids in (GRAPH_EVENTS[i] for i in order)]
        copies.append(ev(spark, rows).repartition(partitions))
        profiles += [{ns: [f"{copy}|{v}" for v in ids] for ns, ids in GRAPH_SNAPSHOT[i].items()} for i in profile_order]
    events = functools.reduce(DataFrame.unionAll, copies)
    snapshot = snap(spark, profiles)
    by_copy: dict[str, dict] = {}
    for event_id, (who, resolution) in resolve(spark, events, snapshot, dt.date(2025, 2, 1)).items():
        copy, event = event_id.split("|")
        owner, name = who.split("|")
        assert owner == copy, f"copy {copy}'s event {event} resolved to copy {owner}'s identity {name}"
        by_copy.setdefault(copy, {})[event] = (name, resolution)
    assert len(by_copy) == len(orderings) + 1
    # e6 carries only the shared device S, listed by C1's and C2's profiles: it goes to the smaller
    # profile_id, a hash of the tagged primary identity, so each copy has its own answer.
    shared: dict[str, str] = {}
    for row in identity.snapshot_profiles(snapshot, PRIORITY).orderBy("profile_id").collect():
        copy, name = row.primary_id.split("|")
        if name in ("C1", "C2"):
            shared.setdefault(copy, name)
    listed_order = by_copy["0"]
    assert listed_order["e3"] == ("C3", "linked")  # B -> m2 -> C3 through two events
    for copy, got in by_copy.items():
        assert got == {**listed_order, "e6": (shared[copy], "direct")}, copy


@pytest.mark.parametrize("ns,expected", [("CRMID", 0), ("Email", 1), ("ECID", 2), ("Phone", 3)])
def test_priority_rank(spark, ns, expected):
    assert spark.range(1).select(identity.priority_rank(F.lit(ns), PRIORITY)).first()[0] == expected


def test_ranking_holds_across_many_partitions(spark):
    """Sets, identities and profiles spread over several partitions: each component is still named
    by its best identity and linked to its best primary, whatever partition they land in."""
    hub = [(f"h{i}", "2025-01-01 10:00:00", [("ECID", f"x{i:03d}"), ("Phone", "hub")]) for i in range(150)]
    named = [("m", "2025-01-02 10:00:00", [("Phone", "hub"), ("Email", "zz")])]  # "Email:" sorts after "ECID:"
    # "Apple:" sorts before "ECID:", but a namespace outside the priority ranks after ECID.
    alone = [(f"a{i}", "2025-01-03 10:00:00", [("ECID", f"y{i:03d}"), ("Apple", f"p{i:03d}")]) for i in range(60)]
    profiles = snap(spark, [{"ECID": ["y010"], "Apple": ["q1"]}, {"ECID": ["y020"], "CRMID": ["k9"]}])
    conf = {"spark.sql.adaptive.coalescePartitions.enabled": "false", "spark.sql.shuffle.partitions": "8"}
    with tables.spark_conf(spark, conf):
        got = resolve(spark, ev(spark, hub + named + alone).repartition(5), profiles, dt.date(2025, 2, 1))
    assert {got[f"h{i}"] for i in range(150)} == {("zz", "anonymous")} == {got["m"]}
    assert got["a10"] == ("y010", "direct") and got["a20"] == ("k9", "direct")  # CRMID outranks the ECID
    assert {got[f"a{i}"] for i in (0, 33, 59)} == {("y000", "anonymous"), ("y033", "anonymous"),
                                                   ("y059", "anonymous")}


def test_a_deep_chain_stops_at_the_bound_and_resolves(spark, caplog):
    """The worst case for label propagation (the best identity in the middle of a long chain of
    pairwise links) runs all 20 rounds, warns, and still resolves every event (to split components)
    instead of failing the job."""
    chain = [(f"c{i:03d}", "2025-01-01 10:00:00", [("ECID", f"n{i:03d}"), ("ECID", f"n{i + 1:03d}")])
             for i in range(199)]
    chain.append(("m", "2025-01-02 10:00:00", [("ECID", "n150"), ("Email", "a")]))
    with caplog.at_level(logging.WARNING, logger="enrich.identity"):
        got = resolve(spark, ev(spark, chain), snap(spark, [{"CRMID": ["k"]}]), dt.date(2025, 2, 1))
    assert "identity.max_iterations=20" in caplog.text
    assert len(got) == 200 and got["m"] == ("a", "anonymous") and got["c000"] == ("n000", "anonymous")


def test_events_join_their_resolution_on_the_key_hash_only_when_it_is_unique(spark):
    key_a, key_b = [("ECID", [("a",)])], [("ECID", [("b",)])]
    key_type = "identity_key array<struct<key:string, value:array<struct<id:string>>>>"
    events = spark.createDataFrame([(key_a,), (key_b,), (key_b,)], key_type).withColumn(
        "key_hash", F.xxhash64("identity_key"))
    resolved = spark.createDataFrame([(key_a, "P1"), (key_b, "P2")], key_type + ", profile_id string")

    by_hash, key = identity.key_join(resolved, events, 10)
    assert key == "key_hash" and "identity_key" not in by_hash.columns
    got = sorted(r.profile_id for r in events.join(by_hash, key).collect())
    assert got == ["P1", "P2", "P2"]

    # Two keys sharing a hash: the join falls back to the keys themselves, so no event gets both.
    colliding = resolved.withColumn("key_hash", F.lit(7).cast("long"))
    by_key, key = identity.key_join(colliding, events.withColumn("key_hash", F.lit(7).cast("long")), 10)
    assert key == "identity_key" and "key_hash" not in by_key.columns
    got = sorted(r.profile_id for r in events.join(by_key, key).collect())
    assert got == ["P1", "P2", "P2"]

    # Events without hashes join on the keys too.
    assert identity.key_join(resolved, events.drop("key_hash"), 10)[1] == "identity_key"
