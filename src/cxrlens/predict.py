"""Predict labels for any image files with the models of a trained run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxrlens.config import PreprocessConfig
from cxrlens.data.preprocess import preprocess_file
from cxrlens.errors import RunError
from cxrlens.evaluate.ensemble import ENSEMBLE
from cxrlens.evaluate.thresholds import thresholds_for
from cxrlens.models.checkpoint import load_model
from cxrlens.run.folder import RunDir


def select_models(run: RunDir, model: str = ENSEMBLE, fold: int | None = None) -> list[tuple[str, int]]:
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


def predict_images(
    run_dir: str | Path, images: Sequence[str | Path], model: str = ENSEMBLE, fold: int | None = None
) -> dict[str, Any]:
    run = RunDir(Path(run_dir))
    info = run.read_info()
    label_names = list(info["label_names"])
    preprocess = PreprocessConfig.model_validate(info["preprocess"])
    pairs = select_models(run, model, fold)
    batch = torch.from_numpy(np.stack([preprocess_file(p, preprocess) for p in images]))[:, None]
    per_model: dict[str, list[np.ndarray]] = {}
    for name, k in pairs:
        net, _ = load_model(run.model_file(name, k), label_names)
        with torch.no_grad():
            per_model.setdefault(name, []).append(torch.sigmoid(net(batch)).numpy())
    # mean over the folds of each model, then over models (the ensemble's mean probability)
    probs = np.mean([np.mean(folds, axis=0) for folds in per_model.values()], axis=0)
    thresholds = thresholds_for(run, label_names, model, fold, members=sorted(per_model))
    results = []
    for path, row in zip(images, probs, strict=True):
        named = {label: float(p) for label, p in zip(label_names, row, strict=True)}
        results.append(
            {
                "image": str(path),
                "probabilities": named,
                "positive": [label for label, p in named.items() if p >= thresholds[label]],
            }
        )
    return {
        "model": model,
        "models": sorted(per_model),
        "folds": sorted({k for _, k in pairs}),
        "thresholds": thresholds,
        "images": results,
    }
