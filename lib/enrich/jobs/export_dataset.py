"""Bring an Experience Platform dataset into the raw zone (Data Access API), resumably.

    jobs/export_dataset.py --dataset <datasetId> [--batch <batchId> ...]

Writes `<aep.export_path or <lake>/raw>/<datasetId>/batchId=<batchId>/<file>` and
`_export-manifest.json` (see `enrich.aep.export`); a re-run downloads only what is missing. The
features job reads the folder directly as parquet. Speaks HTTP only: no Spark session is started.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from pyspark.sql import SparkSession

from enrich.aep.client import Client, client_secret
from enrich.aep.export import Export, ExportSummary
from enrich.config import Config
from enrich.jobs.cli import parser, run_job

PROG = "export_dataset"


def run(cfg: Config, dataset: str, batches: list[str] | None = None, client: Client | None = None) -> ExportSummary:
    if client is not None:
        return Export(client, cfg.aep, cfg.export_path, dataset).run(batches or None)
    with Client(cfg.aep, client_secret(cfg.aep)) as own:
        return Export(own, cfg.aep, cfg.export_path, dataset).run(batches or None)


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(PROG, "Download an Experience Platform dataset's files (its successful batches) into "
                     "<aep.export_path>/<datasetId>/, resuming partial downloads.")
    p.add_argument("--dataset", required=True, metavar="ID", help="platform dataset id to export")
    p.add_argument("--batch", action="append", default=[], metavar="ID",
                   help="export only this batch (repeat); default: every successful batch of the dataset")

    def go(spark: SparkSession | None, cfg: Config, args: argparse.Namespace) -> None:
        print(run(cfg, args.dataset, args.batch).render(), flush=True)

    return run_job(PROG, argv, p, go, needs_spark=False)
