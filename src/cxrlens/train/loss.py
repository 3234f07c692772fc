"""The training loss over known values only: a label an image's source does not annotate is missing, not
negative (:attr:`cxrlens.data.records.ImageRecord.unknown`), and takes no part in the loss or its gradient."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, known: torch.Tensor | None = None) -> torch.Tensor:
    """BCE with logits averaged over the known (image, label) entries (all entries when ``known`` is None).

    With every entry known this is exactly ``F.binary_cross_entropy_with_logits(logits, targets)`` (weights of
    1.0 and a factor of 1.0: the same floats, the same gradient). A batch with no known entry gives 0 (and no
    gradient). The targets must be finite where ``known`` is True; elsewhere they are ignored.
    """
    if known is None:
        return F.binary_cross_entropy_with_logits(logits, targets)
    weight = known.to(logits.dtype)
    safe = torch.where(known, targets, torch.zeros_like(targets))
    mean_over_all = F.binary_cross_entropy_with_logits(logits, safe, weight=weight)
    # the mean above divides by every entry; rescale to a mean over the known ones (no host sync)
    return mean_over_all * (known.numel() / weight.sum().clamp_min(1.0))
