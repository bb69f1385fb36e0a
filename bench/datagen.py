#!/usr/bin/env python3
"""Benchmark the synthetic data generator: events/second and driver memory at growing sizes.

    python bench/datagen.py [--profiles 20000 200000] [--lake /tmp/bench-lake]

Writes bench/results/datagen.json. The claim under test: generation runs inside Spark, so the
driver's memory stays flat while the number of events grows tenfold.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from pyspark.sql import functions as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import driver_heap_peak_mb, python_peak_rss_mb, reset_driver_heap_peak, write_results
from enrich import datagen, tables
from enrich.config import load_config
from enrich.session import get_spark


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--profiles", type=int, nargs="+", default=[20_000, 200_000])
    p.add_argument("--lake", default="/tmp/profile-enrichment-bench")
    args = p.parse_args()
    spark = get_spark(load_config().spark)
    spark.sparkContext.setLogLevel("ERROR")
    runs = []
    for profiles in args.profiles:
        shutil.rmtree(args.lake, ignore_errors=True)
        cfg = load_config([], [f"lake={args.lake}", f"generate.profiles={profiles}"])
        reset_driver_heap_peak(spark)
        start = time.perf_counter()
        events, obs = tables.observe(datagen.events(datagen.people(spark, cfg.generate), cfg.generate),
                                     "events", rows=F.count(F.lit(1)))
        tables.write(events.drop("dirty_kind"), cfg.events_path, "delta")
        seconds = time.perf_counter() - start
        rows = tables.counts(obs)["rows"]
        run = {"profiles": profiles, "events": rows, "seconds": round(seconds, 1),
               "events_per_second": round(rows / seconds), "driver_heap_peak_mb": round(driver_heap_peak_mb(spark)),
               "python_peak_rss_mb": round(python_peak_rss_mb())}
        print(run, flush=True)
        runs.append(run)
    shutil.rmtree(args.lake, ignore_errors=True)
    path = write_results("datagen", {"benchmark": "datagen: events + delta write", "runs": runs})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
