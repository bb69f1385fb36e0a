"""Bring a platform dataset's files into the raw zone through the Data Access API, resumably.

    <export_path>/<datasetId>/batchId=<batchId>/<file name>
    <export_path>/<datasetId>/_export-manifest.json

Successful batches are listed from the Catalog (paged), their files from the Data Access API
(paged; a directory entry is followed into its own listing). Files are downloaded in parallel to a
hidden `.<name>.partial` beside the target; a cut download resumes from the partial's length with
`Range`, and the file is renamed into place only when its size equals the platform's. A file already
in place with the right size is not downloaded again, so a re-run only fetches what is missing.

The `batchId=` folders are Hive-style partitions: Spark reads the dataset folder directly (with a
`batchId` column), and skips the manifest and partials (names starting with `_` and `.`). The
features job takes it as `input.events.path=<export_path>/<datasetId>` with `format: parquet`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from enrich.aep.client import Client, PlatformError
from enrich.aep.ingest import local_path
from enrich.config import AepConfig
from enrich.errors import InputError

log = logging.getLogger(__name__)

MANIFEST = "_export-manifest.json"
CATALOG = "/data/foundation/catalog/batches"
EXPORT = "/data/foundation/export"
PAGE = 100
BLOCK = 256 * 1024  # written as they arrive: a cut keeps what came


@dataclass(frozen=True)
class Remote:
    batch: str
    file_id: str
    name: str
    bytes: int
    href: str


@dataclass
class ExportSummary:
    dataset: str
    folder: str
    batches: int
    files: int
    bytes: int
    downloaded: int = 0
    resumed: int = 0
    names: list[str] = field(default_factory=list)

    def render(self) -> str:
        return (f"export_dataset: dataset {self.dataset}: {self.batches} batch(es), {self.files} file(s), "
                f"{self.bytes / 1e6:.1f} MB in {self.folder}\n  downloaded now: {self.downloaded} "
                f"(resumed {self.resumed}); already present: {self.files - self.downloaded}\n"
                f"  read it with: --set input.events.path={self.folder} --set input.events.format=parquet")


def successful_batches(client: Client, dataset: str) -> list[str]:
    """Ids of the dataset's successful batches, oldest first, through every page."""
    found: dict[str, int] = {}
    start = 0
    while True:
        page = client.json("GET", CATALOG, what=f"batches of dataset {dataset}", params={
            "dataSet": dataset, "status": "success", "orderBy": "asc:created", "start": start, "limit": PAGE})
        if not isinstance(page, dict):
            raise PlatformError(f"batches of dataset {dataset}: expected an object keyed by batch id")
        if not page or set(page) <= set(found):  # past the last page (or a platform ignoring `start`)
            break
        for batch, info in page.items():
            found[batch] = int((info or {}).get("created", 0))
        start += len(page)
    return sorted(found, key=lambda b: (found[b], b))


def _paged(client: Client, path: str, what: str) -> Iterator[dict[str, Any]]:
    url: str | None = path
    while url:
        body = client.json("GET", url, what=what)
        yield from body.get("data", [])
        url = ((body.get("_links") or {}).get("next") or {}).get("href")


def batch_files(client: Client, batch: str) -> list[Remote]:
    """Every file of a batch: its dataSetFiles, each listing names, lengths and download links."""
    out = []
    pending = [item["dataSetFileId"] for item in _paged(client, f"{EXPORT}/batches/{batch}/files",
                                                        f"files of batch {batch}")]
    seen: set[str] = set()
    while pending:
        file_id = pending.pop(0)
        if file_id in seen:
            continue
        seen.add(file_id)
        for entry in _paged(client, f"{EXPORT}/files/{file_id}", f"dataSetFile {file_id}"):
            if "name" not in entry and entry.get("dataSetFileId"):
                pending.append(entry["dataSetFileId"])  # a directory: follow it
                continue
            href = ((entry.get("_links") or {}).get("self") or {}).get("href") or \
                f"{EXPORT}/files/{file_id}?path={entry['name']}"
            out.append(Remote(batch, file_id, entry["name"], int(entry["length"]), href))
    return out


def _range_start(response: requests.Response) -> int | None:
    m = re.fullmatch(r"bytes (\d+)-\d+/\d+", response.headers.get("Content-Range", ""))
    return int(m.group(1)) if m else None


def _safe_name(name: str) -> str:
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    if not base or base in (".", "..") or base.startswith(("_", ".")) or not re.fullmatch(r"[\w.=+-]+", base):
        raise PlatformError(f"file name {name!r} cannot be written safely into the raw zone")
    return base


class Export:
    def __init__(self, client: Client, cfg: AepConfig, root: str, dataset: str) -> None:
        self.client, self.cfg, self.dataset = client, cfg, dataset
        self.folder = local_path(root) / dataset
        self.lock = threading.Lock()
        self.resumed = 0

    def run(self, only: list[str] | None = None) -> ExportSummary:
        if (self.folder / "_delta_log").exists():
            raise InputError(f"{self.folder} is a Delta table; export the dataset elsewhere (aep.export_path)")
        batches = only or successful_batches(self.client, self.dataset)
        if not batches:
            raise InputError(f"dataset {self.dataset} has no successful batch to export")
        remotes = [r for b in batches for r in batch_files(self.client, b)]
        targets: dict[Path, Remote] = {}
        for r in remotes:
            target = self.folder / f"batchId={r.batch}" / _safe_name(r.name)
            if target in targets:
                raise PlatformError(f"batch {r.batch} lists {r.name!r} twice (dataSetFiles {targets[target].file_id} "
                                    f"and {r.file_id}); they would overwrite each other")
            targets[target] = r
        todo = [(t, r) for t, r in targets.items() if not (t.is_file() and t.stat().st_size == r.bytes)]
        log.info("dataset %s: %d batch(es), %d file(s), %d to download", self.dataset, len(batches), len(targets),
                 len(todo))
        with ThreadPoolExecutor(max_workers=self.cfg.download_workers, thread_name_prefix="download") as pool:
            futures = [pool.submit(self.download, t, r) for t, r in todo]
            for future in as_completed(futures):
                future.result()
        self.write_manifest(batches, targets)
        return ExportSummary(dataset=self.dataset, folder=str(self.folder), batches=len(batches), files=len(targets),
                             bytes=sum(r.bytes for r in targets.values()), downloaded=len(todo), resumed=self.resumed,
                             names=sorted(str(t.relative_to(self.folder)) for t in targets))

    def download(self, target: Path, remote: Remote) -> None:
        """Fetch one file into its partial, resuming with `Range`, at most `aep.max_attempts` passes
        that end short (a cut, or a server that sent less than it listed), with backoff between them."""
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        short = 0
        while True:
            have = partial.stat().st_size if partial.exists() else 0
            if have > remote.bytes:
                partial.unlink()
                have = 0
            if have == remote.bytes:
                break
            if short >= self.cfg.max_attempts:
                raise PlatformError(f"download {remote.name}: still {have} of {remote.bytes} bytes after {short} "
                                    f"short passes (aep.max_attempts={self.cfg.max_attempts})")
            if short:
                self.client.pause(short, f"download {remote.name}: {have} of {remote.bytes} bytes; resuming")
            if have:
                with self.lock:
                    self.resumed += 1
            headers = {"Range": f"bytes={have}-"} if have else {}
            response = self.client.call("GET", remote.href, what=f"download {remote.name}", headers=headers,
                                        stream=True, ok=(200, 206))
            mode = "ab" if have and response.status_code == 206 and _range_start(response) == have else "wb"
            try:
                with open(partial, mode) as out:
                    for block in response.iter_content(BLOCK):
                        out.write(block)
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
                log.warning("download %s cut (%s)", remote.name, type(exc).__name__)
            finally:
                response.close()
            if partial.stat().st_size != remote.bytes:
                short += 1
        os.replace(partial, target)

    def write_manifest(self, batches: list[str], targets: dict[Path, Remote]) -> None:
        manifest = {
            "version": 1, "datasetId": self.dataset,
            "exportedAt": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "batches": [{"batchId": b, "files": [
                {"path": str(t.relative_to(self.folder)), "dataSetFileId": r.file_id, "bytes": r.bytes}
                for t, r in sorted(targets.items()) if r.batch == b]} for b in batches],
            "bytes": sum(r.bytes for r in targets.values()),
        }
        tmp = self.folder / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(manifest, indent=2))
        os.replace(tmp, self.folder / MANIFEST)
