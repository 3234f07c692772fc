"""The explanation gallery: grey X-rays and transparent heatmaps as assets, and the data the page's script uses.

For every explained image the preprocessed X-ray is written once (``assets/gallery/<image id>/image.png``);
for every map a colour heatmap with transparency (``assets/gallery/<image id>/<model>/<method>/<label>.png``),
both at the preprocessed size (at most ``max_side`` pixels). The browser stacks the two, so the heatmap's
opacity can be changed with a slider.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from cxrlens.config import PreprocessConfig
from cxrlens.errors import CxrlensError, RunError
from cxrlens.evaluate.ensemble import ENSEMBLE
from cxrlens.report.assets import AssetWriter, grey_png, heat_rgba, png_bytes, safe_name
from cxrlens.report.sections import DamagedFile, read_json
from cxrlens.run.maps import MapStore, image_id, load_map
from cxrlens.run.maps import slug as store_slug

FIGURE_KINDS = (
    ("grid", "grid_", "Models × methods for one image and label"),
    ("occlusion", "occlusion_models_", "Occlusion across models"),
    ("followup", "followup_", "Occlusion over one patient's follow-up images"),
)


def read_entries(root: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The map records of ``explanations/``: ``index.json``, else the sidecars (an interrupted explain)."""
    store = MapStore(root / "explanations")
    notes: list[str] = []
    if store.index_path.is_file():
        data = read_json(store.index_path)
        maps = data.get("maps") if isinstance(data, dict) else None
        if not isinstance(maps, list):
            raise DamagedFile(f"{store.index_path.name} has no list of maps; rerun `cxrlens explain`")
        return [m for m in maps if isinstance(m, dict)], notes
    if not store.maps_dir.is_dir():
        return [], notes
    entries = [
        {**meta, "map": sidecar.with_suffix(".npz").relative_to(store.root).as_posix()}
        for sidecar, meta in store.sidecars()
    ]
    if entries:
        notes.append("explanations/index.json is missing (explain was interrupted?): maps read from their sidecars")
    return entries, notes


def _model_order(names: list[str]) -> list[str]:
    return sorted(dict.fromkeys(names), key=lambda m: (m == ENSEMBLE, m))


def _image_path(filename: str, data_root: str | None) -> Path | None:
    candidates = []
    if data_root:
        candidates.append(Path(data_root) / filename)
    candidates.append(Path(filename))
    return next((p for p in candidates if p.is_file()), None)


def _param_text(parameters: Any) -> str:
    if isinstance(parameters, dict):
        return ", ".join(f"{k}={v}" for k, v in parameters.items()) or "defaults"
    return "n/a" if parameters is None else str(parameters)


def _checkpoint_text(checkpoint: Any) -> str:
    if isinstance(checkpoint, list):
        return ", ".join(str(c) for c in checkpoint)
    return "" if checkpoint is None else str(checkpoint)


def _float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) else None


def _probabilities(root: Path, folds: dict[str, str], models: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    """filename -> model -> label -> probability from predictions.csv (the model of the image's fold)."""
    path = root / "predictions.csv"
    out: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    if not path.is_file() or not folds:
        return out
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        fixed = {"filename", "patient_id", "fold", "model", "subset"}
        labels = [c for c in reader.fieldnames or [] if c not in fixed]
        for row in reader:
            name = row.get("filename", "")
            if name not in folds or row.get("fold") != folds[name] or row.get("model") not in models:
                continue
            values = {label: _float(row.get(label)) for label in labels}
            out[name][row["model"]] = {k: v for k, v in values.items() if v is not None}
    for probs in out.values():  # the ensemble averages its members' probabilities
        members = [m for m in probs if m != ENSEMBLE]
        if ENSEMBLE in models and members:
            shared = set.intersection(*(set(probs[m]) for m in members))
            probs[ENSEMBLE] = {label: float(np.mean([probs[m][label] for m in members])) for label in shared}
    return out


def build_gallery(
    root: Path,
    info: dict[str, Any],
    truth: dict[str, list[str]],
    assets: AssetWriter,
    max_side: int,
) -> dict[str, Any]:
    """Write the gallery assets; returns the section for the template and ``data`` for the page's JSON."""
    store = MapStore(root / "explanations")
    command = f"`cxrlens explain --run {root}`"
    try:
        entries, notes = read_entries(root)
    except (DamagedFile, RunError) as err:
        return {"available": False, "missing": f"{err}; run {command}", "figures": []}
    figures = _figures(store, assets)
    if not entries:
        return {"available": False, "missing": f"not computed yet: run {command}", "figures": figures}

    preprocess = PreprocessConfig(**(info.get("preprocess") or {}))
    label_names = list(info.get("label_names") or [])
    images: dict[str, dict[str, Any]] = {}
    maps: list[dict[str, Any]] = []
    method_family: dict[str, str] = {}
    for entry in entries:
        filename = str(entry.get("image", ""))
        ident = str(entry.get("image_id") or image_id(filename))
        if ident != image_id(filename):  # a hand-edited index: never trust it for a path
            ident = image_id(filename)
        if ident not in images:
            images[ident] = _image_record(filename, ident, entry, truth, info, preprocess, assets, max_side, notes)
        map_path = store.root / str(entry.get("map", ""))
        if not map_path.is_file():
            notes.append(f"map file missing for {filename} / {entry.get('model')} / {entry.get('method')}")
            continue
        values = load_map(map_path)
        rgba, signed = heat_rgba(values, max_side)
        model, method, label = str(entry.get("model")), str(entry.get("method")), str(entry.get("label"))
        relative = f"gallery/{ident}/{safe_name(model)}/{safe_name(method)}/{safe_name(label)}.png"
        method_family.setdefault(method, str(entry.get("family") or ""))
        maps.append(
            {
                "image": ident,
                "model": model,
                "method": method,
                "label": label,
                "heat": assets.write(relative, png_bytes(rgba)),
                "signed": signed,
                "probability": _float(entry.get("probability")),
                "true": bool(entry.get("true")),
                "predicted": bool(entry.get("predicted")),
                "family": str(entry.get("family") or ""),
                "parameters": _param_text(entry.get("parameters")),
                "runtime_s": _float(entry.get("runtime_s")),
                "runtime_per_label_s": _float(entry.get("runtime_per_label_s")),
                "labels_in_call": entry.get("labels_in_call"),
                "delta": _float(entry.get("delta")),
                "fold": entry.get("fold"),
                "checkpoint": _checkpoint_text(entry.get("checkpoint")),
            }
        )
    if not maps:
        return {"available": False, "missing": f"no readable maps; run {command}", "figures": figures, "notes": notes}

    models = _model_order([m["model"] for m in maps])
    methods = sorted({m["method"] for m in maps})
    labels = [*label_names, *sorted({m["label"] for m in maps} - set(label_names))]
    probabilities = _probabilities(root, {i["filename"]: i["fold"] for i in images.values()}, models)
    for record in images.values():
        record["probabilities"] = probabilities.get(record["filename"], {})
    figure_links = _figure_links(store, images, labels, figures)
    image_list = sorted(images.values(), key=lambda i: (i["fold"], i["filename"]))
    first = maps[0]
    first_image = images[first["image"]]
    initial = {k: first[k] for k in ("image", "model", "method", "label")}
    data = {
        "images": image_list,
        "models": models,
        "methods": methods,
        "labels": labels,
        "maps": maps,
        "figures": figure_links,
        "families": method_family,
        "initial": initial,
    }
    return {
        "available": True,
        "n_maps": len(maps),
        "n_images": len(images),
        "models": models,
        "methods": methods,
        "labels": labels,
        "images": image_list,
        "initial": {"base": first_image["src"], "heat": first["heat"], **initial},
        "figures": figures,
        "notes": notes,
        "data": data,
        "max_side": max_side,
    }


def _image_record(
    filename: str,
    ident: str,
    entry: dict[str, Any],
    truth: dict[str, list[str]],
    info: dict[str, Any],
    preprocess: PreprocessConfig,
    assets: AssetWriter,
    max_side: int,
    notes: list[str],
) -> dict[str, Any]:
    path = _image_path(filename, info.get("data_root"))
    available = False
    size = int(entry.get("size") or preprocess.size)
    if path is None:
        notes.append(f"{filename}: image file not found (data moved?); its heatmaps are shown on black")
        grey = np.zeros((size, size), dtype=np.float32)
    else:
        from cxrlens.data.preprocess import preprocess_file

        try:
            grey = preprocess_file(path, preprocess)
            available = True
        except CxrlensError as err:
            notes.append(f"{filename}: cannot be read ({err}); its heatmaps are shown on black")
            grey = np.zeros((size, size), dtype=np.float32)
    return {
        "id": ident,
        "filename": filename,
        "patient_id": str(entry.get("patient_id") or ""),
        "offset": str(entry.get("offset") or ""),
        "date": str(entry.get("date") or ""),
        "fold": str(entry.get("fold", "")),
        "truth": list(truth.get(filename, [])),
        "truth_known": filename in truth,
        "src": assets.write(f"gallery/{ident}/image.png", grey_png(grey, max_side)),
        "image_available": available,
    }


def _figures(store: MapStore, assets: AssetWriter) -> list[dict[str, Any]]:
    """Every PNG of ``explanations/figures`` copied into the assets, with its kind."""
    folder = store.figure_dir()
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob("*.png")):
        kind = next((k for k, prefix, _ in FIGURE_KINDS if path.name.startswith(prefix)), "other")
        link = assets.copy(path, f"explanations/{safe_name(path.stem, 100)}.png")
        out.append({"kind": kind, "name": path.name, "src": link})
    return out


def _figure_links(
    store: MapStore, images: dict[str, dict[str, Any]], labels: list[str], figures: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    by_name = {f["name"]: f["src"] for f in figures}
    links = []
    for ident in images:
        for label in labels:
            grid = by_name.get(f"grid_{ident}_{store_slug(label)}.png")
            occlusion = by_name.get(f"occlusion_models_{ident}_{store_slug(label)}.png")
            if grid or occlusion:
                links.append({"image": ident, "label": label, "grid": grid, "occlusion": occlusion})
    return links


def figure_groups(figures: list[dict[str, Any]]) -> list[dict[str, Any]]:
    titles = {kind: title for kind, _, title in FIGURE_KINDS}
    titles["other"] = "Other figures"
    groups = []
    for kind in [*(k for k, _, _ in FIGURE_KINDS), "other"]:
        items = [f for f in figures if f["kind"] == kind]
        if items:
            groups.append({"kind": kind, "title": titles[kind], "figures": items})
    return groups
