"""Dataset export against the loopback sandbox: every page of batches and files, parallel downloads
that resume a cut with `Range`, a re-run that fetches nothing, and a result the features job reads."""

from __future__ import annotations

import json

from aep import config, parquet_bytes
from enrich.aep.export import MANIFEST
from enrich.aep.sandbox import data_files
from enrich.jobs import build_features
from enrich.jobs import export_dataset as export_job
from pyspark.sql import functions as F


def test_every_page_is_exported_and_cuts_resume_with_range(box, tmp_path, monkeypatch):
    monkeypatch.setenv("AEP_CLIENT_SECRET", box.secret)
    box.page_limit = 2  # listings come back two items per page: batches and files are both paged
    dataset = box.add_dataset("events")
    sent = {}
    for b in range(5):
        files = {f"part-{b}-{i}.parquet": parquet_bytes(20, b * 10 + i, 200) for i in range(5)}
        if b == 1:
            files["part-1-2.parquet"] = parquet_bytes(20, 12, 100_000)  # 2 MB: cut after whole blocks arrived
        batch = box.add_export_batch(dataset, files, files_per_dataset_file=2)  # 3 dataSetFiles, 2 pages
        sent.update({f"batchId={batch}/{n}": d for n, d in files.items()})
    box.add_dataset("other")
    failed = box.add_export_batch(dataset, {"late.parquet": parquet_bytes(3, 99)})
    box.batches[failed].status = "failed"  # only successful batches are exported

    box.fault("GET", "path=part-1-2.parquet$", "cut", times=2)
    cfg = config(box, None, f"lake={tmp_path / 'lake'}", "aep.download_workers=3")
    summary = export_job.run(cfg, dataset)
    folder = tmp_path / "lake" / "raw" / dataset
    assert summary.batches == 5 and summary.files == 25 and summary.resumed == 2
    got = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*.parquet")}
    assert got == sent
    ranged = [r for r in box.requests if r[1].startswith("/data/foundation/export/files/")]
    assert sum(1 for r in ranged if r[2] == 206) == 2  # two resumes with Range, answered 206
    assert not list(folder.rglob(".*"))  # no partial left
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["datasetId"] == dataset and len(manifest["batches"]) == 5
    assert manifest["bytes"] == sum(map(len, sent.values()))

    # A re-run lists again but downloads nothing; a file lost locally is fetched again.
    (folder / sorted(sent)[0]).unlink()
    again = export_job.run(cfg, dataset)
    assert again.downloaded == 1 and (folder / sorted(sent)[0]).read_bytes() == sent[sorted(sent)[0]]

    # One batch only, on demand; an unknown dataset is a clear error.
    one = export_job.run(cfg, dataset, [sorted(box.batch_files)[0]])
    assert one.batches == 1 and one.files == 5 and one.downloaded == 0


def test_no_batches_is_a_clear_error(box, tmp_path, monkeypatch):
    from pipeline import run

    monkeypatch.setenv("AEP_CLIENT_SECRET", box.secret)
    args = [arg for s in [*box.settings(), f"lake={tmp_path}"] for arg in ("--set", s)]
    code, _, err = run(export_job, [*args, "--dataset", "empty"])
    assert code == 3 and "dataset empty has no successful batch to export" in err


def test_the_features_job_reads_an_exported_dataset(spark, trained, box, tmp_path, monkeypatch):
    """The shared pipeline's raw events, served as a platform dataset (one batch per file, as
    `make aep-sandbox` does), come back through export and read as the same rows."""
    root, *_ = trained
    monkeypatch.setenv("AEP_CLIENT_SECRET", box.secret)
    source = root / "lake" / "raw" / "events"
    dataset = box.add_dataset("events", "events-ds")
    for f in data_files(source):
        box.add_export_batch(dataset, {f.name: f.read_bytes()}, files_per_dataset_file=1)
    cfg = config(box, None, f"lake={tmp_path / 'lake'}", f"input.events.path={tmp_path / 'lake' / 'raw' / dataset}",
                 "input.events.format=parquet")
    summary = export_job.run(cfg, dataset)
    assert summary.files == len(list(data_files(source)))
    exported = build_features.read_events(spark, cfg)
    original = spark.read.format("delta").load(str(source))
    assert "batchId" in exported.columns
    assert exported.select("batchId").distinct().count() == summary.batches
    # Same rows, as multisets (maps cannot be compared by set operations; their JSON can).
    def rows(df):
        return df.select(F.to_json(F.struct(*original.columns)).alias("row"))

    assert exported.count() == original.count()
    assert rows(exported).exceptAll(rows(original)).count() == 0
    assert rows(original).exceptAll(rows(exported)).count() == 0
