"""Score every eligible profile as of a date with the registered models; check for drift.

For each model of `scoring.models` (name -> alias or version): the version is resolved once in the
registry (so a promotion during the run cannot mix versions), its pipeline and artifacts are
loaded, the feature table's `as_of` partition is read (built first when missing), the model's
eligible population is scored with factors, percentiles and deciles, and the rows replace the
`(score_date, model)` partition of `<lake>/scores`. The population stability of the model's inputs
and output against its training reference goes to `<lake>/drift` and to an MLflow run in the
model's experiment; `jobs/publish.py` refuses scores that drifted past `scoring.max_psi`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import mlflow
import mlflow.artifacts
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from enrich import drift, explain, labels, registry, score, tables
from enrich.config import AMOUNT_KINDS, Config, ModelConfig
from enrich.errors import ConfigError, InputError
from enrich.jobs import build_features
from enrich.jobs import train as train_job
from enrich.jobs.cli import parser, run_job

PROG = "score"
log = logging.getLogger(__name__)
SUPERVISED = ("conversion", "churn", "clv")
RANKED = (*SUPERVISED, "clv_btyd")  # kinds with percentiles and deciles


@dataclass
class Registered:
    """One model version as scoring needs it."""

    name: str
    reference: str
    version: str
    run_id: str
    config: ModelConfig
    described: dict[str, Any]
    drift_reference: dict[str, Any] | None


@dataclass
class ModelScores:
    name: str
    version: str
    kind: str
    rows: int
    psi: dict[str, float]
    distribution: list[tuple[str, int, float]] = field(default_factory=list)
    """(bucket, profiles, mean value): deciles, top categories or segments."""

    @property
    def max_psi(self) -> tuple[str, float] | None:
        return max(self.psi.items(), key=lambda kv: kv[1]) if self.psi else None

    def drifted(self, limit: float) -> bool:
        """Whether some PSI is above `limit` (scoring.max_psi): publish will refuse."""
        worst = self.max_psi
        return worst is not None and worst[1] > limit


def render(as_of: dt.date, path: str, rows: Sequence[ModelScores], max_psi: float) -> str:
    lines = [f"{PROG}: as of {as_of}: {len(rows)} model(s) -> {path}",
             f"  {'model':<12}{'version':<9}{'kind':<12}{'profiles':>9}  drift (largest PSI)"]
    for r in rows:
        worst = r.max_psi
        state = "no reference" if worst is None else f"{worst[1]:.3f} {worst[0]}"
        if r.drifted(max_psi):
            state += "  ABOVE scoring.max_psi: publish will refuse"
        lines.append(f"  {r.name:<12}{r.version:<9}{r.kind:<12}{r.rows:>9}  {state}")
    for r in rows:
        label = {"affinity": "top category", "segments": "segment"}.get(r.kind, "decile")
        mean = "mean prediction" if r.kind in AMOUNT_KINDS else {"affinity": "", "segments": ""}.get(
            r.kind, "mean probability")
        lines.append(f"  {r.name} by {label}: " + ", ".join(
            f"{b}: {n}" + (f" ({m:.3f})" if mean and m is not None else "") for b, n, m in r.distribution)
            + (f"   [profiles ({mean})]" if mean else ""))
    return "\n".join(lines)


def resolve(client: MlflowClient, name: str, reference: str, tracking_uri: str) -> tuple[str, str]:
    """(version, run id) of `name` at an alias or version, or an error saying how to get one."""
    try:
        mv = (client.get_model_version(name, reference) if reference.isdigit()
              else client.get_model_version_by_alias(name, reference))
    except MlflowException as exc:
        raise InputError(f"model '{name}@{reference}' is not in the registry at {tracking_uri} "
                         f"({exc.message.splitlines()[0]}); train it first, e.g. "
                         f"jobs/train.py --model conf/models/{name}.yaml") from None
    return str(mv.version), mv.run_id


def load_registered(client: MlflowClient, name: str, reference: str, tracking_uri: str) -> Registered:
    """A version's model config, feature description and drift reference (from its run)."""
    version, run_id = resolve(client, name, reference, tracking_uri)
    config = yaml.safe_load(mlflow.artifacts.load_text(f"runs:/{run_id}/config.yaml"))
    described = mlflow.artifacts.load_dict(f"runs:/{run_id}/features.json")
    try:
        reference_dists = mlflow.artifacts.load_dict(f"runs:/{run_id}/reference.json")
    except (MlflowException, OSError):
        log.warning("model %s version %s has no drift reference (reference.json): drift is not checked", name, version)
        reference_dists = None
    return Registered(name=name, reference=reference, version=version, run_id=run_id,
                      config=ModelConfig.model_validate(config["model"]), described=described,
                      drift_reference=reference_dists)


def feature_rows(spark: SparkSession, cfg: Config, as_of: dt.date) -> DataFrame:
    """The feature table's `as_of` partition, built first when missing (and allowed)."""
    try:
        return train_job.read_features(spark, cfg, [as_of])
    except InputError:
        if not cfg.scoring.build_missing_features:
            raise InputError(f"{cfg.features_path}: no features as of {as_of}; build them first: "
                             f"jobs/build_features.py --set as_of={as_of} (or set scoring.build_missing_features)"
                             ) from None
    log.info("no features as of %s in %s: building them", as_of, cfg.features_path)
    only = cfg.features.model_copy(update={"as_of_dates": [as_of], "as_of_start": None, "as_of_end": None})
    print(build_features.run(spark, cfg.model_copy(update={"features": only})).render(), flush=True)
    return train_job.read_features(spark, cfg, [as_of])


def score_model(cfg: Config, reg: Registered, model: Any, eligible: DataFrame) -> DataFrame:
    """The model's scores of its eligible rows, in the `score.SCORES` shape (not yet ranked)."""
    m = reg.config
    if m.kind in SUPERVISED:
        features = reg.described["features"]
        missing = [c for c in features if c not in eligible.columns]
        if missing:
            raise InputError(f"model {reg.name} v{reg.version} needs feature columns the table lacks: {missing}")
        medians = explain.training_medians(model)
        tried = explain.candidates(reg.described.get("importances", {}), features, cfg.scoring.factor_candidates)
        scorer = score.predictions if m.kind == "clv" else score.probabilities
        # Only what the model reads: each row is copied once per factor candidate.
        return scorer(model, eligible.select(*score.KEYS, *features), tried, medians, cfg.scoring.factors)
    if m.kind == "clv_btyd":
        return score.btyd(model, eligible)
    if m.kind == "affinity":
        return score.recommendations(model, eligible, reg.described["categories"], m.top_k, reg.described["popular"])
    return score.segments(model, eligible)


def distribution(scored: DataFrame, kind: str) -> list[tuple[str, int, float]]:
    """A small summary of the scores: per decile, top category or segment (at most ten rows)."""
    if kind in RANKED:
        value = "prediction" if kind in AMOUNT_KINDS else "probability"
        rows = scored.groupBy("decile").agg(F.count(F.lit(1)).alias("n"), F.avg(value).alias("m")).orderBy("decile")
        return [(str(r["decile"]), r["n"], r["m"]) for r in rows.collect()]
    key = drift.watched(kind) if kind == "affinity" else F.col("segment_name")
    rows = scored.groupBy(key.alias("k")).count().orderBy(F.desc("count"), "k").limit(10)
    return [(str(r["k"]), r["count"], None) for r in rows.collect()]


def check_drift(reg: Registered, eligible: DataFrame, scored: DataFrame) -> dict[str, float]:
    """PSI of the model's inputs (eligible feature rows) and of its output, by name."""
    if reg.drift_reference is None:
        return {}
    inputs = {k: v for k, v in reg.drift_reference.items() if k != drift.OUTPUT}
    psi = drift.stability(eligible, inputs)
    if drift.OUTPUT in reg.drift_reference:
        output = scored.select(drift.watched(reg.config.kind).alias(drift.OUTPUT))
        psi.update(drift.stability(output, {drift.OUTPUT: reg.drift_reference[drift.OUTPUT]}))
    return psi


def log_scoring(cfg: Config, reg: Registered, as_of: dt.date, summary: ModelScores) -> None:
    """An MLflow run in the model's experiment: what was scored, with which version, and the drift."""
    with mlflow.start_run(experiment_id=registry.experiment_id(cfg.mlflow, reg.name),
                          run_name=f"score {reg.name} {as_of}"):
        mlflow.set_tags({"job": "score", "model.version": reg.version, "model.run_id": reg.run_id,
                         "score_date": str(as_of), "model.kind": reg.config.kind})
        mlflow.log_metric("profiles", summary.rows)
        if summary.psi:
            mlflow.log_metrics({f"psi.{k}": v for k, v in summary.psi.items()})
            mlflow.log_metric("psi_max", max(summary.psi.values()))
            mlflow.log_dict(summary.psi, "psi.json")
            mlflow.log_figure(drift.figure(summary.psi, cfg.scoring.max_psi, f"{reg.name} v{reg.version}: drift as of "
                                           f"{as_of}"), "plots/drift.png")


def drift_rows(spark: SparkSession, reg: Registered, as_of: dt.date, psi: dict[str, float], limit: float) -> DataFrame:
    schema = ("score_date date, model string, model_version string, input string, psi double, "
              "max_psi double, exceeded boolean")
    return spark.createDataFrame([(as_of, reg.name, reg.version, k, float(v), limit, v > limit)
                                  for k, v in sorted(psi.items())], schema)


def run(spark: SparkSession, cfg: Config, only: Sequence[str] = ()) -> list[ModelScores]:
    """Score each configured model as of `cfg.as_of`; write scores and drift."""
    if cfg.as_of is None:
        raise ConfigError("no as-of date to score: set `as_of`, e.g. --set as_of=2026-01-01")
    as_of = cfg.as_of
    wanted = dict(cfg.scoring.models)
    if only:
        unknown = [m for m in only if m not in wanted]
        if unknown:
            raise ConfigError(f"--model {unknown}: not in scoring.models ({', '.join(wanted)})")
        wanted = {m: wanted[m] for m in only}
    if not wanted:
        raise ConfigError("scoring.models is empty: name the registered models to score")
    registry.configure(cfg.mlflow)
    client = MlflowClient()
    registered = [load_registered(client, name, ref, cfg.mlflow.tracking_uri) for name, ref in wanted.items()]
    rows = feature_rows(spark, cfg, as_of).persist(StorageLevel.MEMORY_AND_DISK)
    summaries = []
    for reg in registered:
        log.info("scoring %s version %s (%s) as of %s", reg.name, reg.version, reg.config.kind, as_of)
        model = train_job.load_model(reg.config.kind, f"models:/{reg.name}/{reg.version}")
        # Kept: ranking reads the scores three times and the drift check once more.
        eligible = rows.where(labels.eligible(reg.config))
        scored = score_model(cfg, reg, model, eligible).persist(StorageLevel.MEMORY_AND_DISK)
        ranked = scored.transform(score.ranked(reg.config.kind)) if reg.config.kind in RANKED else scored
        final = ranked.transform(score.conform(reg.config.kind, reg.name, reg.version, reg.run_id, as_of))
        final, observation = tables.observe(final, f"scores-{reg.name}", rows=F.count(F.lit(1)))
        tables.write(final, cfg.scores_path, "delta", partition_by=score.PARTITIONS,
                     replace_where=f"score_date = DATE'{as_of}' AND model = '{reg.name}'")
        written = tables.read(spark, cfg.scores_path, "delta").where(
            (F.col("score_date") == F.lit(as_of)) & (F.col("model") == reg.name))
        psi = check_drift(reg, eligible, scored)
        summary = ModelScores(name=reg.name, version=reg.version, kind=reg.config.kind,
                              rows=tables.counts(observation)["rows"], psi=psi,
                              distribution=distribution(written, reg.config.kind))
        tables.write(drift_rows(spark, reg, as_of, psi, cfg.scoring.max_psi), cfg.drift_path, "delta",
                     partition_by=["score_date"], replace_where=f"score_date = DATE'{as_of}' AND model = '{reg.name}'")
        log_scoring(cfg, reg, as_of, summary)
        scored.unpersist()
        summaries.append(summary)
    rows.unpersist()
    return summaries


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(PROG, "Score the eligible profiles as of a date with the registered models (scoring.models), "
                     "with influential factors, percentiles and a drift check; writes <lake>/scores.")
    p.add_argument("--model", action="append", default=[], metavar="NAME",
                   help="score only this model of scoring.models; repeatable. Default: all of them.")

    def go(spark: SparkSession, cfg: Config, args: argparse.Namespace) -> None:
        print(render(cfg.as_of, cfg.scores_path, run(spark, cfg, args.model), cfg.scoring.max_psi), flush=True)

    return run_job(PROG, argv, p, go)
