"""What a model sees of an image: its penultimate-layer features, and images as tensors.

The penultimate features are the input of the model's classification head (the module named by the first of
``spec.head``'s parameter prefixes, e.g. ``fc`` of a ResNet, ``classifier`` of a DenseNet), captured with a
forward pre-hook during an ordinary eval-mode forward pass, flattened to one vector per image. Images come from
:class:`~cxrlens.run.ImageSource`: exactly as the run preprocessed them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from cxrlens.data.labels import LabelSpace
from cxrlens.errors import ModelError
from cxrlens.models.registry import CxrClassifier, model_device
from cxrlens.run import ImageSource


def as_classifier(model: nn.Module) -> CxrClassifier:
    if not isinstance(model, CxrClassifier):
        raise ModelError(f"expected a cxrlens classifier, got {type(model).__name__}")
    return model


def head_module(model: CxrClassifier) -> nn.Module:
    """The classification head: the module of the first of ``spec.head``'s parameter-name prefixes."""
    if not model.spec.head:
        raise ModelError(f"{model.model_name}: the model spec names no classification head")
    name = model.spec.head[0].rstrip(".")
    try:
        return model.backbone.get_submodule(name)
    except AttributeError:
        raise ModelError(f"{model.model_name}: no head module {name!r} in the backbone") from None


def penultimate_features(
    model: CxrClassifier, batches: DataLoader[Any], progress: Callable[[int], None] | None = None
) -> np.ndarray:
    """Images x features: the flattened input of the classification head, batch by batch."""
    captured: list[torch.Tensor] = []

    def keep(_module: nn.Module, args: tuple[Any, ...]) -> None:
        captured.append(torch.flatten(args[0].detach(), 1).float().cpu())

    handle = head_module(model).register_forward_pre_hook(keep)
    device = model_device(model)
    try:
        model.eval()
        with torch.no_grad():
            for images, _ in batches:
                model(images.to(device))
                if progress is not None:
                    progress(len(images))
    finally:
        handle.remove()
    if not captured:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(captured).numpy()


def image_batches(
    source: ImageSource, filenames: Sequence[str], label_names: Sequence[str], batch_size: int
) -> DataLoader[Any]:
    """The images of the run's data with their labels, in order, in batches."""
    dataset = source.labelled(list(filenames), LabelSpace(tuple(label_names)))
    return DataLoader(dataset, batch_size=batch_size, shuffle=False)


def image_tensor(source: ImageSource, filenames: Sequence[str]) -> torch.Tensor:
    """[n, 1, N, N] float32: the preprocessed images."""
    if not filenames:
        size = source.preprocess.size
        return torch.zeros((0, 1, size, size), dtype=torch.float32)
    return torch.from_numpy(np.stack([source.image(name) for name in filenames]).astype(np.float32))[:, None]
