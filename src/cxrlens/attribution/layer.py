"""Layer methods over captum: Grad-CAM, guided Grad-CAM, layer conductance and internal influence.

They attribute to a layer (by default the model's Grad-CAM layer, its last convolutional block); the layer
maps are summed over channels and upsampled bilinearly to the image (see captum's ``LayerGradCam``,
``GuidedGradCam``, ``LayerConductance`` and ``InternalInfluence`` documentation).

Layer conductance is captum's sum over the path points a_0 < ... < a_n (``n_steps + 1`` of them) of
grad_k * (layer(a_{k+1}) - layer(a_k)), computed here (:func:`layer_conductance`) with captum's own layer
hooks but batched otherwise: captum differences consecutive points inside one backward pass, so each pass holds
at least two points and overlaps the next by one (at 512 px, DenseNet161 peaked at 9.2 GiB with an 8 GiB
budget). Here a pass holds ``steps`` points (:func:`conductance_steps`: as many as the memory budget and the CPU
working set allow, down to 1), the last point's layer output and gradient carry over to the next pass, and the
final point needs a forward pass only: n backward passes of one image instead of captum's 2n, the same sum.
If one image's backward pass does not fit in the budget, the method refuses before any pass (``MethodError``
with the memory it needs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from captum._utils.gradient import _forward_layer_eval, compute_layer_gradients_and_eval
from captum.attr import GuidedGradCam, InternalInfluence, LayerGradCam
from captum.attr._utils.approximation_methods import approximation_parameters
from torch import nn

from cxrlens.attribution.method import Attribution, Context, Method, grad_method, passes, register, to_maps
from cxrlens.attribution.params import GradCamParams, LayerIntegralParams, LayerParams
from cxrlens.errors import MethodError
from cxrlens.models.footprint import GIB, Footprint

__all__ = ["conductance_steps", "layer_conductance"]


def conductance_steps(
    footprint: Footprint, budget_bytes: float, n_steps: int, method: str = "layer_conductance"
) -> int:
    """Path points per backward pass: the images the budget allows in one pass (``Footprint.grad_batch``, which on
    a CPU also keeps to the working-set cap), at most ``n_steps``; refuses if even one image does not fit."""
    need = footprint.grad_bytes(1)
    if need > budget_bytes:
        raise MethodError(
            f"{method} needs about {need / GIB:.1f} GiB for one image at this size (a backward pass through "
            f"{footprint.activation_bytes / GIB:.2f} GiB of activations), over the {budget_bytes / GIB:.1f} GiB "
            "memory budget: raise the budget (--memory-gib) or use a smaller image size"
        )
    return max(1, min(n_steps, footprint.grad_batch(budget_bytes)))


def layer_conductance(
    module: nn.Module,
    layer: nn.Module,
    x: torch.Tensor,
    target: int,
    n_steps: int,
    baseline: float | torch.Tensor = 0.0,
    steps: int = 1,
    method: str = "gausslegendre",
) -> torch.Tensor:
    """Captum's ``LayerConductance(module, layer).attribute(x, baseline, target, n_steps, method)`` of one image
    ``x`` [1, ...] (the layer output's shape), with ``steps`` path points per backward pass."""
    if x.shape[0] != 1:
        raise ValueError(f"layer_conductance takes one image, got a batch of {x.shape[0]}")
    _, alphas_of = approximation_parameters(method)
    alphas = alphas_of(n_steps + 1)
    total: torch.Tensor | None = None
    last_grad = last_eval = None
    for start in range(0, n_steps, max(1, steps)):  # points 0 .. n-1: output gradient and layer output
        chunk = alphas[start : min(start + steps, n_steps)]
        scaled = torch.cat([baseline + alpha * (x - baseline) for alpha in chunk]).requires_grad_()
        grads, evals = compute_layer_gradients_and_eval(module, layer, (scaled,), target_ind=target)
        grad, value = grads[0].detach(), evals[0].detach()
        parts = [grad[:-1] * (value[1:] - value[:-1])]
        if last_grad is not None and last_eval is not None:
            parts.append(last_grad * (value[:1] - last_eval))
        chunk_sum = torch.cat(parts).sum(dim=0, keepdim=True)
        total = chunk_sum if total is None else total + chunk_sum
        last_grad, last_eval = grad[-1:].clone(), value[-1:].clone()
        del grads, evals, grad, value, scaled
    end = baseline + alphas[n_steps] * (x - baseline)  # point n: its layer output only
    with torch.no_grad():
        end_eval = _forward_layer_eval(module, (end,), layer)[0]
    assert total is not None and last_grad is not None and last_eval is not None
    return total + last_grad * (end_eval - last_eval)


def _check_conductance(footprint: Footprint, budget_bytes: float, params: LayerIntegralParams) -> None:
    conductance_steps(footprint, budget_bytes, params.n_steps)


def _conductance(ctx: Context, params: LayerIntegralParams, x: torch.Tensor, targets: Sequence[int]) -> Attribution:
    steps = conductance_steps(ctx.footprint, ctx.budget_bytes, params.n_steps)  # (Method.run checked it fits)
    module = ctx.module(params)
    layer = ctx.layer(module, params, "layer_conductance")
    maps = []
    for target in targets:
        attr = layer_conductance(module, layer, x, target, params.n_steps, params.baseline, steps)
        maps.append(to_maps(attr, x.shape[-2:]))
        if ctx.progress:
            ctx.progress(1)
    return Attribution(torch.cat(maps))


def _layer_integral(algorithm_class: type[Any], method: str) -> Callable[..., Attribution]:
    """A captum layer-integral method (internal influence), one label at a time."""

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
                internal_batch_size=ctx.grad_batch(),
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
        _conductance,
        lambda p, s: passes(p.n_steps + 1, p.n_steps),
        per_label_cost=True,
        budget_check=_check_conductance,
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
