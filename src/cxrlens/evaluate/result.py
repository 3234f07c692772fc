"""What an evaluation computed: :class:`EvaluationResult` (one :class:`EntryEvaluation` per model and ensemble)
and the conventions it follows (written into ``evaluation/metrics.json``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cxrlens.evaluate.metrics import STD_DDOF, FoldMetrics
from cxrlens.fileio import json_ready, json_text

FORMAT = "cxrlens-evaluation/1"

CONVENTIONS = {
    "decision": "a label is positive when its score is >= its threshold",
    "undefined": "a per-label precision, recall, F1 or specificity with a zero denominator is null (undefined); "
    "ROC-AUC is null when a label has a single class",
    "micro": "pooled confusion counts over the evaluable labels; micro_all pools every label",
    "macro": "unweighted mean of per-label values over the evaluable labels, undefined values counted as 0 "
    "(scikit-learn's zero_division=0; macro F1 = mean per-label F1)",
    "evaluable": "a label is evaluable in a fold with >= min_support positive and >= 1 negative test images",
    "unknown": "a label's value that the image's source does not annotate (empty in labels.csv) is missing, not "
    "negative: it is left out of that label's counts, support, ROC-AUC, thresholds and the micro pools",
    "std": f"sample std over folds (ddof={STD_DDOF}); undefined (null) with fewer than two folds",
    "per_label_summary": "per-label mean ± std over the folds where the value is defined (n = their number); "
    "support sums the folds' test positives",
    "tuned_thresholds": "per fold and label, max F1 on that fold's val rows only; ties: closest to 0.5, then "
    "smaller; no positive in val: 0.5",
    "ensemble_mean": "mean of member probabilities on the test images common to all members, then thresholded "
    "(tuned on the mean val probabilities when thresholds are tuned)",
    "ensemble_vote": "strict majority (> half) of the members' decisions, each with its own thresholds; a tie is "
    "negative; ROC-AUC uses the vote fraction",
    "hierarchy_consistency": "share of test images whose predicted labels have no positive child under a "
    "negative parent",
    "pooled_figures": "confusion matrices and ROC curves pool every fold's test predictions",
}


@dataclass(frozen=True)
class Pooled:
    """Every fold's test rows of one entry, stacked (used for the pooled figures; not serialised)."""

    y_true: np.ndarray
    scores: np.ndarray
    y_pred: np.ndarray
    known: np.ndarray | None = None  # False where the truth is unknown (left out of the figures); None: all known


@dataclass(frozen=True)
class EntryEvaluation:
    """One row of Table 2: a model or an ensemble, per fold and summarised over folds."""

    name: str
    kind: str  # "model", "ensemble-mean" or "ensemble-vote"
    members: list[str]
    folds: list[FoldMetrics]
    summary: dict[str, Any]
    pooled: Pooled | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "members": list(self.members),
            "summary": self.summary,
            "folds": [f.to_dict() for f in self.folds],
        }


@dataclass(frozen=True)
class EvaluationResult:
    """Everything :func:`evaluate_run` computed; :meth:`to_dict` is JSON-ready (NaN becomes null)."""

    run_dir: str
    label_names: list[str]
    threshold_mode: str  # "fixed" or "tuned"
    threshold: float  # the fixed value, or the fallback of tuned thresholds
    min_support: int
    models: list[str]
    ensemble_members: list[str]
    entries: dict[str, EntryEvaluation]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return json_ready(
            {
                "format": FORMAT,
                "run_dir": self.run_dir,
                "label_names": list(self.label_names),
                "threshold": {"mode": self.threshold_mode, "value": self.threshold},
                "min_support": self.min_support,
                "models": list(self.models),
                "ensemble_members": list(self.ensemble_members),
                "conventions": dict(CONVENTIONS),
                "notes": list(self.notes),
                "entries": {name: entry.to_dict() for name, entry in self.entries.items()},
            }
        )

    def to_json(self) -> str:
        return json_text(self.to_dict())
