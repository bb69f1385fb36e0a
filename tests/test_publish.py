"""Published records and folders: the XDM contract, file sizing, atomicity, checksums, drift gate."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
from pathlib import Path

import pytest
from enrich import publish, score, tables
from enrich.config import load_config
from enrich.errors import ConfigError, InputError
from enrich.jobs import publish as publish_job
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DateType,
    DecimalType,
    DoubleType,
    IntegerType,
    MapType,
    StringType,
    StructField,
    StructType,
)
from pyspark.testing import assertSchemaEqual

DAY = dt.date(2026, 1, 1)
FACTOR = StructType([StructField("feature", StringType()), StructField("value", DoubleType()),
                     StructField("importance", DoubleType())])
INSIGHT = StructType([
    StructField("score", IntegerType()), StructField("probability", DoubleType()),
    StructField("percentile", IntegerType()), StructField("decile", IntegerType()),
    StructField("prediction", DoubleType()), StructField("pAlive", DoubleType()),
    StructField("expectedPurchases", DoubleType()), StructField("factors", ArrayType(FACTOR)),
    StructField("categories", ArrayType(StructType([StructField("category", StringType()),
                                                    StructField("score", DoubleType())]))),
    StructField("segmentId", IntegerType()), StructField("segmentName", StringType()),
    StructField("modelName", StringType()), StructField("modelVersion", StringType()),
    StructField("scoreDate", DateType()),
])


def test_model_names_become_camel_case_xdm_fields():
    assert publish.field_name("conversion") == "conversion"
    assert publish.field_name("churn_v2") == "churnV2"
    assert publish.field_name("next-best-offer") == "nextBestOffer"
    with pytest.raises(ConfigError, match="start with a letter"):
        publish.field_name("2churn")


def _scores(spark, profiles: int = 3, factors: int = 1):
    """conversion for every profile, clv for the even ones; `factors` factors each."""
    conv = spark.range(profiles).select(
        F.format_string("p%05d", "id").alias("profile_id"), F.lit("CRMID").alias("primary_namespace"),
        F.format_string("c%05d", "id").alias("primary_id"), (F.col("id") / profiles).alias("probability"),
        F.array_repeat(F.struct(F.lit("revenue_365d").alias("feature"), F.col("id").cast("double").alias("value"),
                                F.lit(0.01).alias("importance")), factors).alias("factors"))
    conv = (conv.withColumn("score", F.round(F.col("probability") * 100).cast("int"))
            .withColumn("percentile", F.lit(50)).withColumn("decile", F.lit(5)))
    clv = conv.where(F.substring("profile_id", 6, 1).cast("int") % 2 == 0).select(
        "profile_id", "primary_namespace", "primary_id", F.lit(12.5).alias("prediction"), "factors",
        F.lit(40).alias("percentile"), F.lit(4).alias("decile"), F.lit(40).alias("score"))
    a = conv.transform(score.conform("conversion", "conversion", "3", "run-c", DAY))
    b = clv.transform(score.conform("clv", "clv_v2", "7", "run-v", DAY))
    return a.unionByName(b)


def test_records_follow_the_xdm_contract(spark):
    recs = publish.records(_scores(spark), "_acme", ["conversion", "clv_v2"])
    expected = StructType([
        StructField("profile_id", StringType()),
        StructField("identityMap", MapType(StringType(), ArrayType(StructType([
            StructField("id", StringType()), StructField("authenticatedState", StringType()),
            StructField("primary", BooleanType())])))),
        StructField("_acme", StructType([StructField("insights", StructType([
            StructField("conversion", INSIGHT), StructField("clvV2", INSIGHT)]))])),
    ])
    assertSchemaEqual(recs.schema, expected, ignoreNullable=True)
    rows = {r["profile_id"]: r for r in recs.collect()}
    assert len(rows) == 3
    p0 = rows["p00000"]
    assert p0["identityMap"] == {"CRMID": [("c00000", "ambiguous", True)]}
    insights = p0["_acme"]["insights"]
    assert insights["conversion"]["modelVersion"] == "3" and insights["conversion"]["scoreDate"] == DAY
    assert insights["clvV2"]["prediction"] == 12.5 and insights["clvV2"]["modelName"] == "clv_v2"
    assert rows["p00001"]["_acme"]["insights"]["clvV2"] is None  # not scored by clv: no object
    publish.check_names(recs.drop("profile_id").schema)


def test_invalid_names_and_types_are_refused():
    bad = StructType([StructField("_acme", StructType([StructField("my.score", IntegerType())]))])
    with pytest.raises(InputError, match=r"'_acme.my.score' is not a valid XDM field name"):
        publish.check_names(bad)
    with pytest.raises(InputError, match="decimal"):
        publish.json_schema(DecimalType(38, 0), "_acme.x")


def test_field_group_describes_the_tenant_fields(spark):
    recs = publish.records(_scores(spark), "_acme", ["conversion"])
    group = publish.field_group(recs.schema, "_acme")
    assert group["meta:intendedToExtend"] == ["https://ns.adobe.com/xdm/context/profile"]
    assert group["allOf"] == [{"$ref": "#/definitions/insights"}]
    conv = group["definitions"]["insights"]["properties"]["_acme"]["properties"]["insights"]["properties"]["conversion"]
    props = conv["properties"]
    assert props["score"] == {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}
    assert props["probability"] == {"type": "number"}
    assert props["scoreDate"] == {"type": "string", "format": "date"}
    assert props["factors"]["items"]["properties"]["importance"] == {"type": "number"}
    assert set(props) == {f.name for f in INSIGHT.fields}


def test_file_plan_keeps_files_under_the_limit():
    per_file, files = publish.plan_files(rows=1000, json_bytes=999_000, max_file_mb=0.1, max_files=100)
    assert per_file == 90 and files == 12  # 1,000 bytes a record: 90 per 90% of 100 kB
    assert publish.plan_files(0, 0, 1.0, 10) == (0, 0)
    with pytest.raises(InputError, match=r"raise publish\.max_file_mb"):
        publish.plan_files(rows=1000, json_bytes=999_000, max_file_mb=0.1, max_files=5)


# ------------------------------------------------------------------------------------------
# The job


def _setup(spark, tmp_path, *, profiles=3000, factors=1, psi=0.05, sets=(), scores=None):
    lake, outbox = tmp_path / "lake", tmp_path / "outbox"
    scores = _scores(spark, profiles, factors) if scores is None else scores
    tables.write(scores, str(lake / "scores"), "delta", partition_by=list(score.PARTITIONS))
    drift = spark.createDataFrame([(DAY, "conversion", "3", "revenue_365d", psi, 0.25, psi > 0.25),
                                   (DAY, "clv_v2", "7", "model_output", 0.01, 0.25, False)],
                                  "score_date date, model string, model_version string, input string, psi double, "
                                  "max_psi double, exceeded boolean")
    tables.write(drift, str(lake / "drift"), "delta", partition_by=["score_date"])
    cfg = load_config([], [f"lake={lake}", f"publish.outbox={outbox}", f"as_of={DAY}",
                           "publish.models=[conversion, clv_v2]", *sets])
    return cfg, outbox


def _folder_check(spark, summary, fmt="parquet"):
    folder = Path(summary.folder.removeprefix("file:"))
    manifest = json.loads((folder / "manifest.json").read_text())
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted([*(f["name"] for f in manifest["files"]), "manifest.json", "xdm-fieldgroup.json"])
    for f in manifest["files"]:
        data = (folder / f["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == f["sha256"]
        assert len(data) == f["bytes"]
    back = spark.read.format(fmt).load([str(folder / f["name"]) for f in manifest["files"]])
    assert back.count() == manifest["rows"] == sum(f["rows"] for f in manifest["files"])
    return folder, manifest, back


def test_publish_splits_files_and_writes_a_checked_manifest(spark, tmp_path):
    cfg, outbox = _setup(spark, tmp_path, sets=["publish.max_file_mb=0.05"])
    summary = publish_job.run(spark, cfg)
    folder, manifest, back = _folder_check(spark, summary)
    assert folder.parent == outbox / str(DAY)
    assert manifest["rows"] == 3000 and len(manifest["files"]) >= 4
    assert all(f["bytes"] <= 50_000 for f in manifest["files"])
    assert [f["name"] for f in manifest["files"]][:2] == ["part-00000.snappy.parquet", "part-00001.snappy.parquet"]
    assert {(m["name"], m["field"], m["version"]) for m in manifest["models"]} == {
        ("conversion", "conversion", "3"), ("clv_v2", "clvV2", "7")}
    assert manifest["rejected"] == {"record_too_large": 0}
    assert back.select(F.col("identityMap.CRMID")[0]["id"]).distinct().count() == 3000  # one record per profile
    assert back.where(F.col("_acme.insights.clvV2").isNotNull()).count() == 1500
    group = json.loads((folder / "xdm-fieldgroup.json").read_text())
    assert "clvV2" in group["definitions"]["insights"]["properties"]["_acme"]["properties"]["insights"]["properties"]
    assert not (outbox / "_staging" / str(DAY)).exists()

    again = publish_job.run(spark, cfg)  # same content, same settings: nothing new
    assert again.already and again.folder == summary.folder
    assert json.loads((folder / "manifest.json").read_text())["createdAt"] == manifest["createdAt"]


def test_a_crash_before_the_manifest_leaves_an_incomplete_folder_that_the_rerun_replaces(spark, tmp_path):
    cfg, outbox = _setup(spark, tmp_path, profiles=500)

    def crash():
        raise RuntimeError("killed before the manifest")

    with pytest.raises(RuntimeError, match="killed"):
        publish_job.run(spark, cfg, before_manifest=crash)
    folders = list((outbox / str(DAY)).iterdir())
    assert len(folders) == 1 and not (folders[0] / "manifest.json").exists()
    (outbox / "_staging" / str(DAY) / "leftover").mkdir(parents=True)  # as if a crash happened mid-write
    (folders[0] / "part-99999.snappy.parquet").write_bytes(b"half a file")
    summary = publish_job.run(spark, cfg)
    assert Path(summary.folder.removeprefix("file:")) == folders[0]
    _, manifest, _ = _folder_check(spark, summary)
    assert manifest["rows"] == 500
    assert not (folders[0] / "part-99999.snappy.parquet").exists()
    assert not (outbox / "_staging" / str(DAY)).exists()


def test_json_lines_with_gzip_and_oversized_records_rejected(spark, tmp_path):
    # Profiles p00000..p00009 get 40 factors each (about 3 kB of JSON), the others 1.
    big = _scores(spark, 10, factors=40)
    small = _scores(spark, 200, factors=1).join(big.select("profile_id"), "profile_id", "left_anti")
    cfg, _ = _setup(spark, tmp_path, scores=big.unionByName(small),
                    sets=["publish.format=json", "publish.compression=gzip", "publish.max_record_kb=2"])
    summary = publish_job.run(spark, cfg)
    folder, manifest, _ = _folder_check(spark, summary, fmt="json")
    assert manifest["rejected"] == {"record_too_large": 10} and manifest["rows"] == 190
    assert manifest["files"][0]["name"].endswith(".json.gz")
    first = json.loads(gzip.decompress((folder / manifest["files"][0]["name"]).read_bytes()).splitlines()[0])
    assert set(first) == {"identityMap", "_acme"}
    assert "segmentName" not in first["_acme"]["insights"]["conversion"]  # nulls are left out of JSON
    quarantined = tables.read(spark, f"{cfg.lake}/quarantine/publish", "delta")
    assert {r["profile_id"] for r in quarantined.collect()} == {f"p{i:05d}" for i in range(10)}
    assert quarantined.where("reason = 'record_too_large' AND bytes > 2000").count() == 10


def test_drift_above_the_limit_blocks_publishing_unless_allowed(spark, tmp_path):
    cfg, outbox = _setup(spark, tmp_path, profiles=100, psi=0.4)
    with pytest.raises(InputError, match=r"conversion v3 revenue_365d PSI 0.400.*--allow-drift"):
        publish_job.run(spark, cfg)
    assert not outbox.exists()  # (--allow-drift publishes: the end-to-end test uses it)


def test_missing_scores_are_named(spark, tmp_path):
    cfg, _ = _setup(spark, tmp_path, profiles=10, sets=["publish.models=[conversion, churn]"])
    with pytest.raises(InputError, match=r"no scores as of 2026-01-01 for \['churn'\].*jobs/score.py"):
        publish_job.run(spark, cfg)
