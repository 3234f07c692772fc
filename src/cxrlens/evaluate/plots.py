"""Figures of an evaluation (PNG via matplotlib's object API, no pyplot, no global backend change).

* ``bars_<label>.png``: per model and ensemble, precision / recall / F1 of one label with std-over-folds error
  bars (the paper's Fig. 3-7 labels: COVID-19, Pneumonia, Viral and Bacterial Pneumonia, No Finding).
* ``confusion_<model>.png`` and ``roc_<model>.png``: per label, pooled over every fold's test predictions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve

from cxrlens.evaluate.result import EvaluationResult, Pooled
from cxrlens.figures import new_figure, save_figure
from cxrlens.run.layout import RunLayout

FIGURE_LABELS = ("COVID-19", "Pneumonia", "Viral Pneumonia", "Bacterial Pneumonia", "No Finding")
BAR_METRICS = ("precision", "recall", "f1")


def _grid(n: int, max_cols: int = 5) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def label_bar_figure(result: EvaluationResult, label: str) -> Figure:
    """Precision, recall and F1 of ``label`` per model and ensemble; error bars = std over folds."""
    names = list(result.entries)
    fig = new_figure(max(6.0, 1.2 * len(names) + 2), 4.2, constrained=True)
    ax = fig.add_subplot()
    width = 0.8 / len(BAR_METRICS)
    x = np.arange(len(names))
    for k, metric in enumerate(BAR_METRICS):
        stats = [result.entries[n].summary["per_label"][label][metric] for n in names]
        means = [s["mean"] if math.isfinite(s["mean"]) else 0.0 for s in stats]
        stds = [s["std"] if math.isfinite(s["std"]) else 0.0 for s in stats]
        ax.bar(x + (k - 1) * width, means, width, yerr=stds, capsize=3, label=metric if metric != "f1" else "F1")
    marks = [_bar_mark(result, n, label) for n in names]
    ax.set_xticks(x, marks, rotation=30, ha="right")
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("score")
    folds = max((e.summary["n_folds"] for e in result.entries.values()), default=0)
    ax.set_title(f"{label}: mean ± std over {folds} fold(s)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    return fig


def _bar_mark(result: EvaluationResult, name: str, label: str) -> str:
    """The entry's name, with the folds its F1 is averaged over when that is not every fold."""
    summary = result.entries[name].summary
    stats = summary["per_label"][label]
    folds = stats["f1"]["n"]
    mark = name if stats["evaluable"] else f"{name}\n(not evaluable)"
    return mark if folds == summary["n_folds"] else f"{mark}\n(F1 over {folds}/{summary['n_folds']} folds)"


def confusion_figure(pooled: Pooled, label_names: Sequence[str], title: str) -> Figure:
    """One 2x2 confusion matrix per label (rows: truth, columns: prediction), pooled over folds."""
    rows, cols = _grid(len(label_names))
    fig = new_figure(2.8 * cols, 2.6 * rows + 0.6)
    fig.suptitle(title)
    fig.subplots_adjust(left=0.08, right=0.97, bottom=0.08, top=1 - 0.6 / (2.6 * rows + 0.6), wspace=0.45, hspace=0.5)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    truth, pred = pooled.y_true.astype(bool), pooled.y_pred.astype(bool)
    known = np.ones(truth.shape, dtype=bool) if pooled.known is None else pooled.known  # unknown: left out
    for j, label in enumerate(label_names):
        ax = axes[j]
        t, p = truth[known[:, j], j], pred[known[:, j], j]
        matrix = np.array([[np.sum(~t & ~p), np.sum(~t & p)], [np.sum(t & ~p), np.sum(t & p)]])
        ax.imshow(matrix, cmap="Blues", vmin=0, vmax=max(int(matrix.max()), 1))
        for (r, c), value in np.ndenumerate(matrix):
            colour = "white" if value > matrix.max() / 2 else "black"
            ax.text(c, r, str(int(value)), ha="center", va="center", color=colour, fontsize="small")
        ax.set_xticks([0, 1], ["pred 0", "pred 1"], fontsize="x-small")
        ax.set_yticks([0, 1], ["true 0", "true 1"], fontsize="x-small")
        ax.set_title(label, fontsize="small")
    for ax in axes[len(label_names) :]:
        ax.set_axis_off()
    return fig


def roc_figure(pooled: Pooled, label_names: Sequence[str], title: str) -> Figure:
    """One ROC curve per label, pooled over folds; labels with a single class say so."""
    rows, cols = _grid(len(label_names))
    fig = new_figure(2.8 * cols, 2.6 * rows + 0.6)
    fig.suptitle(title)
    fig.subplots_adjust(left=0.08, right=0.97, bottom=0.08, top=1 - 0.6 / (2.6 * rows + 0.6), wspace=0.45, hspace=0.5)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    truth = pooled.y_true.astype(bool)
    known = np.ones(truth.shape, dtype=bool) if pooled.known is None else pooled.known  # unknown: left out
    for j, label in enumerate(label_names):
        ax = axes[j]
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.8)
        t, scores = truth[known[:, j], j], pooled.scores[known[:, j], j]
        positives = int(t.sum())
        if 0 < positives < t.shape[0]:
            fpr, tpr, _ = roc_curve(t, scores)
            auc = roc_auc_score(t, scores)
            ax.plot(fpr, tpr, linewidth=1.2)
            ax.set_title(f"{label} (AUC {auc:.3f}, n+={positives})", fontsize="small")
        else:
            ax.text(0.5, 0.5, "ROC undefined\n(one class only)", ha="center", va="center", fontsize="small")
            ax.set_title(label, fontsize="small")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xticks([0, 0.5, 1], ["0", "0.5", "1"], fontsize="x-small")  # fixed ticks: much faster to draw
        ax.set_yticks([0, 0.5, 1], ["0", "0.5", "1"], fontsize="x-small")
    for ax in axes[len(label_names) :]:
        ax.set_axis_off()
    return fig


def write_figures(result: EvaluationResult, layout: RunLayout) -> list[Path]:
    """Write every figure of ``result`` where the run layout puts them; returns the written paths."""
    figures: list[tuple[Path, Callable[[], Figure]]] = []
    for label in FIGURE_LABELS:
        if label in result.label_names and result.entries:
            figures.append((layout.bars_figure(label), partial(label_bar_figure, result, label)))
    for name, entry in result.entries.items():
        pooled = entry.pooled
        if pooled is None or pooled.y_true.shape[0] == 0:
            continue
        labels = result.label_names
        confusion_title, roc_title = f"{name}: confusion matrices (pooled)", f"{name}: ROC curves (pooled)"
        figures.append((layout.confusion_figure(name), partial(confusion_figure, pooled, labels, confusion_title)))
        figures.append((layout.roc_figure(name), partial(roc_figure, pooled, labels, roc_title)))
    return [save_figure(build(), path) for path, build in figures]
