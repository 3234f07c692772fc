"""The numbers of an external validation: Table 2's micro/macro metrics, per-label sensitivity, specificity, PPV
and AUROC, each with a 95 % bootstrap interval over patients, and calibration (ECE, reliability curve).

Conventions (as :mod:`cxrlens.evaluate.metrics`): a label is *evaluable* on a set with at least ``min_support``
positive and one negative image; the micro and macro averages cover evaluable labels only; a value whose
denominator is 0 is undefined (None in JSON), never 0. The bootstrap resamples patients with replacement (all
images of a drawn patient count) and reports the 2.5th and 97.5th percentiles of each value. An unknown
(image, label) value (a label the image's source does not annotate) is left out of that label's numbers, the
micro pools and the calibration; the image still counts for its known labels.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata

PER_LABEL = ("sensitivity", "specificity", "ppv", "auroc")
MICRO = ("precision", "recall", "f1", "specificity")


@dataclass(frozen=True)
class Scored:
    """Ground truth, scores and decisions of one model on a set of images (rows), with their patients."""

    truth: np.ndarray  # (images, labels) bool
    scores: np.ndarray  # (images, labels) probabilities (or vote fractions)
    decisions: np.ndarray  # (images, labels) bool
    patients: np.ndarray  # (images,) patient ids
    known: np.ndarray | None = None  # (images, labels) bool, False where the truth is unknown; None: all known

    @property
    def known_mask(self) -> np.ndarray:
        return np.ones(self.truth.shape, dtype=bool) if self.known is None else self.known

    def take(self, rows: np.ndarray) -> Scored:
        known = None if self.known is None else self.known[rows]
        return Scored(self.truth[rows], self.scores[rows], self.decisions[rows], self.patients[rows], known)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(np.shape(num), np.nan)
    np.divide(num, den, out=out, where=np.asarray(den) > 0)
    return out


def auroc(truth: np.ndarray, scores: np.ndarray, known: np.ndarray | None = None) -> np.ndarray:
    """Per-label ROC-AUC by the rank-sum formula (ties count half) over the images where the label is known;
    NaN for a label with one class."""
    out = np.full(truth.shape[1], np.nan)
    for j in range(truth.shape[1]):
        rows = slice(None) if known is None else known[:, j]
        pos = truth[rows, j]
        n_pos = int(pos.sum())
        n_neg = pos.size - n_pos
        if n_pos and n_neg:
            ranks = rankdata(scores[rows, j])
            out[j] = (ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return out


def measure(scored: Scored, min_support: int) -> dict[str, Any]:
    """Per-label and micro/macro values of one set (arrays over labels; NaN where undefined)."""
    t, p, known = scored.truth, scored.decisions, scored.known_mask
    tp, fp = (t & p & known).sum(0), (~t & p & known).sum(0)
    fn, tn = (t & ~p & known).sum(0), (~t & ~p & known).sum(0)
    support, negatives = (t & known).sum(0), (~t & known).sum(0)
    evaluable = (support >= min_support) & (negatives > 0)
    per_label = {
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, tp + fp),
        "auroc": auroc(t, scored.scores, scored.known),
    }
    k = evaluable
    micro = {
        "precision": float(_ratio(tp[k].sum(), tp[k].sum() + fp[k].sum())),
        "recall": float(_ratio(tp[k].sum(), tp[k].sum() + fn[k].sum())),
        "f1": float(_ratio(2 * tp[k].sum(), 2 * tp[k].sum() + fp[k].sum() + fn[k].sum())),
        "specificity": float(_ratio(tn[k].sum(), tn[k].sum() + fp[k].sum())),
    }
    zero = {name: np.nan_to_num(per_label[name][k], nan=0.0) for name in ("ppv", "sensitivity", "specificity")}
    f1 = np.nan_to_num(_ratio(2 * tp[k], 2 * tp[k] + fp[k] + fn[k]), nan=0.0)
    macro = {
        "precision": float(zero["ppv"].mean()) if k.any() else float("nan"),
        "recall": float(zero["sensitivity"].mean()) if k.any() else float("nan"),
        "f1": float(f1.mean()) if k.any() else float("nan"),
        "specificity": float(zero["specificity"].mean()) if k.any() else float("nan"),
    }
    if not k.any():
        micro = dict.fromkeys(MICRO, float("nan"))
    return {
        "per_label": per_label,
        "support": support,
        "negatives": negatives,
        "unknown": (~known).sum(0),
        "evaluable": evaluable,
        "micro": micro,
        "macro": macro,
    }


def bootstrap(scored: Scored, min_support: int, resamples: int, seed: int) -> dict[str, Any]:
    """95 % percentile intervals over patients: ``per_label[name]`` (2, labels) and ``micro[name]`` (2,)."""
    patients, inverse = np.unique(scored.patients, return_inverse=True)
    rows_of = [np.flatnonzero(inverse == i) for i in range(len(patients))]
    rng = np.random.default_rng(seed)
    labels = scored.truth.shape[1]
    per_label = {name: np.full((resamples, labels), np.nan) for name in PER_LABEL}
    micro = {name: np.full(resamples, np.nan) for name in MICRO}
    for b in range(resamples):
        drawn = rng.integers(0, len(patients), len(patients))
        values = measure(scored.take(np.concatenate([rows_of[i] for i in drawn])), min_support)
        for name in PER_LABEL:
            per_label[name][b] = values["per_label"][name]
        for name in MICRO:
            micro[name][b] = values["micro"][name]

    def interval(samples: np.ndarray) -> np.ndarray:
        if samples.size == 0:
            return np.full((2, *samples.shape[1:]), np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a value undefined in every resample: NaN interval
            return np.nanpercentile(samples, [2.5, 97.5], axis=0)

    return {
        "per_label": {name: interval(v) for name, v in per_label.items()},
        "micro": {name: interval(v) for name, v in micro.items()},
    }


def calibration(truth: np.ndarray, scores: np.ndarray, bins: int) -> dict[str, Any]:
    """Expected calibration error and the reliability curve of (image, label) pairs in equal-width bins."""
    t, s = truth.ravel().astype(float), scores.ravel().astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(s, edges[1:-1]), 0, bins - 1)
    rows = []
    ece = 0.0
    for b in range(bins):
        inside = which == b
        n = int(inside.sum())
        if n == 0:
            rows.append({"low": edges[b], "high": edges[b + 1], "n": 0, "confidence": None, "frequency": None})
            continue
        confidence, frequency = float(s[inside].mean()), float(t[inside].mean())
        ece += n / s.size * abs(frequency - confidence)
        rows.append({"low": edges[b], "high": edges[b + 1], "n": n, "confidence": confidence, "frequency": frequency})
    return {"ece": ece if s.size else float("nan"), "bins": rows}


def summarise(
    scored: Scored,
    label_names: Sequence[str],
    min_support: int,
    resamples: int,
    seed: int,
    bins: int,
    probabilities: bool = True,
) -> dict[str, Any]:
    """The JSON-ready numbers of one model on one set (values of labels that are not evaluable are None)."""
    values = measure(scored, min_support)
    known = scored.known_mask
    ci = bootstrap(scored, min_support, resamples, seed) if resamples else None
    evaluable = values["evaluable"]
    labels: dict[str, Any] = {}
    for j, name in enumerate(label_names):
        row: dict[str, Any] = {
            "support": int(values["support"][j]),
            "negatives": int(values["negatives"][j]),
            "unknown": int(values["unknown"][j]),
            "evaluable": bool(evaluable[j]),
        }
        for metric in PER_LABEL:
            row[metric] = float(values["per_label"][metric][j]) if evaluable[j] else None
            interval = ci["per_label"][metric][:, j] if ci and evaluable[j] else [None, None]
            row[f"{metric}_ci"] = [None if v is None else float(v) for v in interval]
        if probabilities and evaluable[j]:
            rows = known[:, j]
            row["ece"] = calibration(scored.truth[rows, j], scored.scores[rows, j], bins)["ece"]
        labels[name] = row
    micro = dict(values["micro"])
    if ci:
        micro["ci"] = {name: [float(v) for v in ci["micro"][name]] for name in MICRO}
    pairs = known & evaluable[None, :]  # the known (image, label) pairs of the evaluable labels
    pooled = calibration(scored.truth[pairs], scored.scores[pairs], bins) if probabilities else None
    return {
        "images": int(scored.truth.shape[0]),
        "patients": len(np.unique(scored.patients)),
        "micro": micro,
        "macro": values["macro"],
        "labels": labels,
        "not_evaluable": [n for j, n in enumerate(label_names) if not evaluable[j]],
        "ece": pooled["ece"] if pooled else None,
        "reliability": pooled["bins"] if pooled else None,
    }
