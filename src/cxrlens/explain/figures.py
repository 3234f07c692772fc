"""The explain stage's figures: models x methods grids per image and label (the paper's Fig. 8-10), occlusion
across models (Fig. 11-12) and over one patient's follow-up images (Fig. 13)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from cxrlens.explain.plan import Plan, WorkItem, followup_key
from cxrlens.explain.render import grid_figure, strip_figure
from cxrlens.run import ImageSource
from cxrlens.run.maps import MapStore, load_map


def draw_figures(plan: Plan, entries: list[dict[str, Any]]) -> list[Path]:
    """Grids per image and label, occlusion across models, occlusion over a patient's follow-ups."""
    store = MapStore(plan.run.layout.explanations.root)
    wanted_images = {item.filename for item in plan.items}
    items = {item.filename: item for item in plan.items}
    images = ImageSource(plan.run)
    by_key: dict[tuple[str, str], dict[tuple[str, str], Any]] = defaultdict(dict)
    probability: dict[tuple[str, str, str], float] = {}
    for entry in entries:
        if entry["image"] not in wanted_images:
            continue
        by_key[(entry["image"], entry["label"])][(entry["model"], entry["method"])] = (
            store.root / entry["map"]
        ).resolve()
        probability[(entry["image"], entry["label"], entry["model"])] = entry["probability"]
    written: list[Path] = []
    method_order = [m.name for m in plan.methods]
    for (filename, label), maps in sorted(by_key.items()):
        image = _image(images, items[filename])
        models = [m for m in plan.models if any(k[0] == m for k in maps)]
        loaded = {k: load_map(p) for k, p in maps.items()}
        truth = "true" if label in items[filename].true_labels else "not true"
        notes = {m: f"p={probability.get((filename, label, m), float('nan')):.2f}" for m in models}
        path = store.grid_figure(filename, label)
        grid_figure(image, loaded, models, method_order, f"{filename} - {label} ({truth})", path, notes)
        written.append(path)
        occlusion = [(image, loaded[(m, "occlusion")], f"{m} p={probability[(filename, label, m)]:.2f}")
                     for m in models if (m, "occlusion") in loaded]  # fmt: skip
        if len(occlusion) > 1:
            path = store.occlusion_figure(filename, label)
            strip_figure(occlusion, f"occlusion across models: {filename} - {label}", path, show_image=True)
            written.append(path)
    if plan.followup_patient:
        written += _followup_figures(plan, by_key, probability, images, store)
    return written


def _image(images: ImageSource, item: WorkItem) -> np.ndarray:
    return images.image(item.source_name)


def _followup_figures(plan: Plan, by_key: Any, probability: Any, images: ImageSource, store: MapStore) -> list[Path]:
    items = [i for i in plan.items if i.patient_id == plan.followup_patient]
    items.sort(key=lambda i: followup_key(i.offset, i.date, i.filename))
    written = []
    labels = sorted({label for (f, label) in by_key if f in {i.filename for i in items}})
    for model in plan.models:
        for label in labels:
            panels = []
            for item in items:
                path = by_key.get((item.filename, label), {}).get((model, "occlusion"))
                if path is None:
                    continue
                caption = f"day {item.offset or '?'} p={probability[(item.filename, label, model)]:.2f}"
                panels.append((_image(images, item), load_map(path), caption))
            if len(panels) > 1:
                target = store.followup_figure(plan.followup_patient or "", model, label)
                strip_figure(panels, f"patient {plan.followup_patient}: occlusion ({model}) - {label}", target)
                written.append(target)
    return written
