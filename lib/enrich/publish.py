"""Published records: the scores table turned into XDM profile records, one per profile, and the
rules that size, name and describe the files (no I/O here; `jobs/publish.py` writes them).

A record carries the profile's primary identity (`identityMap`, marked `primary: true`) and one
insight object per model under the tenant namespace:

    {"identityMap": {"CRMID": [{"id": "c-1", "authenticatedState": "ambiguous", "primary": true}]},
     "_acme": {"insights": {"conversion": {"score": 87, "probability": 0.87, "percentile": 99, ...},
                            "churn": {...}, "affinity": {"categories": [...]}, "segments": {...}}}}

Every model's object has the same fields (`INSIGHT`); a field a model does not produce is null
(and absent from JSON). Model names become camelCase field names (`churn_v2` -> `churnV2`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DataType,
    DateType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    StringType,
    StructType,
    TimestampType,
)

from enrich.errors import ConfigError, InputError

_XDM_NAME = re.compile(r"^_?[A-Za-z][A-Za-z0-9]*$")
PROFILE_CLASS = "https://ns.adobe.com/xdm/context/profile"
MB = 1_000_000
# A file is planned at this share of the limit: the estimate is each record's JSON size, which
# columnar compression beats by far, but JSON files get no such slack.
_FILL = 0.9


def field_name(model: str) -> str:
    """The XDM field of a model: camelCase of its registered name (`churn_v2` -> `churnV2`)."""
    parts = [p for p in re.split(r"[^A-Za-z0-9]+", model) if p]
    if not parts or not parts[0][0].isalpha():
        raise ConfigError(f"model name '{model}' cannot be an XDM field name (it must start with a letter)")
    name = parts[0][0].lower() + parts[0][1:] + "".join(p[0].upper() + p[1:] for p in parts[1:])
    return name


def insight() -> Column:
    """One scores row as its XDM insight object."""
    return F.struct(
        F.col("score").alias("score"),
        F.col("probability").alias("probability"),
        F.col("percentile").alias("percentile"),
        F.col("decile").alias("decile"),
        F.col("prediction").alias("prediction"),
        F.col("p_alive").alias("pAlive"),
        F.col("expected_purchases").alias("expectedPurchases"),
        F.col("factors").alias("factors"),
        F.transform("recommendations", lambda r: F.struct(r["category"].alias("category"), r["score"].alias("score")))
        .alias("categories"),
        F.col("segment_id").alias("segmentId"),
        F.col("segment_name").alias("segmentName"),
        F.col("model").alias("modelName"),
        F.col("model_version").alias("modelVersion"),
        F.col("score_date").alias("scoreDate"),
    )


def records(scores: DataFrame, tenant: str, models: Sequence[str]) -> DataFrame:
    """(`profile_id`, `identityMap`, `<tenant>`): all models of a profile side by side, one shuffle.

    `scores` holds one score date. A profile a model did not score (not eligible) has a null object
    for that model.
    """
    fields = {m: field_name(m) for m in models}
    clashes = sorted({f for f in fields.values() if list(fields.values()).count(f) > 1})
    if clashes:
        raise ConfigError(f"publish.models: several models map to the XDM field(s) {clashes}; rename them")
    folded = scores.where(F.col("model").isin(list(models))).groupBy("profile_id").agg(
        F.first("primary_namespace", ignorenulls=True).alias("primary_namespace"),
        F.first("primary_id", ignorenulls=True).alias("primary_id"),
        *[F.first(F.when(F.col("model") == m, insight()), ignorenulls=True).alias(f) for m, f in fields.items()],
    )
    identity = F.struct(F.col("primary_id").alias("id"), F.lit("ambiguous").alias("authenticatedState"),
                        F.lit(True).alias("primary"))
    return folded.select(
        "profile_id",
        F.create_map(F.col("primary_namespace"), F.array(identity)).alias("identityMap"),
        F.struct(F.struct(*[F.col(f) for f in fields.values()]).alias("insights")).alias(tenant),
    )


def check_names(schema: StructType, path: str = "") -> None:
    """Every field name below the record's top level is a valid XDM name: letters and digits,
    camelCase, a leading underscore only for the tenant; no dots."""
    for field in schema.fields:
        where = f"{path}{field.name}"
        if field.name != "identityMap" and not _XDM_NAME.match(field.name):
            raise InputError(f"published field '{where}' is not a valid XDM field name")
        for nested in _structs(field.dataType):
            check_names(nested, f"{where}.")


def _structs(kind: DataType) -> list[StructType]:
    if isinstance(kind, StructType):
        return [kind]
    if isinstance(kind, ArrayType):
        return _structs(kind.elementType)
    return []


# Spark type -> XDM type. XDM has no unsigned or decimal types; `long` is bounded to 2^53 (JSON numbers).
_SIMPLE: list[tuple[Any, dict[str, Any]]] = [
    (StringType, {"type": "string"}),
    (IntegerType, {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}),
    (LongType, {"type": "integer", "minimum": -(2**53), "maximum": 2**53}),
    (DoubleType | FloatType, {"type": "number"}),
    (BooleanType, {"type": "boolean"}),
    (DateType, {"type": "string", "format": "date"}),
    (TimestampType, {"type": "string", "format": "date-time"}),
]


def json_schema(kind: DataType, where: str) -> dict[str, Any]:
    """The XDM (JSON Schema) type of a Spark type; types the platform does not take are errors."""
    if isinstance(kind, StructType):
        return {"type": "object", "properties": {f.name: json_schema(f.dataType, f"{where}.{f.name}")
                                                 for f in kind.fields}}
    if isinstance(kind, ArrayType):
        return {"type": "array", "items": json_schema(kind.elementType, where)}
    for types, schema in _SIMPLE:
        if isinstance(kind, types):
            return dict(schema)
    raise InputError(f"published field '{where}' has type {kind.simpleString()}, which XDM does not take")


def field_group(schema: StructType, tenant: str, title: str = "Profile enrichment insights") -> dict[str, Any]:
    """The XDM field group (Schema Registry definition) of the tenant part of the records: create it
    in the platform, add it to an XDM Individual Profile schema, and the records ingest."""
    tenant_type = schema[tenant].dataType
    return {
        "title": title,
        "description": "Model-driven profile attributes (propensity, churn, lifetime value, affinity, segments) "
                       "published by profile-enrichment.",
        "type": "object",
        "meta:intendedToExtend": [PROFILE_CLASS],
        "definitions": {"insights": {"properties": {tenant: json_schema(tenant_type, tenant)}}},
        "allOf": [{"$ref": "#/definitions/insights"}],
    }


def plan_files(rows: int, json_bytes: int, max_file_mb: float, max_files: int) -> tuple[int, int]:
    """(rows per file, number of files) so that files stay under `max_file_mb`.

    The size of a record is its JSON text (an upper bound of its share of a Parquet file, and of
    a JSON file with compression); files are planned at 90% of the limit.
    """
    if rows == 0:
        return 0, 0
    per_row = max(json_bytes / rows + 1, 1.0)  # + the newline of a JSON line
    per_file = max(1, math.floor(max_file_mb * MB * _FILL / per_row))
    files = math.ceil(rows / per_file)
    if files > max_files:
        raise InputError(f"{rows} records of about {per_row:.0f} bytes need {files} files of at most {max_file_mb:g} "
                         f"MB, more than publish.max_files ({max_files}); raise publish.max_file_mb")
    return per_file, files


def run_id(fingerprint: str, settings: Mapping[str, Any]) -> str:
    """A folder name fixed by the content and the publishing settings: publishing the same scores
    again finds the same folder (and does nothing), new scores get a new one."""
    text = json.dumps({"content": fingerprint, **settings}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def extension(fmt: str, compression: str) -> str:
    """File name ending of a data file, e.g. `.snappy.parquet`, `.json.gz`."""
    if fmt == "parquet":
        return ".parquet" if compression == "none" else f".{compression}.parquet"
    return ".json.gz" if compression == "gzip" else ".json"

