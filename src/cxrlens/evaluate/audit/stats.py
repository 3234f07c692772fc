"""The numbers of the audit that need no model: AUROC, the best one-column rule, Cramér's V.

* **One-column AUROC**: score every image by the share of positives among the images with its value of the
  column (its value's prevalence of the label) and take the AUROC of that score. Ranking the values by
  prevalence is the best any rule that sees only the column can do (it is the ROC's upper hull over value
  rules), so this AUROC says how well *the column alone* predicts the label. It is measured on the same images
  the prevalences come from (in-sample): a column with many small values looks better than it would on new
  data, which is the cautious side for an audit.
* **Cramér's V** of the 2 x k table label x value: ``sqrt(chi2 / (n (min(2, k) - 1)))`` with Pearson's chi2
  without continuity correction; 0 = independent, 1 = the value decides the label.

Both are undefined (None) when the label has no positive or no negative image, or the column one value.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import roc_auc_score


def safe_auroc(truth: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC, or None without a positive and a negative."""
    truth = np.asarray(truth, dtype=bool)
    if truth.size == 0 or truth.all() or not truth.any():
        return None
    return float(roc_auc_score(truth, np.asarray(scores, dtype=np.float64)))


def prevalence_scores(truth: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Each image's score: the share of positives among the images with its value."""
    truth = np.asarray(truth, dtype=bool)
    values = np.asarray(values, dtype=object)
    scores = np.zeros(len(values), dtype=np.float64)
    for value in set(values.tolist()):
        rows = values == value
        scores[rows] = truth[rows].mean()
    return scores


def one_column_auroc(truth: np.ndarray, values: np.ndarray) -> float | None:
    """AUROC of the best rule that sees only the column (see the module docstring)."""
    return safe_auroc(truth, prevalence_scores(truth, values))


def contingency(truth: np.ndarray, values: np.ndarray) -> np.ndarray:
    """2 x k counts: row 0 negatives, row 1 positives; columns the values in sorted order."""
    truth = np.asarray(truth, dtype=bool)
    values = np.asarray(values, dtype=object)
    order = sorted(set(values.tolist()))
    return np.array([[int(((values == v) & (truth == t)).sum()) for v in order] for t in (False, True)])


def cramers_v(truth: np.ndarray, values: np.ndarray) -> float | None:
    """Cramér's V of label x value (see the module docstring)."""
    table = contingency(truth, values).astype(np.float64)
    n = table.sum()
    if n == 0 or table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return None
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / n
    chi2 = float(((table - expected) ** 2 / expected).sum())
    return math.sqrt(chi2 / (n * (min(table.shape) - 1)))
