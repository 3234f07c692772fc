"""Part 3a of the audit, in the representation: can a column's value be read from a model's features?

A linear probe: logistic regression (scikit-learn, L2, C = 1, lbfgs) on standardised penultimate-layer features
(:mod:`.features`) predicts the value of the column. It is trained and scored with patient-grouped,
value-stratified cross-validation (``StratifiedGroupKFold``, ``audit.probe_folds`` folds, shuffled with
``audit.seed``): no patient is in both a probe's training and test part. The score is the AUROC of the
out-of-fold probabilities: for two values the plain AUROC, for more the macro mean of one-vs-rest AUROCs.
0.5: the features carry nothing of the column; near 1: the model sees it plainly.

Images with an unknown value are left out (missing metadata is not in the image), and so are values with
fewer than two patients; the folds are lowered to the fewest patients of a value when that is below
``audit.probe_folds``. Features of different folds' models live in different spaces, so the caller probes
each (model, fold) on that fold's test images and averages the AUROCs over the folds.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cxrlens.evaluate.audit.columns import UNKNOWN
from cxrlens.evaluate.audit.stats import safe_auroc


@dataclass(frozen=True)
class ProbeResult:
    auroc: float | None
    images: int
    classes: tuple[str, ...]
    cv_folds: int
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "auroc": self.auroc,
            "images": self.images,
            "classes": list(self.classes),
            "cv_folds": self.cv_folds,
            "note": self.note,
        }


def _fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, n_classes: int) -> np.ndarray:
    """Test probabilities over all ``n_classes`` (a class missing from the training part gets 0)."""
    out = np.zeros((len(x_test), n_classes), dtype=np.float64)
    present = np.unique(y_train)
    if len(present) < 2:
        out[:, present[0]] = 1.0
        return out
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x_train, y_train)
        out[:, model.classes_] = model.predict_proba(x_test)
    return out


def macro_auroc(y: np.ndarray, proba: np.ndarray) -> float | None:
    """AUROC for two classes (class 1 as positive), the macro one-vs-rest mean for more."""
    n_classes = proba.shape[1]
    if n_classes == 2:
        return safe_auroc(y == 1, proba[:, 1])
    aucs = [safe_auroc(y == k, proba[:, k]) for k in range(n_classes)]
    defined = [a for a in aucs if a is not None]
    return float(np.mean(defined)) if defined else None


def probe_auroc(features: np.ndarray, values: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> ProbeResult:
    """The grouped cross-validated probe AUROC of ``values`` from ``features`` (see the module docstring)."""
    values = np.asarray(values, dtype=object)
    groups = np.asarray(groups, dtype=object)
    known = values != UNKNOWN
    patients = {v: len(set(groups[known & (values == v)].tolist())) for v in sorted(set(values[known].tolist()))}
    classes = tuple(v for v, n in patients.items() if n >= 2)
    keep = known & np.isin(values, np.array(classes, dtype=object))
    images = int(keep.sum())
    if len(classes) < 2:
        return ProbeResult(None, images, classes, 0, "fewer than two values with two patients or more")
    n_splits = min(folds, *(patients[c] for c in classes))
    x = np.asarray(features, dtype=np.float64)[keep]
    y = np.array([classes.index(v) for v in values[keep]], dtype=np.int64)
    g = groups[keep]
    proba = np.zeros((len(y), len(classes)), dtype=np.float64)
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "the least populated class has only k members"
        splits = list(splitter.split(x, y, g))
    for train, test in splits:
        proba[test] = _fit_predict(x[train], y[train], x[test], len(classes))
    note = f"folds lowered to {n_splits} (fewest patients of a value)" if n_splits < folds else None
    return ProbeResult(macro_auroc(y, proba), images, classes, n_splits, note)
