"""Read the parts of a run folder into plain dictionaries for the report template.

Each ``*_section`` function returns a dict with ``available`` (bool) and, when the part is missing, ``missing``:
the sentence the report shows (naming the command that computes it). Text values are returned as they are in
the data files; the template escapes them (Jinja2 autoescape) and the embedded JSON is escaped separately.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from cxrlens.errors import DataError
from cxrlens.evaluate.tables import format_mean_std

SUBSET_ORDER = ("train", "val", "test")
TABLE2_COLUMNS = (
    ("precision", "micro", "precision"),
    ("recall", "micro", "recall"),
    ("F1", "micro", "f1"),
    ("specificity", "micro", "specificity"),
    ("macro F1", "macro", "f1"),
    ("F1 (all labels)", "micro_all", "f1"),
)


class DamagedFile(Exception):
    """A run-folder file exists but cannot be read; the report says so in the section."""


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DamagedFile(f"{path.name} is damaged ({err}); recompute it") from None


def number(value: Any) -> float | None:
    """A finite float, or None (null, NaN, text)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def fmt(value: Any, digits: int = 3) -> str:
    out = number(value)
    return "n/a" if out is None else f"{out:.{digits}f}"


def fmt_ci(mean: Any, low: Any, high: Any, digits: int = 3) -> str:
    if number(mean) is None:
        return "n/a"
    if number(low) is None or number(high) is None:
        return fmt(mean, digits)
    return f"{fmt(mean, digits)} [{fmt(low, digits)}, {fmt(high, digits)}]"


def missing(text: str) -> dict[str, Any]:
    return {"available": False, "missing": text}


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one (a part written by an older or newer cxrlens)."""
    return value if isinstance(value, dict) else {}


# -- 1. data and splits ------------------------------------------------------------------------------------


def _csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    from cxrlens.data.sources import read_csv_rows

    header, rows = read_csv_rows(path)
    return header, [row for _, row in rows]


def dataset_section(root: Path, info: dict[str, Any], min_images: int | None) -> dict[str, Any]:
    label_names = list(info.get("label_names") or [])
    out: dict[str, Any] = {
        "available": True,
        "name": info.get("name"),
        "sources": list(info.get("sources") or []),
        "data_root": info.get("data_root"),
        "images_in_data": info.get("images"),
        "label_names": label_names,
        "rare": [{"name": str(k), "count": v} for k, v in (info.get("rare_labels") or {}).items()],
        "min_images": min_images,
        "problems": [],
    }
    labels_csv = root / "labels.csv"
    if labels_csv.is_file():
        try:
            header, rows = _csv(labels_csv)
        except DataError as err:
            out["problems"].append(str(err))
            rows, header = [], []
        names = [h for h in header if h not in ("filename", "patient_id")] or label_names
        total = len(rows)
        counts = {n: sum(1 for r in rows if r.get(n) == "1") for n in names}
        out["images"] = total
        out["patients"] = len({r.get("patient_id", "") for r in rows})
        out["labels"] = [
            {"name": n, "count": counts[n], "share": f"{100.0 * counts[n] / total:.1f} %" if total else "n/a"}
            for n in names
        ]
        out["truth"] = {r["filename"]: [n for n in names if r.get(n) == "1"] for r in rows if "filename" in r}
    else:
        out["labels_missing"] = "not computed yet: run `cxrlens cv` (writes labels.csv)"
        out["truth"] = {}
    splits_csv = root / "splits.csv"
    if splits_csv.is_file():
        try:
            _, rows = _csv(splits_csv)
        except DataError as err:
            out["problems"].append(str(err))
            rows = []
        cells: dict[tuple[str, str], set[str]] = defaultdict(set)
        patients: dict[tuple[str, str], set[str]] = defaultdict(set)
        for row in rows:
            key = (row.get("fold", ""), row.get("subset", ""))
            cells[key].add(row.get("filename", ""))
            patients[key].add(row.get("patient_id", ""))
        folds = sorted({f for f, _ in cells}, key=lambda f: (not f.isdigit(), int(f) if f.isdigit() else 0, f))
        subsets = [s for s in SUBSET_ORDER if any((f, s) in cells for f in folds)]
        subsets += sorted({s for _, s in cells} - set(subsets))
        out["subsets"] = subsets
        out["folds"] = [
            {
                "fold": fold,
                "cells": [
                    {"images": len(cells.get((fold, s), ())), "patients": len(patients.get((fold, s), ()))}
                    for s in subsets
                ],
            }
            for fold in folds
        ]
        out["fold_of_test"] = {r.get("filename", ""): r.get("fold", "") for r in rows if r.get("subset") == "test"}
    else:
        out["splits_missing"] = "not computed yet: run `cxrlens cv` (writes splits.csv)"
        out["fold_of_test"] = {}
    return out


# -- 2. evaluation -------------------------------------------------------------------------------------------


def _best(values: dict[str, float | None]) -> set[str]:
    """Keys with the largest value; none when every value ties (nothing stands out)."""
    finite = {k: v for k, v in values.items() if v is not None}
    if len(finite) < 2:
        return set()
    top = max(finite.values())
    best = {k for k, v in finite.items() if v >= top - 1e-12}
    return set() if len(best) == len(finite) else best


def metrics_section(root: Path) -> dict[str, Any]:
    path = root / "evaluation" / "metrics.json"
    if not path.is_file():
        return missing(f"not computed yet: run `cxrlens evaluate --run {root}`")
    try:
        data = read_json(path)
    except DamagedFile as err:
        return missing(f"{err}: run `cxrlens evaluate --run {root}`")
    entries: dict[str, Any] = data.get("entries") or {}
    label_names = list(data.get("label_names") or [])
    threshold = data.get("threshold") or {}
    rows = []
    column_values: dict[str, dict[str, float | None]] = defaultdict(dict)
    for name, entry in entries.items():
        summary = entry.get("summary") or {}
        cells: list[dict[str, Any]] = []
        for title, group, metric in TABLE2_COLUMNS:
            stat = (summary.get(group) or {}).get(metric) or {}
            cells.append({"column": title, "text": format_mean_std(_finite_stat(stat))})
            column_values[title][name] = number(stat.get("mean"))
        hierarchy = summary.get("hierarchy_consistency") or {}
        cells.append({"column": "hierarchy consistency", "text": format_mean_std(_finite_stat(hierarchy))})
        column_values["hierarchy consistency"][name] = number(hierarchy.get("mean"))
        rows.append(
            {
                "name": name,
                "kind": entry.get("kind", ""),
                "members": list(entry.get("members") or []),
                "n_folds": summary.get("n_folds", len(entry.get("folds") or [])),
                "cells": cells,
                "non_evaluable": list(summary.get("non_evaluable") or []),
                "micro_f1": number(((summary.get("micro") or {}).get("f1") or {}).get("mean")),
            }
        )
    best = {column: _best(values) for column, values in column_values.items()}
    for row in rows:
        for cell in row["cells"]:
            cell["best"] = len(rows) > 1 and row["name"] in best.get(cell["column"], set())

    per_label: list[dict[str, Any]] = []
    for label in label_names:
        label_cells: list[dict[str, Any]] = []
        values: dict[str, float | None] = {}
        for name, entry in entries.items():
            stats = ((entry.get("summary") or {}).get("per_label") or {}).get(label) or {}
            f1 = stats.get("f1") or {}
            auc = stats.get("roc_auc") or {}
            values[name] = number(f1.get("mean"))
            label_cells.append(
                {
                    "name": name,
                    "f1": format_mean_std(_finite_stat(f1)),
                    "auc": format_mean_std(_finite_stat(auc)),
                    "evaluable": bool(stats.get("evaluable", False)),
                    "evaluable_folds": stats.get("evaluable_folds"),
                    "support": stats.get("support"),
                }
            )
        winners = _best(values) if len(entries) > 1 else set()
        for cell in label_cells:
            cell["best"] = cell["name"] in winners
        support = next((c["support"] for c in label_cells if c["support"] is not None), None)
        per_label.append({"label": label, "support": support, "cells": label_cells})

    figures_dir = root / "evaluation" / "figures"
    return {
        "available": True,
        "columns": [c[0] for c in TABLE2_COLUMNS] + ["hierarchy consistency"],
        "rows": rows,
        "per_label": per_label,
        "entry_names": list(entries),
        "members": [str(m) for m in data.get("ensemble_members") or []],
        "label_names": label_names,
        "threshold": _threshold_text(threshold),
        "min_support": data.get("min_support"),
        "notes": [str(n) for n in data.get("notes") or []],
        "conventions": {str(k): str(v) for k, v in (data.get("conventions") or {}).items()},
        "comparison": _comparison(rows),
        "figures_dir": figures_dir if figures_dir.is_dir() else None,
    }


def _finite_stat(stat: dict[str, Any]) -> dict[str, Any]:
    return {"mean": number(stat.get("mean")), "std": number(stat.get("std"))}


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


# -- 4. explanation metrics ---------------------------------------------------------------------------------


def _rows(value: Any) -> list[dict[str, Any]]:
    return [r for r in value if isinstance(r, dict)] if isinstance(value, list) else []


def _order(values: list[Any]) -> list[str]:
    return list(dict.fromkeys(str(v) for v in values if v is not None))


def xai_section(root: Path) -> dict[str, Any]:
    path = root / "xai" / "metrics.json"
    if not path.is_file():
        return missing(f"not computed yet: run `cxrlens evaluate-explanations --run {root}` (after `cxrlens explain`)")
    try:
        data = read_json(path)
    except DamagedFile as err:
        return missing(f"{err}: run `cxrlens evaluate-explanations --run {root}`")
    if not isinstance(data, dict):
        return missing(f"{path.name} is not a metrics object; rerun `cxrlens evaluate-explanations --run {root}`")
    tables = []
    for name, metric in (data.get("metrics") or {}).items():
        if not isinstance(metric, dict):
            continue
        rows = _rows(metric.get("rows"))
        models = _order([r.get("model") for r in rows])
        methods = _order([r.get("method") for r in rows])
        higher = metric.get("higher_is_better")
        by_key = {(str(r.get("model")), str(r.get("method"))): r for r in rows}
        body = []
        for model in models:
            means = {m: number(by_key[(model, m)].get("mean")) for m in methods if (model, m) in by_key}
            if higher is False:
                means = {m: (None if v is None else -v) for m, v in means.items()}
            winners = _best(means) if higher is not None and len(means) > 1 else set()
            cells = []
            for method in methods:
                row = by_key.get((model, method))
                if row is None:
                    cells.append({"text": "not computed", "n": None, "best": False, "missing": True})
                    continue
                text = fmt_ci(row.get("mean"), row.get("ci_low"), row.get("ci_high"))
                cells.append({"text": text, "n": row.get("n"), "best": method in winners, "missing": False})
            body.append({"model": model, "cells": cells})
        tables.append(
            {
                "name": str(name),
                "description": metric.get("description"),
                "direction": "higher is better"
                if higher is True
                else ("lower is better" if higher is False else "no preferred direction"),
                "methods": methods,
                "rows": body,
            }
        )
    sanity = as_dict(data.get("sanity"))
    ranking = as_dict(data.get("ranking"))
    shortcut = as_dict(data.get("shortcut"))
    settings = data.get("settings")
    return {
        "available": True,
        "n_maps": data.get("n_maps"),
        "notes": [str(n) for n in data.get("notes") or []],
        "settings": {str(k): _text(v) for k, v in settings.items()} if isinstance(settings, dict) else {},
        "metrics": tables,
        "sanity": {
            "threshold": sanity.get("threshold"),
            "rows": [
                {
                    "model": r.get("model"),
                    "method": r.get("method"),
                    "layers": _text(r.get("layers")),
                    "spearman": fmt(r.get("spearman")),
                    "flagged": bool(r.get("flagged")),
                    "n": r.get("n"),
                }
                for r in _rows(sanity.get("rows"))
            ],
        },
        "ranking": {
            "methods": [
                {"name": r.get("method"), "score": fmt(r.get("score")), "rank": r.get("rank")}
                for r in _rows(ranking.get("methods"))
            ],
            "models": [
                {"name": r.get("model"), "score": fmt(r.get("score")), "rank": r.get("rank")}
                for r in _rows(ranking.get("models"))
            ],
            "verdict": ranking.get("verdict"),
        },
        "shortcut": {
            "rows": [
                {
                    "model": r.get("model"),
                    "outside": fmt_ci(r.get("outside_lung_share"), r.get("ci_low"), r.get("ci_high")),
                    "border": fmt(r.get("border_share")),
                    "padding": fmt(r.get("padding_share")),
                    "n": r.get("n"),
                }
                for r in _rows(shortcut.get("rows"))
            ],
            "top_images": [
                {
                    "model": r.get("model"),
                    "image": r.get("image"),
                    "label": r.get("label"),
                    "method": r.get("method"),
                    "outside": fmt(r.get("outside_lung_share")),
                    "overlay": r.get("overlay"),
                }
                for r in _rows(shortcut.get("top_images"))
            ],
        },
    }


def _text(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


# -- 5. neuron activation profiles ---------------------------------------------------------------------------


def nap_runs(root: Path) -> list[tuple[Path, dict[str, Any] | str]]:
    """(folder, summary or the reason it cannot be read) of every ``nap/<model>/fold<k>/summary.json``."""
    nap = root / "nap"
    out: list[tuple[Path, dict[str, Any] | str]] = []
    if not nap.is_dir():
        return out
    for summary in sorted(nap.glob("*/fold*/summary.json")):
        try:
            data = read_json(summary)
        except DamagedFile as err:
            out.append((summary.parent, str(err)))
            continue
        out.append((summary.parent, data if isinstance(data, dict) else f"{summary.name} is not an object"))
    return out


# -- 6. provenance -------------------------------------------------------------------------------------------


def provenance_section(root: Path, info: dict[str, Any]) -> dict[str, Any]:
    import cxrlens

    config = root / "config.yaml"
    environment = info.get("environment") or {}
    return {
        "available": True,
        "name": info.get("name"),
        "created": info.get("created"),
        "seed": info.get("seed"),
        "splits_sha256": info.get("splits_sha256"),
        "config_hash": info.get("config_hash"),
        "run_version": environment.get("cxrlens") if isinstance(environment, dict) else None,
        "report_version": cxrlens.__version__,
        "environment": {str(k): _text(v) for k, v in environment.items()} if isinstance(environment, dict) else {},
        "commands": [str(c) for c in info.get("commands") or []],
        "config_yaml": config.read_text(encoding="utf-8") if config.is_file() else None,
        "preprocess": {str(k): _text(v) for k, v in (info.get("preprocess") or {}).items()},
        "sources": [str(s) for s in info.get("sources") or []],
        "data_root": info.get("data_root"),
        "run_dir": str(root.resolve()),
    }
