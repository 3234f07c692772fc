"""Quantitative measures of explanation maps: pure functions, batched in torch.

Every function takes maps ``[N, H, W]`` (one per image x model x method x label) and returns one number per
map (NaN where it is undefined), so a caller can bootstrap them over images. The choices:

* **Relevance** (lung share, pointing game, border and padding shares): the positive part of a map, which is
  the evidence *for* the label. A map with no positive value (an all-zero map, or a purely negative one such
  as a DeepLIFT map of a label the image argues against) shows no evidence for the label anywhere: these
  measures are undefined for it (NaN, not evaluable) rather than scored on its absolute values, where the
  strongest counter-evidence would count as a hit. :func:`has_positive` tells which maps those are, so the
  stage can count them.
* **Deletion / insertion** (Petsiuk et al., BMVC 2018): pixels are ordered by their *signed* attribution,
  largest first (ties broken in a seeded random order, never by position). Deletion replaces them, in
  ``steps`` equal steps, by the baseline 0 (black, the background of the preprocessed images); insertion
  starts from a Gaussian-blurred copy of the image (sigma = size / 32; Petsiuk's choice: a blurred X-ray is
  still an X-ray, a black square is far outside the training data) and puts the original pixels back. The
  curve follows the label's probability; its area uses x in [0, 1] (trapezoid rule). The forward passes of all
  curves of an image are batched (memory bounded by the caller's batch size) and give every label at once, so
  one set of random orders serves all labels of an image. A gain over random orders is in probability units,
  so it is bounded by the label's probability p(x) on the unmodified image; :func:`relative_gain` divides it
  by p(x) (undefined below ``MIN_PROBABILITY``), so a confident and an unsure model can be compared.
* **Spearman** rank correlation with average ranks for ties (as scipy), on *absolute* values where maps are
  compared (randomisation test, fold stability): a sign flip of the whole map, common after re-initialising
  a head, is not a change of *where* the evidence is (Adebayo et al., NeurIPS 2018 report both; absolute is
  the stricter test for our purpose).
* **Bootstrap**: percentile bootstrap of the mean, resampling *images* (all maps of a drawn image count),
  seeded; a constant sample gives that constant as its interval.

The cascading randomisation of a model's weights is in :mod:`cxrlens.xai.randomisation`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

Forward = Callable[[Tensor], Tensor]  # [B, C, H, W] -> per-label probabilities [B, L]

BORDER_FRACTION = 0.08
MIN_PROBABILITY = 1e-6  # below it a gain relative to p(x) is undefined


# ------------------------------------------------------------------------------------------ relevance


def relevance(maps: Tensor) -> Tensor:
    """Per map: its positive part (zero everywhere for a map with no positive value). ``[N, H, W]``."""
    return maps.float().clamp(min=0)


def has_positive(maps: Tensor) -> Tensor:
    """Per map: does it have any positive value (is its relevance defined)? ``[N]`` bool."""
    return maps.float().flatten(1).amax(dim=1) > 0


def _as_regions(regions: Tensor, n: int) -> Tensor:
    regions = regions.bool()
    if regions.ndim == 2:
        regions = regions.expand(n, *regions.shape)
    return regions


def region_share(maps: Tensor, regions: Tensor) -> Tensor:
    """Share of each map's relevance inside ``regions`` (``[N, H, W]`` or one ``[H, W]`` for all); NaN if none."""
    weights = relevance(maps)
    regions = _as_regions(regions, weights.shape[0])
    total = weights.flatten(1).sum(dim=1, dtype=torch.float64)
    inside = (weights * regions).flatten(1).sum(dim=1, dtype=torch.float64)
    return torch.where(total > 0, inside / total.clamp(min=1e-300), torch.full_like(total, math.nan))


def lung_share(maps: Tensor, masks: Tensor) -> Tensor:
    """Share of positive attribution inside the lung mask (NaN for a map with no positive value)."""
    return region_share(maps, masks)


def area_share(masks: Tensor) -> Tensor:
    """The masks' share of the image area: the lung share of a uniform map (chance level). ``[N]``."""
    masks = masks.bool()
    if masks.ndim == 2:
        masks = masks[None]
    return masks.flatten(1).double().mean(dim=1)


def pointing_game(maps: Tensor, masks: Tensor, rtol: float = 1e-6) -> Tensor:
    """1 if the map's maximum relevance lies inside the mask, else 0 (NaN for a map with no positive value).

    Plateaus (occlusion blocks, upsampled layer maps) have many maximal pixels: the result is then the share
    of them inside the mask, i.e. the expected hit when ties are broken at random.
    """
    weights = relevance(maps)
    regions = _as_regions(masks, weights.shape[0])
    peak = weights.flatten(1).amax(dim=1)
    at_peak = weights >= (peak * (1 - rtol))[:, None, None]
    hits = (at_peak & regions).flatten(1).sum(dim=1).double() / at_peak.flatten(1).sum(dim=1).double()
    return torch.where(peak > 0, hits, torch.full_like(hits, math.nan))


def border_frame(content: Tensor, fraction: float = BORDER_FRACTION) -> Tensor:
    """The outer ``fraction`` of the image content (a frame inside ``content``'s bounding box). ``[H, W]`` bool."""
    content = content.bool()
    frame = torch.zeros_like(content)
    rows = torch.nonzero(content.any(dim=1)).flatten()
    cols = torch.nonzero(content.any(dim=0)).flatten()
    if rows.numel() == 0:
        return frame
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    left, right = int(cols[0]), int(cols[-1]) + 1
    dy = max(1, round(fraction * (bottom - top)))
    dx = max(1, round(fraction * (right - left)))
    frame[top:bottom, left:right] = True
    frame[top + dy : bottom - dy, left + dx : right - dx] = False
    return frame & content


# ----------------------------------------------------------------------------------- deletion / insertion


def seeded_generator(seed: int, *parts: object) -> torch.Generator:
    """A torch generator seeded from ``seed`` and any identifying parts (order-independent results)."""
    digest = hashlib.sha256(repr((seed, *parts)).encode("utf-8")).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def attribution_order(maps: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Pixel indices ``[N, H*W]``, most relevant (largest signed attribution) first; ties in random order."""
    flat = maps.float().flatten(1)
    if generator is None:
        return torch.argsort(flat, dim=1, descending=True, stable=True)
    shuffle = torch.randperm(flat.shape[1], generator=generator)
    order = torch.argsort(flat[:, shuffle], dim=1, descending=True, stable=True)
    return shuffle[order]


def random_orders(count: int, n_pixels: int, generator: torch.Generator) -> Tensor:
    """``count`` random pixel orders ``[count, n_pixels]``."""
    return torch.stack([torch.randperm(n_pixels, generator=generator) for _ in range(count)])


def gaussian_blur(image: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of ``[..., H, W]`` (replicated edges, radius 3 sigma)."""
    if sigma <= 0:
        return image.clone()
    shape = image.shape
    x = image.reshape(-1, 1, *shape[-2:]).float()
    radius = max(1, min(math.ceil(3 * sigma), min(shape[-2:]) - 1))
    grid = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (grid / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = torch.nn.functional.pad(x, (radius, radius, radius, radius), mode="replicate")
    x = torch.nn.functional.conv2d(x, kernel.view(1, 1, 1, -1))
    x = torch.nn.functional.conv2d(x, kernel.view(1, 1, -1, 1))
    return x.reshape(shape).to(image.dtype)


def default_blur_sigma(size: int) -> float:
    return size / 32


def step_counts(n_pixels: int, steps: int) -> list[int]:
    """Pixels changed after each of ``steps`` equal steps (0 first, all last)."""
    return [round(s * n_pixels / steps) for s in range(steps + 1)]


def pixel_curves(
    forward: Forward, source: Tensor, target: Tensor, orders: Tensor, steps: int, batch: int = 16
) -> Tensor:
    """Move pixels from ``source`` to ``target`` in the order of each row of ``orders``, in ``steps`` steps.

    ``source`` and ``target`` are ``[C, H, W]``; ``orders`` ``[K, H*W]``. Returns the forward output after
    each step, ``[K, steps + 1, L]`` (step 0 is ``source``, the last is ``target``: both computed once).
    Forward passes run without autograd in batches of at most ``batch`` images.
    """
    if steps < 2:
        raise ValueError(f"steps must be at least 2, not {steps}")
    channels, height, width = source.shape
    n_pixels = height * width
    if orders.ndim != 2 or orders.shape[1] != n_pixels:
        raise ValueError(f"orders must be [K, {n_pixels}], got {tuple(orders.shape)}")
    k = orders.shape[0]
    counts = torch.tensor(step_counts(n_pixels, steps))
    ranks = torch.empty_like(orders)
    ranks.scatter_(1, orders, torch.arange(n_pixels).expand(k, n_pixels).contiguous())
    src = source.reshape(channels, 1, n_pixels).float()
    tgt = target.reshape(channels, 1, n_pixels).float()
    jobs = [(i, s) for i in range(k) for s in range(1, steps)]
    with torch.no_grad():
        pair = torch.stack([source, target]).float()
        ends = (forward(pair) if batch >= 2 else torch.cat([forward(pair[:1]), forward(pair[1:])])).float()
        out = torch.empty(k, steps + 1, ends.shape[1], dtype=torch.float32)
        out[:, 0] = ends[0]
        out[:, steps] = ends[1]
        for start in range(0, len(jobs), max(1, batch)):
            chunk = jobs[start : start + max(1, batch)]
            rows = torch.tensor([i for i, _ in chunk])
            cols = torch.tensor([s for _, s in chunk])
            moved = ranks[rows] < counts[cols][:, None]  # [B, P]
            images = torch.where(moved[None], tgt, src)  # [C, B, P]
            images = images.permute(1, 0, 2).reshape(len(chunk), channels, height, width)
            out[rows, cols] = forward(images).float()
    return out


def deletion_curves(
    forward: Forward, x: Tensor, orders: Tensor, steps: int, batch: int = 16, baseline: float = 0.0
) -> Tensor:
    """Probabilities ``[K, steps + 1, L]`` as the pixels of ``x`` ``[C, H, W]`` are set to ``baseline``."""
    return pixel_curves(forward, x, torch.full_like(x, baseline), orders, steps, batch)


def insertion_curves(
    forward: Forward, x: Tensor, orders: Tensor, steps: int, batch: int = 16, start: Tensor | None = None
) -> Tensor:
    """Probabilities ``[K, steps + 1, L]`` as the pixels of ``x`` are put back into ``start`` (default blurred)."""
    if start is None:
        start = gaussian_blur(x, default_blur_sigma(x.shape[-1]))
    return pixel_curves(forward, start, x, orders, steps, batch)


def curve_auc(curves: Tensor) -> Tensor:
    """Area under curves sampled at equal steps of x in [0, 1] (trapezoid rule), over the last dimension."""
    steps = curves.shape[-1] - 1
    return torch.trapezoid(curves.double(), dx=1.0 / steps, dim=-1)


def relative_gain(gains: Tensor, probabilities: Tensor, floor: float = MIN_PROBABILITY) -> Tensor:
    """Gains (AUC differences, probability units) divided by the label's probability p(x) on the unmodified
    image; NaN where p(x) < ``floor`` (undefined). Same shape as ``gains``."""
    gains = gains.double()
    base = probabilities.double()
    defined = base >= floor
    return torch.where(defined, gains / base.clamp(min=floor), torch.full_like(gains, math.nan))


# ------------------------------------------------------------------------------------------- spearman


def average_ranks(values: Tensor) -> Tensor:
    """Ranks 1..P along the last dimension, ties given their average rank (scipy's ``rankdata``)."""
    values = values.double().contiguous()
    ordered = torch.sort(values, dim=-1).values
    left = torch.searchsorted(ordered, values, right=False)
    right = torch.searchsorted(ordered, values, right=True)
    return (left + right + 1).double() / 2


def spearman(a: Tensor, b: Tensor, absolute: bool = False) -> Tensor:
    """Spearman rank correlation of each row pair (maps are flattened): ``[N]``, or a 0-d tensor for 1 pair.

    NaN where a row is constant. ``absolute``: correlate absolute values (as for comparing maps).
    """
    single = a.ndim == 1
    a = a.reshape(1, -1) if single else a.flatten(1)
    b = b.reshape(1, -1) if single else b.flatten(1)
    if a.shape != b.shape:
        raise ValueError(f"cannot correlate shapes {tuple(a.shape)} and {tuple(b.shape)}")
    if absolute:
        a, b = a.abs(), b.abs()
    ra = average_ranks(a)
    rb = average_ranks(b)
    ra = ra - ra.mean(dim=1, keepdim=True)
    rb = rb - rb.mean(dim=1, keepdim=True)
    den = torch.sqrt((ra * ra).sum(dim=1) * (rb * rb).sum(dim=1))
    rho = torch.where(den > 0, (ra * rb).sum(dim=1) / den.clamp(min=1e-300), torch.full_like(den, math.nan))
    rho = rho.clamp(-1.0, 1.0)
    return rho[0] if single else rho


# ------------------------------------------------------------------------------------------- bootstrap


@dataclass(frozen=True)
class Interval:
    mean: float  # NaN when there is no value
    low: float
    high: float
    n: int  # values used (finite)
    n_groups: int  # resampled units (images)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    groups: Sequence[object] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """Mean and percentile-bootstrap interval, resampling ``groups`` (default: each value on its own).

    Non-finite values are dropped. The mean of a resample is the mean over every value of the drawn groups.
    """
    vals = np.asarray(values, dtype=np.float64).reshape(-1)
    keys = np.arange(vals.size) if groups is None else np.asarray([str(g) for g in groups])
    if keys.size != vals.size:
        raise ValueError(f"{vals.size} values but {keys.size} group labels")
    finite = np.isfinite(vals)
    vals, keys = vals[finite], keys[finite]
    if vals.size == 0:
        return Interval(math.nan, math.nan, math.nan, 0, 0)
    _, inverse = np.unique(keys, return_inverse=True)
    sums = np.bincount(inverse, weights=vals)
    counts = np.bincount(inverse).astype(np.float64)
    n_groups = sums.size
    mean = float(vals.mean())
    if np.all(vals == vals[0]):
        return Interval(float(vals[0]), float(vals[0]), float(vals[0]), int(vals.size), n_groups)
    if n_boot <= 0 or n_groups < 2:
        return Interval(mean, mean if n_groups < 2 else math.nan, mean if n_groups < 2 else math.nan,
                        int(vals.size), n_groups)  # fmt: skip
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    chunk = max(1, 4_000_000 // n_groups)
    for start in range(0, n_boot, chunk):
        draw = rng.integers(0, n_groups, size=(min(chunk, n_boot - start), n_groups))
        stats[start : start + draw.shape[0]] = sums[draw].sum(axis=1) / counts[draw].sum(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return Interval(mean, float(low), float(high), int(vals.size), n_groups)


def pairwise_spearman(maps: Sequence[Tensor]) -> float:
    """Mean Spearman (absolute values) over every pair of maps; NaN with fewer than two or all undefined."""
    if len(maps) < 2:
        return math.nan
    flat = torch.stack([m.reshape(-1) for m in maps])
    i, j = torch.triu_indices(len(maps), len(maps), offset=1)
    rho = spearman(flat[i], flat[j], absolute=True)
    finite = rho[torch.isfinite(rho)]
    return float(finite.mean()) if finite.numel() else math.nan
