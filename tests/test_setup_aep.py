"""Platform set-up against the loopback sandbox: field group, Profile-enabled schema and dataset are
created once and found by title afterwards; mismatches are clear errors; dry-run sends nothing."""

from __future__ import annotations

import json

import pytest
from aep import config
from enrich import publish
from enrich.aep import setup
from enrich.aep.sandbox import IDENTITY_MAP, PROFILE_CLASS
from enrich.errors import ConfigError
from enrich.jobs import setup_aep as setup_job
from pipeline import run
from pyspark.sql.types import DoubleType, IntegerType, StringType, StructField, StructType


def _field_group(tmp_path):
    model = StructType([StructField("score", IntegerType()), StructField("probability", DoubleType()),
                        StructField("modelVersion", StringType())])
    records = StructType([StructField("_acme", StructType([StructField("insights", StructType([
        StructField("conversion", model), StructField("churn", model)]))]))])
    path = tmp_path / "xdm-fieldgroup.json"
    path.write_text(json.dumps(publish.field_group(records, "_acme")))
    return path


def test_setup_creates_once_then_finds_by_title(box, tmp_path, monkeypatch):
    monkeypatch.setenv("AEP_CLIENT_SECRET", box.secret)
    cfg = config(box, None)
    group = _field_group(tmp_path)
    box.fault("POST", "/catalog/dataSets$", "lost")  # created, answer lost: found, not made twice
    box.fault("POST", "/tenant/schemas$", "drop")  # cut before it was read: made on the next ask
    first = setup_job.run(cfg, str(group))
    assert first.created == ["field group", "schema", "Profile enablement of the schema", "dataset"]
    schema = box.schemas[first.schema]
    assert [p["$ref"] for p in schema["allOf"]] == [PROFILE_CLASS, first.field_group, IDENTITY_MAP]
    assert schema["meta:immutableTags"] == ["union"]
    fg = box.fieldgroups[first.field_group]
    assert fg["title"] == cfg.aep.field_group_title
    assert set(fg["definitions"]["insights"]["properties"]["_acme"]["properties"]["insights"]["properties"]) == {
        "conversion", "churn"}
    dataset = box.datasets[first.dataset]
    assert dataset["schemaRef"]["id"] == first.schema
    assert dataset["tags"] == {"unifiedProfile": ["enabled:true"], "unifiedIdentity": ["enabled:true"]}
    assert f"aep.dataset_id: {first.dataset}" in first.render()

    def writes():
        return [r for r in box.requests if r[0] in ("POST", "PATCH") and r[1] != "/ims/token/v3"]

    posts = len(writes())
    second = setup_job.run(cfg, str(group))
    assert second.created == []
    assert (second.field_group, second.schema, second.dataset) == (first.field_group, first.schema, first.dataset)
    assert len(writes()) == posts
    assert len(box.fieldgroups) == len(box.schemas) == 1 and len(box.datasets) == 1

    # A dataset made by hand without Profile is enabled, not duplicated.
    box.datasets[first.dataset]["tags"] = {}
    third = setup_job.run(cfg, str(group))
    assert third.created == ["Profile enablement of the dataset"] and third.dataset == first.dataset
    assert box.datasets[first.dataset]["tags"]["unifiedProfile"] == ["enabled:true"]


def test_setup_refuses_a_foreign_tenant_and_unknown_namespaces(box, tmp_path, monkeypatch):
    monkeypatch.setenv("AEP_CLIENT_SECRET", box.secret)
    group = _field_group(tmp_path)
    with pytest.raises(ConfigError, match="tenant id is _acme, the config says tenant=_other"):
        setup_job.run(config(box, None, "tenant=_other"), str(group))
    with pytest.raises(ConfigError, match=r"namespace\(s\) \['LoyaltyId'\]"):
        setup_job.run(config(box, None, "identity.namespace_priority=[CRMID, LoyaltyId]"), str(group))
    assert not box.fieldgroups and not box.schemas and not box.datasets


def test_dry_run_prints_the_requests_and_sends_none(box, tmp_path, monkeypatch):
    monkeypatch.delenv("AEP_CLIENT_SECRET", raising=False)
    args = [arg for s in box.settings() for arg in ("--set", s)]
    code, out, err = run(setup_job, [*args, "--field-group", str(_field_group(tmp_path)), "--dry-run"])
    assert code == 0, err
    assert "POST" in out and "/tenant/fieldgroups" in out and "/catalog/dataSets" in out
    assert "2 model object(s) (churn, conversion) under _acme" in out
    assert not box.requests
    assert setup.plan_requests(config(box, None), json.loads(_field_group(tmp_path).read_text()))[0].startswith("GET")
