"""The attribution methods: every method of the paper (Chatterjee et al., J. Imaging 2024) plus Grad-CAM and
SmoothGrad, over captum — the public face of the registry.

Importing this module registers every family: gradient methods (:mod:`~cxrlens.attribution.gradient`) and
layer methods (:mod:`~cxrlens.attribution.layer`) batch the labels (the image repeated once per label, one
target each); perturbation methods (:mod:`~cxrlens.attribution.perturbation_methods`) compute every label
from the same forward passes. Batch sizes come from a memory budget (:mod:`~cxrlens.models.footprint`).
The base classes live in :mod:`~cxrlens.attribution.method`, the parameter models in
:mod:`~cxrlens.attribution.params`; both are re-exported here.
"""

from __future__ import annotations

# the families register their methods in METHODS when imported
from cxrlens.attribution import gradient, layer, perturbation_methods
from cxrlens.attribution.method import METHODS, Attribution, Context, Method, ProbabilityOutput, register
from cxrlens.attribution.params import (
    SMOOTHABLE,
    DeepLiftParams,
    GradCamParams,
    GradientParams,
    IGParams,
    LayerIntegralParams,
    LayerParams,
    OcclusionParams,
    Params,
    SaliencyParams,
    ShapleyParams,
    SmoothGradParams,
    SuperpixelParams,
)
from cxrlens.attribution.perturbation_methods import occlusion_geometry

__all__ = [
    "METHODS",
    "SMOOTHABLE",
    "Attribution",
    "Context",
    "DeepLiftParams",
    "GradCamParams",
    "GradientParams",
    "IGParams",
    "LayerIntegralParams",
    "LayerParams",
    "Method",
    "OcclusionParams",
    "Params",
    "ProbabilityOutput",
    "SaliencyParams",
    "ShapleyParams",
    "SmoothGradParams",
    "SuperpixelParams",
    "get_method",
    "method_names",
    "occlusion_geometry",
    "register",
    "total_passes",
]

FAMILIES = (gradient, layer, perturbation_methods)  # imported for their registrations


def method_names() -> list[str]:
    return METHODS.names()


def get_method(name: str) -> Method:
    return METHODS.get(name)


def total_passes(method: Method, params: Params, size: int, labels: int) -> int:
    """Forward plus backward passes of ``method`` for one image of side ``size`` and ``labels`` labels."""
    cost = method.cost(params, size)
    passes = cost["forward"] + cost["backward"]
    return passes * labels if method.per_label_cost else passes
