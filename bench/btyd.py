#!/usr/bin/env python3
"""Benchmark BG/NBD + Gamma-Gamma fitting at growing numbers of profiles: driver memory and seconds.

    python bench/btyd.py [--profiles 1000000 10000000]

Writes bench/results/btyd.json. The claim under test: the profiles are compressed in Spark to their
distinct (frequency, recency, T) and (frequency, monetary value) summaries with counts, and only
those reach the driver, so its memory follows the number of distinct summaries (which saturates
for day-grained data) and not the number of profiles. Each size runs in a fresh process, so each
Python peak is that size's own. The generated summaries have no dropout (every profile keeps
buying), so the fitted a and b run very large: the benchmark is about memory and time, not realism.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import driver_heap_peak_mb, python_peak_rss_mb, reset_driver_heap_peak, write_results


def summaries(spark: SparkSession, n: int) -> DataFrame:
    """n day-grained profile summaries: T up to a year, Poisson-ish repeats, log-normal spend."""
    from enrich import btyd_model as btyd
    from pyspark.sql import functions as F

    T = F.floor(F.rand(1) * 364) + 1
    x = F.floor(-F.log(F.rand(2)) * 2.0)
    return (spark.range(n)
            .select(T.alias(btyd.AGE), x.alias(btyd.FREQUENCY))
            .withColumn(btyd.RECENCY, F.when(F.col(btyd.FREQUENCY) > 0,
                                             F.floor(F.rand(3) * (F.col(btyd.AGE) + 1))).otherwise(0.0))
            .withColumn(btyd.MONETARY, F.when(F.col(btyd.FREQUENCY) > 0,
                                              F.round(F.exp(F.randn(4) * 0.5 + 3.0), 2)).otherwise(0.0))
            .select(*(F.col(c).cast("double") for c in (btyd.FREQUENCY, btyd.RECENCY, btyd.AGE, btyd.MONETARY))))


def one(n: int) -> dict:
    from enrich import btyd_model as btyd
    from enrich.config import load_config
    from enrich.session import get_spark

    spark = get_spark(load_config().spark)
    spark.sparkContext.setLogLevel("ERROR")
    rows = summaries(spark, n)
    reset_driver_heap_peak(spark)
    before = python_peak_rss_mb()
    start = time.perf_counter()
    bgnbd, gg = btyd.fit_profiles(rows)
    seconds = time.perf_counter() - start
    return {"profiles": n, "seconds": round(seconds, 1), "bgnbd": {k: round(v, 6) for k, v in bgnbd.params.items()},
            "gamma_gamma": {k: round(v, 6) for k, v in gg.params.items()},
            "converged": bgnbd.converged and gg.converged,
            "distinct_summaries": {"bgnbd": bgnbd.summaries, "gamma_gamma": gg.summaries},
            "python_peak_rss_mb_before_fit": round(before), "python_peak_rss_mb": round(python_peak_rss_mb()),
            "driver_heap_peak_mb": round(driver_heap_peak_mb(spark))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--profiles", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(args.one)), flush=True)
        return 0
    runs = []
    for n in args.profiles:
        done = subprocess.run([sys.executable, __file__, "--one", str(n)], capture_output=True, text=True, check=True)
        run = json.loads(done.stdout.strip().splitlines()[-1])
        print(run, flush=True)
        runs.append(run)
    path = write_results("btyd", {"benchmark": "btyd: BG/NBD + Gamma-Gamma fit from Spark", "runs": runs})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
