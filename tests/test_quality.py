"""Row checks, de-duplication, absent optional fields and schema drift."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from enrich import quality, tables, xdm
from enrich.errors import InputError
from pyspark.sql import functions as F

CLOCK = dt.datetime(2025, 6, 1)
MINIMAL = "_id string, timestamp string, identityMap map<string, array<struct<id:string>>>"


def ids(value: str | None = "E1") -> dict | None:
    return None if value is None else {"ECID": [(value,)]}


def check(spark, rows, schema=MINIMAL):
    df = spark.createDataFrame(rows, schema).transform(quality.validate_events(CLOCK))
    return {r.event_id: r for r in df.collect()}


def test_each_row_check_gives_its_reason(spark):
    got = check(spark, [
        ("ok", "2025-01-01T10:00:00.000Z", ids()),
        ("no-map", "2025-01-01T10:00:00Z", None),
        ("empty-map", "2025-01-01T10:00:00Z", {}),
        ("blank-id", "2025-01-01T10:00:00Z", {"ECID": [(" ",)]}),
        ("null-ids", "2025-01-01T10:00:00Z", {"ECID": None, "Email": [None, (None,)]}),
        ("one-id", "2025-01-01T10:00:00Z", {"ECID": None, "Email": [None, (" e ",)]}),
        ("no-ts", None, ids()),
        ("blank-ts", "  ", ids()),
        ("bad-ts", "01/02/2025 10:00", ids()),
        ("future", "2025-06-01T00:00:01Z", ids()),
        ("offset", "2025-01-01T12:00:00+02:00", ids()),
        (None, "2025-01-01T10:00:00Z", ids()),
    ])
    reasons = {k: v.reason for k, v in got.items()}
    assert reasons == {
        "ok": None, "no-map": "missing_identity", "empty-map": "missing_identity", "blank-id": "missing_identity",
        "null-ids": "missing_identity", "one-id": None,
        "no-ts": "missing_timestamp", "blank-ts": "missing_timestamp", "bad-ts": "unparseable_timestamp",
        "future": "future_timestamp", "offset": None, None: "missing_id",
    }
    assert got["offset"].ts == dt.datetime(2025, 1, 1, 10, 0)  # zones are honoured, kept in UTC
    assert got["ok"].raw is None and '"_id":"bad-ts"' in got["bad-ts"].raw


def test_missing_optional_fields_are_absent_signals(spark):
    got = check(spark, [("ok", "2025-01-01T10:00:00Z", ids())])["ok"]
    assert got.reason is None
    assert not (got.is_page_view or got.is_product_view or got.is_cart_add or got.is_checkout or got.is_purchase)
    assert got.revenue is None and got.event_type is None and got.categories == []


def test_prices_are_checked_on_purchases(spark):
    schema = MINIMAL + ", eventType string, commerce struct<order:struct<priceTotal:double>>"
    got = check(spark, [
        ("neg", "2025-01-01T10:00:00Z", ids(), xdm.EVENT_PURCHASE, ((-5.0,),)),
        ("none", "2025-01-01T10:00:00Z", ids(), xdm.EVENT_PURCHASE, ((None,),)),
        ("view", "2025-01-01T10:00:00Z", ids(), xdm.EVENT_PAGE_VIEW, None),
        ("buy", "2025-01-01T10:00:00Z", ids(), xdm.EVENT_PURCHASE, ((12.5,),)),
    ], schema)
    assert {k: v.reason for k, v in got.items()} == {"neg": "negative_price", "none": "missing_price",
                                                     "view": None, "buy": None}
    assert got["buy"].is_purchase and got["buy"].revenue == 12.5 and got["view"].revenue is None


def test_duplicates_keep_one_valid_earliest_copy(spark):
    rows = [
        ("d1", "2025-01-02T00:00:00Z", ids("late")),
        ("d1", "2025-01-01T00:00:00Z", ids("early")),
        ("d1", "bad", ids("broken")),
        ("d2", "2025-01-01T00:00:00Z", ids("same")),
        ("d2", "2025-01-01T00:00:00Z", ids("same")),
    ]
    for order, partitions in ((rows, 1), (rows[::-1], 3)):
        df = spark.createDataFrame(order, MINIMAL).repartition(partitions).transform(quality.validate_events(CLOCK))
        valid = sorted((r.event_id, r.identities[0].id) for r in df.where("reason IS NULL").collect())
        assert valid == [("d1", "early"), ("d2", "same")]  # exactly one copy each, whatever the order
        reasons = sorted(r.reason for r in df.where("reason IS NOT NULL").collect())
        assert reasons == ["duplicate_id", "duplicate_id", "unparseable_timestamp"]


def test_the_kept_rows_hold_an_id_only_where_the_row_may_leave(spark):
    """The features job keeps every parsed row, but the `_id` strings (most of a row) only where the
    row fails a check or shares its id's hash with another row; every row keeps that hash."""
    raw = spark.createDataFrame([
        ("a", "2025-01-01T00:00:00Z", ids()),
        ("b", "2025-01-01T00:00:00Z", ids()),
        ("b", "2025-01-02T00:00:00Z", ids()),
        ("c", "bad", ids()),
    ], MINIMAL)
    repeated = quality.repeated_ids(raw)
    assert repeated.count() == 1
    rows = (raw.transform(quality.parse_events(CLOCK)).withColumn("_copy", F.monotonically_increasing_id())
            .transform(quality.flag_repeated(repeated)))
    hashes = dict(raw.select("_id", F.xxhash64("_id")).collect())
    got = sorted((r.event_key, r.event_id, r._repeated, r.row_reason) for r in rows.collect())
    assert got == sorted([
        (hashes["a"], None, False, None),
        (hashes["b"], "b", True, None),
        (hashes["b"], "b", True, None),
        (hashes["c"], "c", False, "unparseable_timestamp"),
    ])
    assert sorted(r.event_id for r in quality.leaving(rows).collect()) == ["b", "b", "c"]


def test_each_row_is_parsed_and_checked_once(spark):
    """The timestamp is parsed and the row checks run once per row: in one projection, the checks'
    later branches would parse the timestamp again and `raw` would repeat every check."""
    rows = spark.createDataFrame([("a", "2025-01-01T10:00:00Z", ids())], MINIMAL)
    plan = rows.transform(quality.parse_events(CLOCK))._jdf.queryExecution().optimizedPlan().toString()
    assert plan.count("try_cast(timestamp") == 1
    assert plan.count("THEN missing_identity") == 1


def test_categories_come_from_product_list_items(spark):
    schema = MINIMAL + (", productListItems array<struct<SKU:string, productCategories:"
                        "array<struct<categoryID:string, categoryName:string>>>>")
    got = check(spark, [
        ("p", "2025-01-01T10:00:00Z", ids(),
         [("s1", [("C1", "Shoes"), ("C2", None)]), ("s2", [("C1", "Shoes"), None]), ("s3", None), None]),
        ("blank", "2025-01-01T10:00:00Z", ids(), [("s1", [(" ", " "), ("C3", "  ")])]),
        ("none", "2025-01-01T10:00:00Z", ids(), None),
    ], schema)
    assert sorted(got["p"].categories) == ["C2", "Shoes"]  # names, falling back to ids; distinct
    assert got["blank"].categories == ["C3"] and got["none"].categories == []


def _expected_categories(items):
    """The rule, in Python: per category its trimmed name, else its trimmed id (blank is none);
    distinct, in order of first appearance."""
    out = []
    for item in items or []:
        for cat in (item[1] if item else None) or []:
            if cat is None:
                continue
            name = next((v.strip(" ") for v in (cat[1], cat[0]) if v is not None and v.strip(" ")), None)
            if name is not None and name not in out:
                out.append(name)
    return out


def test_categories_equal_the_rule_on_random_names(spark):
    """The native common case and the general case together give the rule's answer, whatever the
    names hold: nulls, blanks, spaces at either end, the characters the common case's check uses."""
    rng = random.Random(7)
    pieces = ["Shoes", "Bags", "Shoes ", " Bags", "", "  ", None, "\u0001", "a\u0001 b", "\u0002", "x y"]

    def items():
        if rng.random() < 0.1:
            return None
        pool = pieces if rng.random() < 0.5 else ["Shoes", "Bags", "x y"]
        return [None if rng.random() < 0.05 else
                (f"s{i}", None if rng.random() < 0.1 else
                 [None if rng.random() < 0.05 else (rng.choice(pieces), rng.choice(pool))
                  for _ in range(rng.randint(0, 3))])
                for i in range(rng.randint(0, 3))]

    rows = [(f"e{n}", "2025-01-01T10:00:00Z", ids(), items()) for n in range(400)]
    schema = MINIMAL + (", productListItems array<struct<SKU:string, productCategories:"
                        "array<struct<categoryID:string, categoryName:string>>>>")
    got = check(spark, rows, schema)
    wrong = [(r[0], r[3], got[r[0]].categories) for r in rows if got[r[0]].categories != _expected_categories(r[3])]
    assert not wrong, wrong[:3]
    clean = sum(1 for r in rows if r[3] and all(i and i[1] and all(c and c[1] and c[1] == c[1].strip(" ")
                                                                   for c in i[1]) for i in r[3]))
    assert clean > 40  # the common case is exercised too (53 of the 400 with this seed)


def test_schema_drift_names_column_expected_and_found(spark):
    drifted = spark.createDataFrame([("x", "2025-01-01", {"ECID": [("a",)]}, (("12.5",),))],
                                    MINIMAL + ", commerce struct<order:struct<priceTotal:string>>")
    with pytest.raises(InputError, match=r"events: .*column 'commerce.order.priceTotal': expected a number, "
                                         r"found string"):
        quality.check_event_schema(drifted.schema, "events")
    no_ts = spark.createDataFrame([("x",)], "_id string").withColumn("identityMap", F.lit(None))
    with pytest.raises(InputError, match=r"column 'timestamp' is missing.*column 'identityMap': expected map"):
        quality.check_event_schema(no_ts.schema, "events")
    quality.check_event_schema(xdm.EXPERIENCE_EVENT, "events")  # the contract itself passes


def test_threshold_names_reasons_and_counts():
    counts = {"rows": 1000, "invalid": 80, "missing_identity": 50, "duplicate_id": 30}
    with pytest.raises(InputError, match=r"80 of 1,000 rows are invalid \(8.0% > quality.max_invalid_fraction "
                                         r"5.0%\): missing_identity=50, duplicate_id=30"):
        quality.enforce_threshold(counts, 0.05, "events")
    quality.enforce_threshold(counts, 0.08, "events")  # at the threshold is allowed


def test_json_lines_that_do_not_fit_the_schema_are_quarantined_whole(spark, tmp_path):
    lines = [
        '{"_id": "ok", "timestamp": "2025-01-01T10:00:00Z", "identityMap": {"ECID": [{"id": "E1"}]}}',
        '{"_id": "typo", "timestamp": "2025-01-01T10:00:00Z", "identityMap": {"ECID": [{"id": "E2"}]}, '
        '"commerce": {"order": {"priceTotal": "twelve"}}}',
        '{"_id": "cut", "timestamp": "2025-01-01T1',
    ]
    (tmp_path / "events.json").write_text("\n".join(lines) + "\n")
    raw = tables.read(spark, str(tmp_path), "json", schema=xdm.EXPERIENCE_EVENT)
    rows = raw.transform(quality.validate_events(CLOCK)).collect()
    assert len(rows) == 3  # nothing lost
    by_raw = {r.raw: r.reason for r in rows}
    assert by_raw == {None: None, lines[1]: "malformed_record", lines[2]: "malformed_record"}
