"""The Lightning module: the paper's recipe (BCE-with-logits, Adam 1e-3, weight decay 1e-4, aux 0.4)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics.classification import MultilabelF1Score

from cxrlens.config import TrainConfig
from cxrlens.models.registry import CxrClassifier
from cxrlens.train.data import EpochShuffle


class CxrLitModule(L.LightningModule):
    def __init__(self, model: CxrClassifier, cfg: TrainConfig) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.aux_weight = model.spec.aux_weight
        self.val_f1 = MultilabelF1Score(num_labels=model.num_labels, average="micro", threshold=0.5)
        self.sampler: EpochShuffle | None = None
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.channels_last else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self._input(x))

    def on_train_epoch_start(self) -> None:
        # depends only on (seed, epoch): dropout and shuffling are the same after a resume
        torch.manual_seed(self.cfg.seed * 7919 + self.current_epoch)
        if self.sampler is not None:
            self.sampler.set_epoch(self.current_epoch)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits, aux = self.model.forward_train(self._input(x))
        loss = F.binary_cross_entropy_with_logits(logits, y)
        if aux is not None and self.aux_weight:
            loss = loss + self.aux_weight * F.binary_cross_entropy_with_logits(aux, y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(x))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        loss = F.binary_cross_entropy_with_logits(logits, y)
        self.val_f1.update(torch.sigmoid(logits), y.int())
        self.log("val_loss", loss, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=len(x))
        self.log("val_f1", self.val_f1, on_epoch=True, prog_bar=True, batch_size=len(x))

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, list | tuple) else batch
        return torch.sigmoid(self(x))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.model.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
