"""Config: overlays, --set, ${ENV} interpolation, and errors that name key, value and expectation."""

from __future__ import annotations

import datetime as dt
import re
import sys
from pathlib import Path

import pytest
from enrich.config import Config, interpolate, iter_keys, load_config, parse_set
from enrich.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_are_the_local_setup():
    cfg = load_config(env={})
    assert cfg.lake == "./lake"
    assert cfg.events_path == "./lake/raw/events"
    assert cfg.snapshot_path == "./lake/raw/profile_snapshot"
    assert cfg.truth_path == "./lake/truth"
    assert cfg.mlflow.tracking_uri == "sqlite:///mlflow.db"
    assert cfg.spark.mode == "auto"


def test_later_files_overlay_earlier_ones_and_mappings_merge(tmp_path):
    base = write(tmp_path, "base.yaml", "lake: /data/lake\ngenerate:\n  profiles: 10\n  seed: 7\n")
    over = write(tmp_path, "over.yaml", "generate:\n  profiles: 99\ninput:\n  events:\n    format: json\n")
    cfg = load_config([base, over], env={})
    assert cfg.lake == "/data/lake"
    assert cfg.generate.profiles == 99  # overlaid
    assert cfg.generate.seed == 7  # kept from base: mappings merge, they do not replace
    assert cfg.input.events.format == "json"
    assert cfg.events_path == "/data/lake/raw/events"


def test_set_overrides_files_and_parses_yaml_scalars(tmp_path):
    base = write(tmp_path, "base.yaml", "generate:\n  profiles: 10\n")
    cfg = load_config([base], ["generate.profiles=250", "as_of=2025-06-01", "generate.dirty_fraction=0"], env={})
    assert cfg.generate.profiles == 250
    assert cfg.as_of == dt.date(2025, 6, 1)
    assert cfg.generate.dirty_fraction == 0.0


@pytest.mark.parametrize("item", ["nokey", "=1", "a..b=1"])
def test_malformed_set_is_an_error(item):
    with pytest.raises(ConfigError, match=re.escape(repr(item))):
        parse_set(item)


def test_env_interpolation_with_and_without_default(tmp_path):
    path = write(tmp_path, "c.yaml", "lake: ${LAKE_ROOT}/lake\nmlflow:\n  tracking_uri: ${MLF:-http://127.0.0.1:5000}\n")
    cfg = load_config([path], env={"LAKE_ROOT": "s3://bucket"})
    assert cfg.lake == "s3://bucket/lake"
    assert cfg.mlflow.tracking_uri == "http://127.0.0.1:5000"
    cfg = load_config([path], env={"LAKE_ROOT": "/x", "MLF": "databricks"})
    assert cfg.mlflow.tracking_uri == "databricks"


def test_missing_env_var_names_key_and_variable(tmp_path):
    path = write(tmp_path, "c.yaml", "lake: ${LAKE_ROOT}/lake\n")
    with pytest.raises(ConfigError, match=r"config key 'lake': environment variable LAKE_ROOT is not set"):
        load_config([path], env={})


def test_dollar_dollar_is_a_literal_dollar():
    assert interpolate("cost $$5 ${A}", {"A": "x"}, "k") == "cost $5 x"


def test_unknown_key_is_named_with_its_source_and_a_suggestion(tmp_path):
    path = write(tmp_path, "c.yaml", "generate:\n  profile: 10\n")
    with pytest.raises(ConfigError) as err:
        load_config([path], env={})
    message = str(err.value)
    assert "config key 'generate.profile'" in message
    assert f"(from {path})" in message
    assert "did you mean 'profiles'?" in message


def test_wrong_type_names_key_value_and_expectation():
    expected = r"config key 'generate.profiles' = 'many' \(from --set generate.profiles=many\): Input should be a valid"
    with pytest.raises(ConfigError, match=expected):
        load_config([], ["generate.profiles=many"], env={})


def test_out_of_range_value_is_an_error():
    with pytest.raises(ConfigError, match=r"config key 'generate.dirty_fraction' = 0.9 .*less than or equal to 0.5"):
        load_config([], ["generate.dirty_fraction=0.9"], env={})


def test_invalid_choice_and_pattern_are_errors():
    with pytest.raises(ConfigError, match=r"'input.events.format' = 'csv'.*'parquet', 'json' or 'delta'"):
        load_config([], ["input.events.format=csv"], env={})
    with pytest.raises(ConfigError, match=r"'tenant' = 'acme'.*should match pattern"):
        load_config([], ["tenant=acme"], env={})


def test_btyd_model_settings_are_checked():
    cfg = load_config([CONF / "models" / "clv_btyd.yaml"], env={})
    m = cfg.model
    assert (m.kind, m.estimator, m.active_require) == ("clv_btyd", "bgnbd_gamma_gamma", "customer")
    assert (m.btyd_param("penalizer"), m.btyd_param("max_summaries")) == (0.0, 5_000_000)
    assert (m.clv.months, m.clv.monthly_discount, m.clv.margin) == (12, 0.01, 1.0)
    with pytest.raises(ConfigError, match=r"takes params penalizer, max_summaries and no grid; got \['maxIter'\]"):
        load_config([CONF / "models" / "clv_btyd.yaml"], ["model.params.maxIter=4"], env={})
    with pytest.raises(ConfigError, match=r"params.penalizer must be a number >= 0"):
        load_config([CONF / "models" / "clv_btyd.yaml"], ["model.params.penalizer=-1"], env={})
    with pytest.raises(ConfigError, match=r"algorithm 'gbt' does not train a clv_btyd model"):
        load_config([CONF / "models" / "clv_btyd.yaml"], ["model.algorithm=gbt"], env={})
    with pytest.raises(ConfigError, match=r"model.clv.margin"):
        load_config([CONF / "models" / "clv_btyd.yaml"], ["model.clv.margin=1.5"], env={})


def test_cross_field_rule_on_dates():
    with pytest.raises(ConfigError, match=r"generate.end_date \(2025-01-01\) must be after generate.start_date"):
        load_config([], ["generate.start_date=2025-02-01", "generate.end_date=2025-01-01"], env={})


def test_every_error_is_reported_at_once():
    with pytest.raises(ConfigError) as err:
        load_config([], ["generate.profiles=0", "tenant=bad", "nope=1"], env={})
    message = str(err.value)
    assert "generate.profiles" in message and "tenant" in message and "'nope'" in message


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.yaml: not found \(nor missing\.yaml in the working directory"):
        load_config([tmp_path / "missing.yaml"], env={})
    bad = write(tmp_path, "bad.yaml", "lake: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML"):
        load_config([bad], env={})
    listy = write(tmp_path, "list.yaml", "- a\n- b\n")
    with pytest.raises(ConfigError, match=r"list.yaml: expected a mapping at the top, found list"):
        load_config([listy], env={})


def test_config_is_immutable():
    cfg = load_config(env={})
    with pytest.raises(Exception, match="frozen"):
        cfg.generate.profiles = 5  # type: ignore[misc]


def test_shipped_overlays_are_valid():
    env = {"ENRICH_LAKE": "hdfs:///lake", "MLFLOW_TRACKING_URI": "http://mlflow:5000"}
    local = load_config([CONF / "base.yaml", CONF / "local.yaml"], env=env)
    # base + local spell out the embedded defaults: running with or without them is the same.
    assert local.model_dump() == Config(spark={"mode": "local"}).model_dump()
    cluster = load_config([CONF / "base.yaml", CONF / "cluster.yaml"], env=env)
    assert cluster.lake == "hdfs:///lake"
    assert cluster.events_path == "hdfs:///lake/raw/events"
    assert cluster.mlflow.tracking_uri == "http://mlflow:5000"
    databricks = load_config([CONF / "base.yaml", CONF / "databricks.yaml"], env={})
    assert databricks.lake == "/Volumes/main/profile_enrichment/lake"
    assert databricks.mlflow.tracking_uri == "databricks"
    sandbox = load_config([CONF / "base.yaml", CONF / "aep-sandbox.yaml"], env={})
    assert sandbox.aep.platform_url == sandbox.aep.ims_url == "http://127.0.0.1:8765"
    assert sandbox.aep.dataset_id == "insights"


def test_readme_documents_every_key():
    readme = (ROOT / "README.md").read_text()
    missing = [key for key, _ in iter_keys() if f"| `{key}` |" not in readme]
    assert not missing, f"README.md does not document: {missing}"
    sys.path.insert(0, str(ROOT / "tools"))
    from config_table import render_into

    assert render_into(readme) == readme, "README config table is stale: run 'make docs'"
