"""Drawing the explain stage's figures: a models x methods grid of overlays (paper Fig. 8-10) and a strip of
overlays (occlusion across models, Fig. 11-12, or over follow-up images, Fig. 13)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from cxrlens.figures import overlay, save_figure


def _figure(rows: int, cols: int, cell: float = 1.9) -> tuple[Figure, np.ndarray]:
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
    save_figure(figure, path, dpi=110, tight=True)


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
    save_figure(figure, path, dpi=110, tight=True)
