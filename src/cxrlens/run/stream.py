"""The one loader of images for inference: decoded and preprocessed exactly as the run did, in worker
processes, in order, in batches whose size comes from the memory budget, so that memory stays flat however
many images there are.

:func:`stream_images` batches images for a model's forward pass (predict, external validation, activation
profiles); an image that cannot be read comes back as a failure (its index and the reason) instead of stopping
the stream; the caller decides (``--skip-bad`` or a one-line error naming the file). :func:`prefetch` is the
same loader for work done one image at a time (the explanation metrics, the report's gallery): whatever a
function reads for an image (the image, its masks, a PNG) is computed ahead in worker processes while the
caller works on the previous image, a few images ahead at most.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar, cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cxrlens.config import PreprocessConfig
from cxrlens.data.cache import PreprocessCache
from cxrlens.data.preprocess import preprocess_file
from cxrlens.errors import CxrlensError, ImageReadError
from cxrlens.models.footprint import GIB, measure

MIN_PARALLEL = 16  # fewer images than this are decoded in the calling process (no worker start-up)

_Item = tuple[int, np.ndarray | None, str]
T = TypeVar("T")
R = TypeVar("R")


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


class _Each(Dataset[tuple[R | None, BaseException | None]], Generic[T, R]):
    def __init__(self, items: Sequence[T], load: Callable[[T], R]) -> None:
        self.items = list(items)
        self.load = load

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[R | None, BaseException | None]:
        try:
            return self.load(self.items[index]), None
        except (CxrlensError, OSError) as err:  # raised again, as is, in the caller's process
            return None, err


def _as_is(item: T) -> T:
    return item


def prefetch(
    items: Sequence[T], load: Callable[[T], R], workers: int | None = None, ahead: int = 2
) -> Iterator[tuple[T, R]]:
    """``(item, load(item))`` of every item in order, ``load`` running in worker processes ahead of the caller
    (at most ``ahead`` items per worker). An error ``load`` raises (a cxrlens error or an OSError) is raised
    again here when its item's turn comes. ``workers`` None: none for a handful of items, else one per core but
    one; 0: everything in the calling process."""
    count = default_workers(len(items)) if workers is None else workers
    loader = DataLoader(
        _Each(items, load),
        batch_size=None,
        shuffle=False,
        num_workers=count,
        collate_fn=_as_is,
        prefetch_factor=ahead if count else None,
    )
    for item, (value, error) in zip(items, loader, strict=True):
        if error is not None:
            raise error
        yield item, cast(R, value)  # set when there is no error
