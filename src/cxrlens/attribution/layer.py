"""Layer methods over captum: Grad-CAM, guided Grad-CAM, layer conductance and internal influence.

They attribute to a layer (by default the model's Grad-CAM layer, its last convolutional block); the layer
maps are summed over channels and upsampled bilinearly to the image (see captum's ``LayerGradCam``,
``GuidedGradCam``, ``LayerConductance`` and ``InternalInfluence`` documentation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from captum.attr import GuidedGradCam, InternalInfluence, LayerConductance, LayerGradCam

from cxrlens.attribution.method import Attribution, Context, Method, grad_method, passes, register, to_maps
from cxrlens.attribution.params import GradCamParams, LayerIntegralParams, LayerParams

__all__: list[str] = []


def _layer_integral(algorithm_class: type[Any], method: str, min_batch: int = 1) -> Callable[..., Attribution]:
    """A captum layer-integral method, one label at a time. ``min_batch``: conductance takes finite
    differences of consecutive steps, so captum evaluates at least two steps per pass."""

    def run(ctx: Context, params: LayerIntegralParams, x: torch.Tensor, targets: Sequence[int]) -> Attribution:
        module = ctx.module(params)
        layer = ctx.layer(module, params, method)
        algorithm = algorithm_class(module, layer)
        maps = []
        for target in targets:  # captum expands each image into n_steps; internal batches bound memory
            attr = algorithm.attribute(
                x,
                baselines=params.baseline,
                target=target,
                n_steps=params.n_steps,
                internal_batch_size=max(min_batch, ctx.grad_batch()),
            )
            maps.append(to_maps(attr, x.shape[-2:]))
            if ctx.progress:
                ctx.progress(1)
        return Attribution(torch.cat(maps))

    return run


register(
    Method(
        "gradcam",
        "layer",
        "Grad-CAM on the model's last convolutional block, upsampled to the image",
        GradCamParams,
        grad_method(lambda m, c, p: LayerGradCam(m, c.layer(m, p, "gradcam")), relu_attributions=lambda p: p.relu),
        lambda p, s: passes(1, 1),
        per_label_cost=True,
        signed=False,
    )
)
register(
    Method(
        "guided_gradcam",
        "layer",
        "guided Grad-CAM: guided backpropagation times upsampled Grad-CAM",
        LayerParams,
        grad_method(
            lambda m, c, p: GuidedGradCam(m, c.layer(m, p, "guided_gradcam")),
            copies=2,
            interpolate_mode="bilinear",
        ),
        lambda p, s: passes(2, 2),
        per_label_cost=True,
    )
)
register(
    Method(
        "layer_conductance",
        "layer",
        "layer conductance of the Grad-CAM layer, summed over channels and upsampled",
        LayerIntegralParams,
        _layer_integral(LayerConductance, "layer_conductance", min_batch=2),
        lambda p, s: passes(p.n_steps, p.n_steps),
        per_label_cost=True,
    )
)
register(
    Method(
        "internal_influence",
        "layer",
        "internal influence of the Grad-CAM layer, summed over channels and upsampled",
        LayerIntegralParams,
        _layer_integral(InternalInfluence, "internal_influence"),
        lambda p, s: passes(p.n_steps, p.n_steps),
        per_label_cost=True,
    )
)
