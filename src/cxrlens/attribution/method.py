"""What an attribution method is: :class:`Method`, its :class:`Context` and result, and the ``METHODS`` registry.

Each method turns one preprocessed grey image ``x`` [1, 1, H, W] and a list of label indices into maps
[T, H, W] (plus DeepLIFT / IG convergence deltas). The method families (:mod:`~cxrlens.attribution.gradient`,
:mod:`~cxrlens.attribution.layer`, :mod:`~cxrlens.attribution.perturbation_methods`) register themselves
here; :mod:`cxrlens.attribution.methods` imports them all and is what other packages use. The helpers below
are shared by the families: label chunks, channel-summed maps, captum gradient methods over label batches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxrlens.attribution.params import LayerParams, Params
from cxrlens.config import validate
from cxrlens.errors import MethodError
from cxrlens.models.footprint import Footprint
from cxrlens.models.registry import model_device
from cxrlens.registry import Registry

__all__ = [
    "METHODS",
    "Attribution",
    "Context",
    "Method",
    "ProbabilityOutput",
    "grad_method",
    "label_chunks",
    "passes",
    "register",
    "repeat_image",
    "to_maps",
]


@dataclass
class Attribution:
    maps: torch.Tensor  # [T, H, W]
    delta: torch.Tensor | None = None  # [T] convergence delta (DeepLIFT, IG)
    extra: dict[str, Any] | None = None  # facts about the run (window, features, ...): stored in each map's sidecar


@dataclass
class Context:
    """What a method needs besides the image: the prepared model and limits."""

    model: nn.Module  # prepared model (or ensemble); returns logits
    footprint: Footprint
    budget_bytes: float
    image: np.ndarray | None = None  # preprocessed image (superpixels)
    progress: Callable[[int], None] | None = None
    layer_name: str | None = None  # default layer (None: the model has none, e.g. the ensemble)

    @property
    def device(self) -> torch.device:
        """Where the model's weights are (inputs go there; maps come back to the CPU)."""
        return model_device(self.model)

    def module(self, params: Params) -> nn.Module:
        return self.model if params.output == "logit" else ProbabilityOutput(self.model)

    def layer(self, module: nn.Module, params: LayerParams, method: str) -> nn.Module:
        name = params.layer or self.layer_name
        if name is None:
            raise MethodError(
                f"{method} needs a layer, and this model has none to offer (an ensemble has no single layer); "
                "explain a member model or pass a layer name"
            )
        target = module.model if isinstance(module, ProbabilityOutput) else module
        try:
            return target.get_submodule(name)
        except AttributeError:
            raise MethodError(f"{method}: the model has no layer {name!r}") from None

    def grad_batch(self, per_image_copies: int = 1) -> int:
        return max(1, self.footprint.grad_batch(self.budget_bytes) // per_image_copies)

    def no_grad_batch(self) -> int:
        return self.footprint.no_grad_batch(self.budget_bytes)


class ProbabilityOutput(nn.Module):
    """Sigmoid of the logits as a module (so DeepLIFT's rescale rule applies to it)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probabilities = getattr(self.model, "mean_probability", None)
        if probabilities is not None:  # an ensemble averages its members' probabilities itself
            return probabilities(x)
        return self.sigmoid(self.model(x))


@dataclass(frozen=True)
class Method:
    name: str
    family: Literal["gradient", "perturbation", "layer"]
    description: str
    params: type[Params]
    compute: Callable[[Context, Any, torch.Tensor, Sequence[int]], Attribution]
    cost: Callable[[Any, int], dict[str, int]]  # (params, image size) -> passes per image
    per_label_cost: bool  # True: the cost is per label; False: one set of passes serves every label
    signed: bool = True
    # (footprint, budget bytes, params): raises MethodError if the method cannot keep to the budget at all
    budget_check: Callable[[Footprint, float, Any], None] | None = None

    def parse(self, options: dict[str, Any] | None = None) -> Params:
        return validate(self.params, dict(options or {}), f"{self.name} parameters")

    def check_budget(self, footprint: Footprint, budget_bytes: float, params: Params) -> None:
        """Refuse (``MethodError`` with the memory needed) a model and image size the budget cannot hold; a stage
        may call this before any work, :meth:`run` calls it before the first pass."""
        if self.budget_check is not None:
            self.budget_check(footprint, budget_bytes, params)

    def run(self, ctx: Context, params: Params, x: torch.Tensor, targets: Sequence[int]) -> Attribution:
        """Maps [T, H, W] on the CPU of one image ``x`` [1, 1, H, W] for the label indices ``targets``.

        Gradient and layer methods run on the model's device; perturbation methods build their
        perturbed images on the CPU and send each batch to the model.
        """
        self.check_budget(ctx.footprint, ctx.budget_bytes, params)
        if self.family != "perturbation":
            x = x.to(ctx.device)
        result = self.compute(ctx, params, x, targets)
        delta = None if result.delta is None else result.delta.cpu()
        return Attribution(result.maps.cpu(), delta, result.extra)

    def describe(self, size: int = 512) -> dict[str, Any]:
        params = self.params()
        return {
            "name": self.name,
            "family": self.family,
            "description": self.description,
            "parameters": params.model_dump(),
            "cost_per_image": self.cost(params, size),
            "cost_is_per_label": self.per_label_cost,
        }


METHODS: Registry[Method] = Registry("attribution method")


def register(method: Method) -> Method:
    METHODS.add(method.name, method)
    return method


# -- helpers shared by the families ----------------------------------------------------------------


def repeat_image(x: torch.Tensor, n: int) -> torch.Tensor:
    """``x`` [1, ...] repeated ``n`` times along the batch (a copy, so captum may write into it)."""
    return x.expand(n, *x.shape[1:]).clone()


def label_chunks(targets: Sequence[int], size: int) -> list[list[int]]:
    return [list(targets[i : i + size]) for i in range(0, len(targets), size)]


def to_maps(attr: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """[T, C, h, w] attributions -> [T, H, W] (``size`` = (H, W)): channels summed, layer maps upsampled bilinearly."""
    height, width = int(size[-2]), int(size[-1])
    summed = attr.float().sum(dim=1, keepdim=True)
    if tuple(summed.shape[-2:]) != (height, width):
        summed = F.interpolate(summed, size=(height, width), mode="bilinear", align_corners=False)
    return summed[:, 0].detach()


def grad_method(
    make: Callable[[nn.Module, Context, Any], Any], copies: int = 1, **kwargs: Any
) -> Callable[..., Attribution]:
    """A captum gradient or layer method over label chunks: the image repeated once per label.

    ``make(module, context, params)`` builds the captum algorithm; ``kwargs`` are passed to
    ``attribute`` (a callable value is computed from the parameters); ``copies`` is how many images
    one label costs in a batch (DeepLIFT and guided Grad-CAM: 2).
    """

    def run(ctx: Context, params: Params, x: torch.Tensor, targets: Sequence[int]) -> Attribution:
        algorithm = make(ctx.module(params), ctx, params)
        extra = {k: (v(params) if callable(v) else v) for k, v in kwargs.items()}
        maps = []
        for chunk in label_chunks(targets, ctx.grad_batch(copies)):
            attr = algorithm.attribute(repeat_image(x, len(chunk)), target=chunk, **extra)
            maps.append(to_maps(attr, x.shape[-2:]))
            if ctx.progress:
                ctx.progress(len(chunk))
        return Attribution(torch.cat(maps))

    return run


def passes(forward: int, backward: int) -> dict[str, int]:
    """A method's cost: forward and backward passes per image."""
    return {"forward": forward, "backward": backward}
