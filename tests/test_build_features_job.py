"""The features job end to end on generated data: quarantine, identities against the truth, re-runs."""

from __future__ import annotations

import contextlib
import datetime as dt
import io

import pytest
from enrich import datagen, identity, quality, tables, xdm
from enrich.config import load_config
from enrich.jobs import build_features, generate_data
from frames import assert_same_rows
from pyspark.sql import functions as F

GEN = ["--set", "generate.profiles=300", "--set", "generate.end_date=2025-07-01", "--set", "generate.seed=9",
       "--set", "generate.dirty_fraction=0.02"]
DATES = "features.as_of_dates=[2025-05-01, 2025-06-01]"


def run(job, args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = job.main(args)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("features") / "lake"
    assert run(generate_data, [*GEN, "--set", f"lake={root}"])[0] == 0
    code, out, err = run(build_features, [*GEN, "--set", f"lake={root}", "--set", DATES])
    assert code == 0, err
    return root, out


def test_quarantine_holds_every_dirty_row_with_its_reason(spark, lake):
    root, out = lake
    cfg = load_config([], [*GEN[1::2], f"lake={root}"])
    generated = datagen.events(datagen.people(spark, cfg.generate), cfg.generate)
    by_kind = dict(generated.where("dirty_kind IS NOT NULL").groupBy("dirty_kind").count().collect())
    expected = {
        "missing_identity": by_kind["null_identity_map"] + by_kind["empty_identity_map"],
        "missing_timestamp": by_kind["missing_timestamp"],
        "unparseable_timestamp": by_kind["unparseable_timestamp"],
        "future_timestamp": by_kind["future_timestamp"],
        "negative_price": by_kind["negative_price"],
        "missing_price": by_kind["null_price"],
        "duplicate_id": by_kind["duplicate_id"],
    }
    quarantine = tables.read(spark, f"{root}/quarantine/events", "delta")
    assert dict(quarantine.groupBy("reason").count().collect()) == expected
    assert quarantine.where("raw IS NULL OR run_id IS NULL").count() == 0
    for reason, count in expected.items():
        assert f"{reason}={count:,}" in out
    # The same rows, reasons and content as the plain composition: a duplicate's own parsed fields
    # (the job takes them from the copies it dropped), a failed check's original row.
    composed = (build_features.read_events(spark, cfg).transform(quality.validate_events(dt.datetime.now(dt.UTC)))
                .where("reason IS NOT NULL").select("event_id", "reason", "raw"))
    assert_same_rows(quarantine.select("event_id", "reason", "raw"), composed)
    assert quarantine.where("reason = 'duplicate_id' AND raw NOT LIKE '{\"event_id\"%'").count() == 0


def test_one_row_per_profile_and_date_for_every_snapshot_profile(spark, lake):
    root, _ = lake
    feats = tables.read(spark, f"{root}/features", "delta")
    assert feats.groupBy("profile_id", "as_of_date").count().where("count > 1").count() == 0
    snapshot_profiles = tables.read(spark, f"{root}/raw/profile_snapshot", "delta").count()
    per_date = dict(feats.where("in_snapshot").groupBy("as_of_date").count().collect())
    assert per_date == {dt.date(2025, 5, 1): snapshot_profiles, dt.date(2025, 6, 1): snapshot_profiles}
    assert feats.where("NOT in_snapshot").count() > 0  # anonymous visitors are kept by default


def test_every_known_persons_events_reach_their_profile(spark, lake):
    """Against the generator's truth: features count exactly each person's clean events before D."""
    root, _ = lake
    cfg = load_config([], [*GEN[1::2], f"lake={root}"])
    truth = datagen.truth(datagen.people(spark, cfg.generate), cfg.generate)
    clean = datagen.events(datagen.people(spark, cfg.generate), cfg.generate).where("dirty_kind IS NULL")
    owner = truth.select("crm_id", "known", F.explode("ecids").alias("ecid"))
    d = dt.datetime(2025, 6, 1)
    per_person = (
        clean.select(F.col("identityMap")["ECID"][0]["id"].alias("ecid"),
                     F.to_timestamp("timestamp", xdm.TIMESTAMP_FORMAT).alias("ts"))
        .where(F.col("ts") < d).join(owner, "ecid").where("known")
        .groupBy("crm_id").agg(F.count(F.lit(1)).alias("expected"))
    )
    feats = tables.read(spark, f"{root}/features", "delta").where("as_of_date = DATE'2025-06-01' AND in_snapshot")
    got = feats.select(F.col("primary_id").alias("crm_id"), F.col("events_365d").alias("got"))
    compared = got.join(per_person, "crm_id", "left").fillna(0, ["expected"])
    assert compared.count() == truth.where("known").count()
    assert compared.where("got != expected").count() == 0
    assert compared.where("got > 0").count() > 100


def test_the_jobs_plan_equals_the_plain_composition(spark, lake):
    """The job resolves events by their raw identity key and drops duplicates it found by id; the
    composition resolves by identity sets and numbers copies in a window. Same features."""
    root, _ = lake
    cfg = load_config([], [*GEN[1::2], f"lake={root}"])
    d = dt.date(2025, 6, 1)
    features = tables.read(spark, f"{root}/features", "delta").where(F.col("as_of_date") == d).drop("as_of_date")
    valid = (build_features.read_events(spark, cfg).transform(quality.validate_events(dt.datetime.now(dt.UTC)))
             .where("reason IS NULL"))
    profiles = identity.snapshot_profiles(build_features.read_snapshot(spark, cfg), cfg.identity.namespace_priority)
    composed, _ = build_features.features_as_of(valid, profiles, identity.event_links(valid), d, cfg)
    by_keys, _ = build_features.features_from_keys(valid, identity.key_links(valid), profiles, d, cfg)
    assert features.count() > 250  # profiles, known and anonymous
    expected = rounded(composed.drop("as_of_date"))
    assert_same_rows(rounded(features), expected)
    assert_same_rows(rounded(by_keys.drop("as_of_date")), expected)


def test_a_rerun_in_the_same_session_compiles_next_to_no_code(spark, lake):
    """Local mode keeps up to 2,000 generated classes (`session.local_conf`). One run of the job makes
    several hundred, more than Spark's default of 100, so with that default a re-run in the same
    session compiled nearly all of them again (and the JIT warmed them up again). The re-run's
    summary is the first run's but for its id and seconds."""
    root, out = lake
    compiled = spark._jvm.org.apache.spark.metrics.source.CodegenMetrics.METRIC_COMPILATION_TIME()
    before = compiled.getCount()
    code, again, err = run(build_features, [*GEN, "--set", f"lake={root}", "--set", DATES])
    assert code == 0, err
    assert compiled.getCount() - before < 25

    def counts(summary: str) -> list[str]:
        return [line for line in summary.splitlines() if not line.startswith(("build_features: run", "  seconds"))]

    assert counts(again) == counts(out) and len(counts(out)) >= 7


def rounded(df):
    """Doubles to 9 places: sums of the same values in another partition order may differ in the last bit."""
    return df.select(*[
        F.round(c, 9).alias(c) if t == "double"
        else F.transform_values(c, lambda _, v: F.round(v, 9)).alias(c) if t.startswith("map")
        else F.col(c) for c, t in df.dtypes])


def test_rerun_of_one_date_replaces_only_that_partition(spark, lake):
    root, _ = lake
    version = spark.sql(f"DESCRIBE HISTORY delta.`{root}/features` LIMIT 1").first().version
    code, _, err = run(build_features, [*GEN, "--set", f"lake={root}", "--set", "as_of=2025-06-01"])
    assert code == 0, err
    last = spark.sql(f"DESCRIBE HISTORY delta.`{root}/features` LIMIT 1").first()
    assert last.version == version + 1
    assert "2025-06-01" in last.operationParameters["predicate"]
    assert "2025-05-01" not in last.operationParameters["predicate"]
    # The table after the re-run equals the table before it, read by version (time travel).
    before = spark.read.format("delta").option("versionAsOf", version).load(f"{root}/features")
    after = tables.read(spark, f"{root}/features", "delta")
    assert after.count() == before.count()
    assert_same_rows(after, before)


def test_too_many_invalid_rows_stop_the_job_with_reasons(spark, tmp_path, lake):
    root, _ = lake
    code, _, err = run(build_features, [*GEN, "--set", f"lake={root}", "--set", "as_of=2025-06-01",
                                        "--set", "quality.max_invalid_fraction=0.001"])
    assert code == 3
    assert "rows are invalid" in err and "quality.max_invalid_fraction 0.1%" in err
    assert "missing_identity=" in err and "duplicate_id=" in err


def test_schema_drift_stops_the_job_naming_the_column(spark, tmp_path):
    events = spark.createDataFrame([("x", "2025-01-01T00:00:00Z", {"ECID": [("a",)]}, (("9.99",),))],
                                   "_id string, timestamp string, identityMap map<string,array<struct<id:string>>>, "
                                   "commerce struct<order:struct<priceTotal:string>>")
    events.write.parquet(str(tmp_path / "events"))
    code, _, err = run(build_features, ["--set", f"lake={tmp_path}", "--set", "as_of=2025-06-01",
                                        "--set", f"input.events.path={tmp_path / 'events'}",
                                        "--set", "input.events.format=parquet"])
    assert code == 3
    assert "column 'commerce.order.priceTotal': expected a number, found string" in err


def test_no_as_of_date_is_a_config_error(tmp_path):
    code, _, err = run(build_features, ["--set", f"lake={tmp_path}"])
    assert code == 2 and "no as-of date" in err
