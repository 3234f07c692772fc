"""Parameter models of the attribution methods (validated from the run configuration's method options).

Defaults follow captum's where captum has one and the paper (Chatterjee et al., J. Imaging 2024) otherwise;
every method attributes one label's logit or its sigmoid probability, never a softmax over labels.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cxrlens.config import StrictModel

__all__ = [
    "SMOOTHABLE",
    "DeepLiftParams",
    "GradCamParams",
    "GradientParams",
    "IGParams",
    "LayerIntegralParams",
    "LayerParams",
    "OcclusionParams",
    "Params",
    "SaliencyParams",
    "ShapleyParams",
    "SmoothGradParams",
    "SuperpixelParams",
]


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
    segments: int = Field(
        256,
        ge=2,
        description="SLIC superpixels on the preprocessed image (a grid of at least as many square cells if SLIC "
        "returns fewer than half of them)",
    )
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
