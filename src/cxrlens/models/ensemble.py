"""An ensemble as one model: the mean of its members' probabilities (the paper's code), so it can be
explained like any other model. Majority voting (the paper's text) is evaluated in cxrlens.evaluate."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cxrlens.errors import ModelError
from cxrlens.models.names import ENSEMBLE


class EnsembleModel(nn.Module):
    """``forward`` returns logit(mean probability) [B, L]; ``mean_probability`` the mean itself."""

    model_name = ENSEMBLE
    gradcam_layer_name = None  # no single layer: Grad-CAM-style methods refuse the ensemble

    def __init__(self, members: Sequence[nn.Module], names: Sequence[str] | None = None) -> None:
        super().__init__()
        if not members:
            raise ModelError("an ensemble needs at least one member model")
        labels = [tuple(getattr(m, "label_names", ())) for m in members]
        if len(set(labels)) != 1:
            raise ModelError("ensemble members predict different labels")
        self.members = nn.ModuleList(members)
        self.member_names = list(names or [getattr(m, "model_name", f"member{i}") for i, m in enumerate(members)])
        self.label_names = labels[0]
        self.sigmoids = nn.ModuleList(nn.Sigmoid() for _ in members)  # modules: DeepLIFT's rescale rule applies
        self.training = any(m.training for m in members)  # an ensemble of eval-mode models is in eval mode

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def mean_probability(self, x: torch.Tensor) -> torch.Tensor:
        probabilities = [sigmoid(member(x)) for member, sigmoid in zip(self.members, self.sigmoids, strict=True)]
        return torch.stack(probabilities).mean(dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logit(self.mean_probability(x).clamp(1e-7, 1 - 1e-7))
