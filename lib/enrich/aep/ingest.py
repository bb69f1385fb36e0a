"""Deliver a published folder into a platform dataset through the Batch Ingestion API, exactly once.

The folder's `manifest.json` (written last by `jobs/publish.py`) lists the data files with their
sizes and sha256. Next to it, `ingest-state.json` records the batch id and each file's state; it is
rewritten atomically (temporary file + rename) after every change, so a crash at any point leaves
a state that a re-run continues from:

    no batch yet            create one (its id is saved before any file is sent)
    batch loading           upload the files not yet confirmed, then complete the batch
    batch completed         wait for its final status (completion is safe to repeat)
    batch success           nothing to do
    batch failed/aborted    report its errors; `--retry-failed` starts a new batch

A file confirmed by the platform (200/201) and recorded is never sent again. A file whose upload
was cut, or whose confirmation was lost (or the process died before recording it), is sent again
under the same name in the same batch, which replaces the earlier copy: the batch holds each file
once. Large files restart from their first chunk. Creating a batch whose answer is lost is asked
again; the first batch, if it was made, stays empty and is never completed, so it delivers nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

from enrich.aep.client import Client, PlatformError
from enrich.config import AepConfig
from enrich.errors import ConfigError, InputError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
STATE = "ingest-state.json"
MB = 1024 * 1024
FILES_SOFT_LIMIT = 10_000
FILES_HARD_LIMIT = 25_000
BATCH_BYTES_LIMIT = 100 * 1024**3
DONE = frozenset({"success", "active"})
FAILED = frozenset({"failed", "failure", "aborted", "abandoned"})
IMPORT = "/data/foundation/import/batches"
CATALOG = "/data/foundation/catalog/batches"


def local_path(uri: str) -> Path:
    """A local (or FUSE-mounted: /Volumes, /dbfs) path; other URIs are refused with the reason."""
    if uri.startswith("file:"):
        uri = uri[5:].removeprefix("//")
    if "://" in uri or uri.startswith("dbfs:"):
        raise ConfigError(f"{uri}: the AEP jobs read and write through the local file system; use a local or "
                          "mounted path (on Databricks a /Volumes/... path)")
    return Path(uri)


def newest_manifest(outbox: str) -> Path:
    """The manifest of the newest complete published folder: `<outbox>/<date>/<run_id>/manifest.json`
    (newest score date, then newest creation)."""
    root = local_path(outbox)
    found = []
    for path in root.glob(f"*/*/{MANIFEST}"):
        if path.parent.parent.name.startswith("_"):
            continue
        try:
            m = json.loads(path.read_text())
            found.append((str(m["scoreDate"]), str(m["createdAt"]), path))
        except (OSError, ValueError, KeyError):
            log.warning("%s: unreadable manifest, skipped", path)
    if not found:
        raise InputError(f"{root}: no published folder with a {MANIFEST}; run jobs/publish.py first, or pass "
                         "--manifest")
    return max(found)[2]


@dataclass(frozen=True)
class FilePlan:
    name: str
    path: Path
    bytes: int
    sha256: str
    rows: int
    chunks: tuple[tuple[int, int], ...]  # inclusive byte ranges; empty: one PUT

    @property
    def chunked(self) -> bool:
        return bool(self.chunks)


def plan(manifest_path: Path, cfg: AepConfig, check_files: bool = True) -> tuple[dict[str, Any], list[FilePlan]]:
    """Read and check the manifest (files present with their sizes, platform guardrails) and plan
    each file's upload: one PUT up to `aep.large_file_mb`, chunks of `aep.chunk_mb` above.
    `check_files=False` plans from the manifest alone (a delivered folder may be cleaned up)."""
    try:
        manifest = json.loads(manifest_path.read_text())
        listed = manifest["files"]
        fmt = manifest["format"]
    except OSError as exc:
        raise InputError(f"{manifest_path}: cannot be read ({exc.strerror})") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{manifest_path}: not a publish manifest ({type(exc).__name__}: {exc})") from None
    if fmt == "json" and manifest.get("compression") not in (None, "none"):
        raise InputError(f"{manifest_path}: batch ingestion takes plain JSON lines; publish with "
                         f"publish.compression=none (found {manifest.get('compression')})")
    if len(listed) > FILES_HARD_LIMIT:
        raise InputError(f"{manifest_path}: {len(listed)} files, above the platform's limit of {FILES_HARD_LIMIT} "
                         "per batch; publish with a larger publish.max_file_mb")
    if len(listed) > FILES_SOFT_LIMIT:
        log.warning("%d files in one batch: above the platform's guideline of %d", len(listed), FILES_SOFT_LIMIT)
    total = sum(int(f["bytes"]) for f in listed)
    if total > BATCH_BYTES_LIMIT:
        raise InputError(f"{manifest_path}: {total / 1024**3:.1f} GB, above the platform's 100 GB per batch")
    large, chunk = cfg.large_file_mb * MB, max(1, int(cfg.chunk_mb * MB))
    plans, problems = [], []
    for f in listed:
        path = manifest_path.parent / f["name"]
        size = int(f["bytes"])
        if check_files and not path.is_file():
            problems.append(f"{f['name']} is missing")
            continue
        if check_files and path.stat().st_size != size:
            problems.append(f"{f['name']} has {path.stat().st_size} bytes, the manifest says {size}")
            continue
        chunks = tuple(chunks_of(size, chunk)) if size > large else ()
        plans.append(FilePlan(f["name"], path, size, f["sha256"], int(f.get("rows", 0)), chunks))
    if problems:
        raise InputError(f"{manifest_path.parent}: the folder does not match its manifest: {'; '.join(problems)}")
    return manifest, plans


class State:
    """`ingest-state.json`: the batch and each file's state, saved atomically after every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.data: dict[str, Any] = {"version": 1, "batchId": None, "status": None, "files": {}, "previous": []}
        if path.exists():
            try:
                self.data.update(json.loads(path.read_text()))
            except ValueError:
                raise InputError(f"{path}: not valid JSON; it records what was delivered, so it is not "
                                 "overwritten: inspect it, and delete it only if no batch was started") from None

    def save(self) -> None:
        with self.lock:
            self.data["updatedAt"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            with open(tmp, "w") as out:
                json.dump(self.data, out, indent=2)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)

    def update(self, **values: Any) -> None:
        with self.lock:
            self.data.update(values)
        self.save()

    def file_done(self, name: str) -> None:
        with self.lock:
            self.data["files"][name] = "uploaded"
        self.save()

    def uploaded(self) -> set[str]:
        return {n for n, s in self.data["files"].items() if s == "uploaded"}


class Progress:
    """Files and bytes sent: a redrawn line on a terminal, a log line per file otherwise."""

    def __init__(self, files: int, total: int, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.files, self.total = files, total
        self.done_files, self.done_bytes = 0, 0
        self.lock = threading.Lock()

    def add(self, sent: int, file: str | None = None) -> None:
        with self.lock:
            self.done_bytes += sent
            if file is not None:
                self.done_files += 1
            line = (f"uploaded {self.done_files}/{self.files} files, {self.done_bytes / 1e6:.1f}/"
                    f"{self.total / 1e6:.1f} MB")
            if self.tty:
                self.stream.write(f"\r{line}\x1b[K" + ("\n" if self.done_files == self.files and file else ""))
                self.stream.flush()
            elif file is not None:
                log.info("%s (%s)", line, file)


@dataclass
class IngestSummary:
    manifest: str
    batch: str | None
    status: str
    files: int
    bytes: int
    sent_files: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    errors: list[Any] = field(default_factory=list)
    already: bool = False
    plan: list[str] = field(default_factory=list)

    def render(self) -> str:
        if self.plan:
            return "\n".join(self.plan)
        head = "already delivered: nothing sent" if self.already else f"{self.sent_files} file(s) sent now"
        m = self.metrics
        metrics = ", ".join(f"{k} {m[k]}" for k in ("recordsRead", "recordsWritten", "failedRecordCount") if k in m)
        return (f"ingest: batch {self.batch} {self.status} ({head})\n  {self.files} file(s), "
                f"{self.bytes / 1e6:.1f} MB from {self.manifest}\n  platform metrics: {metrics or 'none reported'}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(4 * MB), b""):
            digest.update(block)
    return digest.hexdigest()


def _chunk_reader(path: Path, start: int, end: int) -> Callable[[], bytes]:
    def read() -> bytes:
        with open(path, "rb") as f:
            f.seek(start)
            return f.read(end - start + 1)
    return read


class Ingest:
    """One delivery of one manifest into `aep.dataset_id`."""

    def __init__(self, client: Client | None, cfg: AepConfig, manifest_path: Path,
                 progress_stream: TextIO | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        if not cfg.dataset_id:
            raise ConfigError("set aep.dataset_id (jobs/setup_aep.py prints it)")
        self.client, self.cfg, self.sleep = client, cfg, sleep
        self.manifest_path = manifest_path
        self.state = State(manifest_path.parent / STATE)
        delivered = bool(self.state.data.get("batchId")) and self.state.data.get("status") == "success"
        self.manifest, self.files = plan(manifest_path, cfg, check_files=not delivered)
        self.progress_stream = progress_stream
        known = self.state.data.get("datasetId")
        if known and known != cfg.dataset_id and self.state.data.get("batchId"):
            raise InputError(f"{self.state.path}: this folder is being delivered to dataset {known}, not "
                             f"{cfg.dataset_id}; finish that delivery, or move the state file aside to start over")

    @property
    def total_bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    def summary(self, status: str, **extra: Any) -> IngestSummary:
        return IngestSummary(manifest=str(self.manifest_path), batch=self.state.data.get("batchId"), status=status,
                             files=len(self.files), bytes=self.total_bytes, **extra)

    def dry_run(self) -> IngestSummary:
        batch = self.state.data.get("batchId") or "(new)"
        done = self.state.uploaded()
        lines = [f"ingest --dry-run: {self.manifest_path}",
                 f"  dataset {self.cfg.dataset_id}, format {self.manifest['format']}, batch {batch} "
                 f"({self.state.data.get('status') or 'not started'})",
                 f"  {len(self.files)} file(s), {self.total_bytes / 1e6:.1f} MB, {self.cfg.upload_workers} in parallel"]
        for f in self.files:
            how = f"{len(f.chunks)} chunks of <= {self.cfg.chunk_mb:g} MB" if f.chunked else "one PUT"
            state = "already uploaded" if f.name in done else "to upload"
            lines.append(f"  {f.name}: {f.bytes / 1e6:.2f} MB, {f.rows} rows, {how}, {state}")
        return self.summary(self.state.data.get("status") or "planned", plan=lines)

    def run(self, retry_failed: bool = False) -> IngestSummary:
        assert self.client is not None
        batch = self.state.data.get("batchId")
        if batch and self.state.data.get("status") == "success":
            return self.summary("success", metrics=self.state.data.get("metrics", {}), already=True)
        if batch:
            status, info = self.batch_status(batch)
            if status in DONE:
                self.state.update(status="success", metrics=info.get("metrics", {}))
                return self.summary("success", metrics=info.get("metrics", {}), already=True)
            if status in FAILED:
                if not retry_failed:
                    raise PlatformError(f"batch {batch} of {self.manifest_path} is {status}: "
                                        f"{describe_errors(info)}. Fix the cause and re-run with --retry-failed "
                                        "to deliver the folder in a new batch")
                previous = [*self.state.data.get("previous", []), {"batchId": batch, "status": status,
                                                                    "errors": info.get("errors", [])}]
                self.state.update(batchId=None, status=None, files={}, previous=previous)
                batch = None
            elif status != "loading":
                log.info("batch %s is %s: waiting for its final status", batch, status)
                return self.wait(batch, sent=0)
        if not batch:
            batch = self.create_batch()
        sent = self.upload(batch)
        self.complete(batch)
        return self.wait(batch, sent)

    def batch_status(self, batch: str) -> tuple[str, dict[str, Any]]:
        body = self.client.json("GET", f"{CATALOG}/{batch}", what=f"status of batch {batch}")
        info = (body.get(batch) or next(iter(body.values()), {})) if isinstance(body, dict) else {}
        return str(info.get("status", "unknown")).lower(), info

    def create_batch(self) -> str:
        body = self.client.json("POST", IMPORT, what="create batch", ok=(201,), json={
            "datasetId": self.cfg.dataset_id, "inputFormat": {"format": self.manifest["format"]}})
        batch = body.get("id")
        if not batch:
            raise PlatformError(f"create batch: the platform answered without a batch id: {str(body)[:200]}")
        self.state.update(batchId=batch, status="loading", datasetId=self.cfg.dataset_id, files={},
                          runId=self.manifest.get("runId"), createdAt=dt.datetime.now(dt.UTC).isoformat())
        log.info("batch %s created for dataset %s", batch, self.cfg.dataset_id)
        return batch

    def upload(self, batch: str) -> int:
        done = self.state.uploaded()
        todo = [f for f in self.files if f.name not in done]
        progress = Progress(len(self.files), self.total_bytes, self.progress_stream)
        progress.done_files = len(self.files) - len(todo)
        progress.done_bytes = sum(f.bytes for f in self.files if f.name in done)
        if done:
            log.info("batch %s: %d file(s) already uploaded, %d to go", batch, len(done), len(todo))
        with ThreadPoolExecutor(max_workers=self.cfg.upload_workers, thread_name_prefix="upload") as pool:
            stop = threading.Event()  # set by the first failure: the uploads not yet started do not start
            futures = [pool.submit(self.upload_or_stop, batch, f, progress, stop) for f in todo]
            for future in as_completed(futures):
                future.result()
        return len(todo)

    def upload_or_stop(self, batch: str, f: FilePlan, progress: Progress, stop: threading.Event) -> None:
        if stop.is_set():
            return
        try:
            self.upload_file(batch, f, progress)
        except BaseException:
            stop.set()
            raise

    def upload_file(self, batch: str, f: FilePlan, progress: Progress) -> None:
        if _sha256(f.path) != f.sha256:
            raise InputError(f"{f.path}: its sha256 differs from the manifest's; the folder changed after "
                             "publishing, nothing more is sent")
        base = f"{IMPORT}/{batch}/datasets/{self.cfg.dataset_id}/files/{quote(f.name)}"
        octet = {"Content-Type": "application/octet-stream"}
        if not f.chunked:
            # A fresh file object per try, streamed by requests and closed by the client after the try.
            self.client.call("PUT", base, what=f"upload {f.name}", headers=octet, ok=(200, 201),
                             data=lambda: open(f.path, "rb"))  # noqa: SIM115
            self.state.file_done(f.name)
            progress.add(f.bytes, f.name)
            return
        self.client.call("POST", base, params={"action": "INITIALIZE"}, what=f"initialize {f.name}", ok=(200, 201))
        for start, end in f.chunks:
            self.client.call("PATCH", base, what=f"upload {f.name} bytes {start}-{end}",
                             headers={**octet, "Content-Range": f"bytes {start}-{end}/{f.bytes}"},
                             data=_chunk_reader(f.path, start, end), ok=(200, 201))
            progress.add(end - start + 1)
        self.client.call("POST", base, params={"action": "COMPLETE"}, what=f"complete {f.name}", ok=(200, 201))
        self.state.file_done(f.name)
        progress.add(0, f.name)

    def complete(self, batch: str) -> None:
        self.client.call("POST", f"{IMPORT}/{batch}", params={"action": "COMPLETE"}, what=f"complete batch {batch}",
                         ok=(200, 201))
        self.state.update(status="completed")
        log.info("batch %s completed: %d file(s); waiting for the platform to process it", batch, len(self.files))

    def wait(self, batch: str, sent: int) -> IngestSummary:
        deadline = time.monotonic() + self.cfg.wait_minutes * 60
        while True:
            status, info = self.batch_status(batch)
            if status in DONE:
                self.state.update(status="success", metrics=info.get("metrics", {}))
                return self.summary("success", sent_files=sent, metrics=info.get("metrics", {}))
            if status in FAILED:
                self.state.update(status=status, errors=info.get("errors", []), metrics=info.get("metrics", {}))
                raise PlatformError(f"batch {batch} of {self.manifest_path} ended {status}: {describe_errors(info)}; "
                                    f"metrics {info.get('metrics', {})}. Fix the cause and re-run with "
                                    "--retry-failed to deliver the folder in a new batch")
            if time.monotonic() >= deadline:
                raise PlatformError(f"batch {batch} is still {status} after aep.wait_minutes="
                                    f"{self.cfg.wait_minutes:g}; re-run the same command to keep waiting")
            log.info("batch %s: %s", batch, status)
            self.sleep(self.cfg.poll_seconds)


def describe_errors(info: dict[str, Any], limit: int = 5) -> str:
    errors = info.get("errors") or []
    shown = [f"{e.get('code', '?')}: {e.get('description') or e.get('message') or e}" if isinstance(e, dict) else str(e)
             for e in errors[:limit]]
    more = f" (+{len(errors) - limit} more)" if len(errors) > limit else ""
    return ("; ".join(shown) + more) if shown else "no errors reported"


def chunks_of(size: int, chunk: int) -> Iterator[tuple[int, int]]:
    """Inclusive byte ranges covering `size` bytes in `chunk`-byte pieces."""
    for start in range(0, size, chunk):
        yield start, min(start + chunk, size) - 1
