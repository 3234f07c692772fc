"""Part of section 0 ("Can these numbers be trusted?"): the shortcut audit of ``cxrlens evaluate-explanations``
(key ``shortcut`` of ``run.layout.xai_metrics``) — how much positive attribution lies outside the lungs, on the
image border and in the zero padding, per model and per model and image source, with the overlays of the images
that rely most on what lies outside the lungs.

A model that scores by the collection an image comes from (markers, text, borders, children's smaller chests)
puts its evidence outside the lungs; split by source, a collection whose images draw more attribution outside
the lungs than the others is where to look.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from cxrlens.report.assets import AssetWriter
from cxrlens.report.common import as_dict, inside, missing, read_part, rows_of
from cxrlens.run.folder import Run
from cxrlens.text import fmt, fmt_ci, slug

WHAT = "The shortcut audit (attribution outside the lungs)"


def shortcut_part(run: Run, assets: AssetWriter) -> dict[str, Any]:
    """Rows per model, rows per model and source, and the top images (overlays copied into the assets)."""
    command = f"cxrlens evaluate-explanations --run {run.root}"
    data = read_part(run, run.layout.xai_metrics, command)
    if isinstance(data, str):
        if data.startswith("not computed yet"):
            return missing(f"{WHAT} has not been run: run `{command}` (after `cxrlens explain`).")
        return missing(f"{WHAT} cannot be read: {data}.")
    shortcut = as_dict(data.get("shortcut"))
    rows = [_row(r) for r in rows_of(shortcut.get("rows"))]
    by_source = [_row(r) for r in rows_of(shortcut.get("by_source"))]
    top = rows_of(shortcut.get("top_images"))
    if not rows and not by_source and not top:
        return missing(f"{WHAT}: the explanation metrics hold none; rerun `{command}`.")
    return {
        "available": True,
        "rows": rows,
        "by_source": by_source,
        "sources": list(dict.fromkeys(str(r["source"]) for r in by_source)),
        "top_images": [_top_image(run, r, assets) for r in top],
    }


def _row(row: dict[str, Any]) -> dict[str, Any]:
    """One row of the audit: a model (and a source), its shares (the outside-lung share with its 95 % CI)."""
    return {
        "model": row.get("model"),
        "source": row.get("source"),
        "outside": fmt_ci(row.get("outside_lung_share"), row.get("ci_low"), row.get("ci_high")),
        "outside_value": row.get("outside_lung_share"),
        "border": fmt(row.get("border_share")),
        "padding": fmt(row.get("padding_share")),
        "n": row.get("n"),
        "n_images": row.get("n_images"),
        "n_maps": row.get("n_maps"),
    }


def summary(part: dict[str, Any]) -> str | None:
    """One sentence for the verdict: the outside-lung share of each model (None when the audit is missing)."""
    if not part["available"] or not part["rows"]:
        return None
    shares = "; ".join(f"{r['model']} {r['outside']}" for r in part["rows"])
    split = f", split by {len(part['sources'])} image source(s)" if part["sources"] else ""
    return f"The shortcut audit measured the share of positive attribution outside the lungs{split}: {shares}."


def _top_image(run: Run, row: dict[str, Any], assets: AssetWriter) -> dict[str, Any]:
    """One of the images with most attribution outside the lungs, with its overlay copied into the assets."""
    out = {
        "model": row.get("model"),
        "image": row.get("image"),
        "label": row.get("label"),
        "method": row.get("method"),
        "outside": fmt(row.get("outside_lung_share")),
        "overlay": row.get("overlay"),
        "src": None,
    }
    found = _overlay(run, row)
    if found is not None:
        digest = hashlib.sha1(str(found.resolve()).encode("utf-8")).hexdigest()[:12]
        out["src"] = assets.copy(found, f"trust/overlays/{slug(found.stem, 40)}-{digest}.png")
    return out


def _overlay(run: Run, row: dict[str, Any]) -> Path | None:
    """The overlay PNG of a map: where the layout puts it, else the path the metrics recorded (from the run
    folder, the explanation-metrics folder or the explanations folder; never outside the run folder)."""
    options: list[Path] = []
    keys = [row.get(k) for k in ("image", "model", "method", "label")]
    if all(isinstance(k, str) and k for k in keys):
        image, model, method, label = (str(k) for k in keys)
        options.append(run.layout.explanations.overlay_path(image, model, method, label))
    recorded = row.get("overlay")
    if recorded and isinstance(recorded, str):
        candidate = Path(recorded)
        if candidate.is_absolute():
            options.append(candidate)
        else:
            options += [run.root / candidate, run.layout.xai_dir / candidate, run.layout.explanations.root / candidate]
    return next(
        (p for p in options if p.suffix.lower() == ".png" and p.is_file() and inside(p, run.root)),
        None,
    )
