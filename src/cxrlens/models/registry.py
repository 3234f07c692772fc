"""One factory for every backbone: ``create_model(name, num_labels=14, weights="none")``.

Every model is a :class:`CxrClassifier`: it takes grey images ``[B, 1, H, W]`` in [0, 1] (a
3-channel backbone sees the grey channel repeated, or its first convolution is summed to one
input channel with ``in_chans=1``), returns logits ``[B, num_labels]``, knows its label names,
and names the layer for Grad-CAM-style methods and the default layers for activation profiles.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cxrlens.errors import ModelError
from cxrlens.models import backbones as _backbones  # noqa: F401  (registers the backbones)
from cxrlens.models.spec import MODELS, ModelSpec
from cxrlens.models.weights import adapt_first_conv, load_weights

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class CxrClassifier(nn.Module):
    """A backbone behind the common contract (see module docstring)."""

    norm_mean: torch.Tensor
    norm_std: torch.Tensor

    def __init__(
        self,
        backbone: nn.Module,
        spec: ModelSpec,
        label_names: Sequence[str],
        in_chans: int = 3,
        input_norm: str = "none",
    ) -> None:
        super().__init__()
        if input_norm not in {"none", "imagenet"}:
            raise ModelError(f"input_norm must be 'none' or 'imagenet', not {input_norm!r}")
        self.backbone = backbone
        self.spec = spec
        self.model_name = spec.name
        self.label_names = tuple(label_names)
        self.in_chans = in_chans
        self.input_norm = input_norm
        mean = torch.tensor(_IMAGENET_MEAN[:in_chans] if in_chans == 3 else (sum(_IMAGENET_MEAN) / 3,))
        std = torch.tensor(_IMAGENET_STD[:in_chans] if in_chans == 3 else (sum(_IMAGENET_STD) / 3,))
        self.register_buffer("norm_mean", mean.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("norm_std", std.view(1, -1, 1, 1), persistent=False)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def gradcam_layer_name(self) -> str:
        return f"backbone.{self.spec.gradcam_layer}"

    def gradcam_layer(self) -> nn.Module:
        return self.get_submodule(self.gradcam_layer_name)

    def nap_layer_names(self) -> list[str]:
        return [f"backbone.{name}" for name in self.spec.nap_layers]

    def _prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] not in (1, self.in_chans):
            raise ModelError(f"expected input [B, 1, H, W] (grey), got {tuple(x.shape)}")
        if min(x.shape[-2:]) < self.spec.min_size:
            raise ModelError(f"{self.model_name} needs images of at least {self.spec.min_size} px, got {x.shape[-2:]}")
        if x.shape[1] != self.in_chans:
            x = x.expand(-1, self.in_chans, -1, -1)
        if self.input_norm == "imagenet":
            x = (x - self.norm_mean) / self.norm_std
        return x

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits, auxiliary logits or None); auxiliary only from heads that have one, in training."""
        if self.training and min(x.shape[-2:]) < self.spec.min_train_size:
            raise ModelError(
                f"{self.model_name} training needs images of at least {self.spec.min_train_size} px "
                f"(its auxiliary head pools a 17x17 map), got {tuple(x.shape[-2:])}; use --size "
                f"{self.spec.min_train_size} or more"
            )
        out = self.backbone(self._prepare_input(x))
        if isinstance(out, tuple):  # torchvision InceptionOutputs in training mode
            return out[0], out[1]
        return out, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_train(x)[0]


def create_model(
    name: str,
    num_labels: int = 14,
    weights: str = "none",
    label_names: Sequence[str] | None = None,
    in_chans: int = 3,
    input_norm: str = "none",
) -> CxrClassifier:
    """Build a registered model. ``weights``: ``"none"``, ``"imagenet"`` or a path to a state dict."""
    spec = MODELS.get(name)
    if label_names is not None:
        if len(label_names) != num_labels and num_labels != 14:
            raise ModelError(f"{len(label_names)} label names given for num_labels={num_labels}")
        num_labels = len(label_names)
    names = tuple(label_names) if label_names is not None else tuple(f"label_{i}" for i in range(num_labels))
    if in_chans not in (1, 3):
        raise ModelError(f"in_chans must be 1 or 3, not {in_chans}")
    backbone = spec.build(num_labels)
    load_weights(backbone, spec, weights, in_chans)
    if in_chans == 1:
        adapt_first_conv(backbone, spec)
    return CxrClassifier(backbone, spec, names, in_chans=in_chans, input_norm=input_norm)


def model_names() -> list[str]:
    return MODELS.names()


def get_spec(name: str) -> ModelSpec:
    return MODELS.get(name)


def device_for(accelerator: str) -> torch.device:
    """``cpu``, ``gpu`` (CUDA; an error naming the problem when there is none) or ``auto`` (CUDA when present)."""
    if accelerator == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if accelerator == "gpu":
        raise ModelError("--accelerator gpu: no CUDA device is available here (torch.cuda.is_available() is False)")
    return torch.device("cpu")


def model_device(model: nn.Module) -> torch.device:
    """Where the model's weights are (the CPU for a model without parameters)."""
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
