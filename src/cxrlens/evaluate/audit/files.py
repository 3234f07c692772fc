"""What ``cxrlens audit`` writes besides ``audit/metrics.json``: markdown and CSV tables, one figure.

``tables/summary.md`` (the flags, what was checked, and one row per column and label), ``tables/label_checks.csv``
(column x label), ``tables/values.csv`` (column x label x value: images, positives, within-value AUROC),
``tables/probe.csv`` (column x model x fold), ``tables/tcav.csv`` (column x model x label x value) and
``figures/confounding.png`` (the one-column AUROC of every label and column, confounded cells marked).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cxrlens.evaluate.audit.sentences import percent
from cxrlens.figures import new_figure, save_figure
from cxrlens.fileio import atomic_write_text, csv_text
from cxrlens.run import RunLayout
from cxrlens.text import fmt


def _within_range(within: dict[str, float | None]) -> str:
    measured = [v for v in within.values() if v is not None]
    if not measured:
        return "not evaluable"
    low, high = min(measured), max(measured)
    return fmt(low, 2) if low == high else f"{fmt(low, 2)}–{fmt(high, 2)}"


def label_table(metrics: dict[str, Any]) -> str:
    """One row per column and label: the data, the behaviour, the probe (markdown)."""
    lines = [
        "| column | label | positives | most positives | one-column AUROC | Cramér's V | confounded "
        "| pooled AUROC | within-value AUROC | behaviour flag |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for column, entry in metrics["columns"].items():
        for label, row in entry["labels"].items():
            top = row["top_value"]
            share = f"{top} ({percent(row['share_of_positives'])})" if top is not None else "–"
            lines.append(
                f"| {column} | {label} | {row['positives']} | {share} | {fmt(row['one_column_auroc'], 2)} "
                f"| {fmt(row['cramers_v'], 2)} | {'yes' if row['confounded'] else 'no'} "
                f"| {fmt(row['pooled_auroc'], 2)} | {_within_range(row['within_auroc'])} "
                f"| {'yes' if row['behaviour_flag'] else 'no'} |"
            )
    return "\n".join(lines)


def probe_table(metrics: dict[str, Any]) -> str:
    rows = [(c, m, a) for c, e in metrics["columns"].items() for m, a in (e["probe_auroc"] or {}).items()]
    if not rows:
        return ""
    lines = ["| column | model | probe AUROC |", "|---|---|---|"]
    lines += [f"| {column} | {model} | {fmt(auroc, 2)} |" for column, model, auroc in rows]
    return "\n".join(lines)


def flags_text(metrics: dict[str, Any]) -> str:
    flags = metrics["flags"]
    lines = ["Flags:", *(f"- {flag}" for flag in flags)] if flags else ["Nothing flagged."]
    return "\n".join([*lines, "", metrics["checked"]])


def summary_markdown(metrics: dict[str, Any]) -> str:
    """The whole summary: flags, what was checked, the label table, the probe table, the notes."""
    parts = ["# Confounder audit", "", flags_text(metrics), "", label_table(metrics)]
    probes = probe_table(metrics)
    if probes:
        parts += ["", probes]
    if metrics["notes"]:  # skipped columns are among them
        parts += ["", "Notes:", *(f"- {note}" for note in metrics["notes"])]
    return "\n".join(parts) + "\n"


def labels_csv(metrics: dict[str, Any]) -> str:
    header = ["column", "label", "positives", "top_value", "share_of_positives", "share_of_images",
              "one_column_auroc", "cramers_v", "confounded", "pooled_auroc", "behaviour_flag"]  # fmt: skip
    rows = [
        [column, label, *(row[key] for key in header[2:])]
        for column, entry in metrics["columns"].items()
        for label, row in entry["labels"].items()
    ]
    return csv_text(header, rows)


def values_csv(metrics: dict[str, Any]) -> str:
    header = ["column", "label", "value", "images", "positives", "prevalence", "within_auroc"]
    rows = [
        [
            column,
            label,
            value,
            entry["images"][value],
            row["counts"][value],
            row["prevalence"][value],
            row["within_auroc"].get(value),
        ]
        for column, entry in metrics["columns"].items()
        for label, row in entry["labels"].items()
        for value in entry["values"]
    ]
    return csv_text(header, rows)


def probe_csv(metrics: dict[str, Any]) -> str:
    header = ["column", "model", "fold", "auroc", "images", "cv_folds", "note"]
    rows = [
        [column, model, fold, result["auroc"], result["images"], result["cv_folds"], result["note"]]
        for column, entry in metrics["columns"].items()
        for model, detail in (entry["probe"] or {}).items()
        for fold, result in detail["folds"].items()
    ]
    return csv_text(header, rows)


def tcav_csv(metrics: dict[str, Any]) -> str:
    header = ["column", "model", "fold", "layer", "label", "value", "score", "random_score", "p_value", "significant"]
    rows = []
    for column, entry in metrics["columns"].items():
        for model, detail in (entry["tcav_detail"] or {}).items():
            for label, values in detail["labels"].items():
                for value, score in (values or {}).items():
                    rows.append([column, model, detail["fold"], detail["layer"], label, value, score["score"],
                                 score["random_score"], score["p_value"], score["significant"]])  # fmt: skip
    return csv_text(header, rows)


def confounding_figure(metrics: dict[str, Any], path: Path) -> Path | None:
    """Heatmap of the one-column AUROC: labels x columns, confounded cells outlined."""
    columns = list(metrics["columns"])
    labels = list(metrics["label_names"])
    if not columns:
        return None
    values = np.array(
        [[metrics["columns"][c]["labels"][label]["one_column_auroc"] for c in columns] for label in labels],
        dtype=np.float64,
    )
    fig = new_figure(1.6 + 1.1 * len(columns), 1.2 + 0.35 * len(labels), constrained=True)
    ax = fig.add_subplot()
    image = ax.imshow(np.nan_to_num(values, nan=0.5), vmin=0.5, vmax=1.0, cmap="Reds", aspect="auto")
    for i, label in enumerate(labels):
        for j, column in enumerate(columns):
            row = metrics["columns"][column]["labels"][label]
            text = fmt(values[i, j], 2) + (" *" if row["confounded"] else "")
            ax.text(j, i, text, ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(columns)), columns)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_title("How well the column alone predicts the label\n(one-column AUROC; * confounded)", fontsize=8)
    fig.colorbar(image, ax=ax, shrink=0.8)
    return save_figure(fig, path)


def write_files(metrics: dict[str, Any], layout: RunLayout) -> list[str]:
    """Write the tables and the figure; returns their paths relative to the audit folder."""
    tables = layout.audit_tables
    written = []
    for name, text in (
        ("summary.md", summary_markdown(metrics)),
        ("label_checks.csv", labels_csv(metrics)),
        ("values.csv", values_csv(metrics)),
        ("probe.csv", probe_csv(metrics)),
        ("tcav.csv", tcav_csv(metrics)),
    ):
        atomic_write_text(tables / name, text)
        written.append(tables / name)
    figure = confounding_figure(metrics, layout.audit_figures / "confounding.png")
    if figure is not None:
        written.append(figure)
    return [p.relative_to(layout.audit_dir).as_posix() for p in written]
