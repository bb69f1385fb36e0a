"""Timestamp literals that mean the same instant whatever the driver's local time zone.

PySpark turns a naive `datetime` literal into an instant with the driver process's local zone, so
`F.lit(datetime(2025, 12, 1))` is 08:00 UTC on a Pacific-time laptop. Every cutoff in the
pipeline is a UTC instant; these helpers make it so.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column
from pyspark.sql import functions as F


def as_utc(moment: dt.datetime) -> dt.datetime:
    """An aware UTC datetime: a naive one is read as UTC, an aware one converted."""
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def instant(moment: dt.datetime) -> Column:
    """Timestamp literal of `moment` (naive means UTC)."""
    return F.lit(as_utc(moment))


def midnight(day: dt.date) -> Column:
    """Timestamp literal of `day` 00:00 UTC."""
    return instant(dt.datetime(day.year, day.month, day.day))
