"""The training loader: batches of the cached images in a resumable, epoch-seeded shuffle."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Sampler

from cxrlens.run.images import LabelledImages


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
    dataset: LabelledImages, batch_size: int, shuffle_seed: int | None = None, num_workers: int = 0
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
