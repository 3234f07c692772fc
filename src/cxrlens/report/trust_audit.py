"""Part of section 0 ("Can these numbers be trusted?"): the confounder audit of ``cxrlens audit``
(``run.layout.audit_metrics``).

Per metadata column (source, view, sex, age) one compact table, a row per label: how well the column alone
predicts the label (one-column AUROC, Cramér's V, confounded or not), the models' pooled AUROC and their AUROC
within each value of the column, the probe AUROC of each model (how well its features tell the values apart;
one number per column and model) and the TCAV scores (model -> value), then the audit's sentences. A label
whose pooled AUROC is high but falls to chance within each value is scored by where the image comes from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cxrlens.report.assets import AssetWriter
from cxrlens.report.common import as_dict, inside, missing, percent, read_part, strings, texts
from cxrlens.run.folder import Run
from cxrlens.text import fmt, number, slug

WHAT = "The confounder audit"
DIGITS = 2  # as in the audit's own sentences ("AUROC 1.00")


def audit_part(run: Run, assets: AssetWriter) -> dict[str, Any]:
    """The audit's flags, what it checked, one table per column, its notes and its figure."""
    command = f"cxrlens audit --run {run.root}"
    data = read_part(run, run.layout.audit_metrics, command)
    if isinstance(data, str):
        if data.startswith("not computed yet"):
            return missing(f"{WHAT} has not been run: run `{command}`.")
        return missing(f"{WHAT} cannot be read: {data}.")
    label_names = strings(data.get("label_names")) or list(run.label_names)
    return {
        "available": True,
        "checked": str(data.get("checked") or "") or None,
        "flags": strings(data.get("flags")),
        "notes": strings(data.get("notes")),
        "skipped": texts(data.get("skipped")),
        "images": data.get("images"),
        "patients": data.get("patients"),
        "models": strings(data.get("models")),
        "columns": [
            _column(str(name), as_dict(entry), label_names) for name, entry in as_dict(data.get("columns")).items()
        ],
        "figures": _figures(run, data, assets),
    }


def _column(name: str, entry: dict[str, Any], label_names: list[str]) -> dict[str, Any]:
    """One column: its values (with image counts), the probe per model, and a row per label."""
    images = as_dict(entry.get("images"))
    values = strings(entry.get("values")) or [str(v) for v in images]
    labels = as_dict(entry.get("labels"))
    order = [n for n in label_names if n in labels] + [str(n) for n in labels if n not in label_names]
    probe = entry.get("probe_auroc")
    tcav = entry.get("tcav")
    detail = as_dict(entry.get("tcav_detail"))
    tcav_models = [str(m) for m in as_dict(tcav)]
    return {
        "name": name,
        "noun": str(entry.get("noun") or name),
        "levels": [{"name": v, "images": images.get(v)} for v in values],
        "probe_ran": isinstance(probe, dict),
        "probe": [{"model": str(m), "auroc": fmt(a, DIGITS)} for m, a in as_dict(probe).items()],
        "tcav_ran": isinstance(tcav, dict),
        "tcav_models": tcav_models,
        "rows": [_label_row(label, as_dict(labels[label]), values, tcav, detail, tcav_models) for label in order],
    }


def _label_row(
    label: str,
    row: dict[str, Any],
    values: list[str],
    tcav: Any,
    detail: dict[str, Any],
    tcav_models: list[str],
) -> dict[str, Any]:
    within = as_dict(row.get("within_auroc"))
    notes = as_dict(row.get("within_notes"))
    top = row.get("top_value")
    sentences = [row.get(k) for k in ("sentence", "confounded_sentence", "behaviour_sentence")]
    return {
        "label": label,
        "positives": row.get("positives"),
        "top": None if top is None else f"{top} ({percent(row.get('share_of_positives'))} of positives)",
        "one_column": fmt(row.get("one_column_auroc"), DIGITS),
        "cramers_v": fmt(row.get("cramers_v"), DIGITS),
        "confounded": bool(row.get("confounded")),
        "pooled": fmt(row.get("pooled_auroc"), DIGITS),
        "behaviour_flag": bool(row.get("behaviour_flag")),
        "within": [
            {"text": fmt(within.get(v), DIGITS), "note": None if notes.get(v) is None else str(notes[v])}
            for v in values
        ],
        "by_model": [
            {
                "model": str(model),
                "pooled": fmt(as_dict(result).get("pooled_auroc"), DIGITS),
                "flag": bool(as_dict(result).get("behaviour_flag")),
            }
            for model, result in as_dict(row.get("by_model")).items()
        ],
        "tcav": [_tcav_cell(model, label, tcav, detail) for model in tcav_models],
        "sentences": [str(s) for s in dict.fromkeys(sentences) if s],
    }


def _tcav_cell(model: str, label: str, tcav: Any, detail: dict[str, Any]) -> dict[str, Any]:
    """A model's TCAV scores of one label, per value; significant scores above the random ones are marked."""
    scores = as_dict(tcav).get(model)
    scores = as_dict(scores).get(label) if isinstance(scores, dict) else None
    if not isinstance(scores, dict):
        return {"model": model, "scores": None}
    tests = as_dict(as_dict(as_dict(detail.get(model)).get("labels")).get(label))
    out = []
    for value, score in scores.items():
        test = as_dict(tests.get(value))
        random, p = number(test.get("random_score")), number(test.get("p_value"))
        rises = random is not None and (number(score) or 0.0) > random
        title = f"random directions {fmt(random, DIGITS)}; p {fmt(p, 3)}" if test else None
        out.append(
            {
                "value": str(value),
                "score": fmt(score, DIGITS),
                "significant": bool(test.get("significant")) and rises,
                "title": title,
            }
        )
    return {"model": model, "scores": out}


def _figures(run: Run, data: dict[str, Any], assets: AssetWriter) -> list[dict[str, Any]]:
    """The audit's figures: PNGs it lists (relative to its folder) and any PNG in its figures folder."""
    root = run.layout.audit_dir
    paths: list[Path] = [root / rel for rel in strings(data.get("files")) if rel.lower().endswith(".png")]
    folder = run.layout.audit_figures
    if folder.is_dir():
        paths += sorted(folder.glob("*.png"))
    found = {p.resolve(): p for p in paths if p.is_file() and inside(p, root)}
    return [{"name": p.name, "src": assets.copy(p, f"trust/audit/{slug(p.stem, 100)}.png")} for p in found.values()]
