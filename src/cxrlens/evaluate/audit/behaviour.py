"""Part 2 of the audit, in the models' behaviour: does a label's AUROC survive within each value of a column?

Scores are the run's out-of-fold test predictions (``predictions.csv``, subset ``test``): every image is scored
only by models that never trained on it. An image tested in several folds (repeated hold-out) gets the mean of
its rows; the headline score is the mean probability of the models (each image averaged over the models that
tested it); every model is also checked on its own (``by_model``).

Per label and column: the pooled AUROC over every scored image, and the AUROC within each value that has at
least ``audit.min_within`` positives and as many negatives (else null, "not evaluable within <value>"). If the
model ranks positives above negatives only because they come from another value (another collection), the
within-value AUROCs fall to chance while the pooled one stays high. A label is flagged (``behaviour_flag``)
when its pooled AUROC is >= ``audit.flag_auroc`` but no value can check it, or every checkable value gives
<= ``audit.chance_auroc``: its score cannot be told apart from the column. An image whose value of the label
is unknown (``known`` False) is not scored for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cxrlens.config import AuditConfig
from cxrlens.evaluate.audit.columns import ColumnValues
from cxrlens.evaluate.audit.sentences import behaviour_flag, not_evaluable
from cxrlens.evaluate.audit.stats import safe_auroc
from cxrlens.run.predictions import RunData


def out_of_fold(data: RunData, filenames: Sequence[str]) -> dict[str, np.ndarray]:
    """Model -> images x labels test probabilities aligned to ``filenames`` (NaN rows: never tested)."""
    index = {name: i for i, name in enumerate(filenames)}
    out: dict[str, np.ndarray] = {}
    for model in data.models():
        total = np.zeros((len(filenames), len(data.label_names)), dtype=np.float64)
        count = np.zeros(len(filenames), dtype=np.int64)
        for fold in data.folds(model):
            block = data.get(model, fold, "test")
            if block is None:
                continue
            rows = [(index[name], k) for k, name in enumerate(block.filenames) if name in index]
            for i, k in rows:
                total[i] += block.probs[k]
                count[i] += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            out[model] = np.where(count[:, None] > 0, total / np.maximum(count, 1)[:, None], np.nan)
    return out


def mean_of_models(per_model: Mapping[str, np.ndarray]) -> np.ndarray:
    """Each image's mean over the models that tested it (NaN where none did)."""
    stacked = np.stack(list(per_model.values()))
    tested = np.isfinite(stacked)
    total = np.where(tested, stacked, 0.0).sum(axis=0)
    count = tested.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def within_values(
    truth: np.ndarray, scores: np.ndarray, column: ColumnValues, min_within: int
) -> tuple[float | None, dict[str, float | None], dict[str, str]]:
    """(pooled AUROC, value -> within AUROC or None, value -> why not evaluable) over the scored images."""
    truth = np.asarray(truth, dtype=bool)
    scored = np.isfinite(scores)
    pooled = safe_auroc(truth[scored], scores[scored])
    within: dict[str, float | None] = {}
    notes: dict[str, str] = {}
    for value in column.order:
        rows = scored & (column.values == value)
        positives = int(truth[rows].sum())
        negatives = int(rows.sum()) - positives
        if positives >= min_within and negatives >= min_within:
            within[value] = safe_auroc(truth[rows], scores[rows])
        else:
            within[value] = None
            notes[value] = not_evaluable(column.name, value, positives, negatives, min_within)
    return pooled, within, notes


def _one(label: str, truth: np.ndarray, scores: np.ndarray, column: ColumnValues, cfg: AuditConfig) -> dict[str, Any]:
    pooled, within, notes = within_values(truth, scores, column, cfg.min_within)
    sentence = None
    if pooled is not None and pooled >= cfg.flag_auroc:
        sentence = behaviour_flag(label, column.name, pooled, within, cfg.min_within, cfg.chance_auroc)
    return {
        "pooled_auroc": pooled,
        "within_auroc": within,
        "within_notes": notes,
        "scored_images": int(np.isfinite(scores).sum()),
        "behaviour_flag": sentence is not None,
        "behaviour_sentence": sentence,
    }


def check_behaviour(
    label_index: int,
    label: str,
    truth: np.ndarray,
    per_model: Mapping[str, np.ndarray],
    column: ColumnValues,
    cfg: AuditConfig,
    known: np.ndarray | None = None,
) -> dict[str, Any]:
    """The behaviour part of one label and column: the models' mean, and ``by_model``; images where the label's
    value is not ``known`` (bool per image; None: all known) are left out, as if never tested."""
    if not per_model:
        return {"pooled_auroc": None, "within_auroc": {}, "within_notes": {}, "scored_images": 0,
                "behaviour_flag": False, "behaviour_sentence": None, "by_model": {}}  # fmt: skip

    def scores(values: np.ndarray) -> np.ndarray:
        return values if known is None else np.where(known, values, np.nan)

    mean = scores(mean_of_models(per_model)[:, label_index])
    out = _one(label, truth, mean, column, cfg)
    out["by_model"] = {
        model: {
            key: value
            for key, value in _one(label, truth, scores(probs[:, label_index]), column, cfg).items()
            if key in ("pooled_auroc", "within_auroc", "behaviour_flag")
        }
        for model, probs in per_model.items()
    }
    return out
