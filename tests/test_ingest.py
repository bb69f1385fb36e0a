"""Batch ingestion against the loopback sandbox: every file of a manifest arrives exactly once and
byte-identical through faults, large files in ordered chunks that cover them, the batch completed
once; re-runs after a crash (a killed process) finish the same batch; failed batches are reported."""

from __future__ import annotations

import hashlib
import itertools
import json
import subprocess
import sys
from collections import Counter

import pytest
from aep import config, published, secret_env
from enrich.aep.ingest import STATE, newest_manifest
from enrich.errors import InputError
from enrich.jobs import ingest as ingest_job
from pipeline import ROOT, run

# Three small files and one above aep.large_file_mb (0.05 MB), sent in 0.02 MB chunks.
SIZES = [(40, 100), (30, 100), (50, 100), (300, 400)]
LARGE = ["aep.large_file_mb=0.05", "aep.chunk_mb=0.02"]



def _files(manifest_path):
    return {f["name"]: f for f in json.loads(manifest_path.read_text())["files"]}


def _assert_delivered_once(box, manifest_path, batch, resent=()):
    """The batch holds every file once, byte-identical; only the files in `resent` (whose answer was
    lost) reached the platform twice, the second copy replacing the first."""
    files = _files(manifest_path)
    assert box.received(batch) == Counter({n: 2 if n in resent else 1 for n in files})
    stored = box.batches[batch].files
    for name, f in files.items():
        assert hashlib.sha256(stored[name]).hexdigest() == f["sha256"]
        assert stored[name] == (manifest_path.parent / name).read_bytes()
    assert box.completions[batch] == 1


def test_a_folder_arrives_whole_through_faults(box, tmp_path, monkeypatch):
    dataset = box.add_dataset()
    manifest = published(tmp_path / "outbox" / "2026-01-01" / "r1", SIZES)
    big = [n for n, f in _files(manifest).items() if f["bytes"] > 0.05 * 1024 * 1024]
    assert len(big) == 1
    box.fault("PUT", "part-00000", "429", retry_after="0")
    box.fault("PUT", "part-00001", "drop")
    box.fault("PUT", "part-00002", "500")
    box.fault("PUT", "part-00002", "lost")  # stored, but the answer never arrives: sent again, replaced
    box.fault("PATCH", big[0], "503")
    box.fault("PATCH", big[0], "drop")
    box.fault("PATCH", big[0], "expire_tokens")
    box.fault("POST", f"{big[0]}\\?action=COMPLETE", "lost")  # completing a file again is harmless
    box.fault("GET", "/catalog/batches/", "429")
    monkeypatch.setenv("AEP_CLIENT_SECRET", box.secret)
    cfg = config(box, dataset, f"publish.outbox={tmp_path / 'outbox'}", "aep.upload_workers=3", *LARGE)
    summary = ingest_job.run(cfg)
    assert summary.status == "success" and summary.sent_files == 4
    assert summary.metrics["recordsWritten"] == sum(r for r, _ in SIZES) == box.batches[summary.batch].metrics[
        "recordsRead"]
    _assert_delivered_once(box, manifest, summary.batch, resent={"part-00002.parquet"})
    assert box.tokens_issued == 2  # the expired token was replaced once
    # The large file: ordered (per file), non-overlapping chunks covering it; retried chunks resent whole.
    size = _files(manifest)[big[0]]["bytes"]
    ranges = [(s, e) for b, n, s, e, t in box.chunk_log if n == big[0] and t == size]
    distinct = sorted(set(ranges))
    assert ranges == sorted(ranges) and distinct[0][0] == 0 and distinct[-1][1] == size - 1
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(distinct))
    assert len(distinct) == -(-size // int(0.02 * 1024 * 1024))
    state = json.loads((manifest.parent / STATE).read_text())
    assert state["batchId"] == summary.batch and state["status"] == "success"
    assert set(state["files"]) == set(_files(manifest)) and set(state["files"].values()) == {"uploaded"}

    # A second run sends nothing and asks nothing, even when the delivered files were cleaned up.
    before = len(box.requests)
    for name in _files(manifest):
        (manifest.parent / name).unlink()
    again = ingest_job.run(cfg)
    assert again.already and again.batch == summary.batch and len(box.requests) == before


def test_a_failed_batch_is_reported_and_retried_only_when_asked(box, tmp_path, monkeypatch):
    dataset = box.add_dataset()
    manifest = published(tmp_path / "f" / "2026-01-01" / "r2", SIZES[:2])
    monkeypatch.setenv("AEP_CLIENT_SECRET", box.secret)
    cfg = config(box, dataset)
    box.fail_next = [{"code": "INGEST-1212-400", "description": "Encountered 70 errors in the data"}]
    code, _, err = run(ingest_job, [*_args(box, dataset), "--manifest", str(manifest)])
    assert code == 4 and "ended failed" in err and "INGEST-1212-400: Encountered 70 errors" in err
    assert "--retry-failed" in err and "recordsRead" in err
    failed = json.loads((manifest.parent / STATE).read_text())["batchId"]
    assert box.batches[failed].status == "failed"

    code, _, err = run(ingest_job, [*_args(box, dataset), "--manifest", str(manifest)])
    assert code == 4 and f"batch {failed}" in err and len(box.batches) == 1  # no new batch unasked

    summary = ingest_job.run(cfg, str(manifest), retry_failed=True)
    assert summary.status == "success" and summary.batch != failed
    _assert_delivered_once(box, manifest, summary.batch)
    state = json.loads((manifest.parent / STATE).read_text())
    assert [p["batchId"] for p in state["previous"]] == [failed] and state["previous"][0]["errors"]


def _args(box, dataset, *extra):
    sets = [*box.settings(dataset), "aep.backoff_seconds=0.01", "aep.poll_seconds=0.01", "aep.timeout_seconds=5",
            *extra]
    return [arg for s in sets for arg in ("--set", s)]


@pytest.mark.parametrize("crash", ["between uploads", "after completing the batch"])
def test_a_killed_ingest_rerun_delivers_exactly_once(box, tmp_path, crash):
    """The client process is killed (SIGKILL) while the sandbox holds one of its requests: after the
    second file was confirmed, or after the batch was completed. The re-run finishes the same batch."""
    dataset = box.add_dataset()
    manifest = published(tmp_path / "o" / "2026-01-01" / "r3", SIZES[:3])
    if crash == "between uploads":
        held = box.fault("PUT", "part-00002", "hold")
    else:
        box.processing_polls = 3
        held = box.fault("GET", "/catalog/batches/", "hold")
    cmd = [sys.executable, str(ROOT / "jobs" / "ingest.py"), "--manifest", str(manifest),
           *_args(box, dataset, "aep.upload_workers=1")]
    proc = subprocess.Popen(cmd, env=secret_env(box), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert held.held.wait(120), proc.communicate(timeout=5)
        proc.kill()
        proc.wait(30)
    finally:
        held.release.set()
    state = json.loads((manifest.parent / STATE).read_text())
    batch = state["batchId"]
    if crash == "between uploads":
        assert sorted(state["files"]) == ["part-00000.parquet", "part-00001.parquet"]
        assert box.completions[batch] == 0
    else:
        assert state["status"] == "completed" and box.completions[batch] == 1

    rerun = subprocess.run(cmd, env=secret_env(box), capture_output=True, text=True, timeout=120, check=False)
    assert rerun.returncode == 0, rerun.stderr
    shown = rerun.stdout + rerun.stderr + proc.stdout.read().decode() + proc.stderr.read().decode()
    assert "access token obtained" in shown and box.secret not in shown
    assert not [t for t in box.tokens if t in shown]
    assert f"batch {batch} success" in rerun.stdout
    assert len(box.batches) == 1
    _assert_delivered_once(box, manifest, batch)


def test_a_folder_that_differs_from_its_manifest_is_refused(box, tmp_path, monkeypatch):
    dataset = box.add_dataset()
    monkeypatch.setenv("AEP_CLIENT_SECRET", box.secret)
    manifest = published(tmp_path / "x" / "2026-01-01" / "r4", SIZES[:2])
    (manifest.parent / "part-00001.parquet").write_bytes(b"short")
    with pytest.raises(InputError, match=r"part-00001\.parquet has 5 bytes, the manifest says"):
        ingest_job.run(config(box, dataset), str(manifest))
    assert not box.batches
    # Same size, other bytes: caught by the checksum before the file is sent.
    manifest = published(tmp_path / "y" / "2026-01-01" / "r5", SIZES[:3])
    target = manifest.parent / "part-00000.parquet"
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(InputError, match="sha256 differs"):
        ingest_job.run(config(box, dataset, "aep.upload_workers=1"), str(manifest))
    assert not box.uploads  # the first failure stopped the files queued behind it


def test_dry_run_plans_without_credentials_or_requests(box, tmp_path, monkeypatch):
    monkeypatch.delenv("AEP_CLIENT_SECRET", raising=False)
    outbox = tmp_path / "outbox"
    published(outbox / "2025-12-01" / "old", SIZES[:1], score_date="2025-12-01")
    newest = published(outbox / "2026-01-01" / "new", SIZES, created="2026-01-02T00:00:00+00:00")
    (outbox / "2026-01-01" / "incomplete").mkdir()  # a crashed publish: no manifest, skipped
    published(outbox / "_staging" / "2026-02-01" / "s", SIZES[:1], score_date="2026-02-01")
    assert newest_manifest(str(outbox)) == newest
    code, out, err = run(ingest_job, [*_args(box, "ds1", f"publish.outbox={outbox}", *LARGE), "--dry-run"])
    assert code == 0, err
    assert str(newest) in out and "batch (new)" in out and "4 file(s)" in out
    chunks = -(-_files(newest)["part-00003.parquet"]["bytes"] // int(0.02 * 1024 * 1024))
    assert out.count("one PUT") == 3 and f"part-00003.parquet: 0.13 MB, 300 rows, {chunks} chunks of <= 0.02 MB" in out
    assert not box.requests
    code, _, err = run(ingest_job, _args(box, "ds1", f"publish.outbox={outbox}"))
    assert code == 2 and "AEP_CLIENT_SECRET" in err
