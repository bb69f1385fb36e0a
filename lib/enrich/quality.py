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

from pyspark.sql import Column, DataFrame, Window
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

    # Every item's categories in one array, natively when every item has them (one null would null
    # the flatten; then the items without them are dropped first).
    items = F.col("productListItems.productCategories")
    categories = F.coalesce(F.flatten(items), F.flatten(F.array_compact(items)))
    empty = F.array().cast("array<string>")
    # The general case names each category in a lambda (interpreted, per category): blank names
    # are null, a blank name falls back to the id. A lambda also keeps the parse's last projection
    # out of whole-stage code generation, which suits it: generated whole, that projection is one
    # method too big for the JIT to compile (see `session.local_conf`), so it is faster as the
    # separate small methods Spark generates for a projection it does not fuse with the scan.
    named = F.coalesce(F.array_distinct(F.array_compact(F.transform(categories, name))), empty)
    if not isinstance(cats.elementType[names[0]].dataType, StringType):
        return named
    # The common case, natively: no first-choice name is null, empty or padded with spaces (checked
    # on the names joined, each between two separators), so the names are the answer as they are.
    first = categories[names[0]]
    sep, null = "\u0001", "\u0002"
    joined = F.concat(F.lit(sep), F.array_join(first, sep, null), F.lit(sep))
    clean = ~(joined.contains(null) | joined.contains(sep + sep) | joined.contains(sep + " ")
              | joined.contains(" " + sep))
    return (F.when(categories.isNull() | (F.size(categories) == 0), empty)
            .when(clean, F.array_distinct(first)).otherwise(named))


def usable_identity(ns: Column, identity: Column) -> Column:
    """An identity the pipeline uses: a namespace and a non-blank id."""
    return ns.isNotNull() & identity.isNotNull() & (F.trim(identity) != "")


def identities_of(entries: Column) -> Column:
    """Map entries (an `identity_key`) as array<struct<ns, id>>, empty ids dropped."""
    # Identities may carry only `id` (authenticatedState and primary are optional), so no typed
    # default for the entries themselves: null entries yield a null array, replaced at the end.
    nested = F.transform(entries, lambda e: F.transform(
        F.coalesce(e["value"], F.array()), lambda i: F.struct(e["key"].alias("ns"), i["id"].alias("id"))))
    usable = F.filter(F.flatten(nested), lambda i: usable_identity(i["ns"], i["id"]))
    return F.coalesce(usable, F.array().cast("array<struct<ns:string,id:string>>"))


def _identities() -> Column:
    """identityMap as array<struct<ns, id>>, empty ids dropped."""
    return identities_of(F.map_entries("identityMap"))


def snapshot_without_identity(snapshot: DataFrame, run_id: str) -> DataFrame:
    """Snapshot rows with no usable identity, in the quarantine table's shape."""
    return snapshot.where(F.size(_identities()) == 0).select(
        F.lit("snapshot").alias("source"), F.lit("missing_identity").alias("reason"),
        F.lit(None).cast("string").alias("event_id"), F.to_json(F.struct(*snapshot.columns)).alias("raw"),
        F.lit(run_id).alias("run_id"), F.current_timestamp().alias("quarantined_at"))


def identity_key(identity_map: Column) -> Column:
    """The identityMap as a sorted array of its entries: a groupable, joinable key for the event's
    identities, computed natively (no lambda per event). Events with the same identities in any
    entry order share a key; `identity.key_node_rows` turns distinct keys into graph nodes."""
    return F.sort_array(F.map_entries(identity_map))


def _has_identity(identity_map: Column) -> Column:
    """Some identity has a non-blank id (natively: the ids concatenated, null ids skipped).

    Almost every event's first identity has an id, which settles it without building arrays."""
    first = F.try_element_at(F.try_element_at(F.map_values(identity_map), F.lit(1)), F.lit(1))["id"]
    ids = F.flatten(F.array_compact(F.map_values(identity_map)))["id"]
    every = F.coalesce(F.trim(F.concat_ws("", ids)) != "", F.lit(False))
    return F.when(F.coalesce(F.trim(first) != "", F.lit(False)), F.lit(True)).otherwise(every)


def parse_events(clock: dt.datetime) -> Callable[[DataFrame], DataFrame]:
    """Flatten raw XDM events and run every row check but `duplicate_id` (narrow: no shuffle).

    Output: event_id, event_key (its 64-bit hash, null without an id: what duplicates are found by
    and what orders a profile's events at one instant), ts, event_type, identity_key, key_hash (its
    64-bit hash: what the events join their resolution on), is_page_view, is_product_view,
    is_cart_add, is_checkout, is_purchase, revenue, order_id, categories, row_reason (null when the
    row passes) and raw (the original row as JSON, built only where it is read: for the rows that
    go to quarantine). Everything but `categories` and `raw` is a native expression, so a pass that
    selects a few columns reads and computes only those.
    """
    clock_lit = utc.instant(clock)  # naive means UTC

    def transform(raw: DataFrame) -> DataFrame:
        corrupt = tables.CORRUPT_RECORD in raw.columns
        original = [c for c in raw.columns if c != tables.CORRUPT_RECORD]
        corrupt_text = F.col(tables.CORRUPT_RECORD) if corrupt else F.lit(None).cast("string")
        key = identity_key(F.col("identityMap"))
        flags = {
            "is_page_view": (xdm.EVENT_PAGE_VIEW, "web.webPageDetails.pageViews.value"),
            "is_product_view": (xdm.EVENT_PRODUCT_VIEW, "commerce.productViews.value"),
            "is_cart_add": (xdm.EVENT_CART_ADD, "commerce.productListAdds.value"),
            "is_checkout": (xdm.EVENT_CHECKOUT, "commerce.checkouts.value"),
            "is_purchase": (xdm.EVENT_PURCHASE, "commerce.purchases.value"),
        }
        event_type = _optional(raw, "eventType", "string")
        # In steps, each value computed once and read by name: in one projection, an expression in
        # a later branch of a CASE (the row checks) is evaluated anew, so the timestamp would be
        # parsed up to five times per row and the checks run twice (once more for `raw`). Spark
        # keeps the steps apart because their expressions are not cheap to repeat.
        fields = raw.select(
            *original,
            corrupt_text.alias("_corrupt"),
            F.col("timestamp").try_cast("timestamp").alias("_ts"),  # ISO-8601 with 'T', fractions, a zone
            _optional(raw, "commerce.order.priceTotal", "double").alias("_price"),
            *[(F.coalesce(event_type == kind, F.lit(False))
               | (F.coalesce(_optional(raw, path, "double"), F.lit(0.0)) > 0)).alias(name)
              for name, (kind, path) in flags.items()],
        )
        ts, price, ts_text = F.col("_ts"), F.col("_price"), F.col("timestamp").cast("string")
        row_reason = (
            F.when(F.col("_corrupt").isNotNull(), F.lit("malformed_record"))
            .when(F.col("_id").isNull() | (F.trim(F.col("_id")) == ""), F.lit("missing_id"))
            .when(~_has_identity(F.col("identityMap")), F.lit("missing_identity"))
            .when(ts_text.isNull() | (F.trim(ts_text) == ""), F.lit("missing_timestamp"))
            .when(ts.isNull(), F.lit("unparseable_timestamp"))
            .when(ts > clock_lit, F.lit("future_timestamp"))
            .when(price < 0, F.lit("negative_price"))
            .when(F.col("is_purchase") & price.isNull(), F.lit("missing_price"))
        )
        checked = fields.select("*", row_reason.alias("row_reason"))
        return checked.select(
            F.col("_id").alias("event_id"),
            id_hash(F.col("_id")).alias("event_key"),
            ts.alias("ts"),
            event_type.alias("event_type"),
            key.alias("identity_key"),
            F.xxhash64(key).alias("key_hash"),
            *flags,
            F.when(F.col("is_purchase"), price).alias("revenue"),
            _optional(raw, "commerce.order.purchaseID", "string").alias("order_id"),
            _categories(raw).alias("categories"),
            "row_reason",
            # Built for the rows that fail a check (few); a duplicate's is built where it is found.
            F.when(F.col("row_reason").isNotNull(), F.coalesce(F.col("_corrupt"), F.to_json(F.struct(*original))))
            .alias("raw"),
        )

    return transform


PARSED = ("event_id", "ts", "event_type", "identity_key", "is_page_view", "is_product_view", "is_cart_add",
          "is_checkout", "is_purchase", "revenue", "order_id", "categories")


def _preference() -> Column:
    """Which copy of a duplicated `_id` is kept: a row passing the other checks, then the earliest
    timestamp, then the smallest hash of its parsed fields. A passing copy is seen only through
    those fields (a dropped copy's `raw` shows some of them), so copies equal in all of these are
    interchangeable; a copy failing a check keeps its own reason whichever is kept."""
    return F.struct(F.col("row_reason").isNotNull(), F.col("ts").isNull(), F.col("ts"), F.xxhash64(*PARSED))


def id_hash(event_id: Column) -> Column:
    """The 64-bit hash of an `_id` (null when there is none): a row's `event_key`."""
    return F.when(event_id.isNotNull(), F.xxhash64(event_id))


def repeated_ids(raw: DataFrame, broadcast_max_ids: int = 1_000_000) -> DataFrame:
    """(event_key, _repeated): the `_id` hashes two raw rows or more share, materialized (this runs
    the count), marked for broadcast when there are at most `broadcast_max_ids`.

    A pass of its own over the raw events that reads their `_id` alone (a column of the files), so
    that the pass which parses and keeps every row already knows which may be a duplicate
    (`flag_repeated`). Counting 64-bit hashes is a hash aggregation of longs: no row and no string
    is shuffled. Hash collisions fall out later, where the candidates are grouped by `_id`
    (`duplicate_copies`: a group of one drops nothing).
    """
    keys = raw.select(id_hash(F.col("_id")).alias("event_key")).where(F.col("event_key").isNotNull())
    repeated = keys.groupBy("event_key").count().where(F.col("count") > 1).select(
        "event_key", F.lit(True).alias("_repeated"))
    return tables.small_side(repeated, broadcast_max_ids)


def flag_repeated(repeated: DataFrame) -> Callable[[DataFrame], DataFrame]:
    """Parsed rows (with `_copy`, an id of the physical row) with `_repeated`: whether their
    `event_key` is one of `repeated` (`repeated_ids`). A row's `event_id` is kept only where it may
    leave the events (failing a check, or a possible duplicate): no later step reads the id of a
    row that stays, which is ordered by `event_key`. The `_id` strings are most of a parsed row."""

    def transform(rows: DataFrame) -> DataFrame:
        flagged = rows.join(repeated, "event_key", "left").withColumn(
            "_repeated", F.coalesce("_repeated", F.lit(False)))
        may_leave = F.col("row_reason").isNotNull() | F.col("_repeated")
        return flagged.withColumn("event_id", F.when(may_leave, F.col("event_id")))

    return transform


def leaving(rows: DataFrame) -> DataFrame:
    """The rows that may leave the events, materialized: every row failing a check, and every copy
    of an `_id` whose hash is repeated (`flag_repeated`), so that the quarantine and the choice
    among copies read only these few rows afterwards. Run first on kept `rows`, this is the pass
    that keeps them."""
    # Without adaptive execution: it would fill the not yet kept `rows` in a stage of its own and
    # read them back (10M events: 2.7s more), where this way the task that keeps a row also
    # filters it.
    with tables.spark_conf(rows.sparkSession, {"spark.sql.adaptive.enabled": "false"}):
        return rows.where(F.col("row_reason").isNotNull() | F.col("_repeated")).localCheckpoint()


def duplicate_copies(candidates: DataFrame) -> DataFrame:
    """(_copy, _dropped, _parsed): the copies of a duplicated `_id` that are not the one kept, each
    with its parsed fields as JSON (`_parsed`, what quarantine keeps of a duplicate).

    `candidates` are the rows whose `_id` hash is repeated (`leaving`, a few rows; each has an
    `_id`, since a row without one has no hash), grouped here by `_id`. Marking the rows
    (`mark_duplicates`) is then a join on the 64-bit `_copy`, not on the `_id` string, and the
    copies dropped bring the fields quarantine keeps of them. Lazy.
    """
    groups = candidates.groupBy("event_id").agg(
        F.min_by("_copy", F.struct(_preference(), F.col("_copy"))).alias("_keeper"),
        F.collect_list(F.struct("_copy", _parsed().alias("_parsed"))).alias("_copies"))
    copies = groups.select("_keeper", F.inline("_copies"))
    return copies.where(F.col("_copy") != F.col("_keeper")).select("_copy", F.lit(True).alias("_dropped"), "_parsed")


def _parsed() -> Column:
    """A row's parsed fields as JSON: what quarantine keeps of a duplicate, which passed its checks
    (the kept copy holds the same _id)."""
    return F.to_json(F.struct("event_id", "ts", "event_type", "identity_key", "revenue", "order_id", "categories"))


def mark_duplicates(dropped: DataFrame) -> Callable[[DataFrame], DataFrame]:
    """Give every row its `reason` (its row check's, or `duplicate_id` for a copy in `dropped`, from
    `duplicate_copies`) and `raw` (a failed check's original row, or a duplicate's `_parsed`);
    `_copy`, `row_reason` and the duplicate search's `_repeated` go."""

    def transform(rows: DataFrame) -> DataFrame:
        reason = F.coalesce(F.col("row_reason"), F.when(F.col("_dropped"), F.lit("duplicate_id")))
        marked = rows.join(dropped, "_copy", "left").withColumn("reason", reason)
        raw = F.when(F.col("reason").isNotNull(), F.coalesce(F.col("raw"), F.col("_parsed")))
        return marked.withColumn("raw", raw).drop("_copy", "_dropped", "_parsed", "row_reason", "_repeated")

    return transform


def validate_events(clock: dt.datetime) -> Callable[[DataFrame], DataFrame]:
    """`parse_events`, then `duplicate_id` for the copies not kept: a `reason` per row (null when
    valid), `raw` set only on invalid rows, and the event's `identities` (array<struct<ns, id>>).

    The plain composition, for small inputs, tests and labels: it numbers every `_id`'s copies in
    a window (a shuffle of all rows). The features job materializes the parsed rows once and
    shuffles only id hashes (`repeated_ids`, `flag_repeated`, `leaving`, `duplicate_copies`,
    `mark_duplicates`);
    both keep the same copy.
    """

    def transform(raw: DataFrame) -> DataFrame:
        parsed = raw.transform(parse_events(clock))
        copies = Window.partitionBy("event_id").orderBy(_preference())
        duplicate = F.col("row_reason").isNull() & F.col("event_id").isNotNull() & (F.row_number().over(copies) > 1)
        reason = F.coalesce(F.col("row_reason"), F.when(duplicate, F.lit("duplicate_id")))
        return parsed.select(
            "*", reason.alias("reason"),
            identities_of(F.col("identity_key")).alias("identities"),
        ).select(*[c for c in parsed.columns if c not in ("raw", "row_reason")], "identities", "reason",
                 F.when(F.col("reason").isNotNull(), F.coalesce(F.col("raw"), _parsed())).alias("raw"))

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
