"""Quantitative measures of explanation maps: pure functions, batched in torch.

Every function takes maps ``[N, H, W]`` (one per image x model x method x label) and returns one number per
map (NaN where it is undefined), so a caller can bootstrap them over images. The choices:

* **Relevance** (localisation, pointing game, shares): the positive part of a map, which is the evidence *for*
  the label; a map with no positive value at all (e.g. a purely negative DeepLIFT map) is measured on its
  absolute values instead. An all-zero map has no relevance: NaN.
* **Deletion / insertion** (Petsiuk et al. 2018): pixels are ordered by their *signed* attribution, largest
  first (ties broken in a seeded random order, never by position). Deletion replaces them, in ``steps`` equal
  steps, by the baseline 0 (black, the background of the preprocessed images); insertion starts from a
  Gaussian-blurred copy of the image (sigma = size / 32; Petsiuk's choice: a blurred X-ray is still an X-ray,
  a black square is far outside the training data) and puts the original pixels back. The curve follows the
  label's probability; its area uses x in [0, 1] (trapezoid rule). The forward passes of all curves of an
  image are batched (memory bounded by the caller's batch size) and give every label at once, so one set of
  random orders serves all labels of an image.
* **Spearman** rank correlation with average ranks for ties (as scipy), on *absolute* values where maps are
  compared (randomisation test, fold stability): a sign flip of the whole map, common after re-initialising
  a head, is not a change of *where* the evidence is (Adebayo et al. report both; absolute is the stricter
  test for our purpose).
* **Randomisation test** (Adebayo et al. 2018, cascading): the top-level children of the model's ``backbone``
  that hold parameters, in the order the forward pass first calls them (found with hooks, removed after;
  children the forward never calls, such as InceptionV3's auxiliary head in eval mode, are dropped; while
  fewer than four blocks exist the largest is split into its children, e.g. DenseNet's ``features``), are
  re-initialised on a *copy* from the output head down, cumulatively. A module with ``reset_parameters``
  is reset by it (convolutions and linear layers get fresh random weights; batch-norms the identity
  transform), any other parameter is randomly permuted. Seeded per block.
* **Bootstrap**: percentile bootstrap of the mean, resampling *images* (all maps of a drawn image count),
  seeded; a constant sample gives that constant as its interval.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

Forward = Callable[[Tensor], Tensor]  # [B, C, H, W] -> per-label probabilities [B, L]

BORDER_FRACTION = 0.08
SANITY_THRESHOLD = 0.5
MIN_BLOCKS = 4


# ------------------------------------------------------------------------------------------ relevance


def relevance(maps: Tensor) -> Tensor:
    """Per map: its positive part, or its absolute values if it has no positive value. ``[N, H, W]``."""
    maps = maps.float()
    positive = maps.clamp(min=0)
    has_positive = positive.flatten(1).amax(dim=1) > 0
    return torch.where(has_positive[:, None, None], positive, maps.abs())


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
    """Share of positive attribution inside the lung mask (absolute values for maps with no positive part)."""
    return region_share(maps, masks)


def area_share(masks: Tensor) -> Tensor:
    """The masks' share of the image area: the lung share of a uniform map (chance level). ``[N]``."""
    masks = masks.bool()
    if masks.ndim == 2:
        masks = masks[None]
    return masks.flatten(1).double().mean(dim=1)


def pointing_game(maps: Tensor, masks: Tensor, rtol: float = 1e-6) -> Tensor:
    """1 if the map's maximum relevance lies inside the mask, else 0 (NaN for an all-zero map).

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


# ------------------------------------------------------------------------------- randomisation test


def _parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _call_order(model: nn.Module, modules: dict[str, nn.Module], example: Tensor) -> list[str]:
    """Names of ``modules`` in the order the forward pass first calls them (uncalled ones left out)."""
    seen: list[str] = []
    handles = []

    def make_hook(name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: object) -> None:
            if name not in seen:
                seen.append(name)

        return hook

    flags = {m: m.training for m in model.modules()}
    try:
        for name, module in modules.items():
            handles.append(module.register_forward_pre_hook(make_hook(name)))
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
        for module, flag in flags.items():
            module.training = flag
    return seen


def backbone_blocks(model: nn.Module, example: Tensor, min_blocks: int = MIN_BLOCKS) -> list[str]:
    """Qualified names of the model's blocks for the cascading randomisation, input side first.

    The top-level children of ``model.backbone`` (or of ``model``) that hold parameters, ordered by their
    first call in a forward pass of ``example``; uncalled ones are dropped. While fewer than ``min_blocks``
    exist, the block with the most parameters that has parameterised children is split into them.
    """
    root = getattr(model, "backbone", None)
    prefix = "backbone." if isinstance(root, nn.Module) else ""
    root = root if isinstance(root, nn.Module) else model
    blocks = {f"{prefix}{n}": c for n, c in root.named_children() if _parameter_count(c) > 0}
    while len(blocks) < min_blocks:
        splittable = [
            (name, module) for name, module in blocks.items() if any(_parameter_count(c) > 0 for c in module.children())
        ]
        if not splittable:
            break
        name, module = max(splittable, key=lambda item: _parameter_count(item[1]))
        children = {f"{name}.{n}": c for n, c in module.named_children() if _parameter_count(c) > 0}
        rebuilt: dict[str, nn.Module] = {}
        for key, value in blocks.items():
            if key == name:
                rebuilt.update(children)
            else:
                rebuilt[key] = value
        blocks = rebuilt
    unique: dict[str, nn.Module] = {}
    ids: set[int] = set()
    for name, module in blocks.items():
        if id(module) not in ids:
            ids.add(id(module))
            unique[name] = module
    return _call_order(model, unique, example)


def randomise_(module: nn.Module, seed: int = 0, name: str = "") -> None:
    """Re-initialise ``module`` in place: ``reset_parameters`` where defined, else permute each parameter."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seeded_generator(seed, name).initial_seed()))
        generator = seeded_generator(seed, name, "permute")
        for sub in module.modules():
            own = list(sub.parameters(recurse=False))
            if not own:
                continue
            reset = getattr(sub, "reset_parameters", None)
            if callable(reset):
                reset()
                continue
            with torch.no_grad():
                for param in own:
                    flat = param.reshape(-1)
                    param.copy_(flat[torch.randperm(flat.numel(), generator=generator)].reshape(param.shape))


def cascade_cuts(n_blocks: int, max_steps: int | None = None) -> list[int]:
    """How many blocks (from the top) are randomised at each step: always the head alone and all blocks."""
    if n_blocks <= 0:
        return []
    if max_steps is None or max_steps >= n_blocks:
        return list(range(1, n_blocks + 1))
    if max_steps < 2:
        return [n_blocks]
    return sorted({round(v) for v in np.linspace(1, n_blocks, max_steps)})


def cascade(
    model: nn.Module, blocks: Sequence[str], seed: int = 0, max_steps: int | None = None
) -> Iterator[tuple[str, nn.Module]]:
    """Yield (deepest randomised block, model copy) with blocks re-initialised from the last one down.

    One deep copy (hooks of the caller not copied) is randomised cumulatively; ``model`` is never touched.
    The yielded copy is the same object each time: use it before advancing.
    """
    randomised = copy.deepcopy(model)
    for module in randomised.modules():
        module._forward_hooks.clear()
        module._forward_pre_hooks.clear()
        module._backward_hooks.clear()
    randomised.eval()
    top_down = list(reversed(blocks))
    done = 0
    for cut in cascade_cuts(len(top_down), max_steps):
        for name in top_down[done:cut]:
            randomise_(randomised.get_submodule(name), seed, name)
        done = cut
        yield top_down[cut - 1], randomised


@dataclass(frozen=True)
class RandomisationResult:
    layers: list[str]  # deepest randomised block at each step
    spearman: Tensor  # [steps, T] Spearman (absolute values) with the original maps

    def final(self) -> Tensor:
        return self.spearman[-1]

    def insensitive(self, threshold: float = SANITY_THRESHOLD) -> bool:
        """True if the maps stay similar after the whole cascade (mean Spearman above ``threshold``)."""
        value = float(torch.nanmean(self.final().double()))
        return bool(value > threshold)


def randomisation_test(
    model: nn.Module,
    blocks: Sequence[str],
    attribute: Callable[[nn.Module], Tensor],
    original: Tensor | None = None,
    seed: int = 0,
    max_steps: int | None = None,
) -> RandomisationResult:
    """Cascading model-parameter randomisation: ``attribute(model) -> maps [T, H, W]`` on each randomised copy.

    ``original`` defaults to ``attribute(model)``. ``model`` itself is left unchanged.
    """
    if original is None:
        original = attribute(model).detach()
    layers, rows = [], []
    for layer, randomised in cascade(model, blocks, seed, max_steps):
        maps = attribute(randomised).detach()
        rows.append(spearman(original.reshape(original.shape[0], -1), maps.reshape(maps.shape[0], -1), absolute=True))
        layers.append(layer)
    if not rows:
        raise ValueError("no blocks to randomise")
    return RandomisationResult(layers, torch.stack(rows))


def pairwise_spearman(maps: Sequence[Tensor]) -> float:
    """Mean Spearman (absolute values) over every pair of maps; NaN with fewer than two or all undefined."""
    if len(maps) < 2:
        return math.nan
    flat = torch.stack([m.reshape(-1) for m in maps])
    i, j = torch.triu_indices(len(maps), len(maps), offset=1)
    rho = spearman(flat[i], flat[j], absolute=True)
    finite = rho[torch.isfinite(rho)]
    return float(finite.mean()) if finite.numel() else math.nan
