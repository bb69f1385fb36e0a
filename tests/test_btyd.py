"""BTYD columns equal `lifetimes.utils.summary_data_from_transaction_data` on generated logs."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from enrich import datagen, identity, quality
from enrich.config import Config, GenerateConfig
from enrich.jobs.build_features import features_as_of
from lifetimes.utils import summary_data_from_transaction_data
from pyspark.sql import DataFrame

D = dt.date(2025, 9, 1)


def test_btyd_matches_lifetimes_on_generated_data(spark):
    gen = GenerateConfig(profiles=600, start_date=dt.date(2025, 1, 1), end_date=dt.date(2025, 10, 1), seed=5,
                         sessions_per_month=4.0)
    people = datagen.people(spark, gen)
    raw = datagen.events(people, gen).drop("dirty_kind")
    cfg = Config()
    priority = cfg.identity.namespace_priority
    valid = raw.transform(quality.validate_events(dt.datetime(2026, 1, 1))).where("reason IS NULL").drop(
        "reason", "raw").cache()
    profiles = identity.snapshot_profiles(datagen.snapshot(people, gen.seed), priority)
    seen: list[DataFrame] = []
    rows, _ = features_as_of(valid, profiles, identity.event_links(valid), D, cfg,
                             on_resolved=lambda df: seen.append(df) or df)
    ours = rows.select("profile_id", "btyd_frequency", "btyd_recency", "btyd_T", "btyd_monetary_value").toPandas()

    purchases = seen[0].where("is_purchase").select("profile_id", "ts", "revenue").toPandas()
    assert purchases["profile_id"].nunique() > 100
    reference = summary_data_from_transaction_data(
        purchases, "profile_id", "ts", monetary_value_col="revenue",
        observation_period_end=pd.Timestamp(D) - pd.Timedelta(days=1), freq="D")
    merged = ours.set_index("profile_id").join(reference, how="inner")
    assert len(merged) == len(reference)  # every buyer has a feature row
    assert (merged["btyd_frequency"] == merged["frequency"]).all()
    assert (merged["btyd_recency"] == merged["recency"]).all()
    assert (merged["btyd_T"] == merged["T"]).all()
    assert merged["btyd_monetary_value"].to_numpy() == pytest.approx(merged["monetary_value"].to_numpy(), rel=1e-9)
    assert (merged["frequency"] > 0).sum() > 50  # repeat buyers exist, so monetary value is tested
    # Profiles that never bought are all zeros, as lifetimes would have them if it listed them.
    non_buyers = ours[~ours["profile_id"].isin(reference.index)]
    assert len(non_buyers) > 0
    assert (non_buyers[["btyd_frequency", "btyd_recency", "btyd_T", "btyd_monetary_value"]] == 0).all().all()
