"""What every job's entry point shares: arguments, config, session, logging, exit codes."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pyspark.sql import SparkSession

from enrich.config import Config, load_config
from enrich.errors import EnrichError
from enrich.session import get_spark

log = logging.getLogger("enrich")


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every job takes."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--config", action="append", default=[], metavar="FILE",
                   help="YAML config file; repeat to overlay (later files win). "
                        "Default: the embedded local defaults.")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                   help="override one key, e.g. --set generate.profiles=1000 (value read as YAML)")
    return p


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    logging.getLogger("py4j").setLevel(logging.WARNING)
    from enrich.aep.client import install_redaction

    install_redaction()


def run_job(
    prog: str,
    argv: Sequence[str] | None,
    args_parser: argparse.ArgumentParser,
    run: Callable[[SparkSession | None, Config, argparse.Namespace], Any],
    needs_spark: bool = True,
) -> int:
    """Parse, load config, make the session (unless the job needs none: the platform jobs speak HTTP
    only), run; report an EnrichError as one line + exit code."""
    args = args_parser.parse_args(argv)
    setup_logging()
    try:
        cfg = load_config(args.config, args.overrides)
        spark = get_spark(cfg.spark) if needs_spark else None
        run(spark, cfg, args)
    except EnrichError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0
