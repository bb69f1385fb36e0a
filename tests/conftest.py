"""Shared fixtures: one local SparkSession with Delta for the whole run, few shuffle partitions."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from enrich.config import SparkConfig
from enrich.session import get_spark
from pyspark.sql import SparkSession

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    os.environ.pop("PYSPARK_GATEWAY_PORT", None)
    session = get_spark(SparkConfig(mode="local", master="local[2]", shuffle_partitions=2,
                                    driver_memory="2g", app_name="profile-enrichment-tests"))
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def trained(spark, tmp_path_factory):
    """(root, job args, summaries): data, features for three dates and the five models trained and
    registered (sqlite store under root); shared by the training, scoring and publishing tests."""
    from pipeline import train_all

    return train_all(spark, tmp_path_factory.mktemp("train"))


@pytest.fixture
def box():
    """A loopback platform sandbox (enrich.aep.sandbox) for one test; its own failures fail the test."""
    from enrich.aep.sandbox import Sandbox

    with Sandbox() as sandbox:
        yield sandbox
    assert not sandbox.errors, sandbox.errors
