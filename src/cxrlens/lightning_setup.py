"""What every Lightning-driven stage shares: quiet start-up logs, device lists, atomic checkpoint writes.

Lightning is imported here at module top: only the training and explain stages import this module.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from cxrlens.errors import ConfigError
from cxrlens.fileio import atomic_open


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint writes as temp-file + rename: never a half-written checkpoint."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        with atomic_open(path, "wb", encoding=None) as handle:
            torch.save(checkpoint, handle)


def quiet_lightning() -> None:
    """Lightning's start-up notes (GPU/TPU availability, tips) are noise for our users; warnings stay."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)


def parse_devices(value: str) -> Any:
    """``auto``, a count (``2``) or a list (``0,1``) as Lightning takes it."""
    if value == "auto":
        return "auto"
    try:
        if "," in value:
            return [int(v) for v in value.split(",") if v.strip()]
        return int(value)
    except ValueError:
        raise ConfigError(f"devices must be 'auto', a count or a list like 0,1 (got {value!r})") from None
