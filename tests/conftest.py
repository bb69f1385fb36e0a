"""Shared fixtures: one local SparkSession with Delta for the whole run, few shuffle partitions."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from enrich.config import SparkConfig
from enrich.session import get_spark
from pyspark.sql import SparkSession

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    os.environ.pop("PYSPARK_GATEWAY_PORT", None)
    os.environ.pop("PYSPARK_PYTHON", None)  # the session sets it (test_session checks)
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


@pytest.fixture(scope="session")
def scored(spark, trained):
    """(root, args, score output, MLflow client, scores of DAY): the trained champions scored DAY."""
    from pipeline import score_all

    return score_all(spark, trained)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on loopback: sqlite backend, artifacts served from a local folder."""
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "served"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        # No background job workers: nothing here submits server-side jobs, and they cost a core for seconds.
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            assert server.poll() is None, "mlflow server exited"
            time.sleep(0.5)
        else:
            raise AssertionError("mlflow server did not start")
        yield url, tmp_path / "served"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@pytest.fixture
def box():
    """A loopback platform sandbox (enrich.aep.sandbox) for one test; its own failures fail the test."""
    from enrich.aep.sandbox import Sandbox

    with Sandbox() as sandbox:
        yield sandbox
    assert not sandbox.errors, sandbox.errors
