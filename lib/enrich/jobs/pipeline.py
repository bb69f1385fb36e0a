"""Run the pipeline's stages in order from one config, in one Spark application.

    jobs/pipeline.py [--config FILE ...] [--set KEY=VALUE ...] [--from STAGE] [--to STAGE]
                     [--model FILE ...] [--promote auto|force|never] [--allow-drift]

The stages are `pipeline.stages` (default features, train, score, publish; the demo adds generate
first, a delivery adds ingest last). Each stage is the job of the same name, run with the same config
and session: the same code as `jobs/<job>.py`, so a stage run alone and in a pipeline agree.
`--from`/`--to` run a slice of the list: every stage reads its inputs from the lake, so resuming
after a failure at a stage is `--from <stage>`.

It prints one line per stage (rows in and out, seconds, outputs) and writes the whole record, with
the Spark application and its executors, to `<lake>/runs/<run_id>.json` when it ends, also when a
stage fails (the record names it; the exit code is that stage's).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import requests
from pyspark.sql import SparkSession

from enrich import registry, tables
from enrich.config import STAGES, Config
from enrich.errors import ConfigError, EnrichError
from enrich.jobs import build_features, generate_data, ingest, publish, score, train
from enrich.jobs.cli import parser, run_job

PROG = "pipeline"
log = logging.getLogger(__name__)


@dataclass
class StageResult:
    stage: str
    status: str = "running"
    rows_in: int | None = None
    rows_out: int | None = None
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)
    detail: str = ""
    report: str = ""
    """The stage's own summary, as its job prints it."""


@dataclass
class PipelineRun:
    run_id: str
    started: str
    stages: list[StageResult] = field(default_factory=list)
    status: str = "running"
    error: str | None = None
    application: dict[str, Any] = field(default_factory=dict)
    executors: list[dict[str, Any]] = field(default_factory=list)
    record: str = ""

    def render(self) -> str:
        lines = [f"{PROG}: run {self.run_id} {self.status}",
                 f"  {'stage':<10}{'status':<9}{'rows in':>12}{'rows out':>12}{'seconds':>9}  outputs"]
        for s in self.stages:
            rows_in = f"{s.rows_in:,}" if s.rows_in is not None else "-"
            rows_out = f"{s.rows_out:,}" if s.rows_out is not None else "-"
            lines.append(f"  {s.stage:<10}{s.status:<9}{rows_in:>12}{rows_out:>12}{s.seconds:>9.1f}  "
                         + ", ".join(s.outputs) + (f"  ({s.detail})" if s.detail else ""))
        if self.error:
            lines.append(f"  error: {self.error}")
        lines.append(f"  record: {self.record}")
        return "\n".join(lines)


@dataclass
class Context:
    spark: SparkSession
    cfg: Config
    args: argparse.Namespace
    manifest: str | None = None
    """The folder the publish stage wrote, delivered by the ingest stage."""


def _generate(ctx: Context, out: StageResult) -> None:
    s = generate_data.run(ctx.spark, ctx.cfg)
    out.rows_out, out.outputs = s.events, [s.events_path, s.snapshot_path, s.truth_path]
    out.detail = f"{s.snapshot_profiles:,} snapshot profiles, {s.dirty_events:,} dirty events"
    out.report = s.render()


def _features(ctx: Context, out: StageResult) -> None:
    s = build_features.run(ctx.spark, ctx.cfg)
    out.rows_in, out.rows_out, out.outputs = s.rows_read, sum(d.profiles for d in s.dates), [s.features_path]
    out.detail = (f"as of {', '.join(str(d.as_of) for d in s.dates)}; "
                  f"{sum(s.invalid.values()):,} invalid rows quarantined")
    out.report = s.render()


def _train(ctx: Context, out: StageResult) -> None:
    files = ctx.args.model or ctx.cfg.pipeline.models
    rows = train.run(ctx.spark, train.model_configs(ctx.args.config, ctx.args.overrides, files), ctx.args.promote)
    out.rows_out = len(rows)
    out.outputs = [f"{r.name} v{r.version}" + (" (champion)" if r.promoted else "") for r in rows]
    out.detail = f"{sum(r.promoted for r in rows)} champion(s)"
    out.report = train.render(rows)


def _score(ctx: Context, out: StageResult) -> None:
    rows = score.run(ctx.spark, ctx.cfg)
    out.rows_out, out.outputs = sum(r.rows for r in rows), [ctx.cfg.scores_path]
    drifted = [r.name for r in rows if r.drifted(ctx.cfg.scoring.max_psi)]
    out.detail = f"as of {ctx.cfg.as_of}; {len(rows)} model(s)" + (f"; drift above max_psi: {drifted}"
                                                                  if drifted else "")
    out.report = score.render(ctx.cfg.as_of, ctx.cfg.scores_path, rows, ctx.cfg.scoring.max_psi)


def _publish(ctx: Context, out: StageResult) -> None:
    s = publish.run(ctx.spark, ctx.cfg, ctx.args.allow_drift)
    out.rows_out, out.outputs = s.rows, [s.manifest]
    out.detail = f"{s.files} file(s), {s.bytes / 1e6:.1f} MB" + ("; already published" if s.already else "")
    out.report = s.render()
    ctx.manifest = s.manifest


def _ingest(ctx: Context, out: StageResult) -> None:
    s = ingest.run(ctx.cfg, ctx.manifest)
    out.rows_in = s.metrics.get("recordsRead")
    out.rows_out = s.metrics.get("recordsWritten")
    out.outputs = [f"batch {s.batch}"]
    out.detail = s.status + ("; already delivered" if s.already else f"; {s.sent_files} file(s) sent")
    out.report = s.render()


RUNNERS: dict[str, Callable[[Context, StageResult], None]] = {
    "generate": _generate, "features": _features, "train": _train, "score": _score, "publish": _publish,
    "ingest": _ingest,
}


def selected(stages: Sequence[str], first: str | None, last: str | None) -> list[str]:
    """The slice of the configured stages from `first` to `last` (both included)."""
    for option, stage in (("--from", first), ("--to", last)):
        if stage is not None and stage not in stages:
            raise ConfigError(f"{option} {stage}: not one of pipeline.stages ({', '.join(stages)})")
    start = stages.index(first) if first else 0
    end = stages.index(last) if last else len(stages) - 1
    if end < start:
        raise ConfigError(f"--to {last} comes before --from {first} in pipeline.stages ({', '.join(stages)})")
    return list(stages[start:end + 1])


def executors(spark: SparkSession) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The application and every executor it had, with the tasks each ran, from the application's
    own REST API (empty where the UI is off or not reachable, e.g. behind a workspace proxy)."""
    sc = spark.sparkContext
    app = {"id": sc.applicationId, "master": sc.master, "spark_version": spark.version}
    url = sc.uiWebUrl
    if not url:
        return app, []
    try:
        answer = requests.get(f"{url}/api/v1/applications/{sc.applicationId}/allexecutors", timeout=10)
        answer.raise_for_status()
        listed = answer.json()
    except (requests.RequestException, ValueError) as exc:
        log.warning("executors not recorded: the application's REST API at %s did not answer (%s)", url, exc)
        return app, []
    keep = ("id", "hostPort", "isActive", "totalCores", "totalTasks", "completedTasks", "failedTasks",
            "totalDuration")
    return app, [{k: e.get(k) for k in keep} for e in listed]


def write_record(spark: SparkSession, cfg: Config, record: PipelineRun) -> None:
    record.application, record.executors = executors(spark)
    tables.write_text(spark, record.record, json.dumps(asdict(record), indent=2, default=str) + "\n")


def run(spark: SparkSession, cfg: Config, args: argparse.Namespace,
        on_stage: Callable[[StageResult], None] | None = None) -> PipelineRun:
    """Run the selected stages; the record is written whether they succeed or not."""
    stages = selected(cfg.pipeline.stages, args.first, args.last)
    if {"score", "publish"} & set(stages) and cfg.as_of is None:
        # Found now, not after an hour of features and training.
        raise ConfigError("the score and publish stages need `as_of`, e.g. --set as_of=2026-01-01")
    now = dt.datetime.now(dt.UTC)
    record = PipelineRun(run_id=f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}", started=now.isoformat())
    record.record = f"{cfg.lake}/runs/{record.run_id}.json"
    ctx = Context(spark, cfg, args)
    try:
        for stage in stages:
            result = StageResult(stage)
            record.stages.append(result)
            log.info("pipeline stage %s", stage)
            start = time.perf_counter()
            try:
                RUNNERS[stage](ctx, result)
                result.status = "done"
            except BaseException:
                result.status = "failed"
                raise
            finally:
                result.seconds = round(time.perf_counter() - start, 1)
            if on_stage:
                on_stage(result)
        record.status = "done"
    except EnrichError as exc:
        record.status, record.error = "failed", f"{record.stages[-1].stage}: {exc}"
        exc.pipeline = record  # type: ignore[attr-defined]
        raise
    except Exception as exc:
        record.status, record.error = "failed", f"{record.stages[-1].stage}: {type(exc).__name__}: {exc}"
        raise
    finally:
        try:
            write_record(spark, cfg, record)
        except Exception as exc:  # the stage's own error matters more than a lost record
            log.error("run record %s not written: %s", record.record, exc)
    return record


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(PROG, "Run the pipeline's stages (pipeline.stages) in order from one config and record "
                     "the run in <lake>/runs/<run_id>.json.")
    p.add_argument("--from", dest="first", choices=STAGES, metavar="STAGE",
                   help=f"first stage to run (resume after a failure); one of {', '.join(STAGES)}")
    p.add_argument("--to", dest="last", choices=STAGES, metavar="STAGE", help="last stage to run")
    p.add_argument("--model", action="append", default=[], metavar="FILE",
                   help="model config the train stage trains; repeat for several. Default: pipeline.models")
    p.add_argument("--promote", choices=registry.PROMOTE_CHOICES, default="auto",
                   help="the train stage's promotion rule (as jobs/train.py --promote)")
    p.add_argument("--allow-drift", action="store_true",
                   help="the publish stage publishes even when scoring measured drift above scoring.max_psi")

    def go(spark: SparkSession, cfg: Config, args: argparse.Namespace) -> None:
        def progress(result: StageResult) -> None:
            print(result.report, flush=True)
            log.info("pipeline stage %s %s in %.1fs", result.stage, result.status, result.seconds)

        try:
            print(run(spark, cfg, args, progress).render(), flush=True)
        except EnrichError as exc:
            record = getattr(exc, "pipeline", None)
            if record is not None:
                print(record.render(), flush=True)
            raise

    return run_job(PROG, argv, p, go)
