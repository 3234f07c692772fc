"""Part of section 0 ("Can these numbers be trusted?"): the external validations of ``cxrlens evaluate-external``,
one folder per set (``run.layout.external_sets()``), each beside the run's in-domain numbers.

Per set: a table of entries (micro precision, recall, F1 and specificity on the external set [95 % CI] beside the
same numbers on the run's own out-of-fold test images, the change in F1, calibration error), a per-label table of
the headline entry (sensitivity, specificity, AUROC external [CI] vs in-domain, the change), the labels that are
not evaluable there, the set's notes, its figures, a per-source breakdown, and the most confident errors with
their explanation maps.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from cxrlens.errors import RunError
from cxrlens.report.assets import AssetWriter
from cxrlens.report.common import as_dict, ci_text, inside, missing, rows_of, signed, strings
from cxrlens.run.folder import Run
from cxrlens.run.layout import ExternalFiles
from cxrlens.text import fmt, number, slug

MICRO = (("precision", "precision"), ("recall", "recall"), ("F1", "f1"), ("specificity", "specificity"))
PER_LABEL = (("sensitivity", "sensitivity"), ("specificity", "specificity"), ("AUROC", "auroc"))


def command(run: Run) -> str:
    return f"cxrlens evaluate-external --run {run.root} --data DIR"


def external_part(run: Run, assets: AssetWriter) -> dict[str, Any]:
    """Every external set of the run; missing (naming the command) when there is none."""
    sets = run.layout.external_sets()
    if not sets:
        return missing(f"No external validation has been run: run `{command(run)}`.")
    return {"available": True, "sets": [_set(run, files, assets) for files in sets]}


def _set(run: Run, files: ExternalFiles, assets: AssetWriter) -> dict[str, Any]:
    try:
        data = run.read_result(files.metrics) or {}
    except RunError as err:  # damaged: the message names the file
        return {"name": files.name, "problem": f"{err}: run `{command(run)} --name {files.name}`"}
    models = {str(k): as_dict(v) for k, v in as_dict(data.get("models")).items()}
    headline = str(data.get("headline") or "")
    if headline not in models:
        headline = next(iter(models), "")
    head = models.get(headline, {})
    label_names = strings(data.get("label_names")) or list(run.label_names)
    own_micro = as_dict(as_dict(head.get("in_domain")).get("micro"))
    return {
        "name": str(data.get("name") or files.name),
        "problem": None,
        "data": strings(data.get("data")),
        "images": data.get("images"),
        "patients": data.get("patients"),
        "sources": [{"name": str(s), "images": n} for s, n in as_dict(data.get("sources")).items()],
        "notes": strings(data.get("notes")),
        "headline": headline,
        "not_evaluable": strings(data.get("not_evaluable")) or strings(head.get("not_evaluable")),
        "entries": [_entry(name, entry, name == headline) for name, entry in models.items()],
        "labels": _labels(head, label_names),
        "by_source": _by_source(head, label_names),
        "figures": _figures(files, list(models), headline, assets),
        "errors": [_error(run, files, headline, row, assets) for row in rows_of(data.get("errors"))],
        "f1": {
            "external": number(as_dict(head.get("micro")).get("f1")),
            "in_domain": number(own_micro.get("f1")),
            "change": number(as_dict(head.get("change")).get("micro_f1")),
        },
    }


def _entry(name: str, entry: dict[str, Any], headline: bool) -> dict[str, Any]:
    """One model or ensemble: micro numbers external [CI] vs in-domain [CI], the change in F1, the ECE."""
    micro = as_dict(entry.get("micro"))
    own = entry.get("in_domain")
    own_micro = as_dict(as_dict(own).get("micro"))
    cells = [
        {
            "external": ci_text(micro.get(key), as_dict(micro.get("ci")).get(key)),
            "in_domain": ci_text(own_micro.get(key), as_dict(own_micro.get("ci")).get(key)),
        }
        for _, key in MICRO
    ]
    return {
        "name": name,
        "headline": headline,
        "images": entry.get("images"),
        "cells": cells,
        "in_domain": isinstance(own, dict),
        "change": signed(as_dict(entry.get("change")).get("micro_f1")),
        "ece": fmt(entry.get("ece")),
        "ece_in_domain": fmt(as_dict(own).get("ece")),
        "not_evaluable": strings(entry.get("not_evaluable")),
    }


def _labels(entry: dict[str, Any], label_names: list[str]) -> list[dict[str, Any]]:
    """Per label: support, and per metric external [CI], in-domain [CI] and the change; or not evaluable."""
    labels = as_dict(entry.get("labels"))
    own = as_dict(as_dict(entry.get("in_domain")).get("labels"))
    change = as_dict(as_dict(entry.get("change")).get("labels"))
    order = [n for n in label_names if n in labels] + [str(n) for n in labels if n not in label_names]
    out = []
    for label in order:
        row, mine, delta = as_dict(labels[label]), as_dict(own.get(label)), as_dict(change.get(label))
        cells = [
            {
                "external": ci_text(row.get(key), row.get(f"{key}_ci")),
                "in_domain": ci_text(mine.get(key), mine.get(f"{key}_ci")),
                "change": signed(delta.get(key)),
            }
            for _, key in PER_LABEL
        ]
        out.append(
            {
                "label": label,
                "support": row.get("support"),
                "negatives": row.get("negatives"),
                "evaluable": bool(row.get("evaluable")),
                "cells": cells,
                "ece": fmt(row.get("ece")),
            }
        )
    return out


def _by_source(entry: dict[str, Any], label_names: list[str]) -> dict[str, Any]:
    """Per source of the set: images, micro numbers [CI] and each label's AUROC (n/a where not evaluable)."""
    parts = {str(s): as_dict(p) for s, p in as_dict(entry.get("by_source")).items()}
    labels = [n for n in label_names if any(n in as_dict(p.get("labels")) for p in parts.values())]
    rows = []
    for source, part in parts.items():
        micro = as_dict(part.get("micro"))
        rows.append(
            {
                "source": source,
                "images": part.get("images"),
                "patients": part.get("patients"),
                "micro": [ci_text(micro.get(key), as_dict(micro.get("ci")).get(key)) for _, key in MICRO],
                "auroc": [
                    ci_text(row.get("auroc"), row.get("auroc_ci"))
                    for row in (as_dict(as_dict(part.get("labels")).get(n)) for n in labels)
                ],
                "not_evaluable": strings(part.get("not_evaluable")),
            }
        )
    return {"labels": labels, "rows": rows}


def _figures(files: ExternalFiles, entries: list[str], headline: str, assets: AssetWriter) -> list[dict[str, Any]]:
    """Each entry's reliability diagram and labels figure (headline first), where the layout puts them."""
    base = f"trust/external/{slug(files.name)}"
    out = []
    for entry in sorted(entries, key=lambda e: e != headline):
        for kind, path in (("reliability", files.reliability_figure(entry)), ("labels", files.labels_figure(entry))):
            if path.is_file():
                caption = f"{entry}: " + (
                    "reliability (external vs in-domain)"
                    if kind == "reliability"
                    else "sensitivity and specificity per label, external vs in-domain"
                )
                src = assets.copy(path, f"{base}/{slug(path.stem, 100)}.png")
                out.append({"entry": entry, "headline": entry == headline, "caption": caption, "src": src})
    return out


def _error(run: Run, files: ExternalFiles, headline: str, row: dict[str, Any], assets: AssetWriter) -> dict[str, Any]:
    """One of the most confident external errors, with its explanation map's overlay copied into the assets."""
    out = {
        "image": row.get("image"),
        "patient_id": row.get("patient_id"),
        "source": row.get("source"),
        "label": row.get("label"),
        "kind": row.get("kind"),
        "probability": fmt(row.get("probability")),
        "threshold": fmt(row.get("threshold")),
        "true_labels": ", ".join(strings(row.get("true_labels"))) or "none",
        "method": row.get("method"),
        "overlay": row.get("overlay"),
        "src": None,
    }
    found = _overlay(files, headline, row)
    if found is not None:
        digest = hashlib.sha1(str(found.resolve()).encode("utf-8")).hexdigest()[:12]
        out["src"] = assets.copy(found, f"trust/errors/{slug(files.name)}/{slug(found.stem, 40)}-{digest}.png")
    return out


def _overlay(files: ExternalFiles, headline: str, row: dict[str, Any]) -> Path | None:
    """The overlay PNG of an error: the path recorded (relative to the set's folder), else where the layout puts
    the headline entry's map; never a file outside the set's folder."""
    options: list[Path] = []
    recorded = row.get("overlay")
    if recorded and isinstance(recorded, str):
        options.append(files.root / recorded)
    keys = [row.get(k) for k in ("image", "method", "label")]
    if headline and all(isinstance(k, str) and k for k in keys):
        image, method, label = (str(k) for k in keys)
        options.append(files.errors.overlay_path(image, headline, method, label))
    return next(
        (p for p in options if p.suffix.lower() == ".png" and p.is_file() and inside(p, files.root)),
        None,
    )


def sentence(item: dict[str, Any]) -> str:
    """The verdict's sentence of one set: how the headline entry's micro F1 moves from in-domain to external."""
    name, entry = item["name"], item.get("headline")
    if item.get("problem"):
        return f"The external set {name} cannot be read: {item['problem']}."
    f1 = item["f1"]
    size = f" ({item['images']} images)" if item.get("images") is not None else ""
    if f1["external"] is None:
        return f"On the external set {name}{size}, {entry}'s micro F1 is not defined (no evaluable label)."
    if f1["in_domain"] is None or f1["change"] is None:
        return (
            f"On the external set {name}{size}, {entry}'s micro F1 is {fmt(f1['external'])}; "
            "there are no in-domain numbers to compare it with."
        )
    if f1["change"] < 0:
        return (
            f"On the external set {name}{size}, {entry}'s micro F1 drops from {fmt(f1['in_domain'])} in-domain to "
            f"{fmt(f1['external'])} ({signed(f1['change'])})."
        )
    return (
        f"On the external set {name}{size}, {entry}'s micro F1 does not drop: {fmt(f1['external'])} against "
        f"{fmt(f1['in_domain'])} in-domain ({signed(f1['change'])})."
    )
