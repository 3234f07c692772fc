"""Section 2 of the report: Table 2 (models and ensembles), per-label F1 and ROC-AUC, and the evaluation's figures.

Read from the result of ``cxrlens evaluate`` (``run.layout.evaluation_metrics``): per entry a ``summary`` of
``{"mean", "std", "n"}`` stats over folds, where ``n`` counts the folds in which the value is defined. Table 2 is
the paper's (Chatterjee et al., J. Imaging 2024): micro precision, recall, F1 and specificity, macro F1.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from cxrlens.report.assets import AssetWriter
from cxrlens.report.common import as_dict, best_keys, missing, read_part, relative, stat_text
from cxrlens.run.folder import Run
from cxrlens.text import fmt, number, slug

TABLE2_COLUMNS = (
    ("precision", "micro", "precision"),
    ("recall", "micro", "recall"),
    ("F1", "micro", "f1"),
    ("specificity", "micro", "specificity"),
    ("macro F1", "macro", "f1"),
    ("F1 (all labels)", "micro_all", "f1"),
)
HIERARCHY = "hierarchy consistency"


def metrics_section(run: Run, assets: AssetWriter) -> dict[str, Any]:
    """Table 2, the per-label table, the comparison of ensembles and single models, and the figures."""
    data = read_part(run, run.layout.evaluation_metrics, f"cxrlens evaluate --run {run.root}")
    if isinstance(data, str):
        return missing(data)
    entries = {str(name): as_dict(entry) for name, entry in as_dict(data.get("entries")).items()}
    label_names = [str(n) for n in data.get("label_names") or run.label_names]
    rows = _table2(entries)
    section = {
        "available": True,
        "columns": [c[0] for c in TABLE2_COLUMNS] + [HIERARCHY],
        "rows": rows,
        "per_label": _per_label(entries, label_names),
        "entry_names": list(entries),
        "members": [str(m) for m in data.get("ensemble_members") or []],
        "label_names": label_names,
        "threshold": _threshold_text(data.get("threshold")),
        "min_support": data.get("min_support"),
        "notes": [str(n) for n in data.get("notes") or []],
        "conventions": {str(k): str(v) for k, v in as_dict(data.get("conventions")).items()},
        "comparison": _comparison(rows),
        "figures_dir": relative(run, run.layout.evaluation_figures),
    }
    section.update(_figures(run, label_names, list(entries), assets))
    return section


def _n_folds(entry: dict[str, Any]) -> Any:
    summary = as_dict(entry.get("summary"))
    return summary.get("n_folds", len(entry.get("folds") or []))


def _table2(entries: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    column_values: dict[str, dict[str, float | None]] = defaultdict(dict)
    for name, entry in entries.items():
        summary = as_dict(entry.get("summary"))
        n_folds = _n_folds(entry)
        stats = [(title, as_dict(as_dict(summary.get(group)).get(metric))) for title, group, metric in TABLE2_COLUMNS]
        stats.append((HIERARCHY, as_dict(summary.get("hierarchy_consistency"))))
        cells = []
        for title, stat in stats:
            cells.append({"column": title, "text": stat_text(stat, n_folds)})
            column_values[title][name] = number(stat.get("mean"))
        rows.append(
            {
                "name": name,
                "kind": str(entry.get("kind", "")),
                "members": [str(m) for m in entry.get("members") or []],
                "n_folds": n_folds,
                "cells": cells,
                "non_evaluable": [str(n) for n in summary.get("non_evaluable") or []],
                "micro_f1": column_values["F1"][name],
            }
        )
    best = {column: best_keys(values) for column, values in column_values.items()}
    for row in rows:
        for cell in row["cells"]:
            cell["best"] = len(rows) > 1 and row["name"] in best.get(cell["column"], set())
    return rows


def _per_label(entries: dict[str, dict[str, Any]], label_names: list[str]) -> list[dict[str, Any]]:
    """Per label and entry: F1 and ROC-AUC over the folds where each is defined (fewer folds are shown)."""
    out = []
    for label in label_names:
        cells: list[dict[str, Any]] = []
        values: dict[str, float | None] = {}
        for name, entry in entries.items():
            stats = as_dict(as_dict(as_dict(entry.get("summary")).get("per_label")).get(label))
            n_folds = _n_folds(entry)
            f1 = as_dict(stats.get("f1"))
            values[name] = number(f1.get("mean"))
            cells.append(
                {
                    "name": name,
                    "f1": stat_text(f1, n_folds),
                    "auc": stat_text(stats.get("roc_auc"), n_folds),
                    "evaluable": bool(stats.get("evaluable", False)),
                    "evaluable_folds": stats.get("evaluable_folds"),
                    "support": stats.get("support"),
                }
            )
        winners = best_keys(values) if len(entries) > 1 else set()
        for cell in cells:
            cell["best"] = cell["name"] in winners
        support = next((c["support"] for c in cells if c["support"] is not None), None)
        out.append({"label": label, "support": support, "cells": cells})
    return out


def _threshold_text(threshold: Any) -> str:
    if not isinstance(threshold, dict):
        return str(threshold)
    if threshold.get("mode") == "tuned":
        return f"tuned per fold and label on validation images (fallback {threshold.get('value')})"
    return f"{threshold.get('value')} for every label"


def _comparison(rows: list[dict[str, Any]]) -> dict[str, Any]:
    singles = [r for r in rows if r["kind"] == "model" and r["micro_f1"] is not None]
    ensembles = [r for r in rows if r["kind"] != "model" and r["micro_f1"] is not None]
    best_single = max(singles, key=lambda r: r["micro_f1"], default=None)
    best_ensemble = max(ensembles, key=lambda r: r["micro_f1"], default=None)
    out: dict[str, Any] = {
        "best_single": best_single and {"name": best_single["name"], "f1": fmt(best_single["micro_f1"])},
        "best_ensemble": best_ensemble and {"name": best_ensemble["name"], "f1": fmt(best_ensemble["micro_f1"])},
        "text": None,
    }
    if best_single and best_ensemble:
        gain = best_ensemble["micro_f1"] - best_single["micro_f1"]
        verdict = "better than" if gain > 1e-9 else ("as good as" if abs(gain) <= 1e-9 else "worse than")
        out["text"] = (
            f"The best ensemble ({best_ensemble['name']}, micro F1 {fmt(best_ensemble['micro_f1'])}) is {verdict} "
            f"the best single model ({best_single['name']}, {fmt(best_single['micro_f1'])}): "
            f"difference {gain:+.3f}."
        )
    elif best_single:
        out["text"] = (
            f"No ensemble evaluated (they need at least two models); best single model: {best_single['name']} "
            f"(micro F1 {fmt(best_single['micro_f1'])})."
        )
    return out


def _figures(run: Run, label_names: list[str], entry_names: list[str], assets: AssetWriter) -> dict[str, Any]:
    """Per-label bars, per-entry confusion matrices and ROC curves (named by the layout), then any other PNG."""
    layout = run.layout
    used: set[str] = set()

    def copy(path: Path) -> str | None:
        if not path.is_file():
            return None
        used.add(path.name)
        return assets.copy(path, f"evaluation/{slug(path.stem, 100)}.png")

    bars = []
    for label in label_names:
        src = copy(layout.bars_figure(label))
        if src:
            bars.append({"label": label, "src": src})
    per_entry = []
    for entry in entry_names:
        confusion, roc = copy(layout.confusion_figure(entry)), copy(layout.roc_figure(entry))
        if confusion or roc:
            per_entry.append({"name": entry, "confusion": confusion, "roc": roc})
    folder = layout.evaluation_figures
    others = sorted(p for p in folder.glob("*.png") if p.name not in used) if folder.is_dir() else []
    other_figures = [{"name": p.name, "src": copy(p)} for p in others]
    return {"bars": bars, "per_entry": per_entry, "other_figures": other_figures}
