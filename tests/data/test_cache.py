import time

import numpy as np

from cxrlens.config import PreprocessConfig
from cxrlens.data.cache import PreprocessCache
from cxrlens.data.preprocess import preprocess_file
from cxrlens.data.sources import load_dataset
from tests.conftest import save_png, xray_like


def test_cached_images_equal_direct_preprocessing(tiny_data, tmp_path):
    ds = load_dataset([str(tiny_data)])
    cfg = PreprocessConfig(size=48)
    cache = PreprocessCache(cfg, tmp_path / "cache")
    report = cache.prepare(ds.records, workers=2)
    assert (report.total, report.written, report.reused, len(report.failed)) == (24, 24, 0, 0)
    for rec in ds.records[:5]:
        np.testing.assert_allclose(cache.load(rec.path), preprocess_file(rec.path, cfg), atol=1 / 65535)
    again = PreprocessCache(cfg, tmp_path / "cache").prepare(ds.records)
    assert (again.written, again.reused) == (0, 24)


def test_config_change_and_file_change_invalidate_only_what_changed(tiny_data, tmp_path):
    ds = load_dataset([str(tiny_data)])
    PreprocessCache(PreprocessConfig(size=48), tmp_path / "c").prepare(ds.records)
    other = PreprocessCache(PreprocessConfig(size=48, upper_percentile=99), tmp_path / "c").prepare(ds.records)
    assert other.written == 24  # new config: everything redone, in its own folder
    # limits that do not change pixels keep the cache
    same = PreprocessCache(PreprocessConfig(size=48, min_side=8), tmp_path / "c").prepare(ds.records)
    assert same.written == 0
    time.sleep(0.01)
    save_png(ds.records[0].path, xray_like(96, 80, seed=99))  # one file changes
    redo = PreprocessCache(PreprocessConfig(size=48), tmp_path / "c").prepare(ds.records)
    assert (redo.written, redo.reused) == (1, 23)


def test_load_fills_the_cache_lazily_and_recovers_from_a_damaged_entry(tiny_data, tmp_path):
    ds = load_dataset([str(tiny_data)])
    cache = PreprocessCache(PreprocessConfig(size=32), tmp_path / "c")
    path = ds.records[0].path
    first = cache.load(path)
    entry = cache.entry_path(path)
    assert entry.is_file()
    entry.write_bytes(b"garbage")
    np.testing.assert_array_equal(cache.load(path), first)


def test_prepare_reports_unreadable_images(tiny_data, tmp_path):
    ds = load_dataset([str(tiny_data)])
    ds.records[3].path.write_bytes(b"broken")
    report = PreprocessCache(PreprocessConfig(size=32), tmp_path / "c").prepare(ds.records)
    assert len(report.failed) == 1 and "img003.png" in str(report.failed[0])
