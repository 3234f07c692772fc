"""Streaming shards (LitData): the cache's images bit for bit, node parts, resuming, errors, and a DDP epoch on
20,000 images with the same batches per rank as the cache."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cxrlens.config import DataConfig, PreprocessConfig
from cxrlens.data.cache import PreprocessCache
from cxrlens.data.sources import load_dataset
from cxrlens.data.streaming import MANIFEST, NodeShare, ShardImages, node_share, read_parts, write_shards
from cxrlens.errors import ConfigError, DataError
from tests.conftest import make_dataset, write_csv

pytest.importorskip("litdata")

PRE = PreprocessConfig(size=32)


@pytest.fixture
def records(tmp_path):
    root = make_dataset(tmp_path / "data", n=30)
    (root / "images" / "img007.png").write_bytes(b"not a png")
    return load_dataset(cfg=DataConfig(sources=[str(root)], skip_bad=True)).records


def test_shards_hold_the_cache_images_bit_for_bit_and_note_failures(records, tmp_path):
    report = write_shards(records, PRE, tmp_path / "shards", NodeShare(0, 1), workers=2)
    assert (report.written, report.reused, len(report.failed)) == (29, 0, 1)
    assert "img007.png" in str(report.failed[0])
    cache = PreprocessCache(PRE, tmp_path / "cache")
    cache.prepare(records, workers=1)
    shards = ShardImages(tmp_path / "shards", PRE, records)
    assert [r.filename for r in shards.missing] == ["images/img007.png"]
    assert "not an image" in shards.failed["images/img007.png"]
    for rec in records:
        if rec.filename != "images/img007.png":
            assert np.array_equal(shards.load(rec.path), cache.load(rec.path))
    manifest = json.loads((report.part / MANIFEST).read_text())
    assert manifest["ids"] == sorted(r.filename for r in records if r.filename != "images/img007.png")
    again = write_shards(records, PRE, tmp_path / "shards", NodeShare(0, 1), workers=2)
    assert (again.written, again.reused, len(again.failed)) == (0, 29, 1)  # a finished part is kept


def test_each_node_writes_its_share_and_every_part_is_needed(records, tmp_path):
    out = tmp_path / "shards"
    first = write_shards(records, PRE, out, NodeShare(0, 2), workers=1)
    with pytest.raises(DataError, match=r"part\(s\) \[1\] of 2 missing"):
        read_parts(out, PRE)
    second = write_shards(records, PRE, out, NodeShare(1, 2), workers=1)
    assert first.total + second.total == len(records) and first.total == 15
    shards = ShardImages(out, PRE, records)
    cache = PreprocessCache(PRE, tmp_path / "cache")
    for rec in records[:6]:
        assert np.array_equal(shards.load(rec.path), cache.load(rec.path))
    with pytest.raises(ConfigError, match=r"other preprocessing .*size 48 vs 32"):
        ShardImages(out, PreprocessConfig(size=48), records)
    (first.part / MANIFEST).unlink()  # an interrupted node: its part is unfinished
    with pytest.raises(DataError, match="unfinished part"):
        read_parts(out, PRE)


def test_node_share_from_options_or_environment():
    assert node_share(env={}) == NodeShare(0, 1)
    assert node_share(env={"DATA_OPTIMIZER_NODE_RANK": "2", "DATA_OPTIMIZER_NUM_NODES": "4"}) == NodeShare(2, 4)
    assert node_share(env={"SLURM_NODEID": "1", "SLURM_NNODES": "2"}) == NodeShare(1, 2)
    assert node_share(1, 3, env={"SLURM_NODEID": "0", "SLURM_NNODES": "2"}) == NodeShare(1, 3)
    with pytest.raises(ConfigError, match="node rank 2 of 2"):
        node_share(2, 2)
    with pytest.raises(ConfigError, match="whole numbers"):
        node_share(env={"SLURM_NODEID": "x", "SLURM_NNODES": "2"})


def test_missing_litdata_names_the_extra(monkeypatch, records, tmp_path):
    monkeypatch.setitem(sys.modules, "litdata", None)
    with pytest.raises(ConfigError, match=r"cxrlens\[streaming\]"):
        write_shards(records, PRE, tmp_path / "shards", NodeShare(0, 1), workers=1)


def test_no_shards_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match="no such folder"):
        read_parts(tmp_path / "nowhere", PRE)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no shards"):
        read_parts(tmp_path / "empty", PRE)


def synthetic_collection(root: Path, n: int, side: int = 16) -> Path:
    """``n`` distinct ``side`` px grayscale PNGs in the cxrlens CSV layout (two findings, 50 patients)."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(n, side, side), dtype=np.uint8)
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        name = f"images/{i:05d}.png"
        Image.fromarray(pixels[i]).save(root / name, compress_level=0)
        rows.append([name, f"p{i % 50}", "Pneumonia/Viral/COVID-19" if i % 3 else "No Finding", "PA", "synthetic"])
    write_csv(root / "metadata.csv", ["filename", "patient_id", "finding", "view", "source"], rows)
    return root


@pytest.mark.slow
def test_20000_images_train_one_ddp_epoch_with_the_cache_batches(tmp_path):
    """The acceptance run: prepare 20,000 images both ways, one epoch with 2 DDP processes each way."""
    from tests.data.streaming_ddp import PREPROCESS

    times = {}
    start = time.perf_counter()
    data = synthetic_collection(tmp_path / "data", 20_000)
    times["generate"] = time.perf_counter() - start
    records = load_dataset(cfg=DataConfig(sources=[str(data)])).records
    start = time.perf_counter()
    report = write_shards(records, PREPROCESS, tmp_path / "shards", NodeShare(0, 1))
    times["prepare shards"] = time.perf_counter() - start
    assert report.written == 20_000 and not report.failed
    start = time.perf_counter()
    assert not PreprocessCache(PREPROCESS, tmp_path / "cache").prepare(records).failed
    times["prepare cache"] = time.perf_counter() - start
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("streaming_ddp.py")), str(data), str(tmp_path / "cache"),
         str(tmp_path / "shards"), "7", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    times["ddp epoch"] = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    print("seconds:", {k: round(v, 1) for k, v in times.items()})
    for seen in ranks:  # per rank, per step: the same record ids and the same tensors
        assert seen["streaming"] == seen["cache"]
        assert len(seen["cache"]) == 40  # 10,000 images per rank in batches of 250
    ids = [i for seen in ranks for step in seen["cache"] for i in step["ids"]]
    assert sorted(ids) == sorted(r.filename for r in records)  # every image once in the epoch
    first = ranks[0]["cache"][0]["ids"]
    assert first != sorted(first)  # shuffled by the seed


def test_a_run_on_the_shards_trains_like_the_run_on_the_cache(tmp_path):
    """create_run with data.streaming on a node that has the metadata but not the images: the same fold and
    seed -> the same model and predictions as the run on the cache."""
    import shutil

    from cxrlens.config import load_run_config
    from cxrlens.run import create_run
    from cxrlens.train.runner import train_fold

    data = make_dataset(tmp_path / "data", n=36, patients=18)
    settings = {
        "data.sources": [str(data)],
        "data.preprocess.size": 32,
        "data.cache_dir": str(tmp_path / "cache"),
        "data.labels.min_images": 1,
        "models.names": ["tiny"],
        "train.epochs": 1,
        "train.batch_size": 8,
        "train.patience": 0,
        "cv.split.folds": 3,
        "cv.folds": [0],
    }
    cached = load_run_config(None, settings)
    study = create_run(cached, tmp_path / "run-cache")
    write_shards(study.dataset.records, cached.data.preprocess, tmp_path / "shards", NodeShare(0, 1), workers=2)
    elsewhere = tmp_path / "node2"  # another machine: the metadata and the shards, no image files
    elsewhere.mkdir()
    shutil.copy(data / "metadata.csv", elsewhere / "metadata.csv")
    streaming = {**settings, "data.sources": [str(elsewhere)], "data.streaming": str(tmp_path / "shards")}
    with pytest.raises(ConfigError, match="make the splits where the images are"):
        create_run(load_run_config(None, streaming), tmp_path / "run-shards")
    streaming["cv.splits"] = str(study.run.layout.splits)
    on_shards = create_run(load_run_config(None, streaming), tmp_path / "run-shards")
    assert isinstance(on_shards.cache, ShardImages) and not on_shards.cache.missing
    results = [train_fold(s, "tiny", 0, enable_progress_bar=False) for s in (study, on_shards)]
    assert results[0] is not None and results[1] is not None
    assert results[0].model_sha256 == results[1].model_sha256
    files = [s.run.layout.fold_predictions("tiny", 0).read_text() for s in (study, on_shards)]
    assert files[0] == files[1]


def test_cli_prepares_a_node_part_and_fails_in_one_line(tmp_path):
    from tests.cli.test_cli_data import assert_clean_failure, cxrlens

    out = str(tmp_path / "shards")
    done = cxrlens(
        "data", "prepare", "--data", "@sample", "--size", "32", "--out", out, "--node-rank", "1", "--nodes", "2"
    )
    assert done.returncode == 0, done.stderr
    assert "node 1 of 2" in done.stdout and "25 written" in done.stdout  # 51 images: node 1 writes 25
    assert (tmp_path / "shards" / "part-001-of-002" / MANIFEST).is_file()
    root = make_dataset(tmp_path / "data", n=4)
    (root / "images" / "img002.png").write_bytes(b"not a png")
    failed = cxrlens(
        "data", "prepare", "--data", str(root), "--size", "32", "--format", "streaming", "--out", out + "2"
    )
    assert_clean_failure(failed, "img002.png", "--skip-bad")
    assert_clean_failure(cxrlens("data", "prepare", "--format", "tar"), "--format 'tar'", "cache or streaming")


def test_loader_workers_read_the_shards_like_the_cache(records, tmp_path):
    from cxrlens.data.labels import choose_labels
    from cxrlens.run.images import LabelledImages
    from cxrlens.train.data import make_loader

    kept = [r for r in records if r.filename != "images/img007.png"]
    write_shards(kept, PRE, tmp_path / "shards", NodeShare(0, 1), workers=1)
    cache = PreprocessCache(PRE, tmp_path / "cache")
    shards = ShardImages(tmp_path / "shards", PRE, kept)
    shards.load(kept[0].path)  # opened in the parent before the workers fork: they open their own
    space, _ = choose_labels([r.labels for r in kept], min_images=1)
    batches = [
        list(make_loader(LabelledImages(kept, space, store), 8, shuffle_seed=3, num_workers=2))
        for store in (cache, shards)
    ]
    assert len(batches[0]) == 4
    for (x1, y1), (x2, y2) in zip(*batches, strict=True):
        assert torch.equal(x1, x2) and torch.equal(torch.nan_to_num(y1), torch.nan_to_num(y2))
