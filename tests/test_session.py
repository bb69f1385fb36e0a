"""Session: mode detection, what a cluster job adds to spark-submit's conf, Delta in local mode."""

from __future__ import annotations

import os
import sys

import pytest
from enrich import tables
from enrich.config import SparkConfig
from enrich.errors import ConfigError, InputError
from enrich.session import DELTA_CATALOG, DELTA_EXTENSION, cluster_additions, delta_jars, detect_mode
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual


@pytest.mark.parametrize(
    ("mode", "env", "expected"),
    [
        ("auto", {}, "local"),
        ("auto", {"PYSPARK_GATEWAY_PORT": "41234"}, "cluster"),
        ("auto", {"DATABRICKS_RUNTIME_VERSION": "16.4", "PYSPARK_GATEWAY_PORT": "1"}, "databricks"),
        ("local", {"DATABRICKS_RUNTIME_VERSION": "16.4"}, "local"),
    ],
)
def test_detect_mode(mode, env, expected):
    assert detect_mode(SparkConfig(mode=mode), env) == expected


def test_cluster_keeps_what_spark_submit_set_and_adds_the_rest():
    existing = {
        "spark.sql.session.timeZone": "America/New_York",  # overridden: days are UTC days
        "spark.sql.extensions": "org.example.OtherExtension",
    }
    added = cluster_additions(SparkConfig(conf={"spark.sql.shuffle.partitions": "400"}), existing)
    assert added["spark.sql.session.timeZone"] == "UTC"
    assert added["spark.sql.extensions"] == f"org.example.OtherExtension,{DELTA_EXTENSION}"
    assert added["spark.sql.catalog.spark_catalog"] == DELTA_CATALOG
    assert added["spark.sql.shuffle.partitions"] == "400"


def test_cluster_adds_nothing_when_delta_is_configured():
    existing = {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.extensions": DELTA_EXTENSION,
        "spark.sql.catalog.spark_catalog": DELTA_CATALOG,
        "spark.app.name": "nightly",
    }
    assert cluster_additions(SparkConfig(), existing) == {}


def test_missing_jars_say_how_to_fetch_them(tmp_path):
    with pytest.raises(ConfigError, match=r"no Delta jars in .*run 'make setup'"):
        delta_jars(SparkConfig(jars_dir=str(tmp_path)), env={})


def test_local_session_is_utc_and_has_delta(spark):
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    assert DELTA_EXTENSION in spark.conf.get("spark.sql.extensions")


def test_local_jvm_runs_the_parallel_collector(spark):
    """Throughput collector for a batch job on few cores (see `local_conf`), not Java's default G1."""
    beans = spark._jvm.java.lang.management.ManagementFactory.getGarbageCollectorMXBeans()
    names = {beans.get(i).getName() for i in range(beans.size())}
    assert names == {"PS Scavenge", "PS MarkSweep"}


def test_generated_code_too_big_for_the_jit_is_not_used(spark, tmp_path):
    """Local mode sets Spark's limit at HotSpot's 8000-byte compile limit (`local_conf`), and it is
    no corner case: expressions over nested columns like the parse of events make one whole-stage
    method over it. (Spark then runs the stage from small generated methods; that it does so shows
    only in time, which tests do not measure: the numbers are in `local_conf`.) The answer is right."""
    assert spark.conf.get("spark.sql.codegen.hugeMethodLimit") == "8000"
    schema = ("m map<string,array<struct<id:string,s:string>>>, "
              "items array<struct<k:string,cats:array<struct<id:string,name:string>>>>")
    spark.createDataFrame([({"a": [("x", "y")]}, [("c", [("i", "n1")])])], schema).write.parquet(str(tmp_path / "t"))
    names = F.flatten(F.col("items.cats"))["name"]
    wide = spark.read.parquet(str(tmp_path / "t")).select(*[
        c for i in range(20) for c in (
            F.when(F.array_join(names, ",", "-").contains(str(i)), F.array_distinct(names)).alias(f"a{i}"),
            F.xxhash64(F.sort_array(F.map_entries("m")), F.lit(i)).alias(f"h{i}"))])
    debug = getattr(getattr(spark._jvm.org.apache.spark.sql.execution.debug, "package$"), "MODULE$")
    stages = debug.codegenStringSeq(wide._jdf.queryExecution().executedPlan())
    assert max(stages.apply(i)._3().maxMethodCodeSize() for i in range(stages.size())) > 8000
    [row] = wide.collect()
    assert row.a1 == ["n1"] and row.a2 is None and len({row[f"h{i}"] for i in range(20)}) == 20


def test_adaptive_execution_merges_shuffle_partitions_to_about_16_mb(spark):
    """Local mode's `spark.sql.adaptive.advisoryPartitionSizeInBytes` (see `local_conf`): a shuffle of
    about 100 MB (hex digests do not compress much) keeps many partitions, where Spark's 64 MB
    would merge it into three; a small one still becomes one partition per core or fewer."""
    digests = spark.range(0, 1_000_000, numPartitions=4).select(
        F.col("id"), *[F.sha2(F.concat(F.col("id").cast("string"), F.lit(str(i))), 256).alias(f"d{i}")
                       for i in range(2)])
    with tables.spark_conf(spark, {"spark.sql.shuffle.partitions": "32"}):
        assert digests.repartition("id").rdd.getNumPartitions() >= 6  # 11 here; 3 at 64 MB
        assert spark.range(1000).repartition("id").rdd.getNumPartitions() <= spark.sparkContext.defaultParallelism


def test_python_workers_run_the_drivers_interpreter(spark):
    """Not the first `python3` on the PATH, which may lack this environment's packages."""
    seen = spark.sparkContext.parallelize([0], 1).map(lambda _: __import__("sys").executable).collect()
    assert seen == [sys.executable]


def test_delta_round_trip_partition_replace_and_time_travel(spark, tmp_path):
    path = str(tmp_path / "t")
    first = spark.createDataFrame([(1, "a", "2025-01-01"), (2, "b", "2025-01-01"), (3, "c", "2025-01-02")],
                                  "id int, v string, day string")
    tables.write(first, path, "delta", partition_by=["day"])

    replacement = spark.createDataFrame([(9, "z", "2025-01-01")], "id int, v string, day string")
    tables.write(replacement, path, "delta", partition_by=["day"], replace_where="day = '2025-01-01'")

    current = tables.read(spark, path, "delta")
    assertDataFrameEqual(current, [(9, "z", "2025-01-01"), (3, "c", "2025-01-02")])
    version0 = spark.read.format("delta").option("versionAsOf", 0).load(path)
    assertDataFrameEqual(version0, first)

    # replaceWhere refuses rows outside the partition it replaces: nothing is silently lost.
    stray = spark.createDataFrame([(4, "d", "2025-01-03")], "id int, v string, day string")
    with pytest.raises(Exception, match=r"DELTA_REPLACE_WHERE_MISMATCH|replaceWhere"):
        tables.write(stray, path, "delta", partition_by=["day"], replace_where="day = '2025-01-01'")
    assert tables.read(spark, path, "delta").count() == 2


def test_observed_counts_come_from_the_write(spark, tmp_path):
    df = spark.range(10).withColumn("even", F.col("id") % 2 == 0)
    observed, obs = tables.observe(df, "t", rows=F.count(F.lit(1)), even=F.count_if("even"))
    tables.write(observed, str(tmp_path / "o"), "parquet")
    assert tables.counts(obs) == {"rows": 10, "even": 5}


def test_a_pinned_delta_frame_keeps_its_version_while_the_table_grows(spark, tmp_path):
    path = str(tmp_path / "growing")
    tables.write(spark.range(10), path, "delta")
    live, pinned = tables.read(spark, path, "delta"), tables.read(spark, path, "delta", pinned=True)
    spark.range(5).write.format("delta").mode("append").save(path)
    assert (live.count(), pinned.count()) == (15, 10)
    assert tables.delta_version(spark, path) == 1
    with pytest.raises(InputError, match="nowhere"):
        tables.read(spark, str(tmp_path / "nowhere"), "delta", pinned=True)
    # A relative path (the default lake is `./lake`) is the JVM's working directory's, as for any read.
    relative = os.path.relpath(path, spark._jvm.java.lang.System.getProperty("user.dir"))
    assert not os.path.isabs(relative)
    assert tables.read(spark, relative, "delta", pinned=True).count() == 15
    assert tables.delta_version(spark, relative) == 1


def test_reading_a_missing_dataset_names_the_path(spark, tmp_path):
    with pytest.raises(InputError, match=r"nowhere: no parquet dataset there"):
        tables.read(spark, str(tmp_path / "nowhere"), "parquet")


def test_a_session_setting_holds_inside_its_block_only(spark):
    before = spark.conf.get("spark.sql.adaptive.enabled")
    with pytest.raises(RuntimeError), tables.spark_conf(spark, {"spark.sql.adaptive.enabled": "false"}):
        assert spark.conf.get("spark.sql.adaptive.enabled") == "false"
        raise RuntimeError("the block failed")
    assert spark.conf.get("spark.sql.adaptive.enabled") == before
    with tables.spark_conf(spark, {"spark.enrich.test.unset": "1"}):
        assert spark.conf.get("spark.enrich.test.unset") == "1"
    assert spark.conf.get("spark.enrich.test.unset", None) is None
