"""Perturbation methods: occlusion, feature ablation and Shapley value sampling, every label from the same passes.

The passes run without autograd through :mod:`cxrlens.attribution.perturbation` (equal to captum's
``Occlusion``, ``FeatureAblation`` and ``ShapleyValueSampling`` per label). Feature ablation and Shapley
sampling perturb SLIC superpixels of the preprocessed image, or a regular grid when SLIC returns too few
(:mod:`cxrlens.attribution.segmentation`); ``extra`` says which, with the feature count.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from cxrlens.attribution import perturbation
from cxrlens.attribution.method import Attribution, Context, Method, passes, register
from cxrlens.attribution.params import OcclusionParams, Params, ShapleyParams, SuperpixelParams
from cxrlens.attribution.segmentation import Segmentation, segment
from cxrlens.errors import MethodError

__all__ = ["occlusion_geometry"]


def occlusion_geometry(params: OcclusionParams, size: int) -> tuple[int, int]:
    """(window, stride) of occlusion on an image of side ``size``: defaults size / 16 and half the window."""
    window = params.window or max(1, size // 16)
    stride = params.stride or max(1, window // 2)
    if window > size:
        raise MethodError(f"occlusion window {window} is larger than the image ({size} px)")
    if stride > window:
        raise MethodError(f"occlusion stride {stride} is larger than the window {window}")
    return window, stride


def _forward(ctx: Context, params: Params) -> Callable[[torch.Tensor], torch.Tensor]:
    module, device = ctx.module(params), ctx.device
    return lambda batch: module(batch.to(device)).float().cpu()


def _occlusion(ctx: Context, params: OcclusionParams, x: torch.Tensor, targets: Sequence[int]) -> Attribution:
    window, stride = occlusion_geometry(params, x.shape[-1])
    maps = perturbation.occlusion(
        _forward(ctx, params), x, targets, (window, window), (stride, stride), params.baseline,
        batch=ctx.no_grad_batch(), progress=ctx.progress,
    )  # fmt: skip
    return Attribution(maps, extra={"window": window, "stride": stride})


def _features(ctx: Context, params: SuperpixelParams, x: torch.Tensor) -> Segmentation:
    image = ctx.image if ctx.image is not None else x[0, 0].cpu().numpy()
    return segment(image, params.segments, params.compactness)


def _feature_ablation(ctx: Context, params: SuperpixelParams, x: torch.Tensor, targets: Sequence[int]) -> Attribution:
    features = _features(ctx, params, x)
    maps = perturbation.feature_ablation(
        _forward(ctx, params), x, targets, torch.from_numpy(features.labels), params.baseline,
        batch=ctx.no_grad_batch(), progress=ctx.progress,
    )  # fmt: skip
    return Attribution(maps, extra=features.describe())


def _shapley(ctx: Context, params: ShapleyParams, x: torch.Tensor, targets: Sequence[int]) -> Attribution:
    features = _features(ctx, params, x)
    generator = torch.Generator().manual_seed(params.seed)
    maps = perturbation.shapley_value_sampling(
        _forward(ctx, params), x, targets, torch.from_numpy(features.labels), params.n_samples, params.baseline,
        batch=ctx.no_grad_batch(), generator=generator, progress=ctx.progress,
    )  # fmt: skip
    return Attribution(maps, extra=features.describe())


def _occlusion_cost(p: OcclusionParams, s: int) -> dict[str, int]:
    window, stride = occlusion_geometry(p, s)
    return passes(perturbation.occlusion_passes((s, s), (window, window), (stride, stride)) + 1, 0)


register(
    Method(
        "occlusion",
        "perturbation",
        "occlusion: a sliding black window (default size/16, stride half the window); all labels at once",
        OcclusionParams,
        _occlusion,
        _occlusion_cost,
        per_label_cost=False,
    )
)
register(
    Method(
        "feature_ablation",
        "perturbation",
        "feature ablation of SLIC superpixels (a grid if SLIC finds too few; set to black one at a time); "
        "all labels at once",
        SuperpixelParams,
        _feature_ablation,
        lambda p, s: passes(p.segments + 1, 0),
        per_label_cost=False,
    )
)
register(
    Method(
        "shapley_value_sampling",
        "perturbation",
        "Shapley value sampling over SLIC superpixels (a grid if SLIC finds too few; random orders); "
        "all labels at once",
        ShapleyParams,
        _shapley,
        lambda p, s: passes(p.n_samples * p.segments + 1, 0),
        per_label_cost=False,
    )
)
