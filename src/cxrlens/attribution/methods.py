"""The attribution-method registry: every method of the paper (and Grad-CAM, SmoothGrad) over captum.

Each method turns one preprocessed grey image ``x`` [1, 1, H, W] and a list of label indices into
maps [T, H, W] (plus DeepLIFT / IG convergence deltas). Gradient methods batch the labels (the image
repeated once per label, one target each); perturbation methods compute every label from the same
forward passes (see :mod:`cxrlens.attribution.perturbation`). Batch sizes come from a memory budget.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from cxrlens.attribution import perturbation
from cxrlens.attribution.budget import Footprint
from cxrlens.config import StrictModel, validate
from cxrlens.errors import MethodError
from cxrlens.models.registry import model_device
from cxrlens.registry import Registry


class Params(StrictModel):
    """Options every method has."""

    output: Literal["logit", "probability"] = Field(
        "logit", description="attribute the label's logit or its sigmoid probability (never a softmax)"
    )


class GradientParams(Params):
    pass


class SaliencyParams(Params):
    abs: bool = Field(True, description="absolute gradient, as captum's default")


class IGParams(Params):
    n_steps: int = Field(50, ge=2, description="integration steps")
    method: Literal["gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle"] = (
        "gausslegendre"
    )
    baseline: float = Field(0.0, description="constant baseline image (0 = black)")


class DeepLiftParams(Params):
    baseline: float = Field(0.0, description="constant baseline image (0 = black)")


class LayerParams(Params):
    layer: str | None = Field(None, description="module name (default: the model's Grad-CAM layer)")


class GradCamParams(LayerParams):
    relu: bool = Field(True, description="keep positive evidence only, as in Grad-CAM")


class LayerIntegralParams(LayerParams):
    n_steps: int = Field(20, ge=2)
    baseline: float = 0.0


class OcclusionParams(Params):
    window: int | None = Field(None, ge=1, description="square window side (default: image size / 16)")
    stride: int | None = Field(None, ge=1, description="stride (default: window / 2)")
    baseline: float = 0.0


class SuperpixelParams(Params):
    segments: int = Field(256, ge=2, description="SLIC superpixels on the preprocessed image")
    compactness: float = Field(0.2, gt=0)
    baseline: float = 0.0


class ShapleyParams(SuperpixelParams):
    n_samples: int = Field(4, ge=1, description="random feature orders")
    seed: int = 0


SMOOTHABLE = ("saliency", "input_x_gradient", "guided_backprop", "integrated_gradients", "deeplift")


class SmoothGradParams(Params):
    base: Literal["saliency", "input_x_gradient", "guided_backprop", "integrated_gradients", "deeplift"] = "saliency"
    nt_samples: int = Field(16, ge=1)
    stdev: float = Field(0.15, ge=0, description="noise standard deviation (images are in [0, 1])")
    n_steps: int = Field(20, ge=2, description="for base=integrated_gradients")
    seed: int = 0


@dataclass
class Attribution:
    maps: torch.Tensor  # [T, H, W]
    delta: torch.Tensor | None = None  # [T] convergence delta (DeepLIFT, IG)
    extra: dict[str, Any] | None = None


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

    def parse(self, options: dict[str, Any] | None = None) -> Params:
        return validate(self.params, dict(options or {}), f"{self.name} parameters")

    def run(self, ctx: Context, params: Params, x: torch.Tensor, targets: Sequence[int]) -> Attribution:
        """Maps [T, H, W] on the CPU of one image ``x`` [1, 1, H, W] for the label indices ``targets``.

        Gradient and layer methods run on the model's device; perturbation methods build their
        perturbed images on the CPU and send each batch to the model.
        """
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


# -- helpers -------------------------------------------------------------------------------------


def _repeat(x: torch.Tensor, n: int) -> torch.Tensor:
    return x.expand(n, *x.shape[1:]).clone()


def _chunks(targets: Sequence[int], size: int) -> list[list[int]]:
    return [list(targets[i : i + size]) for i in range(0, len(targets), size)]


def _to_maps(attr: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[T, C, h, w] attributions -> [T, H, W]: channels summed, layer maps upsampled bilinearly."""
    summed = attr.float().sum(dim=1, keepdim=True)
    if summed.shape[-2:] != size:
        summed = F.interpolate(summed, size=size, mode="bilinear", align_corners=False)
    return summed[:, 0].detach()


def _grad_method(
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
        for chunk in _chunks(targets, ctx.grad_batch(copies)):
            maps.append(_to_maps(algorithm.attribute(_repeat(x, len(chunk)), target=chunk, **extra), x.shape[-2:]))
            if ctx.progress:
                ctx.progress(len(chunk))
        return Attribution(torch.cat(maps))

    return run


def _passes(forward: int, backward: int) -> dict[str, int]:
    return {"forward": forward, "backward": backward}


# -- gradient methods ------------------------------------------------------------------------------


def _captum(name: str) -> Any:
    import captum.attr

    return getattr(captum.attr, name)


register(
    Method(
        "saliency",
        "gradient",
        "absolute input gradient of the label output (Simonyan et al.)",
        SaliencyParams,
        _grad_method(lambda m, c, p: _captum("Saliency")(m), abs=lambda p: p.abs),
        lambda p, s: _passes(1, 1),
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
        _grad_method(lambda m, c, p: _captum("InputXGradient")(m)),
        lambda p, s: _passes(1, 1),
        per_label_cost=True,
    )
)
register(
    Method(
        "guided_backprop",
        "gradient",
        "guided backpropagation (negative gradients stopped at every ReLU)",
        GradientParams,
        _grad_method(lambda m, c, p: _captum("GuidedBackprop")(m)),
        lambda p, s: _passes(1, 1),
        per_label_cost=True,
    )
)


def _integrated_gradients(ctx: Context, params: IGParams, x: torch.Tensor, targets: Sequence[int]) -> Attribution:
    algorithm = _captum("IntegratedGradients")(ctx.module(params))
    attr, delta = algorithm.attribute(
        _repeat(x, len(targets)),
        baselines=params.baseline,
        target=list(targets),
        n_steps=params.n_steps,
        method=params.method,
        internal_batch_size=ctx.grad_batch(),
        return_convergence_delta=True,
    )
    if ctx.progress:
        ctx.progress(len(targets))
    return Attribution(_to_maps(attr, x.shape[-2:]), delta.detach().float())


register(
    Method(
        "integrated_gradients",
        "gradient",
        "integrated gradients from a constant baseline (black by default); convergence delta saved",
        IGParams,
        _integrated_gradients,
        lambda p, s: _passes(p.n_steps, p.n_steps),
        per_label_cost=True,
    )
)


def _deeplift(ctx: Context, params: DeepLiftParams, x: torch.Tensor, targets: Sequence[int]) -> Attribution:
    algorithm = _captum("DeepLift")(ctx.module(params))
    maps, deltas = [], []
    for chunk in _chunks(targets, ctx.grad_batch(2)):  # DeepLIFT runs image and baseline together
        attr, delta = algorithm.attribute(
            _repeat(x, len(chunk)), baselines=params.baseline, target=chunk, return_convergence_delta=True
        )
        maps.append(_to_maps(attr, x.shape[-2:]))
        deltas.append(delta.detach().float())
        if ctx.progress:
            ctx.progress(len(chunk))
    return Attribution(torch.cat(maps), torch.cat(deltas))


register(
    Method(
        "deeplift",
        "gradient",
        "DeepLIFT (rescale rule; exact max-pool rule) from a black baseline; convergence delta saved",
        DeepLiftParams,
        _deeplift,
        lambda p, s: _passes(2, 1),
        per_label_cost=True,
    )
)


def _smoothgrad(ctx: Context, params: SmoothGradParams, x: torch.Tensor, targets: Sequence[int]) -> Attribution:
    module = ctx.module(params)
    names = {
        "saliency": "Saliency",
        "input_x_gradient": "InputXGradient",
        "guided_backprop": "GuidedBackprop",
        "integrated_gradients": "IntegratedGradients",
        "deeplift": "DeepLift",
    }
    tunnel = _captum("NoiseTunnel")(_captum(names[params.base])(module))
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
        maps.append(_to_maps(attr, x.shape[-2:]))
        if ctx.progress:
            ctx.progress(1)
    return Attribution(torch.cat(maps))


def _smoothgrad_cost(p: SmoothGradParams, s: int) -> dict[str, int]:
    per = {"integrated_gradients": p.n_steps, "deeplift": 2}.get(p.base, 1)
    return _passes(p.nt_samples * per, p.nt_samples * (p.n_steps if p.base == "integrated_gradients" else 1))


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

# -- layer methods ---------------------------------------------------------------------------------


def _layer_integral(class_name: str, method: str, min_batch: int = 1) -> Callable[..., Attribution]:
    """A captum layer-integral method, one label at a time. ``min_batch``: conductance takes finite
    differences of consecutive steps, so captum evaluates at least two steps per pass."""

    def run(ctx: Context, params: LayerIntegralParams, x: torch.Tensor, targets: Sequence[int]) -> Attribution:
        module = ctx.module(params)
        layer = ctx.layer(module, params, method)
        algorithm = _captum(class_name)(module, layer)
        maps = []
        for target in targets:  # captum expands each image into n_steps; internal batches bound memory
            attr = algorithm.attribute(
                x,
                baselines=params.baseline,
                target=target,
                n_steps=params.n_steps,
                internal_batch_size=max(min_batch, ctx.grad_batch()),
            )
            maps.append(_to_maps(attr, x.shape[-2:]))
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
        _grad_method(
            lambda m, c, p: _captum("LayerGradCam")(m, c.layer(m, p, "gradcam")), relu_attributions=lambda p: p.relu
        ),
        lambda p, s: _passes(1, 1),
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
        _grad_method(
            lambda m, c, p: _captum("GuidedGradCam")(m, c.layer(m, p, "guided_gradcam")),
            copies=2,
            interpolate_mode="bilinear",
        ),
        lambda p, s: _passes(2, 2),
        per_label_cost=True,
    )
)
register(
    Method(
        "layer_conductance",
        "layer",
        "layer conductance of the Grad-CAM layer, summed over channels and upsampled",
        LayerIntegralParams,
        _layer_integral("LayerConductance", "layer_conductance", min_batch=2),
        lambda p, s: _passes(p.n_steps, p.n_steps),
        per_label_cost=True,
    )
)
register(
    Method(
        "internal_influence",
        "layer",
        "internal influence of the Grad-CAM layer, summed over channels and upsampled",
        LayerIntegralParams,
        _layer_integral("InternalInfluence", "internal_influence"),
        lambda p, s: _passes(p.n_steps, p.n_steps),
        per_label_cost=True,
    )
)

# -- perturbation methods (all labels from the same passes) ----------------------------------------


def occlusion_geometry(params: OcclusionParams, size: int) -> tuple[int, int]:
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


def _features(ctx: Context, params: SuperpixelParams, x: torch.Tensor) -> torch.Tensor:
    image = ctx.image if ctx.image is not None else x[0, 0].cpu().numpy()
    return torch.from_numpy(perturbation.superpixels(image, params.segments, params.compactness))


def _feature_ablation(ctx: Context, params: SuperpixelParams, x: torch.Tensor, targets: Sequence[int]) -> Attribution:
    mask = _features(ctx, params, x)
    maps = perturbation.feature_ablation(
        _forward(ctx, params), x, targets, mask, params.baseline, batch=ctx.no_grad_batch(), progress=ctx.progress
    )
    return Attribution(maps, extra={"features": int(mask.max()) + 1})


def _shapley(ctx: Context, params: ShapleyParams, x: torch.Tensor, targets: Sequence[int]) -> Attribution:
    mask = _features(ctx, params, x)
    generator = torch.Generator().manual_seed(params.seed)
    maps = perturbation.shapley_value_sampling(
        _forward(ctx, params), x, targets, mask, params.n_samples, params.baseline,
        batch=ctx.no_grad_batch(), generator=generator, progress=ctx.progress,
    )  # fmt: skip
    return Attribution(maps, extra={"features": int(mask.max()) + 1})


def _occlusion_cost(p: OcclusionParams, s: int) -> dict[str, int]:
    window, stride = occlusion_geometry(p, s)
    return _passes(perturbation.occlusion_passes((s, s), (window, window), (stride, stride)) + 1, 0)


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
        "feature ablation of SLIC superpixels (set to black one at a time); all labels at once",
        SuperpixelParams,
        _feature_ablation,
        lambda p, s: _passes(p.segments + 1, 0),
        per_label_cost=False,
    )
)
register(
    Method(
        "shapley_value_sampling",
        "perturbation",
        "Shapley value sampling over SLIC superpixels (random orders); all labels at once",
        ShapleyParams,
        _shapley,
        lambda p, s: _passes(p.n_samples * p.segments + 1, 0),
        per_label_cost=False,
    )
)


def method_names() -> list[str]:
    return METHODS.names()


def get_method(name: str) -> Method:
    return METHODS.get(name)


def total_passes(method: Method, params: Params, size: int, labels: int) -> int:
    cost = method.cost(params, size)
    passes = cost["forward"] + cost["backward"]
    return passes * labels if method.per_label_cost else passes
