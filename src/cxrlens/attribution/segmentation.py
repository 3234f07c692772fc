"""Features for feature ablation and Shapley value sampling: SLIC superpixels, or a regular grid when SLIC fails.

SLIC (Achanta et al., IEEE TPAMI 2012; scikit-image's ``slic``) with the paper's low compactness (0.2,
Chatterjee et al., J. Imaging 2024) follows intensity edges closely. On a strongly textured image
(high-frequency noise, a fine checkerboard) its clusters can merge into very few segments, even one, and the
attribution then has almost nothing to ablate. So :func:`segment` guarantees a count near the request:

    if SLIC returns fewer than ``MIN_SLIC_FRACTION`` (half) of the requested segments, the image is cut instead
    into a regular grid of ``ceil(H / s) x ceil(W / s)`` nearly square cells, ``s = sqrt(H·W / n)``: at least
    ``n`` cells (unless the image has fewer pixels), at most ``(sqrt(n) + 1)²`` for a square image.

The :class:`Segmentation` says which one was used and why (``extra`` of the attribution, kept in each map's
sidecar). Feature ids are always the consecutive integers 0..F-1 (captum's convention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from skimage.segmentation import slic

__all__ = ["MIN_SLIC_FRACTION", "Segmentation", "grid_features", "grid_segments", "segment", "superpixels"]

MIN_SLIC_FRACTION = 0.5  # fewer SLIC segments than this fraction of the request: use the grid


@dataclass(frozen=True)
class Segmentation:
    """Feature ids [H, W] (0..F-1) and how they were made."""

    labels: np.ndarray
    method: Literal["slic", "grid"]
    requested: int
    why: str | None = None  # set when the grid replaced SLIC

    @property
    def count(self) -> int:
        return int(self.labels.max()) + 1 if self.labels.size else 0

    def describe(self) -> dict[str, Any]:
        """``features`` (the count used), ``segments_requested``, ``segmentation`` ("slic" or "grid"), ``why``."""
        out: dict[str, Any] = {
            "features": self.count,
            "segments_requested": self.requested,
            "segmentation": self.method,
        }
        if self.why is not None:
            out["why"] = self.why
        return out


def slic_superpixels(image: np.ndarray, n_segments: int = 256, compactness: float = 0.2) -> np.ndarray:
    """SLIC superpixels of a preprocessed grey image, relabelled to consecutive ids 0..F-1 (no fallback)."""
    labels = slic(
        np.asarray(image, dtype=np.float64),
        n_segments=n_segments,
        compactness=compactness,
        channel_axis=None,
        start_label=0,
    )
    _, consecutive = np.unique(labels, return_inverse=True)
    return consecutive.reshape(labels.shape).astype(np.int64)


def grid_shape(height: int, width: int, n_segments: int) -> tuple[int, int]:
    """(rows, columns) of the grid of nearly square cells with at least ``n_segments`` cells (see module)."""
    side = math.sqrt(height * width / max(1, n_segments))
    return min(height, math.ceil(height / side)), min(width, math.ceil(width / side))


def grid_segments(height: int, width: int, n_segments: int) -> np.ndarray:
    """A ``grid_shape`` grid as features (ids 0..F-1, row-major); cell sides differ by at most one pixel."""
    rows, cols = grid_shape(height, width, n_segments)
    row_ids = np.arange(height) * rows // height
    col_ids = np.arange(width) * cols // width
    return (row_ids[:, None] * cols + col_ids[None, :]).astype(np.int64)


def segment(image: np.ndarray, n_segments: int = 256, compactness: float = 0.2) -> Segmentation:
    """SLIC superpixels of ``image``, or a grid if SLIC returns fewer than half of ``n_segments`` (see module)."""
    labels = slic_superpixels(image, n_segments, compactness)
    found = int(labels.max()) + 1
    if found >= MIN_SLIC_FRACTION * n_segments:
        return Segmentation(labels, "slic", n_segments)
    height, width = labels.shape
    rows, cols = grid_shape(height, width, n_segments)
    why = (
        f"SLIC gave {found} segment{'s' if found != 1 else ''} for {n_segments} requested (fewer than half); "
        f"a regular grid of {rows}x{cols} cells instead"
    )
    return Segmentation(grid_segments(height, width, n_segments), "grid", n_segments, why)


def superpixels(image: np.ndarray, n_segments: int = 256, compactness: float = 0.2) -> np.ndarray:
    """The features :func:`segment` gives (SLIC superpixels, or the grid fallback), ids 0..F-1."""
    return segment(image, n_segments, compactness).labels


def grid_features(height: int, width: int, cell: int) -> np.ndarray:
    """Square cells of ``cell`` pixels as features (ids 0..F-1, row-major)."""
    rows = np.arange(height) // cell
    cols = np.arange(width) // cell
    return (rows[:, None] * (int(np.ceil(width / cell))) + cols[None, :]).astype(np.int64)
