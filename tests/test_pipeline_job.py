"""jobs/pipeline.py: the stage list, --from/--to, and the run record written also when a stage fails.
(The whole pipeline runs end to end in tests/test_cluster.py, on a standalone cluster.)"""

from __future__ import annotations

import json

import pytest
from enrich.config import STAGES, load_config, locate
from enrich.errors import ConfigError
from enrich.jobs import pipeline as pipeline_job
from pipeline import run


def test_from_and_to_pick_a_slice_of_the_configured_stages():
    assert pipeline_job.selected(STAGES, None, None) == list(STAGES)
    assert pipeline_job.selected(STAGES, "train", "publish") == ["train", "score", "publish"]
    assert pipeline_job.selected(["features", "score"], "score", None) == ["score"]
    with pytest.raises(ConfigError, match=r"--from train: not one of pipeline.stages \(features, score\)"):
        pipeline_job.selected(["features", "score"], "train", None)
    with pytest.raises(ConfigError, match="--to features comes before --from score"):
        pipeline_job.selected(STAGES, "score", "features")


def test_stages_must_be_known_distinct_and_in_order():
    assert load_config().pipeline.stages == ["features", "train", "score", "publish"]
    with pytest.raises(ConfigError, match="stages must be distinct and in pipeline order"):
        load_config(overrides=["pipeline.stages=[score, features]"])
    with pytest.raises(ConfigError, match=r"pipeline\.stages\.1"):
        load_config(overrides=["pipeline.stages=[features, deploy]"])


def test_a_failed_stage_is_recorded_and_its_exit_code_returned(spark, tmp_path):
    lake = tmp_path / "lake"
    args = ["--set", f"lake={lake}", "--set", "pipeline.stages=[features, train]", "--set", "as_of=2025-06-01"]
    code, out, err = run(pipeline_job, args)
    assert code == 3, err
    assert "pipeline: error:" in err and "raw/events" in err
    [record_file] = (lake / "runs").glob("*.json")
    record = json.loads(record_file.read_text())
    assert record["status"] == "failed" and record["error"].startswith("features: ")
    assert [(s["stage"], s["status"]) for s in record["stages"]] == [("features", "failed")]
    assert record["application"]["id"] == spark.sparkContext.applicationId
    assert "features  failed" in out and str(record_file) in out
    # score needs a date: refused before any stage runs, no record
    code, _, err = run(pipeline_job, ["--set", f"lake={tmp_path / 'other'}", "--from", "score"])
    assert code == 2 and "the score and publish stages need `as_of`" in err
    assert not (tmp_path / "other").exists()


def test_a_shipped_config_is_found_by_its_name_in_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "cluster.yaml").write_text("lake: /data/lake\n")
    monkeypatch.chdir(tmp_path)
    assert locate("/opt/somewhere/else/cluster.yaml") == tmp_path / "cluster.yaml"
    assert load_config(["/opt/somewhere/else/cluster.yaml"]).lake == "/data/lake"
    with pytest.raises(ConfigError, match=r"config file /opt/nope\.yaml: not found"):
        load_config(["/opt/nope.yaml"])
