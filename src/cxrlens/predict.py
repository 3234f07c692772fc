"""The predict stage: per-label probabilities and decisions for any image files, with the run's models.

A model's probability is the mean over its folds' checkpoints (or one fold's with ``fold``); the ensemble's is
the mean over the models. Decisions use the thresholds of the run's last ``cxrlens evaluate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxrlens.config import PredictConfig
from cxrlens.errors import RunError
from cxrlens.models.names import ENSEMBLE
from cxrlens.run import ImageSource, ModelBank, Run

BATCH = 8


@dataclass(frozen=True)
class ImagePrediction:
    image: str
    probabilities: dict[str, float]
    positive: tuple[str, ...]


@dataclass(frozen=True)
class PredictionResult:
    model: str  # a model name or "ensemble"
    models: tuple[str, ...]  # the trained models averaged
    folds: tuple[int, ...]
    thresholds: dict[str, float]
    images: tuple[ImagePrediction, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "models": list(self.models),
            "folds": list(self.folds),
            "thresholds": dict(self.thresholds),
            "images": [
                {"image": p.image, "probabilities": dict(p.probabilities), "positive": list(p.positive)}
                for p in self.images
            ],
        }


def select_models(run: Run, model: str = ENSEMBLE, fold: int | None = None) -> list[tuple[str, int]]:
    """Trained (model, fold) pairs matching ``model`` ('ensemble' = all models) and ``fold``."""
    pairs = run.trained()
    if not pairs:
        raise RunError(f"{run.root}: no trained models yet (run `cxrlens cv` or `cxrlens train`)")
    names = sorted({m for m, _ in pairs})
    if model != ENSEMBLE:
        if model not in names:
            raise RunError(f"model {model!r} is not trained in {run.root}; trained: {', '.join(names)}, ensemble")
        pairs = [p for p in pairs if p[0] == model]
    if fold is not None:
        folds = sorted({f for _, f in pairs})
        pairs = [p for p in pairs if p[1] == fold]
        if not pairs:
            raise RunError(f"fold {fold} has no trained {model} model; folds: {folds}")
    return pairs


def _probabilities(model: torch.nn.Module, images: list[np.ndarray]) -> np.ndarray:
    """float64 probabilities (images, labels), in batches of ``BATCH``."""
    out = []
    with torch.no_grad():
        for start in range(0, len(images), BATCH):
            batch = torch.from_numpy(np.stack(images[start : start + BATCH]))[:, None]
            out.append(torch.sigmoid(model(batch).double()).numpy())
    return np.concatenate(out)


def predict_images(run: Run, images: Sequence[str | Path], cfg: PredictConfig) -> PredictionResult:
    """Probabilities and decisions of ``cfg.model`` (and ``cfg.fold``) for image files."""
    pairs = select_models(run, cfg.model, cfg.fold)
    source = ImageSource(run)
    bank = ModelBank(run)
    label_names = run.label_names
    pixels = [source.file(p) for p in images]
    per_model: dict[str, list[np.ndarray]] = {}
    for name, fold in sorted(pairs, key=lambda p: (p[1], p[0])):  # fold by fold: one fold's models in memory
        per_model.setdefault(name, []).append(_probabilities(bank.model(name, fold), pixels))
    # mean over the folds of each model, then over models (the ensemble's mean probability)
    probs = np.mean([np.mean(folds, axis=0) for folds in per_model.values()], axis=0)
    thresholds = run.thresholds(cfg.model, cfg.fold, members=sorted(per_model))
    results = []
    for path, row in zip(images, probs, strict=True):
        named = {label: float(p) for label, p in zip(label_names, row, strict=True)}
        positive = tuple(label for label, p in named.items() if p >= thresholds[label])
        results.append(ImagePrediction(str(path), named, positive))
    return PredictionResult(
        model=cfg.model,
        models=tuple(sorted(per_model)),
        folds=tuple(sorted({fold for _, fold in pairs})),
        thresholds=thresholds,
        images=tuple(results),
    )
