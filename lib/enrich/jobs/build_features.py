"""Build the point-in-time feature table from raw XDM events and the profile snapshot."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from enrich import features, identity, quality, tables, xdm
from enrich.config import Config
from enrich.errors import InputError
from enrich.jobs.cli import parser, run_job

PROG = "build_features"
log = logging.getLogger(__name__)


@dataclass
class AsOfSummary:
    as_of: dt.date
    events: int = 0
    direct: int = 0
    linked: int = 0
    anonymous: int = 0
    profiles: int = 0
    anonymous_profiles: int = 0
    graph_rounds: int = 0


@dataclass
class FeaturesSummary:
    run_id: str
    rows_read: int
    invalid: dict[str, int]
    snapshot_profiles: int
    snapshot_invalid: int
    features_path: str
    unmatched: str
    dates: list[AsOfSummary] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def render(self) -> str:
        invalid = sum(self.invalid.values())
        lines = [
            f"{PROG}: run {self.run_id}",
            f"  events read        {self.rows_read:>12,}",
            f"  invalid            {invalid:>12,}  " + ", ".join(f"{k}={v:,}" for k, v in self.invalid.items() if v),
            f"  snapshot profiles  {self.snapshot_profiles:>12,}  ({self.snapshot_invalid:,} without identities)",
            "  as_of        events used     direct     linked  anonymous   profiles  (anonymous)  graph rounds",
        ]
        for d in self.dates:
            dropped = " dropped" if self.unmatched == "drop" else ""
            lines.append(f"  {d.as_of}  {d.events:>11,} {d.direct:>10,} {d.linked:>10,} {d.anonymous:>10,}{dropped}"
                         f" {d.profiles:>10,}  ({d.anonymous_profiles:,})  {d.graph_rounds:>5}")
        lines.append("  seconds            " + ", ".join(f"{k} {v:.1f}" for k, v in self.seconds.items()))
        lines.append(f"  features           {self.features_path} (delta, partitioned by as_of_date)")
        return "\n".join(lines)


def _build(resolved: DataFrame, keyed: DataFrame, profiles: DataFrame, as_of: dt.date, cfg: Config, *,
           on_resolved: Callable[[DataFrame], DataFrame]) -> DataFrame:
    kept = identity.apply_unmatched(on_resolved(resolved), cfg.identity.unmatched)
    return features.build(kept, keyed, features.snapshot_attributes(profiles, as_of), as_of, cfg.features)


def features_as_of(
    valid: DataFrame, profiles: DataFrame, links: DataFrame, as_of: dt.date, cfg: Config, *,
    on_resolved: Callable[[DataFrame], DataFrame] = lambda df: df,
) -> tuple[DataFrame, int]:
    """Feature rows as of D from valid flat events (`quality.validate_events`), and the graph rounds
    used (no I/O): the plain composition, which the job's plan must equal.

    `on_resolved` sees the resolved events on their way to the features (the job observes counts
    there; an observation only fires when its frame is part of the plan that runs).
    """
    resolved, keyed, rounds = identity.resolve(valid, links, profiles, as_of, cfg.identity.namespace_priority,
                                               cfg.identity.max_iterations, cfg.identity.broadcast_max_sets)
    return _build(resolved, keyed, profiles, as_of, cfg, on_resolved=on_resolved), rounds


def features_from_keys(  # noqa: PLR0917 - the inputs of one as-of date, named at every call
    events: DataFrame, keys: DataFrame, profiles: DataFrame, as_of: dt.date, cfg: Config,
    on_resolved: Callable[[DataFrame], DataFrame] = lambda df: df,
) -> tuple[DataFrame, int]:
    """The job's plan for one as-of date: valid kept events (`identity_key`, no `identities`) and
    `identity.key_links` of them, resolved by `identity.resolve_keys`. Equal to `features_as_of`
    on the same events."""
    resolved, keyed, rounds = identity.resolve_keys(events, keys, profiles, as_of, cfg.identity.namespace_priority,
                                                    cfg.identity.max_iterations, cfg.identity.broadcast_max_sets)
    return _build(resolved, keyed, profiles, as_of, cfg, on_resolved=on_resolved), rounds


def read_events(spark: SparkSession, cfg: Config) -> DataFrame:
    fmt = cfg.input.events.format
    # JSON carries no types: read it with the contract's schema. Parquet and Delta carry their own,
    # which is checked below so that drift fails loudly instead of turning into nulls.
    # Pinned: the job reads the events in two passes (the `_id`s alone, then every row), which
    # must see the same rows while other writers append to a Delta table.
    raw = tables.read(spark, cfg.events_path, fmt, schema=xdm.EXPERIENCE_EVENT if fmt == "json" else None,
                      pinned=True)
    quality.check_event_schema(raw.schema, cfg.events_path)
    return raw


def read_snapshot(spark: SparkSession, cfg: Config) -> DataFrame:
    fmt = cfg.input.snapshot.format
    snap = tables.read(spark, cfg.snapshot_path, fmt, schema=xdm.PROFILE_SNAPSHOT if fmt == "json" else None)
    found = quality.field_type(snap.schema, "identityMap")
    if found is None or not quality.identity_map_ok(found):
        shown = "missing" if found is None else f"found {found.simpleString()}"
        raise InputError(f"{cfg.snapshot_path}: column 'identityMap': expected "
                         f"map<string, array<struct<id: string, ...>>>, {shown}")
    return snap


def run(spark: SparkSession, cfg: Config) -> FeaturesSummary:
    dates = cfg.as_of_dates()
    run_id = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    clock = cfg.quality.clock or dt.datetime.now(dt.UTC)
    priority = cfg.identity.namespace_priority
    seconds: dict[str, float] = {}

    start = time.perf_counter()
    raw = read_events(spark, cfg)
    # The hashes of `_id` that repeat, from a pass that reads that column alone.
    max_ids = cfg.quality.broadcast_max_duplicate_ids
    repeated = quality.repeated_ids(raw, max_ids)
    # Parsed and checked once (natively: identities stay the raw identityMap's entries), kept for
    # the duplicates, the quarantine, the identity links and every as-of date: one parse of the
    # events. On disk, not in memory: cached in memory they would hold half of the execution
    # memory the feature sort needs.
    rows = (raw.transform(quality.parse_events(clock)).withColumn("_copy", F.monotonically_increasing_id())
            .transform(quality.flag_repeated(repeated)).persist(StorageLevel.DISK_ONLY))
    # The pass that fills the cache counts the rows and keeps those that may leave the events
    # (failing a check, or sharing an id hash). The copies not kept are chosen among those, and go
    # to the rows by broadcast, as row ids.
    counted, read = tables.observe(rows, "read", rows=F.count(F.lit(1)))
    leaving = quality.leaving(counted)
    dropped = tables.small_side(quality.duplicate_copies(leaving.where("_repeated")), max_ids)
    quarantined, validation = tables.observe(
        quality.quarantine_rows(leaving.transform(quality.mark_duplicates(dropped)), "events", run_id),
        "validation", **quality.reason_counts())
    tables.write(quarantined, cfg.quarantine_path("events"), "delta")
    counts = tables.counts(validation) | {"rows": tables.counts(read)["rows"]}
    quality.enforce_threshold(counts, cfg.quality.max_invalid_fraction, cfg.events_path)
    checked = rows.transform(quality.mark_duplicates(dropped))
    # Valid rows keep `event_key`, not the `_id` strings, which only the rows leaving kept.
    valid = checked.where(F.col("reason").isNull()).drop("reason", "raw", "event_id")
    seconds["read+validate"] = time.perf_counter() - start

    start = time.perf_counter()
    snapshot = read_snapshot(spark, cfg)
    kept_profiles, profiles = identity.kept_profiles(snapshot, priority)
    snap_invalid = quality.snapshot_without_identity(snapshot, run_id)
    snap_invalid, snap_obs = tables.observe(snap_invalid, "snapshot", rows=F.count(F.lit(1)))
    tables.write(snap_invalid, cfg.quarantine_path("snapshot"), "delta")
    # The distinct identity keys of valid events, first seen: profile-sized, computed once.
    keys = identity.key_links(valid).localCheckpoint()
    per_date, observations = [], []
    for as_of in dates:
        count_resolutions, ev_obs = tables.observer(
            f"resolved-{as_of}", events=F.count(F.lit(1)),
            **{r: F.count_if(F.col("resolution") == r) for r in identity.RESOLUTIONS})
        date_rows, rounds = features_from_keys(valid, keys, profiles, as_of, cfg, count_resolutions)
        date_rows, row_obs = tables.observe(date_rows, f"features-{as_of}", profiles=F.count(F.lit(1)),
                                            known=F.count_if(F.col("in_snapshot")))
        per_date.append(date_rows)
        observations.append((as_of, rounds, ev_obs, row_obs))
    seconds["identity"] = time.perf_counter() - start

    start = time.perf_counter()
    table = per_date[0]
    for date_rows in per_date[1:]:
        table = table.unionByName(date_rows)
    in_list = ", ".join(f"DATE'{d}'" for d in dates)
    tables.write(table, cfg.features_path, "delta", partition_by=["as_of_date"],
                 replace_where=f"as_of_date IN ({in_list})")
    seconds["features+write"] = time.perf_counter() - start
    for cached in (rows, kept_profiles):
        cached.unpersist()

    summary = FeaturesSummary(
        run_id=run_id, rows_read=counts["rows"], invalid={r: counts[r] for r in quality.REASONS},
        snapshot_profiles=0, snapshot_invalid=tables.counts(snap_obs)["rows"], features_path=cfg.features_path,
        unmatched=cfg.identity.unmatched, seconds={k: round(v, 1) for k, v in seconds.items()},
    )
    for as_of, rounds, ev_obs, row_obs in observations:
        ev, fr = tables.counts(ev_obs), tables.counts(row_obs)
        summary.dates.append(AsOfSummary(
            as_of=as_of, events=ev["events"], direct=ev["direct"], linked=ev["linked"], anonymous=ev["anonymous"],
            profiles=fr["profiles"], anonymous_profiles=fr["profiles"] - fr["known"], graph_rounds=rounds))
        summary.snapshot_profiles = fr["known"]  # every as-of date has every snapshot profile
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(PROG, "Validate events (quarantining bad rows), resolve identities and write point-in-time "
                     "features for each as-of date to <lake>/features.")

    def go(spark: SparkSession, cfg: Config, args: argparse.Namespace) -> None:
        print(run(spark, cfg).render(), flush=True)

    return run_job(PROG, argv, p, go)
