"""The only module that reads or writes data: one place for formats, modes and Delta options.

Summary counts come from `observe`: metrics attached to a DataFrame are collected by the write
itself, so a summary never costs a second pass over the data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Observation, SparkSession
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


def read(spark: SparkSession, path: str, fmt: str, schema: StructType | None = None) -> DataFrame:
    """Read a dataset in `parquet`, `json` (lines) or `delta`; a missing path is an InputError.

    JSON read with a schema gets a `_corrupt_record` column: a line that is not JSON, or holds a
    value of the wrong type, is kept there (its fields may be null) so that it can be quarantined
    instead of becoming a row of silent nulls.
    """
    reader = spark.read.format(fmt)
    if schema is not None and fmt == "json":
        schema = StructType([*schema.fields, StructField(CORRUPT_RECORD, StringType())])
        reader = reader.option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", CORRUPT_RECORD)
    if schema is not None and fmt != "delta":
        reader = reader.schema(schema)
    try:
        return reader.load(path)
    except AnalysisException as exc:
        if "PATH_NOT_FOUND" in str(exc) or "is not a Delta table" in str(exc) or "DELTA_MISSING" in str(exc):
            raise InputError(f"{path}: no {fmt} dataset there ({exc.getMessage().splitlines()[0]})") from None
        raise


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
            writer = writer.option("replaceWhere", replace_where)
    elif replace_where is not None:
        raise ValueError("replace_where is only supported for delta")
    writer.save(path)
    return Written(path, fmt)
