#!/usr/bin/env python3
"""Benchmark BG/NBD + Gamma-Gamma fitting at growing numbers of profiles: driver memory and seconds.

    python bench/btyd.py [--profiles 1000000 10000000] [--where driver spark]

Writes bench/results/btyd.json. The claim under test: the profiles are compressed in Spark to their
distinct (frequency, recency, T) and (frequency, monetary value) summaries with counts, and only
those reach the driver, so its memory follows the number of distinct summaries (which saturates
for day-grained data) and not the number of profiles. `--where spark` forces the other path (more
distinct summaries than `max_summaries`): nothing but per-frequency tables is collected, and the
likelihood and gradient are aggregated in Spark at each step; its seconds are the price of that
switch. Each size and path runs in a fresh process, so each
Python peak is that size's own. The summaries are drawn from the BG/NBD and Gamma-Gamma processes
with known parameters (`TRUE`), so each run also shows how close the fit comes to them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from pyspark.sql import DataFrame, SparkSession

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import driver_heap_peak_mb, python_peak_rss_mb, reset_driver_heap_peak, write_results

# The generating process: BG/NBD with CDNOW-like parameters in days (about 3 purchases a year
# while alive, a quarter drop out after each purchase) and Gamma-Gamma spend.
TRUE = {"r": 0.25, "alpha": 30.0, "a": 0.8, "b": 2.4, "p": 6.0, "q": 3.7, "v": 15.0}


def _simulate(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Summaries drawn from the models themselves, per Arrow batch of ids (numpy; data generation
    only, not part of what is measured)."""
    import numpy as np
    from enrich import btyd_model as btyd

    for ids in batches:
        n = len(ids)
        rng = np.random.default_rng(int(ids["id"].iloc[0]) if n else 0)
        T = rng.integers(1, 365, n).astype(float)
        rate = rng.gamma(TRUE["r"], 1 / TRUE["alpha"], n)
        drop = rng.beta(TRUE["a"], TRUE["b"], n)
        x, t_x, t = np.zeros(n), np.zeros(n), np.zeros(n)
        alive = np.ones(n, dtype=bool)
        while alive.any():  # after each repeat purchase a customer leaves with probability `drop`
            t = t + rng.exponential(1 / np.maximum(rate, 1e-12))
            alive &= t <= T
            x += alive
            t_x = np.where(alive, t, t_x)
            alive &= rng.uniform(size=n) >= drop
        nu = rng.gamma(TRUE["q"], 1 / TRUE["v"], n)
        spend = np.where(x > 0, rng.gamma(TRUE["p"] * np.maximum(x, 1), 1 / (nu * np.maximum(x, 1))), 0.0)
        yield pd.DataFrame({btyd.FREQUENCY: x, btyd.RECENCY: np.floor(t_x), btyd.AGE: T,
                            btyd.MONETARY: np.round(spend, 2) + (x > 0) * 0.01})


def summaries(spark: SparkSession, n: int) -> DataFrame:
    """n day-grained profile summaries drawn from BG/NBD + Gamma-Gamma (`TRUE`), kept on disk so
    the fit reads them, not the simulation."""
    from enrich import btyd_model as btyd
    from pyspark import StorageLevel

    schema = ", ".join(f"{c} double" for c in (btyd.FREQUENCY, btyd.RECENCY, btyd.AGE, btyd.MONETARY))
    rows = spark.range(n).mapInPandas(_simulate, schema).persist(StorageLevel.DISK_ONLY)
    rows.count()
    return rows


def one(n: int, where: str) -> dict:
    from enrich import btyd_model as btyd
    from enrich.config import load_config
    from enrich.session import get_spark

    spark = get_spark(load_config().spark)
    spark.sparkContext.setLogLevel("ERROR")
    rows = summaries(spark, n)
    reset_driver_heap_peak(spark)
    before = python_peak_rss_mb()
    start = time.perf_counter()
    bgnbd, gg = btyd.fit_profiles(rows, max_rows=5_000_000 if where == "driver" else 0)
    seconds = time.perf_counter() - start
    return {"profiles": n, "true": TRUE, "likelihood_summed_in": bgnbd.summed_in, "seconds": round(seconds, 1),
            "iterations": {"bgnbd": bgnbd.iterations, "gamma_gamma": gg.iterations},
            "bgnbd": {k: round(v, 6) for k, v in bgnbd.params.items()},
            "gamma_gamma": {k: round(v, 6) for k, v in gg.params.items()},
            "converged": bgnbd.converged and gg.converged,
            "distinct_summaries": {"bgnbd": bgnbd.summaries, "gamma_gamma": gg.summaries},
            "python_peak_rss_mb_before_fit": round(before), "python_peak_rss_mb": round(python_peak_rss_mb()),
            "driver_heap_peak_mb": round(driver_heap_peak_mb(spark))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--profiles", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--where", nargs="+", choices=["driver", "spark"], default=["driver", "spark"],
                   help="where the likelihood is summed (spark: as when the summaries exceed max_summaries)")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.where[0])), flush=True)
        return 0
    runs = []
    for n in args.profiles:
        for where in args.where:
            done = subprocess.run([sys.executable, __file__, "--one", str(n), "--where", where], capture_output=True,
                                  text=True, check=True)
            run = json.loads(done.stdout.strip().splitlines()[-1])
            print(run, flush=True)
            runs.append(run)
    path = write_results("btyd", {"benchmark": "btyd: BG/NBD + Gamma-Gamma fit from Spark", "runs": runs})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
