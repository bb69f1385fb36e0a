"""Publish a score date as XDM profile records, in files sized for batch ingestion, with a manifest.

Steps, each safe to repeat:
1. Read the scores of `as_of` for `publish.models`; refuse when one is missing, or when its drift
   check exceeded `scoring.max_psi` (unless `--allow-drift`).
2. Fold them into one record per profile (`enrich.publish.records`); measure each record (its JSON
   size) and fingerprint the whole set, in one pass. Records over `publish.max_record_kb` go to
   `<lake>/quarantine/publish` with a reason and are counted.
3. The folder is `<outbox>/<score_date>/<run_id>/`, `run_id` fixed by the content and the settings:
   if it already has a `manifest.json`, this exact publication exists and nothing is done.
4. Write the files to `<outbox>/_staging/<score_date>/<run_id>/` (the staging area of that date is
   cleared first: it only ever holds the leftovers of a crashed run), check their sizes, checksum
   them, move them into the folder, write `xdm-fieldgroup.json`, and write `manifest.json` last.

A folder without `manifest.json` is incomplete by definition: consumers (`jobs/ingest.py`) skip
it, and the next publish of that date removes it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from enrich import publish, tables
from enrich.config import Config
from enrich.errors import ConfigError, InputError
from enrich.jobs.cli import parser, run_job

PROG = "publish"
log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
FIELD_GROUP = "xdm-fieldgroup.json"
REJECTED = "record_too_large"


@dataclass
class PublishSummary:
    folder: str
    manifest: str
    rows: int
    files: int
    bytes: int
    rejected: dict[str, int] = field(default_factory=dict)
    already: bool = False

    def render(self) -> str:
        state = "already published (same content and settings): nothing written" if self.already else "published"
        rejected = ", ".join(f"{k}: {v}" for k, v in self.rejected.items()) or "none"
        return (f"{PROG}: {state}\n  {self.rows} records in {self.files} file(s), {self.bytes / 1e6:.1f} MB; "
                f"rejected: {rejected}\n  manifest: {self.manifest}")


def read_scores(spark: SparkSession, cfg: Config, as_of: dt.date, models: Sequence[str]) -> tuple[DataFrame, list]:
    """The score date's rows of `models`, and each model's (name, version, run id)."""
    scores = tables.read(spark, cfg.scores_path, "delta").where(
        (F.col("score_date") == F.lit(as_of)) & F.col("model").isin(list(models)))
    versions = scores.select("model", "kind", "model_version", "model_run_id").distinct().collect()
    found = {r["model"] for r in versions}
    missing = [m for m in models if m not in found]
    if missing:
        raise InputError(f"{cfg.scores_path}: no scores as of {as_of} for {missing}; score them first: "
                         f"jobs/score.py --set as_of={as_of}")
    several = sorted({r["model"] for r in versions if [v["model"] for v in versions].count(r["model"]) > 1})
    if several:
        raise InputError(f"{cfg.scores_path}: scores as of {as_of} mix versions of {several}; re-score them")
    return scores, sorted((r["model"], r["kind"], r["model_version"], r["model_run_id"]) for r in versions)


def check_drift(spark: SparkSession, cfg: Config, as_of: dt.date, models: Sequence[str], allow: bool) -> None:
    """Refuse (or, with `allow`, warn about) scores whose drift exceeds `scoring.max_psi`."""
    try:
        table = tables.read(spark, cfg.drift_path, "delta")
    except InputError:
        log.warning("no drift table at %s: drift is not checked", cfg.drift_path)
        return
    limit = cfg.scoring.max_psi
    over = (table.where((F.col("score_date") == F.lit(as_of)) & F.col("model").isin(list(models))
                        & (F.col("psi") > F.lit(limit)))
            .orderBy(F.desc("psi")).limit(20).collect())
    if not over:
        return
    listed = "; ".join(f"{r['model']} v{r['model_version']} {r['input']} PSI {r['psi']:.3f}" for r in over)
    if allow:
        log.warning("publishing despite drift above scoring.max_psi=%g (--allow-drift): %s", limit, listed)
        return
    raise InputError(f"scores as of {as_of} drifted from their models' training data beyond scoring.max_psi="
                     f"{limit:g}: {listed}. Retrain the models, or publish anyway with --allow-drift")


def _sized(records: DataFrame, max_record_bytes: float) -> DataFrame:
    """Each record's JSON size and a hash of that JSON (for the fingerprint): one serialization."""
    body = F.to_json(F.struct(*[F.col(c) for c in records.columns if c != "profile_id"]))
    measured = records.select("*", F.struct(F.octet_length(body).alias("bytes"), F.xxhash64(body).alias("hash"))
                              .alias("_json"))
    return measured.select(*records.columns, F.col("_json.bytes").alias("_json_bytes"),
                           F.col("_json.hash").alias("_json_hash"),
                           (F.col("_json.bytes") > F.lit(max_record_bytes)).alias("_too_large"))


def _write_files(records: DataFrame, staging: str, cfg: Config, per_file: int, files: int) -> None:
    p = cfg.publish
    writer = (records.repartition(files).write.format(p.format).mode("overwrite")
              .option("maxRecordsPerFile", per_file).option("compression", p.compression))
    if p.format == "json":
        writer = writer.option("ignoreNullFields", "true")
    writer.save(staging)


def _move_files(spark: SparkSession, staging: str, folder: str, cfg: Config) -> list[dict[str, Any]]:
    """Check, count and checksum the staged data files, then move them into the folder under
    stable names; the manifest's file list."""
    p = cfg.publish
    data = [f for f in tables.list_files(spark, staging) if f.name.startswith("part-")]
    limit = p.max_file_mb * publish.MB
    too_big = [f"{f.name} ({f.bytes / 1e6:.2f} MB)" for f in data if f.bytes > limit]
    if too_big:
        raise InputError(f"files over publish.max_file_mb={p.max_file_mb:g}: {too_big}; nothing was published")
    counts = tables.rows_per_file(spark, staging, p.format)
    sums = tables.checksums(spark, [f.uri for f in data])
    ext = publish.extension(p.format, p.compression)
    listed = []
    for i, f in enumerate(data):
        name = f"part-{i:05d}{ext}"
        tables.move(spark, f.uri, f"{folder}/{name}")
        listed.append({"name": name, "rows": counts.get(f.name, 0), "bytes": f.bytes, "sha256": sums[f.name]})
    return listed


def run(spark: SparkSession, cfg: Config, allow_drift: bool = False,
        before_manifest: Callable[[], None] | None = None) -> PublishSummary:
    """Publish `cfg.as_of`'s scores. `before_manifest` runs just before the manifest is written
    (tests use it to crash there)."""
    if cfg.as_of is None:
        raise ConfigError("no score date to publish: set `as_of`, e.g. --set as_of=2026-01-01")
    as_of, p = cfg.as_of, cfg.publish
    models = p.models or list(cfg.scoring.models)
    scores, versions = read_scores(spark, cfg, as_of, models)
    check_drift(spark, cfg, as_of, models, allow_drift)

    records = publish.records(scores, cfg.tenant, models)
    publish.check_names(records.drop("profile_id").schema)
    group = publish.field_group(records.schema, cfg.tenant)
    sized = records.transform(lambda df: _sized(df, p.max_record_kb * 1000)).persist(StorageLevel.MEMORY_AND_DISK)
    good = sized.where(~F.col("_too_large"))
    stats = sized.agg(F.count_if(~F.col("_too_large")).alias("rows"),
                      F.sum(F.when(~F.col("_too_large"), F.col("_json_bytes"))).alias("bytes"),
                      F.count_if(F.col("_too_large")).alias("rejected"),
                      F.bit_xor("_json_hash").alias("fingerprint")).first()
    rows, rejected = int(stats["rows"]), int(stats["rejected"])
    if rows == 0:
        raise InputError(f"no records to publish as of {as_of} ({rejected} rejected as larger than "
                         f"publish.max_record_kb={p.max_record_kb:g})")
    per_file, files = publish.plan_files(rows, int(stats["bytes"] or 0), p.max_file_mb, p.max_files)
    settings = {"tenant": cfg.tenant, "format": p.format, "compression": p.compression,
                "max_file_mb": p.max_file_mb, "max_record_kb": p.max_record_kb, "models": models}
    run_id = publish.run_id(f"{stats['fingerprint']}:{rows}", settings)
    outbox = p.outbox.rstrip("/")
    folder = f"{outbox}/{as_of}/{run_id}"
    manifest_path = f"{folder}/{MANIFEST}"

    quarantine = sized.where(F.col("_too_large")).select(
        "profile_id", F.lit(as_of).alias("score_date"), F.lit(REJECTED).alias("reason"),
        F.col("_json_bytes").alias("bytes"), F.lit(run_id).alias("run_id"))
    tables.write(quarantine, cfg.quarantine_path("publish"), "delta", partition_by=["score_date"],
                 replace_where=f"score_date = DATE'{as_of}'")
    if rejected:
        log.warning("%d record(s) larger than publish.max_record_kb=%g are not published (see %s)", rejected,
                    p.max_record_kb, cfg.quarantine_path("publish"))

    if tables.exists(spark, manifest_path):
        manifest = json.loads(tables.read_text(spark, manifest_path))
        sized.unpersist()
        return PublishSummary(folder=folder, manifest=manifest_path, rows=manifest["rows"],
                              files=len(manifest["files"]), bytes=manifest["bytes"],
                              rejected=manifest["rejected"], already=True)

    staging_root = f"{outbox}/_staging/{as_of}"
    staging = f"{staging_root}/{run_id}"
    tables.delete(spark, staging_root)  # leftovers of a crashed run of this date
    tables.delete(spark, folder)  # an incomplete folder (no manifest) of a crashed run
    _write_files(good.drop("profile_id", "_json_bytes", "_json_hash", "_too_large"), staging, cfg, per_file, files)
    sized.unpersist()

    listed = _move_files(spark, staging, folder, cfg)
    tables.delete(spark, staging_root)
    tables.write_text(spark, f"{folder}/{FIELD_GROUP}", json.dumps(group, indent=2))
    manifest = {
        "version": 1,
        "scoreDate": str(as_of),
        "runId": run_id,
        "tenant": cfg.tenant,
        "format": p.format,
        "compression": p.compression,
        "rows": sum(f["rows"] for f in listed),
        "bytes": sum(f["bytes"] for f in listed),
        "files": listed,
        "rejected": {REJECTED: rejected},
        "models": [{"name": m, "field": publish.field_name(m), "kind": k, "version": v, "runId": r}
                   for m, k, v, r in versions],
        "fieldGroup": FIELD_GROUP,
        "schema": json.loads(records.drop("profile_id").schema.json()),
        "createdAt": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    if manifest["rows"] != rows:
        raise InputError(f"{folder}: the files hold {manifest['rows']} records, {rows} were written; "
                         f"the folder is left without a manifest (incomplete)")
    if before_manifest is not None:
        before_manifest()
    tables.write_text(spark, manifest_path, json.dumps(manifest, indent=2))
    return PublishSummary(folder=folder, manifest=manifest_path, rows=manifest["rows"], files=len(listed),
                          bytes=manifest["bytes"], rejected=manifest["rejected"])


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(PROG, "Publish a score date (as_of) as XDM profile records: files sized for batch ingestion "
                     "in <publish.outbox>/<score_date>/<run_id>/, manifest.json written last.")
    p.add_argument("--allow-drift", action="store_true",
                   help="publish even when a model's drift exceeded scoring.max_psi (logged as a warning)")

    def go(spark: SparkSession, cfg: Config, args: argparse.Namespace) -> None:
        print(run(spark, cfg, args.allow_drift).render(), flush=True)

    return run_job(PROG, argv, p, go)

