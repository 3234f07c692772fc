"""Features for feature ablation and Shapley sampling: SLIC superpixels, a regular grid when SLIC collapses."""

import math

import numpy as np
import pytest
import torch

from cxrlens.attribution.methods import Context, get_method
from cxrlens.attribution.prepare import prepare_model
from cxrlens.attribution.segmentation import (
    MIN_SLIC_FRACTION,
    grid_segments,
    grid_shape,
    segment,
    slic_superpixels,
    superpixels,
)
from cxrlens.models import create_model
from cxrlens.models.footprint import GIB, measure

SIZE = 128


def checkerboard(size: int = SIZE) -> np.ndarray:
    return (np.indices((size, size)).sum(axis=0) % 2).astype(np.float64)


def noise(size: int = SIZE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((size, size))


def smooth(size: int = SIZE) -> np.ndarray:
    ramp = np.linspace(0.0, 1.0, size)
    return np.add.outer(ramp, ramp) / 2


def assert_consecutive(labels: np.ndarray) -> None:
    assert labels.dtype == np.int64 and labels.min() == 0
    assert sorted(set(labels.ravel().tolist())) == list(range(int(labels.max()) + 1))


@pytest.mark.parametrize("make", [checkerboard, noise], ids=["checkerboard", "noise"])
def test_textured_image_falls_back_to_a_grid_near_the_request(make):
    image = make()
    requested = 256
    collapsed = int(slic_superpixels(image, requested, 0.2).max()) + 1  # the paper's compactness
    assert collapsed < MIN_SLIC_FRACTION * requested  # SLIC alone fails here (1 segment on the checkerboard)
    result = segment(image, requested, 0.2)
    assert result.method == "grid"
    assert requested <= result.count <= (math.isqrt(requested) + 1) ** 2
    assert_consecutive(result.labels)
    extra = result.describe()
    assert extra["segmentation"] == "grid" and extra["features"] == result.count
    assert extra["segments_requested"] == requested
    assert extra["why"].startswith(f"SLIC gave {collapsed} segment") and "256 requested" in extra["why"]
    np.testing.assert_array_equal(superpixels(image, requested, 0.2), result.labels)


def test_smooth_image_keeps_slic():
    result = segment(smooth(), 256, 0.2)
    assert result.method == "slic" and result.why is None
    assert result.count >= MIN_SLIC_FRACTION * 256
    np.testing.assert_array_equal(result.labels, slic_superpixels(smooth(), 256, 0.2))
    assert result.describe() == {"features": result.count, "segments_requested": 256, "segmentation": "slic"}


@pytest.mark.parametrize(("height", "width", "n"), [(512, 512, 256), (80, 80, 6), (40, 36, 10), (7, 5, 100)])
def test_grid_has_at_least_the_requested_cells_of_nearly_equal_size(height, width, n):
    labels = grid_segments(height, width, n)
    rows, cols = grid_shape(height, width, n)
    assert labels.shape == (height, width)
    assert_consecutive(labels)
    assert int(labels.max()) + 1 == rows * cols >= min(n, height * width)
    heights, widths = np.bincount(labels[:, 0] // cols), np.bincount(labels[0] % cols)
    assert np.ptp(heights) <= 1 and np.ptp(widths) <= 1  # cell sides differ by at most one pixel
    if (height, width, n) == (512, 512, 256):
        assert (rows, cols) == (16, 16) and set(np.bincount(labels.ravel()).tolist()) == {32 * 32}


def _context(model: torch.nn.Module, image: np.ndarray) -> Context:
    return Context(model, measure(model, image.shape[-1]), 0.5 * GIB, image=image)


@pytest.mark.parametrize("method", ["feature_ablation", "shapley_value_sampling"])
def test_methods_report_the_segmentation_in_extra(method):
    torch.manual_seed(0)
    model = prepare_model(create_model("tiny", num_labels=2).eval())
    spec = get_method(method)
    params = spec.parse({"segments": 16, "n_samples": 1} if method == "shapley_value_sampling" else {"segments": 16})
    textured = noise(64).astype(np.float32)
    result = spec.run(_context(model, textured), params, torch.from_numpy(textured)[None, None], [0, 1])
    assert result.extra is not None and result.extra["segmentation"] == "grid"
    assert result.extra["features"] == 16 and "why" in result.extra
    assert result.maps.shape == (2, 64, 64)
    plain = smooth(64).astype(np.float32)
    result = spec.run(_context(model, plain), params, torch.from_numpy(plain)[None, None], [0])
    assert result.extra is not None and result.extra["segmentation"] == "slic" and "why" not in result.extra
