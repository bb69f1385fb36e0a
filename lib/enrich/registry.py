"""MLflow tracking and model registry: where runs go, how versions get their aliases.

Every new version of a registered model gets the alias `challenger`. It also becomes `champion`
when `--promote auto` finds that it beats the simple baseline by `promotion.min_lift_over_baseline`
and the current champion, scored on the same (latest) validation window, by
`promotion.min_improvement` (or there is no champion yet). `--promote force` makes it champion
regardless; `--promote never` only makes it challenger. The decision and both scores are run tags.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from enrich.config import MlflowConfig

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
PROMOTE_CHOICES = ("never", "auto", "force")


def _is_local(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def configure(cfg: MlflowConfig) -> None:
    """Point this process's MLflow client at the configured tracking store and registry."""
    mlflow.set_tracking_uri(cfg.tracking_uri)
    mlflow.set_registry_uri(cfg.registry_uri or cfg.tracking_uri)


def experiment_id(cfg: MlflowConfig, model_name: str) -> str:
    """The id of experiment `<experiment_prefix>/<model_name>`, created when missing.

    On a local store the artifacts go to `mlflow.artifact_root` (a folder next to the sqlite file,
    not wherever the process happens to run); servers and Databricks choose their own.
    """
    name = f"{cfg.experiment_prefix.rstrip('/')}/{model_name}"
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = Path(cfg.artifact_root).resolve().as_uri() if _is_local(cfg.tracking_uri) else None
    return mlflow.create_experiment(name, artifact_location=location)


def champion_version(client: MlflowClient, name: str) -> str | None:
    """The version holding alias `champion`, or None (also when the model is not registered yet)."""
    try:
        return client.get_model_version_by_alias(name, CHAMPION).version
    except MlflowException:
        return None


@dataclass(frozen=True)
class Decision:
    """Whether a new version becomes champion, and why (logged as run tags)."""

    promote: bool
    reason: str


def decide(mode: str, *, challenger: float, baseline: float, champion: float | None, higher_is_better: bool,
           min_lift_over_baseline: float, min_improvement: float) -> Decision:
    """The promotion rule (pure, so every branch is tested without a registry)."""
    sign = 1.0 if higher_is_better else -1.0
    if mode == "force":
        return Decision(True, "forced (--promote force)")
    if mode == "never":
        return Decision(False, "not considered (--promote never)")
    over_baseline = sign * (challenger - baseline)
    if over_baseline < min_lift_over_baseline:
        return Decision(False, f"does not beat the baseline by {min_lift_over_baseline:g} "
                               f"({challenger:.4f} vs baseline {baseline:.4f})")
    if champion is None:
        return Decision(True, "first version to beat the baseline (no champion yet)")
    over_champion = sign * (challenger - champion)
    if over_champion < min_improvement or (min_improvement == 0 and over_champion <= 0):
        return Decision(False, f"does not beat the champion by {min_improvement:g} "
                               f"({challenger:.4f} vs champion {champion:.4f})")
    return Decision(True, f"beats the champion ({challenger:.4f} vs {champion:.4f}) and the baseline "
                          f"({baseline:.4f})")


def set_aliases(client: MlflowClient, name: str, version: str, promote: bool) -> None:
    """`challenger` on the new version; `champion` too when promoted."""
    client.set_registered_model_alias(name, CHALLENGER, version)
    if promote:
        client.set_registered_model_alias(name, CHAMPION, version)
        log.info("model %s version %s is now %s", name, version, CHAMPION)
