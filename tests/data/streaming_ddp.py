"""One training epoch under 2-process DDP on the CPU that writes what each rank saw, step by step.

``python tests/data/streaming_ddp.py DATA CACHE SHARDS SEED OUT``. Two loaders, each cxrlens's own
(:func:`cxrlens.train.data.make_loader` over :class:`cxrlens.run.images.LabelledImages`, seeded alike) and each
given its DDP sampler by Lightning: one reads the cache, the other the shards; one launch feeds both (a step
gets a batch of each) and trains on the shards' batch. Lightning's ddp launcher starts the second rank by
running this script again. Each rank writes ``OUT/rank<R>.json``: per loader and step, the record ids and a
digest of the batch's tensors.
"""

from __future__ import annotations

import hashlib
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import Dataset

from cxrlens.config import DataConfig, PreprocessConfig
from cxrlens.data.cache import PreprocessCache
from cxrlens.data.labels import choose_labels
from cxrlens.data.sources import load_dataset
from cxrlens.data.streaming import ImageStore, ShardImages
from cxrlens.run.images import LabelledImages
from cxrlens.train.data import EpochShuffle, make_loader

PREPROCESS = PreprocessConfig(size=16, min_side=8)
BATCH = 250


class WithIndex(Dataset[tuple[torch.Tensor, torch.Tensor, int]]):
    """The training items plus their index (to name the records of each batch); the sampler is unchanged."""

    def __init__(self, images: LabelledImages) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image, target = self.images[index]
        return image, target, index


class Recorder(L.LightningModule):
    def __init__(self, images: LabelledImages, samplers: list[EpochShuffle]) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, images.targets.shape[1])
        self.records, self.samplers = images.records, samplers
        self.steps: dict[str, list[dict[str, Any]]] = {"cache": [], "streaming": []}

    def on_train_epoch_start(self) -> None:
        for sampler in self.samplers:
            sampler.set_epoch(self.current_epoch)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        for name, (x, y, index) in batch.items():
            digest = hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest()[:16]
            self.steps[name].append({"ids": [self.records[i].filename for i in index.tolist()], "digest": digest})
        x, y, _ = batch["streaming"]
        logits = self.layer(x.mean(dim=(1, 2, 3))[:, None])
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.nan_to_num(y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def main(data: str, cache: str, shards: str, seed: int, out: str) -> None:
    dataset = load_dataset(cfg=DataConfig(sources=[data]))
    space, _ = choose_labels([r.labels for r in dataset.records], min_images=1)
    stores: dict[str, ImageStore] = {
        "cache": PreprocessCache(PREPROCESS, cache),
        "streaming": ShardImages(shards, PREPROCESS, dataset.records),
    }
    sets = {name: LabelledImages(dataset.records, space, store) for name, store in stores.items()}
    loaders = {name: make_loader(WithIndex(images), BATCH, seed) for name, images in sets.items()}  # type: ignore[arg-type]
    module = Recorder(sets["cache"], [loader.sampler for loader in loaders.values()])  # type: ignore[misc]
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, loaders)
    Path(out, f"rank{trainer.global_rank}.json").write_text(json.dumps(module.steps))


if __name__ == "__main__":
    main(*sys.argv[1:4], int(sys.argv[4]), sys.argv[5])
