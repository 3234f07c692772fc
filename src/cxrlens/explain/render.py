"""Overlays and figures: a map over its preprocessed X-ray, models x methods grids (paper Fig. 8-10),
occlusion across models (Fig. 11-12) and across follow-up images of one patient (Fig. 13)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cxrlens.fileio import atomic_open

SIGNED_CMAP = "RdBu_r"
POSITIVE_CMAP = "inferno"


def normalise(values: np.ndarray, signed: bool, percentile: float = 99.5) -> np.ndarray:
    """Map to [-1, 1] (signed) or [0, 1] by a robust maximum; an all-zero map stays zero."""
    values = np.asarray(values, dtype=np.float32)
    magnitude = np.abs(values) if signed else np.clip(values, 0, None)
    top = float(np.percentile(magnitude, percentile)) if magnitude.size else 0.0
    if top <= 0:
        top = float(magnitude.max()) if magnitude.size else 0.0
    if top <= 0:
        return np.zeros_like(values)
    scaled = values / top
    return np.clip(scaled, -1.0, 1.0) if signed else np.clip(scaled, 0.0, 1.0)


def is_signed(values: np.ndarray) -> bool:
    """True when the map has a real negative part (more than 1% of its mass)."""
    negative = float(np.clip(-values, 0, None).sum())
    return negative > 0.01 * float(np.abs(values).sum())


def overlay(image: np.ndarray, values: np.ndarray, alpha: float = 0.55, signed: bool | None = None) -> np.ndarray:
    """RGB uint8: the grey X-ray with the map in colour on top; opacity follows the map's magnitude."""
    from matplotlib import colormaps

    signed = is_signed(values) if signed is None else signed
    norm = normalise(values, signed)
    if signed:
        colours = colormaps[SIGNED_CMAP]((norm + 1) / 2)[..., :3]
        weight = np.abs(norm)
    else:
        colours = colormaps[POSITIVE_CMAP](norm)[..., :3]
        weight = norm
    grey = np.repeat(np.clip(image, 0, 1)[..., None], 3, axis=2)
    mix = alpha * np.sqrt(weight)[..., None]
    return (np.clip(grey * (1 - mix) + colours * mix, 0, 1) * 255).astype(np.uint8)


def save_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    with atomic_open(path, "wb", encoding=None) as handle:
        Image.fromarray(array).save(handle, format="PNG", optimize=False)


def _save_figure(figure: Any, path: Path, dpi: int = 110) -> None:
    with atomic_open(path, "wb", encoding=None) as handle:
        figure.savefig(handle, format="png", dpi=dpi, bbox_inches="tight")


def _figure(rows: int, cols: int, cell: float = 1.9) -> tuple[Any, np.ndarray]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(max(2.5, cols * cell), max(2.2, rows * cell + 0.5)))
    axes = np.atleast_2d(figure.subplots(rows, cols, squeeze=False))
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    return figure, axes


def grid_figure(
    image: np.ndarray,
    maps: dict[tuple[str, str], np.ndarray],
    models: Sequence[str],
    methods: Sequence[str],
    title: str,
    path: Path,
    row_notes: dict[str, str] | None = None,
) -> None:
    """Models (rows) x methods (columns) for one image and label, like the paper's Fig. 8-10."""
    figure, axes = _figure(len(models), len(methods) + 1)
    for r, model in enumerate(models):
        axes[r, 0].imshow(image, cmap="gray", vmin=0, vmax=1)
        note = (row_notes or {}).get(model, "")
        axes[r, 0].set_ylabel(f"{model}\n{note}".strip(), fontsize=8)
        for c, method in enumerate(methods, start=1):
            values = maps.get((model, method))
            if values is None:
                axes[r, c].text(0.5, 0.5, "n/a", ha="center", va="center", fontsize=8)
                axes[r, c].set_facecolor("#eeeeee")
            else:
                axes[r, c].imshow(overlay(image, values))
            if r == 0:
                axes[r, c].set_title(method.replace("_", " "), fontsize=8)
    axes[0, 0].set_title("image", fontsize=8)
    figure.suptitle(title, fontsize=9)
    _save_figure(figure, path)


def strip_figure(
    panels: Sequence[tuple[np.ndarray, np.ndarray | None, str]], title: str, path: Path, show_image: bool = False
) -> None:
    """One row of overlays (image, map, caption): occlusion across models or across follow-up images."""
    count = len(panels) + (1 if show_image else 0)
    figure, axes = _figure(1, count, cell=2.3)
    start = 0
    if show_image:
        axes[0, 0].imshow(panels[0][0], cmap="gray", vmin=0, vmax=1)
        axes[0, 0].set_title("image", fontsize=8)
        start = 1
    for i, (image, values, caption) in enumerate(panels, start=start):
        axes[0, i].imshow(overlay(image, values) if values is not None else image, cmap="gray")
        axes[0, i].set_title(caption, fontsize=8)
    figure.suptitle(title, fontsize=9)
    _save_figure(figure, path)
