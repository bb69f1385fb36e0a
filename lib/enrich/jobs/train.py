"""Train insight models from the feature table; track, register and promote them in MLflow.

One run trains one model per `--model` file (each overlaid on the `--config` files), or the one
model a `--config` file defines. The feature table must hold every training as-of date; label
events are validated and resolved once for all the models of the run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import mlflow
import mlflow.artifacts
import mlflow.spark
import yaml
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from enrich import clv_btyd, drift, evaluate, identity, labels, quality, registry, score, tables
from enrich import train as training
from enrich.config import Config, load_config, locate
from enrich.errors import InputError
from enrich.jobs import build_features
from enrich.jobs.cli import parser, run_job

PROG = "train"
log = logging.getLogger(__name__)


@dataclass
class ModelSummary:
    name: str
    kind: str
    algorithm: str
    metric: str
    value: float
    baseline: float
    ceiling: float | None
    version: str
    promoted: bool
    reason: str
    run_id: str


def render(rows: Sequence[ModelSummary]) -> str:
    lines = [f"{PROG}: {len(rows)} model(s)",
             f"  {'model':<12}{'kind':<12}{'algorithm':<19}{'metric':<15}{'model':>9}{'baseline':>10}{'truth':>9}"
             f"  {'version':<8}champion?"]
    for r in rows:
        ceiling = f"{r.ceiling:>9.4f}" if r.ceiling is not None else f"{'n/a':>9}"
        lines.append(f"  {r.name:<12}{r.kind:<12}{r.algorithm:<19}{r.metric:<15}{r.value:>9.4f}{r.baseline:>10.4f}"
                     f"{ceiling}  {r.version:<8}{'yes' if r.promoted else 'no'}: {r.reason}")
    return "\n".join(lines)


def model_name(cfg: Config, source: str | None) -> str:
    """`model.name`, else the stem of the file that defined the model, else its kind."""
    if cfg.model.name:
        return cfg.model.name
    return Path(source).stem if source else cfg.model.kind


def label_events(spark: SparkSession, cfg: Config, until: dt.date) -> tuple[DataFrame, dt.date]:
    """Valid events before `until`, resolved with the identity graph as of `until`; and the last
    event's UTC date. The features job's checks and rules, without its quarantine (it owns that)."""
    clock = cfg.quality.clock or dt.datetime.now(dt.UTC)
    valid = (build_features.read_events(spark, cfg).transform(quality.validate_events(clock))
             .where(F.col("reason").isNull()).drop("reason", "raw", "identities")
             .persist(StorageLevel.DISK_ONLY))
    last = valid.agg(F.max("ts").alias("last")).first()["last"]
    if last is None:
        raise InputError(f"{cfg.events_path}: no valid events to take labels from")
    profiles = identity.snapshot_profiles(build_features.read_snapshot(spark, cfg), cfg.identity.namespace_priority)
    resolved, _, _ = identity.resolve_keys(valid, identity.key_links(valid), profiles, until,
                                           cfg.identity.namespace_priority, cfg.identity.max_iterations,
                                           cfg.identity.broadcast_max_sets)
    resolved = identity.apply_unmatched(resolved, cfg.identity.unmatched)
    return resolved.persist(StorageLevel.MEMORY_AND_DISK), last.date()


def read_features(spark: SparkSession, cfg: Config, dates: Sequence[dt.date]) -> DataFrame:
    """The feature rows of `dates`; an error naming the missing dates and the command that builds them."""
    table = tables.read(spark, cfg.features_path, "delta")
    rows = table.where(F.col("as_of_date").isin(list(dates)))
    present = {r["as_of_date"] for r in rows.select("as_of_date").distinct().collect()}
    missing = sorted(set(dates) - present)
    if missing:
        listed = ", ".join(str(d) for d in missing)
        raise InputError(f"{cfg.features_path}: no features for as-of {listed}; build them first: "
                         f"jobs/build_features.py --set 'features.as_of_dates=[{listed}]'")
    return rows


def _read_truth(spark: SparkSession, cfg: Config) -> DataFrame | None:
    try:
        return tables.read(spark, cfg.truth_path, "delta")
    except InputError:
        return None  # real data has no truth table: no ceiling


def fit(cfg: Config, features: DataFrame, events: DataFrame | None,
        truth: DataFrame | None) -> tuple[training.TrainResult, DataFrame | None]:
    """Labels, training set and fit for the kind of `cfg.model`; and the frame it cached."""
    m = cfg.model
    dates = cfg.training.dates()
    if m.kind == "segments":
        return training.train_segments(features.where(labels.eligible(m)), dates, cfg), None
    # Outcomes are aggregated from the events once and kept: fitting and evaluation read them often.
    if m.kind == "affinity":
        outcome = events.transform(labels.category_outcomes(dates, m.horizon_days)).persist()
        return training.train_affinity(training.affinity_data(features, outcome, dates, cfg), cfg, truth), outcome
    outcome = events.transform(labels.outcomes(dates, m.horizon_days, m.goal, days=m.kind == "clv_btyd"))
    if m.kind == "clv_btyd":
        previous = events.transform(labels.previous_outcomes(dates, m.horizon_days, m.goal))
        rows = labels.labelled(features, outcome, m, previous).persist()
        return training.train_btyd(rows, dates, cfg, truth), rows
    rows = labels.labelled(features, outcome, m).persist()
    return training.train_supervised(rows, dates, cfg, truth), rows


def _flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(tree, dict):
        out: dict[str, str] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): str(tree)[:500]}


def _example(result: training.TrainResult, features: DataFrame) -> Any:
    """A few rows of the model's input (pandas), for the signature and the input example."""
    if "category" in result.input_columns:
        pairs = features.select("profile_id", F.explode(F.map_keys("category_affinity")).alias("category"))
        return pairs.limit(5).toPandas()
    # Doubles, not integers, in the signature: a count may be null at scoring time (MLflow's advice).
    columns = [F.col(c).cast("double") if c not in ("profile_id", "category") else F.col(c)
               for c in result.input_columns]
    return features.select(*columns).limit(5).toPandas()


def drift_reference(result: training.TrainResult, cfg: Config) -> dict[str, Any]:
    """The distributions scoring compares with (`drift`): the model's inputs on the validation rows
    (the latest training as-of date) and its output there, produced by the scoring code itself."""
    kind, bins = cfg.model.kind, cfg.scoring.psi_bins
    if kind == "affinity":
        ctx = result.context
        out = training.recommend(result.model, ctx["profiles"], ctx["categories"], cfg.model.top_k, ctx["popular"])
        ref: dict[str, Any] = {}
    else:
        inputs = [c for c in result.input_columns if c != "profile_id"]
        ref = drift.reference(result.validation, inputs, bins=bins)
        if kind == "segments":
            out = score.segments(result.model, result.validation)
        elif kind == "clv_btyd":
            out = score.btyd(result.model, result.validation)
        else:
            scorer = score.predictions if kind == "clv" else score.probabilities
            out = scorer(result.model, result.validation.select(*score.KEYS, *inputs), [], {}, top=0)
    output = out.select(drift.watched(kind).alias(drift.OUTPUT))
    if drift.categorical(kind):
        return {**ref, **drift.reference(output, [], [drift.OUTPUT])}
    return {**ref, **drift.reference(output, [drift.OUTPUT], bins=bins)}


def load_model(kind: str, uri: str) -> Any:
    """A registered model of `kind` for scoring: the Spark pipeline, or a `clv_btyd.BtydModel`."""
    return clv_btyd.load(uri) if kind == "clv_btyd" else mlflow.spark.load_model(uri)


def _log_spark_model(model: Any, example: Any, name: str) -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        # Requirements given, not inferred: inferring them re-loads and runs the model in a subprocess.
        return mlflow.spark.log_model(model, artifact_path="model", signature=infer_signature(example),
                                      input_example=example, registered_model_name=name, dfs_tmpdir=tmp,
                                      pip_requirements=mlflow.spark.get_default_pip_requirements())


def compare_with_clv(cfg: Config, result: training.TrainResult) -> None:
    """clv_btyd: the champion of the `model.compare_with` clv model on the same validation rows, as
    `compared_*` metrics beside the BTYD model's own (spend over the horizon, rank correlation of
    value with actual spend). Only a champion trained on the same as-of dates with the same horizon
    is comparable (one trained on later dates would have seen this window's outcomes); otherwise
    the comparison is skipped with the reason logged."""
    other = cfg.model.compare_with
    if not other:
        return
    registry.configure(cfg.mlflow)
    client = MlflowClient()
    try:
        mv = client.get_model_version_by_alias(other, registry.CHAMPION)
        described = yaml.safe_load(mlflow.artifacts.load_text(f"runs:/{mv.run_id}/config.yaml"))["model"]
        trained_on = client.get_run(mv.run_id).data.params.get("training.dates")
    except (MlflowException, OSError, KeyError, TypeError) as exc:
        log.info("no %s@%s to compare the BTYD model with (%s)", other, registry.CHAMPION, str(exc).splitlines()[0])
        return
    dates = ",".join(str(d) for d in cfg.training.dates())
    if described.get("kind") != "clv" or described.get("horizon_days") != cfg.model.horizon_days \
            or trained_on != dates:
        log.warning("not comparing with %s v%s: a %s model with horizon %s days trained on %s, not clv over %s "
                    "days on %s", other, mv.version, described.get("kind"), described.get("horizon_days"), trained_on,
                    cfg.model.horizon_days, dates)
        return
    model = mlflow.spark.load_model(f"models:/{other}/{mv.version}")
    scored = model.transform(result.validation).withColumn("prediction", F.greatest("prediction", F.lit(0.0)))
    ev = evaluate.regression(scored).metrics
    result.metrics.update(compared_spend_rmse=ev["rmse"], compared_spend_mae=ev["mae"],
                          compared_clv_spearman=ev["spearman"], compared_version=float(mv.version))
    log.info("%s v%s on the same %s customers: spend RMSE %.4f (BTYD %.4f), rank correlation with spend %.4f "
             "(BTYD CLV %.4f)", other, mv.version, f"{ev['rows']:,.0f}", ev["rmse"], result.metrics["spend_rmse"],
             result.metrics["compared_clv_spearman"], result.metrics["clv_spearman"])


def log_and_register(cfg: Config, name: str, result: training.TrainResult, features: DataFrame,
                     promote: str) -> ModelSummary:
    """One MLflow run: config, parameters, metrics, plots, the model; registered, aliased, maybe promoted."""
    registry.configure(cfg.mlflow)
    client = MlflowClient()
    experiment = registry.experiment_id(cfg.mlflow, name)
    dates = cfg.training.dates()
    champion = registry.champion_version(client, name)
    champion_score = None
    if champion is not None and promote == "auto":
        try:
            current = load_model(cfg.model.kind, f"models:/{name}@{registry.CHAMPION}")
            champion_score = training.main_metric_of(current, result.validation, cfg, **result.context)
        except Exception as exc:
            log.warning("champion %s v%s could not be scored on this window (%s); comparing with the baseline only",
                        name, champion, exc)
    decision = registry.decide(promote, challenger=result.main, baseline=result.baseline, champion=champion_score,
                               higher_is_better=result.higher_is_better,
                               min_lift_over_baseline=cfg.promotion.min_lift_over_baseline,
                               min_improvement=cfg.promotion.min_improvement)
    with mlflow.start_run(experiment_id=experiment, run_name=f"{name} {dates[-1]}") as run:
        resolved = cfg.model_dump(mode="json")
        params = _flatten({k: resolved[k] for k in ("model", "training", "promotion", "features", "identity")})
        # A search's chosen values; a BTYD fit's parameters under their published names (r, alpha, ...).
        chosen = "" if cfg.model.kind == "clv_btyd" else "chosen."
        params.update({f"{chosen}{k}": str(v)[:500] for k, v in result.params.items()})
        params["training.dates"] = ",".join(str(d) for d in dates)
        mlflow.log_params(params)
        mlflow.log_metrics({k: float(v) for k, v in result.metrics.items()})
        mlflow.log_metrics({f"count_{k}": float(v) for k, v in result.counts.items()})
        for file, figure in result.figures.items():
            mlflow.log_figure(figure, f"plots/{file}")
            plt.close(figure)
        described = {"features": result.input_columns, "importances": result.importances}
        if "categories" in result.context:
            described.update(categories=result.context["categories"], popular=result.context["popular"])
        mlflow.log_dict(described, "features.json")
        mlflow.log_dict(drift_reference(result, cfg), "reference.json")
        if "purchases_by_frequency" in result.context:
            mlflow.log_dict(result.context["purchases_by_frequency"], "purchases_by_frequency.json")
        mlflow.log_text(yaml.safe_dump(resolved, sort_keys=False), "config.yaml")
        mlflow.log_text(features.schema.json(), "training_schema.json")
        example = _example(result, features)
        if isinstance(result.model, clv_btyd.BtydModel):
            info = clv_btyd.log_model(result.model, example, name)
        else:
            info = _log_spark_model(result.model, example, name)
        version = str(info.registered_model_version)
        registry.set_aliases(client, name, version, decision.promote)
        mlflow.set_tags({"promotion.decision": "champion" if decision.promote else "challenger",
                         "promotion.reason": decision.reason,
                         "promotion.challenger_score": f"{result.main:.6f}",
                         "promotion.champion_score": "" if champion_score is None else f"{champion_score:.6f}",
                         "promotion.baseline_score": f"{result.baseline:.6f}",
                         "promotion.main_metric": result.main_metric,
                         "model.kind": cfg.model.kind, "model.version": version})
        run_id = run.info.run_id
    return ModelSummary(name=name, kind=cfg.model.kind, algorithm=cfg.model.estimator, metric=result.main_metric,
                        value=result.main, baseline=result.baseline, ceiling=result.ceiling, version=version,
                        promoted=decision.promote, reason=decision.reason, run_id=run_id)


def run(spark: SparkSession, configs: Sequence[tuple[Config, str | None]], promote: str = "auto") -> list[ModelSummary]:
    """Train, evaluate, log and register each configured model."""
    dates = sorted({d for cfg, _ in configs for d in cfg.training.dates()})
    for cfg, _ in configs:
        training.split_dates(cfg.training.dates())
    base = configs[0][0]
    features = read_features(spark, base, dates).persist(StorageLevel.MEMORY_AND_DISK)
    supervised = [cfg for cfg, _ in configs if cfg.model.kind != "segments"]
    events = None
    if supervised:
        until = max(max(c.training.dates()) + dt.timedelta(days=c.model.horizon_days) for c in supervised)
        events, last_day = label_events(spark, base, until)
        for c in supervised:
            training.check_horizon(c.training.dates(), c.model.horizon_days, last_day)
    truth = _read_truth(spark, base)
    summaries = []
    for cfg, source in configs:
        name = model_name(cfg, source)
        log.info("training %s (%s, %s)", name, cfg.model.kind, cfg.model.estimator)
        rows = features.where(F.col("as_of_date").isin(cfg.training.dates()))
        result, cached = fit(cfg, rows, events, truth)
        if cfg.model.kind == "clv_btyd":
            compare_with_clv(cfg, result)
        summaries.append(log_and_register(cfg, name, result, rows, promote))
        for kept in (cached, result.validation):
            if kept is not None:
                kept.unpersist()
    features.unpersist()
    if events is not None:
        events.unpersist()
    return summaries


def model_configs(config_files: Sequence[str], overrides: Sequence[str],
                  model_files: Sequence[str]) -> list[tuple[Config, str]]:
    """One config per model file, each overlaid on the `--config` files, with the `--set` overrides."""
    return [(load_config([*config_files, f], overrides), f) for f in model_files]


def _model_source(path: str) -> bool:
    data = yaml.safe_load(locate(path).read_text())
    return isinstance(data, dict) and "model" in data


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(PROG, "Train models on the feature table (labels from the outcome window after each as-of "
                     "date), evaluate them out of time, log them to MLflow and register them.")
    p.add_argument("--model", action="append", default=[], metavar="FILE",
                   help="model config (e.g. conf/models/churn.yaml), overlaid on the --config files; repeat "
                        "to train several models in one run. Default: the model the --config files define.")
    p.add_argument("--promote", choices=registry.PROMOTE_CHOICES, default="auto",
                   help="auto: champion only if it beats the baseline and the current champion (default); "
                        "force: always champion; never: challenger only")

    def go(spark: SparkSession, cfg: Config, args: argparse.Namespace) -> None:
        if args.model:
            configs = model_configs(args.config, args.overrides, args.model)
        else:
            source = next((f for f in reversed(args.config) if _model_source(f)), None)
            configs = [(cfg, source)]
        print(render(run(spark, configs, args.promote)), flush=True)

    return run_job(PROG, argv, p, go)
