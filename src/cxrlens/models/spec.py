"""What a backbone is to cxrlens (:class:`ModelSpec`) and the one registry of them (:data:`MODELS`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from cxrlens.registry import Registry


@dataclass(frozen=True)
class ModelSpec:
    """How to build one backbone and where its interesting layers are."""

    name: str
    build: Callable[[int], nn.Module]  # num_labels -> backbone with a num_labels head, 3-channel input
    gradcam_layer: str
    nap_layers: tuple[str, ...]
    first_conv: str  # qualified name of the first convolution (for the 1-channel option)
    head: tuple[str, ...]  # parameter-name prefixes of the classification head(s)
    min_size: int = 32
    min_train_size: int = 0  # training needs larger input (InceptionV3's auxiliary head: 299 px)
    aux_weight: float = 0.0  # weight of an auxiliary head's loss in training (InceptionV3: 0.4)
    imagenet: Callable[[], dict[str, torch.Tensor]] | None = None  # loads ImageNet weights (may download)
    description: str = ""
    paper: bool = True
    notes: Sequence[str] = field(default_factory=tuple)


MODELS: Registry[ModelSpec] = Registry("model")


def register_model(spec: ModelSpec) -> ModelSpec:
    MODELS.add(spec.name, spec)
    return spec
