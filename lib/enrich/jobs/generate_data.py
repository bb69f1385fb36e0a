"""Write synthetic XDM events, a profile snapshot and the truth table (see `enrich.datagen`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from enrich import datagen, tables
from enrich.config import Config
from enrich.jobs.cli import parser, run_job

PROG = "generate_data"


@dataclass(frozen=True)
class GenerateSummary:
    events_path: str
    events_format: str
    events: int
    dirty_events: int
    snapshot_path: str
    snapshot_format: str
    snapshot_profiles: int
    truth_path: str
    people: int
    known: int
    churned: int

    def render(self) -> str:
        return "\n".join([
            f"{PROG}: wrote",
            f"  events    {self.events:>12,} rows ({self.dirty_events:,} dirty)  "
            f"{self.events_path} ({self.events_format})",
            f"  snapshot  {self.snapshot_profiles:>12,} profiles                "
            f"{self.snapshot_path} ({self.snapshot_format})",
            f"  truth     {self.people:>12,} people ({self.known:,} known, "
            f"{self.people - self.known:,} anonymous, {self.churned:,} churned)  {self.truth_path} (delta)",
        ])


def run(spark: SparkSession, cfg: Config) -> GenerateSummary:
    g = cfg.generate
    persons = datagen.people(spark, g)

    events, ev_obs = tables.observe(datagen.events(persons, g), "events",
                                    rows=F.count(F.lit(1)), dirty=F.count("dirty_kind"))
    tables.write(events.drop("dirty_kind"), cfg.events_path, cfg.input.events.format)

    snapshot, snap_obs = tables.observe(datagen.snapshot(persons, g.seed), "snapshot", rows=F.count(F.lit(1)))
    tables.write(snapshot, cfg.snapshot_path, cfg.input.snapshot.format)

    truth, truth_obs = tables.observe(datagen.truth(persons, g), "truth", rows=F.count(F.lit(1)),
                                      known=F.count_if("known"), churned=F.count_if("churned"))
    tables.write(truth, cfg.truth_path, "delta")

    ev, sn, tr = tables.counts(ev_obs), tables.counts(snap_obs), tables.counts(truth_obs)
    return GenerateSummary(
        events_path=cfg.events_path, events_format=cfg.input.events.format,
        events=ev["rows"], dirty_events=ev["dirty"],
        snapshot_path=cfg.snapshot_path, snapshot_format=cfg.input.snapshot.format,
        snapshot_profiles=sn["rows"],
        truth_path=cfg.truth_path, people=tr["rows"], known=tr["known"], churned=tr["churned"],
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(PROG, "Generate synthetic XDM experience events, a profile snapshot and the truth "
                     "table, from the generate.* keys.")

    def go(spark: SparkSession, cfg: Config, args: argparse.Namespace) -> None:
        print(run(spark, cfg).render(), flush=True)

    return run_job(PROG, argv, p, go)
