"""The jobs where users run them: spark-submit.sh against a real Spark standalone cluster (a master
and two workers on 127.0.0.1, separate JVMs and Python workers), MLflow on a real tracking server,
the whole pipeline in one application; its outputs must equal the local-mode run of the same data
and seed (the shared `trained`/`scored` pipeline)."""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from enrich import tables
from frames import assert_same_rows
from mlflow.tracking import MlflowClient
from pipeline import DATES, DAY, FASTER, FEWER, GEN, ROOT, TRAIN
from pyspark.sql import functions as F

_spec = importlib.util.spec_from_file_location("cluster_tool", ROOT / "tools" / "cluster.py")
cluster_tool = importlib.util.module_from_spec(_spec)
sys.modules["cluster_tool"] = cluster_tool  # dataclasses look their module up there
_spec.loader.exec_module(cluster_tool)

SUBMIT = str(ROOT / "spark-submit.sh")


def submit(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "PYSPARK_GATEWAY_PORT"}  # not this test's gateway
    return subprocess.run([SUBMIT, *args], env={**base, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout, check=False, cwd=ROOT)


def fake_spark_home(root: Path, script: str) -> str:
    """A SPARK_HOME whose bin/spark-submit is `script` (shell)."""
    (root / "spark" / "bin").mkdir(parents=True)
    submit_file = root / "spark" / "bin" / "spark-submit"
    submit_file.write_text(f"#!/bin/sh\n{script}\n")
    submit_file.chmod(0o755)
    return str(root / "spark")


def test_help_and_errors_before_anything_is_submitted(tmp_path):
    shown = submit("--help")
    assert shown.returncode == 0 and "usage: ./spark-submit.sh <job>" in shown.stdout
    assert "pipeline" in shown.stdout and "SPARK_MASTER" in shown.stdout
    # A spark-submit that would fail loudly if it were reached.
    env = {"SPARK_HOME": fake_spark_home(tmp_path, "echo SUBMITTED >&2\nexit 99")}
    unknown = submit("featurez", env=env)
    assert unknown.returncode == 2 and "unknown job 'featurez'; one of:" in unknown.stderr
    assert "build_features" in unknown.stderr and "SUBMITTED" not in unknown.stderr
    missing = submit("build_features", "--config", "conf/base.yaml", "--config", "conf/nope.yaml", env=env)
    assert missing.returncode == 2 and "--config conf/nope.yaml: no such file" in missing.stderr
    assert "SUBMITTED" not in missing.stderr
    clash = tmp_path / "base.yaml"
    clash.write_text("lake: ./lake\n")
    twice = submit("build_features", "--config", "conf/base.yaml", f"--config={clash}", env=env)
    assert twice.returncode == 2 and "same name (base.yaml)" in twice.stderr


def test_the_arguments_reach_spark_submit(tmp_path):
    """What the script hands spark-submit: the wheel, the shipped files, Delta, master and extras."""
    env = {"SPARK_HOME": fake_spark_home(tmp_path, 'for a in "$@"; do echo "$a"; done'),
           "SPARK_MASTER": "yarn", "DEPLOY_MODE": "cluster",
           "SPARK_SUBMIT_ARGS": "--conf spark.executor.memory=3g"}
    done = submit("train", "--config", "conf/base.yaml", "--model", "conf/models/churn.yaml", "--set", "a=b",
                  env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    argv = done.stdout.splitlines()
    after = dict(itertools.pairwise(argv))
    assert after["--master"] == "yarn" and after["--deploy-mode"] == "cluster"
    assert after["--py-files"].endswith(".whl") and Path(after["--py-files"]).is_file()
    assert after["--files"].split(",") == [str(ROOT / "conf/base.yaml"), str(ROOT / "conf/models/churn.yaml")]
    assert "delta-spark_2.13" in after["--jars"]
    assert after["--conf"] == "spark.executor.memory=3g"
    # The job and its own arguments come last, unchanged.
    assert argv[-7:] == [str(ROOT / "jobs/train.py"), "--config", "conf/base.yaml", "--model",
                         "conf/models/churn.yaml", "--set", "a=b"]
    # The pipeline without --model trains pipeline.models: conf/models/, shipped for it.
    shipped = submit("pipeline", "--config", "conf/base.yaml", env=env).stdout.splitlines()
    files = shipped[shipped.index("--files") + 1].split(",")
    assert files == [str(ROOT / "conf/base.yaml"), *sorted(str(p) for p in (ROOT / "conf/models").glob("*.yaml"))]
    packages = submit("train", env={**env, "DELTA_PACKAGES": "1"}).stdout.splitlines()
    assert packages[packages.index("--packages") + 1].startswith("io.delta:delta-spark_2.13:")
    # Built once: a second submission with no source change reuses the wheel.
    assert "building" not in submit("train", env=env).stderr


def test_a_stale_state_file_never_stops_other_programs(tmp_path):
    """After a reboot the recorded ids may be other programs' process groups: they are left alone."""
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        cluster_tool.Cluster(folder=str(tmp_path), pids=[other.pid]).save()
        assert cluster_tool.down(tmp_path) == []
        assert other.poll() is None and not (tmp_path / "cluster.json").exists()
    finally:
        other.kill()
        other.wait()


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    # A narrow terminal: `ps` then cuts command lines at 80 columns unless told not to, and the
    # daemons must still be recognised as this cluster's.
    monkeypatch.setenv("COLUMNS", "80")
    folder = tmp_path / "cluster"
    started = cluster_tool.up(folder, workers=2, cores=1, memory="2g")
    try:
        yield started
    finally:
        stopped = cluster_tool.down(folder)
        assert sorted(stopped) == sorted(started.pids) and len(stopped) == 3
        assert not started.running(verify=False), "a daemon or executor of the cluster is still running"


@pytest.mark.slow
def test_the_pipeline_on_a_standalone_cluster_equals_local_mode(spark, trained, scored, cluster, mlflow_server):
    root, *_ = scored
    local_clv = trained[2]["clv"]
    url, served = mlflow_server
    lake, outbox = Path(cluster.folder).parent / "lake", Path(cluster.folder).parent / "outbox"
    env = {
        "SPARK_MASTER": cluster.master_url, "ENRICH_LAKE": str(lake), "MLFLOW_TRACKING_URI": url,
        "SPARK_LOCAL_IP": "127.0.0.1",
        # As the local run: two cores, two shuffle partitions, Delta's table state rebuilt with two
        # tasks (its default, 50, took 33s of this run's 236s of jobs in 1,500 tasks); small
        # executors for a small machine. The driver and both executors JIT-compile with C1 only, to
        # spare three short-lived JVMs on small data sharing two cores C2's compiling: the pipeline
        # alone took 202s with it and 231s without (257-299s in full suites with it, 246-388s
        # without, before the snapshot setting).
        "SPARK_SUBMIT_ARGS": "--conf spark.sql.shuffle.partitions=2 --conf spark.executor.memory=1g "
                             "--conf spark.databricks.delta.snapshotPartitions=2 --conf spark.log.level=WARN "
                             "--conf spark.driver.extraJavaOptions=-XX:TieredStopAtLevel=1 "
                             "--conf spark.executor.extraJavaOptions=-XX:TieredStopAtLevel=1",
    }
    done = submit(
        "pipeline", "--config", "conf/base.yaml", "--config", "conf/cluster.yaml",
        "--set", "pipeline.stages=[generate, features, train, score, publish]",
        *GEN, "--set", f"features.as_of_dates={DATES}", *TRAIN, "--model", "conf/models/clv.yaml",
        *[a for o in FASTER["clv"] for a in ("--set", o)],
        "--set", f"as_of={DAY}", "--set", "scoring.models={clv: champion}", *FEWER,
        "--set", f"publish.outbox={outbox}", "--allow-drift",
        env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-5000:]
    assert "pipeline: run" in done.stdout and " done" in done.stdout

    # The run record: every stage done, and where the work ran.
    [record_file] = (lake / "runs").glob("*.json")
    record = json.loads(record_file.read_text())
    assert [(s["stage"], s["status"]) for s in record["stages"]] == [
        (s, "done") for s in ("generate", "features", "train", "score", "publish")]
    app = record["application"]
    assert app["master"] == cluster.master_url
    executors = {e["id"]: e for e in record["executors"] if e["id"] != "driver"}
    assert len(executors) == 2 and all(e["totalTasks"] > 0 for e in executors.values()), executors
    # ... one on each worker, from the workers' own status.
    hosted = [{e["id"] for e in w["finishedexecutors"] + w["executors"] if e["appid"] == app["id"]}
              for w in cluster.workers()]
    assert sorted(str(i) for h in hosted for i in h) == sorted(executors) and all(len(h) == 1 for h in hosted)
    assert any(a["id"] == app["id"] for a in cluster.master()["completedapps"])

    # Same data, same features, same model, same scores as the local-mode run.
    local = f"{root}/lake"
    for table in ("raw/events", "features"):
        assert_same_rows(tables.read(spark, f"{lake}/{table}", "delta"),
                         tables.read(spark, f"{local}/{table}", "delta"))
    key = ["profile_id"]
    mine = tables.read(spark, f"{lake}/scores", "delta").where(F.col("score_date") == F.lit(DAY))
    theirs = (tables.read(spark, f"{local}/scores", "delta")
              .where((F.col("score_date") == F.lit(DAY)) & (F.col("model") == "clv")))
    both = mine.select(*key, F.col("prediction").alias("a")).join(
        theirs.select(*key, F.col("prediction").alias("b")), key, "full_outer")
    worst = both.select(F.max(F.abs(F.col("a") - F.col("b")) / F.greatest(F.abs("b"), F.lit(1.0))).alias("d"),
                        F.count_if(F.col("a").isNull() | F.col("b").isNull()).alias("unmatched"),
                        F.count(F.lit(1)).alias("n")).first()
    assert worst["n"] == theirs.count() > 100 and worst["unmatched"] == 0
    assert worst["d"] < 1e-6, worst

    # The model went through the tracking server: registered there, its files in the served store.
    client = MlflowClient(tracking_uri=url, registry_uri=url)
    champion = client.get_model_version_by_alias("clv", "champion")
    metric = client.get_run(champion.run_id).data.metrics[local_clv.metric]
    assert metric == pytest.approx(local_clv.value, rel=1e-6)
    assert any(served.rglob("MLmodel"))
    # Published: one record per scored profile, in the outbox the config named.
    [manifest] = outbox.rglob("manifest.json")
    assert json.loads(manifest.read_text())["rows"] == worst["n"]
