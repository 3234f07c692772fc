"""Cascading model-parameter randomisation (Adebayo et al., "Sanity checks for saliency maps", NeurIPS 2018).

The blocks of a model are the top-level children of its ``backbone`` that hold parameters, in the order the
forward pass first calls them (found with hooks, removed after; children the forward never calls, such as
InceptionV3's auxiliary head in eval mode, are dropped; while fewer than four blocks exist the largest is split
into its children, e.g. DenseNet's ``features``). They are re-initialised on a *copy* from the output head
down, cumulatively. A module with ``reset_parameters`` is reset by it (convolutions and linear layers get fresh
random weights; batch-norms the identity transform), any other parameter is randomly permuted. Seeded per
block. Maps are compared with the original by Spearman on absolute values (:func:`cxrlens.xai.measures.spearman`);
a method whose maps keep a mean Spearman above ``SANITY_THRESHOLD`` after the whole cascade is insensitive to
the model's weights.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from cxrlens.xai.measures import seeded_generator, spearman

SANITY_THRESHOLD = 0.5
MIN_BLOCKS = 4


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
