"""Torch datasets over the preprocessed-image cache, and a resumable epoch-seeded shuffle."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from cxrlens.data.cache import PreprocessCache
from cxrlens.data.labels import LabelSpace
from cxrlens.data.records import ImageRecord


class CachedImages(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """(image [1, N, N] float32 in [0, 1], multi-hot labels [L]) from the cache."""

    def __init__(self, records: Sequence[ImageRecord], space: LabelSpace, cache: PreprocessCache) -> None:
        self.records = list(records)
        self.cache = cache
        self.targets = space.encode_many(r.labels for r in self.records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.cache.load(self.records[index].path)
        return torch.from_numpy(np.ascontiguousarray(image))[None], torch.from_numpy(self.targets[index])


class EpochShuffle(Sampler[int]):
    """A permutation that depends only on (seed, epoch): a resumed run sees the same batches."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


def make_loader(
    dataset: CachedImages, batch_size: int, shuffle_seed: int | None = None, num_workers: int = 0
) -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
    sampler = EpochShuffle(len(dataset), shuffle_seed) if shuffle_seed is not None else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        drop_last=False,
    )
