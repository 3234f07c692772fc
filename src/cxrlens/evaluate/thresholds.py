"""Decision thresholds: one fixed value for every label, or per-label values tuned on validation images.

Tuning looks only at the validation rows it is given (the caller passes a fold's ``val`` rows, never its test
rows). For each label the candidates are the default (0.5), the smallest validation probability (everything
positive) and the midpoints between consecutive distinct validation probabilities; the candidate with the highest
F1 wins, ties go to the candidate closest to the default, then to the smaller one. A label without a positive
validation image keeps the default. Only the images where a label's value is known take part in its tuning.
The run package stores the thresholds an evaluation used (:mod:`cxrlens.run.thresholds`), so later stages
decide the same way.
"""

from __future__ import annotations

import numpy as np

from cxrlens.errors import ConfigError

DEFAULT_THRESHOLD = 0.5
FIXED = "fixed"
TUNED = "tuned"


def parse_threshold(value: float | str) -> tuple[str, float]:
    """``(mode, value)``: a number or ``"fixed"`` -> ``("fixed", t)``; ``"tuned"`` -> ``("tuned", 0.5)``."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == TUNED:
            return TUNED, DEFAULT_THRESHOLD
        if text == FIXED:
            return FIXED, DEFAULT_THRESHOLD
        try:
            number = float(text)
        except ValueError:
            raise ConfigError(f"threshold {value!r}: give a number in [0, 1], 'fixed' or 'tuned'") from None
    elif isinstance(value, bool):
        raise ConfigError(f"threshold {value!r}: give a number in [0, 1], 'fixed' or 'tuned'")
    else:
        number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ConfigError(f"threshold {value!r} is outside [0, 1]")
    return FIXED, number


def fixed_thresholds(n_labels: int, value: float = DEFAULT_THRESHOLD) -> np.ndarray:
    return np.full(n_labels, float(value))


def best_f1_threshold(y_true: np.ndarray, probs: np.ndarray, default: float = DEFAULT_THRESHOLD) -> float:
    """The threshold (rule ``prob >= t``) maximising F1 on these images; ``default`` if there is no positive."""
    truth = np.asarray(y_true).astype(bool).ravel()
    scores = np.asarray(probs, dtype=np.float64).ravel()
    if truth.shape != scores.shape:
        raise ValueError(f"y_true {truth.shape} and probs {scores.shape} differ")
    positives = int(truth.sum())
    if positives == 0:
        return float(default)
    distinct = np.unique(scores)
    candidates = np.concatenate([distinct[:1], (distinct[:-1] + distinct[1:]) / 2, [default]])
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    # tp_from[k]: positives among the images ranked k.. (the ones predicted positive when k images fall below t)
    tp_from = np.concatenate([np.cumsum(truth[order][::-1])[::-1], [0]]).astype(np.float64)
    below = np.searchsorted(sorted_scores, candidates, side="left")
    predicted = (scores.size - below).astype(np.float64)
    f1 = (2.0 * tp_from[below]) / (predicted + positives)  # one division: equal ratios give equal floats
    best = f1 == f1.max()
    distance = np.abs(candidates - default)
    pick = np.lexsort((candidates[best], distance[best]))[0]
    return float(candidates[best][pick])


def tune_thresholds(
    y_true: np.ndarray, probs: np.ndarray, default: float = DEFAULT_THRESHOLD, known: np.ndarray | None = None
) -> np.ndarray:
    """Per-label F1-optimal thresholds on validation images (shape (labels,)); each label on the images where
    its value is ``known`` (bool like ``y_true``; None: all)."""
    truth = np.asarray(y_true)
    scores = np.asarray(probs, dtype=np.float64)
    if truth.ndim != 2 or truth.shape != scores.shape:
        raise ValueError(f"y_true {truth.shape} and probs {scores.shape} must be equal 2-d shapes")
    k = np.ones(truth.shape, dtype=bool) if known is None else np.asarray(known).astype(bool)
    if k.shape != truth.shape:
        raise ValueError(f"known {k.shape} must have the shape of y_true {truth.shape}")
    return np.asarray(
        [best_f1_threshold(truth[k[:, j], j], scores[k[:, j], j], default) for j in range(truth.shape[1])]
    )
