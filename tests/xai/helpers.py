"""Small builders shared by the tests of the explanation metrics."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cxrlens.xai.scores import ScoredMap

H = W = 16


def lung_mask() -> torch.Tensor:
    """Two 10 x 5 'lungs' in a 16 x 16 image."""
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[3:13, 2:7] = True
    mask[3:13, 9:14] = True
    return mask


def scored(model: str, method: str, image: str = "a.png", label: str = "COVID-19", **entry: Any) -> ScoredMap:
    """A map record as the explanations index holds it (only what the metrics read)."""
    record = {"image": image, "model": model, "method": method, "label": label, "fold": 0, "map": "m.npz", **entry}
    return ScoredMap(record, label_index=0)


def image(seed: int = 0) -> torch.Tensor:
    """A bright random image ``[1, H, W]``."""
    generator = torch.Generator().manual_seed(seed)
    return 0.5 + 0.5 * torch.rand(1, H, W, generator=generator)


class RegionSum(nn.Module):
    """Label 0: ``scale`` x sigmoid of the mean intensity inside a region (centred); label 1: a constant."""

    def __init__(self, region: torch.Tensor, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("region", region.float())
        self.scale = scale
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        inside = (x[:, 0] * self.region).flatten(1).sum(1) / self.region.sum()
        first = self.scale * torch.sigmoid(8 * (inside - 0.5))
        return torch.stack([first, torch.full_like(first, 0.3)], dim=1)
