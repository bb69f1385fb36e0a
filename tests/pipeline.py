"""The trained pipeline the job tests share: generated data, features for three dates, and one
training run of all six models into a sqlite MLflow store (built once per test session)."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
from pathlib import Path

import mlflow
from enrich import tables
from enrich.config import load_config
from enrich.jobs import build_features, generate_data
from enrich.jobs import score as score_job
from enrich.jobs import train as train_job
from pyspark.sql import functions as F

ROOT = Path(__file__).resolve().parent.parent
MODELS = ["conversion", "churn", "clv", "clv_btyd", "affinity", "segments"]  # clv_btyd after clv: compared with it
GEN = ["--set", "generate.profiles=2500", "--set", "generate.start_date=2025-01-01",
       "--set", "generate.end_date=2025-08-01", "--set", "generate.seed=11"]
DATES = "[2025-05-01, 2025-06-01, 2025-07-01]"
TRAIN = ["--set", f"training.as_of_dates={DATES}", "--set", "training.min_positives=40",
         "--set", "training.min_negatives=40"]
# Smaller settings for this small data, per model; the conversion model also searches a grid (a
# CrossValidator whose folds are the two fitting dates).
FASTER = {"conversion": ["model.params.maxIter=15", "model.grid.maxDepth=[2, 4]"],
          "churn": ["model.params.numTrees=30"], "clv": ["model.params.maxIter=15"], "clv_btyd": [], "affinity": [],
          "segments": ["model.k_range=[3, 4]"]}
DAY = dt.date(2025, 8, 1)  # scored: after the training dates; its features are built by the scoring job
FEWER = ["--set", "scoring.factor_candidates=5"]  # each candidate is one more pass of the model
SEGMENTS = ["--config", str(ROOT / "conf/models/segments.yaml"), "--set", "model.k_range=[3, 4]"]


def run(job, args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = job.main(args)
    return code, out.getvalue(), err.getvalue()


def model_files() -> list[str]:
    return [arg for name in MODELS for arg in ("--model", str(ROOT / "conf" / "models" / f"{name}.yaml"))]


def train_all(spark, root: Path):
    """Data, features for three dates, and one run training all six models into a sqlite store."""
    lake = ["--set", f"lake={root / 'lake'}"]
    store = ["--set", f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}",
             "--set", f"mlflow.artifact_root={root / 'artifacts'}"]
    assert run(generate_data, [*GEN, *lake])[0] == 0
    code, _, err = run(build_features, [*GEN, *lake, "--set", f"features.as_of_dates={DATES}"])
    assert code == 0, err
    args = [*GEN, *lake, *store, *TRAIN]
    configs = [(load_config([f], [*args[1::2], *FASTER[Path(f).stem]]), f) for f in model_files()[1::2]]
    summaries = {s.name: s for s in train_job.run(spark, configs, "auto")}
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    mlflow.set_registry_uri(f"sqlite:///{root / 'mlflow.db'}")
    return root, args, summaries




def score_all(spark, trained):
    """The champions of `train_all` score DAY (building its features) into the same lake."""
    root, args, _ = trained
    code, out, err = run(score_job, [*args, "--set", f"as_of={DAY}", *FEWER])
    assert code == 0, err
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    scores = tables.read(spark, f"{root}/lake/scores", "delta").where(F.col("score_date") == F.lit(DAY))
    return root, args, out, client, scores
