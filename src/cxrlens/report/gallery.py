"""Section 3 of the report, the explanation gallery: grey X-rays and transparent heatmaps as assets, and the data
the page's script uses.

For every explained image the X-ray exactly as the run preprocessed it (:class:`~cxrlens.run.ImageSource`) is
written once (``assets/gallery/<image id>/image.png``); for every map a colour heatmap with transparency
(``assets/gallery/<image id>/<model>/<method>/<label>.png``), both at most ``max_side`` pixels. The browser
stacks the two, so the heatmap's opacity can be changed with a slider. The figures of ``cxrlens explain``
(models x methods grids, occlusion across models, follow-ups; the paper's Fig. 8-13) are copied beside them.
"""

from __future__ import annotations

import zipfile
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from cxrlens.errors import CxrlensError
from cxrlens.figures import grey_png, heat_rgba, png_bytes
from cxrlens.models.names import ENSEMBLE
from cxrlens.report.assets import AssetWriter
from cxrlens.report.common import relative
from cxrlens.run.folder import Run
from cxrlens.run.images import ImageSource
from cxrlens.run.layout import MapFiles, image_id
from cxrlens.run.maps import MapStore
from cxrlens.run.predictions import SUBSETS
from cxrlens.run.stream import prefetch
from cxrlens.text import number, slug

FIGURE_TITLES = {  # the kinds of MapFiles.figure_kind, in the order shown
    "grid": "Models × methods for one image and label",
    "occlusion": "Occlusion across models",
    "followup": "Occlusion over one patient's follow-up images",
    "other": "Other figures",
}


def build_gallery(run: Run, truth: dict[str, list[str]], assets: AssetWriter, max_side: int) -> dict[str, Any]:
    """Write the gallery assets; returns the section for the template and ``data`` for the page's JSON."""
    store = MapStore(run.layout.explanations.root)
    command = f"`cxrlens explain --run {run.root}`"
    try:
        entries, from_index = store.entries()
    except CxrlensError as err:  # a damaged index.json or sidecar: the message names the file
        return {"available": False, "missing": f"{err}; run {command}", "figures": []}
    figures = _figures(store, assets)
    if not entries:
        return {"available": False, "missing": f"not computed yet: run {command}", "figures": figures}
    notes: list[str] = []
    if not from_index:
        notes.append(
            f"{relative(run, store.index_path)} is missing (explain was interrupted?): maps read from their sidecars"
        )

    first_seen: dict[str, str] = {}  # image id -> file name, in the order the images first appear
    for entry in entries:
        filename = str(entry.get("image", ""))
        first_seen.setdefault(image_id(filename), filename)
    xrays = _XRays(run, assets, max_side, notes, list(first_seen.values()))
    images: dict[str, dict[str, Any]] = {}
    folds: dict[str, int] = {}
    maps: list[dict[str, Any]] = []
    method_family: dict[str, str] = {}
    for entry in entries:
        filename = str(entry.get("image", ""))
        ident = image_id(filename)  # never the index's own id: a hand-edited index must not name a path
        if ident not in images:
            images[ident] = _image_record(filename, ident, entry, truth, xrays)
            if isinstance(entry.get("fold"), int):
                folds[filename] = int(entry["fold"])
        map_path = store.root / str(entry.get("map", ""))
        if not map_path.is_file():
            notes.append(f"map file missing for {filename} / {entry.get('model')} / {entry.get('method')}")
            continue
        try:
            values = store.load(entry)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
            notes.append(f"map file damaged for {filename} / {entry.get('model')} / {entry.get('method')} ({err})")
            continue
        rgba, signed = heat_rgba(values, max_side)
        model, method, label = str(entry.get("model")), str(entry.get("method")), str(entry.get("label"))
        link = assets.write(f"gallery/{ident}/{slug(model)}/{slug(method)}/{slug(label)}.png", png_bytes(rgba))
        method_family.setdefault(method, str(entry.get("family") or ""))
        maps.append(
            {
                "image": ident,
                "model": model,
                "method": method,
                "label": label,
                "heat": link,
                "signed": signed,
                "probability": number(entry.get("probability")),
                "true": bool(entry.get("true")),
                "predicted": bool(entry.get("predicted")),
                "threshold": number(entry.get("threshold")),
                "family": str(entry.get("family") or ""),
                "parameters": _param_text(entry.get("parameters")),
                "runtime_s": number(entry.get("runtime_s")),
                "runtime_per_label_s": number(entry.get("runtime_per_label_s")),
                "labels_in_call": entry.get("labels_in_call"),
                "delta": number(entry.get("delta")),
                "fold": entry.get("fold"),
                "checkpoint": _checkpoint_text(entry.get("checkpoint")),
            }
        )
    xrays.close()
    if not maps:
        return {"available": False, "missing": f"no readable maps; run {command}", "figures": figures, "notes": notes}

    models = sorted({m["model"] for m in maps}, key=lambda m: (m == ENSEMBLE, m))
    methods = sorted({m["method"] for m in maps})
    labels = [*run.label_names, *sorted({m["label"] for m in maps} - set(run.label_names))]
    probabilities = _probabilities(run, folds, models, notes)
    for record in images.values():
        record["probabilities"] = probabilities.get(record["filename"], {})
    image_list = sorted(images.values(), key=lambda i: (i["fold"], i["filename"]))
    first = maps[0]
    initial = {k: first[k] for k in ("image", "model", "method", "label")}
    data = {
        "images": image_list,
        "models": models,
        "methods": methods,
        "labels": labels,
        "maps": maps,
        "figures": _figure_links(store, images, labels, figures),
        "families": method_family,
        "initial": initial,
        "ensemble": ENSEMBLE,
        "labels_file": run.layout.labels.name,
    }
    return {
        "available": True,
        "n_maps": len(maps),
        "n_images": len(images),
        "models": models,
        "methods": methods,
        "labels": labels,
        "images": image_list,
        "initial": {"base": images[first["image"]]["src"], "heat": first["heat"], **initial},
        "figures": figures,
        "notes": notes,
        "data": data,
        "max_side": max_side,
    }


class _XRays:
    """The gallery's grey X-rays from the run's image source, read and encoded ahead in the loader's worker
    processes (:func:`~cxrlens.run.stream.prefetch`) in the order the images first appear; a missing or
    unreadable image gives a note and a black image of the run's size (as does every image when the run's data
    cannot be read any more)."""

    def __init__(self, run: Run, assets: AssetWriter, max_side: int, notes: list[str], filenames: list[str]) -> None:
        self.source = ImageSource(run)
        self.size = run.preprocess.size
        self.assets = assets
        self.notes = notes
        try:
            _ = self.source.records  # reads the run's data (its sources) once, before the workers start
            readable = True
        except (CxrlensError, OSError) as err:
            readable = False
            self.notes.append(f"the run's data cannot be read ({err}); every X-ray is shown black")
        self.max_side = max_side
        self.pngs = prefetch(filenames if readable else [], _GreyPng(self.source, max_side))
        self.readable = readable

    def write(self, filename: str, ident: str, size: int | None) -> tuple[str, bool]:
        """(link of ``assets/gallery/<ident>/image.png``, whether the image could be read); the images must be
        asked for in the order of the constructor's ``filenames``."""
        png: bytes | None = None
        if self.readable:
            name, (png, note) = next(self.pngs)
            if name != filename:  # build_gallery asks in the order it listed them
                raise AssertionError(f"gallery images out of order: {name} read for {filename}")
            if note:
                self.notes.append(note)
        available = png is not None
        if png is None:
            side = size or self.size
            png = grey_png(np.zeros((side, side), dtype=np.float32), self.max_side)
        return self.assets.write(f"gallery/{ident}/image.png", png), available

    def close(self) -> None:
        self.source.close()  # keeps the file hashes the cache learnt


@dataclass(frozen=True)
class _GreyPng:
    """The PNG of one image of the gallery, or None and the note saying why (run in the loader's workers)."""

    source: ImageSource
    max_side: int

    def __call__(self, filename: str) -> tuple[bytes | None, str]:
        try:
            return grey_png(self.source.image(filename), self.max_side), ""
        except FileNotFoundError:
            return None, f"{filename}: image file not found (data moved?); its heatmaps are shown on black"
        except (CxrlensError, OSError) as err:
            return None, f"{filename}: cannot be read ({err}); its heatmaps are shown on black"


def _image_record(
    filename: str, ident: str, entry: dict[str, Any], truth: dict[str, list[str]], xrays: _XRays
) -> dict[str, Any]:
    size = entry.get("size")
    src, available = xrays.write(filename, ident, size if isinstance(size, int) and size > 0 else None)
    return {
        "id": ident,
        "filename": filename,
        "patient_id": str(entry.get("patient_id") or ""),
        "offset": str(entry.get("offset") or ""),
        "date": str(entry.get("date") or ""),
        "fold": str(entry.get("fold", "")),
        "truth": list(truth.get(filename, [])),
        "truth_known": filename in truth,
        "src": src,
        "image_available": available,
    }


def _param_text(parameters: Any) -> str:
    if isinstance(parameters, dict):
        return ", ".join(f"{k}={v}" for k, v in parameters.items()) or "defaults"
    return "n/a" if parameters is None else str(parameters)


def _checkpoint_text(checkpoint: Any) -> str:
    if isinstance(checkpoint, list):
        return ", ".join(str(c) for c in checkpoint)
    return "" if checkpoint is None else str(checkpoint)


def _probabilities(
    run: Run, folds: dict[str, int], models: list[str], notes: list[str]
) -> dict[str, dict[str, dict[str, float]]]:
    """filename -> model -> label -> out-of-fold probability (the model of the fold the image was explained in);
    the ensemble's is the mean of its members'."""
    out: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    if not folds:
        return out
    try:
        data = run.predictions()
    except CxrlensError as err:
        notes.append(f"probabilities not shown: {err}")
        return out
    for filename, fold in folds.items():
        for model in models:
            for subset in SUBSETS:
                block = data.get(model, fold, subset)
                if block is not None and filename in block.filenames:
                    row = block.take([filename]).probs[0]
                    out[filename][model] = {
                        label: float(p) for label, p in zip(data.label_names, row, strict=True) if np.isfinite(p)
                    }
                    break
    for probs in out.values():
        members = [m for m in probs if m != ENSEMBLE]
        if ENSEMBLE in models and members:
            shared = set.intersection(*(set(probs[m]) for m in members))
            probs[ENSEMBLE] = {label: float(np.mean([probs[m][label] for m in members])) for label in shared}
    return out


def _figures(store: MapFiles, assets: AssetWriter) -> list[dict[str, Any]]:
    """Every PNG of the explanations' figures folder copied into the assets, with its kind."""
    folder = store.figure_dir()
    if not folder.is_dir():
        return []
    return [
        {
            "kind": kind if (kind := store.figure_kind(path.name)) in FIGURE_TITLES else "other",
            "name": path.name,
            "src": assets.copy(path, f"explanations/{slug(path.stem, 100)}.png"),
        }
        for path in sorted(folder.glob("*.png"))
    ]


def _figure_links(
    store: MapFiles, images: dict[str, dict[str, Any]], labels: list[str], figures: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The grid and occlusion figure of each image and label (named by the layout), for the viewer."""
    by_name = {f["name"]: f["src"] for f in figures}
    links = []
    for ident, record in images.items():
        for label in labels:
            grid = by_name.get(store.grid_figure(record["filename"], label).name)
            occlusion = by_name.get(store.occlusion_figure(record["filename"], label).name)
            if grid or occlusion:
                links.append({"image": ident, "label": label, "grid": grid, "occlusion": occlusion})
    return links


def figure_groups(figures: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups = []
    for kind, title in FIGURE_TITLES.items():
        items = [f for f in figures if f["kind"] == kind]
        if items:
            groups.append({"kind": kind, "title": title, "figures": items})
    return groups
