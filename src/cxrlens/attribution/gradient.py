"""Gradient methods over captum: saliency, input x gradient, guided backprop, integrated gradients, DeepLIFT
and SmoothGrad (captum's ``NoiseTunnel`` over any of them).

The labels are batched: the image is repeated once per label, one target each, in chunks sized by the
memory budget. DeepLIFT and integrated gradients also return their convergence deltas (see captum's
``DeepLift`` and ``IntegratedGradients`` documentation). DeepLIFT needs a model from
:func:`~cxrlens.attribution.prepare.prepare_model` (every ReLU call its own module, a complete max-pool rule).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from captum.attr import DeepLift, GuidedBackprop, InputXGradient, IntegratedGradients, NoiseTunnel, Saliency

from cxrlens.attribution.method import (
    Attribution,
    Context,
    Method,
    grad_method,
    label_chunks,
    passes,
    register,
    repeat_image,
    to_maps,
)
from cxrlens.attribution.params import DeepLiftParams, GradientParams, IGParams, SaliencyParams, SmoothGradParams

__all__ = ["SMOOTHGRAD_BASES"]

register(
    Method(
        "saliency",
        "gradient",
        "absolute input gradient of the label output (Simonyan et al.)",
        SaliencyParams,
        grad_method(lambda m, c, p: Saliency(m), abs=lambda p: p.abs),
        lambda p, s: passes(1, 1),
        per_label_cost=True,
        signed=False,
    )
)
register(
    Method(
        "input_x_gradient",
        "gradient",
        "input times gradient",
        GradientParams,
        grad_method(lambda m, c, p: InputXGradient(m)),
        lambda p, s: passes(1, 1),
        per_label_cost=True,
    )
)
register(
    Method(
        "guided_backprop",
        "gradient",
        "guided backpropagation (negative gradients stopped at every ReLU)",
        GradientParams,
        grad_method(lambda m, c, p: GuidedBackprop(m)),
        lambda p, s: passes(1, 1),
        per_label_cost=True,
    )
)


def _integrated_gradients(ctx: Context, params: IGParams, x: torch.Tensor, targets: Sequence[int]) -> Attribution:
    algorithm = IntegratedGradients(ctx.module(params))
    attr, delta = algorithm.attribute(
        repeat_image(x, len(targets)),
        baselines=params.baseline,
        target=list(targets),
        n_steps=params.n_steps,
        method=params.method,
        internal_batch_size=ctx.grad_batch(),
        return_convergence_delta=True,
    )
    if ctx.progress:
        ctx.progress(len(targets))
    return Attribution(to_maps(attr, x.shape[-2:]), delta.detach().float())


register(
    Method(
        "integrated_gradients",
        "gradient",
        "integrated gradients from a constant baseline (black by default); convergence delta saved",
        IGParams,
        _integrated_gradients,
        lambda p, s: passes(p.n_steps, p.n_steps),
        per_label_cost=True,
    )
)


def _deeplift(ctx: Context, params: DeepLiftParams, x: torch.Tensor, targets: Sequence[int]) -> Attribution:
    algorithm = DeepLift(ctx.module(params))
    maps, deltas = [], []
    for chunk in label_chunks(targets, ctx.grad_batch(2)):  # DeepLIFT runs image and baseline together
        attr, delta = algorithm.attribute(
            repeat_image(x, len(chunk)), baselines=params.baseline, target=chunk, return_convergence_delta=True
        )
        maps.append(to_maps(attr, x.shape[-2:]))
        deltas.append(delta.detach().float())
        if ctx.progress:
            ctx.progress(len(chunk))
    return Attribution(torch.cat(maps), torch.cat(deltas))


register(
    Method(
        "deeplift",
        "gradient",
        "DeepLIFT (rescale rule; a complete max-pool rule) from a black baseline; convergence delta saved",
        DeepLiftParams,
        _deeplift,
        lambda p, s: passes(2, 1),
        per_label_cost=True,
    )
)

# the captum class of each method SmoothGrad can smooth (SmoothGradParams.base)
SMOOTHGRAD_BASES: dict[str, type[Any]] = {
    "saliency": Saliency,
    "input_x_gradient": InputXGradient,
    "guided_backprop": GuidedBackprop,
    "integrated_gradients": IntegratedGradients,
    "deeplift": DeepLift,
}


def _smoothgrad(ctx: Context, params: SmoothGradParams, x: torch.Tensor, targets: Sequence[int]) -> Attribution:
    tunnel = NoiseTunnel(SMOOTHGRAD_BASES[params.base](ctx.module(params)))
    extra: dict[str, Any] = {}
    copies = 1
    if params.base == "integrated_gradients":
        extra = {"n_steps": params.n_steps, "internal_batch_size": ctx.grad_batch()}
        copies = params.n_steps
    elif params.base == "deeplift":
        copies = 2
    batch = max(1, ctx.grad_batch(copies))
    maps = []
    for target in targets:
        gpu = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=gpu):  # seeded noise without touching the caller's generators
            torch.manual_seed(params.seed)
            attr = tunnel.attribute(
                x,
                nt_type="smoothgrad",
                nt_samples=params.nt_samples,
                nt_samples_batch_size=min(params.nt_samples, batch),
                stdevs=params.stdev,
                target=target,
                **extra,
            )
        maps.append(to_maps(attr, x.shape[-2:]))
        if ctx.progress:
            ctx.progress(1)
    return Attribution(torch.cat(maps))


def _smoothgrad_cost(p: SmoothGradParams, s: int) -> dict[str, int]:
    per = {"integrated_gradients": p.n_steps, "deeplift": 2}.get(p.base, 1)
    return passes(p.nt_samples * per, p.nt_samples * (p.n_steps if p.base == "integrated_gradients" else 1))


register(
    Method(
        "smoothgrad",
        "gradient",
        "SmoothGrad: a gradient method averaged over noisy copies of the image (captum NoiseTunnel)",
        SmoothGradParams,
        _smoothgrad,
        _smoothgrad_cost,
        per_label_cost=True,
    )
)
