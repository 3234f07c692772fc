"""Multi-label metrics with explicit conventions (numpy + scikit-learn).

Conventions used throughout:

* A label is predicted positive when its probability is ``>= threshold``.
* A per-label precision, recall, F1 or specificity whose denominator is 0 is *undefined* (NaN, null in JSON):
  e.g. recall in a fold without a positive test image, precision when nothing was predicted positive, F1
  when there is neither a positive nor a positive prediction. Per-label ROC-AUC is NaN when a label has only
  one class among the images.
* Micro averages pool the confusion counts of the averaged labels; macro averages are unweighted means of the
  per-label values over the evaluable labels, with undefined precision/recall/F1/specificity counted as 0
  (scikit-learn's ``zero_division=0``; macro F1 is the mean of per-label F1, not the F1 of macro P and R).
* A label is *evaluable* in a fold when it has at least ``min_support`` positive and at least one negative test
  image. Micro and macro averages cover evaluable labels only (NaN when no label is evaluable); ``micro_all``
  pools every label, for comparison with the paper's 14-label setting.
* An *unknown* (image, label) value (``known`` False: a label the image's source does not annotate) is
  missing, not negative: it is left out of that label's counts, support, negatives, ROC-AUC, evaluability and
  of the micro pools; the image still counts for its known labels (and ``n_images``).
* Mean ± std over folds uses the folds where the value is defined (their number is ``n``) and ``ddof=1``
  (sample std); with fewer than two such folds the std is undefined (NaN).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from cxrlens.data.labels import Hierarchy

METRIC_NAMES = ("precision", "recall", "f1", "specificity")
PER_LABEL_METRICS = (*METRIC_NAMES, "roc_auc")
STD_DDOF = 1
DEFAULT_MIN_SUPPORT = 5


@dataclass(frozen=True)
class Counts:
    """Per-label confusion counts (arrays of shape (labels,))."""

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    tn: np.ndarray


def binarize(probs: np.ndarray, thresholds: float | np.ndarray) -> np.ndarray:
    """Boolean decisions ``probs >= thresholds`` (thresholds broadcast over the label axis)."""
    return np.asarray(probs, dtype=np.float64) >= np.asarray(thresholds, dtype=np.float64)


def known_or_all(known: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """The known mask as a bool array of ``shape`` (all True when None)."""
    if known is None:
        return np.ones(shape, dtype=bool)
    mask = np.asarray(known).astype(bool)
    if mask.shape != shape:
        raise ValueError(f"known {mask.shape} must have the shape of y_true {shape}")
    return mask


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, known: np.ndarray | None = None) -> Counts:
    """Per-label confusion counts over the known entries (every entry when ``known`` is None)."""
    truth = np.asarray(y_true).astype(bool)
    pred = np.asarray(y_pred).astype(bool)
    if truth.shape != pred.shape or truth.ndim != 2:
        raise ValueError(f"y_true {truth.shape} and y_pred {pred.shape} must be equal 2-d shapes")
    k = known_or_all(known, truth.shape)
    return Counts(
        tp=(truth & pred & k).sum(axis=0),
        fp=(~truth & pred & k).sum(axis=0),
        fn=(truth & ~pred & k).sum(axis=0),
        tn=(~truth & ~pred & k).sum(axis=0),
    )


def _ratio(num: np.ndarray | float, den: np.ndarray | float) -> np.ndarray:
    """num / den, 0 where den == 0."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def scores_from_counts(tp: Any, fp: Any, fn: Any, tn: Any) -> dict[str, np.ndarray]:
    """Precision, recall, F1, specificity (0 where undefined) from counts (scalars or arrays)."""
    tp, fp, fn, tn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn, tn))
    return {
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "specificity": _ratio(tn, tn + fp),
    }


def defined_scores(counts: Counts) -> dict[str, np.ndarray]:
    """Per-label precision, recall, F1 and specificity with NaN where the denominator is 0 (undefined)."""
    tp, fp, fn, tn = (np.asarray(x, dtype=np.float64) for x in (counts.tp, counts.fp, counts.fn, counts.tn))
    pairs = {"precision": (tp, tp + fp), "recall": (tp, tp + fn), "f1": (2 * tp, 2 * tp + fp + fn)}
    pairs["specificity"] = (tn, tn + fp)
    out = {}
    for name, (num, den) in pairs.items():
        values = np.full(num.shape, np.nan)
        np.divide(num, den, out=values, where=den != 0)
        out[name] = values
    return out


def micro_scores(counts: Counts, mask: np.ndarray | None = None) -> dict[str, float]:
    """Scores of the pooled counts of the labels in ``mask`` (all labels if None); NaN if the mask is empty."""
    keep = np.ones(len(counts.tp), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if not keep.any():
        return dict.fromkeys(METRIC_NAMES, float("nan"))
    pooled = scores_from_counts(
        counts.tp[keep].sum(), counts.fp[keep].sum(), counts.fn[keep].sum(), counts.tn[keep].sum()
    )
    return {name: float(value) for name, value in pooled.items()}


def macro_scores(per_label: Mapping[str, np.ndarray], mask: np.ndarray) -> dict[str, float]:
    """Unweighted mean of each per-label metric over the labels in ``mask``; NaN if the mask is empty.

    ROC-AUC is averaged over the masked labels where it is defined.
    """
    keep = np.asarray(mask, dtype=bool)
    out: dict[str, float] = {}
    for name in PER_LABEL_METRICS:
        values = np.asarray(per_label[name], dtype=np.float64)[keep]
        values = values[np.isfinite(values)]
        out[name] = float(values.mean()) if values.size else float("nan")
    return out


def roc_auc_per_label(y_true: np.ndarray, scores: np.ndarray, known: np.ndarray | None = None) -> np.ndarray:
    """ROC-AUC of each label over the images where it is known; NaN where it has a single class among them."""
    truth = np.asarray(y_true).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    k = known_or_all(known, truth.shape)
    out = np.full(truth.shape[1], np.nan)
    for j in range(truth.shape[1]):
        rows = k[:, j]
        positives = int(truth[rows, j].sum())
        if 0 < positives < int(rows.sum()):
            out[j] = float(roc_auc_score(truth[rows, j], scores[rows, j]))
    return out


def evaluable_mask(
    y_true: np.ndarray, min_support: int = DEFAULT_MIN_SUPPORT, known: np.ndarray | None = None
) -> np.ndarray:
    """Labels with at least ``min_support`` positives and at least one negative (among the known values)."""
    truth = np.asarray(y_true).astype(bool)
    k = known_or_all(known, truth.shape)
    positives = (truth & k).sum(axis=0)
    negatives = (~truth & k).sum(axis=0)
    return (positives >= min_support) & (negatives > 0)


@dataclass
class FoldMetrics:
    """Every number of one model (or ensemble) on one fold's test images."""

    fold: int
    n_images: int
    thresholds: list[float] | None
    micro: dict[str, float]
    macro: dict[str, float]
    micro_all: dict[str, float]
    per_label: dict[str, dict[str, Any]]
    non_evaluable: list[str]
    hierarchy_consistency: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "fold": self.fold,
            "n_images": self.n_images,
            "thresholds": self.thresholds,
            "micro": dict(self.micro),
            "macro": dict(self.macro),
            "micro_all": dict(self.micro_all),
            "per_label": {k: dict(v) for k, v in self.per_label.items()},
            "non_evaluable": list(self.non_evaluable),
            "hierarchy_consistency": self.hierarchy_consistency,
        }


def fold_metrics(
    y_true: np.ndarray,
    scores: np.ndarray,
    label_names: Sequence[str],
    thresholds: float | np.ndarray | None = 0.5,
    *,
    y_pred: np.ndarray | None = None,
    fold: int = 0,
    min_support: int = DEFAULT_MIN_SUPPORT,
    hierarchy: Hierarchy | None = None,
    known: np.ndarray | None = None,
) -> FoldMetrics:
    """Metrics of one fold: decisions are ``scores >= thresholds`` unless ``y_pred`` is given.

    ``scores`` (probabilities, or vote fractions) are used for ROC-AUC. The hierarchy-consistency rate is the
    share of images whose *predicted* labels have no positive child under a negative parent. ``known`` (bool,
    like ``y_true``; None: all known) leaves the unknown (image, label) values out of every per-label and micro
    number.
    """
    truth = np.asarray(y_true).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_labels = len(label_names)
    if truth.ndim != 2 or truth.shape[1] != n_labels or scores.shape != truth.shape:
        raise ValueError(f"y_true {truth.shape}, scores {scores.shape} and {n_labels} label names do not match")
    if y_pred is None:
        if thresholds is None:
            raise ValueError("give thresholds or y_pred")
        pred = binarize(scores, thresholds)
    else:
        pred = np.asarray(y_pred).astype(bool)
    k = known_or_all(known, truth.shape)
    counts = confusion_counts(truth, pred, k)
    zero_filled = scores_from_counts(counts.tp, counts.fp, counts.fn, counts.tn)  # for the macro averages
    auc = roc_auc_per_label(truth, scores, k)
    zero_filled["roc_auc"] = auc
    per = {**defined_scores(counts), "roc_auc": auc}
    evaluable = evaluable_mask(truth, min_support, k)
    thr_list = None if thresholds is None else [float(t) for t in np.broadcast_to(thresholds, (n_labels,))]
    per_label: dict[str, dict[str, Any]] = {}
    for j, name in enumerate(label_names):
        per_label[name] = {
            **{m: float(per[m][j]) for m in PER_LABEL_METRICS},
            "support": int((truth[:, j] & k[:, j]).sum()),
            "negatives": int((~truth[:, j] & k[:, j]).sum()),
            "unknown": int((~k[:, j]).sum()),
            "tp": int(counts.tp[j]),
            "fp": int(counts.fp[j]),
            "fn": int(counts.fn[j]),
            "tn": int(counts.tn[j]),
            "evaluable": bool(evaluable[j]),
            "threshold": None if thr_list is None else thr_list[j],
        }
    hierarchy = hierarchy or Hierarchy.build()
    return FoldMetrics(
        fold=int(fold),
        n_images=int(truth.shape[0]),
        thresholds=thr_list,
        micro=micro_scores(counts, evaluable),
        macro=macro_scores(zero_filled, evaluable),
        micro_all=micro_scores(counts),
        per_label=per_label,
        non_evaluable=[name for j, name in enumerate(label_names) if not evaluable[j]],
        hierarchy_consistency=hierarchy.consistency_rate(list(label_names), pred),
    )


def mean_std(values: Sequence[float]) -> dict[str, float | int]:
    """Mean and sample std (ddof=1) of the finite values and their number ``n``; the std is NaN for fewer than
    two values (a spread of one fold is undefined, not 0), both are NaN for none."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    std = float(arr.std(ddof=STD_DDOF)) if arr.size > 1 else float("nan")
    return {"mean": float(arr.mean()), "std": std, "n": int(arr.size)}


def summarize_folds(folds: Sequence[FoldMetrics], label_names: Sequence[str]) -> dict[str, Any]:
    """Mean ± std over folds of every metric.

    Each per-label metric is averaged over the folds where it is defined (``n`` of each says how many: a label
    without a positive test image in a fold has no recall or F1 there, and does not count as 0); a label is
    ``evaluable`` when it is evaluable in every fold; ``support`` is the sum of test positives over folds.
    """
    out: dict[str, Any] = {"n_folds": len(folds)}
    for group in ("micro", "macro", "micro_all"):
        keys = list(getattr(folds[0], group)) if folds else list(METRIC_NAMES)
        out[group] = {k: mean_std([getattr(f, group)[k] for f in folds]) for k in keys}
    out["hierarchy_consistency"] = mean_std([f.hierarchy_consistency for f in folds])
    per_label: dict[str, Any] = {}
    for name in label_names:
        rows = [f.per_label[name] for f in folds]
        evaluable_folds = sum(1 for r in rows if r["evaluable"])
        per_label[name] = {
            "support": sum(r["support"] for r in rows),
            "negatives": sum(r["negatives"] for r in rows),
            "unknown": sum(r.get("unknown", 0) for r in rows),
            "evaluable_folds": evaluable_folds,
            "evaluable": bool(rows) and evaluable_folds == len(rows),
            **{m: mean_std([r[m] for r in rows]) for m in PER_LABEL_METRICS},
        }
    out["per_label"] = per_label
    out["non_evaluable"] = [name for name in label_names if not per_label[name]["evaluable"]]
    return out


def label_prior_baseline(train_labels: np.ndarray, n_test: int, known: np.ndarray | None = None) -> np.ndarray:
    """Probabilities (n_test, labels) giving every test image the training prevalence of each label (among the
    training images where the label is ``known``; 0 for a label known nowhere)."""
    train = np.asarray(train_labels, dtype=np.float64)
    if train.ndim != 2 or train.shape[0] == 0:
        raise ValueError(f"train_labels must be a non-empty (images, labels) matrix, got shape {train.shape}")
    if n_test < 0:
        raise ValueError(f"n_test must be >= 0, got {n_test}")
    if known is None:
        return np.tile(train.mean(axis=0), (n_test, 1))
    k = known_or_all(known, train.shape)
    prevalence = np.zeros(train.shape[1])
    np.divide((train * k).sum(axis=0), k.sum(axis=0), out=prevalence, where=k.sum(axis=0) > 0)
    return np.tile(prevalence, (n_test, 1))
