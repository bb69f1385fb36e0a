"""Cutoffs are UTC instants even when the driver's local time zone is not UTC."""

import datetime as dt
import time

import pytest
from enrich import utc
from pyspark.sql import functions as F


@pytest.fixture
def pacific_driver(monkeypatch):
    monkeypatch.setenv("TZ", "America/Los_Angeles")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def shown(spark, column):
    return spark.range(1).select(column.cast("string")).first()[0]


def test_literals_ignore_the_driver_time_zone(spark, pacific_driver):
    # The trap the helpers exist for: a naive literal is read in the driver's zone.
    assert shown(spark, F.lit(dt.datetime(2025, 12, 1))) == "2025-12-01 08:00:00"
    assert shown(spark, utc.midnight(dt.date(2025, 12, 1))) == "2025-12-01 00:00:00"
    assert shown(spark, utc.instant(dt.datetime(2026, 6, 1, 12, 30))) == "2026-06-01 12:30:00"
    plus_two = dt.timezone(dt.timedelta(hours=2))
    assert shown(spark, utc.instant(dt.datetime(2026, 6, 1, 12, 30, tzinfo=plus_two))) == "2026-06-01 10:30:00"
