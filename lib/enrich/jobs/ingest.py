"""Deliver a published folder into an Experience Platform dataset (Batch Ingestion API), exactly once.

    jobs/ingest.py [--manifest <outbox>/<date>/<run_id>/manifest.json] [--dry-run] [--retry-failed]

Without `--manifest`, the newest complete folder of `publish.outbox`. The batch id and each file's
state are kept in `ingest-state.json` beside the manifest, so re-running after a crash finishes the
same batch and sends only what is missing; re-running after success does nothing (see
`enrich.aep.ingest`). Speaks HTTP only: no Spark session is started.

Exit codes: 0 delivered (or already), 2 configuration, 3 input (folder vs manifest), 4 platform
(a refused request, retries exhausted, the batch failed or is still processing at the timeout).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from pyspark.sql import SparkSession

from enrich.aep.client import Client, client_secret
from enrich.aep.ingest import Ingest, IngestSummary, local_path, newest_manifest
from enrich.config import Config
from enrich.jobs.cli import parser, run_job

PROG = "ingest"
log = logging.getLogger(__name__)


def run(cfg: Config, manifest: str | None = None, dry_run: bool = False, retry_failed: bool = False,
        client: Client | None = None) -> IngestSummary:
    path = local_path(manifest) if manifest else newest_manifest(cfg.publish.outbox)
    if path.is_dir():
        path = path / "manifest.json"
    if dry_run:
        return Ingest(None, cfg.aep, path).dry_run()
    if client is not None:
        return Ingest(client, cfg.aep, Path(path)).run(retry_failed=retry_failed)
    with Client(cfg.aep, client_secret(cfg.aep)) as own:
        return Ingest(own, cfg.aep, Path(path)).run(retry_failed=retry_failed)


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(PROG, "Deliver a published folder (its manifest.json) into the Experience Platform dataset "
                     "aep.dataset_id through the Batch Ingestion API, exactly once.")
    p.add_argument("--manifest", metavar="PATH",
                   help="manifest.json (or its folder) to deliver; default: the newest complete folder of "
                        "publish.outbox")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (batch, files, sizes, chunking) and send nothing; needs no credentials")
    p.add_argument("--retry-failed", action="store_true",
                   help="when this folder's batch failed, deliver it again in a new batch")

    def go(spark: SparkSession | None, cfg: Config, args: argparse.Namespace) -> None:
        print(run(cfg, args.manifest, args.dry_run, args.retry_failed).render(), flush=True)

    return run_job(PROG, argv, p, go, needs_spark=False)
