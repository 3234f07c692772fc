"""Neuron activation profiles (NAP; Krug & Stober, used in the paper's §3.4): per layer, the mean activation of
each feature map for groups of images, minus the mean over the groups.

For each chosen layer, every image's output ``[B, C, H, W]`` is reduced on the fly to the mean activation of
each feature map (``[B, C]``; 2-D outputs ``[B, C]`` are used as they are), so no activation map is ever kept.
Per layer:

* group mean of each feature map over the group's images, ``[G, C]``;
* the *profile*: group means minus their (unweighted) mean over the groups;
* *dead* feature maps, whose per-image mean has zero range over all images, are counted and removed
  (the indices of the live ones are kept);
* the live maps are ranked by their **spread**: ``max_g profile[g, c] - min_g profile[g, c]``, the largest
  difference between two group means, in the layer's activation units (the colour scale of the figures).
  It does not depend on the centring, and for two groups it equals twice ``max_g |profile[g, c]|``.
  The per-map standard deviation over all images is saved too, for effect-size style normalisation.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from cxrlens.errors import DataError, ModelError
from cxrlens.models.registry import model_device
from cxrlens.nap.expressions import make_groups

RANKING = "spread: max over groups minus min over groups of the profile (largest difference of two group means)"


@dataclass
class LayerProfile:
    """The profile of one layer over the groups of a :class:`NapResult` (live feature maps only)."""

    name: str
    channels: int  # feature maps of the layer, dead ones included
    live: np.ndarray  # [n_live] int64 channel indices
    group_means: np.ndarray  # [G, n_live]
    profile: np.ndarray  # [G, n_live] group means minus the mean over groups
    std: np.ndarray  # [n_live] standard deviation of the per-image mean over all images
    score: np.ndarray  # [n_live] spread of the profile over groups (see RANKING)
    order: np.ndarray  # [n_live] positions into live, most discriminative first

    @property
    def dead(self) -> int:
        return self.channels - len(self.live)

    def top(self, k: int) -> np.ndarray:
        """Positions (into ``live``/``profile`` columns) of the ``k`` most discriminative maps."""
        return self.order[: max(k, 0)]


@dataclass
class NapResult:
    group_names: list[str]  # groups with images (rows of every profile)
    group_expressions: list[str]
    group_sizes: dict[str, int]  # every defined group, empty ones with 0
    empty_groups: list[str]
    n_images: int
    layers: dict[str, LayerProfile] = field(default_factory=dict)


def _module_names_hint(model: nn.Module, wanted: str) -> str:
    names = [name for name, _ in model.named_modules() if name]
    close = difflib.get_close_matches(wanted, names, n=6, cutoff=0.6)
    shown = close or names[:10]
    more = "" if close or len(names) <= 10 else f", ... ({len(names)} modules)"
    return ("did you mean " if close else "modules: ") + ", ".join(shown) + more


def _resolve_layers(model: nn.Module, layers: Sequence[str] | None) -> dict[str, nn.Module]:
    if layers is None:
        default = getattr(model, "nap_layer_names", None)
        if default is None:
            raise ModelError(f"{type(model).__name__} names no default NAP layers; pass layers=[...]")
        layers = list(default())
    if not layers:
        raise ModelError("no layers given for activation profiles")
    if len(set(layers)) != len(layers):
        raise ModelError(f"layers listed twice: {sorted({n for n in layers if list(layers).count(n) > 1})}")
    modules = dict(model.named_modules())
    resolved = {}
    for name in layers:
        if name not in modules or not name:
            raise ModelError(f"unknown layer {name!r}; {_module_names_hint(model, name)}")
        resolved[name] = modules[name]
    return resolved


def _reduce(name: str, output: Any) -> torch.Tensor:
    """Per-image mean of every feature map: [B, C, ...] -> [B, C] float64 on the CPU.

    Reduced inside the hook, into new memory: a later in-place op (``ReLU(inplace=True)`` after a batch norm)
    cannot change what was recorded.
    """
    if not isinstance(output, torch.Tensor):
        raise ModelError(f"layer {name!r} returns {type(output).__name__}, not a tensor; choose another module")
    if output.ndim == 2:
        reduced = output.detach().to(torch.float64, copy=True)
    elif output.ndim >= 3:
        reduced = output.detach().flatten(2).double().mean(dim=2)
    else:
        raise ModelError(f"layer {name!r} returns shape {tuple(output.shape)}; expected [B, C, H, W] or [B, C]")
    return reduced.cpu()


class _Accumulator:
    """Streaming per-group sums and per-map min / max / moments of one layer."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sums: np.ndarray | None = None  # [G, C]
        self.total = self.total_sq = self.low = self.high = np.zeros(0)

    def add(self, feats: np.ndarray, masks: np.ndarray) -> None:
        if self.sums is None:
            channels = feats.shape[1]
            self.sums = np.zeros((masks.shape[1], channels))
            self.total, self.total_sq = np.zeros(channels), np.zeros(channels)
            self.low, self.high = np.full(channels, np.inf), np.full(channels, -np.inf)
        elif feats.shape[1] != self.sums.shape[1]:
            raise ModelError(
                f"layer {self.name!r} gave {feats.shape[1]} feature maps, earlier {self.sums.shape[1]}; "
                "NAP needs a fixed channel count"
            )
        self.sums += masks.astype(np.float64).T @ feats
        self.total += feats.sum(axis=0)
        self.total_sq += np.square(feats).sum(axis=0)
        self.low = np.minimum(self.low, feats.min(axis=0))
        self.high = np.maximum(self.high, feats.max(axis=0))

    def finish(self, sizes: np.ndarray, n_images: int, dead_tol: float) -> LayerProfile:
        assert self.sums is not None
        live = np.flatnonzero(self.high - self.low > dead_tol).astype(np.int64)
        means = self.sums[:, live] / sizes[:, None]
        profile = means - means.mean(axis=0, keepdims=True)
        mean_all = self.total[live] / n_images
        std = np.sqrt(np.maximum(self.total_sq[live] / n_images - np.square(mean_all), 0.0))
        score = profile.max(axis=0) - profile.min(axis=0) if live.size else np.zeros(0)
        order = np.lexsort((live, -score)).astype(np.int64)  # by score, ties by channel index
        return LayerProfile(self.name, self.sums.shape[1], live, means, profile, std, score, order)


def _restore_modes(modes: dict[nn.Module, bool]) -> None:
    for module, training in modes.items():
        module.training = training


def compute_nap(
    model: nn.Module,
    loader: Iterable[Any],
    label_matrix_or_sets: np.ndarray | Sequence[Iterable[str]],
    label_names: Sequence[str],
    groups: Mapping[str, str] | None = None,
    layers: Sequence[str] | None = None,
    progress: Callable[[int], None] | None = None,
    dead_tol: float = 0.0,
) -> NapResult:
    """Activation profiles of ``layers`` (default ``model.nap_layer_names()``) over label-expression groups.

    ``loader`` yields image batches ``[B, 1, H, W]`` (or ``(images, ...)`` tuples) in the order of
    ``label_matrix_or_sets`` (a 0/1 matrix over ``label_names``, NaN where unknown, or one label set per image).
    One pass under ``torch.no_grad()`` in eval mode; hooks are removed and every module's training flag restored
    afterwards, also on errors. ``progress(n)`` is called with each batch's image count.
    """
    group_set = make_groups(label_matrix_or_sets, label_names, groups)
    modules = _resolve_layers(model, layers)
    masks = group_set.masks
    n_expected = masks.shape[0]
    accumulators = {name: _Accumulator(name) for name in modules}
    batch_feats: dict[str, torch.Tensor] = {}

    def make_hook(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if name in batch_feats:
                raise ModelError(f"layer {name!r} runs more than once per forward pass; choose a module that runs once")
            batch_feats[name] = _reduce(name, output)

        return hook

    device = model_device(model)
    modes = {module: module.training for module in model.modules()}
    handles = [module.register_forward_hook(make_hook(name)) for name, module in modules.items()]
    seen = 0
    try:
        model.eval()
        with torch.no_grad():
            for batch in loader:
                images = batch[0] if isinstance(batch, tuple | list) else batch
                if not isinstance(images, torch.Tensor):
                    raise DataError(f"the loader gave {type(images).__name__}, expected image tensors [B, 1, H, W]")
                size = int(images.shape[0])
                if seen + size > n_expected:
                    raise DataError(f"the loader gives more images than the {n_expected} label rows")
                batch_feats.clear()
                model(images.to(device))
                missing = [name for name in modules if name not in batch_feats]
                if missing:
                    raise ModelError(f"layer(s) {missing} did not run in the forward pass; choose other layers")
                part = masks[seen : seen + size]
                for name, acc in accumulators.items():
                    feats = batch_feats[name].numpy()
                    if feats.shape[0] != size:
                        raise ModelError(f"layer {name!r} output has batch size {feats.shape[0]}, input {size}")
                    acc.add(feats, part)
                seen += size
                if progress is not None:
                    progress(size)
    finally:
        for handle in handles:
            handle.remove()
        batch_feats.clear()
        _restore_modes(modes)
    if seen != n_expected:
        raise DataError(f"the loader gave {seen} images for {n_expected} label rows")
    sizes = masks.sum(axis=0).astype(np.float64)
    result = NapResult(
        group_names=list(group_set.names),
        group_expressions=list(group_set.expressions),
        group_sizes=dict(group_set.sizes),
        empty_groups=list(group_set.empty),
        n_images=seen,
    )
    for name, acc in accumulators.items():
        result.layers[name] = acc.finish(sizes, seen, dead_tol)
    return result
