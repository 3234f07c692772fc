"""The Lightning module: the paper's recipe (BCE-with-logits, Adam 1e-3, weight decay 1e-4, aux 0.4).

Speed settings (:class:`~cxrlens.train.recipe.Recipe`) change how, never what, is computed:

* mixed precision: Lightning's precision plugin runs the training step under autocast; the loss is taken on
  the logits cast to float32 (BCE in fp32, as the paper's loop), the weights and Adam's state stay fp32;
* validation runs in float32 with autocast switched off, so the validation loss that picks the best epoch
  (and stops early) is the fp32 model's, the same as every later use of ``model.pt`` computes;
* channels-last: the model is converted once, before the optimizer is made; each batch once per step;
* the optimizer is Adam as one fused kernel per tensor (``fused_optimizer``), the same update.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torchmetrics.classification import MultilabelF1Score

from cxrlens.config import TrainConfig
from cxrlens.models.registry import CxrClassifier
from cxrlens.run.images import known_targets
from cxrlens.train.data import EpochShuffle
from cxrlens.train.loss import masked_bce
from cxrlens.train.recipe import Recipe

RECIPE_KEY = "cxrlens_recipe"  # the resolved recipe inside every Lightning checkpoint


class CxrLitModule(L.LightningModule):
    def __init__(self, model: CxrClassifier, cfg: TrainConfig, recipe: Recipe) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.recipe = recipe
        self.aux_weight = model.spec.aux_weight
        # unknown (image, label) entries come as target -1 and are left out of the micro F1
        self.val_f1 = MultilabelF1Score(num_labels=model.num_labels, average="micro", threshold=0.5, ignore_index=-1)
        self.sampler: EpochShuffle | None = None
        if recipe.channels_last:
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.recipe.channels_last else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self._input(x))

    def on_train_epoch_start(self) -> None:
        # depends only on (seed, epoch): dropout and shuffling are the same after a resume
        torch.manual_seed(self.cfg.seed * 7919 + self.current_epoch)
        if self.sampler is not None:
            self.sampler.set_epoch(self.current_epoch)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, (y, known) = batch[0], known_targets(batch[1])  # NaN target: unknown, left out of the loss
        logits, aux = self.model.forward_train(self._input(x))
        loss = masked_bce(logits.float(), y, known)
        if aux is not None and self.aux_weight:
            loss = loss + self.aux_weight * masked_bce(aux.float(), y, known)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(x))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, (y, known) = batch[0], known_targets(batch[1])
        with torch.autocast(self.device.type, enabled=False):  # the fp32 model decides the best epoch
            logits = self(x).float()
        loss = masked_bce(logits, y, known)
        self.val_f1.update(torch.sigmoid(logits), torch.where(known, y.int(), -1))
        self.log("val_loss", loss, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=len(x))
        self.log("val_f1", self.val_f1, on_epoch=True, prog_bar=True, batch_size=len(x))

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, list | tuple) else batch
        with torch.autocast(self.device.type, enabled=False):
            return torch.sigmoid(self(x).float())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[RECIPE_KEY] = self.recipe.meta()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        fused = self.recipe.fused_optimizer and self.device.type in ("cpu", "cuda")
        return torch.optim.Adam(
            self.model.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay, fused=fused or None
        )
