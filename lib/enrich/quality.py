"""Input checks: schema drift is an error, invalid rows are quarantined with a reason.

`check_event_schema` refuses a dataset whose columns have the wrong type (naming column, expected
and found type). `validate_events` flattens the XDM fields the pipeline uses into plain columns (a
missing optional field becomes an absent signal: null) and gives every row a `reason` — null for
a valid row, else the first check it failed. Invalid rows keep their original content as JSON
(`raw`), so the quarantine table has one shape whatever the input's schema.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    DataType,
    MapType,
    NumericType,
    StringType,
    StructType,
    TimestampNTZType,
    TimestampType,
)

from enrich import tables, utc, xdm
from enrich.errors import InputError

# Reasons in the order they are checked; a row is quarantined for the first one it fails.
REASONS: tuple[str, ...] = (
    "malformed_record",
    "missing_id",
    "missing_identity",
    "missing_timestamp",
    "unparseable_timestamp",
    "future_timestamp",
    "negative_price",
    "missing_price",
    "duplicate_id",
)

REQUIRED_EVENT_FIELDS = ("_id", "timestamp", "identityMap")

# Optional fields the pipeline reads, and the kind of type each must have when present.
_NUMBER, _STRING = "a number", "a string"
OPTIONAL_EVENT_FIELDS: dict[str, str] = {
    "eventType": _STRING,
    "commerce.order.priceTotal": _NUMBER,
    "commerce.order.purchaseID": _STRING,
    "commerce.purchases.value": _NUMBER,
    "commerce.productViews.value": _NUMBER,
    "commerce.productListAdds.value": _NUMBER,
    "commerce.checkouts.value": _NUMBER,
    "web.webPageDetails.pageViews.value": _NUMBER,
}


def field_type(schema: StructType, path: str) -> DataType | None:
    """Type of a dotted struct path, or None when any part of it is absent."""
    current: DataType = schema
    for part in path.split("."):
        if not isinstance(current, StructType) or part not in current.fieldNames():
            return None
        current = current[part].dataType
    return current


def _kind_ok(kind: str, found: DataType) -> bool:
    return isinstance(found, NumericType) if kind == _NUMBER else isinstance(found, StringType)


def identity_map_ok(found: DataType) -> bool:
    return (
        isinstance(found, MapType)
        and isinstance(found.keyType, StringType)
        and isinstance(found.valueType, ArrayType)
        and isinstance(found.valueType.elementType, StructType)
        and isinstance(field_type(found.valueType.elementType, "id"), StringType)
    )


def check_event_schema(schema: StructType, source: str) -> None:
    """Raise InputError listing every required column that is missing or mistyped."""
    problems = []
    for name in REQUIRED_EVENT_FIELDS:
        if field_type(schema, name) is None:
            problems.append(f"column '{name}' is missing")
    checks: list[tuple[str, str, Callable[[DataType], bool]]] = [
        ("_id", _STRING, lambda t: isinstance(t, StringType)),
        ("timestamp", "a string or timestamp",
         lambda t: isinstance(t, StringType | TimestampType | TimestampNTZType)),
        ("identityMap", "map<string, array<struct<id: string, ...>>>", identity_map_ok),
    ]
    checks += [(path, kind, lambda t, k=kind: _kind_ok(k, t)) for path, kind in OPTIONAL_EVENT_FIELDS.items()]
    items = field_type(schema, "productListItems")
    if items is not None:
        checks.append(("productListItems", "array<struct<...>>",
                       lambda t: isinstance(t, ArrayType) and isinstance(t.elementType, StructType)))
    for path, expected, ok in checks:
        found = field_type(schema, path)
        if found is not None and not ok(found):
            problems.append(f"column '{path}': expected {expected}, found {found.simpleString()}")
    if problems:
        raise InputError(f"{source}: schema does not match the XDM ExperienceEvent contract: " + "; ".join(problems))


def _optional(df: DataFrame, path: str, cast: str) -> Column:
    """The field when the dataset has it, else a typed null (an absent signal, not a crash)."""
    if field_type(df.schema, path) is None:
        return F.lit(None).cast(cast)
    return F.col(path).cast(cast)


def _categories(df: DataFrame) -> Column:
    """Distinct category names (or ids) of the event's productListItems."""
    item_type = field_type(df.schema, "productListItems")
    if item_type is None:
        return F.array().cast("array<string>")
    element = item_type.elementType
    cats = field_type(element, "productCategories")
    if not (isinstance(cats, ArrayType) and isinstance(cats.elementType, StructType)):
        return F.array().cast("array<string>")
    names = [n for n in ("categoryName", "categoryID") if n in cats.elementType.fieldNames()]
    if not names:
        return F.array().cast("array<string>")

    def name(c: Column) -> Column:
        return F.coalesce(*[F.nullif(F.trim(c[n].cast("string")), F.lit("")) for n in names])

    per_item = F.transform(F.coalesce(F.col("productListItems"), F.array()),
                           lambda item: F.transform(F.coalesce(item["productCategories"], F.array()), name))
    return F.array_distinct(F.filter(F.flatten(per_item), lambda c: c.isNotNull() & (c != "")))


def _identities() -> Column:
    """identityMap as array<struct<ns, id>>, empty ids dropped."""
    # Identities may carry only `id` (authenticatedState and primary are optional), so no typed
    # default for the map itself: a null map yields a null array, replaced at the end.
    nested = F.transform(F.map_entries("identityMap"), lambda e: F.transform(
        F.coalesce(e["value"], F.array()), lambda i: F.struct(e["key"].alias("ns"), i["id"].alias("id"))))
    usable = F.filter(F.flatten(nested), lambda i: i["id"].isNotNull() & (F.trim(i["id"]) != "") & i["ns"].isNotNull())
    return F.coalesce(usable, F.array().cast("array<struct<ns:string,id:string>>"))


def snapshot_without_identity(snapshot: DataFrame, run_id: str) -> DataFrame:
    """Snapshot rows with no usable identity, in the quarantine table's shape."""
    return snapshot.where(F.size(_identities()) == 0).select(
        F.lit("snapshot").alias("source"), F.lit("missing_identity").alias("reason"),
        F.lit(None).cast("string").alias("event_id"), F.to_json(F.struct(*snapshot.columns)).alias("raw"),
        F.lit(run_id).alias("run_id"), F.current_timestamp().alias("quarantined_at"))


def _is(event_type: str, measure: Column) -> Column:
    return F.coalesce(F.col("event_type") == event_type, F.lit(False)) | (F.coalesce(measure, F.lit(0.0)) > 0)


# Columns the checks parse, kept until de-duplication: a duplicate's `raw` is made of them.
_PARSED = ["event_id", "ts_text", "event_type", "identities", "price", "order_id", "categories",
           "_purchases", "_product_views", "_cart_adds", "_checkouts", "_page_views"]
# Working columns of the checks, gone from the validated output.
_WORKING = ["ts_text", "price", "_purchases", "_product_views", "_cart_adds", "_checkouts", "_page_views",
            "row_reason", "_raw", "_fingerprint", "_copy", "_keeper"]


def check_rows(clock: dt.datetime) -> Callable[[DataFrame], DataFrame]:
    """Flatten raw XDM events and run every row check but `duplicate_id` (narrow: no shuffle).

    Adds `row_reason` (null when the row passes), `_raw` (the original row as JSON, only for rows
    that fail), `_fingerprint` (hash of the parsed content) and `_copy` (an id of the physical row,
    which tells identical copies apart). Materialize the result once before `duplicate_keepers`
    and `mark_duplicates` read it, so that both see the same `_copy` ids.
    """
    clock_lit = utc.instant(clock)  # naive means UTC

    def transform(raw: DataFrame) -> DataFrame:
        corrupt = tables.CORRUPT_RECORD in raw.columns
        original = [c for c in raw.columns if c != tables.CORRUPT_RECORD]
        flat = raw.select(
            F.col("_id").alias("event_id"),
            F.col("timestamp").cast("string").alias("ts_text"),
            # try_cast parses ISO-8601 with 'T', fractions and a zone; anything else is null.
            F.col("timestamp").try_cast("timestamp").alias("ts"),
            _optional(raw, "eventType", "string").alias("event_type"),
            _identities().alias("identities"),
            _optional(raw, "commerce.order.priceTotal", "double").alias("price"),
            _optional(raw, "commerce.order.purchaseID", "string").alias("order_id"),
            _optional(raw, "commerce.purchases.value", "double").alias("_purchases"),
            _optional(raw, "commerce.productViews.value", "double").alias("_product_views"),
            _optional(raw, "commerce.productListAdds.value", "double").alias("_cart_adds"),
            _optional(raw, "commerce.checkouts.value", "double").alias("_checkouts"),
            _optional(raw, "web.webPageDetails.pageViews.value", "double").alias("_page_views"),
            _categories(raw).alias("categories"),
            # Built only for rows that fail a row check (few).
            F.struct(*original).alias("_original"),
            (F.col(tables.CORRUPT_RECORD) if corrupt else F.lit(None).cast("string")).alias("_corrupt"),
        )
        flat = flat.select(
            "*",
            _is(xdm.EVENT_PAGE_VIEW, F.col("_page_views")).alias("is_page_view"),
            _is(xdm.EVENT_PRODUCT_VIEW, F.col("_product_views")).alias("is_product_view"),
            _is(xdm.EVENT_CART_ADD, F.col("_cart_adds")).alias("is_cart_add"),
            _is(xdm.EVENT_CHECKOUT, F.col("_checkouts")).alias("is_checkout"),
            _is(xdm.EVENT_PURCHASE, F.col("_purchases")).alias("is_purchase"),
        )
        text = F.trim(F.col("ts_text"))
        row_reason = (
            F.when(F.col("_corrupt").isNotNull(), F.lit("malformed_record"))
            .when(F.col("event_id").isNull() | (F.trim(F.col("event_id")) == ""), F.lit("missing_id"))
            .when(F.size("identities") == 0, F.lit("missing_identity"))
            .when(F.col("ts_text").isNull() | (text == ""), F.lit("missing_timestamp"))
            .when(F.col("ts").isNull(), F.lit("unparseable_timestamp"))
            .when(F.col("ts") > clock_lit, F.lit("future_timestamp"))
            .when(F.col("price") < 0, F.lit("negative_price"))
            .when(F.col("is_purchase") & F.col("price").isNull(), F.lit("missing_price"))
        )
        return flat.withColumn("row_reason", row_reason).select(
            "*",
            F.when(F.col("row_reason").isNotNull(), F.coalesce("_corrupt", F.to_json("_original"))).alias("_raw"),
            F.xxhash64(*_PARSED).alias("_fingerprint"),
            F.monotonically_increasing_id().alias("_copy"),
        ).drop("_original", "_corrupt")

    return transform


def duplicate_keepers(rows: DataFrame) -> DataFrame:
    """(event_id, _keeper): for each `_id` on more than one row, the `_copy` that is kept.

    Preference: a row passing the other checks, then the earliest timestamp, then by content hash
    (identical copies are interchangeable; `_copy` only picks one). Only `_id`s and small partial
    aggregates are shuffled, never the rows; the result has one row per duplicated `_id`.
    """
    preference = F.struct(F.col("row_reason").isNotNull(), F.col("ts").isNull(), F.col("ts"),
                          F.col("_fingerprint"), F.col("_copy"))
    return (
        rows.where(F.col("event_id").isNotNull())
        .groupBy("event_id").agg(F.count(F.lit(1)).alias("_n"), F.min_by("_copy", preference).alias("_keeper"))
        .where(F.col("_n") > 1).select("event_id", "_keeper")
    )


def mark_duplicates(keepers: DataFrame) -> Callable[[DataFrame], DataFrame]:
    """Give every row its `reason` and `raw`: its row check's, or `duplicate_id` for a copy not kept.

    Output: event_id, ts, event_type, identities, is_page_view, is_product_view, is_cart_add,
    is_checkout, is_purchase, revenue, order_id, categories, reason, raw, and any column the caller
    added to the rows.
    """

    def transform(rows: DataFrame) -> DataFrame:
        dropped = F.col("_keeper").isNotNull() & (F.col("_copy") != F.col("_keeper"))
        reason = F.coalesce(F.col("row_reason"), F.when(dropped, F.lit("duplicate_id")))
        marked = rows.join(keepers, "event_id", "left").withColumn("reason", reason)
        extra = [c for c in rows.columns if c not in {*_PARSED, *_WORKING, "ts", "is_page_view", "is_product_view",
                                                       "is_cart_add", "is_checkout", "is_purchase"}]
        return marked.select(
            "event_id", "ts", "event_type", "identities", "is_page_view", "is_product_view", "is_cart_add",
            "is_checkout", "is_purchase",
            F.when(F.col("is_purchase"), F.col("price")).alias("revenue"),
            "order_id", "categories", "reason",
            # A duplicate's raw content is its parsed fields (the kept copy holds the same _id).
            F.when(F.col("row_reason").isNotNull(), F.col("_raw"))
            .when(F.col("reason").isNotNull(), F.to_json(F.struct(*_PARSED))).alias("raw"),
            *extra,
        )

    return transform


def validate_events(clock: dt.datetime) -> Callable[[DataFrame], DataFrame]:
    """`check_rows`, then `duplicate_id` for the copies not kept: a `reason` per row (null when valid).

    A pure composition for small inputs and tests; the features job materializes `check_rows`
    once and broadcasts the keepers (see `mark_duplicates` for the output).
    """

    def transform(raw: DataFrame) -> DataFrame:
        rows = raw.transform(check_rows(clock))
        return rows.transform(mark_duplicates(duplicate_keepers(rows)))

    return transform


def reason_counts() -> dict[str, Column]:
    """Aggregates for `DataFrame.observe`: rows checked, and invalid rows per reason."""
    metrics = {"rows": F.count(F.lit(1)), "invalid": F.count("reason")}
    metrics.update({reason: F.count_if(F.col("reason") == reason) for reason in REASONS})
    return metrics


def quarantine_rows(checked: DataFrame, source: str, run_id: str) -> DataFrame:
    """The invalid rows in the quarantine table's shape."""
    return checked.where(F.col("reason").isNotNull()).select(
        F.lit(source).alias("source"), "reason", "event_id", "raw", F.lit(run_id).alias("run_id"),
        F.current_timestamp().alias("quarantined_at"),
    )


def enforce_threshold(counts: dict[str, int], max_fraction: float, source: str) -> None:
    """Stop the run when too many rows are invalid, naming the reasons and their counts."""
    rows, invalid = counts.get("rows", 0), counts.get("invalid", 0)
    if rows == 0:
        raise InputError(f"{source}: no rows")
    if invalid / rows > max_fraction:
        detail = ", ".join(f"{r}={counts[r]:,}" for r in REASONS if counts.get(r))
        raise InputError(
            f"{source}: {invalid:,} of {rows:,} rows are invalid ({invalid / rows:.1%} > "
            f"quality.max_invalid_fraction {max_fraction:.1%}): {detail}; they are in the quarantine table"
        )
