"""Scores and decisions of every model and the two ensembles, on the external set and, for comparison, on the
run's own out-of-fold test predictions; decisions use the thresholds of the run's last ``cxrlens evaluate``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cxrlens.evaluate.ensemble import align, mean_ensemble, vote_ensemble
from cxrlens.evaluate.external.stats import Scored
from cxrlens.models.names import ENSEMBLE, ENSEMBLE_MEAN, ENSEMBLE_VOTE
from cxrlens.run import Run
from cxrlens.run.predictions import Predictions, read_labels


def _vector(thresholds: dict[str, float], label_names: Sequence[str]) -> np.ndarray:
    return np.array([thresholds[name] for name in label_names])


def entries(models: Sequence[str]) -> list[str]:
    """The evaluated names: every model, and the two ensembles when there are two models or more."""
    return [*models, ENSEMBLE_MEAN, ENSEMBLE_VOTE] if len(models) >= 2 else list(models)


def external_scores(
    run: Run, truth: np.ndarray, patients: np.ndarray, probs: dict[str, np.ndarray], known: np.ndarray | None = None
) -> dict[str, Scored]:
    """Each entry on the external images (a model's probability: the mean over its folds); ``known``: False where
    the truth is unknown (None: all known)."""
    names = run.label_names
    models = sorted(probs)
    out: dict[str, Scored] = {}
    decisions: dict[str, np.ndarray] = {}
    for model in models:
        decisions[model] = probs[model] >= _vector(run.thresholds(model), names)
        out[model] = Scored(truth, probs[model], decisions[model], patients, known)
    if len(models) >= 2:
        mean = mean_ensemble([probs[m] for m in models])
        threshold = _vector(run.thresholds(ENSEMBLE, members=models), names)
        out[ENSEMBLE_MEAN] = Scored(truth, mean, mean >= threshold, patients, known)
        vote, fraction = vote_ensemble([decisions[m] for m in models])
        out[ENSEMBLE_VOTE] = Scored(truth, fraction, vote, patients, known)
    return out


def in_domain_scores(run: Run) -> dict[str, Scored]:
    """Each entry on the run's own test predictions, every fold pooled (each fold decided with its thresholds)."""
    names = run.label_names
    data = run.predictions()
    patient_of = {name: patient for name, (patient, _) in read_labels(run.layout.labels, names).items()}
    models = [m for m in data.models() if data.folds(m)]
    parts: dict[str, list[Scored]] = {}

    def add(entry: str, block: Predictions, scores: np.ndarray, pred: np.ndarray) -> None:
        patients = np.array([patient_of[f] for f in block.filenames])
        parts.setdefault(entry, []).append(Scored(block.truth.astype(bool), scores, pred, patients, block.known_mask))

    for model in models:
        for fold in data.folds(model):
            block = data.blocks[(model, fold, "test")]
            pred = block.probs >= _vector(run.thresholds(model, fold), names)
            add(model, block, block.probs, pred)
    if len(models) >= 2:
        common = sorted(set.intersection(*(set(data.folds(m)) for m in models)))
        for fold in common:
            blocks = align([data.blocks[(m, fold, "test")] for m in models])
            if not len(blocks[0]):
                continue
            mean = mean_ensemble([b.probs for b in blocks])
            threshold = _vector(run.thresholds(ENSEMBLE, fold, members=models), names)
            add(ENSEMBLE_MEAN, blocks[0], mean, mean >= threshold)
            members = [b.probs >= _vector(run.thresholds(m, fold), names) for m, b in zip(models, blocks, strict=True)]
            vote, fraction = vote_ensemble(members)
            add(ENSEMBLE_VOTE, blocks[0], fraction, vote)
    return {
        entry: Scored(
            np.concatenate([p.truth for p in pieces]),
            np.concatenate([p.scores for p in pieces]),
            np.concatenate([p.decisions for p in pieces]),
            np.concatenate([p.patients for p in pieces]),
            _known_or_none(np.concatenate([p.known_mask for p in pieces])),
        )
        for entry, pieces in parts.items()
    }


def _known_or_none(known: np.ndarray) -> np.ndarray | None:
    return None if known.all() else known
