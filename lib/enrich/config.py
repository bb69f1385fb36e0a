"""Typed configuration: YAML files overlaid in order, `--set` overrides, `${ENV}` interpolation.

Loading happens once, at a job's entry point; every part of the library receives only the subtree
it needs (`cfg.spark`, `cfg.generate`, ...). The models below are the single source of truth for
keys, types, ranges and defaults; the defaults are the local set-up, so a job run with no config
file at all works on a laptop (`make demo`).

Secrets never live here: there is no key for one, and unknown keys are errors.
"""

from __future__ import annotations

import copy
import datetime as dt
import difflib
import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from enrich.errors import ConfigError

Format = Literal["parquet", "json", "delta"]


class _Section(BaseModel):
    """Strict base: unknown keys are errors, values are checked, sections are immutable."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, use_attribute_docstrings=True, validate_default=True
    )


class Dataset(_Section):
    path: str | None = None
    """Folder or URI of the dataset. Default: a folder under `<lake>/raw/`."""
    format: Format = "delta"
    """Storage format: `parquet`, `json` (JSON lines) or `delta`."""


class InputConfig(_Section):
    events: Dataset = Dataset()
    """XDM ExperienceEvents (raw, un-unified). Default path `<lake>/raw/events`."""
    snapshot: Dataset = Dataset()
    """XDM profile snapshot (one row per unified profile). Default path `<lake>/raw/profile_snapshot`."""


class SparkConfig(_Section):
    mode: Literal["auto", "local", "cluster", "databricks"] = "auto"
    """Where the job runs. `auto`: Databricks when `DATABRICKS_RUNTIME_VERSION` is set, cluster
    when launched by spark-submit, local otherwise."""
    master: str = "local[*]"
    """Spark master in local mode (ignored on clusters and Databricks)."""
    app_name: str = "profile-enrichment"
    """Application name shown in the Spark UI."""
    shuffle_partitions: int = Field(32, ge=1, le=100_000)
    """`spark.sql.shuffle.partitions` in local mode; adaptive execution coalesces further."""
    driver_memory: str = Field("4g", pattern=r"^\d+[kmgt]$")
    """Driver JVM heap in local mode, e.g. `4g`."""
    jars_dir: str | None = None
    """Folder of Delta jars for local mode. Default: `.jars` in the project checkout (`make setup`
    fills it), or `$ENRICH_JARS_DIR`."""
    conf: dict[str, str] = {}
    """Extra Spark properties, applied in every mode unless spark-submit already set them."""


class MlflowConfig(_Section):
    tracking_uri: str = "sqlite:///mlflow.db"
    """MLflow tracking URI: a local sqlite file by default, `http(s)://…` for a tracking server,
    `databricks` on Databricks."""
    artifact_root: str = "./mlartifacts"
    """Artifact folder of experiments this project creates on a local (sqlite or file) tracking
    store; a tracking server or Databricks chooses its own."""
    registry_uri: str | None = None
    """Model registry URI. Default: the tracking URI (`databricks-uc` for Unity Catalog)."""
    experiment_prefix: str = "/profile-enrichment"
    """Experiments are named `<experiment_prefix>/<model>`."""


class GenerateConfig(_Section):
    profiles: int = Field(20_000, ge=1, le=1_000_000_000)
    """Number of synthetic people (known customers and anonymous visitors together)."""
    start_date: dt.date = dt.date(2025, 1, 1)
    """First day of generated activity (UTC)."""
    end_date: dt.date = dt.date(2026, 1, 1)
    """Day after the last generated activity (exclusive, UTC)."""
    seed: int = Field(42, ge=0, le=2**31 - 1)
    """Seed: the same seed and settings give byte-for-byte the same data."""
    anonymous_fraction: float = Field(0.2, ge=0.0, le=1.0)
    """Share of people who never log in; they are absent from the profile snapshot."""
    second_device_fraction: float = Field(0.3, ge=0.0, le=1.0)
    """Share of known customers who use a second device (a mobile app with its own ECID)."""
    unlisted_device_fraction: float = Field(0.0, ge=0.0, le=1.0)
    """Share of second devices the profile snapshot does not list (not stitched yet): their events
    reach the person's profile only through a logged-in event on that device, which links its ECID
    to the person's CRMID or Email (identity resolution's `linked` case)."""
    sessions_per_month: float = Field(2.0, gt=0.0, le=1000.0)
    """Median number of visits per month of an active person (individual rates vary around it)."""
    dirty_fraction: float = Field(0.01, ge=0.0, le=0.5)
    """Share of event rows that are corrupt (no identity, bad timestamp, bad price, duplicate _id)."""
    truth_path: str | None = None
    """Where the truth table (latent traits per person) is written. Default `<lake>/truth`."""

    @model_validator(mode="after")
    def _dates_in_order(self) -> GenerateConfig:
        if self.end_date <= self.start_date:
            raise ValueError(
                f"generate.end_date ({self.end_date}) must be after generate.start_date "
                f"({self.start_date})"
            )
        return self


class QualityConfig(_Section):
    max_invalid_fraction: float = Field(0.05, ge=0.0, le=1.0)
    """The features job stops (exit 3) when more than this share of event rows is invalid; the
    invalid rows are in the quarantine table either way."""
    clock: dt.datetime | None = None
    """The run's clock (UTC): events after it are `future_timestamp`. Default: the current time.
    Set it to make a re-run of old data reproducible."""
    broadcast_max_duplicate_ids: int = Field(1_000_000, ge=0)
    """Duplicated `_id`s (and copies not kept) up to which they are broadcast to the rows (no
    shuffle of the events); above it, a shuffle join."""


class IdentityConfig(_Section):
    namespace_priority: list[str] = Field(default_factory=lambda: ["CRMID", "Email", "ECID"], min_length=1)
    """Identity namespaces from most to least trusted: a profile's primary identity and the tie
    breaker when one identity graph touches several snapshot profiles. Others rank after these."""
    unmatched: Literal["drop", "keep"] = "keep"
    """Events whose identities reach no snapshot profile: `drop` them, or `keep` them as anonymous
    profiles keyed by their best identity."""
    max_iterations: int = Field(20, ge=1, le=1000)
    """Bound on the rounds of connected-components label propagation (a warning is logged when hit)."""
    broadcast_max_sets: int = Field(1_000_000, ge=0)
    """Distinct identity sets (about the number of profiles and devices) up to which their resolution
    is broadcast to the events, so resolving does not shuffle the events; above it, a shuffle join."""


def _check_span(section: str, start: dt.date | None, end: dt.date | None) -> None:
    """`<section>.as_of_start`/`as_of_end`: both or neither, in order."""
    if (start is None) != (end is None):
        raise ValueError(f"{section}.as_of_start and {section}.as_of_end go together")
    if start and end and end < start:
        raise ValueError(f"{section}.as_of_end ({end}) is before {section}.as_of_start ({start})")


def _listed_dates(dates: list[dt.date] | None, start: dt.date | None, end: dt.date | None,
                  step_days: int) -> list[dt.date]:
    """Explicit dates (sorted, distinct), else start..end every step_days, else none."""
    if dates:
        return sorted(set(dates))
    if start and end:
        return [start + dt.timedelta(days=d) for d in range(0, (end - start).days + 1, step_days)]
    return []


class FeaturesConfig(_Section):
    windows_days: list[int] = Field(default_factory=lambda: [7, 30, 90, 365], min_length=1)
    """Look-back windows in days; every windowed measure is computed for each (`<measure>_<w>d`)."""
    session_gap_minutes: int = Field(30, ge=1, le=24 * 60)
    """A new session starts after this much inactivity."""
    affinity_half_life_days: float = Field(30.0, gt=0.0)
    """Half-life of the exponential decay that weights category interactions by recency."""
    top_categories: int = Field(3, ge=1, le=50)
    """How many categories `top_categories` lists."""
    as_of_dates: list[dt.date] | None = None
    """As-of dates to build in one run (one read of the events). Default: `as_of_start`..`as_of_end`
    every `as_of_step_days`, else the top-level `as_of`."""
    as_of_start: dt.date | None = None
    """First as-of date of a range (with `as_of_end`)."""
    as_of_end: dt.date | None = None
    """Last as-of date of a range (inclusive)."""
    as_of_step_days: int = Field(7, ge=1)
    """Step between as-of dates of a range."""

    @field_validator("windows_days")
    @classmethod
    def _positive_unique_windows(cls, value: list[int]) -> list[int]:
        if any(w < 1 for w in value) or len(set(value)) != len(value):
            raise ValueError(f"windows must be distinct positive day counts, got {value}")
        return sorted(value)

    @model_validator(mode="after")
    def _range_complete(self) -> FeaturesConfig:
        _check_span("features", self.as_of_start, self.as_of_end)
        return self


Kind = Literal["conversion", "churn", "clv", "clv_btyd", "affinity", "segments"]
Algorithm = Literal["gbt", "logistic", "random_forest", "glm_tweedie", "bgnbd_gamma_gamma", "als", "kmeans"]
# The algorithms each kind accepts; the first is its default.
ALGORITHMS: dict[str, tuple[str, ...]] = {
    "conversion": ("gbt", "logistic", "random_forest"),
    "churn": ("gbt", "logistic", "random_forest"),
    "clv": ("gbt", "glm_tweedie", "random_forest"),
    "clv_btyd": ("bgnbd_gamma_gamma",),
    "affinity": ("als",),
    "segments": ("kmeans",),
}
# Kinds that predict an amount (`prediction`): ranked, scored and watched by it.
AMOUNT_KINDS = ("clv", "clv_btyd")


class GoalConfig(_Section):
    event_types: list[str] = Field(default_factory=lambda: ["commerce.purchases"], min_length=1)
    """`eventType` values that count as the goal (a purchase flag set by the event's measures also
    counts for `commerce.purchases`)."""
    min_order_value: float | None = Field(None, ge=0.0)
    """Only goal events with an order total of at least this much count."""


class EligibilityConfig(_Section):
    lookback_days: int = Field(45, ge=1, le=3650)
    """Profiles are eligible at D when they were active in the `lookback_days` before D."""
    require: Literal["any_event", "purchase", "customer", "none"] | None = None
    """What counts as active: `any_event` or a `purchase` in the look-back, `customer` (a purchase
    at any time before D: the look-back does not apply), or `none` (everyone in the feature table).
    Default: `purchase` for churn (only customers can churn), `customer` for clv_btyd (the model
    says itself how likely a quiet customer is to be alive), `none` for segments (everyone gets
    one), `any_event` otherwise."""


# Settings of a `clv_btyd` model's `params` (its fit) and their defaults.
BTYD_PARAMS: dict[str, Any] = {"penalizer": 0.0, "max_summaries": 5_000_000}


class ClvConfig(_Section):
    months: int = Field(12, ge=1, le=120)
    """Months of purchases the lifetime value adds up."""
    monthly_discount: float = Field(0.01, ge=0.0, lt=1.0)
    """Discount rate per month (0.01: about 12.7% a year)."""
    margin: float = Field(1.0, gt=0.0, le=1.0)
    """Share of revenue that is profit (1: value in revenue)."""
    days_per_month: float = Field(30.0, gt=0.0)
    """Days in a month of `months` (in the unit of the `btyd_*` features)."""


class ModelConfig(_Section):
    name: str | None = Field(None, pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")
    """Registered model name. Default: the stem of the model's config file (`conf/models/churn.yaml`
    -> `churn`), else the kind."""
    kind: Kind = "conversion"
    """`conversion` (goal in the window), `churn` (eligible and no goal in the window), `clv` (revenue
    in the window), `clv_btyd` (BG/NBD + Gamma-Gamma lifetime value), `affinity` (category
    interactions in the window), `segments` (unsupervised)."""
    goal: GoalConfig = GoalConfig()
    """Goal events."""
    horizon_days: int = Field(30, ge=1, le=3650)
    """Outcome window: labels for D come from events in [D, D + horizon_days)."""
    eligibility: EligibilityConfig = EligibilityConfig()
    """Eligible population at each D."""
    algorithm: Algorithm | None = None
    """conversion/churn: `gbt` (default), `logistic`, `random_forest`; clv: `gbt` (default),
    `glm_tweedie`, `random_forest`; clv_btyd: `bgnbd_gamma_gamma`; affinity: `als`; segments: `kmeans`."""
    params: dict[str, Any] = {}
    """Fixed parameters of the Spark MLlib estimator, by their MLlib names (e.g. `maxIter: 40`).
    clv_btyd: `penalizer` (L2 penalty on the parameters, as lifetimes' `penalizer_coef`; default 0)
    and `max_summaries` (distinct summaries fitted on the driver; above it the likelihood is summed
    in Spark at each iteration; default 5,000,000)."""
    grid: dict[str, list[Any]] = {}
    """Hyperparameter grid, MLlib parameter name -> values; searched when it has more than one point."""
    features: list[str] | None = None
    """Feature columns the model uses. Default: every numeric column of the feature table."""
    class_weight: Literal["none", "balanced"] = "none"
    """Classification: `balanced` weights each class by the inverse of its share (use with
    `calibrate`, since weighting shifts probabilities)."""
    calibrate: bool = False
    """Classification: fit isotonic calibration of the probability on a held-out slice of the
    training dates."""
    top_k: int = Field(3, ge=1, le=100)
    """Affinity: categories recommended per profile, and k of precision@k / NDCG@k."""
    k_range: list[int] = Field(default_factory=lambda: [3, 6], min_length=2, max_length=2)
    """Segments: the smallest and largest number of segments tried (chosen by silhouette)."""
    clv: ClvConfig = ClvConfig()
    """clv_btyd: the lifetime value it predicts (`prediction`)."""
    compare_with: str | None = "clv"
    """clv_btyd: a registered `clv` model (its champion) scored on the same validation window, for
    comparison (metrics `compared_*`); skipped when it is not registered, has another horizon or
    was trained on other as-of dates."""

    @model_validator(mode="after")
    def _algorithm_fits_kind(self) -> ModelConfig:
        if self.algorithm is not None and self.algorithm not in ALGORITHMS[self.kind]:
            raise ValueError(f"algorithm '{self.algorithm}' does not train a {self.kind} model; "
                             f"choose one of {', '.join(ALGORITHMS[self.kind])}")
        if not 2 <= self.k_range[0] <= self.k_range[1]:
            raise ValueError(f"k_range must be [smallest, largest] with 2 <= smallest <= largest, got {self.k_range}")
        if self.kind == "clv_btyd":
            self._check_btyd_params()
        return self

    def _check_btyd_params(self) -> None:
        unknown = sorted(set(self.params) - set(BTYD_PARAMS))
        if unknown or self.grid:
            raise ValueError(f"a clv_btyd model takes params {', '.join(BTYD_PARAMS)} and no grid; got "
                             f"{unknown or sorted(self.grid)}")
        penalizer = self.btyd_param("penalizer")
        if not isinstance(penalizer, int | float) or isinstance(penalizer, bool) or penalizer < 0:
            raise ValueError(f"params.penalizer must be a number >= 0, got {penalizer!r}")
        bound = self.btyd_param("max_summaries")
        if not isinstance(bound, int) or isinstance(bound, bool) or bound < 1:
            raise ValueError(f"params.max_summaries must be a whole number >= 1, got {bound!r}")

    def btyd_param(self, name: str) -> Any:
        """A clv_btyd fit setting: `params.<name>`, else its default (`BTYD_PARAMS`)."""
        return self.params.get(name, BTYD_PARAMS[name])

    @property
    def estimator(self) -> str:
        """The algorithm, defaulted by kind."""
        return self.algorithm or ALGORITHMS[self.kind][0]

    @property
    def active_require(self) -> str:
        """The eligibility rule, defaulted by kind."""
        defaults = {"churn": "purchase", "clv_btyd": "customer", "segments": "none"}
        return self.eligibility.require or defaults.get(self.kind, "any_event")


class TrainingConfig(_Section):
    as_of_dates: list[dt.date] | None = None
    """As-of dates stacked into the training set (the feature table must hold them). The latest is
    the out-of-time validation date; the others are fitted on."""
    as_of_start: dt.date | None = None
    """First as-of date of a range (with `as_of_end`)."""
    as_of_end: dt.date | None = None
    """Last as-of date of a range (inclusive)."""
    as_of_step_days: int = Field(28, ge=1)
    """Step between as-of dates of a range."""
    min_positives: int = Field(500, ge=1)
    """Refuse to train with fewer positive labels than this (classification), in fitting and in
    validation alike; for clv, profiles with revenue; for affinity, profiles with interactions."""
    min_negatives: int = Field(500, ge=1)
    """Refuse to train with fewer negative labels than this (classification)."""
    parallelism: int = Field(2, ge=1, le=64)
    """Models fitted in parallel during the hyperparameter search."""
    seed: int = Field(7, ge=0)
    """Seed of every random choice in training (tree sampling, ALS, KMeans, calibration slice)."""
    calibration_fraction: float = Field(0.2, gt=0.0, lt=0.5)
    """Share of training profiles held out to fit the calibration (with `model.calibrate`)."""

    @model_validator(mode="after")
    def _range_complete(self) -> TrainingConfig:
        _check_span("training", self.as_of_start, self.as_of_end)
        return self

    def dates(self) -> list[dt.date]:
        """The training as-of dates, sorted, from the most specific setting present."""
        dates = _listed_dates(self.as_of_dates, self.as_of_start, self.as_of_end, self.as_of_step_days)
        if dates:
            return dates
        raise ConfigError("no training dates: set `training.as_of_dates` (at least two), or "
                          "`training.as_of_start` and `training.as_of_end`")


class PromotionConfig(_Section):
    min_improvement: float = Field(0.0, ge=0.0)
    """A challenger becomes champion only if its main metric beats the champion's, on the same
    validation window, by at least this much."""
    min_lift_over_baseline: float = Field(0.01, ge=0.0)
    """A challenger becomes champion only if its main metric also beats the simple baseline's
    (recency rank, last window's spend, most popular categories, random segments) by this much."""


class ScoringConfig(_Section):
    models: dict[str, str] = Field(default_factory=lambda: {
        "conversion": "champion", "churn": "champion", "clv": "champion", "clv_btyd": "champion",
        "affinity": "champion", "segments": "champion"})
    """Registered models to score, name -> alias (`champion`, `challenger`) or a version number
    pinned as a string (`"3"`)."""

    @field_validator("models", mode="before")
    @classmethod
    def _references(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        out = {}
        for name, given in value.items():
            ref = str(given) if isinstance(given, int) and not isinstance(given, bool) else given
            if not isinstance(ref, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*|[1-9][0-9]*", ref):
                raise ValueError(f"scoring.models.{name}: '{ref}' is neither an alias (e.g. champion) "
                                 "nor a version number")
            out[name] = ref
        return out
    build_missing_features: bool = True
    """Build the feature table's `as_of` partition first when it is missing (the features job's code)."""
    factors: int = Field(3, ge=0, le=20)
    """Influential factors kept per profile and model (0: none)."""
    factor_candidates: int = Field(10, ge=1, le=200)
    """Features tried per profile for its factors: the model's most important ones (each costs one
    more pass of the model over the eligible profiles)."""
    psi_bins: int = Field(10, ge=2, le=100)
    """Quantile bins of each model input in the drift reference stored with the model."""
    max_psi: float = Field(0.25, gt=0.0)
    """Publishing refuses scores whose inputs or score distribution drifted more than this
    population stability index from the model's training data (`publish --allow-drift` overrides)."""


class PublishConfig(_Section):
    outbox: str = "./outbox"
    """Folder or URI the published folders go to: `<outbox>/<score_date>/<run_id>/`."""
    format: Literal["parquet", "json"] = "parquet"
    """File format of the records: `parquet` or `json` (JSON lines)."""
    compression: Literal["none", "snappy", "gzip", "zstd"] = "snappy"
    """Compression codec; JSON accepts `none` and `gzip`."""
    max_file_mb: float = Field(256.0, gt=0.0, le=256.0)
    """Largest data file, in MB (the platform's single-request upload limit is 256 MB)."""
    max_files: int = Field(10_000, ge=1, le=10_000)
    """Most data files in one folder (one ingestion batch)."""
    max_record_kb: float = Field(100.0, gt=0.0)
    """Records larger than this (as JSON) are rejected, counted and quarantined."""
    models: list[str] | None = None
    """Models whose scores are published. Default: the keys of `scoring.models`."""

    @model_validator(mode="after")
    def _codec_fits_format(self) -> PublishConfig:
        if self.format == "json" and self.compression not in ("none", "gzip"):
            raise ValueError(f"compression '{self.compression}' does not apply to json; choose none or gzip")
        return self


class AepConfig(_Section):
    ims_url: str = Field("https://ims-na1.adobelogin.com", pattern=r"^https?://[^\s/]+(/[^\s]*)?$")
    """Adobe IMS base URL (OAuth server-to-server tokens from `<ims_url>/ims/token/v3`)."""
    platform_url: str = Field("https://platform.adobe.io", pattern=r"^https?://[^\s/]+(/[^\s]*)?$")
    """Experience Platform API base URL."""
    org_id: str | None = Field(None, pattern=r"^[A-Za-z0-9]+@AdobeOrg$")
    """IMS organization id, `<id>@AdobeOrg` (Developer Console, project credentials)."""
    sandbox: str = Field("prod", pattern=r"^[a-z0-9-]+$")
    """Platform sandbox name (`x-sandbox-name`)."""
    dataset_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]+$")
    """Dataset the scores are ingested into (printed by `jobs/setup_aep.py`)."""
    client_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]+$")
    """OAuth server-to-server client id (also the `x-api-key`). The client secret is never a config
    key: it comes from `$AEP_CLIENT_SECRET` or the Databricks secret scope `aep.secret_scope`."""
    scopes: list[str] = Field(default_factory=lambda: [
        "openid", "AdobeID", "read_organizations", "additional_info.projectedProductContext", "session"],
        min_length=1)
    """OAuth scopes requested with the token (the project's credential lists them)."""
    secret_scope: str | None = None
    """Databricks secret scope holding the client secret under `aep.secret_key` (used when
    `$AEP_CLIENT_SECRET` is not set)."""
    secret_key: str = "client_secret"
    """Key of the client secret in `aep.secret_scope`."""
    upload_workers: int = Field(4, ge=1, le=64)
    """Files uploaded in parallel by `jobs/ingest.py`."""
    download_workers: int = Field(4, ge=1, le=64)
    """Files downloaded in parallel by `jobs/export_dataset.py`."""
    large_file_mb: float = Field(256.0, gt=0.0, le=256.0)
    """Files larger than this are uploaded in chunks (initialize, chunks, complete) instead of one PUT."""
    chunk_mb: float = Field(64.0, gt=0.0, le=256.0)
    """Chunk size of large-file uploads."""
    timeout_seconds: float = Field(120.0, gt=0.0)
    """Connect and read timeout of one HTTP request."""
    max_attempts: int = Field(8, ge=1, le=100)
    """Tries of one request on connection errors, timeouts, 429 and 5xx (with exponential backoff
    and jitter, honouring `Retry-After`)."""
    backoff_seconds: float = Field(1.0, ge=0.0)
    """First backoff; it doubles per attempt (capped by `max_backoff_seconds`), randomized by jitter."""
    max_backoff_seconds: float = Field(60.0, ge=0.0)
    """Longest single wait between tries."""
    max_retry_seconds: float = Field(900.0, gt=0.0)
    """Longest total time one request may spend retrying."""
    wait_minutes: float = Field(120.0, gt=0.0)
    """How long `jobs/ingest.py` waits for the batch's final status."""
    poll_seconds: float = Field(15.0, gt=0.0)
    """Interval between batch status checks."""
    field_group_title: str = "Profile enrichment insights"
    """Title of the tenant field group `jobs/setup_aep.py` creates (found by title on re-runs)."""
    schema_title: str = "Profile enrichment insights"
    """Title of the XDM Individual Profile schema `jobs/setup_aep.py` creates."""
    dataset_name: str = "Profile enrichment insights"
    """Name of the profile-enabled dataset `jobs/setup_aep.py` creates."""
    export_path: str | None = None
    """Where `jobs/export_dataset.py` writes: `<export_path>/<datasetId>/batchId=<batchId>/<file>`.
    Default `<lake>/raw`."""


Stage = Literal["generate", "features", "train", "score", "publish", "ingest"]
STAGES: tuple[str, ...] = Stage.__args__


class PipelineConfig(_Section):
    stages: list[Stage] = Field(default_factory=lambda: ["features", "train", "score", "publish"], min_length=1)
    """Stages `jobs/pipeline.py` runs, in this order: a subset of `generate`, `features`, `train`,
    `score`, `publish`, `ingest` in that order. `generate` writes synthetic data over the raw inputs,
    so only the demo lists it."""
    models: list[str] = Field(default_factory=lambda: [
        f"conf/models/{m}.yaml" for m in ("conversion", "churn", "clv", "clv_btyd", "affinity", "segments")],
        min_length=1)
    """Model config files the `train` stage trains (as `jobs/train.py --model`); `--model` replaces them."""

    @field_validator("stages")
    @classmethod
    def _in_order(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value) or value != sorted(value, key=STAGES.index):
            raise ValueError(f"stages must be distinct and in pipeline order ({', '.join(STAGES)}), got {value}")
        return value


class Config(_Section):
    lake: str = "./lake"
    """Root folder or URI of the Delta tables (features, scores, quarantine, ...)."""
    tenant: str = Field("_acme", pattern=r"^_[A-Za-z][A-Za-z0-9]*$")
    """XDM tenant namespace, with its leading underscore (e.g. `_acme`)."""
    as_of: dt.date | None = None
    """As-of date (YYYY-MM-DD, 00:00 UTC): features use only events strictly before it."""
    input: InputConfig = InputConfig()
    """Raw inputs."""
    spark: SparkConfig = SparkConfig()
    """Spark session."""
    mlflow: MlflowConfig = MlflowConfig()
    """MLflow tracking and registry."""
    quality: QualityConfig = QualityConfig()
    """Row checks and quarantine."""
    identity: IdentityConfig = IdentityConfig()
    """Identity resolution (events to profiles)."""
    features: FeaturesConfig = FeaturesConfig()
    """Feature table."""
    generate: GenerateConfig = GenerateConfig()
    """Synthetic data generator (`jobs/generate_data.py`)."""
    model: ModelConfig = ModelConfig()
    """The model `jobs/train.py` trains (one file per model under `conf/models/`)."""
    training: TrainingConfig = TrainingConfig()
    """Training sets and search."""
    promotion: PromotionConfig = PromotionConfig()
    """When a new model version becomes the champion."""
    scoring: ScoringConfig = ScoringConfig()
    """Which models `jobs/score.py` applies, their explanations and the drift guard."""
    publish: PublishConfig = PublishConfig()
    """Published XDM profile records (`jobs/publish.py`)."""
    aep: AepConfig = AepConfig()
    """Adobe Experience Platform: credentials (never the secret), ingestion, export and set-up."""
    pipeline: PipelineConfig = PipelineConfig()
    """The stages `jobs/pipeline.py` runs from this one config."""

    @field_validator("lake")
    @classmethod
    def _strip_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/") or value

    @property
    def events_path(self) -> str:
        return self.input.events.path or f"{self.lake}/raw/events"

    @property
    def snapshot_path(self) -> str:
        return self.input.snapshot.path or f"{self.lake}/raw/profile_snapshot"

    @property
    def truth_path(self) -> str:
        return self.generate.truth_path or f"{self.lake}/truth"

    @property
    def features_path(self) -> str:
        return f"{self.lake}/features"

    @property
    def scores_path(self) -> str:
        return f"{self.lake}/scores"

    @property
    def drift_path(self) -> str:
        return f"{self.lake}/drift"

    @property
    def export_path(self) -> str:
        return (self.aep.export_path or f"{self.lake}/raw").rstrip("/")

    def quarantine_path(self, source: str) -> str:
        return f"{self.lake}/quarantine/{source}"

    def as_of_dates(self) -> list[dt.date]:
        """The as-of dates a features run builds, from the most specific setting present."""
        f = self.features
        dates = _listed_dates(f.as_of_dates, f.as_of_start, f.as_of_end, f.as_of_step_days)
        if dates:
            return dates
        if self.as_of:
            return [self.as_of]
        raise ConfigError("no as-of date: set `as_of` (e.g. --set as_of=2025-12-01), "
                          "`features.as_of_dates`, or `features.as_of_start` and `features.as_of_end`")


# --------------------------------------------------------------------------------------------
# Loading


_ENV_PATTERN = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(value: str, env: Mapping[str, str], key: str) -> str:
    """Replace `${VAR}` and `${VAR:-default}` from `env`; `$$` is a literal `$`."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(
            f"config key '{key}': environment variable {name} is not set "
            f"(write ${{{name}:-default}} to give a default)"
        )

    return _ENV_PATTERN.sub(substitute, value)


def _interpolate_tree(node: Any, env: Mapping[str, str], path: str = "") -> Any:
    if isinstance(node, dict):
        return {k: _interpolate_tree(v, env, f"{path}.{k}" if path else str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate_tree(v, env, f"{path}[{i}]") for i, v in enumerate(node)]
    if isinstance(node, str):
        return interpolate(node, env, path)
    return node


def _merge(base: dict[str, Any], overlay: Mapping[str, Any], sources: dict[str, str], source: str,
           prefix: str = "") -> None:
    """Deep-merge `overlay` into `base` in place; mappings merge, everything else replaces."""
    for key, value in overlay.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value, sources, source, path)
        else:
            base[key] = copy.deepcopy(dict(value)) if isinstance(value, Mapping) else value
            for stale in [s for s in sources if s == path or s.startswith(path + ".")]:
                del sources[stale]
            sources[path] = source


def parse_set(item: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], value parsed as a YAML scalar)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected dotted.key=value")
    parts = key.strip().split(".")
    if any(not p for p in parts):
        raise ConfigError(f"--set {item!r}: empty part in key {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: value is not a YAML scalar: {exc}") from exc
    return parts, value


def locate(file: str | Path) -> Path:
    """A config or model file as named, or else by its base name in the working directory: where
    spark-submit's `--files` puts it for a driver on a cluster node (YARN and Kubernetes cluster
    deploy mode), so one command line works in client and cluster deploy mode."""
    path = Path(file)
    if path.is_file():
        return path
    shipped = Path.cwd() / path.name
    if shipped.is_file():
        logging.getLogger(__name__).info("config file %s: using %s (shipped with spark-submit --files)", path, shipped)
        return shipped
    raise ConfigError(f"config file {path}: not found (nor {path.name} in the working directory {Path.cwd()}, "
                      "where spark-submit --files puts it)")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot be read ({exc.strerror})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top, found {type(data).__name__}")
    return data


def load_config(
    files: Iterable[str | Path] = (),
    overrides: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
) -> Config:
    """Build the typed config: defaults, then each file in order, then each `--set` override.

    `${VAR}` / `${VAR:-default}` in any string value are taken from `env` (default: the process
    environment) after merging, so an overlay may refer to variables the base does not need.
    """
    env = os.environ if env is None else env
    tree: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for file in files:
        path = locate(file)
        _merge(tree, _read_yaml(path), sources, str(file))
    for item in overrides:
        parts, value = parse_set(item)
        nested: Any = value
        for part in reversed(parts):
            nested = {part: nested}
        _merge(tree, nested, sources, f"--set {item}")
    tree = _interpolate_tree(tree, env)
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, sources)) from None


def _describe(exc: ValidationError, sources: Mapping[str, str]) -> str:
    lines = []
    for error in exc.errors():
        key = ".".join(str(p) for p in error["loc"])
        origin = _source_of(key, sources)
        where = f" (from {origin})" if origin else ""
        if error["type"] == "extra_forbidden":
            lines.append(f"config key '{key}'{where}: unknown key{_suggest(error['loc'])}")
            continue
        value = error.get("input")
        message = error["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, "):]
        shown = "" if isinstance(value, dict) else f" = {value!r}"
        lines.append(f"config key '{key}'{shown}{where}: {message}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def _source_of(key: str, sources: Mapping[str, str]) -> str | None:
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        found = sources.get(".".join(parts[:end]))
        if found:
            return found
    return None


def _suggest(loc: tuple[Any, ...]) -> str:
    """Name the keys that are valid where an unknown one was found, closest first."""
    model: type[BaseModel] = Config
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    known = list(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f" (known here: {', '.join(known)}){hint}"


def iter_keys(model: type[BaseModel] = Config, prefix: str = "") -> Iterable[tuple[str, Any]]:
    """Every leaf key as (dotted path, field info): the catalogue the README documents."""
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from iter_keys(annotation, path + ".")
        else:
            yield path, field
