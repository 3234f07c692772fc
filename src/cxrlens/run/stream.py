"""The one loader of images for inference: decoded and preprocessed exactly as the run did, in worker
processes, in order, in batches whose size comes from the memory budget, so that memory stays flat however
many images there are.

An image that cannot be read comes back as a failure (its index and the reason) instead of stopping the
stream; the caller decides (``--skip-bad`` or a one-line error naming the file).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cxrlens.config import PreprocessConfig
from cxrlens.data.cache import PreprocessCache
from cxrlens.data.preprocess import preprocess_file
from cxrlens.errors import ImageReadError
from cxrlens.models.footprint import GIB, measure

MIN_PARALLEL = 16  # fewer images than this are decoded in the calling process (no worker start-up)

_Item = tuple[int, np.ndarray | None, str]


@dataclass(frozen=True)
class Batch:
    """Images ``[B, 1, N, N]`` (float32) of the stream positions ``indices``; unreadable ones in ``failed``."""

    indices: list[int]
    images: torch.Tensor
    failed: list[tuple[int, str]]


class _Decoded(Dataset[_Item]):
    def __init__(self, paths: Sequence[Path], preprocess: PreprocessConfig, cache: PreprocessCache | None) -> None:
        self.paths = list(paths)
        self.preprocess = preprocess
        self.cache = cache

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> _Item:
        path = self.paths[index]
        try:
            image = self.cache.load(path) if self.cache else preprocess_file(path, self.preprocess)
        except ImageReadError as err:
            return index, None, err.reason
        except OSError as err:
            return index, None, str(err)
        return index, image, ""


def _collate(items: list[_Item]) -> Batch:
    good = [(i, image) for i, image, _ in items if image is not None]
    failed = [(i, reason) for i, image, reason in items if image is None]
    images = torch.from_numpy(np.stack([image for _, image in good]))[:, None] if good else torch.zeros(0)
    return Batch([i for i, _ in good], images, failed)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_workers(images: int) -> int:
    """Decoding processes: none for a handful of images, else one per core but one (the model's)."""
    return 0 if images < MIN_PARALLEL else max(1, usable_cores() - 1)


def batch_size_for(models: Sequence[nn.Module], size: int, memory_gib: float) -> int:
    """Images per forward pass that every model fits in the memory budget (the footprint's rule)."""
    sizes = [measure(model, size).no_grad_batch(memory_gib * GIB) for model in models]
    return max(1, min(sizes, default=1))


def stream_images(
    paths: Sequence[Path],
    preprocess: PreprocessConfig,
    batch_size: int,
    workers: int | None = None,
    cache: PreprocessCache | None = None,
) -> Iterator[Batch]:
    """Batches of ``paths`` in order, preprocessed with ``preprocess`` (through ``cache`` if given)."""
    count = default_workers(len(paths)) if workers is None else workers
    loader = DataLoader(
        _Decoded(paths, preprocess, cache),
        batch_size=batch_size,
        shuffle=False,
        num_workers=count,
        collate_fn=_collate,
        prefetch_factor=2 if count else None,
    )
    yield from loader
