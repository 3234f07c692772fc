"""Section 1 of the report: the study's data, its labels (counts, rare labels) and the patient-grouped folds.

Read from ``run.json`` (:class:`~cxrlens.run.info.RunInfo`), the run's labels
(:func:`~cxrlens.run.predictions.read_labels`) and splits (:meth:`~cxrlens.run.folder.Run.splits`).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from cxrlens.data.splits import SplitRow
from cxrlens.errors import CxrlensError
from cxrlens.run.folder import Run
from cxrlens.run.predictions import read_labels

SUBSET_ORDER = ("train", "val", "test")


def dataset_section(run: Run) -> dict[str, Any]:
    """Study facts, label counts, rare labels and images/patients per fold and subset.

    ``truth`` (filename -> its positive labels) is for the gallery; ``labels`` is absent when the run has no
    labels yet, ``folds`` when it has no splits yet (``labels_missing`` / ``splits_missing`` say so).
    """
    info = run.info
    layout = run.layout
    out: dict[str, Any] = {
        "available": True,
        "name": info.name,
        "sources": list(info.sources),
        "data_root": info.data_root,
        "images_in_data": info.images or None,
        "label_names": list(info.label_names),
        "rare": [{"name": str(name), "count": count} for name, count in info.rare_labels.items()],
        "min_images": run.config.data.labels.min_images,
        "problems": [],
        "truth": {},
    }
    cv_command = f"`cxrlens cv --run {run.root}`"
    if not layout.labels.is_file() and not layout.splits.is_file():
        out["missing"] = f"not computed yet: run {cv_command} (writes {layout.splits.name} and {layout.labels.name})"
    if layout.labels.is_file():
        _labels(run, out)
    else:
        out["labels_missing"] = f"not computed yet: run {cv_command} (writes {layout.labels.name})"
    if layout.splits.is_file():
        try:
            splits = run.splits()
        except CxrlensError as err:
            out["problems"].append(str(err))
            splits = []
        out.update(_folds(splits))
    else:
        out["splits_missing"] = f"not computed yet: run {cv_command} (writes {layout.splits.name})"
    return out


def _labels(run: Run, out: dict[str, Any]) -> None:
    names = list(run.label_names)
    try:
        truth = read_labels(run.layout.labels, names)
    except CxrlensError as err:
        out["problems"].append(str(err))
        truth = {}
    total = len(truth)
    counts = [0] * len(names)
    for _, vector in truth.values():
        for j, value in enumerate(vector):
            counts[j] += int(value)
    out["images"] = total
    out["patients"] = len({patient for patient, _ in truth.values()})
    out["labels"] = [
        {"name": name, "count": count, "share": f"{100.0 * count / total:.1f} %" if total else "n/a"}
        for name, count in zip(names, counts, strict=True)
    ]
    out["truth"] = {
        filename: [name for name, value in zip(names, vector, strict=True) if value]
        for filename, (_, vector) in truth.items()
    }


def _folds(splits: list[SplitRow]) -> dict[str, Any]:
    """Images and patients per fold and subset (train, val, test first, then any other subset)."""
    cells: dict[tuple[int, str], set[str]] = defaultdict(set)
    patients: dict[tuple[int, str], set[str]] = defaultdict(set)
    for row in splits:
        cells[(row.fold, row.subset)].add(row.filename)
        patients[(row.fold, row.subset)].add(row.patient_id)
    folds = sorted({fold for fold, _ in cells})
    subsets = [s for s in SUBSET_ORDER if any((f, s) in cells for f in folds)]
    subsets += sorted({s for _, s in cells} - set(subsets))
    return {
        "subsets": subsets,
        "folds": [
            {
                "fold": fold,
                "cells": [
                    {"images": len(cells.get((fold, s), ())), "patients": len(patients.get((fold, s), ()))}
                    for s in subsets
                ],
            }
            for fold in folds
        ],
    }
