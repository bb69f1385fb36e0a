"""The one SparkSession of a job, made at its entry point, wired for Delta wherever it runs.

- local: `local[*]`, the Delta jars fetched by `make setup` on the classpath, Python workers on the
  driver's interpreter, UTC, adaptive execution, few shuffle partitions;
- cluster (launched by spark-submit): keep everything spark-submit configured, add only what is
  missing (the Delta extension and catalog, UTC);
- Databricks: reuse the job's session; Delta is built in and the jars are never touched.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from pyspark import SparkConf, SparkContext
from pyspark.sql import SparkSession

from enrich._versions import DELTA_MAVEN_COORDINATE
from enrich.config import SparkConfig
from enrich.errors import ConfigError

log = logging.getLogger(__name__)

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def detect_mode(cfg: SparkConfig, env: Mapping[str, str] | None = None) -> str:
    """Resolve `spark.mode: auto` from the environment the process runs in."""
    if cfg.mode != "auto":
        return cfg.mode
    env = os.environ if env is None else env
    if env.get("DATABRICKS_RUNTIME_VERSION"):
        return "databricks"
    # spark-submit starts the Python driver with a gateway already listening for it.
    if env.get("PYSPARK_GATEWAY_PORT"):
        return "cluster"
    return "local"


def delta_jars(cfg: SparkConfig, env: Mapping[str, str] | None = None) -> list[str]:
    """The fetched Delta jars for local mode, or a ConfigError that says how to get them."""
    env = os.environ if env is None else env
    folder = Path(cfg.jars_dir or env.get("ENRICH_JARS_DIR") or PROJECT_ROOT / ".jars")
    jars = sorted(str(p) for p in folder.glob("*.jar")) if folder.is_dir() else []
    if not any("delta-spark" in Path(j).name for j in jars):
        raise ConfigError(
            f"spark.jars_dir: no Delta jars in {folder}; run 'make setup' to fetch "
            f"{DELTA_MAVEN_COORDINATE}, or point spark.jars_dir / ENRICH_JARS_DIR at a folder of them"
        )
    return jars


def local_conf(cfg: SparkConfig, jars: list[str]) -> dict[str, str]:
    """Spark properties for local mode: a laptop or a CI runner with a couple of cores."""
    return {
        "spark.master": cfg.master,
        "spark.app.name": cfg.app_name,
        "spark.driver.memory": cfg.driver_memory,
        "spark.jars": ",".join(jars),
        "spark.sql.extensions": DELTA_EXTENSION,
        "spark.sql.catalog.spark_catalog": DELTA_CATALOG,
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.shuffle.partitions": str(cfg.shuffle_partitions),
        # Adaptive execution merges small shuffle partitions up to about this size (Spark's default,
        # 64 MB, left the features job's last stage 4 tasks at 10M events: 13.4s in that run, 11.2s
        # with 16 tasks at 16 MB in the next; at 1M both merge it to 2 tasks, 1.8s where 32 took 3.8s).
        "spark.sql.adaptive.advisoryPartitionSizeInBytes": "16m",
        # Delta rebuilds table state with 50 tasks by default: far too many for small local tables.
        "spark.databricks.delta.snapshotPartitions": "2",
        # 128 MB splits give a ~100 MB table 1-3 scan tasks: on 2 cores the third runs alone.
        "spark.sql.files.maxPartitionBytes": "32m",
        # Cached tables (the features job keeps its parsed events on local disk) are written
        # uncompressed: on a couple of cores the CPU is scarcer than disk (about 10% of the
        # caching time at 10M events).
        "spark.sql.inMemoryColumnarStorage.compressed": "false",
        "spark.ui.showConsoleProgress": "false",
        # The parallel collector, not Java 17's default G1: a batch job on a couple of cores wants
        # throughput, and G1's concurrent marking took about 15% of the CPU at 10M events
        # (features job 124-140s with G1, 110s with this).
        "spark.driver.extraJavaOptions": "-XX:+UseParallelGC",
        # HotSpot never compiles a method over 8000 bytes of bytecode: whole-stage code generation
        # whose method is bigger runs interpreted, several times slower (fully compiled, the features
        # job's parse of events is one 11 KB method: 10M events in 57-83s, against 20s when its
        # projection is generated as many small methods). At this limit Spark generates the small
        # ones instead (the parse: 26-31s), as Spark's documentation of the setting advises on HotSpot.
        "spark.sql.codegen.hugeMethodLimit": "8000",
        # Generated classes kept for reuse, up to this many. Spark's default, 100, is fewer than one
        # features run makes (330-380, at 1M and at 10M events): a run compiled about 45 of them twice,
        # and a second run in the same session (tests, notebooks, benchmarks) all of them again, which
        # the JIT then warmed up again. Warm runs: 360-400 compilations against 4-10 with this; 1M
        # events 24.1-24.4s against 17.9-19.5s, 10M 89.9-93.0s against 77.6-82.3s.
        "spark.sql.codegen.cache.maxEntries": "2000",
        **cfg.conf,
    }


def cluster_additions(cfg: SparkConfig, existing: Mapping[str, str]) -> dict[str, str]:
    """What a spark-submit'ed job must add to the conf it was given, and nothing else."""
    extensions = [e for e in existing.get("spark.sql.extensions", "").split(",") if e]
    wanted: dict[str, str] = {
        "spark.sql.catalog.spark_catalog": DELTA_CATALOG,
        "spark.app.name": cfg.app_name,
        **cfg.conf,
    }
    additions = {k: v for k, v in wanted.items() if k not in existing}
    # Not a preference: days, windows and as-of dates are UTC calendar days in every job.
    zone = existing.get("spark.sql.session.timeZone")
    if zone != "UTC":
        if zone is not None:
            log.warning("spark.sql.session.timeZone=%s set to UTC: the pipeline's days are UTC days", zone)
        additions["spark.sql.session.timeZone"] = "UTC"
    if DELTA_EXTENSION not in extensions:
        additions["spark.sql.extensions"] = ",".join([*extensions, DELTA_EXTENSION])
    return additions


def get_spark(cfg: SparkConfig) -> SparkSession:
    """Return the job's SparkSession for the mode it runs in (see module docstring)."""
    mode = detect_mode(cfg)
    active = SparkSession.getActiveSession()
    if mode == "databricks":
        spark = active or SparkSession.builder.getOrCreate()
        spark.conf.set("spark.sql.session.timeZone", "UTC")
        return spark
    if active is not None:
        # Already made at this entry point (or by a test harness): one session per process.
        return active
    builder = SparkSession.builder
    if mode == "local":
        settings = local_conf(cfg, delta_jars(cfg))
        # Python workers run this interpreter, with this environment's packages, not whatever
        # `python3` is first on the PATH (PySpark reads only the variable, not spark.pyspark.python).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    else:
        SparkContext._ensure_initialized()  # the gateway spark-submit opened; loads its conf
        existing = dict(SparkConf().getAll())
        settings = cluster_additions(cfg, existing)
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    log.info("Spark %s session (%s), master %s", spark.version, mode, spark.sparkContext.master)
    return spark
