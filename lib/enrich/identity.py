"""Identity resolution: un-unified events to profiles, through an identity graph, point in time.

The graph's nodes are identities (`namespace:id`). Its edges come from two places:
- the profile snapshot: every identity of a profile is linked to that profile's primary identity;
- events before the as-of date D: the identities one event carries are linked to each other (a
  login links the device's ECID to the CRMID).
Connected components of that graph (label propagation in Spark, bounded rounds) group identities
that belong together; an event is then resolved by its own best identity (highest priority in
`identity.namespace_priority`, ties by id):

1. the identity is in a snapshot profile's identityMap: that profile. An identity listed by two
   snapshot profiles (a shared device) goes to the one with the smaller `profile_id`;
2. otherwise its component holds snapshot profiles: the one whose primary identity ranks best
   (priority, then id) — so an ECID seen once with a known CRMID brings all its anonymous events,
   earlier and later, to that CRMID's profile, and a component that reaches two profiles is split
   by each event's own identities before this rule applies;
3. otherwise the component has no snapshot profile: `identity.unmatched: keep` makes it an
   anonymous profile keyed by its best identity, `drop` leaves it out.

Point in time: links for D come from the snapshot (taken as known at D: it is the platform's
current view of who is who) and from events strictly before D only, so no event at or after D can
change any resolution used for features as of D.

`profile_id` is a hash of the primary identity: stable across runs for the same data.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

log = logging.getLogger(__name__)

RESOLUTIONS: tuple[str, ...] = ("direct", "linked", "anonymous")


def node_key(ns: Column, identity: Column) -> Column:
    """A graph node: `namespace:id`."""
    return F.concat(ns, F.lit(":"), identity)


def priority_rank(ns: Column, priority: Sequence[str]) -> Column:
    """0 for the most trusted namespace; namespaces not listed rank after all listed ones."""
    rank = F.lit(len(priority))
    for index, name in reversed(list(enumerate(priority))):
        rank = F.when(ns == name, F.lit(index)).otherwise(rank)
    return rank


def ranked(identities: Column, priority: Sequence[str]) -> Column:
    """array<struct<ns,id>> sorted best first: (rank, ns, id)."""
    keyed = F.transform(identities, lambda i: F.struct(
        priority_rank(i["ns"], priority).alias("rank"), i["ns"].alias("ns"), i["id"].alias("id")))
    return F.array_sort(keyed)


def profile_id(ns: Column, identity: Column) -> Column:
    """Stable profile key: 32 hex characters of SHA-256 of the primary identity."""
    return F.substring(F.sha2(node_key(ns, identity), 256), 1, 32)


def snapshot_profiles(snapshot: DataFrame, priority: Sequence[str]) -> DataFrame:
    """One row per snapshot profile: profile_id, primary identity, all identities as nodes."""
    identities = F.flatten(F.transform(
        F.map_entries(F.col("identityMap")),
        lambda e: F.transform(F.coalesce(e["value"], F.array()), lambda i: F.struct(
            e["key"].alias("ns"), i["id"].alias("id")))))
    rows = snapshot.select("*", ranked(F.filter(identities, lambda i: i["id"].isNotNull() & (i["id"] != "")),
                                       priority).alias("_ids"))
    rows = rows.where(F.size("_ids") > 0)
    best = F.get(F.col("_ids"), 0)
    return rows.select(
        profile_id(best["ns"], best["id"]).alias("profile_id"),
        best["ns"].alias("primary_namespace"),
        best["id"].alias("primary_id"),
        best["rank"].alias("primary_rank"),
        F.transform("_ids", lambda i: node_key(i["ns"], i["id"])).alias("nodes"),
        *[c for c in snapshot.columns if c != "identityMap"],
    ).dropDuplicates(["profile_id"])


def event_links(events: DataFrame, priority: Sequence[str]) -> DataFrame:
    """Distinct identity links carried by events, with the first time each was seen.

    Every event links its best identity to each of its identities (itself included, so that an
    identity seen alone is still a node of the graph). `first_seen` lets one table of links serve
    every as-of date: the links for D are those first seen before D.
    """
    ids = ranked(F.col("identities"), priority)
    best = F.get(F.col("_ids"), 0)
    pairs = events.select("ts", ids.alias("_ids")).select(
        "ts", node_key(best["ns"], best["id"]).alias("src"),
        F.explode(F.transform("_ids", lambda i: node_key(i["ns"], i["id"]))).alias("dst"))
    return pairs.groupBy("src", "dst").agg(F.min("ts").alias("first_seen"))


def connected_components(edges: DataFrame, max_iterations: int) -> tuple[DataFrame, int]:
    """(node, component) by min-label propagation with pointer jumping; returns the rounds used.

    Each round takes, for every node, the smallest label among itself and its neighbours, then
    jumps to its label's label. Labels only decrease, so the rounds end when none changes; the
    graph is never collected, only the count of changed labels.
    """
    both = edges.select("src", "dst").union(edges.select(F.col("dst").alias("src"), F.col("src").alias("dst")))
    both = both.where(F.col("src").isNotNull() & F.col("dst").isNotNull()).distinct().localCheckpoint()
    labels = both.select(F.col("src").alias("node")).distinct().withColumn("label", F.col("node")).localCheckpoint()
    rounds = 0
    for rounds in range(1, max_iterations + 1):  # noqa: B007 - the count is returned
        neighbour = both.join(labels.withColumnRenamed("node", "src"), "src").select(
            F.col("dst").alias("node"), "label")
        proposed = labels.union(neighbour).groupBy("node").agg(F.min("label").alias("label")).localCheckpoint()
        # Pointer jumping: a node adopts its label's label, halving chains each round.
        hop = proposed.select(F.col("node").alias("label"), F.col("label").alias("label_of_label"))
        jumped = proposed.join(hop, "label", "left").select(
            "node", F.least("label", F.coalesce("label_of_label", "label")).alias("label")).localCheckpoint()
        previous = labels.withColumnRenamed("label", "previous")
        changed = jumped.join(previous, "node").where(F.col("label") != F.col("previous")).count()
        labels = jumped
        if changed == 0:
            break
    else:
        log.warning("identity graph: label propagation stopped at identity.max_iterations=%d before "
                    "converging; some components may be split", max_iterations)
    return labels.withColumnRenamed("label", "component"), rounds


def resolve(  # noqa: PLR0917 - the inputs of one resolution, named at every call
    events: DataFrame,
    links: DataFrame,
    profiles: DataFrame,
    as_of: dt.date,
    priority: Sequence[str],
    max_iterations: int = 20,
) -> tuple[DataFrame, DataFrame, int]:
    """Events before `as_of` with their `profile_id`, the snapshot spine, and the rounds used.

    `events` are valid flat events, `links` from `event_links`, `profiles` from
    `snapshot_profiles`. The returned events carry `profile_id`, `resolution`
    (direct | linked | anonymous) and, for anonymous profiles, the namespace and id that name them
    (`apply_unmatched` keeps or drops those). The spine has one row per snapshot profile.
    """
    cutoff = F.lit(dt.datetime(as_of.year, as_of.month, as_of.day))
    member = profiles.select("profile_id", "primary_rank", "primary_id", F.explode("nodes").alias("node"))
    snapshot_edges = member.join(
        profiles.select("profile_id", F.get(F.col("nodes"), 0).alias("src")), "profile_id"
    ).select("src", F.col("node").alias("dst"))
    edges = links.where(F.col("first_seen") < cutoff).select("src", "dst").union(snapshot_edges)
    components, rounds = connected_components(edges, max_iterations)

    direct = member.groupBy("node").agg(F.min("profile_id").alias("direct_profile"))
    by_component = member.join(components, "node").groupBy("component").agg(
        F.min_by("profile_id", F.struct("primary_rank", "primary_id")).alias("component_profile"))
    best_node = components.select(
        "component", "node", F.split_part("node", F.lit(":"), F.lit(1)).alias("_ns"),
    ).groupBy("component").agg(
        F.min_by("node", F.struct(priority_rank(F.col("_ns"), priority), F.col("node"))).alias("anchor"))
    node_profile = (
        components.join(direct, "node", "left").join(by_component, "component", "left").join(best_node, "component")
        .select(
            "node",
            F.coalesce("direct_profile", "component_profile").alias("known_profile"),
            F.when(F.col("direct_profile").isNotNull(), F.lit("direct"))
            .when(F.col("component_profile").isNotNull(), F.lit("linked"))
            .otherwise(F.lit("anonymous")).alias("resolution"),
            "anchor",
        )
    )
    ids = ranked(F.col("identities"), priority)
    before = events.where(F.col("ts") < cutoff).withColumn("node", node_key(F.get(ids, 0)["ns"], F.get(ids, 0)["id"]))
    resolved = before.join(node_profile, "node")
    anchor_ns = F.split_part(F.col("anchor"), F.lit(":"), F.lit(1))
    anchor_id = F.expr("substring(anchor, length(split_part(anchor, ':', 1)) + 2)")
    anonymous = F.col("known_profile").isNull()
    resolved = resolved.select(
        *[c for c in before.columns if c != "node"],
        F.coalesce(F.col("known_profile"), profile_id(anchor_ns, anchor_id)).alias("profile_id"),
        "resolution",
        # Anonymous profiles are named by their component's best identity.
        F.when(anonymous, anchor_ns).alias("anonymous_namespace"),
        F.when(anonymous, anchor_id).alias("anonymous_id"),
    )
    spine = profiles.select("profile_id", "primary_namespace", "primary_id")
    return resolved, spine, rounds


def apply_unmatched(resolved: DataFrame, unmatched: str) -> DataFrame:
    """`identity.unmatched`: keep anonymous profiles, or drop their events."""
    return resolved if unmatched == "keep" else resolved.where(F.col("resolution") != "anonymous")
