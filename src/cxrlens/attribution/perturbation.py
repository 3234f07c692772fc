"""Perturbation attributions for every label from the same forward passes.

One forward pass yields all logits, so occlusion, feature ablation and Shapley value sampling
compute every requested label at once instead of repeating the passes per label (captum's
per-label loop). Semantics equal captum's ``Occlusion``, ``FeatureAblation`` and
``ShapleyValueSampling`` (tests compare them); the passes run without autograd, in batches of
``batch`` perturbed images. Features (superpixels or grid cells) come from
:mod:`cxrlens.attribution.segmentation`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch

Forward = Callable[[torch.Tensor], torch.Tensor]  # [B, 1, H, W] -> [B, L]
Progress = Callable[[int], None] | None


def _batched_eval(forward: Forward, make: Callable[[int, int], torch.Tensor], count: int, batch: int,
                  progress: Progress) -> Iterator[tuple[int, torch.Tensor]]:  # fmt: skip
    """Yield (start, outputs [n, L]) for perturbed inputs ``make(start, stop)`` in batches."""
    for start in range(0, count, batch):
        stop = min(count, start + batch)
        with torch.no_grad():
            out = forward(make(start, stop)).float()
        if progress:
            progress(stop - start)
        yield start, out


def occlusion_windows(size: Sequence[int], window: Sequence[int], stride: Sequence[int]) -> list[list[tuple[int, int]]]:
    """Per spatial dimension, the (start, stop) of every window position, as captum places them."""
    spans = []
    for dim, win, step in zip(size, window, stride, strict=True):
        if win > dim:
            raise ValueError(f"occlusion window {win} is larger than the image ({dim})")
        count = math.ceil((dim - win) / step) + 1
        spans.append([(k * step, min(k * step + win, dim)) for k in range(count)])
    return spans


def occlusion_passes(size: Sequence[int], window: Sequence[int], stride: Sequence[int]) -> int:
    spans = occlusion_windows(size, window, stride)
    return math.prod(len(s) for s in spans)


def occlusion(
    forward: Forward,
    x: torch.Tensor,
    targets: Sequence[int],
    window: tuple[int, int],
    stride: tuple[int, int],
    baseline: float = 0.0,
    batch: int = 16,
    progress: Progress = None,
) -> torch.Tensor:
    """Occlusion maps [T, H, W] of one grey image ``x`` [1, 1, H, W] for the label indices ``targets``.

    A window (spanning the single channel) slides with ``stride``; each pixel gets the mean drop of
    the output over the windows covering it, as captum's ``Occlusion`` with window (1, *window).
    """
    _check_single(x)
    height, width = x.shape[-2:]
    rows, cols = occlusion_windows((height, width), window, stride)
    positions = [(r, c) for c in cols for r in rows]  # any order: the sums are the same
    with torch.no_grad():
        reference = forward(x).float()[0, list(targets)]
    total = torch.zeros(len(targets), height, width)
    count = torch.zeros(height, width)

    def make(start: int, stop: int) -> torch.Tensor:
        out = x.repeat(stop - start, 1, 1, 1)
        for i, ((r0, r1), (c0, c1)) in enumerate(positions[start:stop]):
            out[i, :, r0:r1, c0:c1] = baseline
        return out

    for start, out in _batched_eval(forward, make, len(positions), batch, progress):
        drop = reference[None, :] - out[:, list(targets)]  # [n, T]
        for i, ((r0, r1), (c0, c1)) in enumerate(positions[start : start + len(out)]):
            total[:, r0:r1, c0:c1] += drop[i][:, None, None]
            count[r0:r1, c0:c1] += 1
    return total / count.clamp(min=1)


def _feature_pixels(mask: torch.Tensor) -> tuple[list[int], list[torch.Tensor]]:
    """Feature ids (sorted) and the flat pixel indices of each (memory: one index per pixel)."""
    flat = mask.flatten()
    order = torch.argsort(flat, stable=True)
    ids, counts = torch.unique_consecutive(flat[order], return_counts=True)
    return [int(v) for v in ids.tolist()], list(torch.split(order, counts.tolist()))


def feature_ablation(
    forward: Forward,
    x: torch.Tensor,
    targets: Sequence[int],
    feature_mask: torch.Tensor,
    baseline: float = 0.0,
    batch: int = 16,
    progress: Progress = None,
) -> torch.Tensor:
    """Feature-ablation maps [T, H, W]: each pixel gets the output drop when its feature (superpixel) is
    set to ``baseline``, as captum's ``FeatureAblation`` with ``feature_mask`` [H, W] of integer ids."""
    _check_single(x)
    height, width = x.shape[-2:]
    features, pixels = _feature_pixels(feature_mask.reshape(height, width))
    with torch.no_grad():
        reference = forward(x).float()[0, list(targets)]
    result = torch.zeros(len(targets), height * width)

    def make(start: int, stop: int) -> torch.Tensor:
        out = x.repeat(stop - start, 1, 1, 1).reshape(stop - start, -1)
        for i, index in enumerate(pixels[start:stop]):
            out[i, index] = baseline
        return out.reshape(stop - start, 1, height, width)

    for start, out in _batched_eval(forward, make, len(features), batch, progress):
        drop = reference[None, :] - out[:, list(targets)]
        for i, index in enumerate(pixels[start : start + len(out)]):
            result[:, index] = drop[i][:, None]
    return result.reshape(len(targets), height, width)


def shapley_value_sampling(
    forward: Forward,
    x: torch.Tensor,
    targets: Sequence[int],
    feature_mask: torch.Tensor,
    n_samples: int = 4,
    baseline: float = 0.0,
    batch: int = 16,
    generator: torch.Generator | None = None,
    progress: Progress = None,
) -> torch.Tensor:
    """Shapley value sampling maps [T, H, W], as captum's ``ShapleyValueSampling``.

    For each of ``n_samples`` random feature orders, features are revealed one by one on the
    baseline image; each feature is credited with the output change it causes. Feature ids must
    be 0..F-1 (captum's convention); orders are ``torch.randperm(F, generator=generator)``.
    """
    _check_single(x)
    height, width = x.shape[-2:]
    features, pixels = _feature_pixels(feature_mask.reshape(height, width))
    n_features = len(features)
    if features != list(range(n_features)):
        raise ValueError("feature mask ids must be the consecutive integers 0..F-1")
    flat_x = x.reshape(-1)
    with torch.no_grad():
        start_value = forward(torch.full_like(x, baseline)).float()[0, list(targets)]
    total = torch.zeros(len(targets), n_features)
    for _ in range(n_samples):
        order = torch.randperm(n_features, generator=generator).tolist()
        current = torch.full_like(flat_x, baseline)  # the baseline with the features revealed so far

        def make(start: int, stop: int, order: list[int] = order, current: torch.Tensor = current) -> torch.Tensor:
            out = torch.empty(stop - start, height * width)
            for i, feature in enumerate(order[start:stop]):
                current[pixels[feature]] = flat_x[pixels[feature]]
                out[i] = current
            return out.reshape(stop - start, 1, height, width)

        previous = start_value
        for start, out in _batched_eval(forward, make, n_features, batch, progress):
            values = out[:, list(targets)]
            gains = torch.cat([previous[None], values], dim=0).diff(dim=0)  # [n, T]
            for i, feature in enumerate(order[start : start + len(out)]):
                total[:, feature] += gains[i]
            previous = values[-1]
    per_feature = total / n_samples
    result = torch.empty(len(targets), height * width)
    for feature, index in enumerate(pixels):
        result[:, index] = per_feature[:, feature][:, None]
    return result.reshape(len(targets), height, width)


def _check_single(x: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[0] != 1 or x.shape[1] != 1:
        raise ValueError(f"expected one grey image [1, 1, H, W], got {tuple(x.shape)}")
