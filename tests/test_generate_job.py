"""The generate job end to end: every format, counts that match the tables, clear failures."""

from __future__ import annotations

import contextlib
import io

import pytest
from enrich import tables, xdm
from enrich.jobs import generate_data
from frames import assert_same_rows
from pyspark.sql import functions as F
from pyspark.testing import assertSchemaEqual

SMALL = ["--set", "generate.profiles=300", "--set", "generate.end_date=2025-04-01"]


@pytest.fixture(scope="module")
def reference(spark, tmp_path_factory):
    """One delta run of the job: its lake and what it printed."""
    lake = tmp_path_factory.mktemp("reference") / "lake"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert generate_data.main([*SMALL, "--set", f"lake={lake}"]) == 0
    return lake, out.getvalue()


def test_job_reports_the_counts_of_what_it_wrote(spark, reference):
    lake, out = reference
    events = tables.read(spark, f"{lake}/raw/events", "delta")
    snapshot = tables.read(spark, f"{lake}/raw/profile_snapshot", "delta")
    truth = tables.read(spark, f"{lake}/truth", "delta")
    assertSchemaEqual(events.schema, xdm.EXPERIENCE_EVENT)
    assertSchemaEqual(snapshot.schema, xdm.PROFILE_SNAPSHOT)
    n_events, n_profiles = events.count(), snapshot.count()
    assert f"events    {n_events:>12,} rows" in out
    assert f"snapshot  {n_profiles:>12,} profiles" in out
    assert f"truth     {truth.count():>12,} people" in out
    assert n_profiles == truth.where("known").count() > 0


@pytest.mark.parametrize("fmt", ["parquet", "json"])
def test_every_format_holds_the_same_data(spark, tmp_path, reference, fmt):
    lake = tmp_path / "lake"
    assert generate_data.main([*SMALL, "--set", f"lake={lake}", "--set", f"input.events.format={fmt}",
                               "--set", f"input.snapshot.format={fmt}"]) == 0
    events = tables.read(spark, f"{lake}/raw/events", fmt, schema=xdm.EXPERIENCE_EVENT)
    snapshot = tables.read(spark, f"{lake}/raw/profile_snapshot", fmt, schema=xdm.PROFILE_SNAPSHOT)
    if fmt == "json":
        # Every generated line parses under the contract's schema (dirty rows are dirty in value only).
        for df in (events, snapshot):
            # Cached: Spark refuses a query of raw JSON that reads only the corrupt-record column.
            assert df.cache().where(F.col(tables.CORRUPT_RECORD).isNotNull()).count() == 0
        events, snapshot = events.drop(tables.CORRUPT_RECORD), snapshot.drop(tables.CORRUPT_RECORD)
    ref_lake, _ = reference
    assert_same_rows(events, tables.read(spark, f"{ref_lake}/raw/events", "delta"))
    assert_same_rows(snapshot, tables.read(spark, f"{ref_lake}/raw/profile_snapshot", "delta"))


def test_rerun_replaces_instead_of_appending(spark, reference):
    lake, _ = reference
    before = tables.read(spark, f"{lake}/raw/events", "delta").count()
    assert generate_data.main([*SMALL, "--set", f"lake={lake}"]) == 0
    history = spark.sql(f"DESCRIBE HISTORY delta.`{lake}/raw/events`").select("version").count()
    assert history == 2  # a second commit, not a second copy of the data
    assert tables.read(spark, f"{lake}/raw/events", "delta").count() == before


def test_bad_config_exits_2_naming_the_key(tmp_path, capsys):
    code = generate_data.main(["--set", "generate.profiles=-3", "--set", f"lake={tmp_path}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "generate_data: error: invalid configuration" in err
    assert "config key 'generate.profiles' = -3" in err
