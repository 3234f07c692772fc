"""Section 4 of the report: the explanation metrics of ``cxrlens evaluate-explanations`` (``run.layout.xai_metrics``).

Every metric of ``metrics`` becomes a table (models x methods, mean [95 % CI]) whatever its name, so metrics
added later appear without a change here; then the randomisation sanity checks, the rankings and verdict, and the
figures. The shortcut audit (attribution outside the lungs) is shown in section 0 (``trust_shortcut``).
"""

from __future__ import annotations

from typing import Any

from cxrlens.report.assets import AssetWriter
from cxrlens.report.common import as_dict, best_keys, fmt_values, missing, read_part, rows_of, text_of, texts
from cxrlens.run.folder import Run
from cxrlens.text import fmt, fmt_ci, number, slug

NO_POSITIVE = "no_positive_maps"  # maps without positive attribution: not evaluable for localisation


def xai_section(run: Run, assets: AssetWriter) -> dict[str, Any]:
    command = f"cxrlens evaluate-explanations --run {run.root}"
    data = read_part(run, run.layout.xai_metrics, command)
    if isinstance(data, str):
        return missing(f"{data} (after `cxrlens explain`)" if data.startswith("not computed yet") else data)
    sanity = as_dict(data.get("sanity"))
    ranking = as_dict(data.get("ranking"))
    return {
        "available": True,
        "n_maps": data.get("n_maps"),
        "no_positive": _no_positive(data.get(NO_POSITIVE)),
        "notes": [str(n) for n in data.get("notes") or []],
        "settings": texts(data.get("settings")),
        "metrics": [_metric_table(str(name), metric) for name, metric in as_dict(data.get("metrics")).items()],
        "sanity": {
            "threshold": sanity.get("threshold"),
            "rows": [
                {
                    "model": r.get("model"),
                    "method": r.get("method"),
                    "layers": text_of(r.get("layers")),
                    "spearman": fmt_values(r.get("spearman")),
                    "flagged": bool(r.get("flagged")),
                    "n": r.get("n"),
                }
                for r in rows_of(sanity.get("rows"))
            ],
        },
        "ranking": {
            "methods": [
                {"name": r.get("method"), "score": fmt(r.get("score")), "rank": r.get("rank")}
                for r in rows_of(ranking.get("methods"))
            ],
            "models": [
                {"name": r.get("model"), "score": fmt(r.get("score")), "rank": r.get("rank")}
                for r in rows_of(ranking.get("models"))
            ],
            "verdict": ranking.get("verdict"),
        },
        "figures": _figures(run, assets),
    }


def _order(values: list[Any]) -> list[str]:
    return list(dict.fromkeys(str(v) for v in values if v is not None))


def _metric_table(name: str, metric: Any) -> dict[str, Any]:
    """One metric as models x methods; the best method of each model is marked when the metric has a direction."""
    metric = as_dict(metric)
    rows = rows_of(metric.get("rows"))
    models = _order([r.get("model") for r in rows])
    methods = _order([r.get("method") for r in rows])
    higher = metric.get("higher_is_better")
    by_key = {(str(r.get("model")), str(r.get("method"))): r for r in rows}
    body = []
    for model in models:
        means = {m: number(by_key[(model, m)].get("mean")) for m in methods if (model, m) in by_key}
        if higher is False:
            means = {m: (None if v is None else -v) for m, v in means.items()}
        winners = best_keys(means) if higher is not None else set()
        cells = []
        for method in methods:
            row = by_key.get((model, method))
            if row is None:
                cells.append({"text": "not computed", "n": None, "best": False, "missing": True})
                continue
            text = fmt_ci(row.get("mean"), row.get("ci_low"), row.get("ci_high"))
            cells.append({"text": text, "n": row.get("n"), "best": method in winners, "missing": False})
        body.append({"model": model, "cells": cells})
    direction = {True: "higher is better", False: "lower is better"}.get(higher, "no preferred direction")
    return {
        "name": name,
        "description": metric.get("description"),
        "direction": direction,
        "methods": methods,
        "rows": body,
    }


def _no_positive(value: Any) -> dict[str, Any] | None:
    """Maps without positive attribution: ``{model: {method: count}}`` (as ``cxrlens evaluate-explanations``
    writes it), or a flat ``{name: count}``, or one count; None when absent or of another shape."""
    if _count(value):
        return {"total": value, "methods": [], "rows": []}
    if not isinstance(value, dict):
        return None
    if all(_count(v) for v in value.values()):
        value = {"": value}  # one row without a model name
    table = {str(model): {str(k): v for k, v in as_dict(row).items() if _count(v)} for model, row in value.items()}
    table = {model: row for model, row in table.items() if row}
    if not table:
        return None
    methods = _order([method for row in table.values() for method in row])
    rows = [{"model": model, "counts": [row.get(method) for method in methods]} for model, row in table.items()]
    return {"total": sum(sum(row.values()) for row in table.values()), "methods": methods, "rows": rows}


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _figures(run: Run, assets: AssetWriter) -> list[dict[str, Any]]:
    folder = run.layout.xai_figures
    if not folder.is_dir():
        return []
    return [
        {"name": path.name, "src": assets.copy(path, f"xai/{slug(path.stem, 100)}.png")}
        for path in sorted(folder.glob("*.png"))
    ]
