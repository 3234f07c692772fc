"""Table 2 (micro metrics, mean ± std over folds) as markdown and CSV, and the per-label CSV."""

from __future__ import annotations

from typing import Any

from cxrlens.evaluate.metrics import METRIC_NAMES, PER_LABEL_METRICS, STD_DDOF
from cxrlens.evaluate.result import EvaluationResult
from cxrlens.fileio import csv_text
from cxrlens.text import fmt_mean_std

TABLE2_HEADER = ("model", "folds", "precision", "recall", "F1", "specificity", "macro F1", "F1 (all labels)")


def _threshold_text(result: EvaluationResult) -> str:
    if result.threshold_mode == "tuned":
        return "per label, tuned for F1 on each fold's validation images"
    return f"{result.threshold:g} for every label"


def markdown_table(result: EvaluationResult) -> str:
    """Table 2: one row per model and ensemble (micro P/R/F1/specificity over evaluable labels, macro F1)."""
    lines = [
        "| " + " | ".join(TABLE2_HEADER) + " |",
        "|" + "---|" * len(TABLE2_HEADER),
    ]
    for name, entry in result.entries.items():
        s = entry.summary
        cells = [
            name,
            str(s["n_folds"]),
            *(fmt_mean_std(s["micro"][m]) for m in METRIC_NAMES),
            fmt_mean_std(s["macro"]["f1"]),
            fmt_mean_std(s["micro_all"]["f1"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    non_evaluable = sorted(
        {label for entry in result.entries.values() for label in entry.summary["non_evaluable"]},
        key=result.label_names.index,
    )
    lines.append("")
    lines.append(
        f"Micro averages over the labels evaluable in each fold (≥ {result.min_support} positive and ≥ 1 negative "
        f"test images); mean ± std over folds (ddof={STD_DDOF}; ± n/a: fewer than two folds); "
        f"threshold {_threshold_text(result)}. "
        "F1 (all labels) pools every label, as in the paper's 14-label setting."
    )
    if non_evaluable:
        lines.append(f"Not evaluable in every fold (excluded where not evaluable): {', '.join(non_evaluable)}.")
    return "\n".join(lines) + "\n"


def table2_csv(result: EvaluationResult) -> str:
    """One row per model and ensemble: mean and std of the micro, macro and all-label micro metrics."""
    groups = (("micro", METRIC_NAMES), ("macro", PER_LABEL_METRICS), ("micro_all", METRIC_NAMES))
    header = ["model", "kind", "n_folds"]
    for group, metrics in groups:
        for m in metrics:
            header += [f"{group}_{m}_mean", f"{group}_{m}_std"]
    header += ["hierarchy_consistency_mean", "hierarchy_consistency_std", "non_evaluable"]
    rows = []
    for name, entry in result.entries.items():
        s = entry.summary
        row: list[Any] = [name, entry.kind, s["n_folds"]]
        for group, metrics in groups:
            for m in metrics:
                row += [s[group][m]["mean"], s[group][m]["std"]]
        row += [s["hierarchy_consistency"]["mean"], s["hierarchy_consistency"]["std"], ";".join(s["non_evaluable"])]
        rows.append(row)
    return csv_text(header, rows)


def per_label_csv(result: EvaluationResult) -> str:
    """One row per (model or ensemble, label): mean/std of each metric over the folds where it is defined and
    their number (``<metric>_folds``), support summed over folds, evaluable."""
    header = ["model", "label", "support", "negatives", "evaluable", "evaluable_folds", "n_folds"]
    for m in PER_LABEL_METRICS:
        header += [f"{m}_mean", f"{m}_std", f"{m}_folds"]
    rows = []
    for name, entry in result.entries.items():
        s = entry.summary
        for label in result.label_names:
            stats = s["per_label"][label]
            row: list[Any] = [
                name,
                label,
                stats["support"],
                stats["negatives"],
                stats["evaluable"],
                stats["evaluable_folds"],
                s["n_folds"],
            ]
            for m in PER_LABEL_METRICS:
                row += [stats[m]["mean"], stats[m]["std"], stats[m]["n"]]
            rows.append(row)
    return csv_text(header, rows)
