"""Identity resolution: un-unified events to profiles, through an identity graph, point in time.

The graph's nodes are identities (`namespace:id`). Its edges come from two places:
- the profile snapshot: every identity of a profile is linked to that profile's primary identity;
- events before the as-of date D: the identities one event carries are linked to each other (a
  login links the device's ECID to the CRMID).
Connected components of that graph (label propagation in Spark, bounded rounds) group identities
that belong together. An event's identities are ranked by `identity.namespace_priority` (then by
namespace and id), and the event goes to:

1. direct: the profile that lists its highest-ranked identity found in any snapshot identityMap
   (an identity listed by two snapshot profiles — a shared device — goes to the one with the
   smaller `profile_id`); so a component reaching two profiles is split by each event's own
   identities before rule 2 is tried;
2. linked: otherwise, the snapshot profile in the component of its best identity whose primary
   identity ranks best (the same ranking) — so an ECID seen once with a known
   CRMID brings all its anonymous events, earlier and later, to that CRMID's profile;
3. anonymous: otherwise the component has no snapshot profile: `identity.unmatched: keep` makes
   it an anonymous profile keyed by the component's best identity, `drop` leaves it out.

Point in time: links for D come from the snapshot (taken as known at D: it is the platform's
current view of who is who) and from events strictly before D only, so no event at or after D can
change any resolution used for features as of D.

`profile_id` is a hash of the primary identity: stable across runs for the same data. Within one
resolution each profile also has `profile_key`, a 64-bit hash of its `profile_id`, checked unique
among the resolution's profiles (on a collision they are numbered instead): what the features
group and shuffle events by, where the 32-character `profile_id` and an anonymous profile's name
would ride with every event. `profile_keys` maps it back.

Execution: identity sets and profiles are profile-sized, and events meet the answer in one join on
their set. The snapshot's listed identities are one lookup table (broadcast when small), so each
set's identities meet it without a shuffle, and one aggregation per set gives rule 1 and the set's
vertices. The graph is contracted before its components are found: a snapshot profile's
identities are one vertex, ranked by the profile's primary ahead of every identity, so a
component's smallest vertex is the answer of rule 2 or, without a profile, of rule 3; sets inside
one profile (most of them) make no edge, and rule 1 needs no graph at all. The rules need no
numbering of identities: a vertex is its rank itself, (profile or not, priority, namespace, id),
and only the graph's few vertices are ever compared as such.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from enrich import quality, tables, utc

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
    return F.sort_array(keyed)


def profile_id(ns: Column, identity: Column) -> Column:
    """Stable profile key: 32 hex characters of SHA-256 of the primary identity."""
    return F.substring(F.sha2(node_key(ns, identity), 256), 1, 32)


def snapshot_profiles(snapshot: DataFrame, priority: Sequence[str]) -> DataFrame:
    """One row per snapshot profile: profile_id, primary identity, all identities as nodes and as
    `identities` (array<struct<rank, ns, id>>, best first: what the resolution looks them up by).

    Snapshot rows that share a primary identity are one profile: their identities are merged and
    their other columns taken from one row chosen by content (whatever order the rows come in).
    """
    others = [c for c in snapshot.columns if c != "identityMap"]
    rows = snapshot.select(
        F.struct(*others).alias("_row"),
        ranked(quality.identities_of(F.map_entries(F.col("identityMap"))), priority).alias("_ids"),
    ).where(F.size("_ids") > 0)
    best = F.get(F.col("_ids"), 0)
    rows = rows.groupBy(profile_id(best["ns"], best["id"]).alias("profile_id")).agg(
        F.sort_array(F.array_distinct(F.flatten(F.collect_list("_ids")))).alias("_ids"),
        F.min_by("_row", F.sha2(F.to_json("_row"), 256)).alias("_row"),
    )
    return rows.select(
        "profile_id",
        best["ns"].alias("primary_namespace"),
        best["id"].alias("primary_id"),
        F.transform("_ids", lambda i: node_key(i["ns"], i["id"])).alias("nodes"),
        F.col("_ids").alias("identities"),
        *[F.col("_row")[c].alias(c) for c in others],
    )


def identity_nodes(identities: Column) -> Column:
    """An event's identities as distinct graph nodes in a canonical (sorted) order: the key its
    resolution is kept under.

    Per event, so kept to one plain lambda and native sorting (higher-order functions are
    interpreted); ranking by priority happens on the distinct sets, which are far fewer.
    """
    return F.sort_array(F.array_distinct(F.transform(identities, lambda i: node_key(i["ns"], i["id"]))))


def _node_ns(node: Column) -> Column:
    return F.split_part(node, F.lit(":"), F.lit(1))


def _node_id(node: Column) -> Column:
    return F.substring(node, F.length(_node_ns(node)) + 2, 1 << 30)


def with_nodes(events: DataFrame) -> DataFrame:
    """`events` with their `identity_nodes` (computed once, when not there already)."""
    if "identity_nodes" in events.columns:
        return events
    return events.withColumn("identity_nodes", identity_nodes(F.col("identities")))


def event_links(events: DataFrame) -> DataFrame:
    """Each distinct identity set events carry (`identity_nodes`), with the first time it was seen.

    A set links its first node to each of its nodes (itself included, so that an identity seen
    alone is still a node of the graph): all of a set's identities end in one component. Distinct
    sets are far fewer than events, so the graph and the per-set resolution are profile-sized;
    `first_seen` lets one table serve every as-of date: the links for D are the sets first seen
    before D.
    """
    return with_nodes(events).groupBy("identity_nodes").agg(F.min("ts").alias("first_seen"))


def connected_components(edges: DataFrame, max_iterations: int) -> tuple[DataFrame, int, int]:
    """(node, component) by min-label propagation with pointer jumping (materialized); returns the
    rounds used and the number of nodes.

    Each round takes, for every node, the smallest label among itself and its neighbours, then
    jumps to its label's label. Labels only decrease, so the rounds end when none changes; the
    graph is never collected, only the count of changed labels, observed by the job that keeps the
    round's labels. Rounds needed grow with the graph's depth: identity graphs are shallow (devices
    around a person); a long chain of pairwise links is the worst case, and stops at the bound
    with a warning.

    The jump is a window over each label's askers and its own row, not a join of the labels with
    themselves: a checkpoint keeps its plan's size estimate, and a self-join per round would square
    that estimate every round (at 20 rounds, a number too large for the driver's heap).
    """
    both = edges.select("src", "dst").union(edges.select(F.col("dst").alias("src"), F.col("src").alias("dst")))
    both = both.where(F.col("src").isNotNull() & F.col("dst").isNotNull()).distinct().localCheckpoint()
    labels, nodes = tables.kept_counted(both.select(F.col("src").alias("node")).distinct()
                                        .withColumn("label", F.col("node")))
    rounds = 0
    for rounds in range(1, max_iterations + 1):  # noqa: B007 - the count is returned
        none = F.lit(None).cast(labels.schema["node"].dataType)
        # Each node's own row carries its label as `previous` too, so the round knows what changed
        # without joining the old labels to the new.
        own = labels.select("node", "label", F.col("label").alias("previous"))
        neighbour = both.join(labels.withColumnRenamed("node", "src"), "src").select(
            F.col("dst").alias("node"), "label", none.alias("previous"))
        proposed = own.union(neighbour).groupBy("node").agg(
            F.min("label").alias("label"), F.max("previous").alias("previous")).localCheckpoint()
        # Pointer jumping: a node adopts its label's label, shortening chains. Every label
        # is a node: its row (key = node) holds the answer, the askers (key = their label) read it.
        asks = proposed.select(F.col("label").alias("key"), "node", "previous", none.alias("answer"))
        answers = proposed.select(F.col("node").alias("key"), none.alias("node"), none.alias("previous"),
                                  F.col("label").alias("answer"))
        rows = asks.union(answers).select("key", "node", "previous",
                                          F.max("answer").over(Window.partitionBy("key")).alias("hop"))
        jumped = rows.where(F.col("node").isNotNull()).select(
            "node", F.least("key", F.coalesce("hop", "key")).alias("label"), "previous")
        # Converged when every node kept the label it came into the round with.
        jumped, observed = tables.kept_observed(jumped, changed=F.count_if(F.col("label") != F.col("previous")))
        labels = jumped.select("node", "label")
        if observed["changed"] == 0:
            break
    else:
        log.warning("identity graph: label propagation stopped at identity.max_iterations=%d before "
                    "converging; some components may be split", max_iterations)
    return labels.withColumnRenamed("label", "component"), rounds, nodes


def key_node_rows(keyed: DataFrame, *by: str) -> DataFrame:
    """(*by, ns, id) for every usable identity in each row's `identity_key` (its sorted identityMap
    entries), natively: two explodes, no lambda. The identities are the nodes `identity_nodes` gives,
    kept apart: the resolution looks them up and ranks them by namespace and id, so a `namespace:id`
    string built per identity would only be taken apart again."""
    entries = keyed.select(*by, F.inline("identity_key"))
    ids = entries.select(*by, F.col("key").alias("ns"), F.explode("value").alias("i"))
    usable = ids.where(quality.usable_identity(F.col("ns"), F.col("i.id")))
    return usable.select(*by, "ns", F.col("i.id").alias("id"))


def key_links(events: DataFrame) -> DataFrame:
    """(identity_key, first_seen) for each distinct identity_key of valid events.

    The job's form of `event_links`: events are grouped by their raw key, natively, and the
    resolution turns only the distinct keys (profile-sized) into nodes (`key_node_rows`).
    """
    return events.groupBy("identity_key").agg(F.min("ts").alias("first_seen"))


def _vertex(is_identity: int, rank: Column, ns: Column, identity: Column) -> Column:
    """A vertex of the contracted graph, ordered as the rules choose: every snapshot profile (by its
    primary identity's rank) before every identity no profile lists (by its own rank)."""
    return F.struct(F.lit(is_identity).alias("is_identity"), rank.alias("rank"), ns.alias("ns"), identity.alias("id"))


def _stars(groups: DataFrame, vertices: str) -> DataFrame:
    """Edges from each group's smallest vertex to its others (`vertices`: a sorted array; groups of
    one vertex make none)."""
    return groups.where(F.size(vertices) > 1).select(
        F.get(F.col(vertices), 0).alias("src"), F.explode(F.slice(vertices, 2, 1 << 30)).alias("dst"))


def _profile_key(profile: Column) -> Column:
    """A profile's 64-bit number within a resolution (what features group events by): a hash of
    its profile_id, checked unique among the resolution's profiles (`resolve_sets`)."""
    return F.xxhash64(profile)


# Identity tables hold sets and profiles, not events: their shuffles get partitions for that size
# (`_partitions_for`), not the session's count for events. At 1M events (42k sets) the session's 32
# made the resolution alone take 7.5-9.8s, against 5.5-7.3s with 4.
SETS_PER_PARTITION = 50_000


def resolve_sets(  # noqa: PLR0917 - the inputs of one resolution, named at every call
    links: DataFrame, profiles: DataFrame, as_of: dt.date, priority: Sequence[str], max_iterations: int = 20,
    key: str = "identity_nodes", broadcast_max_rows: int = 1_000_000,
) -> tuple[DataFrame, DataFrame, int]:
    """(key, profile_key, profile_id, resolution, anonymous_namespace, anonymous_id) for each row
    of `links` (key, first_seen, and the set as `identity_nodes` or as an `identity_key`) first
    seen before `as_of`, the resolution's `profile_keys` (materialized), and the graph rounds used:
    every rule of the module docstring, on distinct identity sets (so an anonymous profile's name
    and id are computed once per set, not per event).

    The result is materialized (it is profile-sized and every as-of date's events meet it), with
    `key_hash`, the key's 64-bit hash, when the key is an `identity_key` (`key_join`). The snapshot's
    listed identities and the graph's components are looked up by broadcast when they have at most
    `broadcast_max_rows` rows.
    """
    cutoff = utc.midnight(as_of)
    carried = "identity_nodes" if "identity_nodes" in links.columns else "identity_key"
    sets, rows = tables.kept_counted(links.where(F.col("first_seen") < cutoff).select(*dict.fromkeys([key, carried]))
                                     .withColumn("set_id", F.monotonically_increasing_id()))
    sets, partitions = coalesced(sets, rows)
    sized = {} if partitions is None else {"spark.sql.shuffle.partitions": str(partitions)}
    with tables.spark_conf(sets.sparkSession, sized):
        set_profile, rounds = _rules(sets, profiles, priority, max_iterations, key, carried, broadcast_max_rows)
        if key == "identity_key":
            set_profile = set_profile.withColumn("key_hash", F.xxhash64("identity_key"))
        set_profile = set_profile.localCheckpoint()
        keyed = profile_keys(set_profile, profiles).localCheckpoint()
        keys, distinct = keyed.agg(F.count(F.lit(1)), F.count_distinct("profile_key")).first()
        if distinct != keys:
            set_profile, keyed = _numbered(set_profile, keyed)
        return set_profile, keyed, rounds


def _numbered(set_profile: DataFrame, keyed: DataFrame) -> tuple[DataFrame, DataFrame]:
    """The resolution with every profile numbered anew (materialized), for the rare resolution whose
    profile_id hashes collide: two profiles must never share the number features group them by."""
    keyed = keyed.drop("profile_key").withColumn("profile_key", F.monotonically_increasing_id()).localCheckpoint()
    renumbered = set_profile.drop("profile_key").join(keyed.select("profile_id", "profile_key"), "profile_id")
    return renumbered.select(*set_profile.columns).localCheckpoint(), keyed


def profile_keys(set_profile: DataFrame, profiles: DataFrame) -> DataFrame:
    """One row per profile of a resolution: profile_key, profile_id, primary_namespace, primary_id
    and in_snapshot. Every snapshot profile and every anonymous profile some set resolved to (named
    by its component's best identity); profile-sized, lazy."""
    known = profiles.select(_profile_key(F.col("profile_id")).alias("profile_key"), "profile_id",
                            "primary_namespace", "primary_id", F.lit(True).alias("in_snapshot"))
    anonymous = set_profile.where(F.col("resolution") == "anonymous").select(
        "profile_key", "profile_id", F.col("anonymous_namespace").alias("primary_namespace"),
        F.col("anonymous_id").alias("primary_id"), F.lit(False).alias("in_snapshot")).distinct()
    return known.unionByName(anonymous)


def _partitions_for(table: DataFrame, rows: int | None = None) -> int | None:
    """Partitions for a profile-sized table (identity sets, snapshot profiles) of `rows` rows (None:
    counted here): about `SETS_PER_PARTITION` rows each, at least one per core, at most the
    session's shuffle partitions (sized for events, far more rows); None where the platform sizes
    shuffles itself (Databricks' "auto")."""
    spark = table.sparkSession
    try:
        session = int(spark.conf.get("spark.sql.shuffle.partitions") or "")
    except ValueError:
        return None
    rows = table.count() if rows is None else rows
    wanted = max(spark.sparkContext.defaultParallelism, -(-rows // SETS_PER_PARTITION))
    return min(session, wanted)


def coalesced(table: DataFrame, rows: int | None = None) -> tuple[DataFrame, int | None]:
    """A kept (persisted or checkpointed) profile-sized table in `_partitions_for` partitions, so that
    every reader runs that many tasks, not the session's count (the snapshot's profiles: 16k of them
    came out of their aggregation in 32 partitions, and every use of them ran 32 tasks), and that
    count (None: left as it is, where the platform sizes shuffles)."""
    partitions = _partitions_for(table, rows)
    return (table if partitions is None else table.coalesce(partitions)), partitions


def kept_profiles(snapshot: DataFrame, priority: Sequence[str]) -> tuple[DataFrame, DataFrame]:
    """`snapshot_profiles` kept (in memory, spilling to disk) and counted, and the same rows in
    `_partitions_for` partitions: what the resolution and the features read. Unpersist the first
    when done.

    Adaptive execution may size the profiles' aggregation here: by default Spark keeps a cached
    plan's shuffle at the session's partition count whatever the table's size (32 partitions for
    16k or 128k profiles). At 1M events the identity stage took 6.2-7.8s with it allowed, against
    7.2-8.4s without.
    """
    adaptive = {"spark.sql.optimizer.canChangeCachedPlanOutputPartitioning": "true"}
    with tables.spark_conf(snapshot.sparkSession, adaptive):
        kept = snapshot_profiles(snapshot, priority).persist(StorageLevel.MEMORY_AND_DISK)
        profiles, _ = coalesced(kept)
    return kept, profiles


def _rules(  # noqa: PLR0917 - the inputs of one resolution, named at every call
    sets: DataFrame, profiles: DataFrame, priority: Sequence[str], max_iterations: int, key: str, carried: str,
    broadcast_max_rows: int,
) -> tuple[DataFrame, int]:
    """`resolve_sets` on the materialized `sets` (key, the set as `carried`, set_id): lazy, but the
    graph's rounds run here.

    The graph is contracted: a snapshot profile's identities are one vertex, which ranks by the
    profile's primary identity ahead of every identity no profile lists, so a component's smallest
    vertex answers rule 2 (a profile) or, without one, rule 3 (its best identity). Each set's
    identities meet the snapshot's in one lookup; one aggregation per set then gives its best listed
    identity (rule 1) and its vertices. Only sets with two vertices or more, and identities listed by
    two profiles, make edges: most sets sit inside one profile, so the graph holds the anonymous and
    linking identities, not all of them.
    """
    # Each set's key rides along (one per set), so the answer needs no join back to the sets.
    by = list(dict.fromkeys(["set_id", key]))
    if carried == "identity_nodes":
        nodes = sets.select(*by, F.explode("identity_nodes").alias("node"))
        set_nodes = nodes.select(*by, _node_ns(F.col("node")).alias("ns"), _node_id(F.col("node")).alias("id"))
    else:
        set_nodes = key_node_rows(sets, *by)
    ns, primary = F.col("primary_namespace"), F.col("primary_id")
    owner = _vertex(0, priority_rank(ns, priority), ns, primary)
    # Every identity some snapshot profile lists: the profile rule 1 gives it (shared: the smallest
    # profile_id) and every profile listing it, as vertices (a shared identity joins their profiles).
    # Read from the profiles' (ns, id) structs, not taken apart from their `namespace:id` nodes.
    listed, listed_rows = tables.kept_counted(
        profiles.select("profile_id", owner.alias("owner"), F.inline("identities"))
        .groupBy("ns", "id")
        .agg(F.min("profile_id").alias("direct_profile"), F.sort_array(F.collect_list("owner")).alias("owners")))
    # Marked for broadcast where it is joined only: the graph's edges read it too, and a hint
    # outside a join is ignored with a warning.
    lookup = tables.broadcast_small(listed, listed_rows, broadcast_max_rows)
    rank = F.struct(priority_rank(F.col("ns"), priority).alias("rank"), F.col("ns"), F.col("id"))
    per_set = set_nodes.join(lookup, ["ns", "id"], "left").groupBy("set_id").agg(
        F.min(F.when(F.col("direct_profile").isNotNull(), F.struct(rank.alias("rank"), "direct_profile")))
        ["direct_profile"].alias("direct_profile"),
        F.sort_array(F.array_distinct(F.flatten(F.collect_list(
            F.coalesce("owners", F.array(_vertex(1, rank["rank"], F.col("ns"), F.col("id")))))))).alias("vertices"),
        F.any_value(key).alias(key),
    ).localCheckpoint()  # read by the graph's edges and by the answer
    # Edges: a set reaching two vertices or more, an identity listed by two profiles or more.
    components, rounds, nodes = connected_components(
        _stars(per_set, "vertices").union(_stars(listed, "owners")), max_iterations)
    components = tables.broadcast_small(components.select(F.col("node").alias("_first"), "component"), nodes,
                                        broadcast_max_rows)
    # A set without a listed identity has only unlisted ones, all in one component (an identity in
    # no edge is its own): its first vertex's component is the set's.
    resolved = per_set.select(key, "direct_profile", F.get(F.col("vertices"), 0).alias("_first")).join(
        components, "_first", "left").select(key, "direct_profile", F.coalesce("component", "_first").alias("label"))
    label = F.col("label")
    anonymous = F.col("direct_profile").isNull() & (label["is_identity"] == 1)
    owner_id = F.coalesce("direct_profile", profile_id(label["ns"], label["id"]))
    return resolved.select(
        key,
        _profile_key(owner_id).alias("profile_key"),
        owner_id.alias("profile_id"),
        F.when(F.col("direct_profile").isNotNull(), F.lit("direct")).when(~anonymous, F.lit("linked"))
        .otherwise(F.lit("anonymous")).alias("resolution"),
        F.when(anonymous, label["ns"]).alias("anonymous_namespace"),
        F.when(anonymous, label["id"]).alias("anonymous_id"),
    ), rounds


def attach_profiles(events: DataFrame, set_profile: DataFrame, key: str, as_of: dt.date) -> DataFrame:
    """Events before `as_of` joined to their set's resolution (`resolve_sets`) on `key`: profile_key,
    profile_id, resolution and, for anonymous profiles, the namespace and id that name them."""
    before = events.where(F.col("ts") < utc.midnight(as_of))
    return before.join(set_profile, key).select(
        *[c for c in before.columns if c != key], "profile_key", "profile_id", "resolution", "anonymous_namespace",
        "anonymous_id")


def resolve_keys(  # noqa: PLR0917 - the inputs of one resolution, named at every call
    events: DataFrame,
    keys: DataFrame,
    profiles: DataFrame,
    as_of: dt.date,
    priority: Sequence[str],
    max_iterations: int = 20,
    broadcast_max_sets: int = 1_000_000,
) -> tuple[DataFrame, DataFrame, int]:
    """`resolve` for events keyed by `identity_key` (the jobs' form), with `keys` from `key_links`:
    each key first seen before `as_of` takes its node set's resolution, and the events meet it in
    one equi-join on the key (`key_join`), broadcast when there are at most `broadcast_max_sets`
    keys. Returns what `resolve` returns."""
    key_profile, keyed, rounds = resolve_sets(keys, profiles, as_of, priority, max_iterations, key="identity_key",
                                               broadcast_max_rows=broadcast_max_sets)
    key_profile, key = key_join(key_profile, events, broadcast_max_sets)
    return attach_profiles(events, key_profile, key, as_of), keyed, rounds


def key_join(key_profile: DataFrame, events: DataFrame, broadcast_max_sets: int) -> tuple[DataFrame, str]:
    """The resolution of each key (materialized, as `resolve_sets` gives it), and the column the
    events join it on.

    Events that carry `key_hash` (`quality.parse_events`) join on it: a 64-bit key, where the
    `identity_key` itself is a nested array that every event would hash and compare (10M events:
    2.3s against 4.0s per pass). Distinct keys with equal hashes would give an event two
    resolutions, so the hash serves only when it is unique among the keys (counted here, with the
    keys); otherwise the join is on the `identity_key` itself. A `key_profile` without the keys'
    hashes gets them here, materialized.
    """
    if "key_hash" not in key_profile.columns:
        key_profile = key_profile.withColumn("key_hash", F.xxhash64("identity_key")).localCheckpoint()
    keys, hashes = key_profile.agg(F.count(F.lit(1)), F.count_distinct("key_hash")).first()
    key = "key_hash" if "key_hash" in events.columns and hashes == keys else "identity_key"
    key_profile = key_profile.drop("identity_key" if key == "key_hash" else "key_hash")
    return tables.broadcast_small(key_profile, keys, broadcast_max_sets), key


def resolve(  # noqa: PLR0917 - the inputs of one resolution, named at every call
    events: DataFrame,
    links: DataFrame,
    profiles: DataFrame,
    as_of: dt.date,
    priority: Sequence[str],
    max_iterations: int = 20,
    broadcast_max_sets: int = 1_000_000,
) -> tuple[DataFrame, DataFrame, int]:
    """Events before `as_of` with their profile, the resolution's `profile_keys`, and the rounds used.

    `events` are valid flat events, `links` from `event_links`, `profiles` from
    `snapshot_profiles`. The returned events carry `profile_key`, `profile_id`, `resolution`
    (direct | linked | anonymous) and, for anonymous profiles, the namespace and id that name them
    (`apply_unmatched` keeps or drops those). `profile_keys` has one row per snapshot profile and
    per anonymous profile.

    Every rule works on the distinct identity sets (profile-sized); the events meet the result in
    one equi-join on their set, broadcast when there are at most `broadcast_max_sets` sets.
    """
    set_profile, keyed, rounds = resolve_sets(links, profiles, as_of, priority, max_iterations,
                                              broadcast_max_rows=broadcast_max_sets)
    set_profile = tables.broadcast_small(set_profile, set_profile.count(), broadcast_max_sets)
    resolved = attach_profiles(with_nodes(events), set_profile, "identity_nodes", as_of)
    return resolved, keyed, rounds


def apply_unmatched(resolved: DataFrame, unmatched: str) -> DataFrame:
    """`identity.unmatched`: keep anonymous profiles, or drop their events."""
    return resolved if unmatched == "keep" else resolved.where(F.col("resolution") != "anonymous")
