"""The only module that reads or writes data: one place for formats, modes and Delta options.

Summary counts come from `observe`: metrics attached to a DataFrame are collected by the write
itself, so a summary never costs a second pass over the data.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType
from pyspark.sql.utils import AnalysisException

from enrich.errors import InputError


@dataclass(frozen=True)
class Written:
    """Where a write went and in which format."""

    path: str
    format: str


def observer(name: str, **metrics: Column) -> tuple[Callable[[DataFrame], DataFrame], Observation]:
    """A transform attaching aggregate `metrics` to a frame, and the Observation that will hold them.

    The metrics are collected by whatever action runs a plan containing the transformed frame
    (usually the write), for free; read them with `counts` after that action.
    """
    observation = Observation(name)

    def attach(df: DataFrame) -> DataFrame:
        return df.observe(observation, *[expr.alias(key) for key, expr in metrics.items()])

    return attach, observation


def observe(df: DataFrame, name: str, **metrics: Column) -> tuple[DataFrame, Observation]:
    """`df` with `metrics` attached, and their Observation (see `observer`)."""
    attach, observation = observer(name, **metrics)
    return attach(df), observation


def counts(observation: Observation) -> dict[str, int]:
    """The observed metrics as integers (after the action that computed them)."""
    return {key: int(value or 0) for key, value in observation.get.items()}


# JSON lines that do not parse, or whose values do not fit the schema, keep their text here.
CORRUPT_RECORD = "_corrupt_record"


@contextlib.contextmanager
def spark_conf(spark: SparkSession, settings: Mapping[str, str]) -> Iterator[None]:
    """Session settings for the actions run inside the block; the previous values come back after."""
    before = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


def kept_observed(table: DataFrame, **metrics: Column) -> tuple[DataFrame, dict[str, int]]:
    """`table` materialized (`localCheckpoint`) and aggregate `metrics` of it, computed by the job
    that keeps it: no second job over what was just written."""
    observed, observation = observe(table, f"kept-{uuid.uuid4().hex}", **metrics)
    kept = observed.localCheckpoint()
    return kept, counts(observation)


def kept_counted(table: DataFrame) -> tuple[DataFrame, int]:
    """`table` materialized and its number of rows (`kept_observed`)."""
    kept, observed = kept_observed(table, rows=F.count(F.lit(1)))
    return kept, observed["rows"]


def small_side(table: DataFrame, broadcast_max_rows: int) -> DataFrame:
    """Materialize a table far smaller than the events once (its size is then known and every
    reader shares it), marked for broadcast when it has at most `broadcast_max_rows` rows."""
    table, rows = kept_counted(table)
    return broadcast_small(table, rows, broadcast_max_rows)


def broadcast_small(table: DataFrame, rows: int, broadcast_max_rows: int) -> DataFrame:
    """`table` (of `rows` rows, materialized) marked for broadcast when `rows` is at most
    `broadcast_max_rows`."""
    return F.broadcast(table) if rows <= broadcast_max_rows else table


def read(spark: SparkSession, path: str, fmt: str, schema: StructType | None = None, *,
         pinned: bool = False) -> DataFrame:
    """Read a dataset in `parquet`, `json` (lines) or `delta`; a missing path is an InputError.

    JSON read with a schema gets a `_corrupt_record` column: a line that is not JSON, or holds a
    value of the wrong type, is kept there (its fields may be null) so that it can be quarantined
    instead of becoming a row of silent nulls.

    A Delta frame reads the table's latest version at each action, so two passes over it may see
    different rows while another writer appends. `pinned` reads, at every action, the version that
    is the latest when `read` is called. (A parquet or JSON folder is listed once, when read: it
    needs no pin.)
    """
    reader = spark.read.format(fmt)
    if schema is not None and fmt == "json":
        schema = StructType([*schema.fields, StructField(CORRUPT_RECORD, StringType())])
        reader = reader.option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", CORRUPT_RECORD)
    if schema is not None and fmt != "delta":
        reader = reader.schema(schema)
    try:
        if pinned and fmt == "delta":
            reader = reader.option("versionAsOf", delta_version(spark, path))
        return reader.load(path)
    except AnalysisException as exc:
        if "PATH_NOT_FOUND" in str(exc) or "is not a Delta table" in str(exc) or "DELTA_MISSING" in str(exc):
            raise InputError(f"{path}: no {fmt} dataset there ({str(exc).splitlines()[0]})") from None
        raise


def delta_version(spark: SparkSession, path: str) -> int:
    """The latest version of the Delta table at `path`: absolute, or relative to the working directory
    as any read's is. Delta's SQL reads delta.`<path>` as a path only when it is absolute, so a
    relative one is qualified first."""
    fs, hadoop_path = _fs(spark, path)
    if not hadoop_path.isAbsolute():
        path = str(fs.makeQualified(hadoop_path).toString())
    quoted = path.replace("`", "``")
    return int(spark.sql(f"DESCRIBE HISTORY delta.`{quoted}` LIMIT 1").first()["version"])


def write(
    df: DataFrame,
    path: str,
    fmt: str,
    *,
    partition_by: Sequence[str] = (),
    replace_where: str | None = None,
) -> Written:
    """Write `df` to `path`, replacing what is there (or, for Delta, only `replace_where`).

    Overwrites are what make every job safe to re-run: a crashed run is repaired by running again,
    and a Delta overwrite is one atomic commit, so readers never see half a table.
    """
    writer = df.write.format(fmt).mode("overwrite")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    if fmt == "delta":
        if replace_where is None:
            writer = writer.option("overwriteSchema", "true")  # a replaced table may change shape
        else:
            # New columns (a new model output, a new feature window) are added to the table (older
            # rows read them as null); a type change is still refused.
            writer = writer.option("replaceWhere", replace_where).option("mergeSchema", "true")
    elif replace_where is not None:
        raise ValueError("replace_where is only supported for delta")
    writer.save(path)
    return Written(path, fmt)


# --------------------------------------------------------------------------------------------
# Files (published folders): through Hadoop's FileSystem, so the same code moves files on a
# local disk, HDFS, S3, ADLS or DBFS. Needs a classic Spark session (not Spark Connect).


@dataclass(frozen=True)
class FileInfo:
    """A file of a folder: its URI, name and size in bytes."""

    uri: str
    name: str
    bytes: int


def _fs(spark: SparkSession, path: str) -> tuple[Any, Any]:
    jvm = spark.sparkContext._jvm
    hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
    fs = hadoop_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    if jvm.org.apache.hadoop.fs.ChecksumFileSystem._java_lang_class.isInstance(fs):
        # The local file system's `.crc` side files would travel with the data into the outbox.
        fs = fs.getRawFileSystem()
    return fs, hadoop_path


def exists(spark: SparkSession, path: str) -> bool:
    """Whether a file or folder exists at `path`."""
    fs, p = _fs(spark, path)
    return bool(fs.exists(p))


def delete(spark: SparkSession, path: str) -> None:
    """Delete a file or a folder and everything in it (nothing when absent)."""
    fs, p = _fs(spark, path)
    if fs.exists(p):
        fs.delete(p, True)


def list_files(spark: SparkSession, folder: str) -> list[FileInfo]:
    """The files directly in `folder` (not sub-folders), by name; empty when it does not exist."""
    fs, p = _fs(spark, folder)
    if not fs.exists(p):
        return []
    found = [FileInfo(s.getPath().toString(), s.getPath().getName(), int(s.getLen()))
             for s in fs.listStatus(p) if s.isFile()]
    return sorted(found, key=lambda f: f.name)


def move(spark: SparkSession, source: str, target: str) -> None:
    """Rename a file or folder (a rename on file systems; a copy and delete on object stores)."""
    fs, src = _fs(spark, source)
    _, dst = _fs(spark, target)
    fs.mkdirs(dst.getParent())
    if not fs.rename(src, dst):
        raise OSError(f"could not move {source} to {target}")


def write_text(spark: SparkSession, path: str, text: str) -> None:
    """Write a small text file whole: to `<path>.tmp`, then renamed over `path`, so a reader sees
    the old file, the new one, or none, never half of one."""
    fs, p = _fs(spark, path)
    _, tmp = _fs(spark, f"{path}.tmp")
    out = fs.create(tmp, True)
    try:
        out.write(bytearray(text.encode("utf-8")))
    finally:
        out.close()
    if fs.exists(p):
        fs.delete(p, False)
    if not fs.rename(tmp, p):
        raise OSError(f"could not move {path}.tmp to {path}")


def read_text(spark: SparkSession, path: str) -> str:
    """A small text file's content."""
    rows = spark.read.text(path, wholetext=True).collect()
    return rows[0][0] if rows else ""


def checksums(spark: SparkSession, paths: Sequence[str]) -> dict[str, str]:
    """sha256 of each file, computed by the executors (file name -> hex digest)."""
    if not paths:
        return {}
    hashed = spark.read.format("binaryFile").load(list(paths)).select("path", F.sha2("content", 256).alias("sha256"))
    return {r["path"].rsplit("/", 1)[-1]: r["sha256"] for r in hashed.collect()}


def rows_per_file(spark: SparkSession, folder: str, fmt: str) -> dict[str, int]:
    """Row count of each data file of a folder written by Spark (file name -> rows)."""
    counted = spark.read.format(fmt).load(folder).groupBy(F.input_file_name().alias("file")).count()
    return {r["file"].rsplit("/", 1)[-1]: r["count"] for r in counted.collect()}
