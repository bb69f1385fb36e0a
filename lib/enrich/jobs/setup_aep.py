"""Create what the published records need on Experience Platform, idempotently.

    jobs/setup_aep.py [--field-group <outbox>/<date>/<run_id>/xdm-fieldgroup.json] [--dry-run]

The tenant field group (from a published folder), an XDM Individual Profile schema with it and the
IdentityMap field group enabled for Profile, and a Profile-enabled dataset on it; each is found by
its title (`aep.field_group_title`, `aep.schema_title`, `aep.dataset_name`) and reused when it
exists. Prints the dataset id for `aep.dataset_id`. See `enrich.aep.setup`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from pyspark.sql import SparkSession

from enrich.aep import setup
from enrich.aep.client import Client, client_secret
from enrich.aep.ingest import local_path, newest_manifest
from enrich.config import Config
from enrich.jobs.cli import parser, run_job
from enrich.jobs.publish import FIELD_GROUP

PROG = "setup_aep"


def run(cfg: Config, field_group: str | None = None, dry_run: bool = False,
        client: Client | None = None) -> setup.SetupSummary:
    path = local_path(field_group) if field_group else newest_manifest(cfg.publish.outbox).parent / FIELD_GROUP
    group = setup.read_field_group(Path(path), cfg)
    if dry_run:
        return setup.SetupSummary(requests=setup.plan_requests(cfg, group))
    if client is not None:
        return setup.run(client, cfg, group)
    with Client(cfg.aep, client_secret(cfg.aep)) as own:
        return setup.run(own, cfg, group)


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(PROG, "Create (or find) the field group, Profile-enabled schema and dataset the published "
                     "records need on Experience Platform; prints the dataset id for aep.dataset_id.")
    p.add_argument("--field-group", metavar="PATH",
                   help="xdm-fieldgroup.json of a published folder; default: the newest in publish.outbox")
    p.add_argument("--dry-run", action="store_true", help="print the requests and send nothing")

    def go(spark: SparkSession | None, cfg: Config, args: argparse.Namespace) -> None:
        print(run(cfg, args.field_group, args.dry_run).render(), flush=True)

    return run_job(PROG, argv, p, go, needs_spark=False)
