"""Part 3 of the audit, in the representation: the probe (:mod:`.probe`) and TCAV (:mod:`.tcav`) of every model.

Every trained (model, fold) is loaded once, through :class:`~cxrlens.run.ModelBank`, fold by fold. Its
penultimate features are computed for that fold's test images (images it never trained on) and probed for
each audited column; the probe AUROC of a model is the mean over its folds. TCAV runs on the models of the
lowest trained fold only (``audit.tcav``). Models run on the GPU when there is one, else on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cxrlens.config import AuditConfig
from cxrlens.evaluate.audit.data_check import AuditData
from cxrlens.evaluate.audit.features import as_classifier, image_batches, image_tensor, penultimate_features
from cxrlens.evaluate.audit.probe import probe_auroc
from cxrlens.evaluate.audit.tcav import TcavSets, choose_sets, run_tcav, tcav_default_layer
from cxrlens.run import ImageSource, ModelBank, Run
from cxrlens.text import slug


@dataclass
class Representation:
    """Probe results (column -> model -> fold -> probe dict) and TCAV results (model -> result)."""

    probes: dict[str, dict[str, dict[int, dict[str, Any]]]] = field(default_factory=dict)
    tcav: dict[str, dict[str, Any]] = field(default_factory=dict)
    tcav_fold: int | None = None
    notes: list[str] = field(default_factory=list)

    def probe_auroc(self, column: str) -> dict[str, float | None]:
        """Model -> the mean probe AUROC over its folds (None when no fold could be probed)."""
        out: dict[str, float | None] = {}
        for model, folds in self.probes.get(column, {}).items():
            defined = [f["auroc"] for f in folds.values() if f["auroc"] is not None]
            out[model] = float(np.mean(defined)) if defined else None
        return out


def test_files(run: Run) -> dict[int, list[str]]:
    """Fold -> its test images (splits order)."""
    out: dict[int, list[str]] = {}
    for row in run.splits():
        if row.subset == "test":
            out.setdefault(row.fold, []).append(row.filename)
    return out


class _Images:
    """Preprocessed images as tensors, each read once."""

    def __init__(self, source: ImageSource) -> None:
        self.source = source
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, files: Sequence[str]) -> torch.Tensor:
        missing = [f for f in files if f not in self.cache]
        if missing:
            self.cache.update(zip(missing, image_tensor(self.source, missing), strict=True))
        if not files:
            return image_tensor(self.source, [])
        return torch.stack([self.cache[f] for f in files])


def _tcav_sets(data: AuditData, rows: np.ndarray, cfg: AuditConfig, fold: int) -> TcavSets:
    positives = {
        label: [data.filenames[i] for i in rows if data.truth[i, j]] for j, label in enumerate(data.label_names)
    }
    columns = {name: column.values for name, column in data.columns.items()}
    known = {name: column.known for name, column in data.columns.items()}
    return choose_sets(data.filenames, columns, known, positives, cfg.tcav_images, cfg.tcav_repeats, cfg.seed + fold)


def audit_representation(
    run: Run, data: AuditData, cfg: AuditConfig, progress: Callable[[int], None] | None = None
) -> Representation:
    """Probe every trained (model, fold); TCAV on the lowest trained fold (see the module docstring)."""
    out = Representation()
    trained = run.trained_by_fold()
    if not trained:
        out.notes.append("No trained model: the representation (probe, TCAV) is not checked.")
        return out
    if not data.columns:
        return out
    device = "cuda" if torch.cuda.is_available() else "cpu"
    bank = ModelBank(run, device=device)
    source = ImageSource(run)
    images = _Images(source)
    index = data.index()
    tests = test_files(run)
    out.tcav_fold = min(trained) if cfg.tcav else None
    for fold, models in trained.items():
        files = [name for name in tests.get(fold, []) if name in index]
        rows = np.array([index[name] for name in files], dtype=np.int64)
        if not files:
            out.notes.append(f"Fold {fold} has no audited test image: its models are not probed.")
            continue
        for name in models:
            model = as_classifier(bank.model(name, fold))
            loader = image_batches(source, files, data.label_names, run.config.train.batch_size)
            features = penultimate_features(model, loader, progress)
            for column, values in data.columns.items():
                result = probe_auroc(features, values.values[rows], data.patients[rows], cfg.probe_folds, cfg.seed)
                out.probes.setdefault(column, {}).setdefault(name, {})[fold] = result.to_dict()
            if fold == out.tcav_fold:
                layer = cfg.tcav_layer or tcav_default_layer(model)
                sets = _tcav_sets(data, rows, cfg, fold)
                result_tcav = run_tcav(
                    model, sets, images, layer, run.layout.audit_cavs, f"{slug(name)}-fold{fold}", progress
                )
                out.tcav[name] = {"fold": fold, **result_tcav}
    source.close()
    return out
