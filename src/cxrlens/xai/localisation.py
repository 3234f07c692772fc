"""Localisation and shortcut shares of the maps of one image and model: where the positive evidence lies.

Per map (definitions in :mod:`cxrlens.xai.measures`): the share of its relevance (positive part) on the outer
``BORDER_FRACTION`` frame of the image content and on the zero padding; with a lung mask, the share inside the
lungs (and its complement, outside), the pointing game, and the lungs' own area share (the chance level).
A map with no positive value is not evaluable: those measures stay NaN and :func:`no_positive_counts` counts
such maps per model and method, so the stage can report them.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import torch

from cxrlens.xai import measures as xm
from cxrlens.xai.scores import ScoredMap, method_order, model_order


def localise(maps: list[ScoredMap], tensors: torch.Tensor, mask: np.ndarray | None, content: np.ndarray) -> None:
    """Score ``maps`` (their values ``tensors`` ``[N, H, W]``) of one image: ``mask`` its lungs (or None),
    ``content`` where its content lies in the padded square."""
    positive = xm.has_positive(tensors)
    content_t = torch.from_numpy(content)
    border = xm.border_frame(content_t, xm.BORDER_FRACTION)
    borders = xm.region_share(tensors, border)
    padding = xm.region_share(tensors, ~content_t)
    for i, item in enumerate(maps):
        item.has_positive = bool(positive[i])
        item.values["border_share"] = float(borders[i])
        item.values["padding_share"] = float(padding[i])
    if mask is None:
        return
    mask_t = torch.from_numpy(mask)
    shares = xm.lung_share(tensors, mask_t)
    hits = xm.pointing_game(tensors, mask_t)
    area = float(xm.area_share(mask_t)[0])
    for i, item in enumerate(maps):
        share = float(shares[i])
        item.values["lung_share"] = share
        item.values["outside_lung_share"] = 1.0 - share if math.isfinite(share) else math.nan
        item.values["pointing_game"] = float(hits[i])
        item.values["lung_area_share"] = area


def no_positive_counts(maps: list[ScoredMap]) -> dict[str, dict[str, int]]:
    """model -> method -> how many of its localised maps have no positive value (every cell, zeros included)."""
    counts = Counter((m.model, m.method) for m in maps if m.has_positive is False)
    cells = {(m.model, m.method) for m in maps if m.has_positive is not None}
    out: dict[str, dict[str, int]] = {}
    for model in model_order(maps):
        row = {method: counts[(model, method)] for method in method_order(maps) if (model, method) in cells}
        if row:
            out[model] = row
    return out


def no_positive_note(counts: dict[str, dict[str, int]], n_maps: int) -> str | None:
    """A note naming the maps with no positive value, or None when every map has some."""
    cells = [(model, method, n) for model, row in counts.items() for method, n in row.items() if n]
    if not cells:
        return None
    total = sum(n for _, _, n in cells)
    listed = ", ".join(f"{method} on {model}: {n}" for model, method, n in cells)
    return (
        f"{total} of {n_maps} map(s) have no positive attribution ({listed}): their lung share, pointing game, "
        "border and padding shares are not evaluable (no evidence for the label; see no_positive_maps)"
    )
