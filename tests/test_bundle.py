"""The Databricks asset bundle (databricks.yml) against the code: every wheel task names an entry
point the package exposes, every parameter is one that job's argument parser accepts, every config
file it names exists and, with the job cluster's environment, makes a valid config."""

from __future__ import annotations

import re
from importlib.metadata import entry_points

import pytest
import yaml
from enrich.config import load_config
from enrich.jobs import cli
from pipeline import ROOT

BUNDLE = yaml.safe_load((ROOT / "databricks.yml").read_text())
JOB = BUNDLE["resources"]["jobs"]["profile_enrichment"]
TASKS = {t["task_key"]: t for t in JOB["tasks"]}
WHEEL_TASKS = [t for t in JOB["tasks"] if "python_wheel_task" in t]
SAMPLE = {"job.parameters.as_of": "2026-01-01", "job.start_time.iso_date": "2026-01-01"}
# What a deployment supplies for the variables that have no default.
DEPLOY = {"aep_org_id": "0123456789ABCDEF@AdobeOrg", "aep_client_id": "a1b2c3", "aep_dataset_id": "64f0c0ffee"}


def variable(name: str) -> str:
    spec = BUNDLE["variables"][name]
    return str(spec["default"]) if "default" in spec else DEPLOY[name]


def resolve(value: str) -> str:
    """A parameter as the job sees it: bundle variables and workspace paths substituted, dynamic
    value references given sample values."""
    value = value.replace("${workspace.file_path}", str(ROOT))
    value = re.sub(r"\$\{var\.(\w+)\}", lambda m: variable(m.group(1)), value)
    value = re.sub(r"\{\{([\w.]+)\}\}", lambda m: SAMPLE[m.group(1)], value)
    assert "${" not in value and "{{" not in value, value
    return value


def console_scripts() -> dict[str, str]:
    return {e.name: e.value for e in entry_points(group="console_scripts") if e.value.startswith("enrich.")}


def test_setup_exposes_an_entry_point_for_every_job():
    scripts = console_scripts()
    jobs = {p.stem for p in (ROOT / "jobs").glob("*.py")}
    modules = {v.split(":")[0].rsplit(".", 1)[1] for v in scripts.values() if v.startswith("enrich.jobs.")}
    assert jobs <= modules, f"jobs without a console entry point: {jobs - modules}"
    setup_text = (ROOT / "setup.py").read_text()
    assert all(f'"{name}={value}"' in setup_text for name, value in scripts.items()), "install is stale: make setup"


@pytest.mark.parametrize("task", WHEEL_TASKS, ids=[t["task_key"] for t in WHEEL_TASKS])
def test_every_wheel_task_runs_a_job_that_accepts_its_parameters(task, monkeypatch):
    wheel = task["python_wheel_task"]
    assert wheel["package_name"] == "profile_enrichment"
    assert task["libraries"] == [{"whl": "./dist/*.whl"}]
    assert task["job_cluster_key"] in {c["job_cluster_key"] for c in JOB["job_clusters"]}
    target = console_scripts()[wheel["entry_point"]]
    module, func = target.split(":")
    main = getattr(__import__(module, fromlist=[func]), func)

    # The job's own parser, as its entry point builds it; nothing runs.
    seen = {}

    def capture(prog, argv, args_parser, run, needs_spark=True):
        seen["args"] = args_parser.parse_args(argv)  # an unknown option exits non-zero here
        return 0

    monkeypatch.setattr(cli, "run_job", capture)
    monkeypatch.setattr(f"{module}.run_job", capture)
    argv = [resolve(p) for p in wheel["parameters"]]
    assert main(argv) == 0
    args = seen["args"]

    env = {**JOB["job_clusters"][0]["new_cluster"]["spark_env_vars"]}
    env = {k: resolve(v) for k, v in env.items()}
    files = [*args.config, *getattr(args, "model", [])]
    assert files and all((ROOT / f).is_file() for f in files), files
    for model in getattr(args, "model", []) or [None]:
        cfg = load_config([*args.config, *([model] if model else [])], args.overrides, env=env)
        assert cfg.spark.mode == "databricks" and cfg.mlflow.tracking_uri == "databricks"
        assert cfg.lake == f"/Volumes/{env['ENRICH_CATALOG']}/{env['ENRICH_SCHEMA']}/{env['ENRICH_VOLUME']}"
        assert cfg.publish.outbox.startswith(cfg.lake)
    if wheel["entry_point"] in {"enrich-score", "enrich-publish"} or task["task_key"] == "features":
        assert cfg.as_of is not None
    if wheel["entry_point"] in {"enrich-features", "enrich-train"}:
        assert cfg.as_of_dates() if wheel["entry_point"] == "enrich-features" else cfg.training.dates()
    if wheel["entry_point"] == "enrich-ingest":  # everything the platform client needs but the secret
        assert cfg.aep.org_id and cfg.aep.client_id and cfg.aep.dataset_id and cfg.aep.secret_scope


def test_the_tasks_run_in_pipeline_order():
    def after(key):
        return {d["task_key"] for d in TASKS[key].get("depends_on", [])}

    trains = {k for k in TASKS if k.startswith("train_")}
    assert {k.removeprefix("train_") for k in trains} == {p.stem for p in (ROOT / "conf/models").glob("*.yaml")}
    assert after("features") == set()
    assert all(after(k) == {"training_features"} for k in trains)  # in parallel, behind the weekday condition
    assert after("training_features") == {"training_day"} and after("training_day") == {"features"}
    # The training dates' features are built before the models that fit on them.
    def dates(key, setting):
        params = TASKS[key]["python_wheel_task"]["parameters"]
        return {p.split("=", 1)[1] for p in params if p.startswith(f"{setting}=")}

    assert all(dates(k, "training.as_of_dates") == dates("training_features", "features.as_of_dates") != set()
               for k in trains)
    assert after("score") == {"features", *trains} and TASKS["score"]["run_if"] == "NONE_FAILED"
    assert after("publish") == {"score"} and after("ingest") == {"publish"}
    condition = TASKS["training_day"]["condition_task"]
    assert condition == {"op": "EQUAL_TO", "left": "{{job.start_time.iso_weekday}}",
                         "right": "{{job.parameters.training_weekday}}"}
    params = {p["name"] for p in JOB["parameters"]}
    assert {"as_of", "training_weekday"} <= params
    assert JOB["schedule"]["quartz_cron_expression"] and {"dev", "prod"} <= set(BUNDLE["targets"])
    assert BUNDLE["artifacts"]["wheel"]["type"] == "whl"
