#!/usr/bin/env python3
"""Benchmark the features job on generated data: events/second, seconds per stage, shuffles, memory.

    python bench/features.py [--profiles 16000 160000] [--root /tmp/profile-enrichment-bench] [--repeat 3]

Generates (once per size, kept between runs) about 1M and 10M events, half of the second devices
unlisted in the snapshot so that identity resolution links them, runs the whole features job
(validation and quarantine, identity resolution, features, Delta write) for one as-of date, and
writes bench/results/features.json. The first run, on the smallest size in a new JVM, is recorded
apart as `cold_start`; every size is then run `--repeat` times in the warm JVM and its median run
reported (with every run's seconds). Targets on a 2-core machine:
>= 150k events/s at 10M events, cost per event flat (within 20%) from 1M to 10M, driver memory
flat, and one shuffle of the events after identity resolution.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from pyspark.sql import SparkSession

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import driver_heap_peak_mb, python_peak_rss_mb, reset_driver_heap_peak, write_results
from enrich import identity, quality, tables
from enrich.config import Config, load_config
from enrich.jobs import build_features, generate_data
from enrich.session import get_spark

AS_OF = "2025-12-01"
# Half of the second devices are missing from the snapshot, so that identity resolution has links
# to follow (events of those devices are `linked` through a login), as on a real platform.
UNLISTED_DEVICES = 0.5


def shuffles(spark: SparkSession, cfg: Config) -> dict[str, int]:
    """Exchanges in the physical plan of one as-of date's features (AQE off, so the plan is final).

    Resolution runs the identity graph to build the plan, so the plan is taken on the first 200k
    events: the same operators, without paying for the graph over the whole dataset again.
    """
    with tables.spark_conf(spark, {"spark.sql.adaptive.enabled": "false"}):
        raw = tables.read(spark, cfg.events_path, "delta").limit(200_000)
        valid = raw.transform(quality.validate_events(cfg.quality.clock)).where("reason IS NULL")
        profiles = identity.snapshot_profiles(tables.read(spark, cfg.snapshot_path, "delta"),
                                              cfg.identity.namespace_priority)
        rows, _ = build_features.features_from_keys(valid, identity.key_links(valid), profiles,
                                                    cfg.as_of_dates()[0], cfg)
        plan = rows._jdf.queryExecution().executedPlan().toString()
    return {"exchanges_total": len(re.findall(r"\bExchange ", plan)),
            "events_repartitions_after_resolution": len(re.findall(r"REPARTITION_BY_COL", plan))}


def timed_run(spark: SparkSession, cfg: Config) -> tuple[build_features.FeaturesSummary, float]:
    """The features job's summary and its wall-clock seconds."""
    start = time.perf_counter()
    summary = build_features.run(spark, cfg)
    return summary, time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--profiles", type=int, nargs="+", default=[16_000, 160_000])
    p.add_argument("--root", default="/tmp/profile-enrichment-bench")
    p.add_argument("--repeat", type=int, default=3, help="warm runs per size; the median is reported")
    args = p.parse_args()
    spark = get_spark(load_config().spark)
    spark.sparkContext.setLogLevel("ERROR")
    configs = {}
    for profiles in args.profiles:
        lake = f"{args.root}/{profiles}-unlisted{UNLISTED_DEVICES}"
        sets = [f"lake={lake}", f"generate.profiles={profiles}", f"as_of={AS_OF}",
                "quality.clock=2026-06-01T00:00:00", f"generate.unlisted_device_fraction={UNLISTED_DEVICES}"]
        configs[profiles] = load_config([], sets)
        if not Path(lake, "raw", "events", "_delta_log").exists():
            generate_data.run(spark, configs[profiles])
    # The first run in a new JVM pays for compiling Spark's code paths (tens of seconds): it is
    # recorded apart, so that the sizes compare the job's own costs, not the order they ran in.
    smallest = min(args.profiles)
    first, seconds = timed_run(spark, configs[smallest])
    cold = {"profiles": smallest, "events": first.rows_read, "seconds": round(seconds, 1),
            "seconds_per_stage": first.seconds}
    print({"cold_start": cold}, flush=True)
    runs = []
    for profiles in args.profiles:
        cfg = configs[profiles]
        measured = []
        for attempt in range(args.repeat):
            reset_driver_heap_peak(spark)
            group = f"bench-features-{profiles}-{attempt}"
            spark.sparkContext.setJobGroup(group, group)
            summary, seconds = timed_run(spark, cfg)
            spark.sparkContext.setJobGroup("", "")
            jobs = len(spark.sparkContext.statusTracker().getJobIdsForGroup(group))
            measured.append((seconds, summary, jobs, driver_heap_peak_mb(spark)))
        # The median run speaks for the size: this machine varies by 15% and more from run to run.
        seconds, summary, jobs, heap_mb = sorted(measured, key=lambda m: m[0])[len(measured) // 2]
        run = {
            "profiles": profiles, "events": summary.rows_read, "seconds": round(seconds, 1),
            "seconds_each_run": [round(m[0], 1) for m in measured],
            "events_per_second": round(summary.rows_read / seconds),
            "microseconds_per_event": round(seconds / summary.rows_read * 1e6, 2),
            "seconds_per_stage": summary.seconds, "feature_rows": summary.dates[0].profiles,
            "events_resolved": {r: getattr(summary.dates[0], r) for r in identity.RESOLUTIONS},
            "graph_rounds": summary.dates[0].graph_rounds,
            # Each Spark job costs tens of milliseconds whatever its size: the part of a run that
            # does not shrink with the data.
            "spark_jobs": jobs,
            "driver_heap_peak_mb": round(heap_mb), "python_peak_rss_mb": round(python_peak_rss_mb()),
            **shuffles(spark, cfg),
        }
        print(run, flush=True)
        runs.append(run)
    result = {"benchmark": "features job: read+validate+quarantine, identity, features, delta write",
              "as_of": AS_OF, "cold_start": cold, "runs": runs}
    if len(runs) >= 2:
        result["cost_per_event_ratio_largest_to_smallest"] = round(
            runs[-1]["microseconds_per_event"] / runs[0]["microseconds_per_event"], 2)
    path = write_results("features", result)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
