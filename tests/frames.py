"""DataFrame assertions that stay inside Spark, for frames too large to compare row by row in Python."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F


def as_json_rows(df: DataFrame) -> DataFrame:
    """Each row as canonical JSON text (maps and nested structs included), in sorted column order."""
    return df.select(F.to_json(F.struct(*sorted(df.columns))).alias("row"))


def assert_same_rows(actual: DataFrame, expected: DataFrame) -> None:
    """The two frames hold the same multiset of rows (order ignored, duplicates counted)."""
    assert sorted(actual.columns) == sorted(expected.columns), (actual.columns, expected.columns)
    a, e = as_json_rows(actual), as_json_rows(expected)
    missing = e.exceptAll(a).limit(3).collect()
    extra = a.exceptAll(e).limit(3).collect()
    assert not missing and not extra, f"missing rows: {missing}\nunexpected rows: {extra}"
