"""Helpers of the platform-connector tests: a config pointed at a loopback sandbox, and published
folders built without Spark (small Parquet files and their manifest)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from enrich.aep.sandbox import Sandbox
from enrich.config import Config, load_config

# Quick retries and polls, a short timeout: the faults resolve in milliseconds, not minutes.
FAST = ["aep.backoff_seconds=0.01", "aep.max_backoff_seconds=0.05", "aep.poll_seconds=0.01",
        "aep.timeout_seconds=2", "aep.max_attempts=5", "aep.wait_minutes=1"]


def config(box: Sandbox, dataset: str | None, *extra: str) -> Config:
    return load_config(overrides=[*box.settings(dataset), *FAST, *extra])


def secret_env(box: Sandbox) -> dict[str, str]:
    return {**os.environ, "AEP_CLIENT_SECRET": box.secret}


def parquet_bytes(rows: int, seed: int, pad: int = 0) -> bytes:
    """A Parquet file of `rows` records (profile id, a score, an incompressible padding column)."""
    rng = __import__("random").Random(seed)
    table = pa.table({"profile_id": [f"p{seed}-{i}" for i in range(rows)],
                      "score": [rng.random() for _ in range(rows)],
                      "pad": [rng.randbytes(pad) for _ in range(rows)]})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="none")
    return sink.getvalue().to_pybytes()


def published(folder: Path, sizes: list[tuple[int, int]], score_date: str = "2026-01-01",
              created: str = "2026-01-02T00:00:00+00:00") -> Path:
    """A published folder: one Parquet file per (rows, padding bytes per row), and manifest.json."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, (rows, pad) in enumerate(sizes):
        data = parquet_bytes(rows, i, pad)
        name = f"part-{i:05d}.parquet"
        (folder / name).write_bytes(data)
        files.append({"name": name, "rows": rows, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    manifest = {"version": 1, "scoreDate": score_date, "runId": folder.name, "format": "parquet",
                "compression": "none", "rows": sum(f["rows"] for f in files),
                "bytes": sum(f["bytes"] for f in files), "files": files, "createdAt": created}
    path = folder / "manifest.json"
    path.write_text(json.dumps(manifest))
    return path
