import csv

import numpy as np
import pytest

from cxrlens.config import PreprocessConfig
from cxrlens.data.imageio import read_image
from cxrlens.data.preprocess import Geometry, preprocess_array, preprocess_file, preprocess_mask, resize
from tests.conftest import xray_like

CFG = PreprocessConfig(size=64)


def check_paper_preprocessing(raw: np.ndarray, out: np.ndarray, cfg: PreprocessConfig) -> None:
    """The acceptance checks: NxN in [0,1], percentile pixels -> 0/1, zero padding, aspect kept."""
    n = cfg.size
    assert out.shape == (n, n) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0 and np.isfinite(out).all()
    geo = Geometry.for_shape(*raw.shape, n, cfg.pad)
    content = out[geo.top : geo.top + geo.content_height, geo.left : geo.left + geo.content_width]
    assert abs(geo.content_width / geo.content_height - raw.shape[1] / raw.shape[0]) * geo.content_height <= 1.0
    assert max(geo.content_height, geo.content_width) == n
    assert not out[~geo.content_mask()].any(), "padding must stay zero"
    resized = resize(raw, geo.content_height, geo.content_width)
    lo, hi = np.percentile(resized, [cfg.lower_percentile, cfg.upper_percentile])
    assert np.all(content[resized <= lo] == 0.0)
    assert np.all(content[resized >= hi] == 1.0)
    inside = (resized > lo) & (resized < hi)
    np.testing.assert_allclose(content[inside], (resized[inside] - lo) / (hi - lo), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(96, 64), (64, 96), (50, 50), (300, 120)])
def test_preprocessing_matches_the_paper_on_synthetic_images(shape):
    raw = xray_like(*shape).astype(np.float32)
    check_paper_preprocessing(raw, preprocess_array(raw, CFG), CFG)


def test_percentiles_ignore_padding():
    raw = np.full((100, 40), 200.0, dtype=np.float32)
    raw[:, :20] = 100.0
    out = preprocess_array(raw, PreprocessConfig(size=100, lower_percentile=1, upper_percentile=95))
    geo = Geometry.for_shape(100, 40, 100)
    content = out[:, geo.left : geo.left + geo.content_width]
    assert content.max() == 1.0 and content.min() == 0.0
    assert (out[:, : geo.left] == 0).all()


def test_constant_image_gives_zeros_not_nan():
    out = preprocess_array(np.full((80, 60), 7.0, dtype=np.float32), CFG)
    assert np.isfinite(out).all() and not out.any()


def test_end_padding_and_options():
    cfg = PreprocessConfig(size=32, pad="end", lower_percentile=0, upper_percentile=100)
    out = preprocess_array(xray_like(64, 32).astype(np.float32), cfg)
    assert out[:, 16:].sum() == 0 and out[:, :16].max() == 1.0


def test_invalid_percentiles_rejected():
    with pytest.raises(ValueError, match="must be below"):
        PreprocessConfig(lower_percentile=95, upper_percentile=1)


def test_mask_follows_image_geometry():
    mask = np.zeros((100, 50), dtype=np.uint8)
    mask[:, :25] = 255
    out = preprocess_mask(mask, PreprocessConfig(size=40))
    geo = Geometry.for_shape(100, 50, 40)
    assert out.shape == (40, 40) and out.dtype == bool
    assert out[:, geo.left : geo.left + 10].all() and not out[:, geo.left + 10 :].any()


def test_16bit_precision_survives_preprocessing(tmp_path):
    from PIL import Image

    deep = (np.linspace(0, 1000, 64 * 64).reshape(64, 64)).astype(np.uint16)  # values 0..1000 in 16 bits
    path = tmp_path / "deep.png"
    Image.fromarray(deep).save(path)
    out = preprocess_file(path, PreprocessConfig(size=64, lower_percentile=0, upper_percentile=100))
    assert len(np.unique(out)) > 900  # an 8-bit path would leave at most 256 levels


@pytest.mark.realdata
def test_preprocessing_on_real_images(realdata):
    with (realdata / "metadata.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    rgba = [r for r in rows if r["mode"] == "RGBA"][:1]
    oblong = [r for r in rows if int(r["width"]) != int(r["height"])][:2]
    picks = [rows[0], rows[-1], *rgba, *oblong]
    cfg = PreprocessConfig(size=128)
    for row in picks:
        raw = read_image(realdata / row["filename"])
        check_paper_preprocessing(raw, preprocess_array(raw, cfg), cfg)
    check_paper_preprocessing(raw, preprocess_file(realdata / picks[-1]["filename"], cfg), cfg)
