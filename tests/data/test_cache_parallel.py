"""Parallel preparation: workers from the usable cores, the hash index learnt from the workers, DDP shares."""

import json
import threading
from collections import Counter

import numpy as np
import pytest

from cxrlens.config import PreprocessConfig
from cxrlens.data import cache as cache_module
from cxrlens.data.cache import MIN_PARALLEL, PreprocessCache, Share, ddp_share, default_workers, usable_cores
from cxrlens.data.preprocess import preprocess_file
from cxrlens.data.sources import load_dataset
from cxrlens.fileio import sha256_file
from tests.conftest import make_dataset


@pytest.fixture
def counted(monkeypatch):
    """Counts the images preprocessed in this process (the serial path runs the worker function here)."""
    calls: Counter[str] = Counter()
    lock = threading.Lock()

    def counting(path, cfg):  # type: ignore[no-untyped-def]
        with lock:
            calls[str(path)] += 1
        return preprocess_file(path, cfg)

    monkeypatch.setattr(cache_module, "preprocess_file", counting)
    return calls


def test_workers_come_from_the_usable_cores_and_the_local_ranks():
    assert usable_cores() >= 1
    assert default_workers(MIN_PARALLEL - 1, cores=8) == 1  # a tiny job does not pay the pool start-up
    assert default_workers(MIN_PARALLEL, cores=8) == 8
    assert default_workers(1000, Share(0, 2), cores=8) == 4  # two local ranks share the cores
    assert default_workers(1000, Share(1, 4), cores=2) == 1


def test_ddp_share_reads_torchrun_and_lightning_variables():
    assert ddp_share({}) == Share(0, 1)
    assert ddp_share({"LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "8", "RANK": "5"}) == Share(1, 2)
    assert ddp_share({"LOCAL_RANK": "1", "WORLD_SIZE": "2", "NODE_RANK": "0"}) == Share(1, 2)  # Lightning's child
    assert ddp_share({"LOCAL_RANK": "x", "WORLD_SIZE": "2"}) == Share(0, 1)
    assert ddp_share({"LOCAL_RANK": "3", "WORLD_SIZE": "2"}) == Share(0, 1)


def test_pool_workers_hash_and_the_parent_index_learns_it(tmp_path, monkeypatch):
    ds = load_dataset([str(make_dataset(tmp_path / "data", n=MIN_PARALLEL + 4))])
    cfg = PreprocessConfig(size=32)
    report = PreprocessCache(cfg, tmp_path / "c").prepare(ds.records, workers=2)
    assert (report.total, report.written, report.reused, report.failed) == (len(ds), len(ds), 0, [])
    store = PreprocessCache(cfg, tmp_path / "c")
    index = json.loads((store.dir / "index.json").read_text(encoding="utf-8"))
    assert {key: value[2] for key, value in index.items()} == {
        str(r.path.resolve()): sha256_file(r.path) for r in ds.records
    }
    monkeypatch.setattr(cache_module, "sha256_file", lambda path: pytest.fail(f"re-hashed {path}"))
    again = store.prepare(ds.records)  # nothing re-hashed, nothing redone
    assert (again.written, again.reused) == (0, len(ds))
    np.testing.assert_allclose(store.load(ds.records[0].path), preprocess_file(ds.records[0].path, cfg), atol=2e-5)


def test_hashing_in_the_parent_gives_the_same_cache(tmp_path):
    ds = load_dataset([str(make_dataset(tmp_path / "data", n=MIN_PARALLEL + 2))])
    cfg = PreprocessConfig(size=32)
    a = PreprocessCache(cfg, tmp_path / "a")
    b = PreprocessCache(cfg, tmp_path / "b")
    assert a.prepare(ds.records, workers=2).written == b.prepare(ds.records, workers=2, hash_in_parent=True).written
    files_a = sorted(p.relative_to(a.dir) for p in a.dir.rglob("*.npy"))
    assert files_a == sorted(p.relative_to(b.dir) for p in b.dir.rglob("*.npy")) and len(files_a) == len(ds)
    assert json.loads((a.dir / "index.json").read_text()) == json.loads((b.dir / "index.json").read_text())


def _two_ranks(records, cache_dir, cfg, patience=30.0):  # type: ignore[no-untyped-def]
    """Two local ranks as threads, started together, each with its own cache object (as two processes)."""
    start = threading.Barrier(2)
    reports = {}

    def rank(r: int) -> None:
        store = PreprocessCache(cfg, cache_dir)
        start.wait()
        reports[r] = store.prepare(records, workers=1, share=Share(r, 2), patience=patience)

    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return reports


def test_two_local_ranks_prepare_each_image_once_and_meet_at_the_end(tmp_path, counted):
    ds = load_dataset([str(make_dataset(tmp_path / "data", n=30))])
    reports = _two_ranks(ds.records, tmp_path / "c", PreprocessConfig(size=32))
    assert sorted(counted) == sorted(str(r.path) for r in ds.records)
    assert set(counted.values()) == {1}  # nobody prepared an image twice
    for report in reports.values():  # each rank returns only once every entry exists
        assert report.total == len(ds) and report.written + report.reused == len(ds) and not report.failed
    assert reports[0].written + reports[1].written == len(ds)
    assert PreprocessCache(PreprocessConfig(size=32), tmp_path / "c").prepare(ds.records).written == 0


def test_every_rank_reports_an_image_another_rank_failed(tmp_path, counted):
    ds = load_dataset([str(make_dataset(tmp_path / "data", n=12))])
    ds.records[3].path.write_bytes(b"broken")  # in rank 1's share
    reports = _two_ranks(ds.records, tmp_path / "c", PreprocessConfig(size=32))
    for report in reports.values():
        assert [e.path for e in report.failed] == [str(ds.records[3].path)]
        assert report.written + report.reused + len(report.failed) == len(ds)
    assert counted[str(ds.records[3].path)] == 2  # rank 0 retried it instead of waiting for it forever
    assert sum(counted.values()) == len(ds) + 1


def test_a_rank_alone_takes_over_the_missing_shares_after_its_patience(tmp_path, counted):
    ds = load_dataset([str(make_dataset(tmp_path / "data", n=10))])
    report = PreprocessCache(PreprocessConfig(size=32), tmp_path / "c").prepare(
        ds.records, workers=1, share=Share(0, 2), patience=0.2
    )
    assert (report.written, report.reused, report.failed) == (len(ds), 0, [])
    assert set(counted.values()) == {1}


def test_a_vanished_file_is_a_failure_not_a_crash(tmp_path):
    ds = load_dataset([str(make_dataset(tmp_path / "data", n=6))])
    ds.records[2].path.unlink()
    for share in (Share(0, 1), Share(0, 2)):
        report = PreprocessCache(PreprocessConfig(size=32), tmp_path / str(share.world)).prepare(
            ds.records, share=share, patience=0.1
        )
        assert [e.reason for e in report.failed] == ["file not found"] and report.written == len(ds) - 1
