"""The one loader of a run's trained models: :class:`ModelBank` (a fold's models, or their ensemble).

Every checkpoint is checked against the run before use: its labels (names and order) and its preprocessing
must be the run's, otherwise loading is refused with a message saying which differs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from cxrlens.config import PreprocessConfig, preprocess_differences, validate
from cxrlens.errors import ModelError, RunError
from cxrlens.models.checkpoint import load_model
from cxrlens.models.ensemble import EnsembleModel
from cxrlens.models.names import ENSEMBLE
from cxrlens.models.registry import CxrClassifier
from cxrlens.run.folder import Run

Transform = Callable[[nn.Module], nn.Module]


@dataclass(frozen=True)
class Checkpoint:
    """Where a loaded model came from: the checkpoint (relative to the run) and its hash."""

    path: str
    sha256: str


def load_checkpoint(run: Run, model: str, fold: int) -> CxrClassifier:
    """A trained model of the run, in eval mode on the CPU; refused if its labels or preprocessing differ."""
    path = run.layout.model_file(model, fold)
    if not run.is_done(model, fold):
        trained = ", ".join(f"{m} fold {f}" for m, f in run.trained()) or "nothing"
        raise RunError(f"{run.root}: {model} fold {fold} is not trained (trained: {trained})")
    net, meta = load_model(path, run.label_names)
    stored = meta.get("preprocess")
    if not isinstance(stored, dict):
        raise ModelError(f"{path}: the checkpoint does not say how its images were preprocessed")
    changed = preprocess_differences(run.preprocess, validate(PreprocessConfig, stored, f"{path}: preprocess"))
    if changed:
        raise ModelError(
            f"{path}: the checkpoint was trained on other preprocessing than the run's "
            f"(run vs checkpoint: {'; '.join(changed)}); retrain it or use the run it came from"
        )
    return net


class ModelBank:
    """The models of one fold at a time (asking for another fold frees the previous one).

    ``transform`` is applied once to every loaded model (e.g. the attribution engine's ``prepare_model``);
    models are moved to ``device`` first.
    """

    def __init__(self, run: Run, device: torch.device | str = "cpu", transform: Transform | None = None) -> None:
        self.run = run
        self.device = torch.device(device)
        self.transform = transform
        self._fold: int | None = None
        self._models: dict[str, nn.Module] = {}
        self._ensembles: dict[tuple[str, ...], nn.Module] = {}

    def members(self, fold: int) -> list[str]:
        """The trained model names of a fold."""
        return self.run.trained_by_fold().get(fold, [])

    def available(self, name: str, fold: int, members: Sequence[str] = ()) -> bool:
        names = list(members or self.members(fold)) if name == ENSEMBLE else [name]
        return bool(names) and all(self.run.is_done(n, fold) for n in names)

    def _switch(self, fold: int) -> None:
        if fold != self._fold:
            self._models.clear()
            self._ensembles.clear()
            self._fold = fold

    def model(self, name: str, fold: int) -> nn.Module:
        """One trained model (transformed, on the device, eval mode)."""
        self._switch(fold)
        if name not in self._models:
            net: nn.Module = load_checkpoint(self.run, name, fold).to(self.device)
            self._models[name] = self.transform(net) if self.transform else net
        return self._models[name]

    def ensemble(self, fold: int, members: Sequence[str] = ()) -> nn.Module:
        """The mean-probability ensemble of ``members`` (default: every model of the fold)."""
        names = tuple(members or self.members(fold))
        if not names:
            raise RunError(f"{self.run.root}: fold {fold} has no trained models")
        self._switch(fold)
        if names not in self._ensembles:
            self._ensembles[names] = EnsembleModel([self.model(n, fold) for n in names], list(names)).eval()
        return self._ensembles[names]

    def get(self, name: str, fold: int, members: Sequence[str] = ()) -> nn.Module:
        """A model by name; ``ensemble`` is the ensemble of ``members``."""
        return self.ensemble(fold, members) if name == ENSEMBLE else self.model(name, fold)

    def every_fold(self, name: str, folds: Sequence[int] | None = None) -> dict[int, nn.Module]:
        """Fold -> model of ``name`` for every trained fold (or the given ones), all in memory at once."""
        trained = [fold for model, fold in self.run.trained() if model == name]
        chosen = trained if folds is None else [f for f in folds if f in trained]
        if not chosen:
            raise RunError(f"{self.run.root}: {name} is not trained" + ("" if folds is None else f" in {list(folds)}"))
        out = {}
        for fold in chosen:
            net: nn.Module = load_checkpoint(self.run, name, fold).to(self.device)
            out[fold] = self.transform(net) if self.transform else net
        return out

    def across_folds(self, names: Sequence[str]) -> nn.Module:
        """Each model's folds averaged, then the models averaged: the model ``predict`` and external validation
        use for images outside the run (every trained fold of each name, all in memory at once)."""
        per_model: list[nn.Module] = []
        for name in names:
            loaded = self.every_fold(name)
            per_model.append(EnsembleModel(list(loaded.values()), [f"{name}-fold{f}" for f in loaded]).eval())
        if not per_model:
            raise RunError(f"{self.run.root}: no model named to average")
        return per_model[0] if len(per_model) == 1 else EnsembleModel(per_model, list(names)).eval()

    def checkpoint(self, name: str, fold: int) -> Checkpoint:
        path = self.run.layout.model_file(name, fold).relative_to(self.run.root).as_posix()
        return Checkpoint(path, self.run.checkpoint_sha(name, fold))


class FoldAverage:
    """Each named model's probability as the mean over its folds' checkpoints (all loaded at once), computed in
    float64 from the float logits: how ``predict`` and external validation score images outside the run."""

    def __init__(self, bank: ModelBank, names: Sequence[str], fold: int | None = None) -> None:
        self.nets = {name: bank.every_fold(name, None if fold is None else [fold]) for name in names}
        self.device = bank.device

    @property
    def folds(self) -> list[int]:
        return sorted({fold for nets in self.nets.values() for fold in nets})

    def models(self) -> list[nn.Module]:
        return [net for nets in self.nets.values() for net in nets.values()]

    def __call__(self, x: torch.Tensor) -> dict[str, np.ndarray]:
        """Model name -> probabilities (images, labels) of a batch ``[B, 1, N, N]``."""
        out = {}
        with torch.no_grad():
            batch = x.to(self.device)
            for name, nets in self.nets.items():
                probs = [torch.sigmoid(net(batch).double()).cpu().numpy() for net in nets.values()]
                out[name] = np.mean(probs, axis=0)
        return out
