"""A loopback stand-in for the platform: the documented contract of IMS tokens, Batch Ingestion, Catalog,
Data Access and the Schema Registry, kept in memory, with faults on demand.

It is what the tests run the connector against, and what `make aep-sandbox` starts for users who
want to try `ingest`, `export_dataset` and `setup_aep` without a platform:

    python -m enrich.aep.sandbox --port 8765 --dataset-from events=lake/raw/events

It checks what the real platform checks (credentials, the four headers, dataset ids, file size
limits, batch states, chunk ranges) and keeps what it received so tests can assert on it: every
complete upload (file, bytes, sha256), every chunk range, every batch completion. Faults are
queued with `Sandbox.fault(...)`: 429 with or without `Retry-After`, 5xx, a connection dropped
mid-upload, a request carried out whose answer is lost, a response slower than the client's
timeout, a download cut half-way, tokens expiring, a request held until released (to kill a
client between uploads), and batches that end `failed`.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import itertools
import json
import os
import re
import secrets
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

SMALL_FILE_LIMIT = 256 * 1024 * 1024
PROFILE_CLASS = "https://ns.adobe.com/xdm/context/profile"
IDENTITY_MAP = "https://ns.adobe.com/xdm/context/identitymap"
FAULT_KINDS = ("429", "500", "503", "drop", "lost", "slow", "expire_tokens", "hold", "cut")


@dataclass
class Fault:
    """One queued misbehaviour: the next `times` requests matching `method` and the `path` regex get it."""

    method: str
    path: str
    kind: str
    times: int = 1
    retry_after: str | None = None
    seconds: float = 0.0
    held: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def matches(self, method: str, path: str) -> bool:
        return self.times > 0 and self.method in ("*", method) and re.search(self.path, path) is not None


@dataclass
class Upload:
    batch: str
    dataset: str
    name: str
    size: int
    sha256: str
    how: str  # "put" or "chunks"


@dataclass
class Batch:
    id: str
    dataset: str
    format: str
    status: str = "loading"
    files: dict[str, bytes] = field(default_factory=dict)
    large: dict[str, dict[int, bytes]] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    polls: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    created: int = field(default_factory=lambda: int(time.time() * 1000))

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "relatedObjects": [{"type": "dataSet", "id": self.dataset}],
                "inputFormat": {"format": self.format}, "errors": self.errors, "metrics": self.metrics,
                "created": self.created, "updated": int(time.time() * 1000)}


class Sandbox:
    """The platform's state and the server. Use as a context manager, or `start()` / `stop()`."""

    def __init__(self, *, client_id: str = "sandbox-client", secret: str | None = None,
                 org_id: str = "SANDBOX0RG@AdobeOrg", sandbox: str = "prod", tenant: str = "acme",
                 token_seconds: float = 86399.0, processing_polls: int = 1, port: int = 0) -> None:
        self.client_id, self.org_id, self.sandbox = client_id, org_id, sandbox
        self.secret = secret or secrets.token_hex(16)
        self.tenant = tenant.lstrip("_")
        self.token_seconds = token_seconds
        self.processing_polls = processing_polls
        self.page_limit = 100  # the most items one page of a listing holds, whatever the client asks
        self.lock = threading.RLock()
        self.tokens: dict[str, float] = {}
        self.tokens_issued = 0
        self.datasets: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, Batch] = {}
        self.uploads: list[Upload] = []
        self.chunk_log: list[tuple[str, str, int, int, int]] = []
        self.completions: Counter[str] = Counter()
        self.requests: list[tuple[str, str, int]] = []
        self.faults: list[Fault] = []
        self.errors: list[str] = []  # the sandbox's own failures (tests assert there are none)
        self.fail_next: list[dict[str, Any]] | None = None
        self.exports: dict[str, dict[str, bytes]] = {}  # dataSetFileId -> name -> bytes
        self.batch_files: dict[str, list[str]] = {}  # batch id -> dataSetFileIds
        self.fieldgroups: dict[str, dict[str, Any]] = {}
        self.schemas: dict[str, dict[str, Any]] = {}
        self.descriptors: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self.server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> Sandbox:
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="aep-sandbox", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self.lock:
            for f in self.faults:
                f.release.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def settings(self, dataset_id: str | None = None) -> list[str]:
        """`--set` overrides pointing a job at this sandbox (the secret goes in $AEP_CLIENT_SECRET)."""
        out = [f"aep.ims_url={self.url}", f"aep.platform_url={self.url}", f"aep.org_id={self.org_id}",
               f"aep.sandbox={self.sandbox}", f"aep.client_id={self.client_id}"]
        return out + ([f"aep.dataset_id={dataset_id}"] if dataset_id else [])

    # -- set-up by tests -------------------------------------------------------------------------

    def new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):06d}{secrets.token_hex(4)}"

    def add_dataset(self, name: str = "insights", dataset_id: str | None = None) -> str:
        with self.lock:
            ds = dataset_id or self.new_id("ds")
            self.datasets[ds] = {"name": name, "tags": {}, "schemaRef": None}
            return ds

    def add_export_batch(self, dataset: str, files: dict[str, bytes], files_per_dataset_file: int = 2) -> str:
        """A successful batch of `dataset` whose files the Data Access API serves."""
        with self.lock:
            batch = Batch(id=self.new_id("b"), dataset=dataset, format="parquet", status="success")
            batch.files = dict(files)
            self.batches[batch.id] = batch
            self.expose(batch, files_per_dataset_file)
            return batch.id

    def expose(self, batch: Batch, per: int = 2) -> None:
        names = sorted(batch.files)
        ids = []
        for i in range(0, len(names), per):
            fid = self.new_id("f")
            self.exports[fid] = {n: batch.files[n] for n in names[i:i + per]}
            ids.append(fid)
        self.batch_files[batch.id] = ids

    def fault(self, method: str, path: str, kind: str, *, times: int = 1, retry_after: str | None = None,
              seconds: float = 0.0) -> Fault:
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind {kind!r}: one of {FAULT_KINDS}")
        f = Fault(method, path, kind, times, retry_after, seconds)
        with self.lock:
            self.faults.append(f)
        return f

    def expire_tokens(self) -> None:
        with self.lock:
            self.tokens.clear()

    def received(self, batch: str | None = None) -> Counter[str]:
        """Complete uploads per file name (of one batch, or of all)."""
        return Counter(u.name for u in self.uploads if batch is None or u.batch == batch)

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for f in self.faults:
                if f.matches(method, path):
                    f.times -= 1
                    return f
        return None


# -- request handling --------------------------------------------------------------------------


class Reply(Exception):
    """Raised by a route to answer with a status and a JSON body."""

    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


def _error(status: int, code: str, message: str) -> Reply:
    return Reply(status, {"type": "https://ns.adobe.com/aep/errors/" + code, "status": status, "title": code,
                          "detail": message})


def _handler(box: Sandbox) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "aep-sandbox"

        _read: bytes | None = None

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def do_PUT(self) -> None:
            self._dispatch("PUT")

        def do_PATCH(self) -> None:
            self._dispatch("PATCH")

        def _dispatch(self, method: str) -> None:
            parts = urlsplit(self.path)
            path, query = unquote(parts.path), parse_qs(parts.query, keep_blank_values=True)
            self._read = None
            fault = box.take_fault(method, unquote(self.path))  # the query too: faults may name a file
            try:
                if fault is not None:
                    self._fault(fault)
                body = self._body()
                route(Call(box, self.headers, query, body), method, path)
                raise Reply(200, {})
            except Reply as reply:
                self._log(method, path, reply.status)  # before answering: a test may look right after
                if fault is not None and fault.kind == "lost":  # carried out, but the answer never arrives
                    self.connection.shutdown(2)
                    self.close_connection = True
                    return
                self._send(reply, cut=fault is not None and fault.kind == "cut")
            except _Dropped:
                self._log(method, path, -1)
                self.close_connection = True
            except Exception as exc:  # a bug here must not look like a transient fault to the client
                with box.lock:
                    box.errors.append(f"{method} {path}: {type(exc).__name__}: {exc}")
                self._log(method, path, 500)
                self._send(Reply(500, {"title": "sandbox error", "detail": f"{type(exc).__name__}: {exc}"}))

        def _log(self, method: str, path: str, status: int) -> None:
            with box.lock:
                box.requests.append((method, path, status))

        def _fault(self, fault: Fault) -> None:
            if fault.kind in ("429", "500", "503"):
                self._body()
                headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                title = "Too Many Requests" if fault.kind == "429" else "Service Unavailable"
                raise Reply(int(fault.kind), {"title": title, "detail": f"injected {fault.kind}"}, headers)
            if fault.kind == "drop":
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length // 2)
                self.connection.shutdown(2)
                raise _Dropped
            if fault.kind == "slow":
                self._body()
                time.sleep(fault.seconds)
                self.connection.shutdown(2)
                raise _Dropped
            if fault.kind == "expire_tokens":
                box.expire_tokens()
            if fault.kind == "hold":
                fault.held.set()
                fault.release.wait()
                self.connection.shutdown(2)
                raise _Dropped

        def _body(self) -> bytes:
            if getattr(self, "_read", None) is not None:
                return self._read
            length = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(length) if length else b""
            if len(data) < length:
                raise _Dropped
            self._read = data
            return data

        def _send(self, reply: Reply, cut: bool = False) -> None:
            raw = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
            self.send_response(reply.status)
            ctype = "application/octet-stream" if isinstance(reply.body, bytes) else "application/json"
            self.send_header("Content-Type", ctype)
            for k, v in reply.headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            if cut:  # the full length announced, half of it sent, then the connection closed
                self.wfile.write(raw[: len(raw) // 2])
                self.wfile.flush()
                self.connection.shutdown(2)
                self.close_connection = True
                return
            self.wfile.write(raw)

    return Handler


class _Dropped(Exception):
    """The connection was cut on purpose."""


@dataclass
class Call:
    """One request as the routes see it."""

    box: Sandbox
    headers: Any
    query: dict[str, list[str]]
    body: bytes
    args: tuple[str, ...] = ()


def route(call: Call, method: str, path: str) -> None:
    if method == "POST" and path == "/ims/token/v3":
        _token(call.box, call.body)
    _authorize(call.box, call.headers)
    for pattern, handler in ROUTES:
        m = re.fullmatch(pattern, f"{method} {path}")
        if m:
            call.args = m.groups()
            handler(call)
    raise _error(404, "not_found", f"no route for {method} {path}")


def _token(box: Sandbox, body: bytes) -> None:
    form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
    if form.get("grant_type") != "client_credentials":
        raise Reply(400, {"error": "unsupported_grant_type",
                          "error_description": "grant_type must be client_credentials"})
    if form.get("client_id") != box.client_id or form.get("client_secret") != box.secret:
        # Echoes what it was sent, as careless servers do: the client must mask it in its errors.
        raise Reply(400, {"error": "invalid_client", "error_description":
                          f"invalid client_id or client_secret {form.get('client_secret')!r}"})
    if not form.get("scope"):
        raise Reply(400, {"error": "invalid_scope", "error_description": "scope is required"})
    with box.lock:
        token = "eyJ" + secrets.token_urlsafe(24)
        box.tokens[token] = time.time() + box.token_seconds
        box.tokens_issued += 1
    raise Reply(200, {"access_token": token, "token_type": "bearer", "expires_in": int(box.token_seconds)})


def _authorize(box: Sandbox, headers: Any) -> None:
    auth = headers.get("Authorization", "")
    token = auth[7:] if auth.startswith("Bearer ") else ""
    with box.lock:
        expiry = box.tokens.get(token)
    if expiry is None or expiry < time.time():
        raise Reply(401, {"error_code": "401013", "message": "Oauth token is not valid"})
    if headers.get("x-api-key") != box.client_id:
        raise Reply(403, {"error_code": "403003", "message": "Api Key is invalid"})
    if headers.get("x-gw-ims-org-id") != box.org_id:
        raise Reply(403, {"error_code": "403025", "message": "Profile is not valid"})
    if headers.get("x-sandbox-name") != box.sandbox:
        raise _error(400, "sandbox", f"sandbox {headers.get('x-sandbox-name')!r} does not exist")


# -- Batch ingestion -------------------------------------------------------------------------------


def _batch(box: Sandbox, batch_id: str) -> Batch:
    batch = box.batches.get(batch_id)
    if batch is None:
        raise _error(404, "batch_not_found", f"batch {batch_id} not found")
    return batch


def _loading(box: Sandbox, batch_id: str, dataset: str) -> Batch:
    batch = _batch(box, batch_id)
    if batch.dataset != dataset:
        raise _error(400, "dataset_mismatch", f"batch {batch_id} belongs to dataset {batch.dataset}")
    if batch.status != "loading":
        raise _error(400, "batch_not_loading", f"batch {batch_id} is {batch.status}; files can no longer be added")
    return batch


def create_batch(c: Call) -> None:
    spec = json.loads(c.body or b"{}")
    dataset = spec.get("datasetId")
    fmt = (spec.get("inputFormat") or {}).get("format")
    if dataset not in c.box.datasets:
        raise _error(400, "dataset_not_found", f"dataset {dataset!r} not found")
    if fmt not in ("parquet", "json", "csv"):
        raise _error(400, "bad_format", f"inputFormat.format {fmt!r} is not supported")
    with c.box.lock:
        batch = Batch(id=c.box.new_id("b"), dataset=dataset, format=fmt)
        c.box.batches[batch.id] = batch
    raise Reply(201, batch.view())


def put_file(c: Call) -> None:
    batch_id, dataset, name = c.args
    if c.headers.get("Content-Type") != "application/octet-stream":
        raise _error(400, "content_type", "Content-Type must be application/octet-stream")
    if len(c.body) > SMALL_FILE_LIMIT:
        raise _error(413, "too_large", "files over 256 MB must use the large file upload")
    with c.box.lock:
        batch = _loading(c.box, batch_id, dataset)
        batch.files[name] = c.body
        c.box.uploads.append(Upload(batch_id, dataset, name, len(c.body), hashlib.sha256(c.body).hexdigest(), "put"))
    raise Reply(200, {})


def file_action(c: Call) -> None:
    batch_id, dataset, name = c.args
    action = (c.query.get("action") or [""])[0]
    with c.box.lock:
        batch = _loading(c.box, batch_id, dataset)
        if action == "INITIALIZE":
            batch.large[name] = {}
            batch.totals.pop(name, None)
            raise Reply(201, {})
        if action == "COMPLETE":
            parts = batch.large.get(name)
            if parts is None and name in batch.files:
                raise Reply(201, {})  # completed already: repeating it is harmless, like the batch's
            if parts is None:
                raise _error(400, "not_initialized", f"{name}: COMPLETE before INITIALIZE")
            total = batch.totals.get(name, 0)
            expected = 0
            for start in sorted(parts):
                if start != expected:
                    raise _error(400, "chunks", f"{name}: chunks leave a gap or overlap at byte {expected}")
                expected += len(parts[start])
            if expected != total:
                raise _error(400, "chunks", f"{name}: {expected} of {total} bytes received")
            data = b"".join(parts[s] for s in sorted(parts))
            batch.files[name] = data
            del batch.large[name]
            c.box.uploads.append(Upload(batch_id, dataset, name, len(data), hashlib.sha256(data).hexdigest(), "chunks"))
            raise Reply(201, {})
    raise _error(400, "action", f"unknown file action {action!r}")


def patch_chunk(c: Call) -> None:
    batch_id, dataset, name = c.args
    m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", c.headers.get("Content-Range", ""))
    if not m:
        raise _error(400, "content_range", "Content-Range: bytes {start}-{end}/{total} is required")
    start, end, total = (int(g) for g in m.groups())
    if end - start + 1 != len(c.body) or end >= total:
        raise _error(400, "content_range", f"Content-Range {start}-{end}/{total} does not fit {len(c.body)} bytes")
    with c.box.lock:
        batch = _loading(c.box, batch_id, dataset)
        parts = batch.large.get(name)
        if parts is None:
            raise _error(400, "not_initialized", f"{name}: chunk before INITIALIZE")
        batch.totals[name] = total
        parts[start] = c.body
        c.box.chunk_log.append((batch_id, name, start, end, total))
    raise Reply(200, {})


def batch_action(c: Call) -> None:
    (batch_id,) = c.args
    action = (c.query.get("action") or [""])[0]
    with c.box.lock:
        batch = _batch(c.box, batch_id)
        if action == "COMPLETE":
            if batch.status == "loading":
                if not batch.files:
                    raise _error(400, "empty_batch", f"batch {batch_id} has no files")
                batch.status = "processing"
                c.box.completions[batch_id] += 1
            raise Reply(200, {})
        if action == "ABORT":
            if batch.status == "loading":
                batch.status = "aborted"
            raise Reply(200, {})
    raise _error(400, "action", f"unknown batch action {action!r}")


def _records(data: bytes, fmt: str) -> int:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(io.BytesIO(data)).metadata.num_rows
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return sum(1 for line in data.splitlines() if line.strip())


def get_batch(c: Call) -> None:
    (batch_id,) = c.args
    with c.box.lock:
        batch = _batch(c.box, batch_id)
        if batch.status == "processing":
            batch.polls += 1
            if batch.polls >= c.box.processing_polls:
                _finish(c.box, batch)
        raise Reply(200, {batch.id: batch.view()})


def _finish(box: Sandbox, batch: Batch) -> None:
    read = sum(_records(d, batch.format) for d in batch.files.values())
    if box.fail_next is not None:
        batch.status, batch.errors = "failed", box.fail_next
        batch.metrics = {"recordsRead": read, "recordsWritten": 0, "failedRecordCount": read,
                         "inputFileCount": len(batch.files)}
        box.fail_next = None
        return
    batch.status = "success"
    batch.metrics = {"recordsRead": read, "recordsWritten": read, "failedRecordCount": 0,
                     "inputFileCount": len(batch.files), "inputByteSize": sum(map(len, batch.files.values()))}
    box.expose(batch)


def list_batches(c: Call) -> None:
    dataset = (c.query.get("dataSet") or [None])[0]
    status = (c.query.get("status") or [None])[0]
    start = int((c.query.get("start") or ["0"])[0])
    limit = min(int((c.query.get("limit") or ["20"])[0]), c.box.page_limit)
    with c.box.lock:
        found = [b for b in sorted(c.box.batches.values(), key=lambda b: b.id)
                 if (dataset is None or b.dataset == dataset) and (status is None or b.status == status)]
        raise Reply(200, {b.id: b.view() for b in found[start:start + limit]})


# -- Data access ---------------------------------------------------------------------------------


def export_batch_files(c: Call) -> None:
    (batch_id,) = c.args
    start = int((c.query.get("start") or ["0"])[0])
    limit = min(int((c.query.get("limit") or ["100"])[0]), c.box.page_limit)
    with c.box.lock:
        batch = _batch(c.box, batch_id)
        if batch.status != "success":
            raise _error(400, "batch_not_ready", f"batch {batch_id} is {batch.status}")
        ids = c.box.batch_files.get(batch_id, [])
    base = f"{c.box.url}/data/foundation/export"
    page = [{"dataSetFileId": fid, "dataSetViewId": batch.dataset, "version": "1.0.0", "isValid": True,
             "_links": {"self": {"href": f"{base}/files/{fid}"}}} for fid in ids[start:start + limit]]
    links: dict[str, Any] = {}
    if start + limit < len(ids):
        links["next"] = {"href": f"{base}/batches/{batch_id}/files?start={start + limit}&limit={limit}"}
    raise Reply(200, {"data": page, "_page": {"limit": limit, "count": len(ids)}, "_links": links})


def export_file(c: Call) -> None:
    (file_id,) = c.args
    with c.box.lock:
        files = c.box.exports.get(file_id)
    if files is None:
        raise _error(404, "file_not_found", f"dataSetFile {file_id} not found")
    name = (c.query.get("path") or [None])[0]
    if name is None:
        base = f"{c.box.url}/data/foundation/export/files/{file_id}"
        raise Reply(200, {"data": [{"name": n, "length": str(len(d)), "_links": {"self": {"href": f"{base}?path={n}"}}}
                                   for n, d in sorted(files.items())], "_page": {"count": len(files)}})
    if name not in files:
        raise _error(404, "file_not_found", f"{name} is not in dataSetFile {file_id}")
    data = files[name]
    m = re.fullmatch(r"bytes=(\d+)-(\d*)", c.headers.get("Range", ""))
    if m:
        start = int(m.group(1))
        end = min(int(m.group(2)) if m.group(2) else len(data) - 1, len(data) - 1)
        if start >= len(data):
            raise Reply(416, {"title": "Range Not Satisfiable"}, {"Content-Range": f"bytes */{len(data)}"})
        raise Reply(206, data[start:end + 1], {"Content-Range": f"bytes {start}-{end}/{len(data)}"})
    raise Reply(200, data)


# -- Schema registry and catalog -------------------------------------------------------------------


def _titled(objects: dict[str, dict[str, Any]], query: dict[str, list[str]]) -> list[dict[str, Any]]:
    wanted = None
    for prop in query.get("property", []):
        m = re.fullmatch(r"title==(.*)", prop)
        if m:
            wanted = m.group(1)
    return [o for o in objects.values() if wanted is None or o["title"] == wanted]


def stats(c: Call) -> None:
    raise Reply(200, {"imsOrg": c.box.org_id, "tenantId": c.box.tenant, "counts": {
        "schemas": len(c.box.schemas), "mixins": len(c.box.fieldgroups)}})


def list_fieldgroups(c: Call) -> None:
    with c.box.lock:
        found = _titled(c.box.fieldgroups, c.query)
    raise Reply(200, {"results": [{k: o[k] for k in ("$id", "meta:altId", "version", "title")} for o in found],
                      "_page": {"count": len(found), "next": None}})


def create_fieldgroup(c: Call) -> None:
    spec = json.loads(c.body)
    tenant = f"_{c.box.tenant}"
    if PROFILE_CLASS not in spec.get("meta:intendedToExtend", []):
        raise _error(400, "class", "meta:intendedToExtend must name the XDM Individual Profile class")
    for definition in (spec.get("definitions") or {}).values():
        if set(definition.get("properties") or {}) != {tenant}:
            raise _error(400, "tenant", f"For custom fields, you must use a top level field named {tenant}")
    with c.box.lock:
        if _titled(c.box.fieldgroups, {"property": [f"title=={spec.get('title')}"]}):
            raise _error(400, "title", "Title must be unique")
        key = secrets.token_hex(16)
        obj = {**spec, "$id": f"https://ns.adobe.com/{c.box.tenant}/mixins/{key}",
               "meta:altId": f"{tenant}.mixins.{key}", "meta:tenantNamespace": tenant,
               "meta:containerId": "tenant", "version": "1.0"}
        c.box.fieldgroups[obj["$id"]] = obj
    raise Reply(201, obj)


def list_schemas(c: Call) -> None:
    with c.box.lock:
        found = _titled(c.box.schemas, c.query)
    raise Reply(200, {"results": [{k: o[k] for k in ("$id", "meta:altId", "version", "title")} for o in found],
                      "_page": {"count": len(found), "next": None}})


def create_schema(c: Call) -> None:
    spec = json.loads(c.body)
    refs = [part.get("$ref") for part in spec.get("allOf", [])]
    if PROFILE_CLASS not in refs:
        raise _error(400, "class", "a schema needs a class in allOf")
    with c.box.lock:
        unknown = [r for r in refs if r not in (PROFILE_CLASS, IDENTITY_MAP) and r not in c.box.fieldgroups]
        if unknown:
            raise _error(400, "ref", f"unknown field group(s) {unknown}")
        key = secrets.token_hex(16)
        obj = {**spec, "$id": f"https://ns.adobe.com/{c.box.tenant}/schemas/{key}",
               "meta:altId": f"_{c.box.tenant}.schemas.{key}", "meta:class": PROFILE_CLASS, "version": "1.0",
               "meta:immutableTags": []}
        c.box.schemas[obj["$id"]] = obj
    raise Reply(201, obj)


def _schema(box: Sandbox, ref: str) -> dict[str, Any]:
    for obj in box.schemas.values():
        if ref in (obj["$id"], obj["meta:altId"]):
            return obj
    raise _error(404, "schema_not_found", f"schema {ref} not found")


def get_schema(c: Call) -> None:
    (ref,) = c.args
    with c.box.lock:
        raise Reply(200, _schema(c.box, ref))


def patch_schema(c: Call) -> None:
    (ref,) = c.args
    ops = json.loads(c.body)
    with c.box.lock:
        obj = _schema(c.box, ref)
        for op in ops:
            if op.get("op") == "add" and op.get("path") == "/meta:immutableTags":
                if "union" in op["value"] and not _has_primary(c.box, obj):
                    raise _error(400, "primary_identity", "a schema enabled for Profile needs a primary identity")
                obj["meta:immutableTags"] = sorted(set(obj["meta:immutableTags"]) | set(op["value"]))
            elif op.get("op") == "add" and op.get("path") == "/allOf/-":
                obj["allOf"].append(op["value"])
            else:
                raise _error(400, "patch", f"unsupported patch {op}")
        raise Reply(200, obj)


def _has_primary(box: Sandbox, schema: dict[str, Any]) -> bool:
    refs = [part.get("$ref") for part in schema.get("allOf", [])]
    return IDENTITY_MAP in refs or any(d.get("xdm:sourceSchema") == schema["$id"] and d.get("xdm:isPrimary")
                                       for d in box.descriptors)


def list_descriptors(c: Call) -> None:
    with c.box.lock:
        raise Reply(200, list(c.box.descriptors))


def create_descriptor(c: Call) -> None:
    spec = json.loads(c.body)
    with c.box.lock:
        _schema(c.box, spec.get("xdm:sourceSchema", ""))
        obj = {**spec, "@id": secrets.token_hex(20)}
        c.box.descriptors.append(obj)
    raise Reply(201, obj)


def list_datasets(c: Call) -> None:
    wanted = None
    for prop in c.query.get("property", []):
        m = re.fullmatch(r"name==(.*)", prop)
        if m:
            wanted = m.group(1)
    with c.box.lock:
        raise Reply(200, {k: v for k, v in c.box.datasets.items() if wanted is None or v["name"] == wanted})


def create_dataset(c: Call) -> None:
    spec = json.loads(c.body)
    with c.box.lock:
        schema = _schema(c.box, (spec.get("schemaRef") or {}).get("id", ""))
        if "enabled:true" in (spec.get("tags") or {}).get("unifiedProfile", []) and \
                "union" not in schema["meta:immutableTags"]:
            raise _error(400, "profile", "To enable profile datasets the schema should be valid")
        ds = c.box.new_id("ds")
        c.box.datasets[ds] = {"name": spec.get("name"), "schemaRef": spec["schemaRef"], "tags": spec.get("tags", {})}
    raise Reply(201, [f"@/dataSets/{ds}"])


def patch_dataset(c: Call) -> None:
    (ds,) = c.args
    with c.box.lock:
        info = c.box.datasets.get(ds)
        if info is None:
            raise _error(404, "dataset_not_found", f"dataset {ds} not found")
        for op in json.loads(c.body):
            m = re.fullmatch(r"/tags/(\w+)", op.get("path", ""))
            if op.get("op") != "add" or not m:
                raise _error(400, "patch", f"unsupported patch {op}")
            info.setdefault("tags", {})[m.group(1)] = op["value"]
    raise Reply(200, [f"@/dataSets/{ds}"])


NAMESPACES = ("CRMID", "ECID", "Email", "Phone", "AAID", "GAID", "IDFA")


def identity_namespaces(c: Call) -> None:
    raise Reply(200, [{"code": code, "id": i + 1, "status": "ACTIVE"} for i, code in enumerate(NAMESPACES)])


_B = r"/data/foundation/import/batches/([^/]+)"
ROUTES: list[tuple[str, Any]] = [
    (r"POST /data/foundation/import/batches", create_batch),
    (rf"PUT {_B}/datasets/([^/]+)/files/(.+)", put_file),
    (rf"POST {_B}/datasets/([^/]+)/files/(.+)", file_action),
    (rf"PATCH {_B}/datasets/([^/]+)/files/(.+)", patch_chunk),
    (rf"POST {_B}", batch_action),
    (r"GET /data/foundation/catalog/batches/([^/]+)", get_batch),
    (r"GET /data/foundation/catalog/batches", list_batches),
    (r"GET /data/foundation/export/batches/([^/]+)/files", export_batch_files),
    (r"GET /data/foundation/export/files/([^/]+)", export_file),
    (r"GET /data/foundation/schemaregistry/stats", stats),
    (r"GET /data/foundation/schemaregistry/tenant/fieldgroups", list_fieldgroups),
    (r"POST /data/foundation/schemaregistry/tenant/fieldgroups", create_fieldgroup),
    (r"GET /data/foundation/schemaregistry/tenant/schemas", list_schemas),
    (r"POST /data/foundation/schemaregistry/tenant/schemas", create_schema),
    (r"GET /data/foundation/schemaregistry/tenant/schemas/(.+)", get_schema),
    (r"PATCH /data/foundation/schemaregistry/tenant/schemas/(.+)", patch_schema),
    (r"GET /data/foundation/schemaregistry/tenant/descriptors", list_descriptors),
    (r"POST /data/foundation/schemaregistry/tenant/descriptors", create_descriptor),
    (r"GET /data/foundation/catalog/dataSets", list_datasets),
    (r"POST /data/foundation/catalog/dataSets", create_dataset),
    (r"PATCH /data/foundation/catalog/dataSets/([^/]+)", patch_dataset),
    (r"GET /data/core/idnamespace/identities", identity_namespaces),
]


# -- command line ------------------------------------------------------------------------------------


def data_files(folder: Path) -> Iterator[Path]:
    """Parquet data files of a folder (a Delta table's too: its log and hidden files are skipped)."""
    for path in sorted(folder.rglob("*.parquet")):
        rel = path.relative_to(folder).parts
        if not any(p.startswith(("_", ".")) for p in rel):
            yield path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="aep-sandbox", description="A loopback stand-in for Adobe Experience "
                                "Platform's ingestion, export and schema APIs (for trying the connector).")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--client-id", default="sandbox-client")
    p.add_argument("--org-id", default="SANDBOX0RG@AdobeOrg")
    p.add_argument("--dataset-id", default="insights", help="id of the empty dataset ingestion goes to")
    p.add_argument("--dataset-from", action="append", default=[], metavar="ID=FOLDER",
                   help="serve the parquet files of FOLDER as dataset ID for export (one batch per file)")
    args = p.parse_args(argv)
    secret = os.environ.get("AEP_CLIENT_SECRET")
    box = Sandbox(client_id=args.client_id, secret=secret, org_id=args.org_id, port=args.port)
    box.add_dataset("profile-enrichment insights", args.dataset_id)
    for item in args.dataset_from:
        ds, _, folder = item.partition("=")
        files = list(data_files(Path(folder)))
        if not files:
            p.error(f"--dataset-from {item}: no parquet files under {folder}")
        box.add_dataset(ds, ds)
        for f in files:
            box.add_export_batch(ds, {f.name: f.read_bytes()}, files_per_dataset_file=1)
        print(f"dataset {ds}: {len(files)} batch(es) from {folder}")
    box.start()
    print(f"aep-sandbox listening on {box.url}  (Ctrl-C stops it; nothing is kept)")
    if secret is None:
        print(f"the sandbox's client secret (loopback only): export AEP_CLIENT_SECRET={box.secret}")
    print("point the jobs at it with:\n  " + " ".join(f"--set {s}" for s in box.settings(args.dataset_id)))
    sys.stdout.flush()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        box.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
