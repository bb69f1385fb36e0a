"""Shared benchmark plumbing: driver memory readings and the results file."""

from __future__ import annotations

import json
import platform
import resource
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

RESULTS = Path(__file__).resolve().parent / "results"


def reset_driver_heap_peak(spark: SparkSession) -> None:
    """Start a new peak reading of the driver JVM's heap pools."""
    for pool in spark._jvm.java.lang.management.ManagementFactory.getMemoryPoolMXBeans():
        pool.resetPeakUsage()


def driver_heap_peak_mb(spark: SparkSession) -> float:
    """Peak heap use of the driver JVM since the last reset, in MiB: the sum of each heap pool's
    peak, an upper bound (the pools peak at different times, so it can exceed -Xmx)."""
    total = 0
    for pool in spark._jvm.java.lang.management.ManagementFactory.getMemoryPoolMXBeans():
        if str(pool.getType()) == "Heap memory":
            total += pool.getPeakUsage().getUsed()
    return total / 2**20


def python_peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_results(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"machine": {"cpus": _cpus(), "python": platform.python_version()}, **payload}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))
